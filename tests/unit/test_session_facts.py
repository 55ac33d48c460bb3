"""sparkopt.engine.session: the session kind and the plan statistics a Connect client reads from
the server's explain text (no Spark needed: the texts are Spark 4.3's own output)."""
from __future__ import annotations

import pytest

from sparkopt.engine.session import is_connect, plan_statistics

# what a Spark 4.3 Connect server answered for explain(mode="cost") of a9a's first 2000 rows
LIMITED = """== Optimized Logical Plan ==
GlobalLimit 2000, Statistics(sizeInBytes=64.5 KiB, rowCount=2.00E+3)
+- LocalLimit 2000, Statistics(sizeInBytes=2.3 MiB)
   +- Relation [label#11,features#12] libsvm, Statistics(sizeInBytes=2.3 MiB)

== Physical Plan ==
CollectLimit 2000
"""


def test_the_root_statistics_with_a_row_count():
    assert plan_statistics(LIMITED) == (int(64.5 * 1024), 2000)


def test_a_plan_without_row_count_gives_its_size_only():
    text = "== Optimized Logical Plan ==\nRelation [a#1] csv, Statistics(sizeInBytes=1.5 GiB)\n"
    assert plan_statistics(text) == (int(1.5 * 2**30), None)


@pytest.mark.parametrize("unit, factor", [("B", 1), ("KiB", 2**10), ("MiB", 2**20), ("TiB", 2**40), ("EiB", 2**60)])
def test_every_unit_spark_prints(unit, factor):
    assert plan_statistics(f"== Optimized Logical Plan ==\nX, Statistics(sizeInBytes=8.0 {unit})")[0] == 8 * factor


def test_statistics_of_the_physical_plan_are_not_taken_for_the_logical_ones():
    text = "== Physical Plan ==\nScan, Statistics(sizeInBytes=1.0 B)\n"
    assert plan_statistics("== Optimized Logical Plan ==\nno statistics here\n" + text) is None
    assert plan_statistics("nothing at all") is None


def test_is_connect_looks_at_the_session_class():
    class Classic:
        pass

    Remote = type("SparkSession", (), {"__module__": "pyspark.sql.connect.session"})
    assert is_connect(Remote()) and not is_connect(Classic())


class _Conf:
    """A SparkSession's ``conf`` (get with a default, set, unset) over a dict."""

    def __init__(self, **values):
        self.values = dict(values)
        self.history = []

    def get(self, key, default=None):
        return self.values.get(key, default)

    def set(self, key, value):
        self.history.append((key, value))
        self.values[key] = value

    def unset(self, key):
        self.history.append((key, None))
        self.values.pop(key, None)


class _Session:
    def __init__(self, **conf):
        self.conf = _Conf(**conf)


def test_arrow_batches_are_cut_by_rows_only_inside_the_block_and_the_setting_put_back():
    from sparkopt.engine.session import ARROW_MAX_BYTES, arrow_batches_by_rows

    spark = _Session()
    with arrow_batches_by_rows(spark):
        assert spark.conf.get(ARROW_MAX_BYTES) == str(2**31 - 1)
    assert ARROW_MAX_BYTES not in spark.conf.values
    spark = _Session(**{ARROW_MAX_BYTES: "64MB"})      # the default, set explicitly
    with pytest.raises(KeyError):
        with arrow_batches_by_rows(spark):
            raise KeyError("a failing job")
    assert spark.conf.values[ARROW_MAX_BYTES] == "64MB"


@pytest.mark.parametrize("conf", [{"spark.sql.execution.arrow.maxBytesPerBatch": "8MB"},
                                  {"spark.sql.execution.arrow.maxRecordsPerBatch": "0"}])
def test_a_byte_limit_of_the_users_own_or_unbounded_rows_are_left_alone(conf):
    from sparkopt.engine.session import arrow_batches_by_rows

    spark = _Session(**conf)
    with arrow_batches_by_rows(spark):
        pass
    assert spark.conf.history == [] and spark.conf.values == conf


class _Context:
    applicationId = "app-1"


@pytest.mark.parametrize("settings, slots", [
    ({"spark.master": "local[3]"}, 3), ({"spark.master": "local"}, 1),
    ({"spark.master": "local[4, 2]", "spark.task.cpus": "2"}, 2),
    ({"spark.master": "spark://h:7077", "spark.executor.instances": "3", "spark.executor.cores": "4"}, 12),
    ({"spark.master": "yarn"}, 0)])
def test_task_slots_of_a_session_come_from_its_settings(settings, slots):
    from sparkopt.engine import frame_resident

    spark = _Session(**settings)
    spark.sparkContext = _Context()
    spark.sparkContext.applicationId = f"app-{sorted(settings.items())}"
    assert frame_resident.frame_task_slots(spark) == slots
