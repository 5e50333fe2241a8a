"""A monitor folder's figures and page, drawn from its own files (frames.csv, particles.csv,
alerts.csv, monitor.json), so they can be rebuilt at any time and by anyone.

- monitor_trend.png: per class, the fraction of particles over time with its Wilson band
  (binary models: the positive class only); the particle count per class; d50 per class
  (number-weighted equivalent diameter, particles cut by the frame edge left out).
- monitor_sizes.png: the number-weighted distribution of equivalent diameters per class in
  the first and the last `monitor.window` frames monitored (a running monitor keeps their
  particle rows in memory; rebuilt from the files, particles.csv is read once).
- monitor_bins.png (with `monitor.size_bins`): each size bin's count over time, for all
  particles and per class (the "fines" and "coarse" counts an FBRM user reads).
- monitor_latest.png: the last frame monitored, each particle's box in its class's colour,
  deposits on the window (static) in their own (magenta), particles cut by the edge dashed;
  drawn by the running monitor only (frames are not kept).
- monitor.html: self-contained (figures as data URIs): the source, the model, the counts,
  the last frame's fractions, the alerts, the skipped frames and the detection settings.
"""

from __future__ import annotations

import csv
import html
import os
from collections import deque
from typing import Any, Sequence

import numpy as np

from ga.files import atomic_write_text
from ga.figures import pyplot, save_figure
from ga.report import STYLE, embedded_figures, html_table
from ga.monitoring.truth import box_iou

TREND, SIZES, PAGE = "monitor_trend.png", "monitor_sizes.png", "monitor.html"
NOTES = "notes.csv"  # operator notes: time, note (`ga monitor note DIR TEXT`)
LATEST = "monitor_latest.png"
BINS = "monitor_bins.png"
STATIC_COLOUR = "magenta"  # a deposit on the probe's window, in monitor_latest.png
# The outline colours of --show-detection and calibration.png: kept, cut by the edge, dropped by reason.
DETECTION_COLOURS = {"": "lime", "edge": "cyan", "small": "0.6", "out of focus": "orange", "large": "red"}


def _read(path, columns=None):
    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = csv.DictReader(fh)
        if columns is None:
            return list(rows)
        return [{k: r.get(k, "") for k in columns} for r in rows]


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _shown_classes(state):
    """The classes whose fraction is drawn: a model's positive class (binary), else all."""
    from ga.tasks import get_task

    positive = get_task(state["task"]).positive_class(state["classes"])
    return [positive] if positive else state["classes"]


def _time_axis(frames):
    """(x values, label): minutes since the first frame (seconds for runs under 3 minutes)."""
    t = np.array([_num(r["elapsed_s"]) for r in frames])
    if len(t) and np.nanmax(t) >= 180:
        return t / 60.0, "time since the first frame (min)"
    return t, "time since the first frame (s)"


def add_note(out_dir: str, text: str, when: Any = None) -> list[str]:
    """Append an operator's note to a monitor folder's notes.csv (time: `when`, a datetime,
    or now). Returns the row written."""
    import datetime as dt

    from ga.errors import GAError

    if not os.path.isfile(os.path.join(out_dir, "frames.csv")):
        raise GAError(f"{out_dir}: not a monitor folder (no frames.csv)")
    if not text.strip():
        raise GAError("the note is empty", arg="TEXT")
    path = os.path.join(out_dir, NOTES)
    row = [(when or dt.datetime.now()).isoformat(timespec="seconds"), " ".join(text.split())]
    fresh = not os.path.isfile(path) or os.path.getsize(path) == 0
    with open(path, "a", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        if fresh:
            w.writerow(["time", "note"])
        w.writerow(row)
    from ga.monitoring import audit

    audit.append(out_dir, "note", note_time=row[0], note=row[1])
    return row


def events(out_dir: str, frames: Sequence[dict]) -> list[tuple[float, str, str]]:
    """(seconds since the first frame, "alert" or "note", text) of the folder's alerts (at
    their frame) and notes (at their time, against the frames' clock); undatable ones left out."""
    import datetime as dt

    elapsed = {r["frame"]: _num(r["elapsed_s"]) for r in frames}
    out = [(elapsed.get(a["frame"], float("nan")), "alert", a["rule"]) for a in _read(os.path.join(out_dir, "alerts.csv"))]
    start = next((dt.datetime.fromisoformat(r["time"]) - dt.timedelta(seconds=_num(r["elapsed_s"]))
                  for r in frames if r["time"] and r["elapsed_s"]), None)
    for n in _read(os.path.join(out_dir, NOTES)):
        try:
            out.append(((dt.datetime.fromisoformat(n["time"]) - start).total_seconds(), "note", n["note"]))
        except (TypeError, ValueError):
            continue
    return [e for e in out if e[0] == e[0]]


def plot_trend(frames: Sequence[dict], state: dict, path: str, marks: Sequence[tuple[float, str, str]] = ()) -> str:
    """monitor_trend.png from frames.csv's rows (module docstring); `marks` (`events`): alerts
    (red dashed) and operator notes (grey, labelled) as vertical lines."""
    frames = sorted((r for r in frames if not r["skipped"]), key=lambda r: _num(r["elapsed_s"]))
    unit = "um" if state["monitor"].get("pixel_size_um") else "px"
    x, xlabel = _time_axis(frames)
    fig, axes = pyplot().subplots(3, 1, figsize=(9, 9), sharex=True)
    level = int(round(100 * state["monitor"].get("ci_level", 0.95)))
    for c in _shown_classes(state):
        f = np.array([_num(r[f"{c}_fraction"]) for r in frames])
        lo = np.array([_num(r[f"{c}_fraction_lo"]) for r in frames])
        hi = np.array([_num(r[f"{c}_fraction_hi"]) for r in frames])
        (line,) = axes[0].plot(x, f, marker=".", ms=3, lw=1, label=f"{c} fraction")
        axes[0].fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0, label=f"{c}: {level}% Wilson interval")
    axes[0].set(ylabel="fraction of particles", ylim=(0, 1))
    axes[1].plot(x, [_num(r["particles"]) for r in frames], color="k", lw=1, label="all")
    for c in state["classes"]:
        axes[1].plot(x, [_num(r[f"{c}_count"]) for r in frames], lw=1, label=c)
        axes[2].plot(x, [_num(r[f"{c}_d50_{unit}"]) for r in frames], marker=".", ms=3, lw=1, label=c)
    axes[1].set(ylabel="particles per frame")
    axes[2].set(ylabel=f"d50 ({'µm' if unit == 'um' else 'px'}), number-weighted", xlabel=xlabel)
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, loc="best")
    per = 60.0 if xlabel.endswith("(min)") else 1.0
    for t, kind, text in marks:
        for ax in axes:
            ax.axvline(t / per, color="red" if kind == "alert" else "0.35", ls="--" if kind == "alert" else ":", lw=0.9)
        if kind == "note":
            axes[0].annotate(text[:40], (t / per, 1.0), xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                             va="top", ha="right", color="0.25")
    axes[0].set_title(f"{len(frames)} frames" + (" (red dashed: alerts; dotted: notes)" if marks else ""))
    return save_figure(fig, path)


def _size_column(state):
    return f"eq_diameter_{'um' if state['monitor'].get('pixel_size_um') else 'px'}"


class SizeWindows:
    """The particle rows the size figure needs, kept in memory while a monitor runs: those of
    the first and of the last `window` frames monitored (skipped frames aside), so a refresh
    costs the same at frame 10 and at frame 100,000 (reading particles.csv grew with the run)."""

    COLUMNS = ("frame", "class", "edge", "static")

    def __init__(self, window: int, column: str):
        self.window, self.column = max(1, int(window)), column
        self.first: list[tuple[str, list[dict]]] = []
        self.last: deque = deque(maxlen=self.window)

    def add(self, frame: str, skipped: bool, rows: Sequence[dict]) -> None:
        """One frame's particle rows (dicts holding at least COLUMNS and the size column)."""
        if skipped:
            return
        kept = [{k: r.get(k, "") for k in (*self.COLUMNS, self.column)} for r in rows]
        if len(self.first) < self.window:
            self.first.append((frame, kept))
        self.last.append((frame, kept))

    def rows(self) -> list[dict]:
        seen, out = set(), []
        for frame, rows in (*self.first, *self.last):
            if frame not in seen:
                seen.add(frame)
                out.extend(rows)
        return out

    @classmethod
    def from_folder(cls, out_dir: str, frames: Sequence[dict], window: int, column: str) -> "SizeWindows":
        """The windows of a folder's frames.csv rows (in order), particles.csv read once."""
        windows = cls(window, column)
        done = [r["frame"] for r in frames if not r["skipped"]]
        wanted = set(done[:windows.window]) | set(done[-windows.window:])
        by_frame: dict[str, list[dict]] = {}
        path = os.path.join(out_dir, "particles.csv")
        if os.path.isfile(path):
            with open(path, newline="", encoding="utf-8") as fh:
                rows = csv.reader(fh)
                header = next(rows, [])
                names = [c for c in (*cls.COLUMNS, column) if c in header]
                at = [header.index(c) for c in names]
                for r in rows:  # only the windows' rows become dicts
                    if len(r) == len(header) and r[at[0]] in wanted:
                        by_frame.setdefault(r[at[0]], []).append({c: r[i] for c, i in zip(names, at)})
        for r in frames:
            windows.add(r["frame"], bool(r["skipped"]), by_frame.get(r["frame"], []))
        return windows


def plot_sizes(frames: Sequence[dict], particles: Sequence[dict], state: dict, path: str) -> str:
    """monitor_sizes.png: equivalent diameters of the first and last `monitor.window` frames
    monitored (frames.csv's order; skipped frames aside), per class."""
    window = int(state["monitor"].get("window", 10))
    unit = "um" if state["monitor"].get("pixel_size_um") else "px"
    done = [r for r in frames if not r["skipped"]]
    first = {r["frame"] for r in done[:window]}
    last = {r["frame"] for r in done[-window:]}
    column = _size_column(state)
    classes = state["classes"]
    fig, axes = pyplot().subplots(1, len(classes), figsize=(4.5 * len(classes), 3.8), squeeze=False)
    particles = [p for p in particles if p["edge"] == "0" and p.get("static", "0") != "1"]  # cut or stuck: left out
    d_all = np.array([_num(p[column]) for p in particles])
    d_all = d_all[np.isfinite(d_all) & (d_all > 0)]
    bins = np.geomspace(max(d_all.min(), 1e-3) * 0.9, d_all.max() * 1.1, 25) if len(d_all) else np.geomspace(1, 100, 25)
    for ax, c in zip(axes[0], classes):
        for frames_set, name, style in ((first, f"first {len(first)} frames", "-"), (last, f"last {len(last)} frames", "--")):
            d = np.array([_num(p[column]) for p in particles if p["frame"] in frames_set and c in p["class"].split(";")])
            if len(d):
                ax.hist(d, bins=bins, histtype="step", linestyle=style, lw=1.5, label=f"{name} (n={len(d)})")
        ax.set(xscale="log", title=c, xlabel=f"equivalent diameter ({'µm' if unit == 'um' else 'px'})",
               ylabel="particles")
        _plain_log_ticks(ax.xaxis)
        if ax.patches:
            ax.legend(fontsize=7)
    return save_figure(fig, path)


def _plain_log_ticks(axis) -> None:
    """Log-axis labels as plain numbers (20, not 2×10¹), the minor ones at 2 and 5 only, so
    that a range inside one or two decades is labelled without the labels running together."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))


def _summary(frames, state):
    done = [r for r in frames if not r["skipped"]]
    rows = [("frames", len(frames)), ("skipped frames", len(frames) - len(done)),
            ("particles", int(sum(_num(r["particles"]) for r in done)))]
    if done:
        last = max(done, key=lambda r: _num(r["elapsed_s"]))
        rows.append(("last frame", f"{last['frame']} ({last['time']})"))
        for c in _shown_classes(state):
            rows.append((f"{c} fraction, last frame",
                         f"{last[f'{c}_fraction'] or 'n/a'} ({last[f'{c}_fraction_lo']}–{last[f'{c}_fraction_hi']})"))
    return rows


def build_page(out_dir: str, state: dict, frames: Sequence[dict] | None = None) -> str:
    """monitor.html's text; `frames`: frames.csv's rows when the caller has read them."""
    frames = _read(os.path.join(out_dir, "frames.csv")) if frames is None else frames
    alerts = _read(os.path.join(out_dir, "alerts.csv"))
    notes = _read(os.path.join(out_dir, NOTES))
    model = state["model"]
    skipped = [(r["frame"], r["skipped"]) for r in frames if r["skipped"]]
    flagged = [(r["frame"], r["flags"]) for r in frames if r["flags"]]
    figures = [f for f in (TREND, SIZES, BINS, LATEST) if os.path.isfile(os.path.join(out_dir, f))]
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>monitor: {html.escape(out_dir)}</title>"
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Monitoring of {html.escape(', '.join(state['sources']))}</h1>",
        f"<p>Updated {html.escape(state['updated'])}. Model {html.escape(str(model.get('model_file')))} "
        f"(sha256 {html.escape(str(model.get('model_sha256'))[:16])}…, {html.escape(str(model.get('engine')))} engine), "
        f"classes {html.escape(', '.join(state['classes']))}.</p>",
        "<h2>Summary</h2>", html_table(_summary(frames, state), ("", "value")),
        "<h2>Alerts</h2>",
        (html_table([(a["time"], a["frame"], a["rule"], a["value"]) for a in alerts], ("time", "frame", "rule", "value"))
         if alerts else f"<p>None fired. Rules: {html.escape('; '.join(state['rules']) or 'none given')}.</p>"),
        "<h2>Figures</h2>", embedded_figures(out_dir, figures),
        *(["<h2>Notes</h2>", html_table([(n["time"], n["note"]) for n in notes], ("time", "note"))] if notes else []),
        *(["<h2>Skipped frames</h2>", html_table(skipped, ("frame", "reason"))] if skipped else []),
        *(["<h2>Flagged frames</h2>", html_table(flagged, ("frame", "flag"))] if flagged else []),
        "<h2>Detection settings (monitor.*)</h2>", html_table(sorted(state["monitor"].items()), ("key", "value")),
        "</body></html>",
    ]
    return "\n".join(parts)


def write_outputs(out_dir: str, state: dict, windows: SizeWindows | None = None) -> list[str]:
    """Redraw both figures and write monitor.html; returns the files written. `windows`: the
    running monitor's size windows (without them particles.csv is read)."""
    frames = _read(os.path.join(out_dir, "frames.csv"))
    written = []
    if any(not r["skipped"] for r in frames):
        written.append(plot_trend(frames, state, os.path.join(out_dir, TREND), events(out_dir, frames)))
        if windows is None:
            windows = SizeWindows.from_folder(out_dir, frames, int(state["monitor"].get("window", 10)),
                                              _size_column(state))
        written.append(plot_sizes(frames, windows.rows(), state, os.path.join(out_dir, SIZES)))
        if any(k.startswith("count_") for k in frames[0]):
            written.append(plot_bins(frames, state, os.path.join(out_dir, BINS)))
    page = os.path.join(out_dir, PAGE)
    atomic_write_text(page, build_page(out_dir, state, frames))
    return written + [page]


def draw_detection(frame: Any, particles: Sequence[Any], path: str, title: str = "") -> str:
    """A frame with every detected object's outline: kept (green; cut by the edge: cyan) and
    dropped, with the reason (small: grey, out of focus: orange, large: red)."""
    from ga.frames import rgb8

    colours = DETECTION_COLOURS
    img = rgb8(frame)
    h, w = img.shape[:2]
    fig, ax = pyplot().subplots(figsize=(min(16, w / 80), min(12, h / 80) + 0.5))
    ax.imshow(img, cmap="gray")
    counts = {}
    for p in particles:
        kind = p.dropped or ("edge" if p.edge else "")
        counts[kind] = counts.get(kind, 0) + 1
        x0, y0, x1, y1 = p.box
        if p.outline is not None and len(p.outline):
            ax.plot(p.outline[:, 1], p.outline[:, 0], ",", color=colours[kind], alpha=0.9)
        if kind != "small":
            ax.add_patch(pyplot().Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=0.6,
                                            ec=colours[kind]))
    names = {"": "kept", "edge": "kept, cut by the edge"}
    found = ", ".join(f"{names.get(k, k)} {n}" for k, n in sorted(counts.items())) or "nothing found"
    ax.set_title((title + ": " if title else "") + found, fontsize=9)
    ax.set_axis_off()
    return save_figure(fig, path)


def plot_bins(frames: Sequence[dict], state: dict, path: str) -> str:
    """monitor_bins.png from frames.csv's `count_<lo>_<hi>_<unit>` columns (module docstring)."""
    frames = sorted((r for r in frames if not r["skipped"]), key=lambda r: _num(r["elapsed_s"]))
    names = [k for k in frames[0] if k.startswith("count_")] if frames else []
    x, xlabel = _time_axis(frames)
    groups = [("all particles", "")] + [(c, f"{c}_") for c in state["classes"]]
    fig, axes = pyplot().subplots(len(groups), 1, figsize=(9, 2.6 * len(groups) + 0.6), sharex=True, squeeze=False)
    for ax, (title, prefix) in zip(axes[:, 0], groups):
        for name in names:
            lo, hi, unit = name.split("_")[1:4]
            unit = "µm" if unit == "um" else unit
            ax.plot(x, [_num(r.get(prefix + name)) for r in frames], marker=".", ms=3, lw=1,
                    label=f"≥ {lo} {unit}" if hi == "inf" else f"{lo}–{hi} {unit}")
        ax.set(ylabel="particles", title=f"{title}: count per size bin (equivalent diameter)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=min(4, max(1, len(names))))
    axes[-1, 0].set_xlabel(xlabel)
    fig.tight_layout()
    return save_figure(fig, path)


def draw_latest(view: np.ndarray, step: int, boxes: Sequence[tuple], classes: Sequence[str], path: str,
                title: str) -> str:
    """monitor_latest.png: `view`, a frame taken every `step` pixels, with each particle's
    box (frame pixels) in its class's colour, static ones (deposits) in STATIC_COLOUR and
    those cut by the edge dashed. `boxes`: (box, class names ";"-joined, static, edge)."""
    plt = pyplot()
    h, w = view.shape[:2]
    fig, ax = plt.subplots(figsize=(min(14, max(6, w / 90)), min(11, max(4, h / 90)) + 0.6))
    ax.imshow(view, cmap="gray")
    colours = {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(classes)}
    counts: dict = {}
    for (x0, y0, x1, y1), named, still, edge in boxes:
        key = "static" if still else (named or "none")
        counts[key] = counts.get(key, 0) + 1
        colour = STATIC_COLOUR if still else colours.get(named.split(";")[0], "white")
        ax.add_patch(plt.Rectangle((x0 / step - 0.5, y0 / step - 0.5), (x1 - x0) / step, (y1 - y0) / step, fill=False,
                                   lw=0.9, ec=colour, ls="--" if edge else "-"))
    handles = [plt.Line2D([], [], color=colours[c], lw=2, label=f"{c} ({counts.get(c, 0)})") for c in classes]
    if counts.get("static"):
        handles.append(plt.Line2D([], [], color=STATIC_COLOUR, lw=2, label=f"static deposit ({counts['static']})"))
    ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.7)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    return save_figure(fig, path)


def score_against_truth(process_dir: str, out_dir: str, positive: str = "pg", min_iou: float = 0.5) -> dict:
    """How a monitor folder's findings compare with a synthetic process's truth
    (`ga synth process`): detection recall and precision of in-focus particles (boxes
    matched greedily at IoU >= `min_iou`, per frame), the share of matched particles whose
    class is right, and the mean and largest absolute error of the per-frame `positive`
    fraction. Returns a dict with those and the per-frame (truth, measured) fractions."""
    truth_boxes: dict = {}
    for r in _read(os.path.join(process_dir, "truth", "particles.csv")):
        if r["in_focus"] == "1":
            truth_boxes.setdefault(r["frame"], []).append(
                (tuple(int(r[k]) for k in ("x0", "y0", "x1", "y1")), r["class"]))
    found: dict = {}
    for p in _read(os.path.join(out_dir, "particles.csv"), ["frame", "x0", "y0", "x1", "y1", "class"]):
        found.setdefault(p["frame"], []).append((tuple(int(p[k]) for k in ("x0", "y0", "x1", "y1")), p["class"]))
    tp = fp = fn = right = 0
    for frame in set(truth_boxes) | set(found):
        truth, used = truth_boxes.get(frame, []), set()
        for box, cls in found.get(frame, []):
            best = max(((box_iou(box, t), i) for i, (t, _) in enumerate(truth) if i not in used), default=(0.0, None))
            if best[0] >= min_iou:
                used.add(best[1])
                tp += 1
                right += truth[best[1]][1] == cls
            else:
                fp += 1
        fn += len(truth) - len(used)
    frames = {r["frame"]: r for r in _read(os.path.join(out_dir, "frames.csv"))}
    pairs = [(float(t["pg_fraction"]), float(frames[t["frame"]][f"{positive}_fraction"]), t["frame"])
             for t in _read(os.path.join(process_dir, "truth", "frames.csv"))
             if t["frame"] in frames and t["pg_fraction"] and frames[t["frame"]][f"{positive}_fraction"]]
    errors = [abs(a - b) for a, b, _ in pairs]
    return {"recall": tp / max(1, tp + fn), "precision": tp / max(1, tp + fp), "class_accuracy": right / max(1, tp),
            "fraction_mae": float(np.mean(errors)) if errors else float("nan"),
            "fraction_max_error": max(errors) if errors else float("nan"), "frames": len(pairs),
            "matched": tp, "missed": fn, "spurious": fp, "pairs": pairs}


def refresh(out_dir: str) -> list[str]:
    """Redraw a monitor folder's figures and page from its files (monitor.json, frames.csv,
    particles.csv, notes.csv); nothing when it has no monitor.json yet. Returns the files written."""
    import json

    state = os.path.join(out_dir, "monitor.json")
    if not os.path.isfile(state):
        return []
    with open(state, encoding="utf-8") as fh:
        return write_outputs(out_dir, json.load(fh))
