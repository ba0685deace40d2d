"""Progress of a long step (sampling, feature extraction, reference statistics): images done, images per
second and the time left, on stderr, only when stderr is a terminal (tqdm's ``disable=None``), so logs,
pipes and the one-line errors of scripts stay clean."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def progress(total: int | None, desc: str, unit: str = "img", enabled: bool = True) -> Any:
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=True,  # the final count, rate and time
                dynamic_ncols=True, disable=None if enabled else True)
