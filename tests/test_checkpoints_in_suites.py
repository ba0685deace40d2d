"""Official-layout backbone weights: a DiT checkpoint written with the official key names loads strictly and
gives the outputs of the model it was saved from; in a suite, ``checkpoint =`` loads it into the cases of a
sweep, a checkpoint that does not fit is one line before anything runs, and its content is the case's identity."""

from pathlib import Path

import pytest
import torch

SUITE = """
name = "ckpt"
[defaults]
batch_sizes = [1]
warmup = 0
repeats = 2
measure = ["counts", "speed"]
[[sweeps]]
presets = ["DiT-S/8"]
checkpoint = "{ckpt}"
"""

OFFICIAL_DIT_KEYS = ("x_embedder.proj.weight", "t_embedder.mlp.0.weight", "y_embedder.embedding_table.weight",
                     "blocks.0.attn.qkv.weight", "blocks.0.adaLN_modulation.1.weight", "final_layer.linear.weight",
                     "pos_embed")


def saved_dit(tmp_path: Path, name: str = "dit.pt") -> tuple[torch.nn.Module, Path]:
    import diffbench

    torch.manual_seed(0)
    model = diffbench.build("DiT-S/8")
    for p in model.parameters():  # the official init zeroes the output layers; random weights compare better
        torch.nn.init.normal_(p, std=0.02)
    path = tmp_path / name
    torch.save(model.state_dict(), path)
    return model, path


def test_an_official_layout_dit_checkpoint_loads_strictly_and_reproduces_its_outputs(tmp_path):
    import diffbench
    from diffbench.models.api import load_checkpoint

    model, path = saved_dit(tmp_path)
    state = torch.load(path, weights_only=True)
    assert all(k in state for k in OFFICIAL_DIT_KEYS)  # facebookresearch/DiT's names
    fresh = load_checkpoint(diffbench.build("DiT-S/8"), path)
    x, t, y = torch.randn(2, 4, 32, 32), torch.tensor([10, 500]), torch.tensor([1, 7])
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x, t, y), model.eval()(x, t, y))


def test_a_suite_checkpoint_loads_into_its_cases_and_is_their_identity(tmp_path):
    import diffbench

    _, path = saved_dit(tmp_path)
    suite = tmp_path / "ckpt.toml"
    suite.write_text(SUITE.format(ckpt=path.name))  # relative to the suite's folder
    [case] = diffbench.plan(str(suite), "cpu")
    assert case.config["model"]["checkpoint"]["path"] == str(path)
    run = diffbench.run(str(suite), tmp_path / "run")
    assert run.statuses == {"ok": 1}
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    (copy / "dit.pt").write_bytes(path.read_bytes())
    (copy / "ckpt.toml").write_text(SUITE.format(ckpt="dit.pt"))
    assert diffbench.plan(str(copy / "ckpt.toml"), "cpu")[0].case_id == case.case_id  # same content, same id
    plain = diffbench.plan("smoke", "cpu")
    assert case.case_id not in {c.case_id for c in plain}


def test_a_checkpoint_that_does_not_fit_is_one_line(tmp_path, cli):
    import diffbench

    model = diffbench.build("DiT-S/4")
    torch.save(model.state_dict(), tmp_path / "s4.pt")
    suite = tmp_path / "bad.toml"
    suite.write_text(SUITE.format(ckpt="s4.pt"))
    proc = cli("run", str(suite), "--out", str(tmp_path / "r"), "--dry-run")
    assert proc.returncode == 2 and "does not fit" in proc.stderr and "shape mismatch" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    suite.write_text(SUITE.format(ckpt="missing.pt"))
    proc = cli("run", str(suite), "--out", str(tmp_path / "r"), "--dry-run")
    assert proc.returncode == 2 and "no file at" in proc.stderr
    suite.write_text(SUITE.format(ckpt="s4.pt").replace('["counts", "speed"]', '["counts", "train", "quality"]'))
    proc = cli("run", str(suite), "--out", str(tmp_path / "r"), "--dry-run")
    assert proc.returncode == 2 and "a pretrained system is not trained here" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_a_checkpoint_with_a_code_running_pickle_is_refused(tmp_path, cli):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("PWNED",))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"x": Evil()}, f)
    suite = tmp_path / "evil.toml"
    suite.write_text(SUITE.format(ckpt="evil.pt"))
    proc = cli("run", str(suite), "--out", str(tmp_path / "r"), "--dry-run")
    assert proc.returncode == 2 and "weights only" in proc.stderr and "PWNED" not in proc.stdout


@pytest.mark.parametrize("key", ["model", "ema"])
def test_nested_state_dicts_are_read(tmp_path, key):
    from diffbench.models.api import check_fits
    from diffbench.models.presets import PRESETS

    model, _ = saved_dit(tmp_path)
    torch.save({key: model.state_dict(), "args": {"lr": 1e-4}}, tmp_path / "n.pt")
    check_fits(PRESETS.get("DiT-S/8").config, tmp_path / "n.pt")


def test_a_safetensors_checkpoint_is_checked_from_its_header(tmp_path):
    from safetensors.torch import save_file

    from diffbench.core.errors import BadInputError
    from diffbench.models.api import check_fits
    from diffbench.models.presets import PRESETS

    model, _ = saved_dit(tmp_path)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    check_fits(PRESETS.get("DiT-S/8").config, tmp_path / "w.safetensors")
    del state["pos_embed"]
    save_file(state, str(tmp_path / "w2.safetensors"))
    with pytest.raises(BadInputError, match="1 missing key"):
        check_fits(PRESETS.get("DiT-S/8").config, tmp_path / "w2.safetensors")
