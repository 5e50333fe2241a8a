"""Label review (`ga review FOLDER --model RUN`, `inference.py FOLDER --review`).

Every image of a labelled folder (class folders, or a labels.csv), or of each split of a
split folder (train/, valid/, test/), is ranked by its loss under its label, highest first.
Two kinds of image are flagged:

- mislabel: the model decides otherwise than the label, with a confidence (the probability
  of what it names) of at least `min_confidence`;
- near-duplicate: a rotated, flipped or identical copy (the split's perceptual hashes,
  `ga.splitting.near_pairs`) of an image with another label.

Written to the output folder, never touching an image:

- review.csv: every image in rank order: rank, path, split, label, predicted, p_label (the
  probability given to the label), loss, confidence, flags, suggested_label (the model's
  decision for a mislabel), duplicate_of, error;
- review.html: one self-contained page (images inline): the top images with thumbnail,
  label, prediction, probability and flags; Grad-CAM of the decision behind a click for the
  first `gradcam` of them;
- labels.csv (`<split>/labels.csv` for a split folder): the reviewed folder's labels in the
  labels.csv layout, with each suggested label applied. Edit it (keep or undo suggestions),
  then copy it into the reviewed folder: a labels.csv there wins over the class folders, so
  training, the split and `--evaluate` read the corrected labels with no image moved. Pages
  of a TIFF stack share their file's row and are left out of it.
"""

from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ga.errors import GAError
from ga.files import atomic_write_csv, atomic_write_text
from ga.frames import page_of
from ga.images import ImageProblem, checked, read_bytes
from ga.layouts import LABELS_CSV
from ga.task_text import text_of
from ga.tasks import get_task

SPLITS = ("train", "valid", "test")
COLUMNS = ["rank", "path", "split", "label", "predicted", "p_label", "loss", "confidence", "flags", "suggested_label",
           "duplicate_of", "error"]


@dataclass
class Review:
    """A finished review: its rows (review.csv's, in rank order) and the files written."""

    rows: list[dict] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> list[dict]:
        return [r for r in self.rows if r["flags"]]

    @property
    def errors(self) -> list[dict]:
        return [r for r in self.rows if r["error"]]


def labelled_sets(folder: str, classes: Sequence[str]) -> list[tuple[str, str]]:
    """(split name or "", folder) of what a review reads: each split of a split folder
    (train/, valid/, test/ beside no class folder of the model), or the folder itself."""
    if not os.path.isdir(folder):
        raise GAError(f"not a folder: {folder}", arg="folder")
    present = [s for s in SPLITS if os.path.isdir(os.path.join(folder, s))]
    if present and not any(os.path.isdir(os.path.join(folder, c)) for c in classes):
        return [(s, os.path.join(folder, s)) for s in present]
    return [("", folder)]


def review_folder(model: Any, folder: str, out_dir: str, top: int = 48, gradcam: int = 16,
                  min_confidence: float = 0.9, tolerance: int = 4, progress: bool | None = None) -> Review:
    """Rank, flag and write the review of `folder` with `model` (a ga.loading.LoadedModel);
    see the module docstring.

    Raises:
        GAError: the folder is not labelled for the model's classes, or holds no image.
    """
    from ga.predict import predict_files

    if not 0 < min_confidence <= 1:
        raise GAError("the confidence of a flagged mislabel must be in (0, 1]", arg="min_confidence")
    labels = model.labels
    task, classes = get_task(labels), labels["classes"]
    sets = labelled_sets(folder, classes)
    paths, y_true, split_of, base_of = _read_sets(sets, labels)
    if not paths:
        raise GAError(f"no images in {folder}", arg="folder")
    pred = predict_files(model, paths, progress=progress)
    ok = np.array([not r.error for r in pred.results])
    probs = np.zeros((len(paths), y_true.shape[1]), np.float32)
    if ok.any():
        probs[ok] = np.stack([r.probs for r in pred.results if not r.error])
    decided = task.decide(probs, classes, pred.thresholds)
    loss = task.row_losses(y_true, probs)
    given = text_of(task).label_texts(classes, y_true)
    named_y = task.decided_labels(decided, classes)
    named = text_of(task).label_texts(classes, named_y)
    conf = np.array([task.confidence(probs[i], decided[i], classes) for i in range(len(paths))])
    p_label = np.exp(-loss)  # exclusive tasks: the label's probability; multi-label: its geometric mean per output
    mislabel = ok & ~task.right(y_true, decided) & (conf >= min_confidence)
    twins = _cross_class_copies([p for p, k in zip(paths, ok) if k], [g for g, k in zip(given, ok) if k], tolerance)
    order = sorted(range(len(paths)), key=lambda i: (not ok[i], -loss[i], paths[i]))
    rows = []
    for rank, i in enumerate(order, 1):
        flags = (["mislabel"] if mislabel[i] else []) + (["near-duplicate"] if paths[i] in twins else [])
        rows.append({
            "rank": rank, "path": paths[i], "split": split_of[i], "label": given[i],
            "predicted": named[i] if ok[i] else "", "p_label": float(p_label[i]) if ok[i] else None,
            "loss": float(loss[i]) if ok[i] else None, "confidence": float(conf[i]) if ok[i] else None,
            "flags": ";".join(flags), "suggested_label": named[i] if mislabel[i] else "",
            "duplicate_of": ";".join(os.path.relpath(p, folder) for p in twins.get(paths[i], [])),
            "error": pred.results[i].error or ""})
    suggested_y = np.where(mislabel[:, None], named_y, y_true)
    return _write(Review(rows), out_dir, folder, model, sets, paths, base_of, suggested_y, (top, gradcam, min_confidence),
                  (pred, decided, probs))


def _read_sets(sets, labels):
    """(paths, y_true, split of each, folder of each) of the labelled sets."""
    from ga.evaluation import labelled_files

    paths, y, split_of, base_of = [], [], [], []
    for split, sub in sets:
        p, t = labelled_files(sub, labels)
        paths += p
        y.append(t)
        split_of += [split] * len(p)
        base_of += [sub] * len(p)
    return paths, np.concatenate(y).astype(np.float32), split_of, base_of


def _write(review, out_dir, folder, model, sets, paths, base_of, suggested_y, options, outputs):
    """review.csv, each set's labels.csv (suggestions applied) and review.html."""
    top, gradcam, min_confidence = options
    pred, decided, probs = outputs
    labels = model.labels
    task, classes = get_task(labels), labels["classes"]
    index = {p: i for i, p in enumerate(paths)}
    rows = review.rows
    os.makedirs(out_dir, exist_ok=True)
    csv_path = os.path.join(out_dir, "review.csv")
    atomic_write_csv(csv_path, COLUMNS, ([_cell(r[c]) for c in COLUMNS] for r in rows))
    review.files.append(csv_path)
    for split, sub in sets:
        members = [i for i in range(len(paths)) if base_of[i] == sub]
        review.files.append(_labels_csv(os.path.join(out_dir, split), sub, task, classes,
                                        [paths[i] for i in members], suggested_y[members]))
    shown = [index[r["path"]] for r in rows if not r["error"]][:top]
    heat = _gradcams(model, labels, pred, paths, shown[:gradcam], decided, probs) if gradcam > 0 else {}
    page = os.path.join(out_dir, "review.html")
    atomic_write_text(page, _page(folder, model, rows[:len(shown)], heat, review, min_confidence, labels))
    review.files.append(page)
    return review


def _cross_class_copies(paths, given, tolerance):
    """{path: [paths of its copies with another label]}."""
    from ga.splitting import near_pairs, picture_keys

    keys, kept = [], []
    for p, g in zip(paths, given):
        try:
            with checked(read_bytes(page_of(p)[0]), load=True) as im:
                keys.append(picture_keys(im))
                kept.append((p, g))
        except ImageProblem:
            continue
    out: dict[str, list[str]] = {}
    for a, b in near_pairs([k[0] for k in keys], [k[1] for k in keys], tolerance):
        (pa, ga_), (pb, gb) = kept[a], kept[b]
        if ga_ != gb:
            out.setdefault(pa, []).append(pb)
            out.setdefault(pb, []).append(pa)
    return out


def _labels_csv(out_dir, base, task, classes, paths, y):
    """The labels.csv of one reviewed folder, names relative to it, suggestions applied."""
    os.makedirs(out_dir or ".", exist_ok=True)
    path = os.path.join(out_dir, LABELS_CSV)
    keep = [(os.path.relpath(p, base).replace(os.sep, "/"), row) for p, row in zip(paths, y) if page_of(p)[1] is None]
    if task.exclusive:
        texts = text_of(task).label_texts(classes, np.asarray([row for _, row in keep]).reshape(len(keep), -1))
        atomic_write_csv(path, ["filename", "label"], ([n, t] for (n, _), t in zip(keep, texts)))
    else:
        columns = [c for c in classes if c != "any"] if classes and classes[-1] == "any" else list(classes)
        atomic_write_csv(path, ["filename", *columns],
                         ([n, *(str(int(v > 0.5)) for v in row[:len(columns)])] for n, row in keep))
    return path


def _gradcams(model, labels, pred, paths, picked, decided, probs):
    """{path: (image, heat map)} of the decision for the images `picked` (the run's Keras model)."""
    from ga.explain import grad_cam
    from ga.inputs import read_image

    if not picked:
        return {}
    task = get_task(labels)
    images = np.stack([read_image(paths[i], labels) for i in picked]).astype(np.float32)
    columns = task.gradcam_columns(decided[picked], probs[picked])
    heat = grad_cam(model.keras(), images, columns)
    return {paths[i]: (images[k], heat[k]) for k, i in enumerate(picked)}


def _cell(v):
    if isinstance(v, float):
        return f"{v:.6f}"
    return "" if v is None else v


def _thumb(path, size=112):
    try:
        from ga.frames import read_page

        if page_of(path)[1] is not None:
            im = Image.fromarray(read_page(path, 100_000_000))
        else:
            with checked(read_bytes(path), load=True) as opened:
                im = opened.convert("RGB")
        im.thumbnail((size, size))
        return _png(im)
    except (ImageProblem, OSError, ValueError):
        return ""


def _png(im):
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _overlay(image, heat):
    from matplotlib import colormaps

    rgb = (colormaps["jet"](heat)[..., :3] * 255).astype(np.float32)
    mixed = np.clip(0.6 * np.asarray(image, np.float32) + 0.4 * rgb, 0, 255).astype(np.uint8)
    im = Image.fromarray(mixed)
    im.thumbnail((160, 160))
    return _png(im)


def _page(folder, model, rows, heat, review, min_confidence, labels):
    esc = html.escape
    cards = []
    for r in rows:
        i = r["rank"]
        flag = f'<span class="flag">{esc(r["flags"])}</span>' if r["flags"] else ""
        suggestion = f'<div>suggested: <b>{esc(r["suggested_label"])}</b></div>' if r["suggested_label"] else ""
        twin = f'<div class="small">copy of: {esc(r["duplicate_of"])}</div>' if r["duplicate_of"] else ""
        cam = ""
        if r["path"] in heat:
            cam = f'<details><summary>Grad-CAM</summary><img src="{_overlay(*heat[r["path"]])}"></details>'
        cards.append(
            f'<div class="card{" flagged" if r["flags"] else ""}"><div class="rank">#{i}</div>'
            f'<img src="{_thumb(r["path"])}" alt=""><div class="name" title="{esc(r["path"])}">'
            f'{esc(os.path.relpath(r["path"], folder))}</div><div>label <b>{esc(r["label"])}</b>, model '
            f'<b>{esc(r["predicted"])}</b></div><div class="small">p(label) {r["p_label"]:.3f}, loss '
            f'{r["loss"]:.3f}</div>{flag}{suggestion}{twin}{cam}</div>')
    n_mis = sum("mislabel" in r["flags"] for r in review.rows)
    n_dup = sum("near-duplicate" in r["flags"] for r in review.rows)
    style = ("body{font-family:sans-serif;margin:1.5em}.grid{display:flex;flex-wrap:wrap;gap:10px}"
             ".card{width:180px;border:1px solid #ccc;border-radius:6px;padding:6px;font-size:13px}"
             ".card img{max-width:168px;display:block;margin:4px auto}.flagged{border:2px solid #c0392b}"
             ".flag{color:#c0392b;font-weight:bold}.small{color:#555;font-size:11px}.rank{color:#888}"
             ".name{overflow:hidden;text-overflow:ellipsis;white-space:nowrap;font-size:11px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Label review: {esc(folder)}</title>"
            f"<style>{style}</style></head><body><h1>Label review</h1>"
            f"<p>{len(review.rows)} images of <code>{esc(folder)}</code> ranked by their loss under their label "
            f"with <code>{esc(model.source)}</code> ({esc(labels.get('task', ''))}, classes "
            f"{esc(', '.join(labels['classes']))}). Flagged: {n_mis} likely mislabel(s) (the model names another "
            f"label with confidence at least {min_confidence:g}), {n_dup} near-duplicate(s) of an image with "
            f"another label; {len(review.errors)} unreadable. The first {len(rows)} are shown; every image is in "
            f"review.csv, and labels.csv holds the labels with the suggestions applied (copy it into the folder "
            f"to use them). No image was moved or changed.</p><div class='grid'>{''.join(cards)}</div>"
            f"</body></html>")

