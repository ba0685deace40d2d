"""GPU check (``tox -e gpu``): DiT-XL/2 and the SD 1.5 U-Net at real size in bf16 on one CUDA device,
and the SD 1.5 pipeline end to end (text encoder, 10 guided steps, VAE decode).

Runs the built-in ``gpu-check`` suite through the normal runner (so its records land in a
run directory like any other), then prints latency, throughput, allocator and NVML memory,
energy per image and MFU. Needs a CUDA device; says so and exits 2 without one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

COLUMNS = ("model", "latency_ms", "latency_ms_unguided", "throughput_img_s", "peak_mem_allocated_bytes",
           "nvml_peak_used_bytes", "energy_j_per_image", "mean_power_w", "mfu")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="run directory (default: runs/gpu-check-TIMESTAMP)")
    parser.add_argument("--device", default="cuda", help="CUDA device (default: cuda)")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device is visible; run this on a machine with an NVIDIA GPU", file=sys.stderr)
        return 2
    import diffbench
    from diffbench.bench.formatting import render
    from diffbench.core import records

    out = Path(args.out or f"runs/gpu-check-{dt.datetime.now():%Y%m%d-%H%M%S}")
    try:
        diffbench.run("gpu-check", out, device=args.device, progress=False)
    except diffbench.UserError as e:
        print(f"gpu_check: error: {e}", file=sys.stderr)
        return e.exit_code
    rows: dict[str, dict[str, object]] = {}
    failures = []
    for r in records.read(out / "records.jsonl").records:
        row = rows.setdefault(r.case_id, {"model": r.config["model"]["label"]})
        if r.metric == "case":
            failures.append(f"{row['model']}: {r.status}: {r.error}")
        elif r.metric in COLUMNS:
            row[r.metric] = r.value if r.value is not None else f"n/a ({r.error})"
    print(f"device: {torch.cuda.get_device_name(torch.device(args.device))}")
    print(render(list(rows.values()), COLUMNS))
    for f in failures:
        print(f"FAILED {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
