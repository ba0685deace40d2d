"""Long steps show images done, images/s and the time left on a terminal, and nothing in a pipe."""

import io
import sys

from diffbench.core.progress import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_feature_extraction_reports_rate_and_time_left_on_a_terminal(monkeypatch):
    from diffbench.diffusion import datasets
    from diffbench.metrics.detectors import build_detector
    from diffbench.metrics.quality import extract

    images = datasets.digits(8).images[:96]
    det = build_detector("digits", None, None, False, "cpu")
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setenv("COLUMNS", "100")
    extract(images, det, batch_size=32, progress=True, label="digits")
    shown = term.getvalue()
    assert "features digits" in shown and "96/96" in shown and "img/s" in shown
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    extract(images, det, batch_size=32, progress=True)
    assert pipe.getvalue() == ""  # not a terminal: nothing
    assert progress(10, "x", enabled=False).disable
