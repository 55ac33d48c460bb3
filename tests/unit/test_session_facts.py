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
