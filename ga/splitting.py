"""A seeded, stratified, leakage-aware train/valid/test split that never loses an image.

The source is read, never changed (except in `move` mode, where a file is removed only
after its copy's hash is verified). Every source file gets a row in `<dest>/manifest.csv`
with its split, group, hash, size and status. Rotated, flipped and byte-identical copies
of one crop share a `group` and therefore a split: groups are found with a perceptual hash
that is taken over all eight rotations/flips of an image, matched exactly and within a
small Hamming distance.

Rounding: per class, the target counts are ratio x n rounded by the largest-remainder
method (ties go to the earlier split: train, then valid, then test), and every split with
a non-zero ratio gets at least one image, taken from the split furthest above its exact
share (so 7 images give 5/1/1 and 3 give 1/1/1). Whole groups are then dealt, in seeded
random order, to the split furthest below its target, so each split ends within one
group's size of its target (and exactly on it when there are no groups).
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import errno
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import warnings
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ga.errors import DataError
from ga.io import atomic_path, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
MANIFEST_FIELDS = ("source", "class", "split", "group", "sha256", "width", "height", "status", "reason")
MAX_PIXELS = 100_000_000  # refuse decompression bombs: no real crop is near this


@dataclass
class FileInfo:
    """One source file as scanned: identity, image facts, status and, later, its split."""

    source: str  # path relative to the source root, '/'-separated
    cls: str  # class folder name, or ';'-joined labels for multi-label
    sha256: str = ""
    width: int = 0
    height: int = 0
    status: str = "ok"  # ok | corrupt | duplicate | skipped-not-image | rejected
    reason: str = ""
    hashes: tuple = ()  # perceptual hashes of the 8 orientations
    thumb: object = None  # 16x16 grey thumbnail, to confirm a hash match
    group: str = ""
    split: str = ""

    @property
    def usable(self):
        return self.status in ("ok", "duplicate")


@dataclass
class SplitResult:
    """What a split did: manifest rows, counts and the process exit status."""

    files: list
    counts: dict = field(default_factory=dict)  # {class: {split: n}}
    groups: dict = field(default_factory=dict)  # {class: number of groups}
    changed: bool = True
    exit_code: int = 0


# ---------------------------------------------------------------------------- scanning


def perceptual_hashes(img):
    """64-bit DCT hashes of the 8 rotations/flips of a PIL image (tuple of ints).

    Two images that are rotations/flips of each other share one of these exactly (up to
    resampling noise); near-identical images are within a few bits.
    """
    from scipy.fft import dctn

    small = np.asarray(img.convert("L").resize((32, 32), Image.BILINEAR), np.float32)
    out = []
    for k in range(8):
        a = np.rot90(small, k % 4)
        a = np.fliplr(a) if k >= 4 else a
        coef = dctn(a, norm="ortho")[:8, :8].ravel()
        bits = coef > np.median(coef[1:])
        out.append(int.from_bytes(np.packbits(bits).tobytes(), "big"))
    return tuple(out)


def _scan_one(root, rel, cls):
    info = FileInfo(source=rel, cls=cls)
    path = os.path.join(root, *rel.split("/"))
    problem = _name_problem(rel)
    if problem is None and os.path.islink(path):
        problem = "symbolic link: not followed (the split reads only files inside the source)"
    if problem:
        info.status, info.reason = "rejected", problem
        return info
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        info.status, info.reason = "corrupt", f"unreadable: {exc.strerror or exc}"
        return info
    info.sha256 = hashlib.sha256(data).hexdigest()
    if not rel.lower().endswith(IMAGE_EXTENSIONS):
        info.status, info.reason = "skipped-not-image", "extension is not an image type"
        return info
    if not data:
        info.status, info.reason = "corrupt", "empty file (0 bytes)"
        return info
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise ValueError(f"{im.width}x{im.height} pixels is over the {MAX_PIXELS} limit")
                im.load()  # full decode: catches truncated and damaged files
                info.width, info.height = im.size
                info.hashes = perceptual_hashes(im)
                info.thumb = np.asarray(im.convert("L").resize((16, 16), Image.BILINEAR), np.float32)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        info.status, info.reason = "corrupt", f"decompression bomb: {exc}"
    except Image.UnidentifiedImageError:
        info.status, info.reason = "corrupt", "not an image (no known image format)"
    except Exception as exc:  # PIL raises many types for damaged files; each is a per-file error
        info.status, info.reason = "corrupt", f"cannot decode: {_one_line(exc)}"
    return info


def _name_problem(rel):
    """Why a file name cannot be carried into a split and its manifest, or None."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8"
    if any(not c.isprintable() for c in rel):
        return "file name holds control characters (e.g. a newline)"
    return None


def _safe_name(rel):
    return rel.encode("utf-8", "backslashreplace").decode("utf-8").encode("unicode_escape").decode("ascii") \
        if _name_problem(rel) else rel


def _one_line(exc):
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _list_class_folders(source, strict=True):
    """[(rel, class)] for every regular file under each class folder, sorted.

    With `strict`, a source without class folders or with an empty one is an error (a new
    split); without it (completing a `move` split) emptied folders are expected.
    """
    classes = sorted(d for d in os.listdir(source) if os.path.isdir(os.path.join(source, d)) and not d.startswith("."))
    if not classes and strict:
        raise DataError(f"no class folders in {source} (expected one folder per class, e.g. cex/ and pg/, "
                        f"or images with a labels.csv)")
    items = []
    for cls in classes:
        found = []
        base = os.path.join(source, cls)
        for dirpath, dirnames, files in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(files):
                if f.startswith("."):
                    continue
                full = os.path.join(dirpath, f)
                found.append((os.path.relpath(full, source).replace(os.sep, "/"), cls))
        if not found and strict:
            raise DataError(f"class folder is empty: {base}")
        items.extend(found)
    return classes, items


def read_labels_csv(source):
    """(classes, {filename: (0/1, ...)}) from `<source>/labels.csv`, in file order."""
    path = os.path.join(source, "labels.csv")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if not rows or len(rows[0]) < 2 or rows[0][0] != "filename":
        raise DataError(f"{path}: the header must be filename,<class>,<class>...")
    classes = rows[0][1:]
    labels = {}
    for n, row in enumerate(rows[1:], 2):
        if len(row) != len(rows[0]) or any(v not in ("0", "1") for v in row[1:]):
            raise DataError(f"{path} line {n}: expected a file name and {len(classes)} values of 0 or 1")
        labels[row[0]] = tuple(int(v) for v in row[1:])
    return classes, labels


# ---------------------------------------------------------------------------- grouping


class _UnionFind:
    def __init__(self, n):
        self.parent = list(range(n))

    def find(self, i):
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def assign_groups(files, tolerance=4):
    """Give every usable file a group id; copies (exact bytes, or rotations/flips within
    `tolerance` bits of perceptual hash) in the same stratum share one. Marks later
    byte-identical copies as `duplicate`, and cross-stratum identical bytes as `rejected`
    (conflicting labels)."""
    usable = [f for f in files if f.usable]
    uf = _UnionFind(len(usable))
    first_by_sha = {}
    for i, f in enumerate(usable):
        j = first_by_sha.get(f.sha256)
        if j is None:
            first_by_sha[f.sha256] = i
        elif usable[j].cls == f.cls:
            f.status, f.reason = "duplicate", f"same bytes as {usable[j].source}"
            uf.union(i, j)
        else:
            f.status, f.reason = "rejected", f"same bytes as {usable[j].source} in class {usable[j].cls!r}: conflicting labels"
    # Near matches: within a stratum, compare every image's canonical hash with all eight
    # orientation hashes of every other image (blockwise XOR + popcount in numpy).
    by_cls = {}
    for i, f in enumerate(usable):
        if f.status != "rejected" and f.hashes:
            by_cls.setdefault(f.cls, []).append(i)
    for idx in by_cls.values():
        all_h = np.array([usable[i].hashes for i in idx], dtype=np.uint64)  # (n, 8)
        canon = all_h[:, 0]
        for start in range(0, len(idx), 64):
            block = canon[start:start + 64]
            dist = np.bitwise_count(block[:, None, None] ^ all_h[None, :, :]).min(axis=2)  # (b, n)
            for a, b in zip(*np.nonzero(dist <= tolerance)):
                if start + a != b and _same_picture(usable[idx[start + a]].thumb, usable[idx[b]].thumb):
                    uf.union(idx[start + a], idx[b])
    roots = {}
    for i, f in enumerate(usable):
        if f.status == "rejected":
            continue
        r = uf.find(i)
        roots.setdefault(r, []).append(f)
    # Deterministic ids: per stratum, numbered in order of the group's first member path.
    per_cls = {}
    for members in sorted(roots.values(), key=lambda m: min(x.source for x in m)):
        cls = members[0].cls
        per_cls[cls] = per_cls.get(cls, 0) + 1
        gid = f"{_slug(cls)}-{per_cls[cls]:05d}"
        for m in members:
            m.group = gid
    return per_cls


def _same_picture(a, b, max_mean_diff=3.0):
    """Confirm a hash match on the thumbnails: featureless images (a plain wafer, say)
    share hashes by chance, but copies also agree pixel by pixel, up to a transform."""
    if a is None or b is None:
        return False
    from ga.synthetic import dihedral

    return min(float(np.abs(a - dihedral(b, k)).mean()) for k in range(8)) <= max_mean_diff


def _slug(cls):
    return "".join(c if c.isalnum() else "_" for c in cls) or "none"


# ---------------------------------------------------------------------------- assignment


def target_counts(n, ratios):
    """Largest-remainder rounding of n x ratios; non-zero ratios get >= 1 when n allows."""
    raw = [n * r for r in ratios]
    counts = [int(np.floor(x + 1e-9)) for x in raw]
    rest = n - sum(counts)
    order = sorted(range(len(ratios)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[:rest]:
        counts[i] += 1
    need = [i for i, r in enumerate(ratios) if r > 0]
    if n >= len(need):
        for i in need:
            if counts[i] == 0:
                # Take from the split furthest above its exact share.
                donor = max((j for j in range(len(counts)) if counts[j] > 1), key=lambda j: (counts[j] - raw[j], -j))
                counts[donor] -= 1
                counts[i] += 1
    return counts


def _assign(groups, ratios, seed, order, stratum):
    """Deal groups (lists of FileInfo) to splits; returns per-split image counts."""
    groups = sorted(groups, key=lambda g: min(f.source for f in g))
    needed = [i for i in range(3) if ratios[i] > 0]
    if len(groups) < len(needed):
        raise DataError(f"class {stratum!r} has {len(groups)} independent image group(s), fewer than the "
                        f"{len(needed)} splits to fill")
    if order == "random":
        rng = np.random.default_rng([seed, zlib.crc32(stratum.encode("utf-8"))])
        groups = [groups[i] for i in rng.permutation(len(groups))]
    targets = target_counts(sum(len(g) for g in groups), ratios)
    counts = [0, 0, 0]
    chosen = [None] * len(groups)
    if order == "sorted":
        # The original study's way: the first 70% of the name-sorted listing to train, and so on.
        current = 0
        for gi, g in enumerate(groups):
            while current < 2 and counts[current] >= targets[current]:
                current += 1
            chosen[gi] = current
            counts[current] += len(g)
    else:
        # Every split with a non-zero ratio first receives the group that best fits its
        # target (smallest splits first), then groups go to the split furthest below target.
        for s in sorted(needed, key=lambda i: targets[i]):
            free = [gi for gi in range(len(groups)) if chosen[gi] is None]
            gi = min(free, key=lambda k: (abs(len(groups[k]) - targets[s]), k))
            chosen[gi] = s
            counts[s] += len(groups[gi])
        for gi, g in enumerate(groups):
            if chosen[gi] is None:
                s = max(range(3), key=lambda i: (targets[i] - counts[i], -i))
                chosen[gi] = s
                counts[s] += len(g)
    for g, s in zip(groups, chosen):
        for f in g:
            f.split = SPLITS[s]
    return dict(zip(SPLITS, counts))


# ---------------------------------------------------------------------------- writing


def _write_manifest(path, files):
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(MANIFEST_FIELDS)
    for f in files:
        wr.writerow([_safe_name(f.source), f.cls, f.split, f.group, f.sha256, f.width or "", f.height or "", f.status,
                     f.reason])
    atomic_write_text(path, buf.getvalue())


def read_manifest(path):
    """Rows of a manifest.csv as FileInfo objects."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [
        FileInfo(source=r["source"], cls=r["class"], split=r["split"], group=r["group"], sha256=r["sha256"],
                 width=int(r["width"] or 0), height=int(r["height"] or 0), status=r["status"], reason=r["reason"])
        for r in rows
    ]


def _sha_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _place(src, dst, mode, sha):
    """Put one file at dst via a temporary name. Returns True if it had to act."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with atomic_path(dst) as tmp:
        os.remove(tmp)
        if mode == "link":
            try:
                os.link(src, tmp)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
                shutil.copyfile(src, tmp)
        else:
            shutil.copyfile(src, tmp)
        if mode == "move" and _sha_file(tmp) != sha:
            raise DataError(f"copy of {src} does not match its hash; source left in place")
    if mode == "move":
        os.remove(src)


def _clean_partials(dest):
    for s in SPLITS:
        base = os.path.join(dest, s)
        for dirpath, _, files in os.walk(base):
            for f in files:
                if f.startswith(".") and ".tmp" in f:
                    os.remove(os.path.join(dirpath, f))


# ---------------------------------------------------------------------------- entry


def split_dataset(source, dest, ratios=(0.70, 0.25, 0.05), seed=42, mode="copy", order="random",
                  dry_run=False, overwrite=False, tolerance=4, progress=True, workers=None):
    """Split `source` into `<dest>/{train,valid,test}/` and write `<dest>/manifest.csv`.

    Args:
        source: class folders (one per class), or a folder of images with `labels.csv`.
        dest: output root.
        ratios: train, valid, test fractions summing to 1.
        seed: shuffle seed.
        mode: "copy", "link" (hard links, copying across file systems) or "move".
        order: "random" (seeded) or "sorted" (the original sequential cut).
        dry_run: plan and report only.
        overwrite: replace a destination that holds a different split.
        tolerance: perceptual-hash bits under which two images count as copies.
        progress: tqdm bars.
        workers: scanning threads (default: CPU count).

    Returns:
        SplitResult; exit_code 1 when some files were not usable.
    """
    from tqdm import tqdm

    ratios = [float(r) for r in ratios]
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise DataError(f"--ratios must be three non-negative numbers that sum to 1, got {ratios} (sum {sum(ratios):g})")
    if not os.path.isdir(source):
        raise DataError(f"source folder not found: {source}")
    src_abs, dest_abs = os.path.realpath(source), os.path.realpath(dest)
    if dest_abs == src_abs or dest_abs.startswith(src_abs + os.sep) or src_abs.startswith(dest_abs + os.sep):
        raise DataError(f"destination {dest} and source {source} must not contain one another")
    params = {"source": src_abs, "ratios": ratios, "seed": seed, "order": order, "tolerance": tolerance}
    manifest_path = os.path.join(dest, "manifest.csv")
    params_path = os.path.join(dest, "split.json")
    bar_off = None if progress else True

    if os.path.isfile(manifest_path) and os.path.isfile(params_path) and not overwrite:
        with open(params_path, encoding="utf-8") as fh:
            old = json.load(fh)
        if {k: old.get(k) for k in params} == params:
            return _complete_existing(source, dest, mode, dry_run, old, bar_off)
        raise DataError(f"{dest} already holds a different split (manifest.csv with other source, ratios, seed or "
                        f"order); choose another --dest or pass --overwrite")

    multilabel = os.path.isfile(os.path.join(source, "labels.csv"))
    if multilabel:
        classes, labels = read_labels_csv(source)
        names = sorted(f for f in os.listdir(source) if f != "labels.csv" and not f.startswith(".")
                       and (os.path.isfile(os.path.join(source, f)) or os.path.islink(os.path.join(source, f))))
        items = [(n, ";".join(c for c, v in zip(classes, labels[n]) if v) if n in labels else None) for n in names]
        missing = sorted(set(labels) - set(names))
    else:
        classes, items = _list_class_folders(source)
        missing = []

    with cf.ThreadPoolExecutor(workers or os.cpu_count() or 2) as pool:
        futures = [pool.submit(_scan_one, source, rel, cls or "") for rel, cls in items]
        files = [fu.result() for fu in tqdm(futures, desc="scan", unit="file", disable=bar_off, file=sys.stderr)]
    for f, (_, cls) in zip(files, items):
        if cls is None and f.usable:
            f.status, f.reason = "rejected", "not listed in labels.csv"
    for name in missing:
        reason = "listed in labels.csv but no such file"
        if "/" in name or "\\" in name or name.startswith(".."):
            reason = "name in labels.csv points outside the source folder"
        files.append(FileInfo(source=name, cls="", status="rejected", reason=reason))

    assign_groups(files, tolerance)
    counts = {}
    strata = {}
    for f in files:
        if f.usable:
            strata.setdefault(f.cls, {}).setdefault(f.group, []).append(f)
    if not strata:
        raise DataError(f"no usable images in {source}")
    if not multilabel:
        for cls in classes:
            if cls not in strata:
                raise DataError(f"class folder {os.path.join(source, cls)} holds no usable image")
    if multilabel:
        # Label combinations too rare to spread over three splits are stratified together.
        rare = [k for k, v in strata.items() if len(v) < 3]
        if rare and len(rare) < len(strata):
            pooled = strata.setdefault("(rare)", {})
            for k in rare:
                pooled.update(strata.pop(k))
    for stratum in sorted(strata):
        counts[stratum] = _assign(list(strata[stratum].values()), ratios, seed, order, stratum)
    result = SplitResult(files=files, counts=counts, groups={k: len(v) for k, v in strata.items()})
    bad = [f for f in files if not f.usable]
    for f in bad:
        print(f"skipped: {_safe_name(f.source)}: {f.status}: {f.reason}", file=sys.stderr)
    result.exit_code = 1 if bad else 0
    _print_summary(result, classes if not multilabel else None, dry_run)
    if dry_run:
        return result

    if overwrite and os.path.isfile(manifest_path):
        _remove_previous(dest, manifest_path)
    os.makedirs(dest, exist_ok=True)
    # Plan first: the manifest is the record a re-run completes from.
    atomic_write_json(params_path, {**params, "mode": mode, "complete": False, "multilabel": multilabel,
                                    "classes": classes})
    _write_manifest(manifest_path, files)
    _copy_all(source, dest, files, mode, bar_off)
    if multilabel:
        _write_split_labels(dest, files, classes, labels)
    atomic_write_json(params_path, {**params, "mode": mode, "complete": True, "multilabel": multilabel,
                                    "classes": classes})
    return result


def _copy_all(source, dest, files, mode, bar_off):
    from tqdm import tqdm

    _clean_partials(dest)
    todo = [f for f in files if f.usable]
    for f in tqdm(todo, desc=mode, unit="file", disable=bar_off, file=sys.stderr):
        src = os.path.join(source, *f.source.split("/"))
        dst = os.path.join(dest, f.split, *f.source.split("/"))
        if os.path.isfile(dst):
            # Files only ever reach their final name complete (temporary name, then rename).
            if mode == "move" and os.path.exists(src) and _sha_file(dst) == f.sha256:
                os.remove(src)
            continue
        if not os.path.exists(src):
            raise DataError(f"{src} is gone and its copy {dst} is missing: the source changed during the split")
        _place(src, dst, mode, f.sha256)


def _write_split_labels(dest, files, classes, labels):
    for s in SPLITS:
        rows = [f for f in files if f.usable and f.split == s]
        buf = io.StringIO()
        wr = csv.writer(buf, lineterminator="\n")
        wr.writerow(["filename", *classes])
        for f in rows:
            wr.writerow([f.source, *labels[f.source]])
        os.makedirs(os.path.join(dest, s), exist_ok=True)
        atomic_write_text(os.path.join(dest, s, "labels.csv"), buf.getvalue())


def _complete_existing(source, dest, mode, dry_run, params, bar_off):
    files = read_manifest(os.path.join(dest, "manifest.csv"))
    listed = {f.source for f in files}
    if os.path.isdir(source):
        if params.get("multilabel"):
            present = {_safe_name(n) for n in os.listdir(source) if n != "labels.csv" and not n.startswith(".")}
        else:
            present = {_safe_name(rel) for rel, _ in _list_class_folders(source, strict=False)[1]}
        new = sorted(present - listed)
        if new:
            raise DataError(f"{len(new)} file(s) in {source} are not in the existing split at {dest} "
                            f"(e.g. {new[0]}); pass --overwrite to split again")
    missing = [f for f in files if f.usable and not os.path.isfile(os.path.join(dest, f.split, *f.source.split("/")))]
    result = SplitResult(files=files, changed=bool(missing) or not params.get("complete"))
    for f in files:
        if f.usable:
            result.counts.setdefault(f.cls, {s: 0 for s in SPLITS})[f.split] += 1
    result.exit_code = 1 if any(not f.usable for f in files) else 0
    if not result.changed:
        print(f"{dest} already holds this split ({sum(f.usable for f in files)} images); nothing to do")
        return result
    print(f"completing the split in {dest}: {len(missing)} file(s) to place")
    if dry_run:
        return result
    _copy_all(source, dest, files, params.get("mode", mode), bar_off)
    if params.get("multilabel"):
        classes, labels = read_labels_csv(source)
        _write_split_labels(dest, files, classes, labels)
    atomic_write_json(os.path.join(dest, "split.json"), {**params, "complete": True})
    return result


def _remove_previous(dest, manifest_path):
    for f in read_manifest(manifest_path):
        if f.usable:
            p = os.path.join(dest, f.split, *f.source.split("/"))
            if os.path.isfile(p):
                os.remove(p)
    for s in SPLITS:
        lab = os.path.join(dest, s, "labels.csv")
        if os.path.isfile(lab):
            os.remove(lab)
        for dirpath, _, _ in sorted(os.walk(os.path.join(dest, s)), key=lambda t: -len(t[0])):
            if not os.listdir(dirpath):
                os.rmdir(dirpath)


def _print_summary(result, classes, dry_run):
    strata = sorted(result.counts)
    width = max([len(s) for s in strata] + [8])
    lines = [("would split" if dry_run else "split") + f" ({'dry run: nothing written' if dry_run else 'done'})",
             f"{'class':<{width}}  {'groups':>6}  " + "  ".join(f"{s:>14}" for s in SPLITS) + f"  {'total':>6}"]
    total = {s: 0 for s in SPLITS}
    for st in strata:
        c = result.counts[st]
        n = sum(c.values())
        groups = result.groups.get(st, 0)
        cells = "  ".join(f"{c[s]:>6} ({100 * c[s] / n:5.1f}%)" if n else f"{0:>14}" for s in SPLITS)
        lines.append(f"{st or '(none)':<{width}}  {groups:>6}  {cells}  {n:>6}")
        for s in SPLITS:
            total[s] += c[s]
    bad = {}
    for f in result.files:
        if not f.usable:
            bad[f.status] = bad.get(f.status, 0) + 1
    dups = sum(1 for f in result.files if f.status == "duplicate")
    lines.append("not used: " + (", ".join(f"{k} {v}" for k, v in sorted(bad.items())) or "none")
                 + f"; byte-identical duplicates kept with their group: {dups}")
    print("\n".join(lines))
