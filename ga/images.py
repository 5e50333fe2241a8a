"""Image files, one set of rules for every stage: which files count, how folders are walked,
how one untrusted file is checked, and the one resize and centre crop shared by training,
evaluation, inference and scanning.

- Hidden files and folders (names starting with ".", such as `.ipynb_checkpoints/` or
  `.DS_Store`) are skipped everywhere: by the split, by training and pretraining, and by
  inference.
- A file is checked with Pillow before anything decodes it for real: an empty file, a file
  that is no image, a damaged image or one with more pixels than allowed (a decompression
  bomb) raises `ImageProblem`, whose text is the reason shown to the user for that file.
- Pixels are resized with antialiased bilinear interpolation and rounded back to uint8.

TensorFlow is imported only by the functions that need it, so the split starts without it.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ga.errors import one_line

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
# Formats tf.io.decode_image reads (in the tf.data pipeline); Pillow decodes the others.
TF_FORMATS = ("PNG", "JPEG", "BMP", "GIF")
MAX_PIXELS = 100_000_000  # no real crop is near this; inference can raise it (--max-pixels)


class ImageProblem(ValueError):
    """Why one file cannot be used; its text is the per-file reason."""


# ---------------------------------------------------------------------------- folders


def hidden(name: str) -> bool:
    return name.startswith(".")


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def subfolders(folder: str) -> list[str]:
    """The non-hidden folders directly inside `folder`, sorted."""
    return sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)) and not hidden(d))


def walk_files(folder: str, recursive: bool = True) -> list[str]:
    """Every non-hidden file in `folder` (and, with `recursive`, its non-hidden subfolders),
    each folder's files sorted and before its subfolders'."""
    paths = []
    for dirpath, dirnames, files in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not hidden(d)) if recursive else []
        paths.extend(os.path.join(dirpath, f) for f in sorted(files) if not hidden(f))
    return paths


def image_files(folder: str) -> list[str]:
    """Every image file (by extension) below `folder`, in `walk_files` order."""
    return [p for p in walk_files(folder) if is_image_name(p)]


# ---------------------------------------------------------------------------- checking one file


def read_bytes(path: str) -> bytes:
    """The bytes of a file; an unreadable file is an ImageProblem."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ImageProblem(f"unreadable: {exc.strerror or exc}") from None


def allow_pixels(max_pixels: int) -> None:
    """Make `max_pixels` the limit Pillow opens images under. Pillow has a bomb limit of its
    own (it warns over Image.MAX_IMAGE_PIXELS, 89,478,485, and refuses over twice that),
    checked while it opens, before ga's exact check: it is raised to `max_pixels` when lower,
    never lowered (threads reading frames at once agree)."""
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


def checked(data: bytes, max_pixels: int = MAX_PIXELS, load: bool = False) -> Any:
    """Open encoded image bytes with Pillow and check them, trusting nothing.

    Args:
        data: the file's bytes.
        max_pixels: refuse images with more pixels (decompression bombs).
        load: decode every pixel (catches damage anywhere) and return the loaded image;
            otherwise only verify the structure and checksums.

    Returns:
        The loaded PIL image when `load`, else the format name ("PNG", "TIFF", ...).

    Raises:
        ImageProblem: with the reason.
    """
    if not data:
        raise ImageProblem("empty file (0 bytes)")
    allow_pixels(max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            pixels = im.width * im.height
            if pixels > max_pixels:
                raise ImageProblem(f"{im.width}x{im.height} = {pixels} pixels is over the limit of {max_pixels}")
            if load:
                im.load()
                return im
            fmt = im.format
            im.verify()  # structure and checksums, no pixel decode
            return fmt
    except ImageProblem:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageProblem(f"refused as a decompression bomb: {exc}") from None
    except Image.UnidentifiedImageError:
        raise ImageProblem("not an image (no known image format)") from None
    except Exception as exc:  # Pillow raises many types for damaged files; each is a per-file problem
        raise ImageProblem(f"cannot decode ({one_line(exc)})") from None


MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"BM", b"GIF8")  # what tf.io.decode_image reads (TF_FORMATS)


def tf_reads(path: str) -> bool:
    """Whether tf.io decodes the file (PNG, JPEG, BMP, GIF by their first bytes); the others
    (TIFF, ...) go through Pillow."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return True  # tf.io then reports the file as unreadable
    return head.startswith(MAGIC)


def pillow_file(path: str) -> np.ndarray:
    """RGB uint8 (h, w, 3) of an image file decoded by Pillow (`pillow_rgb`)."""
    return pillow_rgb(read_bytes(path))


def pillow_rgb(data: bytes) -> np.ndarray:
    """Decode with Pillow to RGB uint8 (h, w, 3): TIFF and other formats tf.io does not read;
    16- and 32-bit greys are scaled to 8 bits first."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            a = np.asarray(im)
            if a.dtype != np.uint8:
                top = float(np.iinfo(a.dtype).max if a.dtype.kind in "ui" else a.max())
                im = Image.fromarray((a.astype(np.float64) / max(1.0, top) * 255).round().astype(np.uint8))
            return np.asarray(im.convert("RGB"))
    except Exception as exc:  # damaged pixel data
        raise ImageProblem(f"cannot decode ({one_line(exc)})") from None


# ---------------------------------------------------------------------------- pixels


def resize_uint8(img: Any, size: Sequence[int]) -> Any:
    """uint8 image(s) (..., h, w, 3) -> uint8 tensor of `size`: antialiased bilinear, rounded."""
    import tensorflow as tf

    out = tf.image.resize(img, size, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)


def decode_resize(data: Any, size: Sequence[int]) -> Any:
    """Encoded bytes (PNG, JPEG, BMP, GIF) -> RGB uint8 tensor of `size`, inside or outside a
    tf.data graph: grey expanded to three channels, alpha dropped, 16-bit reduced to 8."""
    import tensorflow as tf

    return resize_uint8(tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8), size)


def center_crop(x: Any, size: Sequence[int]) -> Any:
    """The central (h, w) = `size` window of image(s) (..., H, W, C); offsets rounded down,
    as keras.layers.CenterCrop does."""
    h, w = size
    top = (x.shape[-3] - h) // 2
    left = (x.shape[-2] - w) // 2
    return x[..., top:top + h, left:left + w, :]


def dihedral(arr: np.ndarray, k: int) -> np.ndarray:
    """The k-th of the eight rotations/flips of an image array (k=0 is the identity)."""
    out = np.rot90(arr, k % 4)
    return np.fliplr(out) if k >= 4 else out


def output_stems(paths: Sequence[str]) -> dict[str, str]:
    """{path: the stem of the files written for it} (Grad-CAM figures, scan outputs): the file
    name without its extension, or, for names that several inputs share (`a/x.png` and
    `b/x.png` under --recursive), its path relative to those inputs' common folder (`a/x`,
    `b/x`: written into subfolders), so no input's output overwrites another's."""
    stems = {p: os.path.splitext(os.path.basename(p))[0] for p in paths}
    counts: dict[str, int] = {}
    for p in dict.fromkeys(paths):
        counts[stems[p]] = counts.get(stems[p], 0) + 1
    clashing = [p for p in dict.fromkeys(paths) if counts[stems[p]] > 1]
    if clashing:
        base = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in clashing])
        for p in clashing:
            stems[p] = os.path.splitext(os.path.relpath(os.path.abspath(p), base))[0]
    return stems
