"""What the monitor sends to the plant, and what its publishers share.

Each frame becomes one message (`message`), built once at the publish stage and sent as it is
by MQTT (`ga.monitoring.mqtt`), mapped to variables by OPC UA (`ga.monitoring.opcua`):

    {"frame": "f0001.png", "time": "2026-12-01T10:32:00", "counter": 17,
     "quality": "good" | "uncertain" (a flagged frame) | "bad" (a skipped frame),
     "flags": "", "skipped": "", "unit": "um" | "px",
     "values": {"particles": 41, "static_particles": 0, "cex_count": 38, "cex_fraction": 0.927,
                "cex_fraction_lo": 0.806, "cex_fraction_hi": 0.975, ..., "d10_um": 12.1, ...},
     "size_bins": {"edges": [0, 20, 50], "counts": [12, 29]},
     "alerts_active": {"pg_fraction > 0.10 over 5 frames": false},
     "alerts": [{"rule": ..., "column": ..., "value": ..., "threshold": ...}]}

A value the frame does not have (a fraction of a frame without particles, anything of a
skipped frame) is null. Publishers are hooks of the monitor (`Monitor.add_hook`): they are
given the layout first (`start`), then each frame's record; none may block the frames, so
each one hands the message to its own thread and returns.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
from typing import TYPE_CHECKING, Protocol, Sequence

from ga.errors import GAError
from ga.monitoring.columns import QUANTILES, bin_columns, size_unit

if TYPE_CHECKING:
    from ga.config import MonitorConfig
    from ga.frames import Frame
    from ga.monitoring.alerts import Rule

log = logging.getLogger(__name__)
QUALITIES = ("good", "uncertain", "bad")


class Written(Protocol):
    """What a message is made of: a ga.monitoring.loop.FrameRecord after the write stage."""

    frame: Frame
    stamp: str
    row: dict
    problem: str
    flag: str
    alerts: list


def message(record: Written, classes: Sequence[str], cfg: MonitorConfig, rules: Sequence[Rule],
            counter: int) -> dict:
    """One frame's message (module docstring) from its FrameRecord after the write stage."""
    row, u = record.row, size_unit(cfg)
    names = ["particles", "static_particles", "edge_particles"]
    for c in classes:
        names += [f"{c}_count", f"{c}_fraction", f"{c}_fraction_lo", f"{c}_fraction_hi"]
    names += [f"d{q}_{u}" for q, _ in QUANTILES]
    bad = bool(record.problem)
    values = {k: None if bad else number(row.get(k)) for k in names}
    return {"frame": record.frame.name, "time": record.stamp or None, "counter": counter,
            "quality": "bad" if bad else "uncertain" if record.flag else "good", "flags": record.flag,
            "skipped": record.problem, "unit": u, "values": values,
            "size_bins": {"edges": [edge(e) for e in cfg.size_bins],
                          "counts": [None if bad else number(row.get(k)) for k in bin_columns(cfg)]},
            "alerts_active": {r.text: r.active for r in rules},
            "alerts": [{"rule": a.rule, "column": a.column, "value": a.value, "threshold": a.threshold}
                       for a in record.alerts]}


def number(v: object) -> float | None:
    """A cell as a number (None for "" and NaN)."""
    if v is None or v == "":
        return None
    x = float(v)  # type: ignore[arg-type]
    return None if math.isnan(x) else x


def edge(v: float) -> float | str:
    return "inf" if math.isinf(v) else v


def utc(stamp: str | None) -> dt.datetime:
    """A frame's ISO time as an aware UTC time (a time without zone is the machine's local
    time); now when the frame has none."""
    if not stamp:
        return dt.datetime.now(dt.timezone.utc)
    t = dt.datetime.fromisoformat(stamp)
    return (t if t.tzinfo else t.astimezone()).astimezone(dt.timezone.utc)


def host_port(text: str, default_host: str = "127.0.0.1", what: str = "address") -> tuple[str, int]:
    """`[HOST:]PORT` -> (host, port): 127.0.0.1 unless a host is given; a GAError otherwise."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or default_host
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise GAError(f"{text!r}: give [HOST:]PORT, a port from 0 to 65535", arg=what)
    return host, int(port)


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


class Warned:
    """One warning line per outage: `warn` logs only when the last call was not a warning, and
    `recovered` logs that it works again."""

    def __init__(self, what: str):
        self.what, self.down, self._lock = what, False, threading.Lock()

    def warn(self, text: str) -> None:
        with self._lock:
            if not self.down:
                log.warning("%s: %s; the frames go on, retrying with backoff", self.what, text)
            self.down = True

    def recovered(self, text: str) -> None:
        with self._lock:
            if self.down:
                log.warning("%s: %s", self.what, text)
            self.down = False


def backoff(attempt: int, first: float = 1.0, most: float = 30.0) -> float:
    """Seconds before retry `attempt` (0, 1, ...): doubling from `first`, at most `most`."""
    return min(most, first * 2 ** min(attempt, 16))
