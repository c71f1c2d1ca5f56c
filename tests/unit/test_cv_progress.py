"""Progress lines (no MPI)."""

from __future__ import annotations

import io

from hpcml.cv.progress import Progress


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_every_ten_percent_and_best_so_far():
    out = io.StringIO()
    p = Progress(total=20, done=0, n_splits=2, metric="accuracy", stream=out, interval=3600)
    for cand in range(10):
        p.update([(cand, 0.5 + cand / 100, "svc"), (cand, 0.5 + cand / 100, "svc")])
    p.finish()
    lines = out.getvalue().splitlines()
    assert 10 <= len(lines) <= 12
    assert lines[-1].startswith("hpcml: 20/20 units (100%)")
    assert "best accuracy 0.5900 (svc)" in lines[-1]


def test_tty_redraws_one_line_with_a_bar():
    out = Tty()
    p = Progress(total=4, done=2, n_splits=1, metric="score", stream=out)
    p.update([(2, 0.1, "m")])
    p.finish()
    text = out.getvalue()
    assert "\r" in text and "[" in text and "#" in text and text.endswith("\n")


def test_quiet_prints_nothing():
    out = io.StringIO()
    p = Progress(total=2, done=0, n_splits=1, metric="score", enabled=False, stream=out)
    p.update([(0, 1.0, "m"), (1, 1.0, "m")])
    p.finish()
    assert out.getvalue() == ""
