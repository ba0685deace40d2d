"""A trainable denoiser: a backbone plus whatever turns a condition (class label or caption tokens)
into that family's conditioning inputs, with a null condition for classifier-free guidance.

Class labels use index ``num_classes`` as the null class (DiT's convention). The LDM U-Net takes
its class through cross-attention from a learned table (LDM-4's ClassEmbedder), and text through
a small text transformer of its own (as GLIDE's); those modules are counted apart from the
backbone, like text encoders.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from diffbench.models.families import FAMILIES
from diffbench.models.text_encoders import TextTransformer

TEXT_DIM = 64  # width of the small text transformer trained with a denoiser


def conditioned_config(family: str, config: Any, cond: str, num_classes: int, text_len: int, text_dim: int) -> Any:
    """The backbone config adjusted so that it takes this condition (null class included): the family's rule."""
    rule = FAMILIES.get(family).condition
    return config if rule is None else rule(config, cond, num_classes, text_len, text_dim)


class Denoiser(nn.Module):
    """``forward(x, t, cond)`` -> the backbone's output; ``null(n)`` -> the null condition."""

    def __init__(self, family: str, config: Any, cond: str = "class", num_classes: int = 10, vocab: int = 0,
                 text_len: int = 12, text_dim: int = TEXT_DIM) -> None:
        super().__init__()
        self.family_name, self.cond, self.num_classes, self.text_len = family, cond, num_classes, text_len
        self.config = conditioned_config(family, config, cond, num_classes, text_len, text_dim)
        self.family = FAMILIES.get(family)
        self.backbone = self.config.build()
        if getattr(self.backbone, "y_embedder", None) is not None:
            # DiT drops labels itself with the global RNG; the trainer drops them instead, seeded per
            # step (resumable). The null-class row stays in the table.
            self.backbone.y_embedder.dropout_prob = 0.0
        self.class_table = (nn.Embedding(num_classes + 1, self.config.context_dim)
                            if family == "unet-ldm" and cond == "class" else None)
        self.text = TextTransformer(vocab, text_len, text_dim) if cond == "text" else None

    def null(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        if self.cond == "text":
            return torch.zeros(n, self.text_len, dtype=torch.long, device=device)  # all padding
        return torch.full((n,), self.num_classes, dtype=torch.long, device=device)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        inputs: dict[str, Any] = {"x": x, "t": t}
        if cond is None:
            cond = self.null(len(x), x.device)
        if self.text is not None:
            inputs["context"] = self.text(cond)  # (N, L, D)
        elif self.class_table is not None:
            inputs["context"] = self.class_table(cond)[:, None]  # (N, 1, D): LDM-4's class as context
        elif self.cond == "class":
            inputs["y"] = cond
        if self.family_name == "unet-ldm" and self.cond == "none":
            inputs["context"] = torch.zeros(len(x), 1, self.config.context_dim, device=x.device, dtype=x.dtype)
        return self.family.denoise(self.backbone, inputs)

    def backbone_params(self) -> int:
        return sum(p.numel() for p in self.backbone.parameters())
