"""Detection scored against annotated frames (`ga monitor FRAMES --truth FILE`).

The annotations are either a COCO JSON file (the format CVAT, Label Studio and most
annotation tools export; `ga synth process` writes its truth as `truth/coco.json` too) or a
CSV of per-frame counts (`frame` and `count` columns). A COCO annotation's box is its `bbox`
([x, y, width, height], pixels); an annotation with a polygon `segmentation` and no `bbox`
gets the polygon's box. Annotations with `iscrowd` or `ignore` set mark regions to ignore:
a detection that matches one is neither right nor wrong. Frames are matched by file name
(`file_name`'s last part), so the annotations may have been made anywhere.

Per frame: the boxes of the kept particles are matched one to one with the annotated boxes,
the pair of highest IoU first, down to `min_iou` (0.5, as COCO's AP50); a match is right, a
detection left over is spurious, an annotation left over is missed. Precision, recall and F1
per frame and over all frames (sums of the counts), and the count error (found - true).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from ga.errors import GAError

if TYPE_CHECKING:
    from ga.config import MonitorConfig

SCORE_COLUMNS = ("frame", "true", "found", "matched", "precision", "recall", "f1", "count_error")


@dataclass
class Truth:
    """Annotations per frame name: boxes (x0, y0, x1, y1, class) and ignored regions, or
    counts only."""

    path: str
    boxes: dict[str, list[tuple]] = field(default_factory=dict)
    ignored: dict[str, list[tuple]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    has_boxes: bool = True

    def count(self, frame: str) -> int:
        return len(self.boxes.get(frame, [])) if self.has_boxes else self.counts[frame]

    @property
    def frames(self) -> list[str]:
        return sorted(self.counts)


def _fail(path, why):
    return GAError(f"{path}: {why}", arg="truth")


def read_truth(path: str) -> Truth:
    """A COCO JSON file or a CSV of per-frame counts (module docstring); a GAError (one line)
    when it does not parse."""
    if not os.path.isfile(path):
        raise _fail(path, "not found")
    if path.lower().endswith(".csv"):
        return _read_counts(path)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _fail(path, f"not a COCO JSON file ({type(exc).__name__})") from None
    return _read_coco(path, doc)


def _read_counts(path):
    truth = Truth(path, has_boxes=False)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = csv.DictReader(fh)
            if not rows.fieldnames or "frame" not in rows.fieldnames or "count" not in rows.fieldnames:
                raise _fail(path, "a counts CSV needs the columns frame and count")
            for i, r in enumerate(rows, 2):
                try:
                    n = int(r["count"])
                except (TypeError, ValueError):
                    raise _fail(path, f"line {i}: count {r['count']!r} is not a whole number") from None
                if n < 0:
                    raise _fail(path, f"line {i}: count {n} is negative")
                truth.counts[os.path.basename(r["frame"] or "")] = n
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise _fail(path, f"cannot be read as CSV ({type(exc).__name__})") from None
    if not truth.counts:
        raise _fail(path, "no frames in it")
    return truth


def _box(ann, path):
    bbox = ann.get("bbox")
    if bbox is None and isinstance(ann.get("segmentation"), list) and ann["segmentation"]:
        xs = [v for poly in ann["segmentation"] for v in poly[0::2]]
        ys = [v for poly in ann["segmentation"] for v in poly[1::2]]
        if xs and ys:
            bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)
            and bbox[2] >= 0 and bbox[3] >= 0):
        raise _fail(path, f"annotation {ann.get('id', '?')}: bbox must be [x, y, width, height], got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    return x, y, x + w, y + h


def _read_coco(path, doc):
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or \
            not isinstance(doc.get("annotations"), list):
        raise _fail(path, "a COCO file needs 'images' and 'annotations' lists")
    names = {c.get("id"): str(c.get("name")) for c in doc.get("categories") or [] if isinstance(c, dict)}
    truth, by_id = Truth(path), {}
    for img in doc["images"]:
        if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
            raise _fail(path, "every image needs an id and a file_name")
        name = os.path.basename(img["file_name"].replace("\\", "/"))
        by_id[img["id"]] = name
        truth.boxes.setdefault(name, [])
        truth.ignored.setdefault(name, [])
    for ann in doc["annotations"]:
        if not isinstance(ann, dict) or ann.get("image_id") not in by_id:
            raise _fail(path, f"annotation {ann.get('id', '?') if isinstance(ann, dict) else ann!r} names no image "
                              f"of the file")
        name = by_id[ann["image_id"]]
        box = _box(ann, path)
        if ann.get("iscrowd") or ann.get("ignore"):
            truth.ignored[name].append(box)
        else:
            truth.boxes[name].append((*box, names.get(ann.get("category_id"), "")))
    if not by_id:
        raise _fail(path, "no images in it")
    truth.counts = {n: len(b) for n, b in truth.boxes.items()}
    return truth


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(found: Sequence[Sequence[float]], truth: Sequence[Sequence[float]], min_iou: float = 0.5
          ) -> list[tuple[int, int]]:
    """One-to-one (found index, truth index) pairs, the highest IoU first, down to `min_iou`."""
    pairs = sorted(((box_iou(f, t), i, j) for i, f in enumerate(found) for j, t in enumerate(truth)), reverse=True)
    used_f, used_t, out = set(), set(), []
    for iou, i, j in pairs:
        if iou < min_iou:
            break
        if i not in used_f and j not in used_t:
            used_f.add(i)
            used_t.add(j)
            out.append((i, j))
    return out


def _ratio(a, b):
    return a / b if b else float("nan")


def _f1(p, r):
    return 2 * p * r / (p + r) if p + r > 0 else float("nan") if p != p or r != r else 0.0


def score_frame(name: str, found: Sequence[Sequence[float]], truth: Truth, min_iou: float = 0.5) -> dict:
    """One frame's row of detection_scores.csv (SCORE_COLUMNS) from the kept boxes."""
    true = truth.count(name)
    row = {"frame": name, "true": true, "found": len(found), "count_error": len(found) - true}
    if not truth.has_boxes:
        return {**row, "matched": "", "precision": "", "recall": "", "f1": ""}
    boxes = [b[:4] for b in truth.boxes.get(name, [])]
    pairs = match(found, boxes, min_iou)
    hit = {i for i, _ in pairs}
    ignored = {i for i, f in enumerate(found) if i not in hit
               and any(box_iou(f, g) >= min_iou for g in truth.ignored.get(name, []))}
    found_n = len(found) - len(ignored)
    p, r = _ratio(len(pairs), found_n), _ratio(len(pairs), true)
    return {**row, "found": found_n, "count_error": found_n - true, "matched": len(pairs), "precision": p,
            "recall": r, "f1": _f1(p, r)}


def summary(rows: Sequence[dict], has_boxes: bool) -> dict:
    """Over all frames: sums, precision/recall/F1 of the sums, mean absolute count error."""
    true, found = sum(r["true"] for r in rows), sum(r["found"] for r in rows)
    out = {"frames": len(rows), "true": true, "found": found,
           "count_mae": sum(abs(r["count_error"]) for r in rows) / len(rows) if rows else float("nan")}
    if has_boxes:
        matched = sum(r["matched"] for r in rows)
        p, r = _ratio(matched, found), _ratio(matched, true)
        out.update({"matched": matched, "precision": p, "recall": r, "f1": _f1(p, r)})
    return out


def score_detection(inputs: Sequence[str], truth_path: str, cfg: MonitorConfig, out_dir: str, max_pixels: int = 100_000_000,
                    min_iou: float = 0.5, progress: bool = False) -> dict:
    """Detect the particles of every annotated frame of `inputs` (no model), score them
    against the annotations and write `<out_dir>/detection_scores.csv` (SCORE_COLUMNS, a row
    per frame) and `detection_summary.json`. Returns the summary.

    Raises:
        GAError: the annotations do not parse, or name frames the inputs do not hold.
    """
    import sys

    from tqdm import tqdm

    from ga.files import atomic_write_csv, atomic_write_json
    from ga.frames import frames_of, iter_sources, read_frame
    from ga.images import ImageProblem
    from ga.log import bar_disabled
    from ga.monitoring.detection import detect, preload

    truth = read_truth(truth_path)
    frames, problems = {}, []
    for path in iter_sources(inputs):
        try:
            for frame in frames_of(path, cfg.time_sources, cfg.time_pattern):
                if frame.name in truth.counts:
                    frames[frame.name] = frame
        except ImageProblem as exc:
            problems.append((os.path.basename(path), str(exc)))
    missing = [n for n in truth.frames if n not in frames]
    if missing:
        raise GAError(f"{truth_path} names {len(missing)} frame(s) the inputs do not hold, e.g. {missing[0]}",
                      arg="truth")
    preload()
    rows, skipped = [], []
    for name in tqdm(sorted(frames), unit="frame", desc="detection", file=sys.stderr, disable=bar_disabled(progress)):
        try:
            pixels = read_frame(frames[name], max_pixels)
        except ImageProblem as exc:
            skipped.append((name, str(exc)))
            continue
        boxes = [p.box for p in detect(pixels, cfg)]
        rows.append(score_frame(name, boxes, truth, min_iou))
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_csv(os.path.join(out_dir, "detection_scores.csv"), list(SCORE_COLUMNS),
                     [[_cell(r[c]) for c in SCORE_COLUMNS] for r in rows])
    result = {"truth": os.path.abspath(truth_path), "min_iou": min_iou,
              **{k: None if isinstance(v, float) and v != v else v for k, v in summary(rows, truth.has_boxes).items()},
              "skipped": [{"frame": n, "reason": why} for n, why in skipped + problems]}
    atomic_write_json(os.path.join(out_dir, "detection_summary.json"), result)
    return result


def _cell(v):
    if isinstance(v, float):
        return "" if v != v else f"{v:.4f}"
    return v


def summary_line(result: dict) -> str:
    """The one line `ga monitor --truth` prints."""
    head = f"{result['frames']} frame(s): {result['found']} found, {result['true']} annotated"
    if result.get("recall") is not None and result.get("precision") is not None:
        head += (f"; recall {result['recall']:.3f}, precision {result['precision']:.3f}, F1 {result['f1']:.3f} "
                 f"at IoU >= {result['min_iou']:g}")
    return head + (f"; mean count error {result['count_mae']:.2f} a frame" if result["count_mae"] is not None else "")
