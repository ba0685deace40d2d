"""Inception-v3 detectors through the reference libraries, in their modes, from local weights.

- ``torch-fidelity``: torch-fidelity's ``FeatureExtractorInceptionV3`` (also what torchmetrics'
  FID runs): its own TF1-style bilinear resize to 299 inside the network. Note torchmetrics
  >= 1.x resizes with ``antialias=True`` by default, which does *not* match the reference FID;
  this mode matches torch-fidelity. Gives pool (2048), logits (IS) and spatial (sFID).
- ``clean``: clean-fid's PIL bicubic resize per channel in float, then its TorchScript network.
- ``legacy_tensorflow``: clean-fid's TorchScript network resizing inside, as TF's FID did.
- ``legacy_pytorch``: clean-fid's PyTorch port (pytorch-fid) after a bilinear resize.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffbench.core.errors import BadInputError
from diffbench.core.safeload import read_state_dict
from diffbench.metrics.detectors import INCEPTION_MODES
from diffbench.metrics.weights import PT_INCEPTION, TS_INCEPTION, ResolvedWeights, locate

MODES = INCEPTION_MODES
SFID_CHANNELS = 7  # ADM evaluator: first 7 channels of mixed_6/conv (17x17x7 = 2023-d)


def _safe_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict read with ``weights_only`` (a pickle that would run code is refused), tensors only."""
    return read_state_dict(path)  # never executes code from the file


@contextlib.contextmanager
def _safe_copy(path: Path, name: str) -> Iterator[Path]:
    """A temporary folder holding ``name``: the tensors of ``path`` as read safely, saved again by us.

    torch-fidelity and clean-fid's PyTorch port load their weights with ``weights_only=False`` (clean-fid
    through ``torch.hub.load_state_dict_from_url``), which would run a crafted pickle's code: they are
    only ever handed this re-saved copy (plain tensors), never the user's file. The folder is removed
    when the block ends (the network is in memory by then)."""
    state = _safe_state_dict(path)
    with tempfile.TemporaryDirectory(prefix="diffbench-weights-") as tmp:
        safe = Path(tmp) / name
        safe.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, safe)
        yield safe


def _torchscript_archive(path: Path) -> None:
    """Refuse anything that is not a TorchScript zip archive before ``torch.jit.load`` sees it.

    ``torch.jit.load`` unpickles with TorchScript's own restricted unpickler, which resolves only
    TorchScript types (a crafted ``posix.system`` global is refused: tested), and its code runs in the
    TorchScript interpreter, not Python."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        names = []
    if not any("/code/" in n for n in names) or not any(n.endswith("constants.pkl") for n in names):
        raise BadInputError(f"{path}: not a TorchScript archive (clean-fid's inception-2015-12-05.pt is one)")


class TorchFidelityInception:
    name = "inception-v3"
    mode = "torch-fidelity"

    def __init__(self, weights: ResolvedWeights, device: str) -> None:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.weights_sha256, self.verified, self.device = weights.sha256, weights.verified, device
        with _safe_copy(weights.path, "weights.pth") as safe:  # torch-fidelity loads with weights_only=False
            self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                                   feature_extractor_weights_path=str(safe)).eval().to(device)
        self._spatial: torch.Tensor | None = None
        # TF graph "mixed_6/conv" = torch Mixed_6d.branch1x1 (conv, BN, ReLU): the sFID features
        self.net.Mixed_6d.branch1x1.register_forward_hook(self._keep_spatial)

    def _keep_spatial(self, module: Any, inputs: Any, output: torch.Tensor) -> None:
        self._spatial = output[:, :SFID_CHANNELS]

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        pool, logits = self.net(images.to(self.device))
        assert self._spatial is not None
        spatial = self._spatial.permute(0, 2, 3, 1).flatten(1)  # NHWC order, as TF flattens
        return {"pool": pool.double().cpu().numpy(), "logits": logits.double().cpu().numpy(),
                "spatial": spatial.double().cpu().numpy()}


class CleanFidInception:
    """clean-fid's networks and resizers, called as clean-fid calls them."""

    name = "inception-v3"

    def __init__(self, mode: str, weights: ResolvedWeights, device: str) -> None:
        from cleanfid.resize import build_resizer

        self.mode, self.device = mode, device
        self.weights_sha256, self.verified = weights.sha256, weights.verified
        self.resize = build_resizer(mode)
        if mode == "legacy_pytorch":
            self.model = _cleanfid_pytorch_inception(weights.path, device)
        else:
            inside = mode == "legacy_tensorflow"
            self.model = _cleanfid_torchscript_inception(weights.path, device, resize_inside=inside)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        import torchvision

        to_tensor = torchvision.transforms.ToTensor()
        batch = []
        for img in images.permute(0, 2, 3, 1).cpu().numpy():  # HWC uint8, as clean-fid reads files
            r = self.resize(img)
            batch.append(to_tensor(np.array(r)) * 255 if r.dtype == np.uint8 else to_tensor(r))
        feats = self.model(torch.stack(batch).to(self.device))
        return {"pool": feats.double().cpu().numpy()}


def _cleanfid_torchscript_inception(path: Path, device: str, resize_inside: bool) -> Any:
    from cleanfid.inception_torchscript import InceptionV3W

    _torchscript_archive(path)
    with tempfile.TemporaryDirectory(prefix="diffbench-inception-") as tmp:  # InceptionV3W reads this name
        os.symlink(path.resolve(), Path(tmp) / "inception-2015-12-05.pt")
        try:
            return InceptionV3W(tmp, download=False, resize_inside=resize_inside).to(device).eval()
        except Exception as e:  # a TorchScript archive of another network
            raise BadInputError(f"{path}: not clean-fid's Inception TorchScript ({' '.join(str(e).split())[:100]})"
                                ) from None


def _cleanfid_pytorch_inception(path: Path, device: str) -> Any:
    from cleanfid.inception_pytorch import InceptionV3

    # clean-fid's port fetches pytorch-fid's weights through torch.hub's cache: point the cache at a
    # temporary folder holding a safe copy of the verified local file, so nothing is downloaded or unpickled.
    with _safe_copy(path, f"checkpoints/{PT_INCEPTION.filenames[1]}") as safe:
        old = torch.hub.get_dir()
        torch.hub.set_dir(str(safe.parent.parent))
        try:
            model = InceptionV3(output_blocks=[3], resize_input=False).to(device).eval()
        except RuntimeError as e:  # tensors of another network
            raise BadInputError(f"{path}: not pytorch-fid's Inception weights ({' '.join(str(e).split())[:100]})"
                                ) from None
        finally:
            torch.hub.set_dir(old)
    return lambda x: model(x / 255)[0].squeeze(-1).squeeze(-1)


def build(mode: str, weights: str | None = None, allow_unverified: bool = False, device: str = "cpu") -> Any:
    if mode == "torch-fidelity":
        return TorchFidelityInception(locate(PT_INCEPTION, weights, allow_unverified), device)
    spec = PT_INCEPTION if mode == "legacy_pytorch" else TS_INCEPTION
    return CleanFidInception(mode, locate(spec, weights, allow_unverified), device)
