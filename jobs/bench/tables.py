"""How a figure is printed in the benchmark's tables."""
from __future__ import annotations

import math
from typing import Any


def fmt(value: Any, spec: str = ".3g") -> str:
    """``value`` formatted with ``spec``; 'n/a' when it is missing or not finite."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return format(value, spec)


def markdown_table(header: tuple, rows: list[tuple]) -> str:
    """A GitHub markdown table of ``rows`` under ``header``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
