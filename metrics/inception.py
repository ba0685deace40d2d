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

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffbench.metrics.weights import PT_INCEPTION, TS_INCEPTION, ResolvedWeights, locate

MODES = ("torch-fidelity", "clean", "legacy_tensorflow", "legacy_pytorch")
SFID_CHANNELS = 7  # ADM evaluator: first 7 channels of mixed_6/conv (17x17x7 = 2023-d)


def _safe_state_dict(path: Path) -> dict[str, torch.Tensor]:
    from diffbench.core.errors import BadInputError

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # never executes code from the file
    except Exception as e:
        raise BadInputError(f"{path}: not loadable as plain weights ({str(e).splitlines()[0][:100]})") from None
    return state


class TorchFidelityInception:
    name = "inception-v3"
    mode = "torch-fidelity"

    def __init__(self, weights: ResolvedWeights, device: str) -> None:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.weights_sha256, self.verified, self.device = weights.sha256, weights.verified, device
        # torch-fidelity loads with weights_only=False; hand it only a file we re-saved from a safe load
        with tempfile.TemporaryDirectory() as tmp:
            safe = Path(tmp) / "weights.pth"
            torch.save(_safe_state_dict(weights.path), safe)
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

    folder = path.parent
    if path.name != "inception-2015-12-05.pt":  # InceptionV3W reads that name from a folder
        folder = Path(tempfile.mkdtemp(prefix="diffbench-inception-"))
        os.symlink(path.resolve(), folder / "inception-2015-12-05.pt")
    return InceptionV3W(str(folder), download=False, resize_inside=resize_inside).to(device).eval()


def _cleanfid_pytorch_inception(path: Path, device: str) -> Any:
    from cleanfid.inception_pytorch import InceptionV3

    # clean-fid's port fetches pytorch-fid's weights through torch.hub's cache: point the cache at
    # a folder holding (a link to) the verified local file, so nothing is downloaded.
    hub = Path(tempfile.mkdtemp(prefix="diffbench-hub-"))
    (hub / "checkpoints").mkdir()
    os.symlink(path.resolve(), hub / "checkpoints" / PT_INCEPTION.filenames[1])
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(hub))
    try:
        model = InceptionV3(output_blocks=[3], resize_input=False).to(device).eval()
    finally:
        torch.hub.set_dir(old)
    return lambda x: model(x / 255)[0].squeeze(-1).squeeze(-1)


def build(mode: str, weights: str | None = None, allow_unverified: bool = False, device: str = "cpu") -> Any:
    if mode == "torch-fidelity":
        return TorchFidelityInception(locate(PT_INCEPTION, weights, allow_unverified), device)
    spec = PT_INCEPTION if mode == "legacy_pytorch" else TS_INCEPTION
    return CleanFidInception(mode, locate(spec, weights, allow_unverified), device)
