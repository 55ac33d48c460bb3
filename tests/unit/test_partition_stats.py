"""Ingest statistics merged per partition where the blocks are built (issue 16): each partition
sends the driver one compact record (sparse when its features are), and the driver's ordered
merge of those records equals the merge of every block's statistics, bit for bit."""
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from sparkopt.engine.stats import (DataStats, block_stats, combine_partitions, compact_stats, expand_stats,
                                   merge_partition_records, partition_stats)


def _partitions(sparse: bool, d: int = 2000, seed: int = 0):
    """5 partitions of 1-4 blocks each, one empty partition, one block of rows all with weight 0;
    sparse: ~3 stored entries per row over d features."""
    rng = np.random.default_rng(seed)
    partitions = []
    for p in range(6):
        blocks = []
        for b in range(0 if p == 3 else 1 + (p % 4)):
            n = int(rng.integers(20, 60))
            if sparse:
                X = sp.random(n, d, density=3 / d, format="csr", random_state=rng, data_rvs=rng.standard_normal)
            else:
                X = rng.standard_normal((n, 12)) * rng.uniform(0.1, 10, 12)
                X[rng.random(X.shape) < 0.3] = 0.0
            y = rng.integers(0, 2, n).astype(float)
            w = np.zeros(n) if (p, b) == (4, 1) else rng.uniform(0.5, 2, n)
            blocks.append(block_stats(X, y, w))
        partitions.append(blocks)
    return partitions


def _same_bits(a: DataStats, b: DataStats) -> bool:
    """Equal, and every array equal to the bit (dtype, signed zeros, NaNs) -- stricter than ==."""
    arrays = ("feature_mean", "feature_m2", "feature_min", "feature_max", "feature_nonzero", "feature_nonfinite")
    return a == b and all(getattr(a, k).dtype == getattr(b, k).dtype and
                          getattr(a, k).tobytes() == getattr(b, k).tobytes() for k in arrays)


def _arrays_bytes(record) -> int:
    return sum(a.nbytes for a in record.values() if isinstance(a, np.ndarray))


@pytest.mark.parametrize("sparse", [False, True])
def test_merged_records_equal_the_merge_of_every_block(sparse):
    partitions = _partitions(sparse)
    d = partitions[0][0].n_features
    reference = combine_partitions(partitions)
    records = {p: compact_stats(partition_stats(blocks)) for p, blocks in enumerate(partitions) if blocks}
    merged = merge_partition_records(records.items(), num_partitions=len(partitions))
    assert _same_bits(merged, reference)          # every scalar and array, bit for bit
    assert (merged.num_partitions, merged.n_nonempty_partitions) == (6, 5)
    assert merged.n_features == d
    # a record travels pickled: the same after the round trip
    again = {p: pickle.loads(pickle.dumps(r)) for p, r in records.items()}
    assert _same_bits(merge_partition_records(again.items(), num_partitions=len(partitions)), reference)


def test_a_sparse_partition_sends_only_its_features():
    partitions = _partitions(sparse=True, d=2**16)
    for blocks in filter(None, partitions):
        stats = partition_stats(blocks)
        record = compact_stats(stats)
        touched = int(np.count_nonzero(stats.feature_nonzero))
        # six (d,) arrays would be 6 * 8 * 65536 bytes; the record holds ~ the touched features only
        assert _arrays_bytes(record) <= 8 * 7 * (touched + 16)
        assert _same_bits(expand_stats(record), stats)


def test_dense_statistics_stay_dense_and_exact():
    stats = partition_stats(_partitions(sparse=False)[0])
    record = compact_stats(stats)
    assert record["index"] is None
    assert _same_bits(expand_stats(record), stats)


def test_signed_zero_nan_and_empty_partitions_round_trip():
    # a stored -0.0 (min -0.0 differs from 0.0 in its bits only) and a NaN
    X = sp.csr_matrix((np.array([-0.0, 1.0, np.nan]), np.array([1, 3, 3]), np.array([0, 2, 3])), shape=(2, 4))
    stats = block_stats(X, np.array([0.0, 1.0]), np.array([1.0, 1.0]))
    assert _same_bits(expand_stats(compact_stats(stats)), stats)
    for empty in (DataStats.empty(5), DataStats(null_counts={"label": 3}), partition_stats([])):
        assert _same_bits(expand_stats(compact_stats(empty)), empty)
    # partitions that sent nothing count as empty partitions
    merged = merge_partition_records([(1, compact_stats(partition_stats([stats])))], num_partitions=3)
    assert _same_bits(merged, combine_partitions([[], [stats], []]))
    assert merged.partition_rows == (0, 2, 0)            # what the resident engine balances with


def test_a_partition_reported_twice_counts_once():
    """A task Spark reran (lost executor, speculation) may add to the accumulator again."""
    partitions = _partitions(sparse=False)
    records = [(p, compact_stats(partition_stats(b))) for p, b in enumerate(partitions) if b]
    merged = merge_partition_records(records + records[:2], num_partitions=len(partitions))
    assert _same_bits(merged, combine_partitions(partitions))
