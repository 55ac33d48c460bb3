"""The sharded engine: the resident engine's tasks also hold a shard of every model-sized vector.

For models larger than the driver (d x K coefficients beyond a driver budget). A sharded session
is one worker program (:meth:`ResidentEngine.run_workers`: the barrier job, the authenticated
channel, heartbeats, the lost-session rules) in which every task

* keeps its data blocks, as in the resident engine;
* joins a mesh of authenticated task-to-task channels (sparkopt.engine.allreduce: keys derived per
  pair from the session's secret, which reaches the task in its closure, never on a channel);
* holds one contiguous range (its shard) of every named vector, and serves *commands* from the
  driver with a *shard handler* (the objective layer's code, shipped in the closure like a block
  function): vector programs on its shard, and passes over the data whose gradients are
  AllReduced among the tasks (ring reduce-scatter: each task keeps its own shard of the sum).

The driver sends a command and receives one small reply per task (scalars); it never holds a
shard. The engine knows nothing of losses or solvers: a handler is any object with
``setup(context, config)`` and ``handle(context, command) -> reply`` (plain values).

Faults: a lost task ends the barrier job and every task's shards with it; the session raises
:class:`~sparkopt.engine.resident.SessionLost` and the caller starts a new session and restores
the shards from its last checkpoint (see sparkopt.sharded_objective).
"""
from __future__ import annotations

import logging
import queue
import secrets
import threading
from typing import Any, Optional

from ..errors import InputError
from .allreduce import Mesh, MeshError, connect_mesh, open_listener
from .resident import ResidentEngine, SessionLost, TaskError, heartbeat_interval, heartbeats

__all__ = ["ShardedEngine", "ShardSession", "ShardContext", "shard_worker", "open_local_shards"]

logger = logging.getLogger("sparkopt")

#: how long the tasks of a new sharded session may take to connect to each other
MESH_SECONDS = 60.0


class ShardContext:
    """What a shard handler sees in its task: ``rank`` and ``size`` (the shard index and the number
    of tasks), ``mesh`` (collectives with the other tasks), ``fold(fn, payload)`` (a sum over the
    task's own blocks, as in :func:`~sparkopt.engine.fold.fold_over`) and ``state`` (a dict the
    handler keeps its shards in)."""

    def __init__(self, rank: int, size: int, mesh: Mesh, fold: Any) -> None:
        self.rank, self.size, self.mesh, self.fold = rank, size, mesh, fold
        self.state: dict = {}


class _ShardWorker:
    """The worker program of a sharded session (runs in every task): join the mesh, then serve
    commands with ``handler`` until the driver says stop."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    def __call__(self, channel: Any, index: int, fold: Any, config: dict) -> Any:
        timeout = float(config["timeout"])
        key = getattr(channel, "peer_key", None) or config.get("local_peer_key")
        session_id = getattr(channel, "session_id", None) or config.get("local_session_id")
        if not key or not session_id:
            raise RuntimeError("a sharded session needs a peer key (the resident engine's closure)")
        host = getattr(channel, "local_host", None) or "127.0.0.1"
        listener = open_listener(host)
        channel.send(("address", host, int(listener.getsockname()[1])))
        message = channel.recv()
        if message[0] != "peers":
            listener.close()
            return ("stopped",)
        _, rank, size, addresses = message
        raw = getattr(channel, "raw", None)
        mesh = connect_mesh(rank, size, [tuple(a) for a in addresses], listener, key, session_id, MESH_SECONDS,
                            bool(getattr(raw, "encrypted", False)))
        mesh.timeout = timeout
        context = ShardContext(rank, size, mesh, fold)
        served = 0
        try:
            self.handler.setup(context, config["handler"])
            channel.send(("ready", rank))
            while True:
                command = channel.recv()
                if command[0] == "stop":
                    break
                try:
                    with heartbeats(raw, heartbeat_interval(timeout) if raw is not None else None):
                        reply = ("reply", self.handler.handle(context, command[1]))
                except MeshError:
                    raise                   # a peer is gone: the session is lost
                except Exception as exc:  # noqa: BLE001 - the command failed, the shards are intact
                    reply = ("failed", type(exc).__name__, str(exc)[:2000])
                channel.send(reply + (mesh.bytes_sent, mesh.bytes_received))
                served += 1
        finally:
            mesh.close()
        return ("served", served)


def shard_worker(handler: Any) -> _ShardWorker:
    """The worker program that runs ``handler`` in every task of a sharded session (register it
    with the engine before the session starts, so the session ships it)."""
    return _ShardWorker(handler)


class _Bridge:
    """The run_workers server of a sharded session: hands each command to every task and every
    round of replies back to the driver thread that waits for them."""

    def __init__(self, session: "ShardSession") -> None:
        self.session = session
        self.addresses: dict[int, tuple] = {}
        self.replies: dict[int, Any] = {}

    def start(self, workers: list) -> None:
        self.session.workers = list(workers)
        self.session.size = len(workers)

    def handle(self, worker: int, message: Any) -> list:
        kind = message[0]
        n = self.session.size
        if kind == "address":
            self.addresses[worker] = (str(message[1]), int(message[2]))
            if len(self.addresses) < n:
                return []
            addresses = [list(self.addresses[w]) for w in range(n)]
            return [(w, ("peers", w, n, addresses)) for w in range(n)]
        if kind == "ready":
            self.replies[worker] = None
        elif kind in ("reply", "failed"):
            self.replies[worker] = message[1] if kind == "reply" else _Failed(message[1], message[2])
            self.session.peer_bytes[worker] = (int(message[-2]), int(message[-1]))
        else:
            raise SessionLost(f"sharded task {worker} sent an unexpected message {kind!r}")
        if len(self.replies) < n:
            return []
        replies = [self.replies[w] for w in range(n)]
        self.replies = {}
        command = self.session._hand_over(replies)
        if command is None:
            return [(w, ("stop",)) for w in range(n)]
        return [(w, ("command", command)) for w in range(n)]


class _Failed:
    """A task's report that a command raised (the session goes on)."""

    def __init__(self, name: str, text: str) -> None:
        self.name, self.text = name, text


class ShardSession:
    """A running sharded session: :meth:`call` sends one command to every task and returns their
    replies in rank order; :meth:`close` stops the tasks. ``size`` is the number of tasks (the
    number of shards), ``workers`` their partitions, rows and weights."""

    def __init__(self, engine: Any, handler: Any, config: dict, timeout: float, in_process: bool = False) -> None:
        self.size = 0
        self.workers: list = []
        self.peer_bytes: dict[int, tuple[int, int]] = {}
        self._commands: queue.Queue = queue.Queue()
        self._replies: queue.Queue = queue.Queue()
        self._closed = False
        self._ended = threading.Event()
        worker = shard_worker(handler)
        config = {"timeout": timeout, "handler": config, "encrypted": False}
        if in_process:
            # the engine's workers are threads of this process (LocalEngine): the key never leaves it
            config.update(local_peer_key=secrets.token_bytes(32), local_session_id=secrets.token_bytes(16))
        self._thread = threading.Thread(target=self._run, args=(engine, worker, config), daemon=True,
                                        name="sparkopt-sharded-session")
        self._thread.start()
        first = self._replies.get()                 # the tasks' "ready", or why they are not
        if isinstance(first, BaseException):
            self._thread.join(5.0)
            raise first

    def _run(self, engine: Any, worker: Any, config: dict) -> None:
        try:
            engine.run_workers(worker, config, _Bridge(self))
            self._replies.put(SessionLost("the sharded session ended"))
        except (TaskError, MeshError) as exc:
            # a task that lost a peer reports it (the peer's own death may reach the driver later):
            # the session is lost, not the command
            lost = isinstance(exc, MeshError) or "MeshError" in str(exc)
            self._replies.put(SessionLost(f"a sharded task lost its peers: {str(exc).splitlines()[0]}")
                              if lost else exc)
        except BaseException as exc:  # noqa: BLE001 - handed to the driver thread
            self._replies.put(exc)
        finally:
            self._ended.set()

    def _hand_over(self, replies: list) -> Optional[Any]:
        """Called on the session's thread with a round of replies: give them to the driver
        thread, wait for its next command (None: stop)."""
        self._replies.put(replies)
        return self._commands.get()

    def call(self, command: Any) -> list:
        """Every task's reply to ``command``, in rank order."""
        if self._closed or self._ended.is_set():
            raise SessionLost("the sharded session is closed")
        self._commands.put(command)
        out = self._replies.get()
        if isinstance(out, BaseException):
            self._closed = True
            raise out
        failed = [(rank, r) for rank, r in enumerate(out) if isinstance(r, _Failed)]
        if failed:
            rank, first = failed[0]
            raise TaskError(f"sharded task {rank}: {first.name}: {first.text}")
        return out

    @property
    def bytes_between_tasks(self) -> int:
        """Bytes the tasks sent to each other so far (all tasks)."""
        return sum(sent for sent, _ in self.peer_bytes.values())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._commands.put(None)
        self._thread.join(60.0)


class ShardedEngine(ResidentEngine):
    """The resident engine whose tasks also hold shards of model-sized vectors (see the module
    docstring). ``map_sum`` and every other resident pass work as on :class:`ResidentEngine`;
    :meth:`open_shards` starts a sharded session."""

    kind = "sharded"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("fallback"):
            raise InputError("the sharded engine has no tree-engine fallback: its tasks hold the model")
        super().__init__(*args, **kwargs)

    def open_shards(self, handler: Any, config: dict) -> ShardSession:
        """Start a sharded session running ``handler`` in every task (``config``: plain values)."""
        self.register_functions([shard_worker(handler)])
        return ShardSession(self, handler, config, self._timeout())


def open_local_shards(engine: Any, handler: Any, config: dict, timeout: float = 60.0) -> ShardSession:
    """A sharded session over a :class:`~sparkopt.engine.local.LocalEngine`: one thread per
    partition, the same mesh over loopback (tests and small problems without Spark)."""
    return ShardSession(engine, handler, config, timeout, in_process=True)

