"""Precision and speed settings of a case: math mode, autocast, attention backend."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from diffbench.core.errors import CaseUnsupported

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
# setting name -> torch.nn.attention.SDPBackend member (by name: settings are read without importing torch)
ATTENTION_BACKENDS = {
    "auto": None,
    "math": "MATH",
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
}


@contextlib.contextmanager
def precision(mode: str, device: str, attention: str) -> Iterator[None]:
    """fp32 (tf32 explicitly off), tf32 (CUDA only), or bf16 / fp16 autocast; plus an SDPA backend."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if mode not in PRECISIONS:
        raise ValueError(f"unknown precision {mode!r}")
    cuda = device.startswith("cuda")
    if mode == "tf32" and not cuda:
        raise CaseUnsupported("tf32 is a CUDA tensor-core math mode; this case runs on the CPU")
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode == "tf32"
    try:
        with contextlib.ExitStack() as stack:
            if mode in ("bf16", "fp16"):
                dtype = torch.bfloat16 if mode == "bf16" else torch.float16
                stack.enter_context(torch.autocast(device_type="cuda" if cuda else "cpu", dtype=dtype))
            backend = ATTENTION_BACKENDS[attention]
            if backend is not None:
                stack.enter_context(sdpa_kernel(getattr(SDPBackend, backend)))
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def flags(mode: str, attention: str, compile: bool, channels_last: bool) -> dict[str, object]:
    """What provenance records about how the numbers were computed."""
    return {"precision": mode, "autocast": mode in ("bf16", "fp16"), "tf32": mode == "tf32",
            "attention": attention, "compile": compile, "channels_last": channels_last}
