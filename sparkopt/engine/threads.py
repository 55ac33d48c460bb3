"""BLAS threads in the tasks' Python workers: one task's fold uses the CPUs its task was given.

Why: the tasks of a pass run at once, one per task slot (a resident session's barrier job holds
every slot), and numpy's OpenBLAS starts a thread per core in each Python worker: T tasks x C
threads on C cores contend and spin. Spark's Python runner gives its workers
``OMP_NUM_THREADS`` = ``spark.executor.cores`` unless ``spark.executorEnv.OMP_NUM_THREADS`` is set,
and then the executorEnv value; but a Spark Connect server passes no executorEnv variables to the
Python workers of DataFrame functions (``mapInArrow``), so with that setting (common advice, and
this project's benchmarks) its workers get no thread count at all. Measured on this 2-core
machine (2026-12-07, 2e5 x 100 dense rows, two resident tasks on such a Connect server): a
gradient pass took 0.05-0.08 s with the workers' default 2 BLAS threads each, 0.015 s on a
classic session whose workers had OMP_NUM_THREADS=1.

So a task folds under :func:`task_threads` (threadpoolctl, the library scikit-learn uses for
this): the BLAS libraries loaded in the worker are held at the task's CPUs (``spark.task.cpus``,
1 by default) while it folds, and given back after. A thread count the worker's environment sets
(``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``: the user's choice) is left
alone.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, ContextManager

#: environment variables by which a user sets the workers' thread count (then left as it is)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_controller: Any = None       # one per worker process: taking stock of the loaded libraries costs ~1 ms


def task_threads(cpus: Any = None) -> ContextManager:
    """A context holding this process's BLAS threads at ``cpus`` (default: the running Spark
    task's CPUs, else 1), or doing nothing when the environment sets a thread count."""
    global _controller
    if any(os.environ.get(name) for name in THREAD_VARIABLES):
        return contextlib.nullcontext()
    if cpus is None:
        cpus = _task_cpus()
    import numpy  # noqa: F401 - loads the BLAS the controller must see
    from threadpoolctl import ThreadpoolController

    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=max(int(cpus), 1), user_api="blas")


def _task_cpus() -> int:
    """``spark.task.cpus`` of the running task (1 outside a task)."""
    try:
        from pyspark import TaskContext

        context = TaskContext.get()
        return int(context.cpus()) if context is not None else 1
    except Exception:  # noqa: BLE001 - no Spark, or a TaskContext without cpus(): one thread
        return 1
