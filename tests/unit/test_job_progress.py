"""jobs/_progress.py without Spark: the line's text, one live line per phase on a terminal (lines
every few seconds in a log), one summary line at the end, the ingest ended by the fit's first
iteration, nothing with --quiet. Rows read from a real Spark job: tests/spark/test_job_paths.py."""
import io
import logging
import time

import pytest

from _progress import JobProgress, render


class Terminal(io.StringIO):
    def __init__(self, tty=True):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_render():
    assert render("train.py", "ingest", 2.0, 1_250_000, 3, 5, 8) == \
        "train.py: ingest  1,250,000 rows read  625,000 rows/s  stage 3: 5/8 tasks  2.0 s"
    assert render("predict.py", "score", 0.25) == "predict.py: score  0.2 s"
    assert render("train.py", "read", 1.5, 0) == "train.py: read  0 rows read  1.5 s"      # no rate from nothing


def test_a_phase_updates_one_line_then_ends_it_with_a_summary():
    out = Terminal()
    progress = JobProgress("train.py", None, stream=out, interval=0.02)
    with progress.phase("write"):
        time.sleep(0.15)
    text = out.getvalue()
    assert text.count("\rtrain.py: write") >= 3 and text.endswith(" s\n") and text.count("\n") == 1
    assert [s["phase"] for s in progress.summaries] == ["write"] and progress.summaries[0]["seconds"] >= 0.15


def test_off_a_terminal_lines_are_written_out_now_and_then():
    out = Terminal(tty=False)
    progress = JobProgress("train.py", None, stream=out, interval=0.02, log_interval=0.05)
    with progress.phase("read"):
        time.sleep(0.2)
    lines = out.getvalue().splitlines()
    assert 2 <= len(lines) <= 6 and all("train.py: read" in line for line in lines)


def test_the_ingest_ends_at_the_first_iteration():
    out = Terminal()
    progress = JobProgress("train.py", None, stream=out, interval=0.01)
    log = logging.getLogger("sparkopt")
    level = log.level
    log.setLevel(logging.INFO)
    try:
        with progress.phase("ingest", ends_at_first_iteration=True):
            time.sleep(0.05)
            log.info("iter %4d  objective %.12g", 0, 1.0)
            after = len(out.getvalue())
            time.sleep(0.1)                       # the iterations: the line stays ended, the log talks
            log.info("iter %4d  objective %.12g", 1, 0.5)
    finally:
        log.setLevel(level)
    assert out.getvalue().endswith("\n") and len(out.getvalue()) == after
    assert len(progress.summaries) == 1 and 0.05 <= progress.summaries[0]["seconds"] < 0.15
    assert not [h for h in log.handlers if type(h).__name__ == "_IterationsStarted"]      # removed


def test_quiet_shows_nothing(capsys):
    progress = JobProgress("train.py", None, enabled=False, interval=0.01)
    with progress.phase("read"):
        time.sleep(0.05)
    assert capsys.readouterr().err == "" and len(progress.summaries) == 1


def test_a_failing_phase_still_ends_its_line():
    out = Terminal()
    progress = JobProgress("train.py", None, stream=out, interval=0.01)
    with pytest.raises(RuntimeError):
        with progress.phase("read"):
            time.sleep(0.03)
            raise RuntimeError("boom")
    assert out.getvalue().endswith("\n")
