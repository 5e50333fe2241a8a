"""Tile scanning of whole microscope frames (`inference.py frame.png --scan --tile 300`).

A frame of any size is covered by square tiles at native resolution, as few as cover it,
spread evenly, with neighbours sharing at least `--overlap` pixels (default: a fifth of the
tile), so every object up to that size lies wholly inside some tile. `--overlap 0` gives the
fewest tiles, but then a small flake cut by a tile border can show too little of itself in
either tile to be recognised. Tiles are predicted in
batches; every tile where a class (other than the derived "any") passes its threshold is
outlined in red on a copy of the frame, saved as a crop, and listed in a CSV.
"""

import csv
import io
import logging
import math
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

from ga.errors import GAError

log = logging.getLogger(__name__)


def tile_starts(length, tile, overlap=0):
    """Start offsets of the fewest tiles of size `tile` that cover [0, length) with neighbours
    sharing at least `overlap` pixels (0 <= overlap < tile), spread evenly."""
    if length <= tile:
        return [0]
    n = 1 + math.ceil((length - tile) / (tile - overlap))
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def default_overlap(tile):
    """The scan's default least overlap: a fifth of the tile (60 px for 300 px tiles)."""
    return tile // 5


def tile_boxes(width, height, tile, overlap=0):
    """(x0, y0, x1, y1) boxes covering a width x height frame."""
    tw, th = min(tile, width), min(tile, height)
    return [(x, y, x + tw, y + th) for y in tile_starts(height, th, min(overlap, th - 1))
            for x in tile_starts(width, tw, min(overlap, tw - 1))]


def scan_frame(model, path, tile, out_dir, batch_size=32, threshold=None, max_pixels=400_000_000, overlap=None):
    """Scan one frame; write <stem>_scan.jpg, <stem>_tiles.csv and <stem>_tiles/ crops.

    `overlap` is the least overlap of neighbouring tiles in pixels (None: tile // 5).

    Returns:
        dict with the frame's counts and output paths.
    """
    import tensorflow as tf

    labels = model.labels
    classes = labels["classes"]
    if labels["task"] != "multilabel":
        raise GAError("--scan needs a multi-label model (e.g. configs/graphene_cnn4.yaml)")
    thr = {c: (threshold if threshold is not None else labels["thresholds"][c]) for c in classes}
    watched = [i for i, c in enumerate(classes) if c != "any"]
    Image.MAX_IMAGE_PIXELS = max_pixels
    with Image.open(path) as im:
        frame = np.asarray(im.convert("RGB"))
    h, w, _ = frame.shape
    overlap = default_overlap(tile) if overlap is None else overlap
    boxes = tile_boxes(w, h, tile, overlap)
    size = tuple(labels["input_size"])
    probs = []
    for start in range(0, len(boxes), batch_size):
        crops = [frame[y0:y1, x0:x1] for x0, y0, x1, y1 in boxes[start:start + batch_size]]
        batch = np.stack([c if c.shape[:2] == size else
                          np.asarray(tf.round(tf.image.resize(c, size, antialias=True))) for c in crops])
        probs.append(np.asarray(model.predict(batch.astype(np.float32))))
    probs = np.concatenate(probs)
    fired = np.array([any(p[i] > thr[classes[i]] for i in watched) for p in probs])

    stem = os.path.splitext(os.path.basename(path))[0]
    os.makedirs(out_dir, exist_ok=True)
    crops_dir = os.path.join(out_dir, f"{stem}_tiles")
    os.makedirs(crops_dir, exist_ok=True)
    marked = Image.fromarray(frame)
    draw = ImageDraw.Draw(marked)
    width = max(3, min(w, h) // 400)
    from ga.io import atomic_path, atomic_write_text

    for (x0, y0, x1, y1), f in zip(boxes, fired):
        if f:
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 0, 0), width=width)
            Image.fromarray(frame[y0:y1, x0:x1]).save(os.path.join(crops_dir, f"{stem}_x{x0}_y{y0}.png"))
    scan_path = os.path.join(out_dir, f"{stem}_scan.jpg")
    with atomic_path(scan_path) as tmp:
        marked.save(tmp, format="JPEG", quality=90)
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(["x0", "y0", "x1", "y1", "fired", *(f"p_{c}" for c in classes)])
    for (x0, y0, x1, y1), f, p in zip(boxes, fired, probs):
        wr.writerow([x0, y0, x1, y1, int(f), *(f"{v:.6f}" for v in p)])
    csv_path = os.path.join(out_dir, f"{stem}_tiles.csv")
    atomic_write_text(csv_path, buf.getvalue())
    return {"frame": path, "tiles": len(boxes), "overlap": overlap, "fired": int(fired.sum()), "image": scan_path, "csv": csv_path,
            "crops": crops_dir}


def scan_cli(args, files):
    """inference.py --scan: scan every frame; exit 1 if some could not be read."""
    from ga.predict import load_model

    model = load_model(args.model, args.engine, args.runs_root, args.threads, args.unsafe)
    out_dir = args.out_dir or "inference_out"
    failed = 0
    for path in files:
        try:
            r = scan_frame(model, path, args.tile, out_dir, args.batch_size, args.threshold, args.max_pixels,
                           args.overlap)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"Frame {os.path.basename(path)}: {r['fired']} of {r['tiles']} tiles marked -> {r['image']}")
    return 1 if failed else 0
