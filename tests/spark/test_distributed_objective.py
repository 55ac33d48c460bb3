"""The driver-side objective on Spark equals the same objective folded in memory (1e-10)."""
import numpy as np
import pytest

from sparkopt.engine import LocalEngine, TreeEngine, ingest
from sparkopt.fit import build_objective

from conftest import LOSS_CASES, letter_head, max_rel_diff as rel

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module", params=[1, 6], ids=lambda p: f"{p}partitions")
def engines(spark, request):
    """(tree, local) engine pairs over letter.scale's first 3000 rows, for the class index label
    and for a binary label (letters A-M vs N-Z); with 6 partitions, partition 2 is emptied."""
    df = letter_head(spark, request.param, empty_partition=2)
    pairs = {}
    for label in ("label", "binary"):
        rdd, stats = ingest(df, label_col=label)
        tree = TreeEngine(rdd, stats, depth=2)
        if request.param > 1:
            assert stats.n_nonempty_partitions == request.param - 1
        pairs[label] = (tree, LocalEngine(tree.collect_blocks(), stats=stats))
    yield pairs
    for tree, _ in pairs.values():
        tree.unpersist()
    df.unpersist()


@pytest.mark.parametrize("loss, label, kwargs", LOSS_CASES)
def test_tree_equals_local_fold(engines, loss, label, kwargs):
    tree, local = engines[label]
    a = build_objective(tree, loss, **kwargs)[0]
    b = build_objective(local, loss, **kwargs)[0]
    rng = np.random.default_rng(0)
    z = rng.normal(scale=0.1, size=a.n_params)
    if loss == "huber":
        z[-1] = 1.5
    tree.reset_counters()
    fa, ga = a.loss_grad(z)
    fb, gb = b.loss_grad(z)
    assert abs(fa - fb) <= 1e-10 * abs(fb)
    assert rel(ga, gb) < 1e-10
    v = rng.normal(size=(a.n_params, 2))
    assert rel(a.hessp(z, v), b.hessp(z, v)) < 1e-10
    _, _, Ha = a.loss_grad_hess(z)
    _, _, Hb = b.loss_grad_hess(z)
    assert rel(Ha, Hb) < 1e-10
    assert a.passes == 3 and a.evaluations == 3
