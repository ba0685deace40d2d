"""Open a report's HTML in headless Chromium, take a screenshot, and check that the plots are visible.

    python scripts/check_report_html.py RUN_DIR/report/report.html [--screenshot out.png]

Exit 0 when the page rendered with its embedded plots (matplotlib's coloured lines and markers
present in the screenshot), 1 when not, 2 when Chromium is missing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
TAB10_BLUE = np.array([31, 119, 180])  # matplotlib's first colour


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 3000) -> None:
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium not found (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
                        f"--window-size={width},{height}", html.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)


def plot_pixels(png: Path) -> tuple[int, float]:
    """(pixels close to matplotlib's first colour, share of non-white pixels)."""
    from PIL import Image

    a = np.asarray(Image.open(png).convert("RGB")).astype(int)
    blue = int((np.abs(a - TAB10_BLUE).sum(-1) < 40).sum())
    return blue, float((a.sum(-1) < 740).mean())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("html", type=Path)
    p.add_argument("--screenshot", type=Path, help="where to keep the PNG (default: next to the HTML)")
    args = p.parse_args()
    if chromium() is None:
        print("check_report_html: error: chromium not found (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    png = args.screenshot or args.html.with_name("report-screenshot.png")
    screenshot(args.html, png)
    blue, ink = plot_pixels(png)
    print(f"{png}: {blue} plot-coloured pixels, {ink:.1%} non-white")
    return 0 if blue > 500 and ink > 0.02 else 1


if __name__ == "__main__":
    sys.exit(main())
