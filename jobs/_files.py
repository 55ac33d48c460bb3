"""Where the jobs read and write: paths given as plain paths or URIs (``file://``, ``hdfs://``,
``s3a://``, ``viewfs://`` ...), the file system each one lives on, and the jobs' output
directories on any of them (marked, written beside the target, swapped in by renames).

A *store* is one file system seen from the driver:

* :class:`HadoopStore` -- a Hadoop ``FileSystem`` of the driver's JVM, through py4j. What Spark
  itself reads and writes through, so a path means the same to the job as to Spark: a plain path
  is relative to ``fs.defaultFS`` (HDFS on a YARN cluster, the local disk otherwise; a relative
  plain path on the local disk is taken from this process's working directory, as the user
  typed it). A scheme with no FileSystem class (``s3a://`` without hadoop-aws on the classpath)
  is refused naming the path.
* :class:`LocalStore` -- the driver's own disk through ``os``: before the JVM exists, and on a
  Spark Connect client (no JVM here; the server must see the same disk, as for its other files).

The output protocol (:func:`check_output_target`, :func:`new_output`, :func:`replace_output`) is
written once over a store's few operations (status, list, read, write, mkdirs, rename, delete),
so its guarantees hold on every file system: only a directory carrying sparkopt's marker is ever
replaced; the new output is written in a sibling staging directory, the old one moved aside, the
new one renamed in, the old one deleted; a kill between any two steps leaves a complete output
(old or new) at the path or beside it, which the next run's check puts back. On HDFS and the local
disk a directory rename is atomic; on object stores (S3A) it is a copy, so the swap takes longer
but the marker still tells a complete output from a partial one.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Optional, Sequence, Union

from _common import JobError

#: every output a job writes carries this file (JSON); only a directory with it is ever replaced.
#: The leading "_" keeps Spark's readers from taking it for data (as _SUCCESS).
OUTPUT_MARKER = "_SPARKOPT_OUTPUT"
_PENDING_MARKER = OUTPUT_MARKER + ".pending"
OUTPUT_FORMAT = "sparkopt-output"
_MAX_MARKER_BYTES = 2**20

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


def scheme_of(path: str) -> Optional[str]:
    """The URI scheme of ``path`` (``"hdfs"``, ``"file"`` ...), lower case, or None for a plain
    path (as Hadoop's ``Path`` parses it: letters before the first ':' and no '/' in front)."""
    match = _SCHEME.match(os.fspath(path))
    return match.group(1).lower() if match else None


def _local_path(text) -> Path:
    """The absolute local path of a plain path or a ``file:`` URI."""
    text = os.fspath(text)
    if scheme_of(text) == "file":
        text = re.sub(r"^file:(//[^/]*)?", "", text, flags=re.I) or "/"
    return Path(os.path.abspath(text or "."))


# ==================================================================== the driver's own disk
class LocalStore:
    """The driver's disk through ``os``; its paths are absolute :class:`pathlib.Path` objects."""

    scheme = "file"

    def resolve(self, text) -> Path:
        if not isinstance(text, Path) and scheme_of(str(text)) not in (None, "file"):
            raise JobError(f"{text} is not on this machine's disk (no Hadoop file system without a classic Spark "
                           f"driver)")
        return _local_path(text)

    def spark_path(self, path: Path) -> str:
        """What Spark's readers and writers are given for ``path``."""
        return str(path)

    def status(self, path: Path) -> Optional[str]:
        """"link", "dir", "file" or None (absent)."""
        if path.is_symlink():
            return "link"
        if path.is_dir():
            return "dir"
        return "file" if path.exists() else None

    def is_empty(self, path: Path) -> bool:
        return not any(path.iterdir())

    def names(self, directory: Path, prefix: str = "") -> list[str]:
        try:
            return [n for n in os.listdir(directory) if n.startswith(prefix)]
        except OSError:
            return []

    def read(self, path: Path, limit: int) -> Optional[bytes]:
        """The file's bytes, or None when it is larger than ``limit``."""
        if path.stat().st_size > limit:
            return None
        return path.read_bytes()

    def write(self, path: Path, data: bytes) -> None:
        """A new file holding ``data``, flushed to disk (never replaces an existing file)."""
        with open(path, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def mkdirs(self, path: Path) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise JobError(f"cannot create directory {path}: {err.strerror}") from None

    def rename(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def delete(self, path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()

    def sync(self, directory: Path) -> None:
        from sparkopt.solvers.checkpoint import fsync_directory

        fsync_directory(directory)

    def working_directory(self) -> Path:
        return Path.cwd().resolve()

    def canonical(self, path: Path) -> Path:
        return path.resolve()

    def parent(self, path: Path) -> Path:
        return path.parent

    def name(self, path: Path) -> str:
        return path.name

    def child(self, path: Path, name: str) -> Path:
        return path / name

    def download(self, path: Path, local: Path) -> None:
        shutil.copytree(path, local)


# ==================================================================== a Hadoop FileSystem of the JVM
def _java_class(err: BaseException) -> str:
    java = getattr(err, "java_exception", None)
    return java.getClass().getName() if java is not None else ""


def _java_message(err: BaseException) -> str:
    """The first line of a py4j error's Java exception (class and message), else of ``err``."""
    java = getattr(err, "java_exception", None)
    lines = (str(java.toString()) if java is not None else str(err)).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:300]


class HadoopStore:
    """One Hadoop ``FileSystem`` of the driver's JVM (``Path.getFileSystem(conf)``), through py4j;
    its paths are qualified URI strings (``hdfs://nn:8020/user/me/out``, ``file:/tmp/out``).

    On the local file system the raw one is used for the job's own files (no ``.crc`` beside
    them); Spark writes through the same paths."""

    def __init__(self, jvm, hadoop_conf, text: str, what: str = "path"):
        self._jvm = jvm
        self._conf = hadoop_conf
        try:
            fs = self._path(text).getFileSystem(hadoop_conf)
        except Exception as err:   # py4j: UnsupportedFileSystemException, a missing class (s3a without hadoop-aws)
            scheme = scheme_of(text) or "the default file system"
            raise JobError(f"{what} {text}: no Hadoop file system for {scheme}{'://' if scheme_of(text) else ''} "
                           f"on the driver's classpath ({_java_message(err)})") from None
        self.scheme = str(fs.getUri().getScheme() or "").lower()
        self._local = self.scheme == "file"
        if self._local:
            try:                   # LocalFileSystem (a ChecksumFileSystem) over RawLocalFileSystem
                fs = fs.getRawFileSystem()
            except Exception:      # already the raw one
                pass
        self._fs = fs

    @classmethod
    def of_session(cls, spark, text: str, what: str = "path") -> "HadoopStore":
        sc = spark.sparkContext
        return cls(sc._jvm, sc._jsc.hadoopConfiguration(), text, what)

    def _path(self, text: str):
        return self._jvm.org.apache.hadoop.fs.Path(text)

    def resolve(self, text) -> str:
        text = os.fspath(text)
        if self._local:          # the local disk: relative to this process's directory, as the user typed it
            return "file:" + str(_local_path(text))
        return str(self._fs.makeQualified(self._path(text)).toString())

    def spark_path(self, path: str) -> str:
        return path

    def _call(self, what: str, path: str, call):
        try:
            return call()
        except Exception as err:
            raise JobError(f"cannot {what} {path}: {_java_message(err)}") from None

    def status(self, path: str) -> Optional[str]:
        if self._local:      # the driver's own disk: asked directly (Hadoop's local status forks `stat`)
            return LocalStore().status(_local_path(path))
        try:
            st = self._fs.getFileStatus(self._path(path))
        except Exception as err:
            if _java_class(err) == "java.io.FileNotFoundException":
                return None
            raise JobError(f"cannot look at {path}: {_java_message(err)}") from None
        if st.isSymlink():
            return "link"
        return "dir" if st.isDirectory() else "file"

    def is_empty(self, path: str) -> bool:
        return not self._call("list", path, lambda: self._fs.listStatusIterator(self._path(path)).hasNext())

    def names(self, directory: str, prefix: str = "") -> list[str]:
        if prefix and not re.search(r"[\\{}\[\]*?,^!]", prefix):    # a glob lists only the siblings asked for
            found = self._call("list", directory, lambda: self._fs.globStatus(self._path(f"{directory}/{prefix}*")))
        else:
            if self.status(directory) != "dir":
                return []
            found = self._call("list", directory, lambda: self._fs.listStatus(self._path(directory)))
        names = [str(st.getPath().getName()) for st in (found or [])]
        return [n for n in names if n.startswith(prefix)]

    def read(self, path: str, limit: int) -> Optional[bytes]:
        def read():
            p = self._path(path)
            if self._fs.getFileStatus(p).getLen() > limit:
                return None
            stream = self._fs.open(p)
            try:
                return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
            finally:
                stream.close()
        return self._call("read", path, read)

    def write(self, path: str, data: bytes) -> None:
        def write():
            out = self._fs.create(self._path(path), False)
            try:
                out.write(bytearray(data))
                try:
                    out.hsync()          # durable where the file system can (HDFS, the local disk)
                except Exception:
                    pass
            finally:
                out.close()
        self._call("write", path, write)

    def mkdirs(self, path: str) -> None:
        if not self._call("create directory", path, lambda: self._fs.mkdirs(self._path(path))):
            raise JobError(f"cannot create directory {path}")

    def rename(self, src: str, dst: str) -> None:
        # Hadoop's rename moves src *into* an existing directory dst: the protocol never renames onto one
        if self.status(dst) is not None:
            raise OSError(f"cannot rename {src} to {dst}: the destination exists")
        if not self._call("rename", src, lambda: self._fs.rename(self._path(src), self._path(dst))):
            raise OSError(f"cannot rename {src} to {dst}")

    def delete(self, path: str) -> None:
        self._call("delete", path, lambda: self._fs.delete(self._path(path), True))

    def sync(self, directory: str) -> None:
        if self._local:      # HDFS makes a rename durable at the namenode; the local disk needs an fsync
            LocalStore().sync(_local_path(directory))

    def working_directory(self) -> str:
        if self._local:
            return "file:" + str(Path.cwd().resolve())
        return str(self._fs.getWorkingDirectory().toString())

    def canonical(self, path: str) -> str:
        if self._local:
            return "file:" + str(_local_path(path).resolve())
        return path.rstrip("/") or path

    def parent(self, path: str) -> str:
        parent = self._path(path).getParent()
        return str(parent.toString()) if parent is not None else path

    def name(self, path: str) -> str:
        return str(self._path(path).getName())

    def child(self, path: str, name: str) -> str:
        return path.rstrip("/") + "/" + name

    def download(self, path: str, local: Path) -> None:
        """Copy the file or directory ``path`` to the local ``local`` (absent)."""
        self._call("copy", path, lambda: self._fs.copyToLocalFile(False, self._path(path),
                                                                  self._path("file:" + str(local)), True))


Store = Union[LocalStore, HadoopStore]


# ==================================================================== which store a path is on
def _jvm_hadoop_conf():
    """(jvm, Hadoop Configuration) of a JVM this process already talks to: a running SparkContext's
    own, or, without one (spark-submit's JVM before the session), built as SparkContext would build
    it (core-site.xml, spark.hadoop.*); None when there is no JVM yet."""
    from pyspark import SparkContext

    active = SparkContext._active_spark_context
    if active is not None:         # a session this process runs already (a notebook): the job will borrow it
        return active._jvm, active._jsc.hadoopConfiguration()
    if SparkContext._gateway is None and "PYSPARK_GATEWAY_PORT" not in os.environ:
        return None
    SparkContext._ensure_initialized()
    jvm = SparkContext._jvm
    conf = jvm.org.apache.spark.deploy.SparkHadoopUtil.get().newConfiguration(jvm.org.apache.spark.SparkConf())
    return jvm, conf


#: settings that can move a plain path off the local disk before the JVM exists to say so
_DEFAULT_FS_KEYS = ("spark.hadoop.fs.defaultFS", "spark.hadoop.fs.default.name")
_HADOOP_ENV = ("HADOOP_CONF_DIR", "YARN_CONF_DIR")


class Paths:
    """The store each path given on the command line lives on, for one job run.

    ``spark`` None (before the session): a JVM that spark-submit started answers for every path; with
    no JVM yet, ``file:`` URIs and plain paths are on the local disk unless a Hadoop configuration
    could say otherwise (``HADOOP_CONF_DIR`` / ``YARN_CONF_DIR`` set, ``--conf
    spark.hadoop.fs.defaultFS``), and other schemes wait for the session (:meth:`store` gives
    None). A classic session: its JVM's Hadoop file systems. A Spark Connect session: the local disk
    for plain and ``file:`` paths (outputs elsewhere are refused: renames need the JVM)."""

    def __init__(self, spark=None, confs: Sequence[tuple[str, str]] = ()):
        from sparkopt.engine.session import is_connect

        self.spark = spark
        self._jvm_conf = None
        self.connect = spark is not None and is_connect(spark)
        if spark is None:
            self._jvm_conf = _jvm_hadoop_conf()
            self._plain_is_local = self._jvm_conf is None and not (
                any(os.environ.get(k) for k in _HADOOP_ENV) or any(k in dict(confs) for k in _DEFAULT_FS_KEYS))
        elif not self.connect:
            sc = spark.sparkContext
            self._jvm_conf = (sc._jvm, sc._jsc.hadoopConfiguration())

    def store(self, text: str, what: str, output: bool = False) -> Optional[Store]:
        """The store ``text`` is on, or None when that is not known yet (before the session) or
        cannot be looked at from here (a remote input of a Spark Connect session)."""
        scheme = scheme_of(text)
        if self._jvm_conf is not None:
            return HadoopStore(*self._jvm_conf, text, what)
        if self.connect:
            if scheme in (None, "file"):
                return LocalStore()
            if output:
                raise JobError(f"{what} {text}: a Spark Connect client writes its outputs to this machine's disk "
                               f"(a plain or file:// path); write to {scheme}:// from a classic session")
            return None
        if scheme == "file" or (scheme is None and self._plain_is_local):
            return LocalStore()
        return None


def require_input(store: Optional[Store], text: str, what: str = "input", kind: Optional[str] = None):
    """The resolved path of the input ``text`` on ``store`` (``text`` itself when the store is
    not known); JobError naming it when it is missing (or is not a ``kind``, "dir" / "file")."""
    if store is None:
        return text
    path = store.resolve(text)
    found = store.status(path)
    if found == "link":      # an input may be a link (to a dataset): what it points at counts
        found = "dir" if Path(_local_path(str(path))).is_dir() else "file"
    if found is None:
        raise JobError(f"{what} not found: {text}")
    if kind is not None and found != kind:
        raise JobError(f"{what} {text} is not a {'directory' if kind == 'dir' else 'file'}")
    return path


# ==================================================================== output directories
def _read_marker(store: Store, path) -> Optional[dict]:
    """The marker file's JSON when ``path`` is a regular file holding sparkopt's marker, else None."""
    try:
        if store.status(path) != "file":
            return None
        data = store.read(path, _MAX_MARKER_BYTES)
        marker = json.loads(data) if data is not None else None
    except (OSError, ValueError, JobError):
        return None
    return marker if isinstance(marker, dict) and marker.get("format") == OUTPUT_FORMAT else None


def read_marker(directory, store: Optional[Store] = None) -> Optional[dict]:
    """The complete output marker of ``directory`` (None when it has none)."""
    store = store or LocalStore()
    return _read_marker(store, store.child(store.resolve(directory), OUTPUT_MARKER))


def is_sparkopt_output(directory, store: Optional[Store] = None) -> bool:
    """True when ``directory`` is a real directory (not a symlink) carrying a complete output's marker."""
    store = store or LocalStore()
    directory = store.resolve(directory)
    return store.status(directory) == "dir" and _read_marker(store, store.child(directory, OUTPUT_MARKER)) is not None


def _leftovers(store: Store, output) -> dict[str, list]:
    """This output's staging ('new') and moved-aside ('old') siblings that a killed run left,
    recognised by name and by a marker inside (a directory merely named like one is not ours)."""
    name = store.name(output)
    pattern = re.compile(r"^\." + re.escape(name) + r"\.sparkopt-(new|old)-[0-9a-f]{12}$")
    parent = store.parent(output)
    found: dict[str, list] = {"new": [], "old": []}
    for sibling_name in store.names(parent, f".{name}.sparkopt-"):
        match = pattern.match(sibling_name)
        sibling = store.child(parent, sibling_name)
        if not match or store.status(sibling) != "dir":
            continue
        complete = _read_marker(store, store.child(sibling, OUTPUT_MARKER)) is not None
        staged = match.group(1) == "new" and store.status(store.child(sibling, _PENDING_MARKER)) == "file"
        # an empty directory moved aside (empty targets are accepted) holds nothing to lose
        if complete or staged or (match.group(1) == "old" and store.is_empty(sibling)):
            found[match.group(1)].append(sibling)
    return found


def _newest(store: Store, directories: list):
    return max(directories, key=lambda d: (_read_marker(store, store.child(d, OUTPUT_MARKER)) or {}).get("created", 0.0))


def check_output_target(output, store: Optional[Store] = None):
    """The resolved path of ``output`` on ``store`` (default: the local disk) once it is safe to
    replace: absent, an empty directory, or a sparkopt output (it carries OUTPUT_MARKER). Refuses
    (JobError naming the path) the working directory or one of its parents (``--output .``), a
    symbolic link, a file, and any non-empty directory without the marker. Then recovers what a
    killed run left beside it: with the output path missing, the newest complete staged or
    moved-aside output is put back in place; every other leftover of this output is deleted."""
    store = store or LocalStore()
    target = store.resolve(output)
    if store.status(target) != "link":
        canonical, cwd = store.canonical(target), store.working_directory()
        if canonical == cwd or str(cwd).startswith(str(canonical).rstrip("/") + "/"):
            raise JobError(f"--output {target} is the working directory or one of its parents; "
                           f"refusing to replace it: name a new directory")
    found = store.status(target)
    if found == "link":
        raise JobError(f"--output {target} is a symbolic link; refusing to replace it: name a directory")
    if found == "file":
        raise JobError(f"--output {target} exists and is not a directory; refusing to replace it")
    if found == "dir" and not is_sparkopt_output(target, store) and not store.is_empty(target):
        raise JobError(f"--output {target} is not a sparkopt output (no {OUTPUT_MARKER} file) and is not empty; "
                       f"refusing to replace it: name another directory or remove it yourself")
    left = _leftovers(store, target)
    if found is None:
        complete_new = [d for d in left["new"] if is_sparkopt_output(d, store)]
        restore = (_newest(store, complete_new) if complete_new
                   else (_newest(store, left["old"]) if left["old"] else None))
        if restore is not None:
            store.rename(restore, target)
    for directory in left["new"] + left["old"]:
        if store.status(directory) is not None:
            store.delete(directory)
    return target


def prepare_output(output, store: Optional[Store] = None):
    """check_output_target, then the output's parent directory created (JobError naming it when
    it cannot be, or is not writable on the local disk); the output's resolved path."""
    store = store or LocalStore()
    target = check_output_target(output, store)
    parent = store.parent(target)
    try:
        store.mkdirs(parent)
    except JobError as err:
        raise JobError(f"cannot create output directory {parent}: {str(err).rsplit(': ', 1)[-1]}") from None
    if isinstance(store, LocalStore) and not os.access(parent, os.W_OK):
        raise JobError(f"output directory {parent} is not writable")
    return target


def new_output(output, job: str, metadata: Optional[dict] = None, store: Optional[Store] = None):
    """A fresh staging directory beside ``output`` (same parent, so the swap is a rename) for a
    run of ``job`` to write into; ``metadata`` goes into the marker. Checks and recovers the
    target first (check_output_target). Finish with replace_output; until then the staging is
    unfinished (a pending marker, which the next run's check deletes)."""
    store = store or LocalStore()
    target = check_output_target(output, store)
    store.mkdirs(store.parent(target))
    staging = store.child(store.parent(target), f".{store.name(target)}.sparkopt-new-{uuid.uuid4().hex[:12]}")
    store.mkdirs(staging)
    marker = {"format": OUTPUT_FORMAT, "version": 1, "job": job, "created": time.time(), **(metadata or {})}
    store.write(store.child(staging, _PENDING_MARKER), json.dumps(marker, indent=2, default=str).encode())
    return staging


def replace_output(staging, output, store: Optional[Store] = None, metadata: Optional[dict] = None):
    """Put the finished ``staging`` (from new_output) in place of ``output``: mark it complete
    (adding ``metadata`` to the marker), move the old output aside, rename the new one in, delete
    the old one. A failure before the new one is in moves the old one back; a kill leaves a
    complete output, old or new, at the path or beside it, which the next check_output_target
    puts back and cleans up. Returns the output's resolved path."""
    store = store or LocalStore()
    target = store.resolve(output)
    pending = store.child(staging, _PENDING_MARKER)
    marker = json.loads(store.read(pending, _MAX_MARKER_BYTES))
    marker = {**marker, **(metadata or {}), "completed": time.time()}
    store.write(store.child(staging, OUTPUT_MARKER), json.dumps(marker, indent=2, default=str).encode())
    store.delete(pending)
    aside = None
    found = store.status(target)
    if found is not None:
        if found != "dir" or not (is_sparkopt_output(target, store) or store.is_empty(target)):
            raise JobError(f"--output {target} is not a sparkopt output (no {OUTPUT_MARKER} file); "
                           f"refusing to replace it")
        aside = store.child(store.parent(target), f".{store.name(target)}.sparkopt-old-{uuid.uuid4().hex[:12]}")
        store.rename(target, aside)
    try:
        store.rename(staging, target)
    except BaseException:
        if aside is not None and store.status(target) is None:
            store.rename(aside, target)
        raise
    store.sync(store.parent(target))
    if aside is not None:
        store.delete(aside)
    return target


def discard(staging, store: Optional[Store] = None) -> None:
    """Remove an unfinished staging directory (a failed run's); never raises."""
    if staging is None:
        return
    store = store or LocalStore()
    try:
        if store.status(staging) is not None:
            store.delete(staging)
    except Exception:
        pass
