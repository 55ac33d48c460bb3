"""The driver engine's pieces that need no Spark: cutting a collected Arrow table back into its
partitions, the vector size from ML metadata, the budget rule; and the benchmark's peak-memory
reader (Linux /proc)."""
import os
import sys
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from sparkopt.engine.driver import _PARTITION_COLUMN, _split_by_partition, _vector_size, check_budget
from sparkopt.errors import InputError


def test_collected_rows_go_back_to_their_partitions_in_order():
    # partition 0's rows, then 2's (1 is empty), one batch spanning partitions 0 and 2, as collect returns them
    first = pa.record_batch({"label": [1.0, 2.0, 3.0], _PARTITION_COLUMN: pa.array([0, 0, 2], pa.int32())})
    second = pa.record_batch({"label": [4.0, 5.0], _PARTITION_COLUMN: pa.array([2, 3], pa.int32())})
    table = pa.Table.from_batches([first, second])
    parts = _split_by_partition(table, table.schema.get_field_index(_PARTITION_COLUMN))
    assert sorted(parts) == [0, 2, 3]
    values = {p: [v for b in batches for v in b.column(0).to_pylist()] for p, batches in parts.items()}
    assert values == {0: [1.0, 2.0], 2: [3.0, 4.0], 3: [5.0]}
    assert all(b.schema.names == ["label"] for batches in parts.values() for b in batches)


@pytest.mark.parametrize("metadata, size", [
    ({"numFeatures": 123, "ml_attr": {"num_attrs": 123}}, 123),                      # the LIBSVM reader
    ({"ml_attr": {"attrs": {"numeric": [{"idx": 0}, {"idx": 1}], "binary": [{"idx": 2}]}}}, 3),
    ({}, None),
])
def test_vector_size_from_ml_metadata(metadata, size):
    assert _vector_size(SimpleNamespace(metadata=metadata)) == size


@pytest.mark.parametrize("value", [-0.5, float("nan"), float("inf"), "256", None, True])
def test_bad_budget_names_the_param(value):
    with pytest.raises(InputError, match="maxDriverSizeInMB must be"):
        check_budget(value)
    assert check_budget(0) == 0.0 and check_budget(256) == 256.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux only); run on Linux")
def test_peak_memory_sees_an_allocation_after_a_reset():
    from bench.memory import PeakMemory, _peak_mb, _reset

    _reset(os.getpid())
    before = _peak_mb(os.getpid())
    with PeakMemory() as peaks:
        block = np.ones(64 * 2**20 // 8)          # 64 MB touched
        del block
    assert peaks.result.driver_python >= before + 60
    from bench.memory import jvm_pid

    if jvm_pid() is None:       # run alone: no JVM child; in the whole suite the session's JVM is one
        assert peaks.result.jvm is None and peaks.result.workers is None
    else:
        assert peaks.result.jvm > 0
