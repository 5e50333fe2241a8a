"""The monitor folder's audit trail, audit.jsonl: one JSON entry a line, appended and never
rewritten, each holding the SHA-256 of the entry before it (`prev`) and its own (`hash`,
over the entry's canonical JSON without `hash`). The monitor writes a `start` entry (the
command, the resolved `monitor` settings, the config file and the calibration it came from
with their sha256, the model file and its sha256, the engine, ga's version, the host), an
`alert` entry per alert, and a `stop` entry (what was done); `ga monitor note` adds `note`
entries. `ga monitor verify DIR` recomputes the chain: an edited, removed, reordered or
inserted line breaks it at that line.

This is a tamper-evident record (a change shows unless the whole chain after it is
recomputed), kept in the folder it describes; it is not an electronic-records system and
makes no claim of 21 CFR Part 11 compliance (no signatures, access control or secure time).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
from typing import Any, Iterator

AUDIT = "audit.jsonl"
GENESIS = "0" * 64  # the `prev` of the first entry


def _digest(entry: dict) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@contextlib.contextmanager
def _locked(fh: Any) -> Iterator[None]:
    """An exclusive lock on the open file (the monitor and `ga monitor note` may append at once)."""
    try:
        import fcntl
    except ImportError:  # no POSIX locks: one writer at a time is then the user's care
        yield
        return
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _last_entry(fh: Any) -> dict | None:
    """The last complete line's entry (None: an empty file)."""
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    fh.seek(max(0, size - (1 << 16)))
    lines = [line for line in fh.read().split(b"\n") if line.strip()]
    if not lines:
        return None
    try:
        return json.loads(lines[-1])
    except ValueError:
        return {"seq": -1, "hash": "unreadable last line"}  # verify says which; the chain goes on from it


def append(out_dir: str, event: str, **fields: Any) -> dict:
    """Append one entry (`event` and `fields`, with its time, sequence number and hashes) to
    `out_dir`/audit.jsonl; returns it."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, AUDIT), "a+b") as fh, _locked(fh):
        last = _last_entry(fh)
        entry = {"seq": (last["seq"] + 1) if last else 0,
                 "time": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "event": event, **fields,
                 "prev": last["hash"] if last else GENESIS}
        entry["hash"] = _digest(entry)
        line = json.dumps(entry, ensure_ascii=False, default=str) + "\n"
        fh.seek(0, os.SEEK_END)
        fh.write(line.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())
    return entry


def verify(out_dir: str) -> tuple[int, list[str]]:
    """(entries read, problems): each problem names its line (1-based) and what is wrong;
    none when the chain is intact.

    Raises:
        FileNotFoundError: the folder has no audit.jsonl.
    """
    problems, prev, n = [], GENESIS, 0
    with open(os.path.join(out_dir, AUDIT), "rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        problems.append(f"line {len(lines)}: incomplete (a write cut short)")
    for number, raw in enumerate(lines, 1):
        try:
            entry = json.loads(raw)
            ok = isinstance(entry, dict) and isinstance(entry.get("hash"), str)
        except ValueError:
            ok = False
        if not ok:
            problems.append(f"line {number}: not an audit entry")
            prev = None
            continue
        n += 1
        if entry["hash"] != _digest(entry):
            problems.append(f"line {number}: its content does not match its hash (edited)")
        if prev is not None and entry.get("prev") != prev:
            problems.append(f"line {number}: does not follow the line before it (a line removed, inserted or moved)")
        if entry.get("seq") != number - 1:
            problems.append(f"line {number}: sequence number {entry.get('seq')}, expected {number - 1}")
        prev = entry["hash"]
    return n, problems
