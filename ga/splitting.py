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
import json
import logging
import os
import shutil
import sys
import zlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image

from ga.errors import DataError, opt
from ga.files import atomic_path, atomic_write_csv, atomic_write_json, sha256_file
from ga.images import ImageProblem, checked, dihedral, is_image_name
from ga.layouts import LABELS_CSV, Listing, list_source
from ga.log import bar_disabled

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
MANIFEST_FIELDS = ("source", "class", "split", "group", "sha256", "width", "height", "status", "reason", "target",
                   "fold")


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
    target: str = ""  # path under the split folder, when it is not `source` (renamed class folders)
    fold: str = ""  # cross-validation fold (0 .. K-1) of a train/valid image, after `--folds K`

    @property
    def placed(self) -> str:
        """The path under `<dest>/<split>/` this file is placed at."""
        return self.target or self.source

    @property
    def usable(self) -> bool:
        return self.status in ("ok", "duplicate")


@dataclass
class SplitResult:
    """What a split did: manifest rows, counts and the process exit status.

    `state`: "split" (planned, and written unless `dry_run`), "unchanged" (the destination
    already held this split) or "completed" (an interrupted split finished: `to_place` files
    placed)."""

    files: list
    counts: dict = field(default_factory=dict)  # {class: {split: n}}
    groups: dict = field(default_factory=dict)  # {class: number of groups}
    folds: dict = field(default_factory=dict)  # {class: {fold: images}} after `folds=K`
    changed: bool = True
    exit_code: int = 0
    dest: str = ""
    dry_run: bool = False
    state: str = "split"
    to_place: int = 0

    @property
    def unused(self) -> list[FileInfo]:
        """The files not placed in any split (corrupt, rejected, not images)."""
        return [f for f in self.files if not f.usable]

    @property
    def duplicates(self) -> int:
        return sum(1 for f in self.files if f.status == "duplicate")


# ---------------------------------------------------------------------------- scanning


def perceptual_hashes(img: Image.Image) -> tuple[int, ...]:
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


def picture_keys(img: Image.Image) -> tuple[tuple[int, ...], np.ndarray]:
    """(the 8 perceptual hashes, a 16x16 grey thumbnail) of an image: what finds its copies."""
    return perceptual_hashes(img), np.asarray(img.convert("L").resize((16, 16), Image.BILINEAR), np.float32)


def near_pairs(hashes: Sequence[Sequence[int]], thumbs: Sequence[np.ndarray], tolerance: int = 4
               ) -> list[tuple[int, int]]:
    """Index pairs (i < j) of images that are copies of each other up to a rotation or flip:
    i's canonical hash within `tolerance` bits of one of j's eight orientation hashes
    (blockwise XOR + popcount in numpy), confirmed on the thumbnails."""
    if not len(hashes):
        return []
    all_h = np.array(hashes, dtype=np.uint64)  # (n, 8)
    canon = all_h[:, 0]
    pairs = set()
    for start in range(0, len(all_h), 64):
        dist = np.bitwise_count(canon[start:start + 64, None, None] ^ all_h[None, :, :]).min(axis=2)  # (b, n)
        for a, b in zip(*np.nonzero(dist <= tolerance)):
            i, j = sorted((start + int(a), int(b)))
            if i != j and (i, j) not in pairs and _same_picture(thumbs[i], thumbs[j]):
                pairs.add((i, j))
    return sorted(pairs)


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
    if not is_image_name(rel):
        info.status, info.reason = "skipped-not-image", "extension is not an image type"
        return info
    try:
        with checked(data, load=True) as im:  # full decode: catches truncated and damaged files
            info.width, info.height = im.size
            info.hashes, info.thumb = picture_keys(im)
    except ImageProblem as exc:
        info.status, info.reason = "corrupt", str(exc)
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


def safe_name(rel: str) -> str:
    """A file name as the manifest and messages show it (control characters and bytes that are
    not UTF-8 escaped)."""
    return rel.encode("utf-8", "backslashreplace").decode("utf-8").encode("unicode_escape").decode("ascii") \
        if _name_problem(rel) else rel


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


def assign_groups(files: list[FileInfo], tolerance: int = 4) -> dict[str, int]:
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
        for a, b in near_pairs([usable[i].hashes for i in idx], [usable[i].thumb for i in idx], tolerance):
            uf.union(idx[a], idx[b])
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
    return min(float(np.abs(a - dihedral(b, k)).mean()) for k in range(8)) <= max_mean_diff


def _slug(cls):
    return "".join(c if c.isalnum() else "_" for c in cls) or "none"


# ---------------------------------------------------------------------------- assignment


def target_counts(n: int, ratios: Sequence[float]) -> list[int]:
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
    atomic_write_csv(path, MANIFEST_FIELDS, ([safe_name(f.source), f.cls, f.split, f.group, f.sha256, f.width or "",
                                             f.height or "", f.status, f.reason, safe_name(f.placed), f.fold]
                                            for f in files))


def read_manifest(path: str) -> list[FileInfo]:
    """Rows of a manifest.csv as FileInfo objects."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [
        FileInfo(source=r["source"], cls=r["class"], split=r["split"], group=r["group"], sha256=r["sha256"],
                 width=int(r["width"] or 0), height=int(r["height"] or 0), status=r["status"], reason=r["reason"],
                 target="" if r.get("target") in (None, r["source"]) else r["target"], fold=r.get("fold") or "")
        for r in rows
    ]


def split_root_of(path: str, depth: int = 6) -> str | None:
    """The split folder (holding manifest.csv and split.json) that `path` lies in, or None."""
    d = os.path.dirname(os.path.abspath(path))
    for _ in range(depth):
        if os.path.isfile(os.path.join(d, "manifest.csv")) and os.path.isfile(os.path.join(d, "split.json")):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return None


def manifest_groups(paths: Sequence[str]) -> tuple[list[str] | None, str | None]:
    """Each image's copy group, read from the manifest of the split it lies in, so that
    intervals resample rotated/flipped copies together.

    Returns:
        (groups, the manifest's path), or (None, None) when no image lies in a split made by
        split_data.py. An image the manifest does not list is a group of its own.
    """
    tables, found, groups = {}, None, []
    roots = {}
    for p in paths:
        d = os.path.dirname(os.path.abspath(p))
        if d not in roots:
            roots[d] = split_root_of(p)
        root = roots[d]
        if root is not None and root not in tables:
            tables[root] = {(f.split, safe_name(f.placed)): f.group for f in
                            read_manifest(os.path.join(root, "manifest.csv")) if f.usable}
        group = None
        if root is not None:
            split, _, placed = os.path.relpath(os.path.abspath(p), root).replace(os.sep, "/").partition("/")
            group = tables[root].get((split, placed))
        if group:
            found = found or os.path.join(root, "manifest.csv")
            groups.append(f"{root}:{group}")
        else:
            groups.append(f"image:{os.path.abspath(p)}")
    return (groups, found) if found else (None, None)


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
        if mode == "move" and sha256_file(tmp) != sha:
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


def split_dataset(source: str, dest: str, ratios: Sequence[float] = (0.70, 0.25, 0.05), seed: int = 42,
                  mode: str = "copy", order: str = "random", dry_run: bool = False, overwrite: bool = False,
                  tolerance: int = 4, progress: bool = True, workers: int | None = None,
                  class_names: Sequence[str] | None = None, folds: int | None = None) -> SplitResult:
    """Split `source` into `<dest>/{train,valid,test}/` and write `<dest>/manifest.csv`.

    Three steps: list and scan the source, plan the split (groups dealt to splits, in
    memory), then write (manifest first, then the files, then `split.json` marked complete).
    An existing split with the same parameters is completed instead.

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
        class_names: names of class folders named 0, 1, ... (the study's layout), in order.
        folds: also deal the train and valid images into this many cross-validation folds
            (manifest column `fold`; an existing split gets them without moving a file).

    Returns:
        SplitResult; exit_code 1 when some files were not usable.
    """
    ratios = [float(r) for r in ratios]
    _check_arguments(source, dest, ratios)
    if folds is not None and not 2 <= folds <= 100:
        raise DataError(f"must be between 2 and 100, got {folds}", arg="folds")
    params = {"source": os.path.realpath(source), "ratios": ratios, "seed": seed, "order": order,
              "tolerance": tolerance, **({"class_names": list(class_names)} if class_names else {})}
    bar_off = bar_disabled(progress)
    previous = _previous_split(dest, params, overwrite)
    if previous is not None:
        result = _complete_existing(source, dest, mode, dry_run, previous, bar_off)
    else:
        listing = list_source(source, class_names)
        files = _scan(source, listing, workers, bar_off)
        result = plan_split(files, listing, ratios, seed, order, tolerance)
        result.dest, result.dry_run = dest, dry_run
        if not dry_run:
            _write_split(source, dest, result, listing, {**params, "mode": mode}, mode, overwrite, bar_off)
    if folds is not None:
        result.folds = assign_folds(result.files, folds, seed)
        if not dry_run:
            _write_folds(dest, result.files, folds, seed)
    return result


def assign_folds(files: list[FileInfo], k: int, seed: int) -> dict[str, dict[int, int]]:
    """Deal the train and valid images into k cross-validation folds (sets `fold`), each copy
    group inside one fold, class shares kept (scikit-learn's StratifiedGroupKFold, shuffled
    with `seed`); the test images keep no fold. Pure.

    Returns:
        {stratum: {fold: images}}.
    """
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold

    pool = [f for f in files if f.usable and f.split in ("train", "valid")]
    for f in files:
        f.fold = ""
    n_groups = len({f.group for f in pool})
    if n_groups < k:
        raise DataError(f"{k} folds need at least {k} independent image groups in train and valid; there are "
                        f"{n_groups}", arg="folds")
    y = [f.cls for f in pool]
    with warnings.catch_warnings():  # a class with fewer groups than folds only warns: said below
        warnings.simplefilter("ignore", UserWarning)
        parts = StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(pool)), y,
                                                                                [f.group for f in pool])
        for i, (_, held) in enumerate(parts):
            for j in held:
                pool[j].fold = str(i)
    counts: dict[str, dict[int, int]] = {}
    for f in pool:
        counts.setdefault(f.cls, {i: 0 for i in range(k)})[int(f.fold)] += 1
    for cls, per in counts.items():
        if min(per.values()) == 0:
            log.warning("class %r has fewer copy groups than the %d folds: some folds hold none of it", cls, k)
    return counts


def _write_folds(dest, files, k, seed):
    """The manifest's fold column and split.json's record of the folds."""
    params_path = os.path.join(dest, "split.json")
    with open(params_path, encoding="utf-8") as fh:
        doc = json.load(fh)
    _write_manifest(os.path.join(dest, "manifest.csv"), files)
    doc["folds"] = {"k": k, "seed": seed, "method": "sklearn StratifiedGroupKFold over the train and valid images"}
    atomic_write_json(params_path, doc)


def fold_table(split_root: str) -> tuple[int, dict[str, int]]:
    """(K, {absolute path of a train/valid image: its fold}) of a split made with `--folds K`.

    Raises:
        DataError: the split has no folds.
    """
    if not os.path.isdir(split_root):
        raise DataError(f"data.split_root: folder not found: {split_root}")
    params_path, manifest = os.path.join(split_root, "split.json"), os.path.join(split_root, "manifest.csv")
    doc = {}
    if os.path.isfile(params_path):
        with open(params_path, encoding="utf-8") as fh:
            doc = json.load(fh)
    if "folds" not in doc or not os.path.isfile(manifest):
        raise DataError(f"the split at {split_root} has no cross-validation folds; make them with "
                        f"`python split_data.py --folds 5` (the files stay where they are)")
    root = os.path.abspath(split_root)
    table = {os.path.join(root, f.split, *f.placed.split("/")): int(f.fold)
             for f in read_manifest(manifest) if f.usable and f.fold != ""}
    return int(doc["folds"]["k"]), table


def _check_arguments(source, dest, ratios):
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise DataError(f"must be three non-negative numbers that sum to 1, got {ratios} (sum {sum(ratios):g})",
                        arg="ratios")
    if not os.path.isdir(source):
        raise DataError(f"source folder not found: {source}")
    src_abs, dest_abs = os.path.realpath(source), os.path.realpath(dest)
    if dest_abs == src_abs or dest_abs.startswith(src_abs + os.sep) or src_abs.startswith(dest_abs + os.sep):
        raise DataError(f"destination {dest} and source {source} must not contain one another")


def _previous_split(dest, params, overwrite):
    """The parameters of the split already in `dest` when it is this one, else None (and an
    error when it is another, unless `overwrite`)."""
    manifest_path, params_path = os.path.join(dest, "manifest.csv"), os.path.join(dest, "split.json")
    if overwrite or not (os.path.isfile(manifest_path) and os.path.isfile(params_path)):
        return None
    with open(params_path, encoding="utf-8") as fh:
        old = json.load(fh)
    if {k: old.get(k) for k in params} == params:
        return old
    raise DataError(f"{dest} already holds a different split (manifest.csv with other source, ratios, seed or "
                    f"order); choose another {opt('dest')} or pass {opt('overwrite', 'overwrite=True')}")


def _scan(source, listing, workers, bar_off):
    """FileInfo for every listed item (read, hashed, checked) and every missing labels.csv row."""
    from tqdm import tqdm

    with cf.ThreadPoolExecutor(workers or os.cpu_count() or 2) as pool:
        futures = [pool.submit(_scan_one, source, rel, cls or "") for rel, cls, _ in listing.items]
        files = [fu.result() for fu in tqdm(futures, desc="scan", unit="file", disable=bar_off, file=sys.stderr)]
    placed = {}
    for f, (rel, cls, target) in zip(files, listing.items):
        f.target = "" if target == rel else target
        if cls is None and f.usable:
            f.status, f.reason = "rejected", "no labels (not listed in labels.csv, or no <name>-labels.csv file)"
        elif f.usable and f.placed in placed:  # the study's layout: one name in two of its folders
            f.status, f.reason = "rejected", f"{placed[f.placed]} is placed at the same path {f.placed}"
        elif f.usable:
            placed[f.placed] = f.source
    for name in listing.missing:
        reason = "listed in labels.csv but no such file"
        if "/" in name or "\\" in name or name.startswith(".."):
            reason = "name in labels.csv points outside the source folder"
        files.append(FileInfo(source=name, cls="", status="rejected", reason=reason))
    return files


def plan_split(files: list[FileInfo], listing: Listing, ratios: Sequence[float], seed: int, order: str,
               tolerance: int) -> SplitResult:
    """Group copies, then deal each stratum's groups to the splits (sets `group` and `split`
    on every usable FileInfo). Pure: reads and writes no file."""
    assign_groups(files, tolerance)
    strata = {}
    for f in files:
        if f.usable:
            strata.setdefault(f.cls, {}).setdefault(f.group, []).append(f)
    if not strata:
        raise DataError(f"no usable images in {listing.root}")
    if not listing.multilabel:
        for cls in listing.classes:
            if cls not in strata:
                raise DataError(f"class folder {os.path.join(listing.root, cls)} holds no usable image")
    else:
        # Label combinations too rare to spread over three splits are stratified together.
        rare = [k for k, v in strata.items() if len(v) < 3]
        if rare and len(rare) < len(strata):
            pooled = strata.setdefault("(rare)", {})
            for k in rare:
                pooled.update(strata.pop(k))
    counts = {st: _assign(list(strata[st].values()), ratios, seed, order, st) for st in sorted(strata)}
    bad = [f for f in files if not f.usable]
    return SplitResult(files=files, counts=counts, groups={k: len(v) for k, v in strata.items()},
                       exit_code=1 if bad else 0)


def _write_split(source, dest, result, listing, params, mode, overwrite, bar_off):
    """Manifest first (the record a re-run completes from), then the files, then split.json
    marked complete."""
    manifest_path, params_path = os.path.join(dest, "manifest.csv"), os.path.join(dest, "split.json")
    if overwrite and os.path.isfile(manifest_path):
        _remove_previous(dest, manifest_path)
    os.makedirs(dest, exist_ok=True)
    doc = {**params, "complete": False, "multilabel": listing.multilabel, "classes": listing.classes}
    atomic_write_json(params_path, doc)
    _write_manifest(manifest_path, result.files)
    _copy_all(source, dest, result.files, mode, bar_off)
    if listing.labels is not None:
        _write_split_labels(dest, result.files, listing.columns, listing.labels)
    atomic_write_json(params_path, {**doc, "complete": True})


def _copy_all(source, dest, files, mode, bar_off):
    from tqdm import tqdm

    _clean_partials(dest)
    todo = [f for f in files if f.usable]
    for f in tqdm(todo, desc=mode, unit="file", disable=bar_off, file=sys.stderr):
        src = os.path.join(source, *f.source.split("/"))
        dst = os.path.join(dest, f.split, *f.placed.split("/"))
        if os.path.isfile(dst):
            # Files only ever reach their final name complete (temporary name, then rename).
            if mode == "move" and os.path.exists(src) and sha256_file(dst) == f.sha256:
                os.remove(src)
            continue
        if not os.path.exists(src):
            raise DataError(f"{src} is gone and its copy {dst} is missing: the source changed during the split")
        _place(src, dst, mode, f.sha256)


def _write_split_labels(dest, files, columns, labels):
    """Each split's labels.csv, with the source's label columns (`label`, or one per class)."""
    for s in SPLITS:
        rows = [[f.placed, *labels[f.source]] for f in files if f.usable and f.split == s]
        os.makedirs(os.path.join(dest, s), exist_ok=True)
        atomic_write_csv(os.path.join(dest, s, LABELS_CSV), ["filename", *columns], rows)


def _complete_existing(source, dest, mode, dry_run, params, bar_off):
    files = read_manifest(os.path.join(dest, "manifest.csv"))
    listed = {f.source for f in files}
    listing = list_source(source, params.get("class_names"), strict=False) if os.path.isdir(source) else None
    if listing is not None:
        new = sorted({safe_name(rel) for rel, _, _ in listing.items} - listed)
        if new:
            raise DataError(f"{len(new)} file(s) in {source} are not in the existing split at {dest} "
                            f"(e.g. {new[0]}); pass {opt('overwrite', 'overwrite=True')} to split again")
    missing = [f for f in files if f.usable and not os.path.isfile(os.path.join(dest, f.split, *f.placed.split("/")))]
    result = SplitResult(files=files, changed=bool(missing) or not params.get("complete"), dest=dest,
                         dry_run=dry_run, state="completed", to_place=len(missing))
    for f in files:
        if f.usable:
            result.counts.setdefault(f.cls, {s: 0 for s in SPLITS})[f.split] += 1
    result.exit_code = 1 if any(not f.usable for f in files) else 0
    if not result.changed:
        result.state = "unchanged"
        return result
    if dry_run:
        return result
    _copy_all(source, dest, files, params.get("mode", mode), bar_off)
    if listing is not None and listing.labels is not None:
        _write_split_labels(dest, files, listing.columns, listing.labels)
    atomic_write_json(os.path.join(dest, "split.json"), {**params, "complete": True})
    return result


def _remove_previous(dest, manifest_path):
    for f in read_manifest(manifest_path):
        if f.usable:
            p = os.path.join(dest, f.split, *f.placed.split("/"))
            if os.path.isfile(p):
                os.remove(p)
    for s in SPLITS:
        lab = os.path.join(dest, s, LABELS_CSV)
        if os.path.isfile(lab):
            os.remove(lab)
        for dirpath, _, _ in sorted(os.walk(os.path.join(dest, s)), key=lambda t: -len(t[0])):
            if not os.listdir(dirpath):
                os.rmdir(dirpath)
