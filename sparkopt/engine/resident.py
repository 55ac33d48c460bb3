"""The resident engine: blocks stay in executor Python memory for a whole fit.

Why: with the tree engine every pass ships each cached partition from the JVM to a Python worker
(pickled bytes -> numpy), which costs ~10x the arithmetic itself. Here one long-running *barrier*
Spark job (the mechanism of XGBoost-Spark and TorchDistributor: all its tasks run at once) loads
the blocks once; each task then serves requests from the driver over an authenticated socket:
the driver sends ``(function digest, payload, fraction, seed)`` once per pass, each task folds its resident
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

Security: nothing on the channel is ever unpickled. Code (the block functions, a worker
program) reaches the tasks only inside the Spark task closure; a session ships every block function
it knows, and a request names one by its digest (a function the session does not hold starts a new
session that does). A fresh 32-byte secret per session, also in the closure, authenticates both
ends with an HMAC-SHA256 challenge over fresh nonces, and every frame after it with HMAC-SHA256
under per-connection, per-direction keys and sequence numbers (:mod:`sparkopt.engine.wire`); a
malformed, unauthenticated or replayed frame closes its connection and is logged. When Spark
encrypts its own network (:func:`channel_encrypted`: ``spark.network.crypto.enabled``,
``spark.ssl.rpc.enabled`` or ``spark.authenticate.enableSaslEncryption``; or
``spark.sparkopt.resident.encrypt=true``) every frame is encrypted too, with AES-256-GCM under
those keys and the sequence number as nonce. A block
function whose payload or result is not such a value (a record like the normal solver's
co-moments) has its passes run as tree-engine jobs over the same blocks (said once in the log). Handshakes run
in parallel (at most ``max_pending_handshakes`` at once), each under one total deadline, so silent
or trickling peers cannot delay the session's own tasks. Before any of that, a connection is
accepted only from an address of the application's own hosts (:class:`PeerFilter`: its executors
and driver as Spark's status tracker knows them, resolved to IP addresses and looked up again
when an unknown address connects, since executors come and go); any other peer is closed on
arrival, before a byte is read, and logged once per address.

Hung peers: every request has a deadline (``request_timeout``; by default max(30 s, 20 x the
median pass of this engine)), and sends time out too; a task that misses it is a lost session,
restarted and resent exactly as a dead one. A task busy in a long block function is not hung: it
sends a heartbeat frame every quarter deadline (at most every 5 s) from a thread of its own,
and each restarts that task's deadline (each task's own, so one task's heartbeats never cover
another's silence), up to a hard cap per pass (``max_request_time``; by default 10 deadlines).
A stopped process sends nothing and is lost after one deadline; a deadlock in Python code keeps
the heartbeat thread going and is lost at the cap.

Reachability: the listener binds ``spark.driver.bindAddress`` (else the advertised host,
``spark.driver.host``) on ``spark.sparkopt.resident.port`` (0, the default: any free port),
trying ``spark.sparkopt.resident.portMaxRetries`` (16) successive ports;
``spark.sparkopt.resident.allowedHosts`` adds hosts (comma-separated) to the allowed peers, or
``*`` accepts any (executors seen through NAT). A task that cannot
connect within ``connect_timeout`` fails the job with a message saying so; with ``fallback=True``
(``engine="auto"``) the engine then runs every pass as the tree engine does, and logs why.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import math
import secrets
import select
import socket
import statistics
import threading
import time
import traceback
from functools import partial
from typing import Any, Callable, Iterable, Iterator, Optional

from ..errors import InputError, WorkersLost
from .balance import Balancer, block_timings
from .compression import Compression, DriverExchange, TaskExchange
from .fold import BlockFn, add_results, check_sampling, fold_held
from .link import Link, LinkModel, parse_link
from .stats import DataStats
from .threads import task_threads
from .tree import TreeEngine
from .wire import SESSION_ID_BYTES, Channel, FrameType, WireError, client_handshake, frame_bytes, server_handshake

__all__ = ["ResidentEngine", "TaskError", "SessionLost", "DriverUnreachable", "task_slots", "PeerFilter",
           "executor_hosts", "channel_encrypted"]

logger = logging.getLogger("sparkopt")

#: one connection's whole handshake (challenge, proof and hello) must finish within this
HANDSHAKE_SECONDS = 10.0
#: connections in the handshake at once; more are closed on arrival
MAX_PENDING_HANDSHAKES = 64
_UNREACHABLE = "sparkopt resident task cannot reach the driver"
#: the error name a task reports when a pass's result is not a value the channel carries
_UNCARRIABLE = "ChannelCannotCarry"
#: how many block functions an engine ships to each session (the most recently used)
_FUNCTION_TABLE_SIZE = 32
#: a folding task's heartbeats come at most this far apart (and 4 to a request deadline)
MAX_HEARTBEAT_SECONDS = 5.0
#: a request's hard cap, in request deadlines, when ``max_request_time`` is not given
REQUEST_CAP_DEADLINES = 10
#: an unknown peer looks the application's hosts up again at most this often
PEER_REFRESH_SECONDS = 1.0
#: addresses whose rejection was logged (beyond it, rejections go to the debug log only)
_LOGGED_PEERS = 1024


class TaskError(RuntimeError):
    """``fn`` raised inside a resident task; the message carries the task's traceback."""


class SessionLost(WorkersLost):
    """A resident session lost a task (process or executor death, a missed request deadline, a
    bad frame) or could not start."""


class DriverUnreachable(SessionLost):
    """The resident tasks could not connect to the driver's listener (containers, NAT,
    firewalls, a wrong ``spark.driver.host``)."""


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


def _connect(address: tuple[str, int], secret: bytes, session_id: bytes, timeout: float,
             encrypted: bool = False) -> Channel:
    """Connect and authenticate to the driver, retrying (a listener busy with hostile peers may
    close a connection on arrival) until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    pause, last = 0.05, None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ConnectionError(f"{_UNREACHABLE} at {address[0]}:{address[1]} within {timeout:g} s "
                                  f"({type(last).__name__}: {last}); check spark.driver.host / bindAddress and "
                                  "that executors can open connections to the driver")
        sock = None
        try:
            sock = socket.create_connection(address, timeout=min(remaining, HANDSHAKE_SECONDS))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return client_handshake(sock, secret, session_id, min(deadline, time.monotonic() + HANDSHAKE_SECONDS),
                                    encrypted)
        except (OSError, EOFError, WireError) as exc:
            last = exc
            if sock is not None:
                sock.close()
        time.sleep(min(pause, max(deadline - time.monotonic(), 0)))
        pause = min(pause * 2, 1.0)


class _WorkerChannel:
    """A worker program's end of the channel inside a resident task: ``send(message)``,
    ``recv() -> message`` (the driver's stop arrives as ``("stop",)``). For worker programs that
    talk to each other (the sharded engine): ``peer_key`` (derived from the session secret, which
    arrived in the closure), ``session_id``, ``local_host`` (this task's address on the route to
    the driver) and ``raw`` (the channel, for heartbeats)."""

    def __init__(self, channel: Channel, peer_key: Optional[bytes] = None, session_id: Optional[bytes] = None) -> None:
        self._channel = channel
        self.raw = channel
        self.peer_key, self.session_id = peer_key, session_id
        try:
            self.local_host = channel.sock.getsockname()[0]
        except (OSError, AttributeError):
            self.local_host = None

    def send(self, message: Any) -> None:
        self._channel.send(FrameType.MESSAGE, message)

    def recv(self) -> Any:
        kind, value, _ = self._channel.recv()
        if kind == FrameType.STOP:
            return ("stop",)
        if kind != FrameType.MESSAGE:
            raise WireError(f"a worker program expected a message, got frame type {kind}")
        return value


@contextlib.contextmanager
def heartbeats(channel: Channel, interval: Optional[float]) -> Iterator[None]:
    """Send a HEARTBEAT frame every ``interval`` seconds (None: none) while the block runs, from
    a thread of its own, so the driver can tell a task busy in a long block function from a hung
    one. The last heartbeat is sent before the block's reply (the thread is joined first). A
    heartbeat the driver does not read within ``interval`` ends the heartbeats, not the task."""
    if not interval or interval <= 0:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                channel.send(FrameType.HEARTBEAT, None, time.monotonic() + interval)
            except (OSError, TimeoutError):
                return

    thread = threading.Thread(target=beat, name="sparkopt-resident-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def heartbeat_interval(timeout: float) -> float:
    """How often a folding task sends a heartbeat under a request deadline of ``timeout``
    seconds: four per deadline (one lost or late heartbeat is not a hang), at most every
    :data:`MAX_HEARTBEAT_SECONDS`."""
    return min(timeout / 4.0, MAX_HEARTBEAT_SECONDS)


def _peer_key(secret: bytes, session_id: bytes) -> bytes:
    """The key a session's tasks derive their task-to-task secrets from (sparkopt.engine.allreduce),
    never the session secret itself."""
    return hmac.new(secret, b"sparkopt-peers" + session_id, hashlib.sha256).digest()


def _error_value(exc: BaseException) -> tuple:
    return (type(exc).__name__, str(exc), traceback.format_exc())


def _serve(address: tuple[str, int], secret: bytes, session_id: bytes, functions: dict, connect_timeout: float,
           encrypted: bool = False, compression: Compression = Compression(), timed: bool = False,
           slow: Optional[dict] = None):
    """The barrier task body: hold the blocks, answer the driver's requests until told to stop.
    ``functions`` (digest -> block function or worker program), whether the channel is
    ``encrypted``, the ``compression`` of its passes, whether replies carry the blocks' timings
    (``timed``: ``(result, timing rows)``, sparkopt.engine.balance) and an injected slowness
    (``slow``: task -> factor its folds are stretched by; measurements only) arrive in this
    closure."""

    def run(tagged: Iterator[tuple[int, int, Any]]) -> Iterator[tuple[int, int]]:
        from pyspark import BarrierTaskContext

        context = BarrierTaskContext.get()
        tagged_blocks: dict[int, list] = {}
        for index, position, block in tagged:
            tagged_blocks.setdefault(index, []).append((position, block))
        # a shuffle may deliver blocks in any order: restore each partition's own order (a task
        # may hold some blocks of a partition: each keeps its position); the partitions
        # themselves are held (and folded) in index order
        held = [(index, sorted(tagged_blocks[index], key=lambda pair: pair[0])) for index in sorted(tagged_blocks)]
        del tagged_blocks
        rows = sum(b.n_rows for _, pairs in held for _, b in pairs)
        weight = float(sum(float(b.w.sum()) for _, pairs in held for _, b in pairs))
        exchange = TaskExchange(compression)       # this session's error-feedback state
        channel = _connect(address, secret, session_id, connect_timeout, encrypted)
        served = 0
        with task_threads(context.cpus()):     # BLAS threads for the whole session (sparkopt.engine.threads)
            try:
                channel.send(FrameType.HELLO, (context.partitionId(), context.attemptNumber(), [i for i, _ in held],
                                               int(rows), weight))
                while True:
                    try:
                        kind, request, _ = channel.recv()
                    except (EOFError, OSError):
                        break                             # the driver closed the session
                    if kind == FrameType.STOP:
                        break
                    try:
                        if kind == FrameType.RUN:
                            digest, config = request
                            fold = partial(_fold_held_over, held)
                            worker_channel = _WorkerChannel(channel, _peer_key(secret, session_id), session_id)
                            result = functions[digest](worker_channel, context.partitionId(), fold, config)
                        elif kind == FrameType.EVAL:
                            digest, payload, fraction, seed, beat = request
                            fn = functions[digest]
                            factor = (slow or {}).get(context.partitionId(), 1.0)
                            clock = [] if timed or factor > 1.0 else None
                            with heartbeats(channel, beat):
                                result = exchange.evaluate(fn, payload, fraction,
                                                           lambda value: fold_held(fn, value, held, fraction, seed, clock))
                                if factor > 1.0:      # an injected straggler (measurements): stretched folds
                                    time.sleep((factor - 1.0) * sum(clock))
                            if timed:
                                result = (result, block_timings(held, clock, factor))
                        else:
                            raise WireError(f"unexpected frame type {kind}")
                        try:
                            channel.send(FrameType.REPLY, result)
                        except TypeError as exc:  # the result cannot travel: say so instead
                            channel.send(FrameType.ERROR, (_UNCARRIABLE, f"map_sum: fn returned a result the "
                                                           f"channel cannot carry: {exc}", ""))
                    except (WireError, EOFError, OSError):
                        raise
                    except Exception as exc:  # noqa: BLE001 - reported to the driver, which raises it
                        channel.send(FrameType.ERROR, _error_value(exc))
                    served += 1
            finally:
                channel.close()
        yield context.partitionId(), served

    return run


def _fold_held_over(held: list, fn: BlockFn, payload: Any, fraction: float | None = None,
                    seed: int | None = None) -> Any:
    """A worker program's ``fold``: :func:`fold_held` over its task's blocks."""
    return fold_held(fn, payload, held, fraction, seed)


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


def listen(bind_host: str, port: int, max_retries: int, backlog: int) -> socket.socket:
    """A listening socket on ``bind_host`` at ``port`` (0: any free port), else at the next of
    ``max_retries`` successive ports (Spark's spark.port.maxRetries convention)."""
    if port == 0:
        return socket.create_server((bind_host, 0), backlog=backlog)
    error: Optional[OSError] = None
    for candidate in range(port, min(port + max_retries, 65535) + 1):
        try:
            return socket.create_server((bind_host, candidate), backlog=backlog)
        except OSError as exc:
            error = exc
    raise SessionLost(f"the resident engine found no free port in {port}-{min(port + max_retries, 65535)} on "
                      f"{bind_host} (spark.sparkopt.resident.port / portMaxRetries): {error}")


def executor_hosts(sc: Any, setting: Optional[Callable[..., Any]] = None) -> set[str]:
    """The host names (or addresses) of the application's executors and its driver, as Spark's
    status tracker knows them now, with ``spark.driver.host`` (read by ``setting(key, default)``,
    by default ``sc.getConf().get``)."""
    hosts = {info.host for info in sc.statusTracker().getExecutorInfos()}
    driver_host = (setting or sc.getConf().get)("spark.driver.host", None)
    if driver_host:
        hosts.add(driver_host)
    return {host for host in hosts if host}


def _normal_address(address: str) -> str:
    """``address`` as the listener's peers report it: scope dropped, IPv4-mapped IPv6 as IPv4."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def _resolve(host: str) -> set[str]:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        logger.debug("sparkopt resident engine: cannot resolve host %r (%s)", host, exc)
        return set()
    return {_normal_address(info[4][0]) for info in infos}


class PeerFilter:
    """Which peers may start a handshake: the IP addresses of the hosts ``hosts()`` names (the
    application's executors and driver, :func:`executor_hosts`) and of ``extra``. An address not
    among them looks ``hosts()`` up again (at most once per ``refresh_seconds``, so a flood of
    strangers costs one look-up a second), since executors can be added while a session runs.
    ``allow_any``: every peer passes (executors seen through NAT)."""

    def __init__(self, hosts: Callable[[], Iterable[str]], extra: Iterable[str] = (), allow_any: bool = False,
                 refresh_seconds: float = PEER_REFRESH_SECONDS) -> None:
        self._hosts = hosts
        self._extra = {h for h in extra if h}
        self.allow_any = bool(allow_any)
        self._refresh_seconds = refresh_seconds
        self._resolved: dict[str, set[str]] = {}
        self._names: set[str] = set()
        self.addresses: frozenset = frozenset()
        self._refreshed = -math.inf
        self._logged: set[str] = set()
        self.lookups = 0
        self._lock = threading.Lock()
        if not self.allow_any:
            self.refresh()

    def refresh(self) -> None:
        """Look the hosts up again; a host name is resolved once (the first time it is seen)."""
        with self._lock:
            self._refreshed = time.monotonic()
            self.lookups += 1
            try:
                names = {h for h in self._hosts() if h}
            except Exception as exc:  # noqa: BLE001 - keep the hosts known so far
                logger.warning("sparkopt resident engine: cannot list the application's executors (%s); "
                               "keeping the %d hosts known", exc, len(self._names))
                names = set(self._names)
            self._names = names | self._extra
            for name in self._names - self._resolved.keys():
                self._resolved[name] = _resolve(name)
            self.addresses = frozenset().union(*(self._resolved[n] for n in self._names))

    def allows(self, address: str) -> bool:
        if self.allow_any:
            return True
        address = _normal_address(address)
        if address in self.addresses:
            return True
        if time.monotonic() - self._refreshed >= self._refresh_seconds:
            self.refresh()
        return address in self.addresses

    def first_rejection(self, address: str) -> bool:
        """Whether ``address`` is rejected for the first time (its rejection is then logged)."""
        address = _normal_address(address)
        with self._lock:
            if address in self._logged or len(self._logged) >= _LOGGED_PEERS:
                return False
            self._logged.add(address)
            return True


def _valid_hello(value: Any, groups: int) -> bool:
    return (isinstance(value, tuple) and len(value) == 5 and isinstance(value[0], int) and 0 <= value[0] < groups
            and isinstance(value[1], int) and isinstance(value[2], list)
            and all(isinstance(p, int) for p in value[2]) and isinstance(value[3], int)
            and isinstance(value[4], float))


class _Session:
    """One barrier job and the driver's end of its channel."""

    link: Optional[Link] = None     # the throttled link model (sparkopt.engine.link), if any
    timed = False                   # whether replies carry the blocks' timings

    def __init__(self, tagged: Any, groups: int, *, host: str, bind_host: str, port: int, port_retries: int,
                 start_timeout: float, connect_timeout: float, functions: dict, peers: PeerFilter,
                 encrypted: bool = False,
                 max_pending_handshakes: int = MAX_PENDING_HANDSHAKES,
                 handshake_timeout: float = HANDSHAKE_SECONDS, compression: Compression = Compression(),
                 link: Optional[LinkModel] = None, timed: bool = False, slow: Optional[dict] = None) -> None:
        self.id = secrets.token_bytes(SESSION_ID_BYTES)
        self.link = None if link is None else Link(link)
        self.timed = bool(timed)
        self.timings: dict[int, Any] = {}                  # group -> timing rows of the last pass
        self.groups = groups
        self.functions = frozenset(functions)
        self._secret = secrets.token_bytes(32)
        self._handshake_timeout = handshake_timeout
        self._max_pending = max_pending_handshakes
        self._peers = peers
        self.encrypted = bool(encrypted)
        self._server = listen(bind_host, port, port_retries, backlog=max(64, 2 * groups))
        self._server.settimeout(0.2)
        self.address = (host, self._server.getsockname()[1])
        self._closing = threading.Event()
        self._lock = threading.Condition()
        self._handshaking: set = set()                     # raw sockets in the handshake
        self._pending: list[tuple[Channel, tuple]] = []
        self.rejected = 0
        self.strangers = 0                                 # rejected as not an application host
        self.heartbeats = 0                                # heartbeat frames received
        self.connections: dict[int, Channel] = {}          # group index -> channel
        self.workers: dict[int, dict] = {}                 # group index -> partitions, rows, weight
        self.job_error: Optional[BaseException] = None
        self._job_done = threading.Event()
        self._job_group = f"sparkopt-resident-{self.id.hex()}"
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"{self._job_group}-accept", daemon=True)
        self._acceptor.start()
        self._launch(tagged, _serve(self.address, self._secret, self.id, functions, connect_timeout, self.encrypted,
                                    compression, self.timed, slow))
        try:
            self._await_tasks(start_timeout)
        except BaseException:
            self.close(hung=True)
            raise

    # -- the barrier job
    def _launch(self, tagged: Any, serve: Callable) -> None:
        """Start the barrier job whose tasks run ``serve`` over ``tagged`` (the RDD of
        (partition, position, block) records), in a thread of its own."""
        from pyspark import InheritableThread

        self._sc = tagged.context
        job = tagged.barrier().mapPartitions(serve)

        def collect() -> None:
            self._sc.setJobGroup(self._job_group, "sparkopt resident engine", interruptOnCancel=True)
            job.collect()

        self._run_job(collect, InheritableThread)

    def _run_job(self, collect: Callable[[], Any], thread_class: Any = threading.Thread) -> None:
        """Run ``collect`` (the barrier job's action) in a daemon thread; its error is kept in
        ``job_error`` and its end sets ``_job_done``."""

        def run_job() -> None:
            try:
                collect()
            except BaseException as exc:  # noqa: BLE001 - kept for the driver thread to report
                self.job_error = exc
            finally:
                self._job_done.set()
                with self._lock:
                    self._lock.notify_all()

        self._job = thread_class(target=run_job, name=f"{self._job_group}-job", daemon=True)
        self._job.start()

    def _cancel(self) -> None:
        """Cancel the barrier job (its tasks are killed)."""
        self._sc.cancelJobGroup(self._job_group)

    # -- connections
    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                raw, peer = self._server.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            if not self._peers.allows(peer[0]):
                self._reject_stranger(raw, peer)
                continue
            with self._lock:
                full = len(self._handshaking) >= self._max_pending
                if not full:
                    self._handshaking.add(raw)
            if full:
                self._reject(raw, peer, f"{self._max_pending} handshakes already pending")
                continue
            threading.Thread(target=self._handshake, args=(raw, peer), daemon=True,
                             name=f"{self._job_group}-handshake").start()

    def _reject(self, raw: socket.socket, peer: Any, why: str) -> None:
        self.rejected += 1
        level = logging.WARNING if self.rejected <= 5 else logging.DEBUG
        logger.log(level, "sparkopt resident engine: rejected a connection from %s (%s)", peer, why)
        with contextlib.suppress(OSError):
            raw.close()

    def _reject_stranger(self, raw: socket.socket, peer: Any) -> None:
        """Close a connection from outside the application's hosts before reading a byte of it."""
        self.rejected += 1
        self.strangers += 1
        level = logging.WARNING if self._peers.first_rejection(peer[0]) else logging.DEBUG
        logger.log(level, "sparkopt resident engine: rejected a connection from %s: not a host of this "
                   "application's executors or driver (spark.sparkopt.resident.allowedHosts adds hosts)", peer[0])
        with contextlib.suppress(OSError):
            raw.close()

    def _handshake(self, raw: socket.socket, peer: Any) -> None:
        """Authenticate one connection and read its hello, all within one deadline."""
        deadline = time.monotonic() + self._handshake_timeout
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            channel = server_handshake(raw, self._secret, self.id, deadline, self.encrypted)
            kind, hello, _ = channel.recv(deadline)
            if kind != FrameType.HELLO or not _valid_hello(hello, self.groups):
                raise WireError("the first frame is not a valid hello")
        except (OSError, EOFError, WireError) as exc:
            with self._lock:
                self._handshaking.discard(raw)
            if not self._closing.is_set():
                self._reject(raw, peer, f"{type(exc).__name__}: {exc}")
            else:
                with contextlib.suppress(OSError):
                    raw.close()
            return
        with self._lock:
            self._handshaking.discard(raw)
            if self._closing.is_set():
                channel.close()
                return
            self._pending.append((channel, hello))
            self._lock.notify_all()

    def _await_tasks(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for channel, hello in self._pending:
                    group, _attempt, parts, rows, weight = hello
                    if group in self.connections:
                        channel.close()
                        continue
                    self.connections[group] = channel
                    self.workers[group] = {"partitions": list(parts), "rows": int(rows), "weight": float(weight)}
                self._pending.clear()
                if len(self.connections) == self.groups:
                    return
                if self._job_done.is_set():
                    if _UNREACHABLE in str(self.job_error):
                        raise DriverUnreachable(f"{_brief(self.job_error)}")
                    raise SessionLost(f"the resident job ended before its tasks connected: {_brief(self.job_error)}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SessionLost(
                        f"only {len(self.connections)} of {self.groups} resident tasks started within {timeout:g} s "
                        "(are other jobs holding the task slots?); use engine='tree'")
                self._lock.wait(min(remaining, 0.5))

    # -- messages
    def _send(self, group: int, kind: int, value: Any, deadline: float) -> int:
        try:
            return self.connections[group].send(kind, value, deadline)
        except TimeoutError as exc:
            raise SessionLost(f"resident task {group} does not read its channel (request deadline; hung?)") from exc
        except OSError as exc:
            raise SessionLost(f"resident task {group} is gone ({exc})") from exc

    def _incoming(self, waiting: dict, timeout: float, *, per_task: bool = False,
                  cap: Optional[float] = None) -> Iterator[tuple[int, int, Any, int]]:
        """(group, frame type, value, bytes) as the tasks send them (heartbeats included), while
        ``waiting`` (channel -> group; the caller removes the tasks it no longer waits for) is not
        empty. Lost session: a closed socket, a bad frame, a failed job, ``timeout`` seconds of
        silence (``per_task``: of any one task, measured from its last frame, so one task's
        heartbeats cannot cover another's hang; else of all the tasks together), or ``cap``
        seconds in all however alive the tasks are."""
        start = time.monotonic()
        heard = {channel: start for channel in waiting}
        hard = math.inf if cap is None else start + cap
        while waiting:
            now = time.monotonic()
            if now >= hard:
                raise SessionLost(f"resident task(s) {sorted(waiting.values())} still busy after the hard cap of "
                                  f"{cap:.3g} s per request (heartbeats but no reply: deadlocked or far too slow?)")
            silent = sorted(waiting[c] for c in waiting if now - heard[c] >= timeout)
            if silent:
                raise SessionLost(f"resident task(s) {silent} missed the request deadline of {timeout:.3g} s "
                                  "(no reply and no heartbeat: hung or stopped?)")
            until = min(min(heard[c] for c in waiting) + timeout, hard)
            ready, _, _ = select.select(list(waiting), [], [], max(min(until - now, 1.0), 0.0))
            if not ready and self._job_done.is_set():
                raise SessionLost(f"the resident job failed: {_brief(self.job_error)}")
            for channel in ready:
                group = waiting[channel]
                try:
                    kind, value, size = channel.recv(min(heard[channel] + timeout, hard))
                except TimeoutError as exc:
                    raise SessionLost(f"resident task {group} missed the request deadline of {timeout:.3g} s "
                                      "mid-frame") from exc
                except WireError as exc:
                    logger.warning("sparkopt resident engine: dropped a bad frame from task %d (%s)", group, exc)
                    raise SessionLost(f"resident task {group} sent a bad frame ({exc})") from exc
                except (EOFError, OSError) as exc:
                    raise SessionLost(f"resident task {group} closed its channel") from exc
                if kind not in (FrameType.REPLY, FrameType.ERROR, FrameType.MESSAGE, FrameType.HEARTBEAT):
                    raise SessionLost(f"resident task {group} sent an unexpected frame type {kind}")
                if self.link is not None:
                    self.link.incoming(size)
                now = time.monotonic()
                for other in ([channel] if per_task else heard):
                    heard[other] = now
                if kind == FrameType.HEARTBEAT:
                    self.heartbeats += 1
                yield group, kind, value, size

    def evaluate(self, digest: bytes, payload: Any, fraction: Any, seed: Any, timeout: float,
                 cap: Optional[float] = None,
                 combine: Optional[Callable[[list], Any]] = None) -> tuple[Any, int, int]:
        """Send the request to every task and sum their replies in group order; (sum, bytes
        sent, bytes received). A task may stay silent ``timeout`` seconds; while it folds it sends
        a heartbeat every :func:`heartbeat_interval` seconds, each of which gives it ``timeout``
        more, up to ``cap`` seconds in all. ``combine([(group, reply), ...])`` (in group order)
        replaces the plain sum (compressed replies are decoded task by task)."""
        deadline = time.monotonic() + timeout
        beat = heartbeat_interval(timeout)
        request = (digest, payload, fraction, seed, beat)
        arrivals = None
        if self.link is not None:
            try:
                size = frame_bytes(request, self.encrypted)
            except TypeError as exc:
                raise _Uncarriable(f"its payload cannot travel on the channel: {exc}") from exc
            arrivals = dict(zip(self.connections, self.link.schedule([size] * len(self.connections))))
        sent = 0
        for group in self.connections:
            if arrivals is not None:
                self.link.wait_until(arrivals[group])
            try:
                sent += self._send(group, FrameType.EVAL, request, deadline)
            except TypeError as exc:    # raised while encoding, before any byte left: the session is intact
                raise _Uncarriable(f"its payload cannot travel on the channel: {exc}") from exc
        received = 0
        replies: dict[int, tuple] = {}
        waiting = {channel: group for group, channel in self.connections.items()}
        for group, kind, value, size in self._incoming(waiting, timeout, per_task=True, cap=cap):
            received += size
            if kind == FrameType.HEARTBEAT:
                continue
            if kind == FrameType.MESSAGE:
                raise SessionLost(f"resident task {group} sent a worker message to a pass")
            del waiting[self.connections[group]]
            replies[group] = (kind, value)
        # every task has answered (so the next request gets fresh replies) before an error is raised
        for kind, value in replies.values():
            if kind == FrameType.ERROR:
                raise _task_error(value)
        if self.timed:
            for group, (kind, value) in list(replies.items()):
                if not (isinstance(value, tuple) and len(value) == 2):
                    raise SessionLost(f"resident task {group} sent a reply without its timings")
                self.timings[group] = value[1]
                replies[group] = (kind, value[0])
        if combine is not None:
            return combine([(group, replies[group][1]) for group in sorted(replies)]), sent, received
        acc = None
        for group in sorted(replies):
            acc = add_results(acc, replies[group][1])
        return acc, sent, received

    def run(self, digest: bytes, config: Any, server: Any, timeout: float) -> tuple[list, int, int]:
        """Start a worker program on every task and route its messages through ``server`` until
        every task's program has returned; (summaries in group order, bytes sent, bytes received).
        ``timeout``: the longest silence of all the tasks together."""
        groups = sorted(self.connections)
        server.start([self.workers[g] for g in groups])
        index_of = {g: i for i, g in enumerate(groups)}
        sent, received = 0, 0
        for group in groups:
            sent += self._send(group, FrameType.RUN, (digest, config), time.monotonic() + timeout)
        summaries: dict[int, Any] = {}
        waiting = {channel: group for group, channel in self.connections.items()}
        for group, kind, value, size in self._incoming(waiting, timeout):
            received += size
            if kind == FrameType.HEARTBEAT:
                continue
            if kind == FrameType.ERROR:
                raise _task_error(value)
            if kind == FrameType.REPLY:
                summaries[group] = value
                del waiting[self.connections[group]]
                continue
            for target, reply in server.handle(index_of[group], value):
                sent += self._send(groups[target], FrameType.MESSAGE, reply, time.monotonic() + timeout)
        return [summaries[g] for g in groups], sent, received

    def close(self, hung: bool = False) -> None:
        """Stop the tasks, end the job, release the socket and threads (idempotent). ``hung``:
        a task may not answer, so cancel the job rather than wait for it."""
        if self._closing.is_set():
            return
        self._closing.set()
        for channel in self.connections.values():
            with contextlib.suppress(Exception):
                channel.send(FrameType.STOP, None, time.monotonic() + 1.0)
        for channel in self.connections.values():
            channel.close()
        with self._lock:
            for channel, _ in self._pending:
                channel.close()
            self._pending.clear()
            for raw in list(self._handshaking):       # ends their threads now, not at their deadline
                with contextlib.suppress(OSError):
                    raw.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self._acceptor.join(5.0)
        # tasks that never connected (or hang) are cancelled rather than waited for
        if not self._job_done.wait(0.5 if hung or not self.connections else 10.0):
            self._cancel()
            self._job_done.wait(30.0)
        self._job.join(5.0)


class _Uncarriable(TaskError):
    """A pass's payload or result is not a channel value (e.g. a dataclass): the pass runs as a
    tree job."""


def _task_error(value: Any) -> TaskError:
    name, text, trace = value if isinstance(value, tuple) and len(value) == 3 else ("?", repr(value), "")
    if name == _UNCARRIABLE:
        return _Uncarriable(text)
    return TaskError(f"{name}: {text}\n--- task traceback ---\n{trace}")


def _brief(exc: Optional[BaseException]) -> str:
    if exc is None:
        return "no error reported"
    text = str(exc).strip().splitlines()
    for line in text:
        if _UNREACHABLE in line:
            return line[line.index(_UNREACHABLE):][:400]
    for line in text:
        if "Exception" in line or "Error" in line or "failed" in line:
            return line[:300]
    return text[0][:300] if text else type(exc).__name__


#: Spark settings that turn on encryption of its own network traffic (Spark's security guide:
#: TLS for RPC, AES-based RPC encryption, the legacy SASL encryption)
SPARK_NETWORK_ENCRYPTION = ("spark.ssl.rpc.enabled", "spark.network.crypto.enabled",
                            "spark.authenticate.enableSaslEncryption")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


def _conf_bool(get: Callable[..., Any], key: str) -> bool:
    raw = get(key, None)
    text = "" if raw is None else str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InputError(f"{key} must be true or false, got {raw!r}")


def channel_encrypted(get: Callable[..., Any]) -> bool:
    """Whether the resident channel encrypts its frames, from the application's settings
    (``get(key, default)``, e.g. ``SparkConf.get``): when Spark encrypts its own network (any of
    :data:`SPARK_NETWORK_ENCRYPTION`; the secret rides in the task closure, which only such a
    network protects), or when ``spark.sparkopt.resident.encrypt`` asks for it. There is no
    setting that turns it off while Spark encrypts."""
    spark_encrypts = [key for key in SPARK_NETWORK_ENCRYPTION if _conf_bool(get, key)]
    return bool(spark_encrypts) or _conf_bool(get, "spark.sparkopt.resident.encrypt")


def _conf_int(get: Callable[..., Any], key: str, default: int) -> int:
    """The integer setting ``key`` (a port) from ``get(key, default)`` (e.g. ``SparkConf.get``)."""
    raw = get(key, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"{key} must be an integer, got {raw!r}") from None
    if value < 0 or value > 65535:
        raise InputError(f"{key} must be in 0..65535, got {value}")
    return value


class ResidentEngine(TreeEngine):
    """Evaluate sums over a persisted ``RDD[Block]`` whose blocks stay in the tasks' memory.

    Same contract and numbers as :class:`TreeEngine` (the fold per partition is the same code;
    partition sums are added in partition order). ``max_restarts`` bounds how many times a lost
    session is restarted during one fit; ``start_timeout`` is how long to wait for all tasks to
    connect, ``connect_timeout`` how long a task keeps trying to reach the driver;
    ``request_timeout`` (None: max(30 s, 20 x the median pass so far)) how long a task may stay
    silent in a pass before its session counts as lost: a task folding a long block function
    sends heartbeats (4 per deadline, at most 5 s apart), each of which restarts its deadline, up
    to ``max_request_time`` seconds per pass (None: 10 request deadlines). ``host`` (advertised to the tasks) defaults to
    ``spark.driver.host``, ``bind_host`` to ``spark.driver.bindAddress`` (else ``host``), ``port``
    to ``spark.sparkopt.resident.port`` (0: any). ``fallback``: when the tasks cannot reach the
    driver, run the passes as the tree engine does (``engine="auto"``) instead of failing."""

    kind = "resident"
    # one round trip on the channel (README: 0.1 - 0.2 ms per iteration)
    pass_overhead = 2e-4

    def __init__(self, blocks_rdd: Any, stats: DataStats, depth: int = 2, *, max_restarts: int = 3,
                 start_timeout: float = 120.0, connect_timeout: float = 10.0,
                 request_timeout: Optional[float] = None, host: Optional[str] = None,
                 bind_host: Optional[str] = None, port: Optional[int] = None, fallback: bool = False,
                 max_request_time: Optional[float] = None, compression: Any = "none",
                 compression_ratio: Any = None, link: Any = None, balance: Optional[bool] = None,
                 balance_threshold: float = 1.2, inject_slowness: Optional[dict] = None) -> None:
        super().__init__(blocks_rdd, stats, depth)
        if balance is None:
            balance = _conf_bool(self._setting, "spark.sparkopt.resident.balance")
        if isinstance(balance_threshold, bool) or not isinstance(balance_threshold, (int, float)) \
                or not balance_threshold >= 1.0:
            raise InputError(f"balance_threshold must be a number >= 1 (max / median task time), got "
                             f"{balance_threshold!r}")
        self.balance = bool(balance)
        self.balance_threshold = float(balance_threshold)
        self.inject_slowness = dict(inject_slowness or {})
        self._balancer: Optional[Balancer] = None
        self._assignment: Optional[dict] = None
        self.compression = Compression.of(compression, compression_ratio)
        self._exchange = DriverExchange(self.compression)
        self.link = parse_link(link if link is not None else self._setting("spark.sparkopt.resident.link", None))
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise InputError(f"max_restarts must be an integer >= 0, got {max_restarts!r}")
        for name, value in (("start_timeout", start_timeout), ("connect_timeout", connect_timeout),
                            ("request_timeout", 1.0 if request_timeout is None else request_timeout),
                            ("max_request_time", 1.0 if max_request_time is None else max_request_time)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InputError(f"{name} must be a number of seconds > 0, got {value!r}")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535):
            raise InputError(f"port must be an integer in 0..65535, got {port!r}")
        self.max_restarts = max_restarts
        self.start_timeout = float(start_timeout)
        self.connect_timeout = float(connect_timeout)
        self.request_timeout = None if request_timeout is None else float(request_timeout)
        self.max_request_time = None if max_request_time is None else float(max_request_time)
        self.fallback = bool(fallback)
        self.fallback_reason: Optional[str] = None
        self._host, self._bind_host, self._port = host, bind_host, port
        self._session: Optional[_Session] = None
        self._peers: Optional[PeerFilter] = None
        self._regrouped: dict[Any, Any] = {}    # groups or a block assignment -> the regrouped records
        self._functions: collections.OrderedDict = collections.OrderedDict()   # digest -> function
        # block functions whose payload or result the channel cannot carry (nothing on it is ever
        # unpickled): their passes run as tree-engine jobs over the same blocks, same numbers
        self._tree_passes: set[bytes] = set()
        self._pass_seconds: collections.deque = collections.deque(maxlen=101)
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
        slots by one shuffle (barrier stages refuse ``coalesce``), balanced by rows. With a
        block assignment of the balancer, blocks go where it says (one shuffle too). The shuffle
        output is kept by Spark, so later sessions of this engine skip it."""
        tagged = self._rdd.mapPartitionsWithIndex(_tag_blocks)
        if self._assignment is not None:
            key = tuple(sorted(self._assignment.items()))
            if key not in self._regrouped:
                assignment = dict(self._assignment)
                self._regrouped[key] = (tagged.map(lambda record: (assignment[(record[0], record[1])], record))
                                        .partitionBy(groups, lambda target: target).values())
            return self._regrouped[key]
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

    #: the session kind this engine starts (the Spark Connect engine's differs in its job only)
    _session_class = _Session
    #: whether the balancer may regroup blocks onto tasks (engines whose tasks read their own
    #: partitions cannot)
    _balances = True

    def _setting(self, key: str, default: Any = None) -> Any:
        """A Spark setting of the application (``SparkConf.get``), from one copy of the settings
        per engine: each ``SparkContext.getConf()`` copies every entry through py4j (~20 ms,
        over a hundred calls), and starting a session asks a dozen times (0.25-0.33 s of a
        cold fit measured before). The settings of a running application do not change."""
        conf = self.__dict__.get("_spark_conf")
        if conf is None:
            conf = self._spark_conf = self._rdd.context.getConf()
        return conf.get(key, default)

    def _slots(self) -> int:
        """How many tasks can run at once (:func:`task_slots`)."""
        return task_slots(self._rdd.context)

    def _addresses(self) -> tuple[str, str]:
        """(host advertised to the tasks, host the listener binds): ``spark.driver.host`` and
        ``spark.driver.bindAddress`` unless given."""
        host = self._host or self._setting("spark.driver.host", "127.0.0.1")
        return host, self._bind_host or self._setting("spark.driver.bindAddress", None) or host

    def _known_hosts(self) -> set[str]:
        """The hosts the listener accepts connections from (looked up again for unknown peers)."""
        return executor_hosts(self._rdd.context, self._setting)

    def _groups(self) -> int:
        """How many barrier tasks a session runs: one per partition, or the task slots."""
        return min(self.num_partitions, max(self._slots(), 1))

    def _start(self) -> _Session:
        get = self._setting
        groups = self._groups()
        if self.balance and self._balancer is None:
            if self._balances:
                self._balancer = Balancer(max(self._slots(), 1), threshold=self.balance_threshold)
            else:
                self.balance = False
                logger.info("sparkopt: %s loads one partition per task and does not move blocks between "
                            "tasks: balance ignored", type(self).__name__)
        if self._assignment is not None:
            groups = self._balancer.groups
        host, bind_host = self._addresses()
        port = self._port if self._port is not None else _conf_int(get, "spark.sparkopt.resident.port", 0)
        retries = _conf_int(get, "spark.sparkopt.resident.portMaxRetries", 16)
        session = self._session_class(self._tagged(groups), groups, host=host, bind_host=bind_host, port=port,
                                      port_retries=retries, start_timeout=self.start_timeout,
                                      connect_timeout=self.connect_timeout, functions=dict(self._functions),
                                      peers=self._peer_filter(host), encrypted=channel_encrypted(get),
                                      compression=self.compression, link=self.link, timed=self.balance,
                                      slow=self.inject_slowness)
        self.sessions_started += 1
        if self._balancer is not None:
            self._balancer.new_session()
        # the tasks of a new session hold no error-feedback state: both ends start from key frames
        self._exchange.reset(f"session {self.sessions_started} started")
        logger.info("sparkopt resident engine: %d tasks hold %d partitions (frames %s)", groups, self.num_partitions,
                    "encrypted" if session.encrypted else "authenticated, not encrypted")
        return session

    def _peer_filter(self, host: str) -> PeerFilter:
        """The engine's one filter (its host look-ups kept across sessions): the application's
        executors and driver, the advertised ``host``, and ``spark.sparkopt.resident.allowedHosts``."""
        if self._peers is None:
            extra = [h.strip() for h in str(self._setting("spark.sparkopt.resident.allowedHosts", "")).split(",")]
            allow_any = "*" in extra
            self._peers = PeerFilter(self._known_hosts, extra=[h for h in extra if h != "*"] + [host],
                                     allow_any=allow_any)
        return self._peers

    def register_functions(self, fns: Any) -> None:
        """Block functions (or worker programs) later requests will use: a session ships them in
        its task closure, so asking for them later needs no new session."""
        for fn in fns:
            self._digest(fn)

    def _digest(self, fn: Any) -> bytes:
        from pyspark import cloudpickle

        digest = hashlib.sha256(cloudpickle.dumps(fn)).digest()[:16]
        self._functions[digest] = fn
        self._functions.move_to_end(digest)
        while len(self._functions) > _FUNCTION_TABLE_SIZE:
            self._functions.popitem(last=False)
        return digest

    def _session_for(self, digest: bytes) -> _Session:
        """The running session if it holds the function ``digest`` names, else a new one."""
        if self._session is not None and digest not in self._session.functions:
            logger.info("sparkopt resident engine: a new block function; starting a session that ships it")
            self.close()
        if self._session is None:
            self._session = self._start()
        return self._session

    def _timeout(self) -> float:
        if self.request_timeout is not None:
            return self.request_timeout
        if not self._pass_seconds:
            return max(30.0, self.start_timeout)
        return max(30.0, 20.0 * statistics.median(self._pass_seconds))

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

    def close(self, hung: bool = False) -> None:
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close(hung=hung)

    def unpersist(self) -> None:
        self.close()
        super().unpersist()

    def _fall_back(self, exc: DriverUnreachable) -> None:
        self.fallback_reason = str(exc)
        self.kind = "tree"
        self.pass_overhead = TreeEngine.pass_overhead
        logger.warning("sparkopt: engine='auto' falls back to the tree engine: %s", exc)

    def _pass_as_tree_job(self, digest: bytes, fn: Any, why: str) -> None:
        # a session holds every task slot, so a tree job could never start beside it; every
        # reply has been read, and the next resident pass starts a new session
        self.close()
        self._tree_passes.add(digest)
        logger.info("sparkopt resident engine: passes of %s run as tree-engine jobs (%s)",
                    getattr(fn, "__qualname__", repr(fn)), why)

    # -- the fold
    def _tree_pass(self, fn: BlockFn, payload: Any, fraction: Any, seed: Any) -> Any:
        """A pass as the tree engine runs it over the same blocks (the fallback, and the passes
        the channel cannot carry)."""
        return TreeEngine.map_sum(self, fn, payload, fraction=fraction, seed=seed)

    def map_sum(self, fn: BlockFn, payload: Any, *, fraction: float | None = None, seed: int | None = None) -> Any:
        fraction, seed = check_sampling(fraction, seed)
        if self.fallback_reason is not None:
            return self._tree_pass(fn, payload, fraction, seed)
        failures: list[str] = []
        with self._lock:
            digest = self._digest(fn)
            if digest in self._tree_passes:
                return self._tree_pass(fn, payload, fraction, seed)
            while True:
                try:
                    session = self._session_for(digest)
                    start = time.monotonic()
                    timeout = self._timeout()
                    cap = self.max_request_time or REQUEST_CAP_DEADLINES * timeout
                    request, combine = payload, None
                    if self._exchange.applies(fn, fraction):
                        request = self._exchange.outgoing(fn, payload)
                        combine = partial(self._exchange.combine, fn)
                    result, sent, received = session.evaluate(digest, request, fraction, seed, timeout, cap, combine)
                    self._pass_seconds.append(time.monotonic() - start)
                    if self._balancer is not None:
                        self._rebalance(session)
                    break
                except DriverUnreachable as exc:
                    self.close(hung=True)
                    if not self.fallback:
                        raise
                    self._fall_back(exc)
                    return self._tree_pass(fn, payload, fraction, seed)
                except SessionLost as exc:
                    failures.append(str(exc))
                    self.close(hung=True)
                    if len(failures) > self.max_restarts:
                        raise SessionLost(
                            f"resident engine gave up after {len(failures)} lost sessions: " + " | ".join(failures)
                        ) from exc
                    self.restarts += 1
                    logger.warning("sparkopt resident engine: %s; restarting the session (%d/%d)",
                                   exc, self.restarts, self.max_restarts)
                except _Uncarriable as exc:
                    self._pass_as_tree_job(digest, fn, str(exc))
                    return self._tree_pass(fn, payload, fraction, seed)
                except TaskError:
                    # the tasks that answered moved their error-feedback state, unread here
                    self._exchange.reset("a task raised during a pass")
                    if self._depth_open == 0:   # every reply was read: the session can go on
                        self.close()
                    raise
                except BaseException:
                    self.close(hung=True)       # interrupted mid-request: replies may be pending
                    raise
            if self._depth_open == 0:
                self.close()      # no session() block: one request, one session
        return self._pass_result(result, fraction, sent, received)

    def refresh_exchange(self, reason: str) -> None:
        self._exchange.reset(reason)

    def _rebalance(self, session: _Session) -> None:
        """After a timed pass: record the blocks' costs and the tasks' times; when the balancer
        proposes another assignment, end this session (the next pass starts one that holds the
        blocks as proposed)."""
        balancer = self._balancer
        balancer.observe(session.timings)
        proposal = balancer.propose(first=balancer.regroupings == 0 and balancer.passes_since == 1)
        if proposal is None:
            return
        times = balancer.history[-1]["task_seconds"]
        balancer.adopt(proposal, "task seconds " + ", ".join(f"{g}: {t:.3g}" for g, t in sorted(times.items())))
        self._assignment = proposal
        self.close()

    @property
    def balancer(self) -> Optional[Balancer]:
        """The load balancer's record (None unless ``balance``)."""
        return self._balancer

    def run_workers(self, worker_fn: Any, config: Any, server: Any) -> list:
        """Run ``worker_fn(channel, worker_index, fold, config)`` in every resident task at once
        (``fold(fn, payload, fraction, seed)`` sums over the task's own partitions;
        ``channel.send/recv`` talk to the driver; messages and ``config`` are plain values and
        numpy arrays, see sparkopt.engine.wire). Every message a worker sends goes to
        ``server.handle(worker, message)``, which returns the ``[(worker, reply), ...]`` to send;
        ``server.start(workers)`` is called first with each worker's partitions, rows and weight.
        Returns the workers' return values.

        A worker program keeps state between messages, so a lost task cannot be replayed: a
        lost session (a dead task, or all tasks silent for the request deadline) raises
        :class:`SessionLost` (the caller still holds its driver-side state)."""
        if self.fallback_reason is not None:
            return super().run_workers(worker_fn, config, server)
        with self._lock:
            try:
                digest = self._digest(worker_fn)
                session = self._session_for(digest)
                summaries, sent, received = session.run(digest, config, server, self._timeout())
            except DriverUnreachable as exc:
                self.close(hung=True)
                if self.fallback:
                    self._fall_back(exc)
                # not a lost worker to start again: the next session cannot connect either
                raise RuntimeError(f"worker programs need the resident engine: {exc}") from exc
            except BaseException:
                self.close(hung=True)      # a half-run program leaves the tasks in an unknown state
                raise
            if self._depth_open == 0:
                self.close()
        self.bytes_sent += sent
        self.bytes_received += received
        return summaries

    def __repr__(self) -> str:
        return (f"ResidentEngine(n_rows={self.n_rows}, n_features={self.n_features}, "
                f"num_partitions={self.num_partitions}, active={self.active})")
