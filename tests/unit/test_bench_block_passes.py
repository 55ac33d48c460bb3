"""jobs/bench/block_passes.py prints one row per block with finite, positive timings and ratios."""
from __future__ import annotations

import math

from bench import block_passes


def test_the_table_has_a_row_per_block_with_measured_ratios(capsys):
    block_passes.main(["--repeats", "1"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    header, rows = lines[0], lines[1:]
    assert "whole / sliced" in header and "Hessian / gradient pass" in header
    assert [r.split("|")[1].strip().split(" ")[0] for r in rows] == ["letter", "a9a", "synthetic"]
    for row in rows:
        values = [float(v) for v in row.strip("|").split("|")[1:]]
        assert len(values) == 7 and all(math.isfinite(v) and v > 0 for v in values)
