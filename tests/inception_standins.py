"""Randomly initialised Inception-v3 stand-ins saved to local files, to test the weights plumbing.

Numbers computed with them are NOT comparable with published FIDs (random features); they only
show that diffbench and the reference libraries agree when given the same network.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def torch_fidelity_standin(path: Path, seed: int = 0) -> Path:
    """A state dict in torch-fidelity's layout (FeatureExtractorInceptionV3), random weights."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    torch.manual_seed(seed)
    orig_url, orig_load = tfi.load_state_dict_from_url, tfi.FeatureExtractorInceptionV3.load_state_dict
    tfi.load_state_dict_from_url = lambda *a, **k: {}  # never download: keep the random init
    tfi.FeatureExtractorInceptionV3.load_state_dict = lambda self, *a, **k: None
    try:
        net = tfi.FeatureExtractorInceptionV3("standin", ["2048"])
    finally:
        tfi.load_state_dict_from_url, tfi.FeatureExtractorInceptionV3.load_state_dict = orig_url, orig_load
    torch.save(net.state_dict(), path)
    return path


class _TorchScriptInception(nn.Module):
    """Shaped like clean-fid's TorchScript export: ``layers`` maps normalised 299x299 input to 2048-d."""

    def __init__(self) -> None:
        super().__init__()
        import torchvision

        tv = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True)
        names = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                 "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                 "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool"]
        self.layers = nn.Sequential(*[getattr(tv, n) for n in names], nn.Flatten())

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = F.interpolate(x.float(), size=(299, 299), mode="bilinear", align_corners=False)
        return self.layers((x - 128) / 128)


def torchscript_standin(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    torch.jit.save(torch.jit.script(_TorchScriptInception().eval()), str(path))
    return path
