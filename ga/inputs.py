"""What a model reads: the files that inputs name (folders, globs, @lists, TIFF pages), each
decoded, resized and centre-cropped as in training, and arrays prepared the same way.

Decoding uses the training path (`ga.images.decode_resize`) for formats TensorFlow reads,
and Pillow for the rest (TIFF, 16-bit), then the same resize and centre crop (`ga.images`)."""

from __future__ import annotations

import glob
import os
from typing import Any, Sequence

import numpy as np

from ga.errors import GAError, first_line, opt
from ga.frames import page_of, read_page, stack_pages
from ga.images import (
    MAX_PIXELS,
    TF_FORMATS,
    ImageProblem,
    center_crop,
    checked,
    decode_resize,
    pillow_rgb,
    read_bytes,
    resize_uint8,
    walk_files,
)


def list_inputs(inputs: Sequence[str], recursive: bool = False) -> tuple[list[str], list[str]]:
    """Every file the inputs name, and the inputs that name nothing.

    An input is a folder (its files, hidden ones skipped, sorted; subfolders with
    `recursive`), a file, a glob pattern the shell left alone (`"frames/*.png"`,
    `"**/*.tif"`), or `@list.txt`: one path (or folder, or pattern) a line, `#` comments and
    blank lines ignored, relative paths taken from the list file's folder. A file the list
    names that does not exist stays in the result, so that it becomes a per-file error row
    (never a silent skip). Every multi-page TIFF becomes its pages, `stack.tif#p0`, ... .
    """
    files, missing = [], []
    for item in inputs:
        if item.startswith("@") and not os.path.exists(item):
            for entry in _list_file(item[1:]):
                # an entry is a path (a list naming a list, itself even, is not followed)
                found = [] if entry.startswith("@") else list_inputs([entry], recursive)[0]
                files.extend(found or [entry])
            continue
        if os.path.isdir(item):
            files.extend(walk_files(item, recursive))
        elif os.path.isfile(item):
            files.append(item)
        elif glob.has_magic(item) and (matches := sorted(glob.glob(item, recursive=True))):
            for m in matches:
                files.extend(walk_files(m, recursive) if os.path.isdir(m) else [m])
        else:
            missing.append(item)
    return [page for f in files for page in stack_pages(f)], missing


def _list_file(path):
    """The entries of a list file (`@list.txt`), relative ones joined to its folder."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise GAError(f"cannot read the list file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    base = os.path.dirname(path)
    entries = [line.strip() for line in lines]
    return [e if os.path.isabs(e) else os.path.join(base, e) for e in entries if e and not e.startswith("#")]


def read_image(path: str, labels: dict, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode, resize (and centre-crop) one file for the model. Returns uint8 (h, w, 3).

    Raises:
        ImageProblem: the reason the file cannot be used.
    """
    import tensorflow as tf

    resize = tuple(labels.get("resize") or labels["input_size"])
    if page_of(path)[1] is not None:
        return _model_crop(np.asarray(resize_uint8(read_page(path, max_pixels), resize)), labels)
    # Every file is tried whatever its extension: a non-image gets a clear reason.
    data = read_bytes(path)
    fmt = checked(data, max_pixels)
    if fmt in TF_FORMATS:
        try:
            arr = decode_resize(data, resize)
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as exc:
            raise ImageProblem(f"cannot decode ({first_line(exc.message, 160)})") from None
    else:
        arr = resize_uint8(pillow_rgb(data), resize)
    return _model_crop(np.asarray(arr), labels)


def _model_crop(arr, labels):
    """The centre crop labels.json asks for (the model's input), of image(s) at its resize."""
    crop = labels.get("center_crop")
    return center_crop(arr, crop) if crop else arr




def input_files(inputs: Sequence[str], recursive: bool = False) -> list[str]:
    """The files to label; a one-line GAError when an input is missing or nothing is found."""
    files, missing = list_inputs(inputs, recursive)
    if missing:
        raise GAError(f"not found: {', '.join(missing)}")
    if not files:
        raise GAError(f"no files in {', '.join(inputs)}" +
                      ("" if recursive else f" (use {opt('recursive', 'recursive=True')} for subfolders)"))
    return files


def prepare_arrays(images: Sequence[Any], labels: dict) -> np.ndarray:
    """Image arrays (h, w), (h, w, 1), (h, w, 3) or (h, w, 4), any dtype of 0-255 values,
    prepared as files are: RGB, resized (and centre-cropped) to the model's input. Images of
    one shape are resized in one call. Returns uint8 (n, h, w, 3)."""
    rgb = [_rgb_uint8(a) for a in images]
    size = tuple(labels.get("resize") or labels["input_size"])
    if len({a.shape for a in rgb}) == 1:
        out = np.asarray(resize_uint8(np.stack(rgb), size))
    else:
        out = np.stack([np.asarray(resize_uint8(a, size)) for a in rgb])
    return _model_crop(out, labels)


def _rgb_uint8(image):
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise GAError(f"an image array must be (height, width[, 1, 3 or 4 channels]), got shape {a.shape}",
                      arg="images")
    a = np.repeat(a, 3, axis=2) if a.shape[-1] == 1 else a[:, :, :3]
    return np.clip(np.round(a.astype(np.float32)), 0, 255).astype(np.uint8)
