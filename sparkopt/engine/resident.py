"""The resident engine: blocks stay in executor Python memory for a whole fit.

Why: with the tree engine every pass ships each cached partition from the JVM to a Python worker
(pickled bytes -> numpy), which costs ~10x the arithmetic itself. Here one long-running *barrier*
Spark job (the mechanism of XGBoost-Spark and TorchDistributor: all its tasks run at once) loads
the blocks once; each task then serves requests from the driver over an authenticated socket:
the driver sends ``(fn, payload, fraction, seed)`` once per pass, each task folds its resident
blocks exactly as :func:`~sparkopt.engine.fold.fold_partition` does and sends back one partial
sum. Per pass only the payload (coefficients, directions) travels out and the partial sums back.

Session life cycle: a session (the barrier job plus the channel) starts on the first
:meth:`ResidentEngine.map_sum` or on entering :meth:`ResidentEngine.session`, and stops when the
outermost ``session()`` block exits or :meth:`ResidentEngine.close` is called. While a session
runs it holds every task slot, so no other Spark job of the application can make progress:
fits open a session for their duration only.

Faults: Spark aborts a failed barrier *result* stage instead of retrying it, so the engine retries
itself. When a task or executor dies mid-pass the driver sees its socket close or the job fail,
stops the session, starts a new one (blocks are rebuilt from the RDD cache or its lineage, and
regrouped onto the task slots that are left) and re-sends the same request: every request is a
pure function of the driver's iterate, so the fit continues with the same numbers. An exception
raised by ``fn`` itself is not a fault: it is re-raised on the driver as :class:`TaskError`.

Security: a fresh random secret per session; the listening socket binds to the driver's own
address (``spark.driver.host``); every connection passes the mutual HMAC challenge of
:mod:`multiprocessing.connection` (with a deadline, so a silent peer cannot stall the listener)
before a single byte of it is unpickled; sockets, threads and the job end on every exit path.
"""
from __future__ import annotations

import contextlib
import logging
import os
import pickle
import secrets
import socket
import struct
import threading
import time
import traceback
import uuid
from functools import partial
from multiprocessing.connection import Client, Connection, answer_challenge, deliver_challenge, wait
from typing import Any, Iterator, Optional

from ..errors import InputError, WorkersLost
from .fold import BlockFn, add_results, check_sampling, fold_over, fold_partitions
from .stats import DataStats
from .tree import TreeEngine

__all__ = ["ResidentEngine", "TaskError", "SessionLost", "task_slots"]

logger = logging.getLogger("sparkopt")

_HANDSHAKE_SECONDS = 10.0


class TaskError(RuntimeError):
    """``fn`` raised inside a resident task; the message carries the task's traceback."""


class SessionLost(WorkersLost):
    """A resident session lost a task (process or executor death) or could not start."""


# ------------------------------------------------------------------------------ task side
def _tag_blocks(index: int, blocks: Iterator[Any]) -> Iterator[tuple[int, int, Any]]:
    for position, block in enumerate(blocks):
        yield index, position, block


def _partition_rows(index: int, blocks: Iterator[Any]) -> Iterator[tuple[int, int]]:
    yield index, sum(block.n_rows for block in blocks)


def balanced_groups(rows: dict[int, int], groups: int) -> dict[int, int]:
    """Assign partitions to ``groups`` tasks, largest first onto the least-loaded task (LPT):
    the slowest task bounds every pass, so balance rows rather than partition counts."""
    load = [0] * groups
    assignment = {}
    for index in sorted(rows, key=lambda i: (-rows[i], i)):
        target = min(range(groups), key=lambda g: (load[g], g))
        assignment[index] = target
        load[target] += rows[index]
    return assignment


def _serve(address: tuple[str, int], authkey: bytes, session_id: str):
    """The barrier task body: hold the blocks, answer the driver's requests until told to stop."""

    def run(tagged: Iterator[tuple[int, int, Any]]) -> Iterator[tuple[int, int]]:
        from pyspark import BarrierTaskContext

        context = BarrierTaskContext.get()
        tagged_blocks: dict[int, list] = {}
        for index, position, block in tagged:
            tagged_blocks.setdefault(index, []).append((position, block))
        # a shuffle may deliver blocks in any order: restore each partition's own order; the
        # partitions themselves are held (and folded) in index order
        partitions = {index: [block for _, block in sorted(tagged_blocks[index], key=lambda pair: pair[0])]
                      for index in sorted(tagged_blocks)}
        del tagged_blocks
        rows = sum(b.n_rows for blocks in partitions.values() for b in blocks)
        weight = float(sum(float(b.w.sum()) for blocks in partitions.values() for b in blocks))
        conn = Client(address, authkey=authkey)      # mutual HMAC challenge before any data
        channel = _TaskChannel(conn)
        served = 0
        try:
            channel.send(("hello", session_id, context.partitionId(), context.attemptNumber(), list(partitions),
                          rows, weight))
            while True:
                try:
                    request = channel.recv()
                except EOFError:
                    break                             # the driver closed the session
                if request[0] == "stop":
                    break
                try:
                    if request[0] == "run":
                        _, worker_fn, config = request
                        fold = partial(fold_over, list(partitions.items()))
                        reply = ("done", worker_fn(channel, context.partitionId(), fold, config))
                    else:
                        _, fn, payload, fraction, seed = request
                        reply = ("ok", fold_partitions(fn, payload, partitions.items(), fraction, seed))
                except Exception as exc:  # noqa: BLE001 - reported to the driver, which raises it
                    reply = ("error", type(exc).__name__, str(exc), traceback.format_exc())
                channel.send(reply)
                served += 1
        finally:
            conn.close()
        yield context.partitionId(), served

    return run


class _TaskChannel:
    """A worker program's end of the channel inside a resident task (pickled messages)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def send(self, message: Any) -> None:
        self._conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    def recv(self) -> Any:
        return pickle.loads(self._conn.recv_bytes())


# ---------------------------------------------------------------------------- driver side
def task_slots(sc: Any) -> int:
    """How many tasks the application can run at once (0 when unknown)."""
    try:
        jsc = sc._jsc.sc()
        profile = jsc.resourceProfileManager().defaultResourceProfile()
        return int(jsc.maxNumConcurrentTasks(profile))
    except Exception:  # noqa: BLE001 - a private JVM API: fall back to the public estimate
        cpus = int(sc.getConf().get("spark.task.cpus", "1"))
        return max(int(sc.defaultParallelism) // max(cpus, 1), 0)


def _set_receive_timeout(sock: socket.socket, seconds: float) -> None:
    whole = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                    struct.pack("ll", whole, int((seconds - whole) * 1e6)))


class _Session:
    """One barrier job and the driver's end of its channel."""

    def __init__(self, tagged: Any, groups: int, host: str, start_timeout: float) -> None:
        self.id = uuid.uuid4().hex
        self.groups = groups
        self._authkey = secrets.token_bytes(32)
        self._server = socket.create_server((host, 0), backlog=max(16, 2 * groups))
        self._server.settimeout(0.2)
        self.address = (host, self._server.getsockname()[1])
        self._closing = threading.Event()
        self._pending: list[tuple[Connection, tuple]] = []
        self._pending_lock = threading.Condition()
        self.connections: dict[int, Connection] = {}    # group index -> connection
        self.workers: dict[int, dict] = {}               # group index -> partitions, rows, weight
        self.job_error: Optional[BaseException] = None
        self._job_done = threading.Event()
        self._sc = tagged.context
        self._job_group = f"sparkopt-resident-{self.id}"
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"{self._job_group}-accept", daemon=True)
        self._acceptor.start()
        job = tagged.barrier().mapPartitions(_serve(self.address, self._authkey, self.id))
        from pyspark import InheritableThread

        def run_job() -> None:
            try:
                self._sc.setJobGroup(self._job_group, "sparkopt resident engine", interruptOnCancel=True)
                job.collect()
            except BaseException as exc:  # noqa: BLE001 - kept for the driver thread to report
                self.job_error = exc
            finally:
                self._job_done.set()
                with self._pending_lock:
                    self._pending_lock.notify_all()

        self._job = InheritableThread(target=run_job, name=f"{self._job_group}-job", daemon=True)
        self._job.start()
        try:
            self._await_tasks(start_timeout)
        except BaseException:
            self.close()
            raise

    # -- connections
    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                raw, _ = self._server.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            conn = None
            try:
                raw.settimeout(None)
                _set_receive_timeout(raw, _HANDSHAKE_SECONDS)
                conn = Connection(os.dup(raw.fileno()))
                deliver_challenge(conn, self._authkey)
                answer_challenge(conn, self._authkey)
                if not conn.poll(_HANDSHAKE_SECONDS):
                    raise TimeoutError("no hello")
                hello = pickle.loads(conn.recv_bytes())     # authenticated peer from here on
                _set_receive_timeout(raw, 0.0)
            except Exception as exc:  # noqa: BLE001 - a failed or foreign peer is dropped
                logger.warning("sparkopt resident engine: rejected a connection (%s)", type(exc).__name__)
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                continue
            finally:
                raw.close()
            with self._pending_lock:
                self._pending.append((conn, hello))
                self._pending_lock.notify_all()

    def _await_tasks(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._pending_lock:
            while True:
                for conn, hello in self._pending:
                    kind, session_id, group, _attempt, parts, rows, weight = hello
                    if kind != "hello" or session_id != self.id or group in self.connections:
                        conn.close()
                        continue
                    self.connections[group] = conn
                    self.workers[group] = {"partitions": list(parts), "rows": int(rows), "weight": float(weight)}
                self._pending.clear()
                if len(self.connections) == self.groups:
                    return
                if self._job_done.is_set():
                    raise SessionLost(f"the resident job ended before its tasks connected: {_brief(self.job_error)}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SessionLost(
                        f"only {len(self.connections)} of {self.groups} resident tasks started within {timeout:g} s "
                        "(are other jobs holding the task slots?); use engine='tree'")
                self._pending_lock.wait(min(remaining, 0.5))

    # -- messages
    def _send_all(self, message: bytes) -> int:
        try:
            for conn in self.connections.values():
                conn.send_bytes(message)
        except OSError as exc:
            raise SessionLost(f"a resident task is gone ({exc})") from exc
        return len(message) * len(self.connections)

    def _incoming(self, waiting: dict) -> Iterator[tuple[Any, int, Any, int]]:
        """(connection, group, message, bytes) as the tasks send them, while ``waiting``
        (connection -> group; the caller removes the tasks it no longer waits for) is not empty.
        A closed socket or a failed job is a lost session."""
        while waiting:
            ready = wait(list(waiting), timeout=1.0)
            if not ready and self._job_done.is_set():
                raise SessionLost(f"the resident job failed: {_brief(self.job_error)}")
            for conn in ready:
                group = waiting[conn]
                try:
                    data = conn.recv_bytes()
                except (EOFError, OSError) as exc:
                    raise SessionLost(f"resident task {group} closed its channel") from exc
                yield conn, group, pickle.loads(data), len(data)

    def evaluate(self, message: bytes) -> tuple[Any, int]:
        """Send ``message`` to every task and sum their replies in group order."""
        self._send_all(message)
        received = 0
        replies: dict[int, Any] = {}
        waiting = {conn: group for group, conn in self.connections.items()}
        for conn, group, reply, size in self._incoming(waiting):
            del waiting[conn]
            received += size
            replies[group] = reply
        # every task has answered (so the next request gets fresh replies) before an error is raised
        for reply in replies.values():
            if reply[0] == "error":
                raise _task_error(reply)
        acc = None
        for group in sorted(replies):
            acc = add_results(acc, replies[group][1])
        return acc, received

    def run(self, message: bytes, server: Any) -> tuple[list, int, int]:
        """Start a worker program on every task and route its messages through ``server`` until
        every task's program has returned; (summaries in group order, bytes sent, bytes received)."""
        groups = sorted(self.connections)
        server.start([self.workers[g] for g in groups])
        index_of = {g: i for i, g in enumerate(groups)}
        sent, received = self._send_all(message), 0
        summaries: dict[int, Any] = {}
        waiting = {conn: group for group, conn in self.connections.items()}
        for conn, group, message_in, size in self._incoming(waiting):
            received += size
            if message_in[0] == "error":
                raise _task_error(message_in)
            if message_in[0] == "done":
                summaries[group] = message_in[1]
                del waiting[conn]
                continue
            for target, reply in server.handle(index_of[group], message_in):
                blob = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
                try:
                    self.connections[groups[target]].send_bytes(blob)
                except OSError as exc:
                    raise SessionLost(f"resident task {groups[target]} is gone ({exc})") from exc
                sent += len(blob)
        return [summaries[g] for g in groups], sent, received

    def close(self) -> None:
        """Stop the tasks, end the job, release the socket and threads (idempotent)."""
        if self._closing.is_set():
            return
        self._closing.set()
        stop = pickle.dumps(("stop",))
        for conn in self.connections.values():
            with contextlib.suppress(Exception):
                conn.send_bytes(stop)
        for conn in self.connections.values():
            with contextlib.suppress(Exception):
                conn.close()
        with self._pending_lock:
            for conn, _ in self._pending:
                with contextlib.suppress(Exception):
                    conn.close()
            self._pending.clear()
        self._server.close()
        self._acceptor.join(5.0)
        # tasks that never connected (or hang) are cancelled rather than waited for
        if not self._job_done.wait(10.0 if self.connections else 0.5):
            self._sc.cancelJobGroup(self._job_group)
            self._job_done.wait(30.0)
        self._job.join(5.0)


def _task_error(message: tuple) -> TaskError:
    _, name, text, trace = message
    return TaskError(f"{name}: {text}\n--- task traceback ---\n{trace}")


def _brief(exc: Optional[BaseException]) -> str:
    if exc is None:
        return "no error reported"
    text = str(exc).strip().splitlines()
    for line in text:
        if "Exception" in line or "Error" in line or "failed" in line:
            return line[:300]
    return text[0][:300] if text else type(exc).__name__


class ResidentEngine(TreeEngine):
    """Evaluate sums over a persisted ``RDD[Block]`` whose blocks stay in the tasks' memory.

    Same contract and numbers as :class:`TreeEngine` (the fold per partition is the same code;
    partition sums are added in partition order). ``max_restarts`` bounds how many times a lost
    session is restarted during one fit; ``start_timeout`` is how long to wait for all tasks to
    connect. ``host`` defaults to ``spark.driver.host``."""

    kind = "resident"
    # one round trip on the channel (README: 0.1 - 0.2 ms per iteration)
    pass_overhead = 2e-4

    def __init__(self, blocks_rdd: Any, stats: DataStats, depth: int = 2, *, max_restarts: int = 3,
                 start_timeout: float = 120.0, host: Optional[str] = None) -> None:
        super().__init__(blocks_rdd, stats, depth)
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise InputError(f"max_restarts must be an integer >= 0, got {max_restarts!r}")
        if not start_timeout > 0:
            raise InputError(f"start_timeout must be > 0, got {start_timeout!r}")
        self.max_restarts = max_restarts
        self.start_timeout = float(start_timeout)
        self._host = host
        self._session: Optional[_Session] = None
        self._regrouped: dict[int, Any] = {}
        self._depth_open = 0
        self._lock = threading.RLock()
        self.restarts = 0
        self.sessions_started = 0

    # -- session life cycle
    @property
    def active(self) -> bool:
        return self._session is not None

    def _tagged(self, groups: int) -> Any:
        """The (partition, position, block) records the ``groups`` barrier tasks load.

        One task per partition when the slots allow; otherwise partitions are regrouped onto the
        slots by one shuffle (barrier stages refuse ``coalesce``), balanced by rows. The shuffle
        output is kept by Spark, so later sessions of this engine skip it."""
        tagged = self._rdd.mapPartitionsWithIndex(_tag_blocks)
        if groups >= self.num_partitions:
            return tagged
        if groups not in self._regrouped:
            known = self.stats.partition_rows
            if len(known) == self.num_partitions:
                rows = dict(enumerate(known))
            else:  # statistics built without combine_partitions: count, one job
                rows = dict(self._rdd.mapPartitionsWithIndex(_partition_rows).collect())
            assignment = balanced_groups(rows, groups)
            self._regrouped[groups] = (
                tagged.map(lambda record: (assignment[record[0]], record))
                .partitionBy(groups, lambda key: key).values()
            )
        return self._regrouped[groups]

    def _start(self) -> _Session:
        sc = self._rdd.context
        groups = min(self.num_partitions, max(task_slots(sc), 1))
        host = self._host or sc.getConf().get("spark.driver.host", "127.0.0.1")
        session = _Session(self._tagged(groups), groups, host, self.start_timeout)
        self.sessions_started += 1
        logger.info("sparkopt resident engine: %d tasks hold %d partitions", groups, self.num_partitions)
        return session

    @contextlib.contextmanager
    def session(self):
        """Keep one session for the duration of the block (nested blocks share it)."""
        with self._lock:
            self._depth_open += 1
        try:
            yield self
        finally:
            with self._lock:
                self._depth_open -= 1
                if self._depth_open == 0:
                    self.close()

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    def unpersist(self) -> None:
        self.close()
        super().unpersist()

    # -- the fold
    def map_sum(self, fn: BlockFn, payload: Any, *, fraction: float | None = None, seed: int | None = None) -> Any:
        fraction, seed = check_sampling(fraction, seed)
        from pyspark import cloudpickle

        message = cloudpickle.dumps(("eval", fn, payload, fraction, seed), protocol=pickle.HIGHEST_PROTOCOL)
        failures: list[str] = []
        with self._lock:
            while True:
                try:
                    if self._session is None:
                        self._session = self._start()
                    result, received = self._session.evaluate(message)
                    break
                except SessionLost as exc:
                    failures.append(str(exc))
                    self.close()
                    if len(failures) > self.max_restarts:
                        raise SessionLost(
                            f"resident engine gave up after {len(failures)} lost sessions: " + " | ".join(failures)
                        ) from exc
                    self.restarts += 1
                    logger.warning("sparkopt resident engine: %s; restarting the session (%d/%d)",
                                   exc, self.restarts, self.max_restarts)
                except TaskError:
                    if self._depth_open == 0:   # every reply was read: the session can go on
                        self.close()
                    raise
                except BaseException:
                    self.close()                # interrupted mid-request: replies may be pending
                    raise
            groups = self._session.groups
            if self._depth_open == 0:
                self.close()      # no session() block: one request, one session
        self._count(fraction)
        self.bytes_sent += len(message) * groups
        self.bytes_received += received
        if result is None:
            raise RuntimeError("map_sum: every partition is empty; there is no data to sum over")
        return result

    def run_workers(self, worker_fn: Any, config: Any, server: Any) -> list:
        """Run ``worker_fn(channel, worker_index, fold, config)`` in every resident task at once
        (``fold(fn, payload, fraction, seed)`` sums over the task's own partitions;
        ``channel.send/recv`` talk to the driver). Every message a worker sends goes to ``server.handle(worker, message)``, which
        returns the ``[(worker, reply), ...]`` to send; ``server.start(workers)`` is called first
        with each worker's partitions, rows and weight. Returns the workers' return values.

        A worker program keeps state between messages, so a lost task cannot be replayed: a
        lost session raises :class:`SessionLost` (the caller still holds its driver-side state)."""
        from pyspark import cloudpickle

        message = cloudpickle.dumps(("run", worker_fn, config), protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            try:
                if self._session is None:
                    self._session = self._start()
                summaries, sent, received = self._session.run(message, server)
            except BaseException:
                self.close()      # a half-run program leaves the tasks in an unknown state
                raise
            if self._depth_open == 0:
                self.close()
        self.bytes_sent += sent
        self.bytes_received += received
        return summaries

    def __repr__(self) -> str:
        return (f"ResidentEngine(n_rows={self.n_rows}, n_features={self.n_features}, "
                f"num_partitions={self.num_partitions}, active={self.active})")
