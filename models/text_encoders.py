"""Text encoders of the pipelines: transformers' CLIP text model and T5 encoder, and GLIDE's own
text transformer; each random-initialised from a config of a chosen size or loaded from a local
Hugging Face directory.

Every encoder maps token ids (N, L) to ``(tokens (N, L, D), pooled (N, P))``:
- CLIP: the last hidden state, and the model's pooled output (the projected ``text_embeds`` when
  the config has a projection, as unCLIP's ``CLIPTextModelWithProjection``);
- T5: the last hidden state, and its mean over non-padding tokens (Imagen pools T5 this way);
- GLIDE: the final layer norm's output, and the last token (GLIDE's ``xf_out[:, :, -1]``).

Random-initialised CLIP models take the embedded caption vocabulary, which has no end-of-text
token, so their pooled vector is the masked mean too (the HF pooler looks for an end-of-text id).
Token id 0 is padding everywhere in this harness.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffbench.core.errors import ConfigError, MissingWeightsError
from diffbench.core.safeload import check_pickles
from diffbench.metrics.captions import tokenize

KINDS = ("clip", "t5", "glide")


class TextTransformer(nn.Module):
    """GLIDE's text transformer: token + position (+ padding) embeddings, pre-norm layers, final norm.

    With ``padding_embedding`` padding positions take a learned per-position vector (GLIDE's
    ``padding_embedding``) instead of their token embedding. Parameter layout per layer equals
    GLIDE's (qkv, proj, 2 layer norms, MLP of ``mlp_ratio`` x width), so counts match.
    """

    def __init__(self, vocab: int, length: int, dim: int, layers: int = 1, heads: int = 0, mlp_ratio: int = 2,
                 padding_embedding: bool = False) -> None:
        super().__init__()
        heads = heads or next(h for h in (4, 2, 1) if dim % h == 0)
        self.tokens = nn.Embedding(vocab, dim)
        self.positions = nn.Parameter(torch.zeros(1, length, dim))
        self.padding = nn.Parameter(torch.zeros(1, length, dim)) if padding_embedding else None
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, mlp_ratio * dim, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.tokens(tokens)
        if self.padding is not None:
            h = torch.where((tokens == 0)[..., None], self.padding[:, : tokens.shape[1]].to(h.dtype), h)
        h = h + self.positions[:, : tokens.shape[1]]
        for layer in self.layers:
            h = layer(h)
        return self.norm(h)


@dataclass(frozen=True)
class TextEncoderSpec:
    """Which text encoder, at which size: ``config`` holds the transformers config fields (CLIP, T5)
    or the ``TextTransformer`` arguments (GLIDE); ``path`` a local directory to load instead."""

    kind: str
    config: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    trainable: bool = False  # frozen as in SD / Imagen / unCLIP; GLIDE trains its own
    name: str = ""
    max_length: int = 0  # > 0: caption length, for encoders without a position limit (T5)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"text encoder kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    def with_path(self, path: str) -> TextEncoderSpec:
        """The same encoder loaded from a local directory, frozen (pretrained weights)."""
        return dataclasses.replace(self, path=path, trainable=False)

    @property
    def length(self) -> int:
        c = self.config
        length = self.max_length or c.get("max_position_embeddings") or c.get("length")
        if not length:
            raise ConfigError(f"the {self.kind} text encoder has no position limit: give its caption max_length")
        return int(length)

    def build(self) -> TextEncoder:
        return TextEncoder(self)


def attention_mask(tokens: torch.Tensor) -> torch.Tensor:
    """True where a token is attended: non-padding tokens, and always the first position, so that an
    all-padding (null) caption still has something to attend to."""
    mask = tokens > 0
    mask[:, 0] = True
    return mask


def _masked_mean(h: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    m = (tokens > 0).to(h.dtype)[..., None]
    return (h * m).sum(1) / m.sum(1).clamp(min=1)


class TextEncoder(nn.Module):
    """``forward(tokens) -> (tokens (N, L, D), pooled (N, P))``; ``tokenize(captions)`` -> ids."""

    def __init__(self, spec: TextEncoderSpec) -> None:
        super().__init__()
        self.spec = spec
        self.tokenizer: Any = None
        if spec.kind == "glide":
            self.model: nn.Module = TextTransformer(**spec.config)
        elif spec.path:
            self.model, self.tokenizer = _load_pretrained(spec)
            expected = spec.config.get("hidden_size") or spec.config.get("d_model")
            if expected and self.width != expected:
                raise ConfigError(f"the text encoder at {spec.path} has width {self.width}, but this pipeline is built "
                                  f"for a {spec.kind} encoder of width {expected}; load one of that width")
        elif spec.kind == "clip":
            from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

            cfg: Any = CLIPTextConfig(**spec.config)
            cls = CLIPTextModelWithProjection if spec.config.get("projection_dim") else CLIPTextModel
            self.model = cls(cfg)
        else:
            from transformers import T5Config, T5EncoderModel

            self.model = T5EncoderModel(T5Config(**spec.config))
        if not spec.trainable:
            self.requires_grad_(False)

    @property
    def width(self) -> int:
        if self.spec.kind == "glide":
            return int(self.spec.config["dim"])
        cfg: Any = self.model.config
        return int(getattr(cfg, "hidden_size", None) or cfg.d_model)

    @property
    def pooled_width(self) -> int:
        cfg: Any = getattr(self.model, "config", None)
        if self.spec.kind == "clip" and getattr(cfg, "projection_dim", None) and hasattr(self.model, "text_projection"):
            return int(cfg.projection_dim)
        return self.width

    def tokenize(self, captions: list[str], length: int | None = None) -> torch.Tensor:
        if self.tokenizer is not None:
            return self.tokenizer.tokenize(captions, length)

        return tokenize(captions)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.spec.kind == "glide":
            h = self.model(tokens)
            return h, h[:, -1]
        # counting on meta: masks cannot be inspected there, and change no FLOPs
        mask = attention_mask(tokens).long() if tokens.device.type != "meta" else None
        out: Any = self.model(input_ids=tokens, attention_mask=mask)
        h = out.last_hidden_state
        if self.spec.kind == "clip" and self.spec.path:
            pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
        elif self.spec.kind == "clip" and hasattr(self.model, "text_projection"):
            pooled = self.model.text_projection(_masked_mean(h, tokens))  # type: ignore[operator]
        else:
            pooled = _masked_mean(h, tokens)
        return h, pooled


def _load_pretrained(spec: TextEncoderSpec) -> tuple[nn.Module, Any]:
    """A transformers model and tokenizer from a local directory (never the network)."""
    path = Path(spec.path)
    if not (path / "config.json").is_file():
        raise MissingWeightsError(f"no text encoder at {path} (config.json missing): give a local Hugging Face "
                                  f"directory of a {spec.kind.upper()} text model saved with save_pretrained")
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

    cls: Any = T5EncoderModel if spec.kind == "t5" else (
        CLIPTextModelWithProjection if spec.config.get("projection_dim") else CLIPTextModel)

    check_pickles(path)  # transformers is given the directory only once its pickles are known safe
    try:
        model = cls.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - any loading problem is the same user fix
        raise MissingWeightsError(f"{path}: not loadable as a {spec.kind.upper()} text model "
                                  f"({' '.join(str(e).split())[:100]})") from None
    return model, _load_tokenizer(path)


class CaptionTokenizer:
    """A Hugging Face tokenizer as this harness uses it: ids padded to a fixed length, padding = 0."""

    def __init__(self, hf: Any) -> None:
        self.hf = hf

    def tokenize(self, captions: list[str], length: int | None = None) -> torch.Tensor:
        t = self.hf(captions, padding="max_length", truncation=True, max_length=length or self.hf.model_max_length,
                    return_tensors="pt")
        return t["input_ids"] * t["attention_mask"]


def _load_tokenizer(path: str | Path) -> CaptionTokenizer:
    from transformers import AutoTokenizer

    try:
        return CaptionTokenizer(AutoTokenizer.from_pretrained(str(path), local_files_only=True,
                                                                  trust_remote_code=False))
    except Exception as e:  # noqa: BLE001 - any tokenizer problem is the same user fix
        raise MissingWeightsError(f"{path}: no readable tokenizer ({str(e)[:80]}); save the text encoder's "
                                  "tokenizer into the same directory") from None


# Paper-scale text encoders (configs of the released models).
CLIP_L14 = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
            "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu"}
CLIP_L14_PROJ = {**CLIP_L14, "projection_dim": 768}  # unCLIP / Karlo: CLIPTextModelWithProjection
T5_XXL = {"vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
          "feed_forward_proj": "gated-gelu", "is_encoder_decoder": False}
GLIDE_TEXT = {"vocab": 50257, "length": 128, "dim": 512, "layers": 16, "heads": 8, "mlp_ratio": 4,
              "padding_embedding": True}
