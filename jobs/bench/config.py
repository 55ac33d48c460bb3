"""What a benchmark run is: its Config (from the command line), the Spark settings it runs with,
the constants the figures of several parts depend on, and the run's log."""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

GAP_TARGET = 1e-6
REFERENCE_TOL = 1e-12
# benchmark.py keeps BLAS at one thread per Spark Python worker; the driver's numpy / scikit-learn
# baselines raise their own limit to every core with threadpoolctl
DRIVER_THREADS = os.cpu_count() or 1
LOSS = {"logistic": "logistic", "multinomial": "multinomial", "linear": "squared_error", "poisson": "poisson"}
DEFAULT_MASTER = "local[2]"


def log(message: str) -> None:
    print(f"[benchmark {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def now() -> float:
    return time.perf_counter()


@dataclass
class Config:
    quick: bool
    cases: list[str]
    repeats: int
    output: Path
    data_dir: Path
    datasets: Path
    master: Optional[str]
    num_partitions: int
    driver_memory: str
    seed: int

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Config":
        output = Path(args.output).resolve()
        return cls(quick=args.quick, cases=[c.strip() for c in (args.cases or "").split(",") if c.strip()],
                   repeats=args.repeats if args.repeats is not None else (1 if args.quick else 3), output=output,
                   data_dir=Path(args.data_dir).resolve() if args.data_dir else output / "data",
                   datasets=Path(args.datasets).resolve(), master=args.master, num_partitions=args.num_partitions, driver_memory=args.driver_memory,
                   seed=args.seed)

    def spark_settings(self) -> dict:
        """Spark settings of the benchmark's one session."""
        return {
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.driver.memory": self.driver_memory,
            "spark.driver.maxResultSize": "0",   # the driver copy of the data streams back through it
            "spark.sql.shuffle.partitions": str(self.num_partitions),
            "spark.default.parallelism": str(self.num_partitions),
            "spark.pyspark.python": sys.executable,
            "spark.executorEnv.OMP_NUM_THREADS": "1",
            "spark.executorEnv.OPENBLAS_NUM_THREADS": "1",
            "spark.sql.execution.arrow.pyspark.enabled": "true",
        }
