"""What one block's passes cost in this process (numpy only, no Spark): the loss + gradient of a
large dense block taken whole against its row slices (BlockObjective.ROW_SLICE_BYTES), and a
Hessian pass and a Hessian-vector product in units of the (sliced) gradient pass, beside what
``auto``'s cost model (LinearModelObjective.pass_costs) assumes. Cases: letter (15,000 x 16, 26
classes, dense, from data/), a9a (32,561 x 123, CSR, from data/) and a seeded synthetic dense
binary block (1e5 x 100). Prints a markdown table of medians and ratios measured in the same run.

    PYTHONPATH=.:jobs python -m bench.block_passes [--repeats 9]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench.measure import timed

ROOT = Path(__file__).resolve().parents[2]


def _median_seconds(fn, repeats: int) -> float:
    fn()                                    # warm: first-call allocations and caches
    return statistics.median(timed(fn, repeats))


def _cases():
    from sklearn.datasets import load_svmlight_file

    X, y = load_svmlight_file(str(ROOT / "data" / "letter.scale"), n_features=16)
    yield "letter (dense, 26 classes)", "multinomial", np.ascontiguousarray(X.toarray()), y - 1
    X, y = load_svmlight_file(str(ROOT / "data" / "a9a"), n_features=123)
    yield "a9a (CSR)", "logistic", X.tocsr(), (y > 0).astype(float)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100_000, 100))
    y = (rng.random(100_000) < 1 / (1 + np.exp(-X @ (rng.normal(size=100) / 10)))).astype(float)
    yield "synthetic 1e5 x 100 (dense, binary)", "logistic", X, y


def main(argv=None) -> None:
    from sparkopt.blocks import Block
    from sparkopt.engine import LocalEngine
    from sparkopt.fit import build_objective

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    rows = []
    for name, loss, X, y in _cases():
        objective = build_objective(LocalEngine.from_arrays(X, y), loss, reg_param=1e-3)[0]
        block_objective = objective.block_objective
        block = Block(X, y, np.ones(len(y)))
        coef = np.full(block_objective.n_params, 0.01)
        whole = _median_seconds(lambda: block_objective._block_loss_grad(coef, block), args.repeats)
        sliced = _median_seconds(lambda: block_objective.loss_grad(coef, block), args.repeats)
        hess = _median_seconds(lambda: block_objective.hess(coef, block), args.repeats)
        hessp = _median_seconds(lambda: block_objective.hessp(coef, block, coef), args.repeats)
        model = objective.pass_costs()
        rows.append((name, whole, sliced, whole / sliced, hess / sliced, model["hessian"], hessp / sliced,
                     model["hessp"]))
    print(f"# one block's passes ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"{os.cpu_count()} cores, median of {args.repeats})\n")
    print("| block | loss+grad whole s | sliced s | whole / sliced | Hessian / gradient pass | model says "
          "| H.v / gradient pass | model says |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, whole, sliced, speedup, hess, hess_model, hessp, hessp_model in rows:
        print(f"| {name} | {whole:.4f} | {sliced:.4f} | {speedup:.2f} | {hess:.1f} | {hess_model:.1f} "
              f"| {hessp:.2f} | {hessp_model:.1f} |")


if __name__ == "__main__":
    main()
