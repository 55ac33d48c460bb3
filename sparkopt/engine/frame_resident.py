"""The resident engine over a :class:`~sparkopt.engine.frame.BlockFrame`: what a Spark Connect
session runs for ``engine="resident"`` (and ``auto`` when its tasks can reach the client).

The session's barrier job is a DataFrame action the client starts in a thread of its own,
``block_rows().mapInArrow(serve, barrier=True).collect()`` (public API, the same on both kinds of
session): each task unpickles its partition's block rows (the frame ingest's cache), connects to the
client's listener and serves passes as the RDD resident engine's tasks do (the same task body,
:func:`~sparkopt.engine.resident._serve`: the same frames, handshake and fold). Its job carries a
tag (``SparkSession.addTag``), by which a hung session is cancelled (``interruptTag``). A lost task
is a lost session, restarted from the cached block rows (or their lineage) and the pass resent.

Reachability: a Connect client is not the Spark driver, and executors may not be able to open a
connection to it (a laptop, a NAT). The listener binds the address the client reaches the Spark
Connect server from (``host=`` / ``bind_host=`` say otherwise) and accepts connections from the
server's host and ``spark.sparkopt.resident.allowedHosts`` (hosts, or ``*`` for any; executors on
other hosts need it: a Connect client cannot list them). Tasks that cannot connect within
``connect_timeout`` fail the session with :class:`~sparkopt.engine.resident.DriverUnreachable`:
``engine="resident"`` raises it, ``auto`` (``fallback=True``) logs it and runs every pass on the
frame engine over the same cached blocks.

Task slots: a barrier job needs every task running at once, and a Connect client has no
``SparkContext`` to ask; they are read from the server's settings (``spark.master`` ``local[N]``;
``spark.executor.instances`` x cores per task), and ``local[*]`` from one task's CPU count.
"""
from __future__ import annotations

import logging
import re
import socket
from typing import Any, Callable, Iterator, Optional

from ..errors import InputError
from .fold import BlockFn
from .frame import BlockFrame, FrameEngine, block_records
from .resident import _UNREACHABLE, DriverUnreachable, ResidentEngine, SessionLost, _Session
from .session import application_key, is_connect
from .stats import DataStats

__all__ = ["FrameResidentEngine", "SessionSettings", "barrier_unavailable", "frame_resident_unavailable",
           "frame_task_slots", "BatchSource"]

logger = logging.getLogger("sparkopt")
_SERVED = "task int, served long, unreachable string"


def _serve_records(serve: Callable[[Iterator], Iterator], records: Callable[[Iterator], Iterator]) -> Callable:
    """The barrier mapInArrow function: a partition's record batches in, turned into
    (partition, seq, block) records by ``records`` (the block rows unpickled, or blocks built from
    the data), the resident task body (``serve``, which holds the blocks and answers the driver
    until told to stop) run over them, one row (task, requests served, None) out. A task that
    cannot reach the driver ends normally with a row saying so (task, -1, why): the reason reaches
    the driver as data, where a failed task's message may not (a Spark Connect client sees the
    barrier stage's abort, whose text names whichever task failed first, often a sibling killed
    by it)."""

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa
        from pyspark import TaskContext

        def row(task: int, served: int, why: Optional[str]) -> Any:
            return pa.RecordBatch.from_arrays([pa.array([task], pa.int32()), pa.array([served], pa.int64()),
                                               pa.array([why], pa.string())], names=["task", "served", "unreachable"])

        try:
            for task, served in serve(records(batches)):
                yield row(task, served, None)
        except ConnectionError as exc:
            if _UNREACHABLE not in str(exc):
                raise
            yield row(TaskContext.get().partitionId(), -1, str(exc))

    return run


class BatchSource:
    """What a frame session's tasks read: a DataFrame and the function that turns a partition's
    record batches into its (partition, seq, block) records."""

    def __init__(self, frame: Any, records: Callable[[Iterator], Iterator]) -> None:
        self.frame, self.records = frame, records


class _FrameSession(_Session):
    """A resident session whose barrier job is a DataFrame action (``mapInArrow(barrier=True)``
    over a :class:`BatchSource`), in a job group (classic session) or tagged (Spark Connect) so
    that it can be cancelled."""

    def _launch(self, source: BatchSource, serve: Callable) -> None:
        spark = source.frame.sparkSession
        self._spark = spark
        job = source.frame.mapInArrow(_serve_records(serve, source.records), _SERVED, barrier=True)
        tag = self._job_group
        self._rows: list = []
        if not is_connect(spark):        # a classic session: a job group, as the RDD engine's session
            from pyspark import InheritableThread

            self._sc = spark.sparkContext

            def run() -> None:
                self._sc.setJobGroup(tag, "sparkopt resident engine", interruptOnCancel=True)
                self._rows = job.collect()

            self._run_job(run, InheritableThread)
            return

        def collect() -> None:
            spark.addTag(tag)          # thread-local: this job only
            try:
                self._rows = job.collect()
            finally:
                spark.removeTag(tag)

        self._run_job(collect)

    def _cancel(self) -> None:
        if is_connect(self._spark):
            self._spark.interruptTag(self._job_group)
        else:
            super()._cancel()

    def _await_tasks(self, timeout: float) -> None:
        try:
            super()._await_tasks(timeout)
        except SessionLost as exc:
            why = [row["unreachable"] for row in self._rows if row["unreachable"]] if self._job_done.is_set() else []
            if why and not isinstance(exc, DriverUnreachable):
                raise DriverUnreachable(why[0]) from exc
            raise


def _task_count(frame: Any) -> int:
    """How many partitions (so barrier tasks) ``frame`` has: one row per task of a mapInArrow job
    over its smallest column (a Connect client cannot ask for ``rdd.getNumPartitions()``)."""

    def one(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa
        from pyspark import TaskContext

        for _ in batches:
            pass
        yield pa.RecordBatch.from_arrays([pa.array([TaskContext.get().partitionId()], pa.int32())], names=["task"])

    return len(frame.select("partition").mapInArrow(one, "task int").collect())


def _cpu_count(batches: Iterator[Any]) -> Iterator[Any]:
    import os

    import pyarrow as pa

    for _ in batches:
        pass
    yield pa.RecordBatch.from_arrays([pa.array([os.cpu_count() or 1], pa.int32())], names=["cpus"])


_LOCAL = re.compile(r"^local(?:\[(\d+|\*)(?:,\s*\d+)?\])?$")
_SLOTS: dict[str, int] = {}     # application key -> task slots (0: unknown), looked up once


def _setting(spark: Any, key: str, default: Any = None) -> Any:
    try:
        value = spark.conf.get(key, default)
    except Exception:  # noqa: BLE001 - a setting the server does not expose: its default
        return default
    return default if value is None else value


def _all_settings(spark: Any) -> dict:
    """Every setting the session lists (``spark.conf.getAll``, pyspark 4's property: one round trip
    on Spark Connect); {} when it lists none."""
    try:
        return dict(spark.conf.getAll)
    except Exception:  # noqa: BLE001 - a pyspark or server that cannot list them: ask key by key
        return {}


def frame_task_slots(spark: Any) -> int:
    """How many tasks the application behind ``spark`` can run at once, from its settings
    (0 when they do not say): ``local[N]`` -> N; ``local[*]`` -> the CPU count a task sees (one
    small job, once per application); a cluster -> ``spark.executor.instances`` x
    (``spark.executor.cores`` // ``spark.task.cpus``) when those are set."""
    key = application_key(spark)
    if key in _SLOTS:
        return _SLOTS[key]
    cpus_per_task = max(int(_setting(spark, "spark.task.cpus", "1")), 1)
    master = str(_setting(spark, "spark.master", "")).strip()
    local = _LOCAL.match(master)
    slots = 0
    if local is not None:
        threads = local.group(1) or "1"
        if threads == "*":
            threads = spark.range(1, numPartitions=1).mapInArrow(_cpu_count, "cpus int").collect()[0]["cpus"]
        slots = int(threads) // cpus_per_task
    else:
        instances, cores = _setting(spark, "spark.executor.instances"), _setting(spark, "spark.executor.cores")
        if instances and cores:
            slots = int(instances) * (int(cores) // cpus_per_task)
    _SLOTS[key] = slots
    return slots


def frame_resident_unavailable(blocks: BlockFrame) -> Optional[str]:
    """Why ``auto`` should not use the resident engine over ``blocks`` (None when it can)."""
    return barrier_unavailable(blocks.frame.sparkSession, blocks.num_partitions)


def barrier_unavailable(spark: Any, partitions: Optional[int] = None) -> Optional[str]:
    """Why a barrier job of ``partitions`` tasks (None: not known yet) should not run on the
    session ``spark``, judged from its settings alone (None when it can)."""
    if str(_setting(spark, "spark.dynamicAllocation.enabled", "false")).strip().lower() == "true":
        return "dynamic allocation is on, and barrier tasks need a fixed set of executors"
    slots = frame_task_slots(spark)
    if slots < 1:
        return ("the task slots are not known from the session's settings (spark.master, "
                "spark.executor.instances / cores), and a barrier job needs them all at once")
    if partitions is not None and partitions > slots:
        return (f"{partitions} partitions but {slots} task slots, so they cannot all run at once "
                f"(numPartitions={slots} makes the data resident)")
    return None


def _server_host(spark: Any) -> str:
    """The host this process reaches the Spark driver at: the Spark Connect server's host (the
    advertised driver host on a classic session)."""
    if is_connect(spark):
        return str(spark.client.host).strip("[]")
    return str(_setting(spark, "spark.driver.host", "127.0.0.1"))


def _local_address(remote_host: str) -> str:
    """The address of this host's interface toward ``remote_host`` (no packet is sent)."""
    try:
        family, _, _, _, address = socket.getaddrinfo(remote_host, 9, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(address)
            return probe.getsockname()[0]
    except OSError:
        return socket.gethostbyname(socket.gethostname())


class SessionSettings:
    """What a resident engine asks of its Spark session, answered through the session's settings
    and DataFrame jobs only (no SparkContext: a Spark Connect client has none). Mixed in before
    :class:`~sparkopt.engine.resident.ResidentEngine`; ``spark`` is the engine's session."""

    spark: Any

    def _setting(self, key: str, default: Any = None) -> Any:
        """A setting of the session, from one listing of its settings per engine (on Spark
        Connect each ``spark.conf.get`` is a round trip to the server, and starting a session
        reads a dozen; the listing is one)."""
        settings = self.__dict__.get("_session_settings")
        if settings is None:
            settings = self._session_settings = _all_settings(self.spark)
        if not settings:         # nothing listed (an older server): ask for the key itself
            return _setting(self.spark, key, default)
        value = settings.get(key)
        return default if value is None else value

    def _slots(self) -> int:
        return frame_task_slots(self.spark)

    def _addresses(self) -> tuple[str, str]:
        host = self._host or _local_address(_server_host(self.spark))
        return host, self._bind_host or host

    def _known_hosts(self) -> set[str]:
        return {_server_host(self.spark)}


class FrameResidentEngine(SessionSettings, ResidentEngine):
    """:class:`~sparkopt.engine.resident.ResidentEngine` over the block rows of a
    :class:`BlockFrame` (see the module docstring): the same contract, options, faults and
    numbers; the passes a session cannot serve (the fallback, uncarriable payloads) run on the
    frame engine over the same cached blocks."""

    _session_class = _FrameSession
    _balances = False

    def __init__(self, blocks: BlockFrame, stats: DataStats, depth: int = 2, **options: Any) -> None:
        self._blocks = blocks         # what FrameEngine's passes read (and _setting, from the start)
        super().__init__(blocks, stats, depth, **options)

    @property
    def spark(self) -> Any:
        return self._blocks.frame.sparkSession

    def _groups(self) -> int:
        if self._blocks.tasks is None:      # counted once per cache, not per engine (a fit's engine is fresh)
            self._blocks.tasks = _task_count(self._blocks.block_rows())
        tasks, slots = self._blocks.tasks, self._slots()
        if slots and tasks > slots:
            raise InputError(f"engine='resident': the data are in {tasks} partitions but the application "
                             f"has {slots} task slots, and a barrier job needs them all at once; set "
                             f"numPartitions={slots}, or use engine='tree'")
        return tasks

    def _tagged(self, groups: int) -> Any:
        return BatchSource(self._blocks.block_rows(), block_records)

    def _tree_pass(self, fn: BlockFn, payload: Any, fraction: Any, seed: Any) -> Any:
        return FrameEngine.map_sum(self, fn, payload, fraction=fraction, seed=seed)

    def collect_blocks(self) -> list:
        return FrameEngine.collect_blocks(self)

    def __repr__(self) -> str:
        return (f"FrameResidentEngine(n_rows={self.n_rows}, n_features={self.n_features}, "
                f"num_partitions={self.num_partitions}, active={self.active})")
