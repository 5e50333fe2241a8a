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
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import json
import logging
import math
import os
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import numpy as np

from ga.monitoring.alerts import parse_rule
from ga.errors import GAError, one_line
from ga.files import CsvLog, atomic_write_json, keep_rows
from ga.frames import (Frame, file_time, folder_files, frame_kind, frames_of, iter_sources, left_out, read_frame,
                       rgb8, upgraded_key)
from ga.images import ImageProblem
from ga.monitoring.detection import GEOMETRY, LENGTHS, crop, detect, preload, with_micrometres
from ga.stats import weighted_percentiles, wilson_interval
from ga.tasks import get_task

if TYPE_CHECKING:
    from ga.config import MonitorConfig
    from ga.loading import LoadedModel

log = logging.getLogger(__name__)
VIEW_SIDE = 1400  # px: monitor_latest.png's frame is taken every n pixels to be at most this wide

PARTICLES, FRAMES, ALERTS, STATE = "particles.csv", "frames.csv", "alerts.csv", "monitor.json"
QUANTILES = (("10", 0.1), ("50", 0.5), ("90", 0.9))
ALERT_COLUMNS = ["time", "frame", "rule", "column", "value", "threshold"]


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


# ---------------------------------------------------------------------------- columns


def size_unit(cfg: MonitorConfig) -> str:
    return "um" if cfg.pixel_size_um else "px"


def frame_columns(classes: Sequence[str], cfg: MonitorConfig) -> list[str]:
    """frames.csv's columns for a model's classes."""
    u = size_unit(cfg)
    sizes = lambda prefix: [f"{prefix}{w}{q}_{u}" for w in ("d", "dv") for q, _ in QUANTILES]  # noqa: E731
    cols = ["frame", "time", "elapsed_s", "time_source", "flags", "skipped", "particles", "edge_particles",
            "static_particles"]
    for c in classes:
        cols += [f"{c}_count", f"{c}_fraction", f"{c}_fraction_lo", f"{c}_fraction_hi"]
    cols += sizes("")
    for c in classes:
        cols += sizes(f"{c}_")
    for prefix in ["", *(f"{c}_" for c in classes)]:
        cols += [f"{prefix}{name}" for name in bin_columns(cfg)]
    return cols + ["source", "size", "mtime_ns", "key"]


def bin_columns(cfg: MonitorConfig) -> list[str]:
    """`count_<lo>_<hi>_<unit>` for each size bin of `monitor.size_bins` (none without)."""
    def edge(v):
        return "inf" if math.isinf(v) else f"{v:g}"

    e = cfg.size_bins
    return [f"count_{edge(a)}_{edge(b)}_{size_unit(cfg)}" for a, b in zip(e, e[1:])]


def geometry_columns(cfg: MonitorConfig) -> list[str]:
    """particles.csv's geometry columns (micrometre ones with monitor.pixel_size_um)."""
    geometry = list(GEOMETRY)
    if cfg.pixel_size_um:
        geometry += [f"{k}_um" for k in LENGTHS] + ["area_um2"]
    return geometry


def particle_columns(classes: Sequence[str], cfg: MonitorConfig) -> list[str]:
    """particles.csv's columns for a model's classes."""
    return (["frame", "time", "particle", "class", *(f"p_{c}" for c in classes), *geometry_columns(cfg), "static"]
            + ["model_file", "model_sha256", "engine"])


def _fmt(v, digits=6):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}".rstrip("0").rstrip(".") if digits else str(round(v))
    return v


# ---------------------------------------------------------------------------- the monitor


class Monitor:
    """Frames in, rows out: one monitor folder, resumed from what it holds."""

    def __init__(self, model: LoadedModel, out_dir: str, cfg: MonitorConfig, sources: Sequence[str],
                 rules: Sequence[str] = (), on_alert: str | None = None, max_pixels: int = 100_000_000,
                 alert_hook: Callable[[Alert], None] | None = None, workers: int | None = None,
                 threshold: float | None = None):
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
        self.rules = [parse_rule(r, self._numeric_columns()) for r in rules]
        self.on_alert, self.alert_hook = on_alert, alert_hook
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
        from ga.monitoring.outputs import SizeWindows

        self.size_column = f"eq_diameter_{size_unit(cfg)}"
        self.windows = SizeWindows.from_folder(out_dir, self.rows_done, cfg.window, self.size_column)

    def _numeric_columns(self):
        return [c for c in self.frame_cols if c not in ("frame", "time", "time_source", "flags", "skipped", "source",
                                                         "key")]

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
        return ({upgraded_key(r["key"], r["source"]) for r in table}, min(times) if times else None, times[-1] if times else None, table)

    # ------------------------------------------------------------------ processing

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

    def process(self, frames: Iterable[Frame], flags: dict | None = None) -> int:
        """Detect, classify and write every frame given, in order; returns how many.

        Frames are read and their particles found on `workers` threads; crops of several
        frames go to the model together (at least `monitor.batch_size` a call)."""
        n = 0
        batch, crops = [], 0
        for item in self._detected(frames):
            batch.append(item)
            crops += len(item[2])
            if crops >= self.cfg.batch_size:
                n += self._classify_and_write(batch, flags or {})
                batch, crops = [], 0
        if batch:
            n += self._classify_and_write(batch, flags or {})
        return n

    def _detected(self, frames):
        """(frame, RGB pixels or reason, particles) in order, a few frames ahead on threads."""
        from ga.inputs import prepare_arrays  # noqa: F401  (imported here, not on the threads)

        preload()
        with cf.ThreadPoolExecutor(self.workers) as pool:
            ahead = deque()
            for f in frames:
                ahead.append((f, pool.submit(self._detect_one, f)))
                if len(ahead) > 2 * self.workers:
                    f0, fut = ahead.popleft()
                    yield (f0, *fut.result())
            while ahead:
                f0, fut = ahead.popleft()
                yield (f0, *fut.result())

    def _detect_one(self, frame):
        """(reason or None, particles): the frame read, its particles found and their crops
        prepared for the model (resized as inference resizes), on a worker thread."""
        from ga.inputs import prepare_arrays

        try:
            pixels = read_frame(frame, self.max_pixels)
        except ImageProblem as exc:
            return str(exc), []
        except (OSError, ValueError) as exc:
            return one_line(exc), []
        frame.pixels = None  # a video frame's pixels are not kept beyond this
        particles = detect(pixels, self.cfg)
        image = rgb8(pixels)
        step = max(1, math.ceil(max(image.shape[:2]) / VIEW_SIDE))
        frame.view = (np.ascontiguousarray(image[::step, ::step]), step)  # for monitor_latest.png
        if particles:
            cut = [crop(image, p.box, self.cfg.crop_margin) for p in particles]
            if self._inverted(pixels):
                cut = [255 - c for c in cut]
            ready = prepare_arrays(cut, self.labels)
            for p, c in zip(particles, ready):
                p.crop = c
        return None, particles

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

    def _classify_and_write(self, batch, flags):
        """Classify the crops of a group of frames, `monitor.batch_size` a call, then write
        each frame's rows."""
        crops = [p.crop for _, _, ps in batch for p in ps]
        size = self.cfg.batch_size
        probs = np.concatenate([np.asarray(self.model.predict(np.stack(crops[i:i + size]).astype(np.float32)))
                                for i in range(0, len(crops), size)]) if crops else \
            np.zeros((0, self.task.units(self.classes)), np.float32)
        start = 0
        for frame, problem, particles in batch:
            p = probs[start:start + len(particles)]
            start += len(particles)
            for particle in particles:
                particle.crop = None
            self._write_frame(frame, problem, particles, p, flags.get(frame.key, ""))
        return len(batch)

    def _write_frame(self, frame, problem, particles, probs, flag):
        t = frame.time
        if self.first_time is None:
            self.first_time = t
        if t is not None and self.last_time is not None and t < self.last_time and not flag:
            flag = "time_backwards"
        if t is not None and (self.last_time is None or t > self.last_time):
            self.last_time = t
        stamp = t.isoformat() if t is not None else ""
        on = self.task.decide(probs, self.classes, self.thresholds) if len(probs) else \
            np.zeros((0, len(self.classes)), bool)
        per_class = self.task.class_probabilities(probs) if len(probs) else np.zeros((0, len(self.classes)))
        static = self._static(particles) if not problem else [False] * len(particles)
        rows = []
        names = [";".join(c for c, f in zip(self.classes, flags_on) if f) for flags_on in on]
        for i, (p, named, pc, still) in enumerate(zip(particles, names, per_class, static), 1):
            geo = with_micrometres(p.geometry, self.cfg.pixel_size_um)
            rows.append([frame.name, stamp, i, named, *(_fmt(float(v)) for v in pc),
                         *(_fmt(geo[k], 3) if isinstance(geo[k], float) else geo[k] for k in self.geometry_cols),
                         int(still), self.provenance["model_file"], self.provenance["model_sha256"],
                         self.provenance["engine"]])
        moving = [i for i, still in enumerate(static) if not still]  # counts, fractions and sizes leave deposits out
        row = self._frame_row(frame, stamp, flag, problem, [particles[i] for i in moving], on[moving])
        row["static_particles"] = sum(static)
        self.particles_log.write(rows)  # particle rows first: frames.csv's row commits the frame
        self.windows.add(frame.name, bool(problem), [dict(zip(self.particle_cols, map(str, r))) for r in rows])
        self.frames_log.write([[row[c] for c in self.frame_cols]])
        self.done.add(frame.key)
        self.result.frames += 1
        self.result.particles += len(particles)
        if problem:
            self.result.skipped += 1
            log.warning("skipped frame %s: %s", frame.name, problem)
        self._alerts(row)
        self._since_refresh += 1
        view = getattr(frame, "view", None)
        frame.view = None
        if view is not None and not problem:
            self.latest = (frame.name, stamp, view, [(p.box, c, still, p.edge)
                                                     for p, c, still in zip(particles, names, static)])

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

    def _frame_row(self, frame, stamp, flag, problem, particles, on):
        """frames.csv's row (strings and numbers) for one frame."""
        cfg, u = self.cfg, size_unit(self.cfg)
        n = len(particles)
        elapsed = (frame.time - self.first_time).total_seconds() if frame.time and self.first_time else ""
        row = {"frame": frame.name, "time": stamp, "elapsed_s": _fmt(elapsed, 3) if elapsed != "" else "",
               "time_source": frame.time_source, "flags": flag, "skipped": problem or "", "particles": n,
               "edge_particles": sum(p.edge for p in particles), "source": frame.path, "size": frame.size,
               "mtime_ns": frame.mtime_ns, "key": frame.key}
        for j, c in enumerate(self.classes):
            k = int(on[:, j].sum()) if n else 0
            lo, hi = wilson_interval(k, n, cfg.ci_level)
            row.update({f"{c}_count": k, f"{c}_fraction": _fmt(k / n) if n else "", f"{c}_fraction_lo": _fmt(lo),
                        f"{c}_fraction_hi": _fmt(hi)})
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
                    row[f"{prefix}{weight}{name}_{u}"] = _fmt(v, 3)
            if cfg.size_bins:  # [lo, hi) per bin, the particles cut by the edge left out as above
                edges = cfg.size_bins
                row.update({f"{prefix}{name}": int(np.sum((values >= a) & (values < b)))
                            for name, a, b in zip(bin_columns(cfg), edges, edges[1:])})
        return row

    def _alerts(self, row):
        for rule in self.rules:
            value = rule.observe(row)
            if value is None:
                continue
            alert = Alert(rule.text, rule.column, value, rule.value, row["frame"], row["time"])
            self.result.alerts.append(alert)
            self.alerts_log.write([[alert.time, alert.frame, alert.rule, alert.column, _fmt(value), _fmt(rule.value)]])
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

    # ------------------------------------------------------------------ outputs

    def refresh(self, force: bool = False) -> None:
        """Redraw the figures and rewrite monitor.json and monitor.html (every
        `monitor.refresh_every` frames, or now with `force`)."""
        if not force and self._since_refresh < self.cfg.refresh_every:
            return
        from ga.monitoring.outputs import write_outputs

        self._since_refresh = 0
        state = {"sources": self.sources, "model": self.provenance, "task": self.labels["task"],
                 "classes": self.classes, "thresholds": self.thresholds, "monitor": _config_dict(self.cfg), "rules": [r.text for r in self.rules],
                 "updated": dt.datetime.now().isoformat(timespec="seconds")}
        atomic_write_json(os.path.join(self.out_dir, STATE), state)
        if self.latest is not None:
            from ga.monitoring.outputs import LATEST, draw_latest

            name, stamp, (view, step), boxes = self.latest
            draw_latest(view, step, boxes, self.classes, os.path.join(self.out_dir, LATEST),
                        f"{name} ({stamp or 'no time'}): {len(boxes)} particle(s)")
        write_outputs(self.out_dir, state, self.windows)

    def close(self) -> None:
        self.refresh(force=True)
        for f in (self.frames_log, self.particles_log, self.alerts_log):
            f.close()


def _config_dict(cfg):
    import dataclasses

    return dataclasses.asdict(cfg)


# ---------------------------------------------------------------------------- sources


def ordered_frames(paths: Sequence[str], cfg: MonitorConfig, errors: list) -> tuple[list, dict]:
    """(frame groups in time order, {key: flag}) for files given at once: each file's
    frames in their own order, files by time (ties by name); a file whose time is earlier
    than a file before it by name is flagged `time_backwards`. A file that cannot be opened
    becomes (Frame, reason) in `errors`."""
    entries = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as exc:
            errors.append((Frame(os.path.basename(path), path, 0, 0), exc.strerror or str(exc)))
            continue
        t, _ = file_time(path, st.st_mtime_ns, cfg.time_sources, cfg.time_pattern)
        entries.append((os.path.basename(path), t, path, st))
    flags, latest = {}, None
    for name, t, path, st in sorted(entries, key=lambda e: e[0]):
        if latest is not None and t < latest:
            flags[path] = "time_backwards"
        latest = t if latest is None or t > latest else latest
    ordered = sorted(entries, key=lambda e: (e[1], e[0]))
    return [(path, st) for _, _, path, st in ordered], flags


def _frames(groups, cfg, errors, flags_by_path, flags):
    """Every frame of the files in order; a file that cannot be opened becomes an error row."""
    for path, st in groups:
        try:
            for f in frames_of(path, cfg.time_sources, cfg.time_pattern, st):
                if path in flags_by_path:
                    flags[f.key] = flags_by_path[path]
                yield f
        except ImageProblem as exc:
            errors.append((Frame(os.path.basename(path), path, st.st_size, st.st_mtime_ns), str(exc)))


def monitor(model: LoadedModel, inputs: Sequence[str], out_dir: str, cfg: MonitorConfig, rules: Sequence[str] = (),
            on_alert: str | None = None, watch: bool = False, idle_exit: float | None = None,
            max_pixels: int = 100_000_000, alert_hook: Callable[[Alert], None] | None = None,
            progress: Callable[[MonitorResult], None] | None = None, stop: Callable[[], bool] | None = None,
            threshold: float | None = None, bar: bool = False) -> MonitorResult:
    """Monitor frames (module docstring). Returns what was done.

    Args:
        model: a loaded model (`ga.loading.load_model`).
        inputs: folders, image files, TIFF stacks, videos; with `watch`, one folder.
        out_dir: the monitor folder (resumed when it holds earlier frames of these inputs).
        cfg: the config's `monitor` section.
        rules: alert rules (`ga.monitoring.alerts`).
        on_alert: a shell command run on each alert, given GA_ALERT_* environment variables.
        watch: keep polling the folder for new frames.
        idle_exit: with `watch`, stop after this many seconds without a new frame (None: never).
        alert_hook: called with each Alert as it fires.
        progress: called after every group of frames written.
        stop: polled between frames (and listings); True ends the monitoring there.
        threshold: a decision threshold for every class instead of labels.json's.
        bar: a progress bar on stderr (without `watch`).
    """
    check_inputs(inputs, watch)
    m = Monitor(model, out_dir, cfg, inputs, rules, on_alert, max_pixels, alert_hook, threshold=threshold)
    try:
        if watch:
            _watch(m, inputs[0], cfg, idle_exit, progress, stop)
        else:
            _all_at_once(m, inputs, cfg, bar, stop)
            if progress:
                progress(m.result)
    finally:
        m.close()
    return m.result


def check_inputs(inputs: Sequence[str], watch: bool = False) -> None:
    """A GAError when an input is missing, or `watch` is not given exactly one folder."""
    missing = [i for i in inputs if not os.path.exists(i)]
    if missing:
        raise GAError(f"not found: {', '.join(missing)}", arg="inputs")
    if watch and (len(inputs) != 1 or not os.path.isdir(inputs[0])):
        raise GAError("takes one folder", arg="watch")


def _all_at_once(m, inputs, cfg, bar, stop):
    """Every frame of the inputs not done yet, in time order, with a progress bar."""
    import sys

    from tqdm import tqdm

    errors, flags = [], {}
    groups, by_path = ordered_frames(list(iter_sources(inputs)), cfg, errors)
    videos = any(frame_kind(p) == "video" for p, _ in groups)
    todo = list(m.pending(_frames(groups, cfg, errors, by_path, flags))) if not videos else None
    frames = todo if todo is not None else m.pending(_frames(groups, cfg, errors, by_path, flags))
    with tqdm(total=len(todo) if todo is not None else None, unit="frame", desc="monitor", file=sys.stderr,
              disable=not bar) as progress_bar:
        def counted(items):
            for f in items:
                if stop and stop():
                    return
                yield f
                progress_bar.update(1)

        m.process(counted(frames), flags)
    _write_errors(m, errors)


def _write_errors(m, errors):
    for frame, reason in errors:
        for f in m.pending([frame]):  # not done yet; a rewritten file's row under a name of its own
            m._write_frame(f, reason, [], np.zeros((0, 1)), "")
    errors.clear()


def _watch(m, folder, cfg, idle_exit, progress, stop):
    """Poll the folder: take settled files in time order, until stopped or idle."""
    seen: dict[str, list] = {}  # path -> [(size, mtime_ns), when first seen so, handled (size, mtime_ns)]
    last_new = time.monotonic()
    gone = False
    log.info("watching %s: looked at every %g s, a file taken once unchanged for %g s", folder, cfg.poll_seconds,
             cfg.settle_seconds)
    for why in left_out(folder):  # said once: the listing leaves them out at every look
        log.warning("%s", why)
    while not (stop and stop()):
        now = time.monotonic()
        there = os.path.isdir(folder)
        if not there and not gone:
            log.warning("%s is not there (unmounted?); waiting for it to come back", folder)
        elif there and gone:
            log.info("%s is back", folder)
        gone = not there
        ready = []
        for path in folder_files(folder):
            try:
                st = os.stat(path)
            except OSError:  # gone between the listing and now
                continue
            sig = (st.st_size, st.st_mtime_ns)
            entry = seen.get(path)
            if entry is None or entry[0] != sig:
                seen[path] = [sig, now, entry[2] if entry else None]
            elif now - entry[1] >= cfg.settle_seconds and entry[2] != sig:
                ready.append(path)
        if ready:
            errors, flags = [], {}
            groups, by_path = ordered_frames(ready, cfg, errors)
            n = m.process(m.pending(_frames(groups, cfg, errors, by_path, flags)), flags)
            _write_errors(m, errors)
            for path in ready:  # handled: looked at again only when it changes
                seen[path][2] = seen[path][0]
            if n:
                last_new = time.monotonic()
                m.refresh()
                if progress:
                    progress(m.result)
        if idle_exit is not None and time.monotonic() - last_new >= idle_exit:
            break
        time.sleep(cfg.poll_seconds)
