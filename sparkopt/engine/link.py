"""A link model for measuring: the resident channel throttled to a given bandwidth and latency.

numpy-free, standard library only. On one machine every resident task talks to the driver over
the loopback interface, where 46 MB moves in milliseconds; on a cluster the driver's network link
is what every pass crosses (a star: all tasks' payloads leave through it and all their partial
sums arrive through it). :class:`LinkModel` describes such a link and :class:`Link` makes the
driver's end of a session behave like it, so the wall-clock effect of the bytes a pass moves
shows on one machine:

* a frame of ``s`` bytes occupies the link for ``8 s / bandwidth`` seconds; frames in one
  direction queue behind each other (outgoing: the payload copies to the tasks; incoming: the
  tasks' replies, in the order they arrive), the two directions are independent (full duplex);
* every frame arrives ``latency`` seconds after it has been put on the link.

The driver waits out those times before it writes a frame to a task's socket and before it
reads a reply (the tasks themselves are not slowed). ``spark.sparkopt.resident.link`` (e.g.
``1gbit,0.5ms``) or the ResidentEngine's ``link`` argument turn it on; it is off by default.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import InputError

__all__ = ["LinkModel", "Link", "parse_link"]

_RATE_UNITS = {"bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


@dataclass(frozen=True)
class LinkModel:
    """``bandwidth`` in bits per second (> 0), one-way ``latency`` in seconds (>= 0)."""

    bandwidth: float
    latency: float = 0.0

    def __post_init__(self) -> None:
        for name, value, low in (("bandwidth", self.bandwidth, 0.0), ("latency", self.latency, None)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
                    or value in (float("inf"), float("-inf")) or (value <= 0 if low is not None else value < 0):
                raise InputError(f"link {name} must be a finite number {'> 0' if low is not None else '>= 0'}, "
                                 f"got {value!r}")

    def transfer_seconds(self, nbytes: int) -> float:
        """How long ``nbytes`` occupy the link."""
        return 8.0 * nbytes / self.bandwidth

    def describe(self) -> str:
        return f"{self.bandwidth / 1e9:g} Gbit/s, {self.latency * 1e3:g} ms"


def parse_link(text: Any) -> Optional[LinkModel]:
    """A LinkModel from ``"RATE,LATENCY"`` such as ``"1gbit,0.5ms"`` (rates in bit, kbit, mbit,
    gbit per second; latencies in s, ms, us), a LinkModel, or None / "" / "none" (no model)."""
    if text is None or isinstance(text, LinkModel):
        return text
    if not isinstance(text, str):
        raise InputError(f"link must be a string like '1gbit,0.5ms', got {text!r}")
    spec = text.strip().lower().replace(" ", "")
    if spec in ("", "none", "off"):
        return None
    match = re.fullmatch(r"([0-9.e+-]+)(bit|kbit|mbit|gbit|tbit)(?:/s)?(?:,([0-9.e+-]+)(s|ms|us))?", spec)
    if match is None:
        raise InputError(f"link must look like '1gbit,0.5ms' (rate in bit/kbit/mbit/gbit per second, latency in "
                         f"s/ms/us), got {text!r}")
    try:
        rate = float(match.group(1)) * _RATE_UNITS[match.group(2)]
        latency = float(match.group(3)) * _TIME_UNITS[match.group(4)] if match.group(3) else 0.0
    except ValueError:
        raise InputError(f"link must look like '1gbit,0.5ms', got {text!r}") from None
    return LinkModel(rate, latency)


class Link:
    """The driver's end of one session under a :class:`LinkModel` (see the module docstring):
    :meth:`schedule` the frames of one request before they are written (each is written when it
    would have reached its task), :meth:`incoming` after a reply has been read."""

    def __init__(self, model: LinkModel) -> None:
        self.model = model
        self._lock = threading.Lock()
        self._out_free = 0.0
        self._in_free = 0.0
        self.waited = 0.0            # seconds the driver spent waiting for the modelled link

    def wait_until(self, when: float) -> None:
        delay = when - time.monotonic()
        if delay > 0:
            self.waited += delay
            time.sleep(delay)

    def schedule(self, sizes: list[int]) -> list[float]:
        """When each of the frames (``sizes`` bytes, put on the link back to back from now)
        reaches its task (time.monotonic())."""
        with self._lock:
            clock = max(time.monotonic(), self._out_free)
            arrivals = []
            for size in sizes:
                clock += self.model.transfer_seconds(size)
                arrivals.append(clock + self.model.latency)
            self._out_free = clock
        return arrivals

    def incoming(self, nbytes: int, arrived: Optional[float] = None) -> None:
        """Wait until a frame of ``nbytes`` that the loopback delivered at ``arrived`` (default:
        now) would have come through the link (behind the frames before it)."""
        arrived = time.monotonic() if arrived is None else arrived
        with self._lock:
            start = max(arrived + self.model.latency, self._in_free)
            self._in_free = start + self.model.transfer_seconds(nbytes)
            done = self._in_free
        self.wait_until(done)
