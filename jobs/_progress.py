"""Progress of the jobs' long phases: one line on stderr updated in place (a display in a
notebook, through sparkopt.ml.progress.LiveLine), with the rows the phase's Spark stages have
read, the rate, the running stage's tasks and the time elapsed; one summary line per phase when
it ends.

    train.py: ingest  1,250,000 rows read  61,024 rows/s  stage 3: 5/8 tasks  20.5 s

Rows read are Spark's input metrics of the phase's stages (a job group per phase, classic
sessions): the records its file scans read. Running tasks report them with their heartbeats
(``spark.executor.heartbeatInterval``, 10 s by default), finished tasks at once. A fit's ingest
ends at its first iteration, from where the per-iteration log takes over; the rows it read are
the ingest's. On a Spark Connect session (no JVM in this process) a phase shows its time only.
Off a terminal (a log file) the line is written out every ``log_interval`` seconds instead of
updated in place.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from typing import Optional

from sparkopt.ml.progress import LiveLine


def render(prog: str, phase: str, seconds: float, rows: Optional[int] = None, stage: Optional[int] = None,
           done: int = 0, total: int = 0) -> str:
    """The progress line: rows read and their rate when known, the running stage's tasks, elapsed."""
    parts = [f"{prog}: {phase}"]
    if rows is not None:
        parts.append(f"{rows:,} rows read")
        if seconds > 0 and rows:
            parts.append(f"{rows / seconds:,.0f} rows/s")
    if stage is not None and total:
        parts.append(f"stage {stage}: {done}/{total} tasks")
    parts.append(f"{seconds:.1f} s")
    return "  ".join(parts)


class SparkActivity:
    """What the Spark jobs of one job group (of a classic session) have done so far: the input
    records their stages read and the latest running stage's tasks, from the status tracker and
    the JVM's status store (the data behind Spark's UI)."""

    def __init__(self, spark, group: str):
        sc = spark.sparkContext
        self._sc = sc
        self.group = group
        self._tracker = sc.statusTracker()
        self._store = sc._jsc.sc().statusStore()
        self._records: dict[int, int] = {}        # stage id -> input records last seen

    def settle(self, timeout_ms: int = 2000) -> None:
        """Let the status store take in the events already posted (it learns of finished tasks
        from the listener bus, asynchronously): a phase's last count is then its final one."""
        try:
            self._sc._jsc.sc().listenerBus().waitUntilEmpty(timeout_ms)
        except Exception:          # a bus that stays busy: the count is what it is
            pass

    def snapshot(self) -> dict:
        stage, done, total = None, 0, 0
        for job_id in sorted(self._tracker.getJobIdsForGroup(self.group)):
            job = self._tracker.getJobInfo(job_id)
            for stage_id in (job.stageIds if job is not None else ()):
                try:
                    data = self._store.lastStageAttempt(int(stage_id))
                except Exception:            # not submitted yet (a later stage of the job)
                    continue
                self._records[stage_id] = max(self._records.get(stage_id, 0), int(data.inputRecords()))
                if str(data.status().toString()) == "ACTIVE":
                    stage, done, total = stage_id, int(data.numCompleteTasks()), int(data.numTasks())
        return {"rows": sum(self._records.values()), "stage": stage, "done": done, "total": total}


#: what SparkContext.setJobGroup sets on the calling thread (put back after a phase)
_GROUP_PROPERTIES = ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel")


class _IterationsStarted(logging.Handler):
    """Tells the progress when the fit's first iteration is logged (sparkopt's loop logs one per
    iteration at INFO): the ingest is over."""

    def __init__(self, progress: "JobProgress"):
        super().__init__(logging.INFO)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith("iter"):
            self.progress.ingest_over()


class JobProgress:
    """The progress line of one job run: ``with progress.phase("read"): ...`` around each long
    phase. ``enabled=False`` shows nothing (``--quiet``)."""

    def __init__(self, prog: str, spark=None, enabled: bool = True, stream=None, interval: float = 0.5,
                 log_interval: float = 10.0):
        self.prog = prog
        self.spark = spark
        self.enabled = enabled
        self.interval = interval
        self.log_interval = log_interval
        self.line = LiveLine(stream, first=f"{prog}: starting") if enabled else None
        self._lock = threading.Lock()
        self._phase: Optional[str] = None
        self._activity: Optional[SparkActivity] = None
        self._started = 0.0
        self._frozen: Optional[dict] = None      # the ingest's counts, once the fit's iterations took over
        self.summaries: list[dict] = []          # one per phase: name, seconds, rows

    def _classic(self) -> bool:
        from sparkopt.engine.session import is_connect

        return self.spark is not None and not is_connect(self.spark)

    def _counts(self) -> dict:
        if self._frozen is not None:
            return self._frozen
        if self._activity is None:
            return {"rows": None, "stage": None, "done": 0, "total": 0}
        try:
            return self._activity.snapshot()
        except Exception:                      # the session went away under the poller: nothing to show
            return {"rows": None, "stage": None, "done": 0, "total": 0}

    def _text(self, counts: dict) -> str:
        return render(self.prog, self._phase, time.perf_counter() - self._started, counts["rows"], counts["stage"],
                      counts["done"], counts["total"])

    def ingest_over(self) -> None:
        """The fit's first iteration: the phase's line ends with the ingest's rows; the
        per-iteration log goes on from here."""
        with self._lock:
            if self._phase is None or self._frozen is not None:
                return
            self._frozen = dict(self._final_counts(), stage=None)
            self._end_line(self._frozen)

    def _live(self) -> bool:
        """Whether the line is updated in place (a terminal, a notebook) or written out (a log)."""
        return self.line is not None and (self.line.in_notebook or _isatty(self.line._stream()))

    def _write_out(self, text: str) -> None:
        stream = self.line._stream()
        stream.write(text + "\n")
        stream.flush()

    def _final_counts(self) -> dict:
        if self._activity is not None and self._frozen is None:
            self._activity.settle()
        return self._counts()

    def _end_line(self, counts: dict) -> None:
        seconds = time.perf_counter() - self._started
        self.summaries.append({"phase": self._phase, "seconds": seconds, "rows": counts["rows"]})
        if self.line is not None:
            text = render(self.prog, self._phase, seconds, counts["rows"])
            self.line.end(text) if self._live() else self._write_out(text)

    def _poll(self, stop: threading.Event) -> None:
        live = self._live()
        last_written = time.perf_counter()
        while not stop.wait(self.interval):
            with self._lock:
                if self._frozen is not None:
                    continue
                text = self._text(self._counts())
                if live:
                    self.line.show(text)
                elif time.perf_counter() - last_written >= self.log_interval:
                    self._write_out(text)
                    last_written = time.perf_counter()

    @contextlib.contextmanager
    def phase(self, name: str, ends_at_first_iteration: bool = False):
        """Show ``name``'s progress while the block runs (its Spark jobs in a job group of their
        own, the caller's group put back after); one summary line at the end. With
        ``ends_at_first_iteration`` (a fit), the line ends when sparkopt logs the first iteration."""
        sc = self.spark.sparkContext if self._classic() else None
        group = f"sparkopt-{name}-{uuid.uuid4().hex[:8]}"
        if sc is not None:
            previous = {key: sc.getLocalProperty(key) for key in _GROUP_PROPERTIES}
            sc.setJobGroup(group, f"{self.prog}: {name}")
        with self._lock:
            self._phase, self._started, self._frozen = name, time.perf_counter(), None
            self._activity = SparkActivity(self.spark, group) if sc is not None else None
        handler = logger = None
        if ends_at_first_iteration:
            handler, logger = _IterationsStarted(self), logging.getLogger("sparkopt")
            logger.addHandler(handler)
        stop = threading.Event()
        poller = threading.Thread(target=self._poll, args=(stop,), name=f"sparkopt-progress-{name}", daemon=True)
        if self.enabled:
            poller.start()
        try:
            yield self
        finally:
            stop.set()
            if poller.is_alive():
                poller.join()
            if handler is not None:
                logger.removeHandler(handler)
            with self._lock:
                if self._frozen is None:
                    self._end_line(self._final_counts())
                self._phase, self._activity = None, None
            if sc is not None:
                for key, value in previous.items():
                    sc.setLocalProperty(key, value)


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
