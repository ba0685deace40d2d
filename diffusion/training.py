"""Training to a fixed budget (steps, or training FLOPs = 3 x forward FLOPs x images seen).

AdamW, an EMA of the weights, condition dropout for classifier-free guidance. Every batch,
timestep and noise draw comes from a generator seeded by (seed, step), so a run resumed from
its checkpoint after a kill continues exactly where it stopped: same steps, same loss curve.
Checkpoints are safetensors (model, EMA, optimizer) with the configs in their metadata;
nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from diffbench.core import distributed
from diffbench.core.errors import BadInputError
from diffbench.diffusion import steps
from diffbench.diffusion.config import Loop, TrainConfig
from diffbench.diffusion.preemption import Preempted, preemption
from diffbench.diffusion.process import split_learned_variance, training_scheduler, training_target
from diffbench.diffusion.sources import Batch
from diffbench.diffusion.steps import StepTimer
from diffbench.models.api import read_safetensors, write_safetensors

CHECKPOINT = "checkpoint.safetensors"


@dataclass
class TrainResult:
    steps: int
    losses: list[float]
    seconds: float
    images_seen: int
    train_flops: float | None
    resumed_from: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # the scored weights' average
    timing: dict[str, Any] = field(default_factory=dict)  # the loop's measured step times and data wait


def _autocast(device: str, bf16: bool) -> Any:
    if bf16 and str(device).startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [-1, 1], the range every denoiser trains in; float inputs (latents) as given."""
    return images.float().div(127.5).sub(1) if images.dtype == torch.uint8 else images.float()


def _save(path: Path, model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer, step: int,
          losses: list[float], meta: dict[str, str]) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    st = opt.state_dict()
    for idx, s in st["state"].items():
        for name, v in s.items():
            tensors[f"opt.{idx}.{name}"] = v if torch.is_tensor(v) else torch.tensor(v)
    write_safetensors(path, tensors, {**meta, "step": str(step), "losses": json.dumps(losses),
                                      "param_groups": json.dumps(st["param_groups"])})


def _load(path: Path, model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer,
          meta_expected: dict[str, str]) -> tuple[int, list[float]]:
    try:
        return _restore(path, model, ema, opt, meta_expected)
    except BadInputError:
        raise
    except Exception as e:  # noqa: BLE001 - a checkpoint changed after it was written: one line, never a traceback
        raise BadInputError(f"{path}: a damaged checkpoint ({type(e).__name__}: {' '.join(str(e).split())[:120]}); "
                            "remove it to train from the start, or restore it") from None


def _restore(path: Path, model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer,
             meta_expected: dict[str, str]) -> tuple[int, list[float]]:
    tensors, meta = read_safetensors(path)
    for key in ("model_config", "train_config"):
        if meta.get(key) != meta_expected[key]:
            raise BadInputError(f"{path} was written for a different {key.replace('_', ' ')}; "
                                "use another output directory or the matching config")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}, strict=True)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    return int(meta["step"]), json.loads(meta["losses"])


def _optimise(opt: torch.optim.Optimizer, cfg: TrainConfig, step: int) -> None:
    """One update (``step`` 0-based) from the accumulated gradients, at the learning rate of the step (a function
    of the step only, so a resumed run is exact); the gradients are then cleared."""
    for group in opt.param_groups:
        group["lr"] = cfg.lr_at(step)
    opt.step()
    opt.zero_grad(set_to_none=True)


def _rows(c: Any, sl: slice) -> Any:
    if c is None:
        return None
    return {k: v[sl] for k, v in c.items()} if isinstance(c, dict) else c[sl]


def _step(model: Any, net: Any, x_raw: torch.Tensor, c_raw: Any, cfg: TrainConfig, step: int, share: steps.Share,
          n: int, device: str, loop: Loop, sched: Any) -> torch.Tensor:
    """Forward and backward of this rank's rows of the step (in micro-batches, gradients accumulated, the
    all-reduce on the last); returns its loss, the mean over its rows as the global loss is over all of them."""
    d = steps.draw(tuple(x_raw.shape[1:]), cfg.batch_size, cfg.seed, step, share, n)
    x0 = model_range(x_raw)
    c = _condition(model, c_raw, d, cfg, device)
    rows = len(x0)
    micro = loop.micro_batch or rows
    total = torch.zeros((), device=device)
    for a in range(0, rows, micro):
        sl = slice(a, min(rows, a + micro))
        xt = sched.add_noise(x0[sl], d.noise[sl], d.t[sl])
        last = sl.stop >= rows
        with (contextlib.nullcontext() if last or not hasattr(net, "no_sync") else net.no_sync()):
            with _autocast(device, cfg.bf16):
                pred = split_learned_variance(net(xt.to(device), d.t[sl].to(device).float(), _rows(c, sl)),
                                              x0.shape[1])
            target = training_target(sched, x0[sl], d.noise[sl], d.t[sl]).to(device)
            loss = torch.nn.functional.mse_loss(pred.float(), target) * ((sl.stop - sl.start) / rows)
            loss.backward()
        total += loss.detach()
    return total


def _parallel(model: torch.nn.Module, world: distributed.World, device: str, loop: Any) -> Any:
    """What the loop calls: the model, under DistributedDataParallel in a world of several ranks (gradients
    averaged over them), compiled with ``compile``; on a GPU, TF32 as ``loop`` says."""
    if str(device).startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = loop.tf32
    net: Any = model
    if world.is_distributed:
        ids = [torch.device(device).index] if str(device).startswith("cuda") else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return torch.compile(net) if loop.compile else net


def _checkpoint(path: Path, model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer, step: int,
                losses: list[float], meta: dict[str, str], world: distributed.World) -> None:
    """Rank 0 writes (atomically); every rank waits for it, so none runs ahead of a checkpoint it may resume."""
    if world.is_writer:
        _save(path, model, ema, opt, step, losses, meta)
    distributed.barrier()


class _Tensors:
    """A tensor of items (and per-item conditions) as a source: what pipelines and direct callers pass."""

    flippable = False

    def __init__(self, x: torch.Tensor, conds: torch.Tensor | None) -> None:
        self.x, self.conds = x, conds

    def __len__(self) -> int:
        return len(self.x)

    def fetch(self, idx: list[int], flips: Any = None) -> Any:
        i = torch.as_tensor(idx, dtype=torch.long)
        return Batch(self.x[i], self.conds[i] if self.conds is not None else None)


def _condition(model: Any, conds: Any, d: steps.Draw, cfg: TrainConfig, device: str) -> Any:
    """The step's conditions, some dropped to the null condition (classifier-free guidance)."""
    if conds is None:
        return None
    drop = d.drop < cfg.cond_dropout
    if hasattr(model, "training_condition"):  # pipeline stages: a dict of conditions, device handled there
        return model.training_condition(conds, drop, d.generator)
    c = conds.clone()
    c[drop] = model.null(int(drop.sum()))
    return c.to(device)


def _averaged_and_optimiser(model: torch.nn.Module, cfg: TrainConfig) -> tuple[torch.nn.Module, Any]:
    """The weights' average (a frozen copy) and AdamW. foreach: one multi-tensor update, not a Python loop over
    the tensors (CUDA's default; on CPU it halved the optimiser's share of a 353-tensor U-Net's step, 28 -> 14 ms
    of about 300, both sides measured one after the other under the same load)."""
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay, foreach=True)
    return ema, opt


def train(model: Any, images: Any, conds: torch.Tensor | None, cfg: TrainConfig, out_dir: str | Path,
          flops_per_image: int | None = None, device: str = "cpu", model_config: dict[str, Any] | None = None,
          stop_after: int | None = None, loop: Loop | None = None) -> tuple[torch.nn.Module, TrainResult]:
    """Train ``model`` (a Denoiser) on ``images`` (a data source, or a uint8 tensor with per-image ``conds``);
    returns (EMA model, result). Under torch.distributed, data-parallel over the process group's ranks at the
    same global batch; rank 0 writes the checkpoint."""
    loop = loop or Loop()
    source = images if not torch.is_tensor(images) else _Tensors(images, conds)
    world = distributed.current()
    share = steps.Share(world.rank, world.size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    total = cfg.total_steps(flops_per_image)
    model = model.to(device).train()
    ema, opt = _averaged_and_optimiser(model, cfg)
    meta = {"model_config": json.dumps(model_config or {}, sort_keys=True),
            # how often checkpoints are written is not what they hold: a resume may change it
            "train_config": json.dumps({k: v for k, v in asdict(cfg).items() if k != "checkpoint_every"},
                                       sort_keys=True)}
    step, losses = 0, list[float]()
    ckpt = out / CHECKPOINT
    if ckpt.exists():
        step, losses = _load(ckpt, model, ema, opt, meta)
    resumed = step
    stop = total if stop_after is None else min(total, stop_after)
    net = _parallel(model, world, device, loop)
    timer = StepTimer(device)
    sched = training_scheduler(cfg.prediction)
    averaging = cfg.averaging()
    batches = steps.loader(source, cfg.batch_size, cfg.seed, step, stop, share, loop.workers,
                           pin=str(device).startswith("cuda"))
    t0 = time.perf_counter()
    with preemption() as stop_now:
        for x_raw, c_raw in timer.wait(batches):
            loss = _step(model, net, x_raw, c_raw, cfg, step, share, len(source), device, loop, sched)
            _optimise(opt, cfg, step)
            averaging.update(ema.parameters(), model.parameters(), step + 1)
            losses.append(distributed.mean(float(loss), world))
            step += 1
            timer.stepped()
            signalled = stop_now()
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 or step == stop or signalled:
                _checkpoint(ckpt, model, ema, opt, step, losses, meta, world)
            if signalled:
                raise Preempted(step, ckpt)
    seconds = time.perf_counter() - t0
    flops = 3.0 * flops_per_image * cfg.batch_size * step if flops_per_image else None
    return ema, TrainResult(step, losses, seconds, cfg.batch_size * step, flops, resumed,
                            extra=averaging.describe(step), timing=timer.describe(cfg.batch_size, world.size))
