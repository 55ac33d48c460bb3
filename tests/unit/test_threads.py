"""sparkopt.engine.threads: a task folds with its BLAS threads held at its CPUs, unless the
worker's environment sets a thread count (tests/connect checks it inside a Connect server's tasks)."""
from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from sparkopt.engine.threads import THREAD_VARIABLES, task_threads


def blas_threads() -> set:
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


@pytest.fixture
def unset(monkeypatch):
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_a_task_folds_with_its_cpus_and_gives_the_threads_back(unset):
    np.ones((4, 4)) @ np.ones((4, 4))
    with threadpool_limits(2, user_api="blas"):      # what a 2-core worker starts with
        assert blas_threads() == {2}
        with task_threads(1):
            assert blas_threads() == {1}
        assert blas_threads() == {2}
        with task_threads():                          # outside a Spark task: 1
            assert blas_threads() == {1}


def test_a_thread_count_the_environment_sets_is_left_alone(unset, monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    with threadpool_limits(2, user_api="blas"):
        with task_threads(1):
            assert blas_threads() == {2}
