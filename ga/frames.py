"""Frames over time: where they come from, when each was taken, and reading one safely.

A source is a folder of image files (PNG, TIFF, JPEG, BMP; 8 or 16 bit), a multi-page TIFF
stack (every page a frame, named `stack.tif#p3`, tifffile reads every page, not only the
first series), or a video file (`run.mp4#f12`, PyAV: `pip install "ga-crystals[video]"`),
or a folder holding any of them.

A frame's time comes from the first of `monitor.time_sources` that gives one:

- name: `monitor.time_pattern` (strftime codes, e.g. `%Y%m%dT%H%M%S`) found anywhere in
  the file name;
- tags: the EXIF DateTimeOriginal or the TIFF/EXIF DateTime tag;
- mtime: the file's modification time.

A stack's page without a DateTime tag of its own is the file's time plus one second per
page; a video's frame is the file's time plus the frame's own timestamp in the video.

Frames are keyed by path, size and modification time (`Frame.key`), so a file replaced by
another of the same name is a new frame, one already done is never done again, and files of
one name, size and time in two folders are two frames; pages of a stack and frames of a video
by their path and name (`stack.tif#p3`), so a stack that grows while it is watched gives only
its new pages.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from ga.errors import GAError, one_line
from ga.images import IMAGE_EXTENSIONS, ImageProblem, checked, hidden, read_bytes

log = logging.getLogger(__name__)

TIFF_EXTENSIONS = (".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".wmv", ".mpg", ".mpeg")


@dataclass
class Frame:
    """One frame to process: a file, or a page or frame inside one."""

    name: str  # what the outputs call it: file name, `stack.tif#p3`, `run.mp4#f12`
    path: str
    size: int  # the file's size and modification time when listed
    mtime_ns: int
    index: int | None = None  # page of a stack, frame of a video
    time: dt.datetime | None = None
    time_source: str = ""
    pixels: Any = None  # a video frame's pixels, decoded while listing

    @property
    def key(self) -> str:
        """A whole file by its absolute path, size and mtime (a replaced file is a new frame; two
        folders' files of one name, size and mtime are two frames); a page or a video frame by
        its path and name alone (a stack that grows keeps its pages done)."""
        if self.index is None:
            return f"{os.path.abspath(self.path)}|{self.size}|{self.mtime_ns}"
        return os.path.join(os.path.dirname(os.path.abspath(self.path)), self.name)


def upgraded_key(key: str, source: str) -> str:
    """A frames.csv key as Frame.key gives it now: keys written before keys held the path
    (`name|size|mtime`, `stack.tif#p3`) get the folder of the row's `source`."""
    if os.path.isabs(key.split("|", 1)[0]):
        return key
    return os.path.join(os.path.dirname(os.path.abspath(source)), key)


def frame_kind(path: str) -> str:
    """image, tiff or video, by the file's extension ("" for anything else)."""
    ext = os.path.splitext(path)[1].lower()
    if ext in TIFF_EXTENSIONS:
        return "tiff"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return "image" if ext in IMAGE_EXTENSIONS else ""


def folder_files(folder: str) -> list[str]:
    """The frame files directly in a folder (hidden ones and other files left out), sorted;
    a vanished folder gives an empty list."""
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    return [os.path.join(folder, n) for n in names
            if not hidden(n) and frame_kind(n) and os.path.isfile(os.path.join(folder, n))]


# ---------------------------------------------------------------------------- times


_CODES = {"%Y": r"\d{4}", "%m": r"\d{2}", "%d": r"\d{2}", "%H": r"\d{2}", "%M": r"\d{2}", "%S": r"\d{2}",
          "%f": r"\d{1,6}", "%y": r"\d{2}", "%j": r"\d{3}"}


def pattern_regex(pattern: str) -> re.Pattern:
    """The regular expression that finds a strftime `pattern` in a name."""
    out, i = "", 0
    while i < len(pattern):
        code = pattern[i:i + 2]
        if code in _CODES:
            out += _CODES[code]
            i += 2
        elif code == "%%":
            out += "%"
            i += 2
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def time_from_name(name: str, pattern: str) -> dt.datetime | None:
    """The time `pattern` gives in a file name, or None."""
    if not pattern:
        return None
    for m in pattern_regex(pattern).finditer(os.path.basename(name)):
        try:
            return dt.datetime.strptime(m.group(0), pattern)
        except ValueError:
            continue
    return None


def _exif_time(path: str) -> dt.datetime | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            exif = im.getexif()
            text = exif.get_ifd(0x8769).get(36867) or exif.get(306)  # DateTimeOriginal, DateTime
    except Exception:  # no tags, or not an image: the next source decides
        return None
    return _tag_time(text)


def _tag_time(text: Any) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.strptime(str(text).strip().rstrip("\x00")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


def file_time(path: str, mtime_ns: int, sources: Sequence[str], pattern: str) -> tuple[dt.datetime, str]:
    """(time, source) of a file, from the first of `sources` that gives one (mtime always does)."""
    for source in sources:
        t = {"name": lambda: time_from_name(path, pattern), "tags": lambda: _exif_time(path),
             "mtime": lambda: dt.datetime.fromtimestamp(mtime_ns / 1e9)}[source]()
        if t is not None:
            return t, source
    return dt.datetime.fromtimestamp(mtime_ns / 1e9), "mtime"


# ---------------------------------------------------------------------------- listing


def frames_of(path: str, sources: Sequence[str], pattern: str, stat: os.stat_result | None = None
              ) -> Iterator[Frame]:
    """The frames of one file, in order, with their times: the image itself, a stack's pages,
    or a video's frames (decoded one at a time, the container closed when the iteration
    ends or is abandoned).

    Raises:
        ImageProblem: a stack or video that cannot be opened (before its first frame).
    """
    st = stat or os.stat(path)
    name = os.path.basename(path)
    kind = frame_kind(path)
    base_time, how = file_time(path, st.st_mtime_ns, sources, pattern)
    if kind == "tiff":
        pages = _tiff_pages(path)
        if len(pages) > 1:
            for i, t in enumerate(pages):
                yield Frame(f"{name}#p{i}", path, st.st_size, st.st_mtime_ns, i,
                            t or base_time + dt.timedelta(seconds=i), "tags" if t else f"{how}+page")
            return
    if kind == "video":
        for i, s, px in _video_frames(path):
            yield Frame(f"{name}#f{i}", path, st.st_size, st.st_mtime_ns, i, base_time + dt.timedelta(seconds=s),
                        f"{how}+video", pixels=px)
        return
    yield Frame(name, path, st.st_size, st.st_mtime_ns, None, base_time, how)


def _tiff_pages(path):
    """The DateTime tag (or None) of every page of a TIFF file."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return [_tag_time(p.tags.get("DateTime").value if p.tags.get("DateTime") else None) for p in tif.pages]
    except Exception as exc:  # tifffile raises its own types and ValueErrors for damaged files
        raise ImageProblem(f"cannot read the TIFF ({one_line(exc)})") from None


def _video_frames(path):
    """(index, seconds from the start, RGB pixels) of each frame of a video (PyAV), lazily."""
    try:
        import av
    except ImportError:
        raise GAError(f"{os.path.basename(path)}: reading video needs PyAV: pip install \"ga-crystals[video]\"") \
            from None
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError) as exc:
        raise ImageProblem(f"cannot read the video ({one_line(exc)})") from None
    i = 0
    with container:
        try:
            if not container.streams.video:
                raise ImageProblem("the file has no video stream")
            for frame in container.decode(container.streams.video[0]):
                yield i, float(frame.time) if frame.time is not None else float(i), frame.to_ndarray(format="rgb24")
                i += 1
        except av.error.FFmpegError as exc:
            if not i:
                raise ImageProblem(f"cannot read the video ({one_line(exc)})") from None
            log.warning("%s: the video ends early after %d frames (%s)", path, i, one_line(exc))


def left_out(folder: str) -> list[str]:
    """What `folder_files` leaves out of a folder and a person would wonder about, one reason
    each: subfolders holding frames (the monitor reads a folder itself, not below it) and frame
    names that are no readable file (a broken or self-looping link)."""
    out = []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return out
    for n in names:
        path = os.path.join(folder, n)
        if hidden(n):
            continue
        if os.path.isdir(path) and any(frame_kind(f) for f in _listing(path)):
            out.append(f"{path}: a subfolder with frames, not read (give it as an input of its own)")
        elif frame_kind(n) and not os.path.isfile(path):
            out.append(f"{path}: not a readable file (a broken or looping link?), not read")
    return out


def _listing(folder):
    try:
        return os.listdir(folder)
    except OSError:
        return []


def iter_sources(inputs: Sequence[str]) -> Iterator[str]:
    """Every frame file of the inputs (folders listed, files as given; what a folder's listing
    leaves out is logged, `left_out`); a missing input is a GAError."""
    for item in inputs:
        if os.path.isdir(item):
            for why in left_out(item):
                log.warning("%s", why)
            yield from folder_files(item)
        elif os.path.isfile(item):
            yield item
        else:
            raise GAError(f"not found: {item}", arg="inputs")


# ---------------------------------------------------------------------------- pages as paths


_PAGE = re.compile(r"^(?P<file>.+\.tiff?)#p(?P<page>\d+)$", re.IGNORECASE)


def page_of(path: str) -> tuple[str, int | None]:
    """(file, page) of a page path `stack.tif#p3`; (path, None) for any other path (a file
    that exists under the name itself is that file)."""
    m = _PAGE.match(path)
    if not m or os.path.exists(path):
        return path, None
    return m.group("file"), int(m.group("page"))


def stack_pages(path: str) -> list[str]:
    """The pages of a multi-page TIFF as paths `stack.tif#p0`, `#p1`, ...; any other file (a
    TIFF of one page, or one that cannot be opened, whose reading then says why) as [path]."""
    if frame_kind(path) != "tiff" or not os.path.isfile(path):
        return [path]
    try:
        n = len(_tiff_pages(path))
    except ImageProblem:
        return [path]
    return [f"{path}#p{i}" for i in range(n)] if n > 1 else [path]


def read_page(path: str, max_pixels: int) -> np.ndarray:
    """uint8 RGB pixels of a page path (`page_of`).

    Raises:
        ImageProblem: the file or page cannot be read.
    """
    file, page = page_of(path)
    if page is None:
        raise ImageProblem(f"not a page of a TIFF stack: {path}")
    if not os.path.isfile(file):
        raise ImageProblem(f"unreadable: no file {file}")
    return rgb8(_tiff_page(file, page, max_pixels))


# ---------------------------------------------------------------------------- pixels


def read_frame(frame: Frame, max_pixels: int) -> np.ndarray:
    """The pixels of a frame, (h, w) or (h, w, c), 8 or 16 bit as stored.

    Raises:
        ImageProblem: the reason the frame cannot be used.
    """
    if frame.pixels is not None:
        return frame.pixels
    if frame.index is not None:
        return _tiff_page(frame.path, frame.index, max_pixels)
    data = read_bytes(frame.path)
    im = checked(data, max_pixels, load=True)
    try:
        if im.mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr", "1"):
            im = im.convert("RGB")
        return np.asarray(im)
    finally:
        im.close()


def _tiff_page(path, index, max_pixels):
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[index]
            pixels = int(np.prod(page.shape[:2]))
            if pixels > max_pixels:
                raise ImageProblem(f"page {index}: {pixels} pixels is over the limit of {max_pixels}")
            return page.asarray()
    except ImageProblem:
        raise
    except Exception as exc:  # tifffile raises many types for damaged pages
        raise ImageProblem(f"cannot decode page {index} ({one_line(exc)})") from None


def rgb8(pixels: np.ndarray) -> np.ndarray:
    """uint8 RGB (h, w, 3) of any frame's pixels (16-bit and floats scaled as `ga.monitoring.detection.grey`)."""
    a = np.asarray(pixels)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    a = a[:, :, :3]
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype.kind in "ui":
        return np.round(a.astype(np.float32) * (255.0 / np.iinfo(a.dtype).max)).astype(np.uint8)
    a = a.astype(np.float32)
    scale = 255.0 if a.size and float(np.nanmax(a)) <= 1.0 else 1.0
    return np.clip(np.round(a * scale), 0, 255).astype(np.uint8)
