"""LocalEngine, DataStats and the shared fold pieces (no Spark)."""
from __future__ import annotations

import json
from functools import reduce

import numpy as np
import pytest
import scipy.sparse as sp

from sparkopt.blocks import Block
from sparkopt.engine import DataStats, LocalEngine
from sparkopt.blocks import sample_rng
from sparkopt.engine.fold import add_results, fold_partition
from sparkopt.engine.stats import block_stats, combine_partitions, data_problems, merge_stats
from sparkopt.errors import InputError


def ref_moments(X, w):
    """Spark Summarizer's weighted mean and unbiased variance, in extended precision."""
    X = np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.longdouble)
    w = np.asarray(w, dtype=np.longdouble)
    W = w.sum()
    mean = (w[:, None] * X).sum(0) / W
    m2 = (w[:, None] * (X - mean) ** 2).sum(0)
    var = m2 / (W - (w * w).sum() / W)
    return mean.astype(float), var.astype(float)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    n, d = 103, 6
    X = rng.normal(size=(n, d)) * [1, 10, 1e-3, 5, 1, 1] + [0, 100, 0, -3, 0, 7]
    X[rng.random((n, d)) < 0.4] = 0.0
    X[:, 4] = 0.0  # an all-zero feature
    y = rng.integers(0, 3, size=n).astype(float)
    w = rng.uniform(0.1, 3, size=n)
    return X, y, w


# ---------------------------------------------------------------- DataStats
@pytest.mark.parametrize("sparse", [False, True])
def test_block_stats_match_weighted_unbiased_reference(data, sparse):
    X, y, w = data
    Xb = sp.csr_matrix(X) if sparse else X
    s = block_stats(Xb, y, w)
    mean, var = ref_moments(X, w)
    np.testing.assert_allclose(s.feature_mean, mean, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(s.feature_var, var, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(s.feature_std, np.sqrt(var), rtol=1e-12, atol=1e-300)
    lm, lv = ref_moments(y[:, None], w)
    assert s.label_mean == pytest.approx(lm[0], rel=1e-13)
    assert s.label_var == pytest.approx(lv[0], rel=1e-12)
    assert s.label_std == pytest.approx(np.sqrt(lv[0]), rel=1e-12)
    assert s.n_rows == 103 and s.n_features == 6
    assert s.weight_sum == pytest.approx(w.sum(), rel=1e-14)
    assert s.weight_sq_sum == pytest.approx((w * w).sum(), rel=1e-14)
    np.testing.assert_array_equal(s.feature_nonzero, (X != 0).sum(0))
    assert s.nnz == np.count_nonzero(X)
    np.testing.assert_array_equal(s.feature_min, X.min(0))
    np.testing.assert_array_equal(s.feature_max, X.max(0))
    assert (s.label_min, s.label_max) == (y.min(), y.max())
    assert s.n_label_non_integer == 0
    assert s.is_sparse is sparse
    assert s.n_nonfinite_features == 0 and s.n_nonfinite_labels == 0
    assert data_problems(s) == []


def test_unit_weights_give_the_n_minus_1_sample_variance(data):
    X, y, _ = data
    s = block_stats(X, y, np.ones(len(y)))
    np.testing.assert_allclose(s.feature_var, X.var(0, ddof=1), rtol=1e-12, atol=1e-300)
    assert s.label_var == pytest.approx(y.var(ddof=1), rel=1e-12)


def test_zero_weight_rows_do_not_move_the_moments(data):
    X, y, w = data
    w0 = w.copy()
    w0[::5] = 0.0
    X_big = X.copy()
    X_big[::5] = 1e6  # huge values on zero-weight rows must not matter
    full = block_stats(X_big, y, w0)
    kept = block_stats(X[w0 > 0], y[w0 > 0], w0[w0 > 0])
    np.testing.assert_allclose(full.feature_mean, kept.feature_mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(full.feature_var, kept.feature_var, rtol=1e-10, atol=1e-14)
    assert full.n_rows == len(y) and full.n_zero_weights == len(y[::5])


def test_merge_equals_whole_and_is_associative(data):
    X, y, w = data
    whole = block_stats(X, y, w)
    cuts = [0, 1, 17, 17, 60, 103]
    parts = [block_stats(X[a:b], y[a:b], w[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    left = reduce(merge_stats, parts)
    right = reduce(lambda a, b: merge_stats(b, a), reversed(parts))
    for s in (left, right):
        np.testing.assert_allclose(s.feature_mean, whole.feature_mean, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(s.feature_var, whole.feature_var, rtol=1e-12, atol=1e-300)
        assert s.label_var == pytest.approx(whole.label_var, rel=1e-12)
        assert s.n_rows == whole.n_rows and s.nnz == whole.nnz
        np.testing.assert_array_equal(s.feature_min, whole.feature_min)
        np.testing.assert_array_equal(s.feature_max, whole.feature_max)
    assert left.feature_sizes == (6,)


def test_combine_partitions_counts_partitions(data):
    X, y, w = data
    b = block_stats(X, y, w)
    s = combine_partitions([[b], [], [b, b], []])
    assert s.num_partitions == 4 and s.n_nonempty_partitions == 2
    assert s.n_rows == 3 * len(y) and s.n_blocks == 3
    # rows per partition in partition order (the resident engine balances its tasks with them);
    # a pairwise merge does not know the order and leaves them out
    assert s.partition_rows == (len(y), 0, 2 * len(y), 0)
    assert merge_stats(b, b).partition_rows == ()
    back = DataStats.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back.partition_rows == s.partition_rows


def test_variance_is_zero_when_the_denominator_is_not_positive():
    s = block_stats(np.array([[3.0, 4.0]]), np.array([1.0]), np.array([2.0]))
    np.testing.assert_array_equal(s.feature_var, [0.0, 0.0])
    assert s.label_var == 0.0 and s.feature_mean.tolist() == [3.0, 4.0]


def test_to_dict_round_trip_is_json_able(data):
    X, y, w = data
    s = merge_stats(
        block_stats(X, y, w, null_counts={"label": 2}), block_stats(X[:3], y[:3], w[:3])
    )
    d = s.to_dict()
    text = json.dumps(d)
    back = DataStats.from_dict(json.loads(text))
    assert back == s
    np.testing.assert_array_equal(np.asarray(d["feature_var"]), s.feature_var)


def test_quality_counters_and_problems():
    X = np.array([[1.0, np.nan], [np.inf, 2.0], [0.0, 1.0]])
    y = np.array([0.5, np.nan, 1.0])
    w = np.array([-1.0, np.inf, 1.0])
    s = block_stats(X, y, w)
    assert s.n_nonfinite_features == 2 and s.feature_nonfinite.tolist() == [1, 1]
    assert s.n_nonfinite_labels == 1 and s.n_label_non_integer == 1
    assert s.n_negative_weights == 1 and s.n_nonfinite_weights == 1
    msg = "; ".join(data_problems(s, features=["a", "b"], label="y", weight="w"))
    assert "'a': 1" in msg and "'b': 1" in msg
    assert "label column 'y' has 1 non-finite" in msg
    assert "weight column 'w' has 1 negative" in msg
    assert "weight column 'w' has 1 non-finite" in msg


def test_different_vector_sizes_are_reported():
    a = block_stats(np.ones((2, 3)), np.ones(2), np.ones(2))
    b = block_stats(np.ones((2, 4)), np.ones(2), np.ones(2))
    s = merge_stats(a, b)
    assert s.feature_sizes == (3, 4)
    (msg,) = data_problems(s, features="features")
    assert "features column 'features' has vectors of different sizes [3, 4]" in msg


# ---------------------------------------------------------------- LocalEngine
def test_from_arrays_splits_rows_into_contiguous_partitions(data):
    X, y, w = data
    eng = LocalEngine.from_arrays(X[:7], y[:7], w[:7], num_partitions=10)
    parts = eng.collect_blocks()
    assert eng.num_partitions == 10 and len(parts) == 10
    assert sum(1 for p in parts if not p) == 3  # 7 rows, 10 partitions: 3 empty
    np.testing.assert_array_equal(np.concatenate([b.y for p in parts for b in p]), y[:7])
    assert eng.stats.num_partitions == 10 and eng.stats.n_nonempty_partitions == 7

    eng = LocalEngine.from_arrays(X, y, w, num_partitions=3, block_rows=10)
    sizes = [[b.n_rows for b in p] for p in eng.collect_blocks()]
    assert [sum(s) for s in sizes] == [34, 35, 34] and max(max(s) for s in sizes) == 10
    Xs = np.vstack([b.X for p in eng.collect_blocks() for b in p])
    np.testing.assert_array_equal(Xs, X)
    b = eng.collect_blocks()[0][0]
    assert b.X.flags.c_contiguous and b.X.dtype == np.float64


@pytest.mark.parametrize("sparse", [False, True])
def test_from_arrays_keeps_the_storage_kind_and_stats(data, sparse):
    X, y, w = data
    Xin = sp.coo_matrix(X) if sparse else X.tolist()
    eng = LocalEngine.from_arrays(Xin, y, w, num_partitions=4)
    assert all(b.is_sparse is sparse for p in eng.collect_blocks() for b in p)
    assert eng.stats.is_sparse is sparse
    mean, var = ref_moments(X, w)
    np.testing.assert_allclose(eng.stats.feature_mean, mean, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(eng.stats.feature_var, var, rtol=1e-12, atol=1e-300)
    assert (eng.n_rows, eng.n_features) == X.shape
    assert eng.weight_sum == pytest.approx(w.sum(), rel=1e-14)


def test_from_arrays_default_weights_are_ones(data):
    X, y, _ = data
    eng = LocalEngine.from_arrays(X, y)
    assert eng.weight_sum == len(y)
    assert all(np.all(b.w == 1.0) for p in eng.collect_blocks() for b in p)


def fn_test(b: Block, v: np.ndarray):
    return float(b.w @ (b.X @ v)), b.X.T @ b.w, float(b.n_rows)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("num_partitions", [1, 4, 150])
def test_map_sum_equals_the_direct_sum(data, sparse, num_partitions):
    X, y, w = data
    v = np.linspace(-1, 1, X.shape[1])
    eng = LocalEngine.from_arrays(sp.csr_matrix(X) if sparse else X, y, w,
                                  num_partitions=num_partitions, block_rows=9)
    f, g, n = eng.map_sum(fn_test, v)
    assert f == pytest.approx(w @ (X @ v), rel=1e-12)
    np.testing.assert_allclose(g, X.T @ w, rtol=1e-12)
    assert n == len(y)
    assert eng.evaluations == 1 and eng.passes == 1.0


def test_map_sum_sampling_contract(data):
    X, y, w = data
    eng = LocalEngine.from_arrays(X, y, w, num_partitions=3, block_rows=20)

    def rows(b, _):
        return np.bincount(np.searchsorted(y_ids, b.y), minlength=len(y_ids)).astype(float)

    y_ids = np.arange(len(y), dtype=float)
    eng_ids = LocalEngine.from_arrays(X, y_ids, w, num_partitions=3, block_rows=20)
    a = eng_ids.map_sum(rows, None, fraction=0.3, seed=7)
    b = eng_ids.map_sum(rows, None, fraction=0.3, seed=7)
    c = eng_ids.map_sum(rows, None, fraction=0.3, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert set(np.unique(a)) <= {0.0, 1.0}
    # exactly Block.sample with default_rng([seed, partition, block])
    expected = []
    for p, blocks in enumerate(eng_ids.collect_blocks()):
        for j, blk in enumerate(blocks):
            expected.append(blk.sample(0.3, np.random.default_rng([7, p, j])).y)
    np.testing.assert_array_equal(np.flatnonzero(a), np.sort(np.concatenate(expected)))
    assert eng_ids.evaluations == 3 and eng_ids.passes == pytest.approx(0.9)
    eng_ids.reset_counters()
    assert eng_ids.evaluations == 0 and eng_ids.passes == 0.0
    # without a seed: a fresh one per call
    n1 = eng.map_sum(lambda b, _: float(b.n_rows), None, fraction=0.5)
    assert 0 < n1 < len(y)


def test_fold_pieces_do_not_modify_results_of_fn(data):
    X, y, w = data
    eng = LocalEngine.from_arrays(X[:100], y[:100], w[:100], num_partitions=2)
    before = [b.y.copy() for p in eng.collect_blocks() for b in p]
    total = eng.map_sum(lambda b, _: b.y, None)  # fn returns the block's own array
    np.testing.assert_array_equal(total, y[:50] + y[50:100])
    after = [b.y for p in eng.collect_blocks() for b in p]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert add_results(None, None) is None
    assert add_results((1.0, None), (2.0, np.ones(2)))[0] == 3.0
    with pytest.raises(TypeError, match="different shapes"):
        add_results((1.0, 2.0), (1.0,))
    assert fold_partition(fn_test, np.ones(6), 0, []) is None
    assert sample_rng(1, 2, 3).random() == np.random.default_rng([1, 2, 3]).random()


class _Positions:
    """A block fn that asks for its (partition, block) position and records it."""
    wants_index = True

    def __call__(self, block, payload, index):
        return np.array([index[0] * 100 + index[1]], dtype=float), 1.0


def test_fold_passes_block_positions_to_a_fn_that_wants_them(data):
    X, y, w = data
    # 4 partitions, blocks of 10 rows: positions are (p, j) with j restarting in every partition
    eng = LocalEngine.from_arrays(X, y, w, num_partitions=4, block_rows=10)
    expected = [p * 100 + j for p, part in enumerate(eng.collect_blocks()) for j in range(len(part))]
    total, count = eng.map_sum(_Positions(), None)
    assert count == len(expected) and len(expected) > 4
    assert total[0] == sum(expected)
    # a fn without the attribute keeps the two-argument call
    assert eng.map_sum(lambda b, v: float(b.n_rows), None) == X.shape[0]


def test_map_sum_raises_when_every_partition_is_empty():
    eng = LocalEngine([[], []], stats=DataStats.empty(3))
    with pytest.raises(RuntimeError, match="every partition is empty"):
        eng.map_sum(fn_test, np.ones(3))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(fraction=0.0), "fraction must be in \\(0, 1\\], got 0.0"),
        (dict(fraction=1.5), "fraction must be in \\(0, 1\\], got 1.5"),
        (dict(fraction=0.5, seed=-1), "seed must be a non-negative integer, got -1"),
    ],
)
def test_map_sum_parameter_errors(data, kwargs, match):
    X, y, w = data
    eng = LocalEngine.from_arrays(X, y, w)
    with pytest.raises(InputError, match=match):
        eng.map_sum(fn_test, np.ones(6), **kwargs)


def test_depth_is_validated(data):
    X, y, w = data
    with pytest.raises(InputError, match="aggregationDepth must be an integer >= 1, got 0"):
        LocalEngine.from_arrays(X, y, w, depth=0)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda X, y, w: X.__setitem__((3, 2), np.nan), "features column 'X' has 1 non-finite"),
        (lambda X, y, w: y.__setitem__(5, np.inf), "label column 'y' has 1 non-finite"),
        (lambda X, y, w: w.__setitem__([1, 2], -1.0), "weight column 'w' has 2 negative values"),
        (lambda X, y, w: w.__setitem__(0, np.nan), "weight column 'w' has 1 non-finite"),
        (lambda X, y, w: w.__setitem__(slice(None), 0.0), "all 103 weights are zero"),
        # finite but too large for float64 moments (1e300): refused, naming the column
        (lambda X, y, w: X.__setitem__((4, 1), 1e300),
         r"features column 'X' has values too large for float64 arithmetic \(max \|value\| at "
         r"feature indices \{1: 1e\+300\}\): their variance overflows"),
        (lambda X, y, w: X.__setitem__((slice(None), 0), X[:, 0] * 1e200 + 1e200),
         r"values too large .*\{0: "),
        (lambda X, y, w: (X.__setitem__((4, 1), 1e300), w.__setitem__(4, 0.0)),  # weight 0 too
         r"values too large .*\{1: 1e\+300\}"),
        (lambda X, y, w: y.__setitem__(7, -1e300),
         r"label column 'y' has values too large for float64 arithmetic \(max \|value\| 1e\+300\)"),
        (lambda X, y, w: w.__setitem__([0, 1], 1e300),
         r"weight column 'w' has values too large for float64 arithmetic \(sum of weights 2e\+300, "
         r"sum of squared weights inf\); .*divide them by a constant"),
    ],
)
def test_from_arrays_rejects_bad_data(data, mutate, match):
    X, y, w = (a.copy() for a in data)
    mutate(X, y, w)
    with pytest.raises(InputError, match=match):
        LocalEngine.from_arrays(X, y, w)


def test_values_too_large_are_found_in_csr_blocks_too(data):
    X, y, w = (a.copy() for a in data)
    X[10, 3] = -1e300
    with pytest.raises(InputError, match=r"values too large .*\{3: 1e\+300\}"):
        LocalEngine.from_arrays(sp.csr_matrix(X), y, w, num_partitions=3)


def test_large_but_representable_values_are_accepted(data):
    # 1e150 * sqrt(103 rows): the variance (~1e302) still fits in float64
    X, y, w = (a.copy() for a in data)
    X[:, 1] *= 1e150
    engine = LocalEngine.from_arrays(X, y, w)
    assert np.isfinite(engine.stats.feature_std[1]) and engine.stats.feature_std[1] > 1e149


def test_from_arrays_shape_errors(data):
    X, y, w = data
    with pytest.raises(InputError, match="y has 102 values but X has 103 rows"):
        LocalEngine.from_arrays(X, y[:-1])
    with pytest.raises(InputError, match="w has 3 values but X has 103 rows"):
        LocalEngine.from_arrays(X, y, w[:3])
    with pytest.raises(InputError, match="num_partitions must be an integer >= 1, got 0"):
        LocalEngine.from_arrays(X, y, num_partitions=0)
    with pytest.raises(InputError, match="input arrays is empty \\(0 rows\\)"):
        LocalEngine.from_arrays(X[:0], y[:0])


def test_context_manager_and_properties(data):
    X, y, w = data
    with LocalEngine.from_arrays(X, y, w, num_partitions=2, depth=3) as eng:
        assert eng.depth == 3 and eng.num_partitions == 2
        assert eng.stats.n_rows == eng.n_rows == 103

