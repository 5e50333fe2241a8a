"""Tile scanning of whole microscope frames (`inference.py frame.png --scan --tile 300`).

A frame of any size is covered by tiles (`--tile W [H]`, square when H is left out) at
native resolution, as few as cover it, spread evenly, with neighbours sharing at least
`--overlap` pixels (default: a fifth of the tile's smaller side), so every object up to that
size lies wholly inside some tile. `--overlap 0` gives the fewest tiles, but then a small
flake cut by a tile border can show too little of itself in either tile to be recognised.
Tiles are predicted in batches; every marked tile is outlined in red on a copy of the frame,
saved as a crop, and listed in a CSV. Which tiles are marked (`--rule`):

- classes (default): a class passes its threshold (labels.json's tuned one, or
  `--threshold`): for a multi-label model any class but the derived "any", for a binary
  model the positive class;
- any: the graphene study's scan.py rule, the model's last output -- the "any" output, or
  the single output of a binary model -- above `--threshold` (default 0.5).
"""

from __future__ import annotations

import logging
import math
import os
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ga.files import atomic_path, atomic_write_csv
from ga.frames import page_of, read_page
from ga.images import allow_pixels, output_stems, resize_uint8
from ga.tasks import get_task

if TYPE_CHECKING:
    from ga.loading import LoadedModel

log = logging.getLogger(__name__)


def tile_starts(length: int, tile: int, overlap: int = 0) -> list[int]:
    """Start offsets of the fewest tiles of size `tile` that cover [0, length) with neighbours
    sharing at least `overlap` pixels (0 <= overlap < tile), spread evenly."""
    if length <= tile:
        return [0]
    n = 1 + math.ceil((length - tile) / (tile - overlap))
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def default_overlap(tile: int | Sequence[int]) -> int:
    """The scan's default least overlap: a fifth of the tile's smaller side (60 px for 300 px
    tiles). `tile`: a size, or (width, height)."""
    return min(tile_size(tile)) // 5


def tile_size(tile: int | Sequence[int]) -> tuple[int, int]:
    """(width, height) of a tile given as a size or as (width,) or (width, height)."""
    if isinstance(tile, int):
        return tile, tile
    return (tile[0], tile[-1])


def tile_boxes(width: int, height: int, tile: int | Sequence[int], overlap: int = 0) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) boxes covering a width x height frame with tiles of `tile` (a size, or
    (width, height))."""
    tw, th = tile_size(tile)
    tw, th = min(tw, width), min(th, height)
    return [(x, y, x + tw, y + th) for y in tile_starts(height, th, min(overlap, th - 1))
            for x in tile_starts(width, tw, min(overlap, tw - 1))]


def scan_frame(model: LoadedModel, path: str, tile: int | Sequence[int], out_dir: str, batch_size: int = 32,
               threshold: float | None = None, max_pixels: int = 400_000_000, overlap: int | None = None,
               rule: str = "classes", stem: str | None = None) -> dict:
    """Scan one frame; write <stem>_scan.jpg, <stem>_tiles.csv and <stem>_tiles/ crops.

    `tile` is a size or (width, height); `overlap` the least overlap of neighbouring tiles in
    pixels (None: default_overlap); `rule` which tiles are marked (module docstring).

    Returns:
        dict with the frame's counts and output paths.
    """
    labels = model.labels
    marks = marking(labels, rule, threshold)
    if page_of(path)[1] is not None:
        frame = read_page(path, max_pixels)
    else:
        allow_pixels(max_pixels)  # raised, never lowered: the same rule as every other read
        with Image.open(path) as im:
            if im.width * im.height > max_pixels:  # the exact limit (Pillow's own may be higher)
                raise ValueError(f"{im.width}x{im.height} = {im.width * im.height} pixels is over the limit of "
                                 f"{max_pixels}")
            frame = np.asarray(im.convert("RGB"))
    h, w, _ = frame.shape
    overlap = default_overlap(tile) if overlap is None else overlap
    boxes = tile_boxes(w, h, tile, overlap)
    probs = _predict_tiles(model, frame, boxes, tuple(labels["input_size"]), batch_size)
    fired = marks(probs)
    columns = get_task(labels).scan_columns(labels["classes"])
    file, page = page_of(path)
    stem = (stem or os.path.splitext(os.path.basename(file))[0]) + ("" if page is None else f"_p{page}")
    os.makedirs(os.path.dirname(os.path.join(out_dir, stem)) or ".", exist_ok=True)
    out = _write_scan(frame, boxes, fired, probs, columns, out_dir, stem)
    return {"frame": path, "tiles": len(boxes), "overlap": overlap, "fired": int(fired.sum()), **out}


def marking(labels: dict, rule: str, threshold: float | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """The function (model outputs -> bool per tile) of `rule` for a model's labels.json.
    Raises GAError for a model the rule cannot read."""
    return get_task(labels).scan_marker(labels["classes"], labels["thresholds"], rule, threshold)


def _predict_tiles(model, frame, boxes, size, batch_size):
    probs = []
    for start in range(0, len(boxes), batch_size):
        crops = [frame[y0:y1, x0:x1] for x0, y0, x1, y1 in boxes[start:start + batch_size]]
        batch = np.stack([c if c.shape[:2] == size else np.asarray(resize_uint8(c, size)) for c in crops])
        probs.append(np.asarray(model.predict(batch.astype(np.float32))))
    return np.concatenate(probs)


def _write_scan(frame, boxes, fired, probs, classes, out_dir, stem):
    """The marked frame, the crops of marked tiles and the tile table."""
    h, w, _ = frame.shape
    crops_dir = os.path.join(out_dir, f"{stem}_tiles")
    os.makedirs(crops_dir, exist_ok=True)
    marked = Image.fromarray(frame)
    draw = ImageDraw.Draw(marked)
    width = max(3, min(w, h) // 400)
    for (x0, y0, x1, y1), f in zip(boxes, fired):
        if f:
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 0, 0), width=width)
            Image.fromarray(frame[y0:y1, x0:x1]).save(os.path.join(crops_dir,
                                                                   f"{os.path.basename(stem)}_x{x0}_y{y0}.png"))
    scan_path = os.path.join(out_dir, f"{stem}_scan.jpg")
    with atomic_path(scan_path) as tmp:
        marked.save(tmp, format="JPEG", quality=90)
    csv_path = os.path.join(out_dir, f"{stem}_tiles.csv")
    atomic_write_csv(csv_path, ["x0", "y0", "x1", "y1", "fired", *(f"p_{c}" for c in classes)],
                     ([*box, int(f), *(f"{v:.6f}" for v in p)] for box, f, p in zip(boxes, fired, probs)))
    return {"image": scan_path, "csv": csv_path, "crops": crops_dir}


def scan_frames(model: LoadedModel, files: Sequence[str], tile: int | Sequence[int], out_dir: str,
                **options: Any) -> Iterator[tuple[str, dict | str]]:
    """Scan every frame. Yields (path, result dict) or (path, reason) for a frame that could
    not be read; options as for `scan_frame`. Frames whose file names clash (a/x.png and
    b/x.png) are written under their relative paths (ga.images.output_stems)."""
    stems = output_stems([page_of(p)[0] for p in files])
    for path in files:
        try:
            yield path, scan_frame(model, path, tile, out_dir, stem=stems[page_of(path)[0]], **options)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            yield path, str(exc)
