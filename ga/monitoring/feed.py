"""Frames into the monitor: files given at once in time order, or a folder polled for new
files as they settle (`--watch`); files that cannot be opened become skipped frames."""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from ga.errors import GAError
from ga.frames import (
    Frame,
    file_time,
    folder_files,
    frame_kind,
    frames_of,
    iter_sources,
    left_out,
)
from ga.images import ImageProblem

if TYPE_CHECKING:
    from ga.config import MonitorConfig

log = logging.getLogger(__name__)


def ordered_frames(paths: Sequence[str], cfg: MonitorConfig, errors: list) -> tuple[list, dict]:
    """(frame groups in time order, {key: flag}) for files given at once: each file's
    frames in their own order, files by time (ties by name); a file whose time is earlier
    than a file before it by name is flagged `time_backwards`. A file that cannot be opened
    becomes (Frame, reason) in `errors`."""
    entries = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as exc:
            errors.append((Frame(os.path.basename(path), path, 0, 0), exc.strerror or str(exc)))
            continue
        t, _ = file_time(path, st.st_mtime_ns, cfg.time_sources, cfg.time_pattern)
        entries.append((os.path.basename(path), t, path, st))
    flags, latest = {}, None
    for name, t, path, st in sorted(entries, key=lambda e: e[0]):
        if latest is not None and t < latest:
            flags[path] = "time_backwards"
        latest = t if latest is None or t > latest else latest
    ordered = sorted(entries, key=lambda e: (e[1], e[0]))
    return [(path, st) for _, _, path, st in ordered], flags


def frames_in_order(groups: list, cfg: MonitorConfig, errors: list, flags_by_path: dict, flags: dict) -> Iterator[Frame]:
    """Every frame of the files in order; a file that cannot be opened becomes an error row."""
    for path, st in groups:
        try:
            for f in frames_of(path, cfg.time_sources, cfg.time_pattern, st):
                if path in flags_by_path:
                    flags[f.key] = flags_by_path[path]
                yield f
        except ImageProblem as exc:
            errors.append((Frame(os.path.basename(path), path, st.st_size, st.st_mtime_ns), str(exc)))


def check_inputs(inputs: Sequence[str], watch: bool = False) -> None:
    """A GAError when an input is missing, or `watch` is not given exactly one folder."""
    missing = [i for i in inputs if not os.path.exists(i)]
    if missing:
        raise GAError(f"not found: {', '.join(missing)}", arg="inputs")
    if watch and (len(inputs) != 1 or not os.path.isdir(inputs[0])):
        raise GAError("takes one folder", arg="watch")


def all_at_once(m: Any, inputs: Sequence[str], cfg: MonitorConfig, bar: bool = False,
                stop: Callable[[], bool] | None = None) -> None:
    """Every frame of the inputs that the Monitor `m` has not done, in time order, with a
    progress bar; files that cannot be opened are skipped frames."""
    import sys

    from tqdm import tqdm

    from ga.log import bar_disabled

    errors, flags = [], {}
    groups, by_path = ordered_frames(list(iter_sources(inputs)), cfg, errors)
    videos = any(frame_kind(p) == "video" for p, _ in groups)
    todo = list(m.pending(frames_in_order(groups, cfg, errors, by_path, flags))) if not videos else None
    frames = todo if todo is not None else m.pending(frames_in_order(groups, cfg, errors, by_path, flags))
    with tqdm(total=len(todo) if todo is not None else None, unit="frame", desc="monitor", file=sys.stderr,
              disable=bar_disabled(bar)) as progress_bar:
        def counted(items):
            for f in items:
                if stop and stop():
                    return
                yield f
                progress_bar.update(1)

        m.process(counted(frames), flags)
    _skip_all(m, errors)


def _skip_all(m, errors):
    for frame, reason in errors:
        m.skip(frame, reason)
    errors.clear()


def watch(m: Any, folder: str, cfg: MonitorConfig, idle_exit: float | None = None,
          progress: Callable[[Any], None] | None = None, stop: Callable[[], bool] | None = None) -> None:
    """Poll the folder: take settled files in time order into the Monitor `m`, until stopped
    or idle (`idle_exit` seconds without a new frame); `progress(m.result)` after each group."""
    seen: dict[str, list] = {}  # path -> [(size, mtime_ns), when first seen so, handled (size, mtime_ns)]
    last_new = time.monotonic()
    gone = False
    log.info("watching %s: looked at every %g s, a file taken once unchanged for %g s", folder, cfg.poll_seconds,
             cfg.settle_seconds)
    for why in left_out(folder):  # said once: the listing leaves them out at every look
        log.warning("%s", why)
    while not (stop and stop()):
        now = time.monotonic()
        there = os.path.isdir(folder)
        if not there and not gone:
            log.warning("%s is not there (unmounted?); waiting for it to come back", folder)
        elif there and gone:
            log.info("%s is back", folder)
        gone = not there
        ready = []
        for path in folder_files(folder):
            try:
                st = os.stat(path)
            except OSError:  # gone between the listing and now
                continue
            sig = (st.st_size, st.st_mtime_ns)
            entry = seen.get(path)
            if entry is None or entry[0] != sig:
                seen[path] = [sig, now, entry[2] if entry else None]
            elif now - entry[1] >= cfg.settle_seconds and entry[2] != sig:
                ready.append(path)
        if ready:
            errors, flags = [], {}
            groups, by_path = ordered_frames(ready, cfg, errors)
            n = m.process(m.pending(frames_in_order(groups, cfg, errors, by_path, flags)), flags)
            _skip_all(m, errors)
            for path in ready:  # handled: looked at again only when it changes
                seen[path][2] = seen[path][0]
            if n:
                last_new = time.monotonic()
                m.refresh()
                if progress:
                    progress(m.result)
        if idle_exit is not None and time.monotonic() - last_new >= idle_exit:
            break
        time.sleep(cfg.poll_seconds)
