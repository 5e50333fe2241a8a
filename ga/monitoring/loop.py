"""Watching a crystallization: frames over time -> particles -> classes, sizes and fractions.

`ga monitor FOLDER --model RUN` takes every frame (`ga.frames`: a folder of images, a
TIFF stack, a video), finds its particles (`ga.monitoring.detection`), classifies every particle's
crop with the run's model (batched across frames, any engine), and writes into the
monitor folder (`--out-dir`, default monitor_out/):

- particles.csv: one row per particle: frame, time, its geometry (pixels, and micrometres
  with `monitor.pixel_size_um`), the class named and every class's probability, and the
  model file, its sha256 and the engine;
- frames.csv: one row per frame: time, seconds since the first frame, where the time came
  from, flags (`time_backwards`: earlier than a frame before it), the reason a frame was
  skipped, the particle count, and per class its count, fraction and Wilson interval
  (`monitor.ci_level`), and number- and volume-weighted d10/d50/d90 of the equivalent
  diameter, all particles and per class (particles cut by the frame's edge left out);
- alerts.csv, one row per alert fired (`ga.monitoring.alerts`);
- monitor_trend.png (fractions with their bands, counts, d50 per class over time),
  monitor_sizes.png (the size distribution of the first and the last `monitor.window`
  frames), monitor_latest.png (the last frame with its particles by class, deposits in their
  own colour), monitor.json and a self-contained monitor.html.

Without `watch`, every frame there is is processed in time order and the call returns;
with it, the folder's listing is polled (`monitor.poll_seconds`: polling, since inotify
misses events on network shares and fires before a file is complete), a file is taken once
its size and mtime stayed unchanged for `monitor.settle_seconds`, and the figures and page
are refreshed every `monitor.refresh_every` frames. Either way a monitor folder resumes: the
frames in frames.csv are never done again, and the particle rows of a frame a kill
interrupted (written before its frames.csv row) are dropped and the frame done again.

Each frame goes through named stages, carried by a `FrameRecord` that each stage adds to:
read -> detect (both on worker threads, a few frames ahead) -> classify (the crops of several
frames in one call) -> measure (the frames.csv and particles.csv rows, by column name) ->
write -> publish (the hooks: alert rules, the latest frame's view, the refresh count, and
any the caller adds with `Monitor.add_hook`). `ga.monitoring.feed` brings the frames.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import subprocess
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import numpy as np

from ga.errors import GAError, one_line
from ga.files import CsvLog, atomic_write_json, keep_rows
from ga.frames import Frame, read_frame, rgb8, upgraded_key
from ga.images import ImageProblem
from ga.monitoring import audit, detection, feed
from ga.monitoring.alerts import parse_rule
from ga.monitoring.columns import (
    ALERT_COLUMNS,
    ALERTS,
    FRAMES,
    PARTICLES,
    QUANTILES,
    STATE,
    bin_columns,
    cell,
    frame_columns,
    geometry_columns,
    numeric_columns,
    particle_columns,
    size_unit,
)
from ga.stats import weighted_percentiles, wilson_interval
from ga.tasks import get_task

if TYPE_CHECKING:
    from ga.config import MonitorConfig
    from ga.loading import LoadedModel

log = logging.getLogger(__name__)
VIEW_SIDE = 1400  # px: monitor_latest.png's frame is taken every n pixels to be at most this wide
STAGES = ("read", "detect", "classify", "measure", "write", "publish")


@dataclass
class Alert:
    """A rule that fired, on the frame where it became true."""

    rule: str
    column: str
    value: float
    threshold: float
    frame: str
    time: str


@dataclass
class MonitorResult:
    """What one call did: frames processed and skipped (this call), particles, alerts."""

    out_dir: str
    frames: int = 0
    skipped: int = 0
    particles: int = 0
    resumed: int = 0  # frames already in frames.csv when the call started
    alerts: list = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.skipped else 0


@dataclass
class FrameRecord:
    """One frame on its way through the stages; each stage fills its part."""

    frame: Frame
    flag: str = ""  # time_backwards: earlier than a frame before it (given at once, or found at measure)
    problem: str = ""  # read: why the frame could not be used ("" when it was)
    view: tuple | None = None  # read: (the frame taken every `step` pixels, step), for monitor_latest.png
    particles: list = field(default_factory=list)  # detect: Particle, each with its prepared crop
    probs: np.ndarray | None = None  # classify: the model's outputs, a row per particle
    on: np.ndarray | None = None  # classify: the classes named, a row of flags per particle
    names: list = field(default_factory=list)  # classify: each particle's class names, ";"-joined
    static: list = field(default_factory=list)  # measure: which particles are deposits
    stamp: str = ""  # measure: the frame's time, ISO
    row: dict = field(default_factory=dict)  # measure: the frames.csv row, by column
    particle_rows: list = field(default_factory=list)  # measure: the particles.csv rows, by column
    alerts: list = field(default_factory=list)  # publish: the Alerts that fired on this frame
    message: dict = field(default_factory=dict)  # publish: what the publishers send (ga.monitoring.publish)


class Monitor:
    """Frames in, rows out: one monitor folder, resumed from what it holds."""

    def __init__(self, model: LoadedModel, out_dir: str, cfg: MonitorConfig, sources: Sequence[str],
                 rules: Sequence[str] = (), on_alert: str | None = None, max_pixels: int = 100_000_000,
                 alert_hook: Callable[[Alert], None] | None = None, workers: int | None = None,
                 threshold: float | None = None):
        from ga.monitoring.outputs import SizeWindows
        from ga.predict import decision_thresholds

        self.model, self.cfg, self.out_dir, self.max_pixels = model, cfg, out_dir, max_pixels
        self.labels = model.labels
        self.thresholds = decision_thresholds(self.labels, threshold)
        self.task = get_task(self.labels)
        self.classes = list(self.labels["classes"])
        self.frame_cols = frame_columns(self.classes, cfg)
        self.particle_cols = particle_columns(self.classes, cfg)
        self.geometry_cols = geometry_columns(cfg)
        self.recent = deque(maxlen=max(1, cfg.static_window))  # the last frames' boxes (static deposits)
        self._told_inverted = False
        self.latest = None  # the last frame monitored, drawn at each refresh (monitor_latest.png)
        self.rules = [parse_rule(r, numeric_columns(self.frame_cols)) for r in rules]
        self.on_alert, self.alert_hook = on_alert, alert_hook
        self.hooks: list[Callable[[FrameRecord], None]] = [self._alerts, self._message, self._keep_latest, self._count]
        self.workers = workers or min(2, os.cpu_count() or 1)
        self.sources = [os.path.abspath(s) for s in sources]
        self.provenance = model.provenance()
        os.makedirs(out_dir, exist_ok=True)
        self._check_state()
        self.done, self.first_time, self.last_time, self.rows_done = self._recover()
        self.names = {r["frame"] for r in self.rows_done}  # frame names in the rows (one each)
        self.frames_log = CsvLog(os.path.join(out_dir, FRAMES), self.frame_cols)
        self.particles_log = CsvLog(os.path.join(out_dir, PARTICLES), self.particle_cols)
        self.alerts_log = CsvLog(os.path.join(out_dir, ALERTS), ALERT_COLUMNS)
        self.result = MonitorResult(out_dir, resumed=len(self.done))
        self._since_refresh = 0
        self.size_column = f"eq_diameter_{size_unit(cfg)}"
        self.windows = SizeWindows.from_folder(out_dir, self.rows_done, cfg.window, self.size_column)

    def add_hook(self, hook: Callable[[FrameRecord], None]) -> None:
        """Call `hook(record)` at the publish stage of every frame, after its rows are written
        (`record.row` is its frames.csv row, `record.particle_rows` its particles). A hook that
        raises is logged (once) and the monitor goes on: publishing never stops it. A hook with a
        `start(layout)` method is given `self.layout()` first (a publisher that lays out its
        variables before the first frame)."""
        name = getattr(hook, "__qualname__", type(hook).__name__)
        failed = []
        start = getattr(hook, "start", None)
        if callable(start):
            try:
                start(self.layout())
            except Exception as exc:  # noqa: BLE001
                log.warning("publishing hook %s could not start (its frames are still written): %s", name,
                            one_line(exc))

        def guarded(record):
            try:
                hook(record)
            except Exception as exc:  # noqa: BLE001  (whatever a publisher raises, the frames go on)
                if not failed:
                    log.warning("publishing hook %s failed on frame %s (said once; it is still called): %s",
                                name, record.frame.name, one_line(exc))
                failed.append(record.frame.name)

        self.hooks.append(guarded)

    def layout(self) -> dict:
        """What a publisher lays out before the first frame: the folder's name, classes, size
        unit and bins, alert rules, and the frames done before."""
        return {"name": os.path.basename(os.path.abspath(self.out_dir)), "out_dir": os.path.abspath(self.out_dir),
                "classes": list(self.classes), "unit": size_unit(self.cfg), "size_bins": list(self.cfg.size_bins),
                "rules": [r.text for r in self.rules], "resumed": len(self.done)}

    # ------------------------------------------------------------------ resuming

    def _check_state(self):
        """A monitor folder belongs to one model and one source: refuse to mix them."""
        path = os.path.join(self.out_dir, STATE)
        if not os.path.isfile(path):
            return
        try:
            with open(path, encoding="utf-8") as fh:
                state = json.load(fh)
        except (OSError, ValueError):
            return
        sha = state.get("model", {}).get("model_sha256")
        if sha and sha != self.provenance["model_sha256"]:
            raise GAError(f"{self.out_dir} holds the monitoring made with another model "
                          f"({state['model'].get('model_file')}); use another folder", arg="out_dir")
        if state.get("sources") and state["sources"] != self.sources:
            raise GAError(f"{self.out_dir} holds the monitoring of {', '.join(state['sources'])}; use another "
                          f"folder", arg="out_dir")

    def _recover(self):
        """(done keys, first time, last time, frames.csv rows) from the folder's files; a
        frame's particle rows without its frames.csv row are dropped (it is done again)."""
        path = os.path.join(self.out_dir, FRAMES)
        rows = keep_rows(path)
        if rows and len(rows[0]) != len(self.frame_cols):
            raise GAError(f"{path} has other columns than this model's monitoring; use another folder",
                          arg="out_dir")
        table = [dict(zip(self.frame_cols, r)) for r in rows]
        written = sum(int(r["particles"]) for r in table)
        dropped = len(keep_rows(os.path.join(self.out_dir, PARTICLES))) - written
        if dropped > 0:
            keep_rows(os.path.join(self.out_dir, PARTICLES), written)
            log.info("resuming: %d particle row(s) of an interrupted frame dropped; that frame is done again", dropped)
        times = [dt.datetime.fromisoformat(r["time"]) for r in table if r["time"]]
        for r in table:  # the rules' windows start where they were
            for rule in self.rules:
                rule.observe(r)
        if table:
            log.info("resuming %s: %d frame(s) done", self.out_dir, len(table))
        return ({upgraded_key(r["key"], r["source"]) for r in table}, min(times) if times else None,
                times[-1] if times else None, table)

    def pending(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        """The frames not done yet. A file rewritten in place after it was done (same name, new
        content: a new key) is a new frame under a name of its own, `x.png#v2`, so no name
        or (frame, particle) pair is in the rows twice."""
        for f in frames:
            if f.key in self.done:
                continue
            if f.name in self.names:
                base, k = f.name, 2
                while f"{base}#v{k}" in self.names:
                    k += 1
                f.name = f"{base}#v{k}"
                log.warning("%s was written again after it was monitored: its new content is frame %s", base, f.name)
            self.names.add(f.name)
            yield f

    # ------------------------------------------------------------------ the stages

    def process(self, frames: Iterable[Frame], flags: dict | None = None) -> int:
        """Every frame given, in order, through the stages (module docstring); returns how many.

        read and detect run on `workers` threads, a few frames ahead; the crops of several
        frames go to the model together (at least `monitor.batch_size` a call)."""
        n, group, crops = 0, [], 0
        for record in self._prepared(frames, flags or {}):
            group.append(record)
            crops += len(record.particles)
            if crops >= self.cfg.batch_size:
                n += self._finish(group)
                group, crops = [], 0
        return n + (self._finish(group) if group else 0)

    def skip(self, frame: Frame, reason: str) -> None:
        """A frame that could not be opened, written as a skipped frame (unless done before)."""
        for f in self.pending([frame]):  # a rewritten file's row under a name of its own
            self._finish([FrameRecord(f, problem=reason)])

    def _finish(self, records):
        self.classify(records)
        for record in records:
            self.measure(record)
            self.write(record)
            self.publish(record)
        return len(records)

    def _prepared(self, frames, flags):
        """FrameRecords read and detected, in order, a few frames ahead on threads."""
        from ga.inputs import prepare_arrays  # noqa: F401  (imported here, not on the threads)

        detection.preload()
        with cf.ThreadPoolExecutor(self.workers) as pool:
            ahead = deque()
            for f in frames:
                ahead.append(pool.submit(self._read_and_detect, FrameRecord(f, flags.get(f.key, ""))))
                if len(ahead) > 2 * self.workers:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()

    def _read_and_detect(self, record):
        pixels = self.read(record)
        if pixels is not None:
            self.detect(record, pixels)
        return record

    def read(self, record: FrameRecord) -> np.ndarray | None:
        """Stage read: the frame's pixels (None, with `record.problem`, when they cannot be
        read) and `record.view`, the frame made small for monitor_latest.png."""
        try:
            pixels = read_frame(record.frame, self.max_pixels)
        except ImageProblem as exc:
            record.problem = str(exc)
            return None
        except (OSError, ValueError) as exc:
            record.problem = one_line(exc)
            return None
        record.frame.pixels = None  # a video frame's pixels are not kept beyond this
        return pixels

    def detect(self, record: FrameRecord, pixels: np.ndarray) -> None:
        """Stage detect: the frame's particles, each with its crop prepared for the model
        (resized as inference resizes; turned over when the model's crops are the other way)."""
        from ga.inputs import prepare_arrays

        particles = detection.detect(pixels, self.cfg)
        image = rgb8(pixels)
        step = max(1, math.ceil(max(image.shape[:2]) / VIEW_SIDE))
        record.view = (np.ascontiguousarray(image[::step, ::step]), step)
        if particles:
            cut = [detection.crop(image, p.box, self.cfg.crop_margin) for p in particles]
            if self._inverted(pixels):
                cut = [255 - c for c in cut]
            for p, c in zip(particles, prepare_arrays(cut, self.labels)):
                p.crop = c
        record.particles = particles

    def _inverted(self, pixels):
        """Whether this frame's crops are turned over for the model (ga.monitoring.crops.turned_over);
        said once in the log."""
        from ga.monitoring.crops import turned_over

        over = turned_over(self.cfg, self.labels, pixels)
        if over and not self._told_inverted and self.cfg.invert_crops == "auto":
            self._told_inverted = True
            log.info("the frames' particles are the other way round from the model's training crops (%s): their "
                     "crops are turned over for it (monitor.invert_crops)", self.labels.get("crop_polarity"))
        return over

    def classify(self, records: Sequence[FrameRecord]) -> None:
        """Stage classify: the crops of a group of frames, `monitor.batch_size` a call; each
        record's outputs, decisions and class names (its crops are let go)."""
        crops = [p.crop for r in records for p in r.particles]
        size = self.cfg.batch_size
        probs = np.concatenate([np.asarray(self.model.predict(np.stack(crops[i:i + size]).astype(np.float32)))
                                for i in range(0, len(crops), size)]) if crops else \
            np.zeros((0, self.task.units(self.classes)), np.float32)
        start = 0
        for r in records:
            r.probs = probs[start:start + len(r.particles)]
            start += len(r.particles)
            for p in r.particles:
                p.crop = None
            r.on = self.task.decide(r.probs, self.classes, self.thresholds) if len(r.probs) else \
                np.zeros((0, len(self.classes)), bool)
            r.names = [";".join(c for c, f in zip(self.classes, flags_on) if f) for flags_on in r.on]

    def measure(self, record: FrameRecord) -> None:
        """Stage measure: the frame's time and flags, deposits, and its rows by column name
        (counts, fractions and sizes leave deposits out)."""
        t = record.frame.time
        if self.first_time is None:
            self.first_time = t
        if t is not None and self.last_time is not None and t < self.last_time and not record.flag:
            record.flag = "time_backwards"
        if t is not None and (self.last_time is None or t > self.last_time):
            self.last_time = t
        record.stamp = t.isoformat() if t is not None else ""
        particles = record.particles
        record.static = self._static(particles) if not record.problem else [False] * len(particles)
        per_class = self.task.class_probabilities(record.probs) if len(record.probs) else \
            np.zeros((0, len(self.classes)))
        record.particle_rows = [self._particle_row(record, i, p, pc)
                                for i, (p, pc) in enumerate(zip(particles, per_class), 1)]
        moving = [i for i, still in enumerate(record.static) if not still]
        record.row = self._frame_row(record, [particles[i] for i in moving], record.on[moving])
        record.row["static_particles"] = sum(record.static)

    def _particle_row(self, record, i, p, per_class):
        geo = detection.with_micrometres(p.geometry, self.cfg.pixel_size_um)
        return {"frame": record.frame.name, "time": record.stamp, "particle": i, "class": record.names[i - 1],
                **{f"p_{c}": cell(float(v)) for c, v in zip(self.classes, per_class)},
                **{k: cell(geo[k], 3) if isinstance(geo[k], float) else geo[k] for k in self.geometry_cols},
                "static": int(record.static[i - 1]), **{k: self.provenance[k] for k in
                                                        ("model_file", "model_sha256", "engine")}}

    def write(self, record: FrameRecord) -> None:
        """Stage write: the particle rows first, then the frame's row, which commits it."""
        self.particles_log.write([[r[c] for c in self.particle_cols] for r in record.particle_rows])
        self.windows.add(record.frame.name, bool(record.problem),
                         [{c: str(r[c]) for c in self.particle_cols} for r in record.particle_rows])
        self.frames_log.write([[record.row[c] for c in self.frame_cols]])
        self.done.add(record.frame.key)
        self.result.frames += 1
        self.result.particles += len(record.particles)
        if record.problem:
            self.result.skipped += 1
            log.warning("skipped frame %s: %s", record.frame.name, record.problem)

    def publish(self, record: FrameRecord) -> None:
        """Stage publish: every hook, in order (alerts, the latest view, the refresh count,
        then those added with `add_hook`)."""
        for hook in self.hooks:
            hook(record)

    def _static(self, particles):
        """Which particles sit where a particle sat in most of the last `monitor.static_window`
        frames (a box at IoU >= 0.5 in at least 80% of them): a deposit on the probe's window,
        not a particle in the flow. Nothing is static until the window has filled."""
        from ga.monitoring.truth import box_iou

        window = self.cfg.static_window
        boxes = [p.box for p in particles]
        if not window or len(self.recent) < window:
            flags = [False] * len(particles)
        else:
            need = math.ceil(0.8 * window)
            flags = [sum(any(box_iou(b, o) >= 0.5 for o in before) for before in self.recent) >= need for b in boxes]
        self.recent.append(boxes)
        return flags

    def _frame_row(self, record, particles, on):
        """frames.csv's row (strings and numbers) for one frame."""
        cfg, u, frame = self.cfg, size_unit(self.cfg), record.frame
        n = len(particles)
        elapsed = (frame.time - self.first_time).total_seconds() if frame.time and self.first_time else ""
        row = {"frame": frame.name, "time": record.stamp, "elapsed_s": cell(elapsed, 3) if elapsed != "" else "",
               "time_source": frame.time_source, "flags": record.flag, "skipped": record.problem, "particles": n,
               "edge_particles": sum(p.edge for p in particles), "source": frame.path, "size": frame.size,
               "mtime_ns": frame.mtime_ns, "key": frame.key}
        for j, c in enumerate(self.classes):
            k = int(on[:, j].sum()) if n else 0
            lo, hi = wilson_interval(k, n, cfg.ci_level)
            row.update({f"{c}_count": k, f"{c}_fraction": cell(k / n) if n else "", f"{c}_fraction_lo": cell(lo),
                        f"{c}_fraction_hi": cell(hi)})
        scale = cfg.pixel_size_um or 1.0
        inside = [i for i, p in enumerate(particles) if not p.edge]
        d = np.array([particles[i].geometry["eq_diameter_px"] * scale for i in inside])
        groups = [("", np.ones(len(inside), bool))] + [
            (f"{c}_", on[inside, j] if len(inside) else np.zeros(0, bool)) for j, c in enumerate(self.classes)]
        for prefix, sel in groups:
            values = d[sel] if len(d) else d
            for weight, w in (("d", None), ("dv", values ** 3)):
                qs = weighted_percentiles(values, w, [q for _, q in QUANTILES])
                for (name, _), v in zip(QUANTILES, qs):
                    row[f"{prefix}{weight}{name}_{u}"] = cell(v, 3)
            if cfg.size_bins:  # [lo, hi) per bin, the particles cut by the edge left out as above
                edges = cfg.size_bins
                row.update({f"{prefix}{name}": int(np.sum((values >= a) & (values < b)))
                            for name, a, b in zip(bin_columns(cfg), edges, edges[1:])})
        return row

    # ------------------------------------------------------------------ the hooks

    def _alerts(self, record):
        row = record.row
        for rule in self.rules:
            value = rule.observe(row)
            if value is None:
                continue
            alert = Alert(rule.text, rule.column, value, rule.value, row["frame"], row["time"])
            self.result.alerts.append(alert)
            record.alerts.append(alert)
            self.alerts_log.write([[alert.time, alert.frame, alert.rule, alert.column, cell(value), cell(rule.value)]])
            audit.append(self.out_dir, "alert", rule=alert.rule, column=alert.column, value=value,
                         threshold=rule.value, frame=alert.frame, frame_time=alert.time)
            if self.alert_hook:
                self.alert_hook(alert)
            if self.on_alert:
                self._run_alert_command(alert)

    def _run_alert_command(self, alert):
        env = {**os.environ, "GA_ALERT_RULE": alert.rule, "GA_ALERT_COLUMN": alert.column,
               "GA_ALERT_VALUE": f"{alert.value:g}", "GA_ALERT_THRESHOLD": f"{alert.threshold:g}",
               "GA_ALERT_FRAME": alert.frame, "GA_ALERT_TIME": alert.time,
               "GA_MONITOR_DIR": os.path.abspath(self.out_dir)}
        try:
            done = subprocess.run(self.on_alert, shell=True, env=env, timeout=60, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            log.warning("--on-alert command still running after 60 s; left behind")
            return
        if done.returncode:
            log.warning("--on-alert command exited %d: %s", done.returncode, (done.stderr or "").strip()[:200])

    def _message(self, record):
        from ga.monitoring.publish import message

        record.message = message(record, self.classes, self.cfg, self.rules, self.result.resumed + self.result.frames)

    def _keep_latest(self, record):
        """The last frame read, with its particles by class, for monitor_latest.png."""
        if record.view is not None and not record.problem:
            self.latest = (record.frame.name, record.stamp, record.view,
                           [(p.box, c, still, p.edge) for p, c, still in zip(record.particles, record.names,
                                                                              record.static)])
        record.view = None

    def _count(self, record):
        self._since_refresh += 1

    # ------------------------------------------------------------------ outputs

    def refresh(self, force: bool = False) -> None:
        """Redraw the figures and rewrite monitor.json and monitor.html (every
        `monitor.refresh_every` frames, or now with `force`)."""
        if not force and self._since_refresh < self.cfg.refresh_every:
            return
        from ga.monitoring.outputs import LATEST, draw_latest, write_outputs

        self._since_refresh = 0
        state = {"sources": self.sources, "model": self.provenance, "task": self.labels["task"],
                 "classes": self.classes, "thresholds": self.thresholds, "monitor": dataclasses.asdict(self.cfg),
                 "rules": [r.text for r in self.rules], "updated": dt.datetime.now().isoformat(timespec="seconds")}
        atomic_write_json(os.path.join(self.out_dir, STATE), state)
        if self.latest is not None:
            name, stamp, (view, step), boxes = self.latest
            draw_latest(view, step, boxes, self.classes, os.path.join(self.out_dir, LATEST),
                        f"{name} ({stamp or 'no time'}): {len(boxes)} particle(s)")
        write_outputs(self.out_dir, state, self.windows)

    def close(self) -> None:
        self.refresh(force=True)
        for f in (self.frames_log, self.particles_log, self.alerts_log):
            f.close()


def monitor(model: LoadedModel, inputs: Sequence[str], out_dir: str, cfg: MonitorConfig, *, rules: Sequence[str] = (),
            on_alert: str | None = None, watch: bool = False, idle_exit: float | None = None,
            max_pixels: int = 100_000_000, alert_hook: Callable[[Alert], None] | None = None,
            progress: Callable[[MonitorResult], None] | None = None, stop: Callable[[], bool] | None = None,
            threshold: float | None = None, bar: bool = False,
            hooks: Sequence[Callable[[FrameRecord], None]] = (), about: dict | None = None) -> MonitorResult:
    """Monitor frames (module docstring). Returns what was done.

    Args:
        model: a loaded model (`ga.loading.load_model`).
        inputs: folders, image files, TIFF stacks, videos; with `watch`, one folder.
        out_dir: the monitor folder (resumed when it holds earlier frames of these inputs).
        cfg: the config's `monitor` section.
        rules: alert rules (`ga.monitoring.alerts`).
        on_alert: a shell command run on each alert, given GA_ALERT_* environment variables.
        watch: keep polling the folder for new frames (`ga monitor --watch`).
        idle_exit: with `watch`, stop after this many seconds without a new frame (None: never).
        alert_hook: called with each Alert as it fires.
        progress: called after every group of frames written.
        stop: polled between frames (and listings); True ends the monitoring there.
        threshold: a decision threshold for every class instead of labels.json's.
        bar: a progress bar on stderr (without `watch`).
        hooks: called with each frame's FrameRecord at the publish stage (`Monitor.add_hook`).
        about: where the settings came from, for the audit trail's start entry (config file,
            calibration; `ga.monitoring.audit`).
    """
    feed.check_inputs(inputs, watch)
    m = Monitor(model, out_dir, cfg, inputs, rules, on_alert, max_pixels, alert_hook, threshold=threshold)
    for hook in hooks:
        m.add_hook(hook)
    _audit_start(m, watch, about or {})
    ending = "finished"
    try:
        if watch:
            feed.watch(m, inputs[0], cfg, idle_exit, progress, stop)
        else:
            feed.all_at_once(m, inputs, cfg, bar, stop)
            if progress:
                progress(m.result)
        ending = "stopped" if stop and stop() else ending
    except BaseException as exc:
        ending = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"failed: {one_line(exc) or type(exc).__name__}"
        raise
    finally:
        m.close()
        r = m.result
        audit.append(out_dir, "stop", ending=ending, frames=r.frames, skipped=r.skipped, particles=r.particles,
                     alerts=len(r.alerts))
    return m.result


def _audit_start(m, watch, about):
    """The audit trail's start entry: the command, the settings and where they came from, the
    model, the software and the host."""
    import platform
    import shlex
    import sys

    from ga import __version__

    audit.append(m.out_dir, "start", command=shlex.join(sys.argv), sources=m.sources, watch=watch,
                 resumed=m.result.resumed, monitor=dataclasses.asdict(m.cfg), rules=[r.text for r in m.rules],
                 model=m.provenance, thresholds=m.thresholds, **about, ga_version=__version__,
                 python=platform.python_version(), host=platform.node())
