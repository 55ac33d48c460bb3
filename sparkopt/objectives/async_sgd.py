"""The worker half of ``solver="async-sgd"``: what a resident task (or an in-memory thread) runs.

numpy only; never imports pyspark or the engines. The engine starts one worker program per task
and hands it a ``fold(fn, payload, fraction, seed)`` over the task's own partitions; the driver's
parameter server (sparkopt.solvers.async_sgd) answers its messages.
"""
from __future__ import annotations

import time
from functools import partial
from typing import Any, Callable

import numpy as np

from ..blocks import round_seed

__all__ = ["AsyncSGDWorker"]


def _sampled_sums(block_objective, block, coef):
    return block_objective.loss_grad_weight(coef, block)


class AsyncSGDWorker:
    """``worker(channel, worker_index, fold, config)``: until told to stop, take the model
    (coefficients), push the loss / gradient / weight sums of the mini-batch of its clock over its
    partitions (sampled exactly as MiniBatchSGD samples that iteration: seed ``round_seed(seed,
    clock + 1)``), and wait for the next model.

    Messages sent: ``("pull", 0)`` once, then ``("push", clock, version, f_sum, g_sum, w_sum)``;
    received: ``("model", coef, version, clock)`` or ``("stop",)``. ``config``: fraction, seed and
    ``delays`` ({worker index: seconds slept per push}, to play a straggler in benchmarks)."""

    def __init__(self, block_objective) -> None:
        self.block_objective = block_objective

    def __call__(self, channel: Any, worker_index: int, fold: Callable, config: dict) -> dict:
        fraction = config["fraction"]
        fraction = None if fraction >= 1.0 else fraction
        delay = float(config["delays"].get(worker_index, 0.0))
        sums = partial(_sampled_sums, self.block_objective)
        channel.send(("pull", 0))
        pushes = 0
        while True:
            message = channel.recv()
            if message[0] != "model":
                break
            _, coef, version, clock = message
            acc = fold(sums, coef, fraction, round_seed(config["seed"], clock + 1))
            f, g, w = acc if acc is not None else (0.0, np.zeros_like(coef), 0.0)
            if delay:
                time.sleep(delay)
            channel.send(("push", clock, version, float(f), g, float(w)))
            pushes += 1
        return {"pushes": pushes}
