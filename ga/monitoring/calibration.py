"""Detection settings chosen from a user's own frames: `ga monitor FRAMES --calibrate`.

A sample of the frames (`--calibrate-frames N`, spread evenly over the files in name order; a
stack's or a video's first frame) is detected with every `auto` setting resolved per frame
(ga.monitoring.detection) and the out-of-focus filter off. Then, over the whole sample:

- polarity: the side most frames' tails chose;
- background_size: the widest window a frame needed (a large crystal in one frame must not
  be cut in another);
- close_radius, min_area: scaled from their reference values by the frames' size;
- detection_scale: frames at least twice the reference frame's size are searched reduced
  (`ga.monitoring.detection.working_factor`);
- min_sharpness (measured at the detection scale): focus judged on the sharpness of every
  object of every sample frame pooled
  (`ga.monitoring.detection.focus_cut`): with many frames' objects a blurred group is found where one
  frame holds too few to tell.

Values given in the configuration (not `auto`) are kept and reported as given. Written to the
output folder: `monitor.yaml` (only `monitor.*` keys, loadable with `--config`),
`calibration.json` (each value, the statistic it came from and why) and `calibration.png`
(sample frames with their outlines in `--show-detection`'s colours, the sharpness histogram
with the focus cut, the size histogram with the smallest area).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ga.errors import GAError

if TYPE_CHECKING:
    from ga.config import MonitorConfig

AUTO_KEYS = ("polarity", "background_size", "close_radius", "min_area", "detection_scale", "min_sharpness")


def sample_paths(inputs: Sequence[str], n: int) -> list[str]:
    """Up to `n` frame files spread evenly over the inputs' files (name order)."""
    from ga.frames import iter_sources

    paths = sorted(iter_sources(inputs))
    if not paths:
        raise GAError("no frames in the inputs", arg="inputs")
    if len(paths) <= n:
        return paths
    return [paths[int(round(i * (len(paths) - 1) / (n - 1)))] for i in range(n)] if n > 1 else paths[:1]


def _read_sample(paths, cfg, max_pixels):
    from ga.frames import frames_of, read_frame
    from ga.images import ImageProblem

    frames, skipped = [], []
    for path in paths:
        try:
            frame = next(frames_of(path, cfg.time_sources, cfg.time_pattern))
            frames.append((frame.name, read_frame(frame, max_pixels)))
        except (ImageProblem, StopIteration, OSError, ValueError) as exc:
            skipped.append((os.path.basename(path), str(exc) or "no frame in it"))
    if not frames:
        raise GAError(f"none of the {len(paths)} sampled frame(s) could be read: {skipped[0][0]}: {skipped[0][1]}",
                      arg="inputs")
    shapes = collections.Counter(np.shape(f)[:2] for _, f in frames)
    if len(shapes) > 1:
        (a, _), (b, _) = shapes.most_common(2)
        raise GAError(f"the frames have different sizes ({a[1]}x{a[0]} and {b[1]}x{b[0]}): calibrate each camera's "
                      f"frames on their own", arg="inputs")
    return frames, skipped


def calibrate(inputs: Sequence[str], cfg: MonitorConfig, out_dir: str, frames: int = 20,
              max_pixels: int = 100_000_000) -> dict:
    """Choose the detection settings from a sample of the frames (module docstring), write
    monitor.yaml, calibration.json and calibration.png into `out_dir`; returns calibration.json's
    content.

    Raises:
        GAError: no frame could be read, or the frames differ in size.
    """
    from ga.monitoring.detection import detect, focus_cut, frame_scale, objects, preload, thresholded

    if frames < 1:
        raise GAError(f"must be at least 1, got {frames}", arg="calibrate_frames")
    preload()
    sample, skipped = _read_sample(sample_paths(inputs, frames), cfg, max_pixels)
    per_frame, found_all = [], []
    for name, pixels in sample:
        used, image, mask = thresholded(pixels, cfg)  # every auto setting resolved for this frame
        found = objects(image, mask, dataclasses.replace(used, min_sharpness=0.0), True, np.shape(pixels))
        per_frame.append((name, pixels, used, found))
        found_all += [p for p in found if p.dropped != "small"]
    shape = np.shape(sample[0][1])[:2]
    scale = frame_scale(shape) * per_frame[0][2].detection_scale  # sharpness is measured at the detection scale
    sharp = [p.geometry["sharpness"] for p in found_all if not p.dropped]
    choices = _choices(cfg, per_frame, sharp, focus_cut(sharp, scale), scale)
    chosen = {k: v["value"] for k, v in choices.items()}
    final = dataclasses.replace(cfg, **chosen)
    areas = [p.geometry["area_px"] for *_, found in per_frame for p in found]
    # the frames the figure shows, detected again with the settings chosen
    shown = [per_frame[int(round(i * (len(per_frame) - 1) / 2))] for i in range(3)] if len(per_frame) >= 3 \
        else per_frame
    shown = [(name, pixels, detect(pixels, final, keep_dropped=True)) for name, pixels, *_ in shown]
    doc = {"frames": [n for n, *_ in per_frame], "skipped": [{"frame": n, "reason": r} for n, r in skipped],
           "frame_size": [int(shape[1]), int(shape[0])], "objects": len(found_all), "settings": choices}
    os.makedirs(out_dir, exist_ok=True)
    _write(out_dir, doc, chosen, (shown, sharp, areas), final)
    return doc


def _choices(cfg, per_frame, sharp, cut, scale):
    """{key: {value, from, why}} for the five auto keys."""
    from ga.monitoring.detection import frame_scale, scaled_sharpness

    out = {}

    def put(key, value, source, why):
        given = getattr(cfg, key)
        out[key] = ({"value": given, "from": "configuration", "why": "given (not auto)"} if given != "auto" else
                    {"value": value, "from": source, "why": why})

    votes = collections.Counter(used.polarity for _, _, used, _ in per_frame)
    pol, n = votes.most_common(1)[0]
    put("polarity", pol, f"{n} of {len(per_frame)} frame(s)",
        f"particles are {'brighter' if pol == 'bright' else 'darker'} than the background in most sampled frames")
    widest = max(used.background_size for _, _, used, _ in per_frame)
    put("background_size", int(widest), "the widest window a sampled frame needed",
        "a fifth of the frame's shorter side, widened where an object reached half the window")
    first = per_frame[0][2]
    k = frame_scale(np.shape(per_frame[0][1]))
    put("close_radius", int(first.close_radius), f"frame scale {k:.3f}",
        "2 px at the reference frame (768 px high), in proportion")
    put("min_area", int(first.min_area), f"frame scale {k:.3f}",
        "40 px at the reference frame (768 px high), in proportion to the area")
    put("detection_scale", round(float(first.detection_scale), 6), f"frame scale {k:.3f}",
        "objects searched at about the reference frame's scale" if first.detection_scale < 1 else
        "the frame is not twice the reference frame's size: every pixel")
    prior = scaled_sharpness(0.15, scale)
    split = abs(cut - prior) > 1e-12
    put("min_sharpness", round(float(cut), 4), f"{len(sharp)} object(s) of {len(per_frame)} frame(s)",
        "the split between the sharp and the blurred group of log-sharpness" if split else
        ("no separate blurred group: 0.15 scaled to the frame" if sharp else
         "no objects found: 0.15 scaled to the frame (check the figure)"))
    return out


def _write(out_dir, doc, chosen, figure, final):
    import yaml

    from ga.files import atomic_write_json, atomic_write_text

    atomic_write_text(os.path.join(out_dir, "monitor.yaml"),
                      "# ga monitor --calibrate: detection settings chosen from the frames (calibration.json says how)\n"
                      + yaml.safe_dump({"monitor": chosen}, sort_keys=False))
    atomic_write_json(os.path.join(out_dir, "calibration.json"), doc)
    _figure(os.path.join(out_dir, "calibration.png"), *figure, final)


def _figure(path: str, shown: Sequence[Any], sharp: Sequence[float], areas: Sequence[float],
            final: MonitorConfig) -> str:
    """calibration.png: up to three sample frames (name, pixels, particles) with outlines, and
    the sampled objects' sharpness and area histograms."""
    from ga.figures import pyplot, save_figure
    from ga.frames import rgb8
    from ga.monitoring.outputs import DETECTION_COLOURS

    fig, axes = pyplot().subplots(2, 3, figsize=(15, 9), squeeze=False)
    for ax, (name, pixels, found) in zip(axes[0], shown):
        ax.imshow(rgb8(pixels), cmap="gray")
        for p in found:
            kind = p.dropped or ("edge" if p.edge else "")
            if p.outline is not None and len(p.outline) and kind != "small":
                ax.plot(p.outline[:, 1], p.outline[:, 0], ",", color=DETECTION_COLOURS[kind])
        kept = sum(not p.dropped for p in found)
        ax.set_title(f"{name}: kept {kept}", fontsize=8)
        ax.set_axis_off()
    for ax in axes[0][len(shown):]:
        ax.set_axis_off()
    ax = axes[1][0]
    if len(sharp):
        ax.hist(sharp, bins=np.geomspace(max(min(sharp), 1e-3), max(sharp) * 1.05, 40), color="0.5")
        ax.set_xscale("log")
    ax.axvline(final.min_sharpness, color="orange", lw=2, label=f"focus cut {final.min_sharpness:.3g}")
    ax.set(xlabel="sharpness (≈ 1 / edge width, px⁻¹)", ylabel="objects", title="sharpness of the sampled objects")
    ax.legend(fontsize=8)
    ax = axes[1][1]
    if areas:
        ax.hist(areas, bins=np.geomspace(1, max(areas) * 1.1, 40), color="0.5")
        ax.set_xscale("log")
    ax.axvline(final.min_area, color="0.3", lw=2, ls="--", label=f"min_area {final.min_area} px")
    ax.set(xlabel="area (px)", ylabel="objects", title="sizes of the sampled objects")
    ax.legend(fontsize=8)
    ax = axes[1][2]
    ax.set_axis_off()
    text = "\n".join(f"{k}: {getattr(final, k)}" for k in AUTO_KEYS)
    ax.text(0, 1, "chosen:\n" + text, va="top", family="monospace", fontsize=10)
    return save_figure(fig, path)


def summary_lines(doc: dict) -> list[str]:
    """What `ga monitor --calibrate` prints: one line per setting."""
    lines = [f"calibrated on {len(doc['frames'])} frame(s) of {doc['frame_size'][0]}x{doc['frame_size'][1]}, "
             f"{doc['objects']} object(s)"]
    for key, c in doc["settings"].items():
        value = c["value"]
        lines.append(f"  {key}: {value if not isinstance(value, float) or math.isnan(value) else f'{value:g}'}"
                     f"  ({c['why']}; {c['from']})")
    return lines


def show_detection(path: str, cfg: MonitorConfig, out_dir: str, max_pixels: int = 100_000_000) -> str:
    """`ga monitor --show-detection FRAME`: the outlines found (and those dropped, and why)
    drawn over one frame, as <out_dir>/<stem>_detection.png; returns its path. No model."""
    from ga.frames import frames_of, read_frame
    from ga.images import ImageProblem
    from ga.monitoring.outputs import draw_detection
    from ga.monitoring.detection import detect, threshold_of, thresholded

    if not os.path.isfile(path):
        raise GAError(f"not found: {path}", arg="show_detection")
    try:
        frame = next(frames_of(path, cfg.time_sources, cfg.time_pattern))
        pixels = read_frame(frame, max_pixels)
    except ImageProblem as exc:
        raise GAError(f"{path}: {exc}", arg="show_detection") from None
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(path))[0]
    used, image, _ = thresholded(pixels, cfg)
    level = threshold_of(image, used)
    return draw_detection(pixels, detect(pixels, cfg, keep_dropped=True), os.path.join(out_dir, f"{stem}_detection.png"),
                          f"{frame.name} (threshold {level:.1f} grey levels above the background)")
