"""Load balancing for the resident engine: which task holds which block, from measured costs.

numpy only; never imports pyspark. Every synchronous pass waits for its slowest task, and Spark
never speculates barrier tasks. By default a resident session holds one partition per task (or
partitions regrouped onto the task slots by rows); the cost of a block, though, is its stored
entries more than its rows, and a task on a slow or busy executor is slow whatever it holds.

With balancing on, every reply also carries, for each block the task folded, its (partition,
position), stored entries, rows and seconds (:data:`TIMING_COLUMNS`). A :class:`Balancer` keeps
those, and after each pass decides whether the blocks should be held otherwise:

* the cost of a block is its stored entries plus :data:`ROW_COST` per row (measured: a row's
  fixed work -- margins, softmax, weights -- is worth about that many entries);
* a task's speed is its measured seconds over the cost of what it holds (a slow executor has a
  high value), the median over the last passes of the session but its first (which warms up);
* the new assignment is LPT on machines of different speeds: blocks by decreasing cost, each to
  the task where it would finish first; blocks of one partition may go to different tasks (the
  fold keeps each block's position, so sampling and seeded block functions see what every
  engine sees);
* it is taken when the slowest task's time is more than ``threshold`` x the median task's in
  every timed pass of the window (the same task each time: a drift, not noise) and
  the new assignment is predicted to cut the slowest time by at least :data:`MIN_GAIN`, at
  most once every ``cooldown`` passes (a new assignment starts a new session: the blocks are
  re-read from the cache through one shuffle).

The first pass already has the stored entries of every block, so skew in the data is corrected
after one pass; measured times then catch executors that are slow.

Sums do not depend on which task holds a block up to rounding: each task adds its blocks in
(partition, position) order, the driver adds the tasks' sums in task order, so a regrouping
changes only the order of additions (measured in the tests: 1e-16 relative, 1e-10 asserted).
"""
from __future__ import annotations

import logging
import statistics
from collections import deque
from typing import Any, Optional

import numpy as np

__all__ = ["Balancer", "TIMING_COLUMNS", "block_timings", "lpt_assignment", "ROW_COST", "MIN_GAIN"]

logger = logging.getLogger("sparkopt")

#: what a timed reply reports per block it folded: partition, position, stored entries, rows, seconds
TIMING_COLUMNS = ("partition", "position", "entries", "rows", "seconds")
#: a row's cost in stored entries (its margins, softmax and weights)
ROW_COST = 4.0
#: a regrouping is taken only when it is predicted to cut the slowest task's time by this share
MIN_GAIN = 0.1
#: passes whose times are averaged
WINDOW = 3


def block_entries(block: Any) -> int:
    """Stored entries of a block: nonzeros of CSR, cells of dense."""
    X = block.X
    return int(X.nnz) if hasattr(X, "nnz") else int(X.size)


def block_timings(held: list, seconds: list, slow: float = 1.0) -> np.ndarray:
    """The timing rows (:data:`TIMING_COLUMNS`) of a task's pass: ``held`` its
    ``(partition, [(position, block), ...])`` pairs in fold order, ``seconds`` the seconds of each
    block in the same order (``slow``: a factor they were stretched by, for measurements)."""
    rows = []
    k = 0
    for p, pairs in held:
        for j, block in pairs:
            rows.append((p, j, block_entries(block), block.n_rows, seconds[k] * slow))
            k += 1
    return np.array(rows, dtype=np.float64).reshape(-1, len(TIMING_COLUMNS))


def lpt_assignment(costs: dict, speeds: list[float]) -> dict:
    """Blocks (key -> cost) onto tasks of the given speeds (seconds per unit cost): largest cost
    first, each to the task that would finish it first (ties: the lower task index)."""
    load = [0.0] * len(speeds)
    out = {}
    for key in sorted(costs, key=lambda k: (-costs[k], k)):
        target = min(range(len(speeds)), key=lambda g: ((load[g] + costs[key]) * speeds[g], g))
        out[key] = target
        load[target] += costs[key]
    return out


class Balancer:
    """The driver's record of block costs and task speeds, and the regrouping decision (see the
    module docstring). ``groups``: the number of tasks; ``threshold``: the max / median task time
    that calls for a regrouping; ``cooldown``: passes between regroupings."""

    def __init__(self, groups: int, threshold: float = 1.2, cooldown: int = 3) -> None:
        self.groups = int(groups)
        self.threshold = float(threshold)
        self.cooldown = int(cooldown)
        self.entries: dict[tuple[int, int], float] = {}
        self.rows: dict[tuple[int, int], float] = {}
        self.holder: dict[tuple[int, int], int] = {}           # block -> task of the current session
        self._times: deque = deque(maxlen=WINDOW)                 # per pass: {task: seconds}
        self._costs: deque = deque(maxlen=WINDOW)                 # per pass: {task: cost held}
        self.passes_since = 0
        self.regroupings = 0
        self.history: list[dict] = []                             # one entry per observed pass

    def cost(self, key: tuple[int, int]) -> float:
        return self.entries[key] + ROW_COST * self.rows[key]

    def new_session(self) -> None:
        """A session started: the times measured before describe the old assignment."""
        self._times.clear()
        self._costs.clear()
        self.passes_since = 0

    def observe(self, timings: dict[int, np.ndarray]) -> None:
        """One pass's timing rows per task (:func:`block_timings`)."""
        times, costs = {}, {}
        for task, table in timings.items():
            total = cost = 0.0
            for p, j, entries, rows, seconds in np.asarray(table, dtype=float).reshape(-1, len(TIMING_COLUMNS)):
                key = (int(p), int(j))
                self.entries[key], self.rows[key] = float(entries), float(rows)
                self.holder[key] = task
                total += float(seconds)
                cost += self.cost(key)
            times[task], costs[task] = total, cost
        if self.passes_since > 0:         # a session's first pass warms up (allocations, caches): not timed
            self._times.append(times)
            self._costs.append(costs)
        self.passes_since += 1
        self.history.append({"task_seconds": dict(times), "spread": self.spread(times)})

    @staticmethod
    def spread(times: dict) -> float:
        """max / median of the tasks' seconds (1 when balanced)."""
        values = [t for t in times.values()]
        if not values:
            return 1.0
        median = statistics.median(values)
        return max(values) / median if median > 0 else 1.0

    def task_seconds(self) -> dict[int, float]:
        """Each task's seconds per pass: the median over the last passes (one pass that a busy
        machine stretched does not count)."""
        tasks = set().union(*self._times) if self._times else set()
        return {g: float(np.median([t.get(g, 0.0) for t in self._times])) for g in tasks}

    def drifted(self) -> bool:
        """Every timed pass of the window spread more than ``threshold`` with the same slowest
        task: a drift, not noise (on a shared machine single passes of a few ms spread 2-3x)."""
        if not self._times:
            return False
        slowest = {max(t, key=t.get) for t in self._times if t}
        return len(slowest) == 1 and all(self.spread(t) > self.threshold for t in self._times)

    def speeds(self) -> list[float]:
        """Seconds per unit cost of each task (its measured time over the cost it held); a task
        that held nothing gets the median speed."""
        seconds = self.task_seconds()
        held = {g: float(np.mean([c.get(g, 0.0) for c in self._costs])) for g in seconds}
        measured = {g: seconds[g] / held[g] for g in seconds if held[g] > 0 and seconds[g] > 0}
        fallback = statistics.median(measured.values()) if measured else 1.0
        return [measured.get(g, fallback) for g in range(self.groups)]

    def propose(self, first: bool = False) -> Optional[dict]:
        """A new assignment (block -> task) when the current one is off balance (see the module
        docstring), else None. ``first``: the first pass of a fit, where the stored entries alone
        decide (the times of one pass include warming up)."""
        if not self.entries or self.passes_since < (1 if first else self.cooldown):
            return None
        costs = {key: self.cost(key) for key in self.entries}
        if first:
            speeds = [1.0] * self.groups
            current = [0.0] * self.groups
            for key, task in self.holder.items():
                current[task] += costs[key]
            now = max(current)
            median = statistics.median(current)
            if median > 0 and now / median <= self.threshold:
                return None
        else:
            seconds = self.task_seconds()
            if not self.drifted() or self.spread(seconds) <= self.threshold:
                return None
            speeds = self.speeds()
            now = max(seconds.values())
        assignment = lpt_assignment(costs, speeds)
        load = [0.0] * self.groups
        for key, task in assignment.items():
            load[task] += costs[key] * speeds[task]
        predicted = max(load)
        if first:
            if predicted > (1.0 - MIN_GAIN) * now:
                return None
        elif predicted > (1.0 - MIN_GAIN) * now or assignment == self.holder:
            return None
        return assignment

    def adopt(self, assignment: dict, why: str) -> None:
        """Record that ``assignment`` will be used from the next session on (logged)."""
        self.regroupings += 1
        moved = sum(1 for key, task in assignment.items() if self.holder.get(key) != task)
        logger.info("sparkopt resident engine: regrouping %d of %d blocks over %d tasks (%s)", moved,
                    len(assignment), self.groups, why)
