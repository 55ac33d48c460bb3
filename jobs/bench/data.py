"""Where a case's rows come from and where they are kept: the data sources (LIBSVM and CSV files
under DATASETS, synthetic rows from jobs/generate.py), the cached DataFrame every system of a case
fits, and the driver's copy of the same rows."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import generate
from bench.config import Config, log

if TYPE_CHECKING:
    from bench.cases import Case

ROOT = Path(__file__).resolve().parents[2]
# The real data sets, by file name: the repository's data/ (data/README.md), or --datasets DIR
DATASETS = ROOT / "data"


@dataclass(frozen=True)
class LibSVM:
    """A LIBSVM file; ``labels``: 'binary' maps -1/+1 (or 0/1) to 0/1, 'shift' maps 1..K to 0..K-1."""

    file: str
    n_features: int
    labels: str = "binary"

    def load(self, spark, cfg: Config):
        from pyspark.sql import functions as F

        df = spark.read.format("libsvm").option("numFeatures", self.n_features).load(str(dataset_path(self.file, cfg.datasets)))
        if self.labels == "binary":
            df = df.withColumn("label", F.when(F.col("label") > 0, 1.0).otherwise(0.0))
        elif self.labels == "shift":
            df = df.withColumn("label", F.col("label") - 1.0)
        return df


@dataclass(frozen=True)
class CSV:
    """A CSV file: numeric columns plus one-hot encoded categorical ones (StringIndexer +
    OneHotEncoder) assembled into ``features``; ``label`` is a SQL expression. Rows with nulls are
    dropped. Without a header, columns are named _c0, _c1, ..."""

    file: str
    label: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    header: bool = True

    def load(self, spark, cfg: Config):
        from pyspark.ml import Pipeline
        from pyspark.ml.feature import OneHotEncoder, StringIndexer, VectorAssembler

        raw = (spark.read.option("header", self.header).option("inferSchema", True)
               .csv(str(dataset_path(self.file, cfg.datasets))).dropna())
        stages, inputs = [], list(self.numeric)
        if self.categorical:
            indexed = [f"{c}_index" for c in self.categorical]
            encoded = [f"{c}_onehot" for c in self.categorical]
            stages += [StringIndexer(inputCols=list(self.categorical), outputCols=indexed),
                       OneHotEncoder(inputCols=indexed, outputCols=encoded)]
            inputs += encoded
        stages.append(VectorAssembler(inputCols=inputs, outputCol="features"))
        df = Pipeline(stages=stages).fit(raw).transform(raw)
        return df.selectExpr("features", f"CAST({self.label} AS DOUBLE) AS label")


@dataclass(frozen=True)
class Synthetic:
    """Rows from jobs/generate.py: written once to ``--data-dir`` as Parquet and reused while the
    generator's record matches (``persist``), or generated straight into the cached DataFrame."""

    n: int
    d: int
    task: str = "logistic"
    density: float = 1.0
    seed: int = 0
    persist: bool = True

    def spec(self, cfg: Config) -> generate.Spec:
        return generate.Spec(n=self.n, d=self.d, density=self.density, task=self.task, classes=3,
                             seed=self.seed, num_partitions=cfg.num_partitions)

    def load(self, spark, cfg: Config):
        spec = self.spec(cfg)
        if not self.persist:
            return generate.synthetic_frame(spark, spec)
        path = cfg.data_dir / f"synthetic-{spec.task}-n{spec.n}-d{spec.d}-dens{spec.density:g}-p{spec.num_partitions}-s{spec.seed}"
        record = generate.read_metadata(str(path))
        if record is None or record.get("spec") != asdict(spec):
            log(f"generating {path} ({spec.n} x {spec.d})")
            generate.write_dataset(spark, spec, str(path), overwrite=True)
        return spark.read.parquet(str(path))


def dataset_path(name: str, directory: Path = DATASETS) -> Path:
    path = Path(directory) / name
    if not path.exists():
        raise FileNotFoundError(f"dataset {name} not found under {directory} (--datasets DIR)")
    return path


def load_cached(spark, case: "Case", cfg: Config):
    """The case's DataFrame (features, label), repartitioned, persisted and materialized."""
    from pyspark import StorageLevel

    df = case.source.load(spark, cfg).select("features", "label").repartition(cfg.num_partitions)
    df = df.persist(StorageLevel.MEMORY_AND_DISK)
    df.count()
    return df


@dataclass
class DriverData:
    """The same rows on the driver: X (dense or CSR), y, and a LocalEngine over views of them."""

    X: Any
    y: np.ndarray
    engine: Any

    @classmethod
    def collect(cls, df) -> "DriverData":
        """Through sparkopt's own ingest, so the rows are exactly the blocks sparkopt fits."""
        import scipy.sparse as sp

        from sparkopt.engine import LocalEngine, ingest

        rdd, stats = ingest(df)
        try:
            blocks = rdd.collect()
        finally:
            rdd.unpersist()
        sparse = any(b.is_sparse for b in blocks)
        X = sp.vstack([b.X for b in blocks], format="csr") if sparse else np.concatenate([b.X for b in blocks])
        y = np.concatenate([b.y for b in blocks])
        del blocks
        # blocks of 64k rows keep Newton's X^T D X temporaries small on big dense data
        return cls(X, y, LocalEngine.from_arrays(X, y, block_rows=1 << 16))

    @property
    def stats(self):
        return self.engine.stats

