"""The resident engine's load balancer (sparkopt.engine.balance) and link model
(sparkopt.engine.link), without Spark; tests/spark/test_resident_comm.py runs them in sessions."""
from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from sparkopt.blocks import Block
from sparkopt.engine.balance import ROW_COST, Balancer, block_timings, lpt_assignment
from sparkopt.engine.fold import fold_held, fold_partitions
from sparkopt.engine.link import Link, LinkModel, parse_link
from sparkopt.errors import InputError


def _timings(task_blocks, seconds_per_cost):
    """Timing rows for tasks holding {task: [(p, j, entries, rows), ...]}, each block taking
    cost x that task's seconds per unit cost."""
    out = {}
    for task, blocks in task_blocks.items():
        out[task] = np.array([(p, j, e, r, (e + ROW_COST * r) * seconds_per_cost[task]) for p, j, e, r in blocks],
                             dtype=float).reshape(-1, 5)
    return out


def test_lpt_puts_more_work_on_faster_tasks():
    costs = {(0, j): 10.0 for j in range(12)}
    assignment = lpt_assignment(costs, [3.0, 1.0, 1.0])     # task 0 is 3x slower
    held = np.bincount(list(assignment.values()), minlength=3)
    assert held.tolist() == [2, 5, 5]


def test_skewed_entries_are_regrouped_after_the_first_pass_splitting_the_big_partition(caplog):
    # partition 0: 8 blocks of 1000 entries; partitions 1, 2: one block of 10 entries each
    held = {0: [(0, j, 1000, 10) for j in range(8)], 1: [(1, 0, 10, 10)], 2: [(2, 0, 10, 10)]}
    balancer = Balancer(3)
    balancer.observe(_timings(held, {0: 1e-6, 1: 1e-6, 2: 1e-6}))
    proposal = balancer.propose(first=True)
    assert proposal is not None
    # partition 0's blocks are spread over every task, and the predicted spread is small
    assert {proposal[(0, j)] for j in range(8)} == {0, 1, 2}
    load = np.zeros(3)
    for key, task in proposal.items():
        load[task] += balancer.cost(key)
    assert load.max() / np.median(load) < 1.2
    with caplog.at_level(logging.INFO, logger="sparkopt"):
        balancer.adopt(proposal, "a test")
    assert "regrouping" in caplog.text and balancer.regroupings == 1


def test_a_slow_task_loses_blocks_once_its_times_drift_and_a_balanced_run_is_left_alone():
    held = {0: [(0, j, 100, 10) for j in range(4)], 1: [(1, j, 100, 10) for j in range(4)]}
    even = Balancer(2)
    for _ in range(5):
        even.observe(_timings(held, {0: 1e-6, 1: 1.05e-6}))
        assert even.propose() is None
    slow = Balancer(2, cooldown=3)
    slow.observe(_timings(held, {0: 3e-6, 1: 1e-6}))
    assert slow.propose() is None                  # one pass is not yet a drift
    slow.observe(_timings(held, {0: 3e-6, 1: 1e-6}))
    slow.observe(_timings(held, {0: 3e-6, 1: 1e-6}))
    proposal = slow.propose()
    assert sum(1 for task in proposal.values() if task == 0) == 2     # 1/4 of the work for the 3x slower task
    slow.new_session()
    assert slow.propose() is None                  # a new session measures afresh
    # noise: one stretched pass, or a slowest task that changes, is no drift
    noisy = Balancer(2, cooldown=3)
    for times in ({0: 1e-6, 1: 1e-6}, {0: 3e-6, 1: 1e-6}, {0: 3e-6, 1: 1e-6}, {0: 1e-6, 1: 3e-6}):
        noisy.observe(_timings(held, times))
    assert noisy.propose() is None


def test_fold_of_held_blocks_keeps_positions_and_equals_the_partition_fold():
    rng = np.random.default_rng(0)
    parts = [[Block(rng.standard_normal((5, 3)), rng.standard_normal(5), np.ones(5)) for _ in range(3)]
             for _ in range(2)]

    def fn(block, payload, index):
        return float(block.y.sum()) * (1 + index[1]), np.array(index, dtype=float)

    fn.wants_index = True
    whole = fold_partitions(fn, None, enumerate(parts))
    held = [(p, list(enumerate(blocks))) for p, blocks in enumerate(parts)]
    clock = []
    got = fold_held(fn, None, held, clock=clock)
    assert got[0] == whole[0] and np.array_equal(got[1], whole[1])
    assert len(clock) == 6 and all(t >= 0 for t in clock)
    # a task holding blocks 1 and 2 of partition 0 only sees their own positions
    some = fold_held(fn, None, [(0, [(1, parts[0][1]), (2, parts[0][2])])])
    np.testing.assert_array_equal(some[1], [0.0, 3.0])
    rows = block_timings([(0, [(1, parts[0][1]), (2, parts[0][2])])], [0.5, 0.25], slow=2.0)
    np.testing.assert_array_equal(rows, [[0, 1, 15, 5, 1.0], [0, 2, 15, 5, 0.5]])


def test_parse_link_and_its_errors():
    assert parse_link("1gbit,0.5ms") == LinkModel(1e9, 5e-4)
    assert parse_link("100 Mbit/s, 2 ms") == LinkModel(1e8, 2e-3)
    assert parse_link("none") is None and parse_link(None) is None
    with pytest.raises(InputError, match="1gbit,0.5ms"):
        parse_link("fast")
    with pytest.raises(InputError, match="bandwidth"):
        LinkModel(0.0)


def test_link_queues_frames_and_adds_latency():
    link = Link(LinkModel(8e6, 0.02))            # 1 MB/s, 20 ms
    start = time.monotonic()
    arrivals = link.schedule([10_000, 10_000, 10_000])          # 10 ms each on the wire
    assert np.allclose(np.diff(arrivals), 0.01, atol=1e-9)
    assert arrivals[0] - start == pytest.approx(0.03, abs=5e-3)
    link.wait_until(arrivals[-1])
    assert time.monotonic() - start >= 0.05
    t0 = time.monotonic()
    link.incoming(20_000, arrived=t0)            # 20 ms latency + 20 ms on the wire
    link.incoming(20_000, arrived=t0)            # queued behind the first: 20 ms more
    assert time.monotonic() - t0 >= 0.06 - 1e-3
