"""Which engine evaluates a fit: ``driver`` (the data collected into the driver process, no Spark
job per pass), ``tree`` (one Spark job per pass), ``resident`` (blocks held in long-running
barrier tasks), ``sharded`` (resident tasks that also hold the model's shards: models larger
than the driver) or ``auto``."""
from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

from ..errors import InputError
from .compression import Compression
from .driver import DEFAULT_DRIVER_BUDGET_MB, DriverEngine, blocks_to_driver, collect_to_driver, driver_choice
from .frame import BlockFrame, FrameEngine, ingest_frame
from .frame_resident import FrameResidentEngine, barrier_unavailable, frame_resident_unavailable
from .fused import ConnectFusedEngine, FusedEngine, FusedSource
from .ingest import ingest
from .resident import ResidentEngine, task_slots
from .sharded import ShardedEngine
from .session import is_connect
from .stats import DataStats
from .tree import TreeEngine

__all__ = ["ENGINES", "make_engine", "engine_for", "resident_unavailable", "ingest_blocks",
           "check_session_engine", "no_channel"]

ENGINES = ("auto", "tree", "resident", "driver", "sharded")
#: ``auto`` shards the model across the tasks when its coefficients (d x K values, 8 bytes each)
#: exceed this many MB: the driver then never holds a model-sized vector
SHARDED_MODEL_BUDGET_MB = 256
logger = logging.getLogger("sparkopt")


def check_engine(engine: Any) -> str:
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {ENGINES}, got {engine!r}")
    return engine


def resident_unavailable(blocks_rdd: Any) -> Optional[str]:
    """Why ``auto`` should not use the resident engine for this RDD (None when it can)."""
    sc = blocks_rdd.context
    if sc.getConf().get("spark.dynamicAllocation.enabled", "false").strip().lower() == "true":
        return "dynamic allocation is on, and barrier tasks need a fixed set of executors"
    slots = task_slots(sc)
    partitions = blocks_rdd.getNumPartitions()
    if slots < 1:
        return "no task slot is available yet"
    if partitions > slots:
        return (f"{partitions} partitions but {slots} task slots, so they cannot all run at once "
                f"(numPartitions={slots} makes the data resident; engine='resident' regroups them with one shuffle)")
    return None


def ingest_blocks(df: Any, features_col: Any = "features", label_col: str = "label", weight_col: Optional[str] = None,
                  **options: Any) -> tuple[Any, DataStats]:
    """The selected columns of ``df`` ingested into a Spark cache, as the session allows: an
    ``RDD[Block]`` (:func:`~sparkopt.engine.ingest.ingest`) on a classic session, a
    :class:`~sparkopt.engine.frame.BlockFrame` (:func:`~sparkopt.engine.frame.ingest_frame`) on a
    Spark Connect session. Options as :func:`ingest`'s; on Connect ``transfer`` may only be
    ``"auto"`` or ``"map_in_arrow"`` (the frame ingest is a ``mapInArrow`` job; the JVM's Arrow
    batch RDD does not exist there)."""
    if is_connect(df.sparkSession):
        transfer = options.pop("transfer", "auto")
        if transfer == "arrow_batches":
            raise InputError("transfer='arrow_batches' is not available on a Spark Connect session (it has no "
                             "RDDs); use transfer='map_in_arrow' or 'auto'")
        if transfer not in ("auto", "map_in_arrow"):
            raise InputError(f"transfer must be 'auto', 'arrow_batches' or 'map_in_arrow', got {transfer!r}")
        return ingest_frame(df, features_col, label_col, weight_col, **options)
    return ingest(df, features_col, label_col, weight_col, **options)


def make_engine(blocks_rdd: Any, stats: DataStats, depth: int = 2, engine: str = "auto", model_values: int = 0, *,
                compression: Any = "none", compression_ratio: Any = None, **resident_options: Any):
    """An engine over ``blocks_rdd`` (see :func:`~sparkopt.engine.ingest`), blocks already in a Spark
    cache: ``auto`` picks between the Spark engines (resident when every partition can run at
    once, else tree); ``driver`` collects the cached blocks into the driver (one job).
    :func:`engine_for` starts from the DataFrame instead and also considers the driver.
    ``blocks_rdd`` may be a :class:`~sparkopt.engine.frame.BlockFrame` (a Spark Connect session's
    cache): ``tree`` then gives a :class:`FrameEngine`, ``resident`` a
    :class:`~sparkopt.engine.frame_resident.FrameResidentEngine`, ``sharded`` is refused, and
    ``auto`` the resident one when every partition can run at once (it falls back to the frame
    engine when its tasks cannot reach this process), else the frame engine.
    ``model_values`` (d x K, the coefficients of the model to fit): ``auto`` picks ``sharded`` when
    they take more than :data:`SHARDED_MODEL_BUDGET_MB` and every partition can run at once
    (classic sessions). ``compression`` / ``compression_ratio`` compress the resident (and
    sharded) engine's channel on a classic session (sparkopt.engine.compression); the other
    engines have no channel of their own and say so in the log."""
    engine = check_engine(engine)
    compression = Compression.of(compression, compression_ratio)
    if isinstance(blocks_rdd, FusedSource):
        return _fused_engine(blocks_rdd, depth, engine, model_values, compression=compression, **resident_options)
    framed = isinstance(blocks_rdd, BlockFrame)
    if framed:
        no_channel(compression, "Spark Connect session's")
        compression = Compression()
    fallback = engine == "auto"
    if engine == "auto":
        reason = (frame_resident_unavailable if framed else resident_unavailable)(blocks_rdd)
        if reason is not None:
            logger.info("sparkopt: engine='auto' uses the tree engine: %s", reason)
            engine = "tree"
        elif not framed and _model_too_large(model_values):
            logger.info("sparkopt: engine='auto' shards the model: %d coefficients take more than %d MB",
                        int(model_values), SHARDED_MODEL_BUDGET_MB)
            engine = "sharded"
        else:
            engine = "resident"
    if engine in ("driver", "tree"):
        no_channel(compression, engine)
    if engine == "driver":
        if framed:
            return DriverEngine(FrameEngine(blocks_rdd, stats, depth).collect_blocks(), stats, depth)
        return blocks_to_driver(blocks_rdd, stats, depth)
    if engine == "tree":
        return (FrameEngine if framed else TreeEngine)(blocks_rdd, stats, depth)
    if engine == "sharded":
        if framed:
            _refuse_sharded()
        return ShardedEngine(blocks_rdd, stats, depth, **{"compression": compression, **resident_options})
    # under auto, tasks that cannot reach the driver (or Connect client) make the engine run as the tree engine
    resident = FrameResidentEngine if framed else ResidentEngine
    return resident(blocks_rdd, stats, depth, **{"fallback": fallback, "compression": compression, **resident_options})


class _Partitions:
    """What :func:`resident_unavailable` asks of an RDD: its context and partition count."""

    def __init__(self, context: Any, partitions: int) -> None:
        self.context, self._partitions = context, int(partitions)

    def getNumPartitions(self) -> int:
        return self._partitions


def fused_load(df: Any, engine: str, num_partitions: Optional[int] = None) -> bool:
    """Whether a fit of ``df`` with ``engine`` loads its blocks in the resident session's own
    tasks (:mod:`sparkopt.engine.fused`): ``resident`` or ``auto``, and every partition able to
    run at once (else the ingest's block RDD, which the resident engine can regroup onto fewer
    tasks and the tree engine reads). On Spark Connect the partitions are counted by the fused
    statistics job itself, so only the session's settings are judged here (a barrier job is
    possible at all; with ``numPartitions``, that many tasks fit), the rest by :func:`_fused_engine`
    (more partitions than task slots: the frame ingest after all, from the same source)."""
    if engine not in ("auto", "resident"):
        return False
    if is_connect(df.sparkSession):
        return barrier_unavailable(df.sparkSession, num_partitions) is None
    sc = df.sparkSession.sparkContext
    partitions = num_partitions or df.rdd.getNumPartitions()
    if engine == "resident":
        return partitions <= task_slots(sc)
    return resident_unavailable(_Partitions(sc, partitions)) is None


def _fused_engine(source: FusedSource, depth: int, engine: str, model_values: int = 0, **resident_options: Any):
    """An engine over a fused source: the fused resident engine when its partitions can all run
    at once, else (or for ``tree`` / ``driver`` / ``sharded``, and ``auto`` with a model over the
    sharding budget) the engine :func:`make_engine` makes over the source's blocks ingested into
    an RDD."""
    fallback = engine == "auto"
    if source.connect:
        unavailable = barrier_unavailable(source.selected.sparkSession, source.getNumPartitions())
    else:
        unavailable = resident_unavailable(source)
    if engine == "auto":
        if unavailable is not None:
            logger.info("sparkopt: engine='auto' uses the tree engine: %s", unavailable)
            engine = "tree"
        elif not source.connect and _model_too_large(model_values):
            engine = "auto"     # make_engine logs that it shards the model
        else:
            engine = "resident"
    if engine == "resident" and source.connect and unavailable is None:
        compression = resident_options.pop("compression", None)
        no_channel(Compression.of(compression), "Spark Connect session's")
        return ConnectFusedEngine(source, depth, **{"fallback": fallback, **resident_options})
    if engine == "resident" and not source.connect and source.getNumPartitions() <= task_slots(source.context):
        return FusedEngine(source, depth, **{"fallback": fallback, **resident_options})
    return make_engine(source.rdd(), source.stats, depth, engine, model_values, **resident_options)


def _model_too_large(model_values: Any) -> bool:
    """Whether ``auto`` shards a model of ``model_values`` coefficients (:data:`SHARDED_MODEL_BUDGET_MB`)."""
    return 8 * int(model_values) > SHARDED_MODEL_BUDGET_MB * 2**20


#: why a Spark Connect session has no sharded engine: its tasks and checkpoints use RDDs
CONNECT_NO_SHARDED = ("the sharded engine runs over an RDD of blocks, which a Spark Connect session does not have")


def no_channel(compression: Compression, engine: str) -> None:
    """Log that ``engine`` has no channel for a lossy ``compression`` to compress."""
    if not compression.lossless:
        logger.info("sparkopt: compression=%r applies to the resident engine's channel; the %s engine has "
                    "none, so its passes travel as they always do", compression.scheme, engine)


def check_session_engine(df: Any, engine: str) -> str:
    """``engine`` if ``df``'s session can run it, else InputError naming it (before any job):
    ``sharded`` needs a classic session."""
    engine = check_engine(engine)
    if engine == "sharded" and is_connect(df.sparkSession):
        _refuse_sharded()
    return engine


def _refuse_sharded() -> None:
    raise InputError(f"engine='sharded' is not available here: {CONNECT_NO_SHARDED}; use engine='resident', "
                     "'tree' or 'auto', or 'driver' for data that fit in the client")


def use_driver(df: Any, features_col: Any, label_col: str, weight_col: Optional[str], engine: str,
               max_driver_mb: Any = DEFAULT_DRIVER_BUDGET_MB, num_partitions: Optional[int] = None) -> bool:
    """Whether a fit of ``df`` with ``engine`` runs on the driver (``auto``: the estimated size of
    the selected columns within ``max_driver_mb``, the reason logged)."""
    engine = check_engine(engine)
    if engine != "auto":
        return engine == "driver"
    chosen, reason = driver_choice(df, features_col, label_col, weight_col, max_driver_mb,
                                   num_partitions=num_partitions)
    logger.info("sparkopt: engine='auto' %s: %s", "uses the driver engine" if chosen else "runs on Spark", reason)
    return chosen


def engine_for(df: Any, features_col: str | Sequence[str] = "features", label_col: str = "label",
               weight_col: Optional[str] = None, *, engine: str = "auto",
               max_driver_mb: float = DEFAULT_DRIVER_BUDGET_MB, num_partitions: Optional[int] = None,
               depth: int = 2, compression: Any = "none", compression_ratio: Any = None, **ingest_options: Any):
    """An engine over ``df``'s selected columns, from the DataFrame: ``driver`` collects them into
    the driver process (:func:`~sparkopt.engine.driver.collect_to_driver`); ``tree`` /
    ``resident`` ingest them into a Spark cache (:func:`~sparkopt.engine.ingest.ingest`);
    ``auto`` fits on the driver when their estimated float64 size
    (:func:`~sparkopt.engine.driver.estimate_driver_bytes`, no pass over the data) is within
    ``max_driver_mb``, else as :func:`make_engine` chooses (``compression``: the resident engine's).
    The caller owns the engine (``unpersist()`` or ``with``)."""
    check_session_engine(df, engine)
    compression = Compression.of(compression, compression_ratio)
    if use_driver(df, features_col, label_col, weight_col, engine, max_driver_mb, num_partitions):
        no_channel(compression, "driver")
        return collect_to_driver(df, features_col, label_col, weight_col, num_partitions=num_partitions,
                                 depth=depth, **ingest_options)
    blocks, stats = ingest_blocks(df, features_col, label_col, weight_col, num_partitions=num_partitions,
                                  **ingest_options)
    try:
        return make_engine(blocks, stats, depth, engine, compression=compression)
    except BaseException:
        blocks.unpersist()
        raise
