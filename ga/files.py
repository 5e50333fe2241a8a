"""Files written safely and files hashed.

Writing is atomic: a temporary name in the same folder, fsync, then rename. An interrupted
process never leaves a half-written file under its final name, and a failed write (disk
full, permission) is reported as a WriteError naming the file.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import tempfile
from typing import Any, Iterable, Iterator, Sequence

from ga.errors import WriteError

UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it) ...
os.umask(UMASK)  # ... and put back


def remove_temporaries(folder: str) -> list[str]:
    """Remove what writes through `atomic_path` left in `folder` when their process was killed
    mid-write (`.<stem>.<random>.tmp<ext>`); returns the names removed."""
    gone = []
    for name in os.listdir(folder):
        if name.startswith(".") and ".tmp" in name and os.path.isfile(os.path.join(folder, name)):
            _remove(os.path.join(folder, name))
            gone.append(name)
    return gone


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path beside `path`; on success rename it to `path`.

    The caller writes the file at the yielded path by any means (a library's own `save`).
    On any exception the temporary file is removed and `path` is left as it was.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    stem, ext = os.path.splitext(base)
    if base.endswith(".weights.h5"):  # Keras's save_weights insists on this ending
        stem, ext = base[: -len(".weights.h5")], ".weights.h5"
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{ext}", dir=folder)
    os.close(fd)
    try:
        yield tmp
        _fsync(tmp)
        if os.path.isfile(tmp):
            os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600; the final file gets the usual mode
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise WriteError(f"could not write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> str:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def atomic_write_text(path: str, text: str) -> str:
    """Write UTF-8 `text` to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, obj: Any) -> str:
    """Write `obj` as indented JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """Write a CSV table (a header row, then `rows`) to `path` atomically."""
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    if header is not None:
        wr.writerow(header)
    wr.writerows(rows)
    atomic_write_text(path, buf.getvalue())


class CsvLog:
    """A CSV table that grows a few rows at a time (a monitor's particles.csv): the header is
    written once, and each `write` is on disk (flushed and fsynced) when it returns, so a
    kill loses at most the rows of the call it interrupts (see `keep_rows`)."""

    def __init__(self, path: str, header: Sequence[str]):
        self.path = path
        fresh = not os.path.isfile(path) or os.path.getsize(path) == 0
        if not fresh:
            with open(path, newline="", encoding="utf-8") as fh:
                have = next(csv.reader(fh), [])
            if have != list(header):
                from ga.errors import DataError

                raise DataError(f"{path} has other columns than this run writes ({len(have)} against "
                                f"{len(header)}); use another output folder")
        try:
            self._fh = open(path, "a", newline="", encoding="utf-8")
        except OSError as exc:
            raise WriteError(f"could not write {path}: {exc.strerror or exc}") from exc
        self._csv = csv.writer(self._fh, lineterminator="\n")
        if fresh:
            self.write([header])

    def write(self, rows: Iterable[Sequence]) -> None:
        try:
            self._csv.writerows(rows)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise WriteError(f"could not write {self.path}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        self._fh.close()


def keep_rows(path: str, n: int | None = None) -> list[list[str]]:
    """Cut a CSV table to its header and first `n` complete rows (all complete rows when n is
    None), dropping a last line that a kill left without its newline; returns the rows kept."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        text = fh.read()
    complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
    table = list(csv.reader(io.StringIO(complete)))
    header, rows = (table[0], table[1:]) if table else ([], [])
    kept = rows if n is None else rows[:n]
    if len(kept) != len(rows) or complete != text:
        atomic_write_csv(path, header or None, kept)
    return kept


def sha256_file(path: str) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _fsync(path):
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(path):
    with contextlib.suppress(OSError):
        os.remove(path)


def open_to_umask(folder: str) -> None:
    """Give a folder made by tempfile.mkdtemp (0700) the usual mode of a new folder."""
    os.chmod(folder, 0o777 & ~UMASK)
