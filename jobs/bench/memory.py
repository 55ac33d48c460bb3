"""Peak resident memory of the processes a fit uses: the driver's Python, the Spark JVM (in local
mode the driver JVM is the executor too) and the Python workers (the JVM's Python descendants).

Linux only, from /proc, no dependency: ``VmHWM`` is a process's peak resident set size, and
writing ``5`` to ``/proc/PID/clear_refs`` resets it to the current size, so a peak is measured per
fit. Where /proc is not available (or a process is not ours), figures are None."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

PROC = Path("/proc")


@dataclass
class Peaks:
    """Peak RSS in MB during one measured fit (None when not measurable). ``workers``: the sum of
    the Python workers' own peaks (an upper bound of their peak together), ``worker_count`` of them."""

    driver_python: Optional[float] = None
    jvm: Optional[float] = None
    workers: Optional[float] = None
    worker_count: int = 0


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])     # the command may contain spaces
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(pid: int, tree: dict[int, list[int]]) -> list[int]:
    found, todo = [], list(tree.get(pid, []))
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(tree.get(p, []))
    return found


def _is_python(pid: int) -> bool:
    try:
        return "python" in (PROC / str(pid) / "comm").read_text() or \
            b"python" in (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False


def _peak_mb(pid: int) -> Optional[float]:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset(pid: int) -> None:
    try:
        (PROC / str(pid) / "clear_refs").write_text("5")
    except OSError:
        pass


def jvm_pid() -> Optional[int]:
    """The JVM this process started through py4j (spark-submit execs java in the same process)."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    proc = getattr(gateway, "proc", None) if gateway is not None else None
    return getattr(proc, "pid", None)


class PeakMemory:
    """``with PeakMemory() as peaks: fit()`` -> ``peaks.result`` (a :class:`Peaks`)."""

    def __init__(self) -> None:
        self.result = Peaks()
        self._enabled = PROC.is_dir() and (PROC / "self" / "clear_refs").exists()

    def _processes(self) -> tuple[Optional[int], list[int]]:
        jvm = jvm_pid()
        if jvm is None:
            return None, []
        return jvm, [p for p in _descendants(jvm, _children()) if _is_python(p)]

    def __enter__(self) -> "PeakMemory":
        if self._enabled:
            jvm, workers = self._processes()
            for pid in [os.getpid(), *([jvm] if jvm else []), *workers]:
                _reset(pid)
        return self

    def __exit__(self, *exc) -> None:
        if not self._enabled:
            return
        jvm, workers = self._processes()        # workers started during the fit count too
        peaks = [p for p in (_peak_mb(w) for w in workers) if p is not None]
        self.result = Peaks(driver_python=_peak_mb(os.getpid()), jvm=_peak_mb(jvm) if jvm else None,
                            workers=sum(peaks) if peaks else None, worker_count=len(peaks))
