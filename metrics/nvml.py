"""NVML (nvidia-ml-py) access that degrades to a stated reason instead of failing or guessing."""

from __future__ import annotations

import functools
from typing import Any

import torch


@functools.lru_cache(maxsize=1)
def nvml() -> tuple[Any, str | None]:
    """(pynvml module, None) when NVML initialised, else (None, the reason)."""
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None, f"NVML not available: {type(e).__name__}: {str(e)[:80]}"
    return pynvml, None


def handle_for(device: str) -> tuple[Any, Any, str | None]:
    """(pynvml, handle, None) for a ``cuda[:N]`` device, else (None, None, reason).

    The torch index is mapped through CUDA_VISIBLE_DEVICES to the NVML index by PCI bus id,
    which NVML and CUDA agree on (their orderings may differ).
    """
    if not device.startswith("cuda"):
        return None, None, f"device {device} is not a CUDA device"
    lib, reason = nvml()
    if lib is None:
        return None, None, reason

    idx = torch.device(device).index or 0
    try:
        props: Any = torch.cuda.get_device_properties(idx)
        bus = f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
        try:
            return lib, lib.nvmlDeviceGetHandleByPciBusId(bus.encode()), None
        except Exception:
            return lib, lib.nvmlDeviceGetHandleByIndex(idx), None
    except Exception as e:
        return None, None, f"NVML has no handle for {device}: {str(e)[:80]}"


def text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
