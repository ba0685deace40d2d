"""CLIP score: 100 x cosine(image, caption) per pair, clipped at 0 and averaged (torchmetrics' convention).

Models come from local files only: a Hugging Face directory (``CLIPModel`` + ``CLIPProcessor``),
an open_clip checkpoint (its tokenizer ships the CLIP BPE vocabulary, so it works offline), or
the embedded shapes-CLIP. torchmetrics 1.9's ``CLIPScore`` fails with transformers 5, so the few
lines it takes are written here; the formula is the same (tested against it where it runs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from diffbench.core.errors import BadInputError, MissingWeightsError, require
from diffbench.core.safeload import check_pickles, read_state_dict
from diffbench.metrics import embedded
from diffbench.metrics.captions import tokenize
from diffbench.metrics.weights import sha256_of

CONVENTION = "100 * max(cos, 0), averaged over pairs (torchmetrics CLIPScore)"


@dataclass
class ClipModel:
    name: str
    weights_sha256: str
    verified: bool
    embed_images: Callable[[torch.Tensor], torch.Tensor]  # uint8 NCHW -> (N, D) unit vectors
    embed_texts: Callable[[list[str]], torch.Tensor]  # captions -> (N, D) unit vectors


def load(model: str | None = None, arch: str = "ViT-B-32", allow_unverified: bool = False) -> ClipModel:
    if model in (None, "embedded", "shapes-clip"):
        return _embedded(allow_unverified)
    path = Path(model)
    if path.is_dir() and (path / "config.json").is_file():
        return _hf(path)
    if path.is_file():
        return _open_clip(path, arch)
    raise MissingWeightsError(f"{path}: not a Hugging Face CLIP directory (with config.json) nor an open_clip "
                              "checkpoint file; download one and pass its local path with --model")


def _embedded(allow_unverified: bool) -> ClipModel:
    net, digest, verified = embedded.load_shapes_clip(allow_unverified=allow_unverified)

    @torch.no_grad()
    def images(x: torch.Tensor) -> torch.Tensor:
        return net.embed_images(embedded.preprocess(x))

    @torch.no_grad()
    def texts(c: list[str]) -> torch.Tensor:
        return net.embed_texts(tokenize(c))

    return ClipModel("shapes-clip", digest, verified, images, texts)


def _hf(path: Path) -> ClipModel:
    from transformers import CLIPModel, CLIPProcessor

    check_pickles(path)  # transformers' own loader is given the directory only once its pickles are known safe
    try:
        net = CLIPModel.from_pretrained(str(path), local_files_only=True, trust_remote_code=False).eval()
        proc = CLIPProcessor.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - any loading problem is the same user fix
        raise BadInputError(f"{path}: not loadable as a Hugging Face CLIP model ({' '.join(str(e).split())[:100]})"
                            ) from None
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    digest = sha256_of(files[0], files[0].stat().st_mtime_ns) if files else "unknown"

    @torch.no_grad()
    def images(x: torch.Tensor) -> torch.Tensor:
        pix = proc(images=list(x.permute(0, 2, 3, 1).numpy()), return_tensors="pt")["pixel_values"]
        return F.normalize(_as_tensor(net.get_image_features(pixel_values=pix)), dim=-1)

    @torch.no_grad()
    def texts(c: list[str]) -> torch.Tensor:
        tok = proc(text=c, return_tensors="pt", padding=True, truncation=True)
        return F.normalize(_as_tensor(net.get_text_features(input_ids=tok["input_ids"],
                                                            attention_mask=tok["attention_mask"])), dim=-1)

    return ClipModel(f"hf:{path.name}", digest, False, images, texts)


def _as_tensor(out: object) -> torch.Tensor:
    # transformers 5 may return a model output object instead of a tensor
    if isinstance(out, torch.Tensor):
        return out
    for attr in ("pooler_output", "image_embeds", "text_embeds"):
        if getattr(out, attr, None) is not None:
            return getattr(out, attr)
    raise TypeError(f"unexpected CLIP output {type(out).__name__}")


def _open_clip(path: Path, arch: str) -> ClipModel:
    open_clip: Any = require("open_clip", "an open_clip checkpoint", "clip")

    # read here, weights only: open_clip never sees the file
    state = {k.removeprefix("module."): v for k, v in read_state_dict(path).items()}
    try:
        net, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None)
        net.load_state_dict(state, strict=True)
    except Exception as e:  # noqa: BLE001 - an unknown arch or a checkpoint of another one
        raise BadInputError(f"{path}: not loadable as an open_clip {arch} checkpoint "
                            f"({' '.join(str(e).split())[:100]})") from None
    net.eval()
    tokenizer = open_clip.get_tokenizer(arch)
    size = net.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    mean = torch.tensor(net.visual.preprocess_cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))[None, :, None, None]
    std = torch.tensor(net.visual.preprocess_cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))[None, :, None, None]

    @torch.no_grad()
    def images(x: torch.Tensor) -> torch.Tensor:
        # open_clip's transform: bicubic resize of the short side, centre crop, normalise
        y = F.interpolate(x.float() / 255, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
        return F.normalize(net.encode_image((y - mean) / std), dim=-1)

    @torch.no_grad()
    def texts(c: list[str]) -> torch.Tensor:
        return F.normalize(net.encode_text(tokenizer(c)), dim=-1)

    return ClipModel(f"open_clip:{arch}", sha256_of(path, path.stat().st_mtime_ns), False, images, texts)


def clip_score(model: ClipModel, images: torch.Tensor, captions: list[str]) -> tuple[float, np.ndarray]:
    """(mean score, per-pair scores) with the torchmetrics convention: 100 * max(cos, 0)."""
    if len(captions) != len(images):
        raise BadInputError(f"{len(images)} images but {len(captions)} captions; give exactly one caption per image")
    if len(images) == 0:
        raise BadInputError("no images")
    per = (100 * (model.embed_images(images) * model.embed_texts(captions)).sum(-1)).clamp(min=0)
    return float(per.mean()), per.double().numpy()
