"""The live dashboard: a monitor folder served over HTTP while the monitor runs (`ga monitor
--serve [HOST:]PORT`) or on its own (`ga monitor serve DIR`).

The page (`/`) polls `/state.json` every second and redraws itself without a reload: the
latest frame's values with their intervals, a trend of the class fractions over the last
frames (drawn in the page), the trend, latest-frame and size-bin figures (reloaded when the
monitor redraws them), the alerts and operators' notes, and the state: running, stopped,
or stale (running, but no frame for `monitor.stale_seconds`). The state is read from the
folder's files at each request (frames.csv's tail, alerts.csv, notes.csv, audit.jsonl), so
a finished folder and one another process writes into are served alike.

Only the page, the state, the figures and the three tables are served, by name: no listing,
no other path. The server binds 127.0.0.1 unless another host is given; a port in use is one
warning and a retry with backoff, and the monitor goes on meanwhile.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

from ga.monitoring.audit import AUDIT
from ga.monitoring.columns import ALERTS, FRAMES
from ga.monitoring.outputs import NOTES
from ga.monitoring.publish import Warned, backoff

log = logging.getLogger(__name__)
FIGURES = ("monitor_trend.png", "monitor_latest.png", "monitor_bins.png", "monitor_sizes.png")
TABLES = (FRAMES, ALERTS, NOTES)
SERIES = 300  # frames in the page's own trend
TAIL = 1 << 18  # bytes read from the end of frames.csv for the series


def _tail_rows(path: str, nbytes: int = TAIL) -> tuple[list[str], list[list[str]], int]:
    """(header, the last rows that fit in `nbytes`, the number of rows) of a CSV file."""
    try:
        with open(path, "rb") as fh:
            header = fh.readline()
            size = os.fstat(fh.fileno()).st_size
            start = max(len(header), size - nbytes)
            fh.seek(start)
            body = fh.read()
            fh.seek(len(header))
            n = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    except FileNotFoundError:
        return [], [], 0
    if start > len(header):  # begun inside a row: drop it
        body = body[body.find(b"\n") + 1:]
    if not body.endswith(b"\n"):  # a row being written
        body = body[:body.rfind(b"\n") + 1]
    cols = next(csv.reader([header.decode("utf-8")]), [])
    return cols, list(csv.reader(io.StringIO(body.decode("utf-8", "replace")))), n


def _rows(path: str, last: int = 50) -> list[dict]:
    cols, rows, _ = _tail_rows(path, 1 << 16)
    return [dict(zip(cols, r)) for r in rows[-last:]]


def _num(v):
    try:
        return float(v) if v not in ("", None) else None
    except ValueError:
        return None


def _last_audit(out_dir: str) -> dict:
    try:
        with open(os.path.join(out_dir, AUDIT), "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - 8192))
            lines = [line for line in fh.read().split(b"\n") if line.strip()]
        return json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return {}


def state(out_dir: str, stale_seconds: float = 60.0) -> dict:
    """The page's JSON: the latest frame's values, the series, alerts, notes, figures and
    whether the monitor runs, stopped or went stale."""
    path = os.path.join(out_dir, FRAMES)
    cols, rows, n = _tail_rows(path)
    classes = [c[:-len("_fraction")] for c in cols if c.endswith("_fraction")]
    table = [dict(zip(cols, r)) for r in rows[-SERIES:]]
    last = table[-1] if table else {}
    unit = "um" if any(c.endswith("_um") for c in cols) else "px"
    entry = _last_audit(out_dir)
    running = entry.get("event") not in ("stop", None)
    since = os.path.getmtime(path) if os.path.exists(path) else (
        dt.datetime.fromisoformat(entry["time"]).timestamp() if entry.get("time") else None)
    age = None if since is None else max(0.0, time.time() - since)
    latest = None
    if last:
        latest = {"frame": last.get("frame"), "time": last.get("time"), "skipped": last.get("skipped"),
                  "flags": last.get("flags"), "particles": _num(last.get("particles")),
                  "static_particles": _num(last.get("static_particles")),
                  "classes": {c: {k: _num(last.get(f"{c}_{k}")) for k in ("count", "fraction", "fraction_lo",
                                                                           "fraction_hi")} for c in classes},
                  "sizes": {q: _num(last.get(f"{q}_{unit}")) for q in ("d10", "d50", "d90")}}
    return {
        "name": os.path.basename(os.path.abspath(out_dir)), "now": time.time(), "frames": n, "classes": classes,
        "unit": unit, "state": "stale" if running and age is not None and age > stale_seconds else
        "running" if running else "stopped", "age_s": age, "stale_seconds": stale_seconds, "latest": latest,
        "series": {"elapsed_s": [_num(r.get("elapsed_s")) for r in table],
                   "particles": [_num(r.get("particles")) for r in table],
                   **{c: [[_num(r.get(f"{c}_{k}")) for r in table] for k in ("fraction", "fraction_lo", "fraction_hi")]
                      for c in classes}},
        "alerts": _rows(os.path.join(out_dir, ALERTS), 20), "notes": _rows(os.path.join(out_dir, NOTES), 20),
        "figures": {f: os.stat(os.path.join(out_dir, f)).st_mtime_ns for f in FIGURES
                    if os.path.exists(os.path.join(out_dir, f))},
    }


def _page() -> bytes:
    return resources.files("ga.monitoring").joinpath("dashboard.html").read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "ga-monitor"

    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
        path = self.path.split("?", 1)[0]
        out_dir = self.server.out_dir
        if path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", _page())
        elif path == "/state.json":
            body = json.dumps(state(out_dir, self.server.stale_seconds), allow_nan=False, default=str).encode()
            self._send(200, "application/json", body)
        elif path.lstrip("/") in FIGURES + TABLES:
            name = path.lstrip("/")
            try:
                with open(os.path.join(out_dir, name), "rb") as fh:
                    body = fh.read()
            except OSError:
                self._send(404, "text/plain", b"not written yet\n")
                return
            self._send(200, "image/png" if name.endswith(".png") else "text/csv; charset=utf-8", body)
        else:
            self._send(404, "text/plain", b"not found\n")

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def _send(self, code: int, kind: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002  (the base class's name)
        log.debug("dashboard %s: " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    out_dir = ""
    stale_seconds = 60.0

    def handle_error(self, request, client_address) -> None:
        """A client gone mid-answer (a closed tab) is not the monitor's problem: one debug line."""
        import sys

        log.debug("dashboard: client %s: %s", client_address, sys.exc_info()[1])


class Dashboard:
    """The folder's dashboard on HOST:PORT, served from a thread of its own. A port in use is one
    warning line, then retried with backoff until it is free or the dashboard is closed."""

    def __init__(self, out_dir: str, host: str = "127.0.0.1", port: int = 8050, stale_seconds: float = 60.0):
        self.out_dir, self.host, self.port, self.stale_seconds = out_dir, host, port, stale_seconds
        self.server: _Server | None = None
        self.bound = threading.Event()
        self._closing = threading.Event()
        self._warned = Warned(f"dashboard on {host}:{port}")
        self._thread = threading.Thread(target=self._serve, name="ga-dashboard", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self, wait: float = 2.0) -> Dashboard:
        """Start serving; wait up to `wait` seconds for the port (the URL is then known)."""
        self._thread.start()
        self.bound.wait(wait)
        return self

    def _serve(self) -> None:
        attempt = 0
        while not self._closing.is_set():
            try:
                server = _Server((self.host, self.port), _Handler)
            except OSError as exc:
                self._warned.warn(f"cannot listen ({exc.strerror or exc})")
                self._closing.wait(backoff(attempt, 1.0, 30.0))
                attempt += 1
                continue
            server.out_dir, server.stale_seconds = self.out_dir, self.stale_seconds
            self.port = server.server_address[1]
            self.server = server
            self._warned.recovered(f"listening at {self.url}")
            self.bound.set()
            log.debug("dashboard: %s", self.url)
            server.serve_forever(poll_interval=0.5)
            server.server_close()
            return

    def close(self) -> None:
        self._closing.set()
        if self.server is not None:  # shutdown() waits for serve_forever: on a thread, in case it never began
            threading.Thread(target=self.server.shutdown, daemon=True).start()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
