"""A corpus of bad inputs across every command: each ends with exit status 2 and one line on stderr.

Every entry is a command line (``{k}`` is the kit folder of crafted files built once below) run
in-process through ``diffbench.cli.app.main``: an exception escaping ``main`` is a traceback a
user would see, so it fails the test with that traceback. A crafted pickle whose payload would
create ``{k}/PWNED`` is offered through every path that brings a file to a loader; the marker
must never appear.
"""

from __future__ import annotations

import json
import os
import pickle
import shlex
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from diffbench.cli import main


class _Payload:
    """Unpickling this runs a shell command that creates the marker file (outside any test's control)."""

    def __init__(self, marker: Path) -> None:
        self.cmd = f"touch {marker}"

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _Doubler(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def _write_png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)


def _stats(path: Path, mu: np.ndarray, sigma: np.ndarray, **extra) -> None:
    np.savez(path, mu=mu, sigma=sigma, **extra)


def build_kit(k: Path) -> None:
    rng = np.random.default_rng(0)
    marker = k / "PWNED"
    payload = _Payload(marker)
    # crafted pickles: through torch.save (a zip), as a bare pickle, and under every name a loader looks for
    torch.save({"w": payload}, k / "evil.pth")
    (k / "evil_raw.pkl").write_bytes(pickle.dumps({"w": payload}))
    for name in ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth",
                 "inception-2015-12-05.pt"):
        (k / "torch_home" / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
        torch.save({"w": payload}, k / "torch_home" / "hub" / "checkpoints" / name)
    (k / "cache" / "diffbench").mkdir(parents=True, exist_ok=True)
    for name in ("inception-2015-12-05.pt", "pt_inception-2015-12-05-6726825d.pth"):
        torch.save({"w": payload}, k / "cache" / "diffbench" / name)
    # a Hugging Face CLIP directory whose weights are the crafted pickle
    hf = k / "hf_clip"
    hf.mkdir()
    torch.save({"w": payload}, hf / "pytorch_model.bin")
    (hf / "config.json").write_text(json.dumps({"model_type": "clip"}))
    # a diffusers AutoencoderKL directory with the crafted pickle as its weights
    ae = k / "ae_dir"
    ae.mkdir()
    torch.save({"w": payload}, ae / "diffusion_pytorch_model.bin")
    (ae / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", "latent_channels": 4}))
    # a diffusers pipeline directory whose U-Net weights are the crafted pickle, and a U-Net directory alone
    pipe = k / "pipe_dir"
    (pipe / "unet").mkdir(parents=True)
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline",
                                                       "unet": ["diffusers", "UNet2DModel"],
                                                       "scheduler": ["diffusers", "DDPMScheduler"]}))
    (pipe / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "sample_size": 8}))
    torch.save({"w": payload}, pipe / "unet" / "diffusion_pytorch_model.bin")
    # a pipeline directory naming a class diffusers does not have (custom code is never run)
    custom = k / "custom_dir"
    custom.mkdir()
    (custom / "model_index.json").write_text(json.dumps({"_class_name": "os.system", "unet": ["x", "y"]}))

    # images
    for i in range(4):
        _write_png(k / "imgs" / f"{i}.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    np.savez(k / "imgs.npz", arr_0=rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8))
    np.savez(k / "empty_hw.npz", arr_0=np.zeros((4, 0, 0, 3), np.uint8))
    np.savez(k / "float_imgs.npz", arr_0=rng.random((4, 8, 8, 3)))
    np.savez(k / "labels_negative.npz", arr_0=rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8),
             arr_1=np.array([-1, 0, 1, 2, 3, 4, 5, 6]))
    np.savez(k / "labels_strings.npz", arr_0=rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8),
             arr_1=np.array(list("abcdefgh")))
    np.savez(k / "labels_short.npz", arr_0=rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8),
             arr_1=np.arange(3))
    np.save(k / "object.npy", np.array([payload], dtype=object), allow_pickle=True)
    os.replace(k / "object.npy", k / "object.npz")
    # an .npz whose arr_0 is an object (pickled) array
    with zipfile.ZipFile(k / "object_member.npz", "w") as z, z.open("arr_0.npy", "w") as f:
        np.lib.format.write_array(f, np.array([payload], dtype=object), allow_pickle=True)
    (k / "garbage.npz").write_bytes(os.urandom(256))
    (k / "notes.txt").write_text("hello\n")

    # statistics files
    d = 4
    eye = np.eye(d)
    _stats(k / "stats_ok.npz", np.zeros(d), eye)
    _stats(k / "stats_ok2.npz", np.ones(d), 2 * eye)
    _stats(k / "stats_nan_mu.npz", np.full(d, np.nan), eye)
    _stats(k / "stats_inf_mu.npz", np.full(d, np.inf), eye)
    _stats(k / "stats_neg_cov.npz", np.zeros(d), -eye)
    _stats(k / "stats_complex.npz", np.zeros(d) + 1j, eye)
    _stats(k / "stats_dim3.npz", np.zeros(3), np.eye(3))
    _stats(k / "stats_bad_shape.npz", np.zeros(d), np.ones(d))
    _stats(k / "stats_nan_cov.npz", np.zeros(d), np.full((d, d), np.nan))
    _stats(k / "stats_asym.npz", np.zeros(d), np.triu(np.ones((d, d))))
    _stats(k / "stats_str.npz", np.array(["a", "b"]), eye)
    _stats(k / "stats_empty.npz", np.zeros(0), np.zeros((0, 0)))
    _stats(k / "stats_other_detector.npz", np.zeros(d), eye, meta_detector=np.array("digits"),
           meta_mode=np.array("embedded"))
    _stats(k / "stats_other_detector2.npz", np.zeros(d), eye, meta_detector=np.array("shapes"),
           meta_mode=np.array("embedded"))

    # captions
    (k / "captions_binary.txt").write_bytes(os.urandom(64) + b"\x00\xff\xfe")
    (k / "captions_latin1.txt").write_bytes("caf\xe9\n".encode("latin-1") * 4)
    (k / "captions_3.txt").write_text("a\nb\nc\n")
    (k / "captions_4.txt").write_text("a red circle\nb\nc\nd\n")

    # suites
    base = '[[sweeps]]\npresets = ["DiT-S/2"]\n'
    suites = {
        "nan_timeout": "[defaults]\ntimeout_s = nan\n" + base,
        "inf_timeout": "[defaults]\ntimeout_s = inf\n" + base,
        "inf_lr": "[defaults]\nlr = inf\n" + base,
        "nan_guidance": "[defaults]\nguidance = nan\n" + base,
        "inf_min_time": "[defaults]\nmin_time_s = inf\n" + base,
        "inf_nvml": "[defaults]\nnvml_interval_s = inf\n" + base,
        "empty_batches": "[defaults]\nbatch_sizes = []\n" + base,
        "nan_tolerance": '[[sweeps]]\nfamilies = ["dit"]\nparams = ["1M"]\ntolerance = nan\n',
        "bad_target": '[[sweeps]]\nfamilies = ["dit"]\nparams = ["lots"]\n',
        "nan_target": '[[sweeps]]\nfamilies = ["dit"]\nparams = ["nanM"]\n',
        "zero_input": '[[sweeps]]\nfamilies = ["dit"]\nparams = ["1M"]\ninputs = ["4x0x32"]\n',
        "huge_int": "[defaults]\nseed = 99999999999999999999\n" + base,
        "unknown_key": "[defaults]\nbatchsize = 2\n" + base,
        "no_sweeps": 'name = "x"\n',
        "sweeps_not_list": 'sweeps = 3\n',
        "name_not_str": 'name = 3\n' + base,
        "name_path": 'name = "../../escape"\n' + base,
        "name_empty": 'name = ""\n' + base,
        "syntax": "[[sweeps\n",
        "deep": "a = " + "[" * 50_000 + "]" * 50_000 + "\n",
    }
    for name, text in suites.items():
        (k / f"suite_{name}.toml").write_text(text)
    (k / "suite_latin1.toml").write_bytes('name = "caf\xe9"\n'.encode("latin-1") + base.encode())
    (k / "suite_binary.toml").write_bytes(os.urandom(200))
    (k / "suite_dir.toml").mkdir()
    (k / "policy_bad.toml").write_text("[thresholds\n")

    # run directories: a valid tiny run is made by the tests that need one; these are broken ones
    (k / "run_empty").mkdir()
    (k / "run_device").mkdir()
    (k / "a_file").write_text("not a directory\n")

    # a TorchScript archive whose pickles carry the payload
    torch.jit.script(_Doubler()).save(str(k / "ts.pt"))
    with zipfile.ZipFile(k / "ts.pt") as src, zipfile.ZipFile(k / "ts_evil.pt", "w") as dst:
        for n in src.namelist():
            dst.writestr(n, pickle.dumps(payload, protocol=2) if n.endswith(".pkl") else src.read(n))

    # checkpoints
    from safetensors.torch import save_file

    from diffbench.models.pipelines import PIPELINES, Pipeline

    pipe = Pipeline(PIPELINES.get("dit").spec("tiny"))
    state = {n: t.detach().clone().contiguous() for n, t in pipe.state_dict().items()}
    save_file({n: t.to(torch.int8) if t.is_floating_point() else t for n, t in state.items()}, k / "int8.safetensors")
    first = next(n for n, t in state.items() if t.is_floating_point())
    save_file({**state, first: torch.full_like(state[first], float("nan"))}, k / "nan.safetensors")
    save_file(state, k / "bad_aliases.safetensors", metadata={"aliases": '{"x": "no such tensor"}'})
    (k / "not_weights.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}" + os.urandom(16))


K = "{k}"
# (id, command line, fragment the error line must contain)
CORPUS: list[tuple[str, str, str]] = [
    # list / count
    ("list-kind", "list nosuchkind", "unknown kind"),
    ("list-format", "list --format yaml", "invalid choice"),
    ("count-unknown", "count NoSuchModel", "NoSuchModel"),
    ("count-params-comma", "count dit --params ,", "--params"),
    ("count-params-nan", "count dit --params nan", "--params"),
    ("count-params-inf", "count dit --params inf", "--params"),
    ("count-params-negative", "count dit --params -5M", "--params"),
    ("count-no-name", "count", "required"),
    # match
    ("match-families-comma", "match --families , --params 33M", "--families"),
    ("match-params-comma", "match --families dit --params ,", "--params"),
    ("match-patch-negative", "match --families dit --params 33M --patch -2", "--patch"),
    ("match-patch-zero", "match --families dit --params 33M --patch 0", "--patch"),
    ("match-tolerance-nan", "match --families dit --params 33M --tolerance nan", "--tolerance"),
    ("match-tolerance-inf", "match --families dit --params 33M --tolerance inf", "--tolerance"),
    ("match-tolerance-negative", "match --families dit --params 33M --tolerance -0.1", "--tolerance"),
    ("match-params-nan", "match --families dit --params nanM", "nanM"),
    ("match-params-huge", "match --families dit --params 1e400", "1e400"),
    ("match-gmacs-inf", "match --families dit --gmacs inf", "inf"),
    ("match-input-zero", "match --families dit --params 33M --input 4x0x32", "4x0x32"),
    ("match-input-word", "match --families dit --params 33M --input banana", "banana"),
    ("match-classes-zero", "match --families dit --params 33M --classes 0", "--classes"),
    ("match-family-unknown", "match --families nosuch --params 33M", "nosuch"),
    ("match-no-target", "match --families dit", "params"),
    # run
    ("run-unknown-suite", "run nosuchsuite --dry-run", "no suite"),
    ("run-timeout-nan", "run smoke --timeout nan --dry-run", "--timeout"),
    ("run-timeout-inf", "run smoke --timeout inf --dry-run", "--timeout"),
    ("run-timeout-negative", "run smoke --timeout -1 --dry-run", "--timeout"),
    ("run-device-banana", "run smoke --device banana --dry-run", "banana"),
    ("run-device-cuda", "run smoke --device cuda --dry-run", "cuda"),
    ("run-resume-no-out", "run smoke --resume", "--out"),
    ("run-only-none", "run smoke --only zzz --dry-run", "zzz"),
    ("run-out-file", "run smoke --out {k}/a_file", "a_file"),
    ("run-out-under-file", "run smoke --out {k}/a_file/sub", "a_file"),
    ("suite-timeout-nan", "run {k}/suite_nan_timeout.toml --dry-run", "timeout_s"),
    ("suite-timeout-inf", "run {k}/suite_inf_timeout.toml --dry-run", "timeout_s"),
    ("suite-lr-inf", "run {k}/suite_inf_lr.toml --dry-run", "lr"),
    ("suite-guidance-nan", "run {k}/suite_nan_guidance.toml --dry-run", "guidance"),
    ("suite-min-time-inf", "run {k}/suite_inf_min_time.toml --dry-run", "min_time_s"),
    ("suite-nvml-inf", "run {k}/suite_inf_nvml.toml --dry-run", "nvml_interval_s"),
    ("suite-empty-list", "run {k}/suite_empty_batches.toml --dry-run", "batch_sizes"),
    ("suite-tolerance-nan", "run {k}/suite_nan_tolerance.toml --dry-run", "tolerance"),
    ("suite-target-word", "run {k}/suite_bad_target.toml --dry-run", "lots"),
    ("suite-target-nan", "run {k}/suite_nan_target.toml --dry-run", "nanM"),
    ("suite-input-zero", "run {k}/suite_zero_input.toml --dry-run", "4x0x32"),
    ("suite-huge-int", "run {k}/suite_huge_int.toml --dry-run", "seed"),
    ("suite-unknown-key", "run {k}/suite_unknown_key.toml --dry-run", "batchsize"),
    ("suite-no-sweeps", "run {k}/suite_no_sweeps.toml --dry-run", "sweeps"),
    ("suite-sweeps-not-list", "run {k}/suite_sweeps_not_list.toml --dry-run", "sweeps"),
    ("suite-name-not-str", "run {k}/suite_name_not_str.toml --dry-run", "name"),
    ("suite-name-path", "run {k}/suite_name_path.toml --dry-run", "name"),
    ("suite-name-empty", "run {k}/suite_name_empty.toml --dry-run", "name"),
    ("suite-syntax", "run {k}/suite_syntax.toml --dry-run", "TOML"),
    ("suite-deep", "run {k}/suite_deep.toml --dry-run", "nested"),
    ("suite-latin1", "run {k}/suite_latin1.toml --dry-run", "UTF-8"),
    ("suite-binary", "run {k}/suite_binary.toml --dry-run", "suite_binary.toml"),
    ("suite-directory", "run {k}/suite_dir.toml --dry-run", "suite_dir.toml"),
    # report / compare / baseline
    ("report-missing", "report {k}/nonexistent", "nonexistent"),
    ("report-empty-dir", "report {k}/run_empty", "run_empty"),
    ("report-format", "report {k}/run_empty --format pdf", "pdf"),
    ("compare-missing", "compare {k}/nonexistent {k}/run_empty", "nonexistent"),
    ("baseline-missing", "baseline {k}/nonexistent -o {k}/b.json", "nonexistent"),
    # fid / stats
    ("fid-missing", "fid {k}/nonexistent {k}/imgs --detector digits", "nonexistent"),
    ("fid-stats-nan-mu", "fid {k}/stats_nan_mu.npz {k}/stats_ok.npz", "not finite"),
    ("fid-stats-inf-mu", "fid {k}/stats_inf_mu.npz {k}/stats_ok.npz", "not finite"),
    ("fid-stats-neg-cov", "fid {k}/stats_neg_cov.npz {k}/stats_ok.npz", "covariance"),
    ("fid-stats-complex", "fid {k}/stats_complex.npz {k}/stats_ok.npz", "complex"),
    ("fid-stats-dims", "fid {k}/stats_dim3.npz {k}/stats_ok.npz", "dimension"),
    ("fid-stats-shape", "fid {k}/stats_bad_shape.npz {k}/stats_ok.npz", "sigma"),
    ("fid-stats-nan-cov", "fid {k}/stats_nan_cov.npz {k}/stats_ok.npz", "not finite"),
    ("fid-stats-asym", "fid {k}/stats_asym.npz {k}/stats_ok.npz", "symmetric"),
    ("fid-stats-str", "fid {k}/stats_str.npz {k}/stats_ok.npz", "mu"),
    ("fid-stats-empty", "fid {k}/stats_empty.npz {k}/stats_ok.npz", "mu"),
    ("fid-stats-detectors-differ", "fid {k}/stats_other_detector.npz {k}/stats_other_detector2.npz", "detector"),
    ("fid-device-banana", "fid {k}/imgs {k}/imgs --detector digits --device banana", "banana"),
    ("fid-device-cuda", "fid {k}/imgs {k}/imgs --detector digits --device cuda", "cuda"),
    ("fid-batch-zero", "fid {k}/imgs {k}/imgs --detector digits --batch-size 0", "batch"),
    ("fid-empty-hw", "fid {k}/empty_hw.npz {k}/imgs --detector digits", "empty_hw.npz"),
    ("fid-float-npz", "fid {k}/float_imgs.npz {k}/imgs --detector digits", "uint8"),
    ("fid-garbage-npz", "fid {k}/garbage.npz {k}/imgs --detector digits", "garbage.npz"),
    ("fid-object-npz", "fid {k}/object.npz {k}/imgs --detector digits", "object.npz"),
    ("fid-object-member-npz", "fid {k}/object_member.npz {k}/imgs --detector digits", "object_member.npz"),
    ("fid-text-file", "fid {k}/notes.txt {k}/imgs --detector digits", "notes.txt"),
    ("fid-detector-unknown", "fid {k}/imgs {k}/imgs --detector nosuch", "nosuch"),
    ("fid-mode-mismatch", "fid {k}/imgs {k}/imgs --detector digits --mode clean", "mode"),
    ("fid-seed-negative", "fid {k}/imgs {k}/imgs --detector digits --kid --seed -1", "--seed"),
    ("stats-missing", "stats {k}/nonexistent -o {k}/s.npz --detector digits", "nonexistent"),
    ("stats-out-under-file", "stats {k}/imgs -o {k}/a_file/s.npz --detector digits", "a_file"),
    ("stats-out-not-npz", "stats {k}/imgs -o {k}/stats_out --detector digits", ".npz"),
    ("stats-device-banana", "stats {k}/imgs -o {k}/s.npz --detector digits --device banana", "banana"),
    # crafted pickles into the Inception loaders (every mode, explicit path)
    *[(f"pickle-weights-{m}", f"fid {{k}}/imgs {{k}}/imgs --mode {m} --weights {{k}}/evil.pth "
       "--allow-unverified-weights", "evil.pth")
      for m in ("torch-fidelity", "clean", "legacy_tensorflow", "legacy_pytorch")],
    *[(f"pickle-raw-{m}", f"fid {{k}}/imgs {{k}}/imgs --mode {m} --weights {{k}}/evil_raw.pkl "
       "--allow-unverified-weights", "evil_raw.pkl")
      for m in ("torch-fidelity", "clean", "legacy_tensorflow", "legacy_pytorch")],
    # clip-score
    ("clip-captions-binary", "clip-score {k}/imgs {k}/captions_binary.txt", "captions_binary.txt"),
    ("clip-captions-latin1", "clip-score {k}/imgs {k}/captions_latin1.txt", "UTF-8"),
    ("clip-captions-count", "clip-score {k}/imgs {k}/captions_3.txt", "captions"),
    ("clip-model-missing", "clip-score {k}/imgs {k}/captions_4.txt --model {k}/nonexistent", "nonexistent"),
    ("clip-pickle-open-clip", "clip-score {k}/imgs.npz {k}/captions_4.txt --model {k}/evil.pth", "evil.pth"),
    ("clip-pickle-hf-dir", "clip-score {k}/imgs.npz {k}/captions_4.txt --model {k}/hf_clip", "pytorch_model.bin"),
    ("fid-torchscript-pickle", "fid {k}/imgs {k}/imgs --mode clean --weights {k}/ts_evil.pt --allow-unverified-weights",
     "ts_evil.pt"),
    ("fid-torchscript-not-archive", "fid {k}/imgs {k}/imgs --mode legacy_tensorflow --weights {k}/notes.txt "
     "--allow-unverified-weights", "TorchScript"),
    # train
    ("train-unknown", "train nosuch --out {k}/t", "nosuch"),
    ("train-lr-inf", "train dit --lr inf --steps 1 --out {k}/t", "--lr"),
    ("train-lr-nan", "train dit --lr nan --steps 1 --out {k}/t", "--lr"),
    ("train-lr-negative", "train dit --lr -1 --steps 1 --out {k}/t", "--lr"),
    ("train-flops-inf", "train dit --train-flops inf --out {k}/t", "--train-flops"),
    ("train-flops-nan", "train dit --train-flops nan --out {k}/t", "--train-flops"),
    ("train-steps-negative", "train dit --steps -1 --out {k}/t", "--steps"),
    ("train-batch-zero", "train dit --steps 1 --batch-size 0 --out {k}/t", "--batch-size"),
    ("train-checkpoint-every-zero", "train dit --steps 1 --checkpoint-every 0 --out {k}/t", "--checkpoint-every"),
    ("train-ae-steps-negative", "train ldm --steps 1 --autoencoder-steps -1 --out {k}/t", "--autoencoder-steps"),
    ("train-out-file", "train dit --steps 1 --out {k}/a_file", "a_file"),
    ("train-dataset-unknown", "train dit --steps 1 --dataset nosuch --out {k}/t", "nosuch"),
    ("train-dataset-empty-hw", "train dit --steps 1 --dataset {k}/empty_hw.npz --out {k}/t", "empty_hw.npz"),
    ("train-labels-negative", "train dit --steps 1 --dataset {k}/labels_negative.npz --out {k}/t", "label"),
    ("train-labels-strings", "train dit --steps 1 --dataset {k}/labels_strings.npz --out {k}/t", "label"),
    ("train-labels-short", "train dit --steps 1 --dataset {k}/labels_short.npz --out {k}/t", "label"),
    ("train-params-nan", "train dit --steps 1 --params nan --out {k}/t", "--params"),
    ("train-text-encoder-missing", "train glide --steps 1 --text-encoder {k}/nonexistent --out {k}/t", "nonexistent"),
    ("train-autoencoder-missing", "train ldm --steps 1 --autoencoder {k}/nonexistent --out {k}/t", "nonexistent"),
    ("train-autoencoder-pickle", "train ldm --steps 1 --dataset shapes --autoencoder {k}/ae_dir --out {k}/t", "ae_dir"),
    ("train-device-banana", "train dit --steps 1 --device banana --out {k}/t", "banana"),
    # sample
    ("sample-dir-pickle", "sample {k}/pipe_dir --n 1 --steps 1 --out {k}/s", "diffusion_pytorch_model.bin"),
    ("sample-dir-custom-class", "sample {k}/custom_dir --n 1 --out {k}/s", "custom pipeline code is not run"),
    ("sample-stage-pickle", "sample ldm --n 1 --stage-weights unet={k}/pipe_dir/unet --out {k}/s",
     "diffusion_pytorch_model.bin"),
    ("sample-stage-syntax", "sample ldm --n 1 --stage-weights {k}/pipe_dir/unet --out {k}/s", "STAGE=DIR"),
    ("sample-guidance-nan", "sample dit --n 1 --guidance nan --out {k}/s", "guidance"),
    ("sample-guidance-inf", "sample dit --n 1 --guidance inf --out {k}/s", "guidance"),
    ("sample-device-banana", "sample dit --n 1 --device banana --out {k}/s", "banana"),
    ("sample-device-cuda", "sample dit --n 1 --device cuda --out {k}/s", "cuda"),
    ("sample-checkpoint-int8", "sample dit --n 1 --checkpoint {k}/int8.safetensors --out {k}/s", "torch.int8"),
    ("sample-checkpoint-nan", "sample dit --n 1 --checkpoint {k}/nan.safetensors --out {k}/s", "NaN"),
    ("sample-checkpoint-aliases", "sample dit --n 1 --checkpoint {k}/bad_aliases.safetensors --out {k}/s", "aliases"),
    ("sample-checkpoint-garbage", "sample dit --n 1 --checkpoint {k}/not_weights.safetensors --out {k}/s",
     "not_weights.safetensors"),
    ("sample-checkpoint-pickle", "sample dit --n 1 --checkpoint {k}/evil.pth --out {k}/s", "evil.pth"),
    ("sample-checkpoint-raw-pickle", "sample dit --n 1 --checkpoint {k}/evil_raw.pkl --out {k}/s", "evil_raw.pkl"),
    ("sample-out-file", "sample dit --n 1 --out {k}/a_file", "a_file"),
    ("sample-n-zero", "sample dit --n 0 --out {k}/s", "--n"),
    ("sample-labels-words", "sample dit --n 1 --labels a,b --out {k}/s", "--labels"),
    ("sample-batch-zero", "sample dit --n 1 --batch-size 0 --out {k}/s", "batch"),
    ("sample-steps-negative", "sample dit --n 1 --steps -1 --out {k}/s", "step"),
    ("sample-text-encoder-missing", "sample glide --n 1 --text-encoder {k}/nonexistent --out {k}/s", "nonexistent"),
    ("sample-text-encoder-pickle", "sample ldm --n 1 --text-encoder {k}/hf_clip --out {k}/s", "pytorch_model.bin"),
    ("sample-text-encoder-glide", "sample glide --n 1 --text-encoder {k}/hf_clip --out {k}/s", "text encoder"),
    ("sample-autoencoder-pickle", "sample ldm --n 1 --autoencoder {k}/ae_dir --out {k}/s", "diffusion_pytorch_model"),
    ("run-keep-failed-alone", "run smoke --keep-failed --dry-run", "--resume"),
    ("sample-text-encoder-on-class", "sample dit --n 1 --text-encoder {k}/hf_clip --out {k}/s", "text encoder"),
]


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    k = tmp_path_factory.mktemp("kit")
    build_kit(k)
    return k


@pytest.fixture
def isolated(kit, monkeypatch):
    """Caches and environment pointed into the kit, so no test can find weights outside it."""
    monkeypatch.setenv("TORCH_HOME", str(kit / "torch_home"))
    monkeypatch.setenv("HOME", str(kit))  # ~/.cache/diffbench -> the kit's crafted files
    for var in ("DIFFBENCH_INCEPTION_WEIGHTS", "DIFFBENCH_INCEPTION_TORCHSCRIPT"):
        monkeypatch.delenv(var, raising=False)
    return kit


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(code: int, err: str, fragment: str, kit: Path) -> None:
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}, stderr: {err}"
    assert len(lines) == 1, err
    assert lines[0].startswith("diffbench: error: "), err
    assert fragment in lines[0], (fragment, lines[0])
    assert not (kit / "PWNED").exists(), "a crafted pickle's payload ran"


def test_corpus_is_large_and_names_are_unique():
    assert len(CORPUS) >= 80
    assert len({c[0] for c in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("line,fragment", [(c[1], c[2]) for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_bad_input_is_one_line_and_exit_2(line, fragment, isolated, capsys):
    argv = [a.replace(K, str(isolated)) for a in shlex.split(line)]
    code, _, err = run_main(argv, capsys)
    assert_user_error(code, err, fragment, isolated)


MODES = ("torch-fidelity", "clean", "legacy_tensorflow", "legacy_pytorch")


@pytest.mark.parametrize("mode", MODES)
def test_crafted_pickle_through_the_environment_variable_never_runs(mode, isolated, monkeypatch, capsys):
    var = "DIFFBENCH_INCEPTION_WEIGHTS" if mode in ("torch-fidelity", "legacy_pytorch") else \
        "DIFFBENCH_INCEPTION_TORCHSCRIPT"
    monkeypatch.setenv(var, str(isolated / "evil.pth"))
    code, _, err = run_main(["fid", f"{isolated}/imgs", f"{isolated}/imgs", "--mode", mode,
                             "--allow-unverified-weights"], capsys)
    assert_user_error(code, err, "evil.pth", isolated)


@pytest.mark.parametrize("mode", MODES)
def test_crafted_pickle_in_every_cache_location_never_runs(mode, isolated, capsys):
    """TORCH_HOME's hub cache and ~/.cache/diffbench hold crafted files under every name a loader looks for."""
    code, _, err = run_main(["fid", f"{isolated}/imgs", f"{isolated}/imgs", "--mode", mode,
                             "--allow-unverified-weights"], capsys)
    assert_user_error(code, err, str(isolated), isolated)


def test_weights_are_never_searched_in_tmp(isolated, monkeypatch):
    import tempfile

    from diffbench.metrics.weights import PT_INCEPTION, TS_INCEPTION

    for spec in (PT_INCEPTION, TS_INCEPTION):
        assert Path("/tmp") not in spec.cache_dirs() and Path(tempfile.gettempdir()) not in spec.cache_dirs()


def test_temporary_weight_folders_are_removed(tmp_path, monkeypatch):
    """The safe copies handed to torch-fidelity and clean-fid live in folders that are gone afterwards."""
    import tempfile

    from tests.inception_standins import torch_fidelity_standin

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    weights = torch_fidelity_standin(tmp_path / "w.pth")
    from diffbench.metrics import inception

    for mode in ("torch-fidelity", "legacy_pytorch"):
        inception.build(mode, str(weights), allow_unverified=True)
    assert list((tmp_path / "tmp").iterdir()) == []
