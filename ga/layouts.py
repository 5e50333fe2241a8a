"""Every labelled on-disk layout, read in one place.

Layouts (each a folder):

- **class folders**: one subfolder per class (`cex/`, `pg/`); folders named `0`, `1`, ...
  take their names from `data.class_names` (the study's layout). As a split's source, the
  study's own split folders `GAtrainBinary/`, `GAvalidBinary/`, `GAtestBinary/` (each holding
  class folders) are pooled into one.
- **labels.csv with a `label` column** (binary, multiclass): `filename,label`, one row per
  image naming its class.
- **labels.csv with a column per class** (multi-label): `filename,<class>,<class>...`, 0 or 1.
- **the graphene study's dataset folder**: `training_images/` (+ `validation_images/`) and,
  per image, `<stem>-labels.csv` of 0/1 values in the sibling `*_labels/` folder.

`list_source` gives the split what a raw dataset holds; `find_classes` and `labelled_images`
give training, evaluation and the contrastive loader the classes and labels of a split
folder; `unlabelled_images` the images of a folder whatever its labels. A label file is read
nowhere else.

Example:
    >>> from ga.layouts import list_source
    >>> listing = list_source("data/archive/cropped/cropped")      # doctest: +SKIP
    >>> listing.classes, listing.items[0]                          # doctest: +SKIP
    (['cex', 'pg'], ('cex/CEX (1).png', 'cex', 'cex/CEX (1).png'))
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from ga.errors import DataError
from ga.images import image_files, subfolders, walk_files
from ga.tasks import Task, get_task

LABELS_CSV = "labels.csv"
SINGLE_LABEL = "label"  # the one column of a binary or multiclass labels.csv
# The study's own split layout (GAsplitDataIntoTrainValidandTest.py), read as one source.
STUDY_FOLDERS = ("GAtrainBinary", "GAvalidBinary", "GAtestBinary")
# The graphene study's dataset folder (train.py --dataset_dir): images, and per image a
# <stem>-labels.csv of comma-separated 0/1 values, one per class, in a sibling folder.
GRAPHENE_FOLDERS = (("training_images", "training_labels"), ("validation_images", "validation_labels"))


@dataclass
class LabelTable:
    """A labels.csv: its label columns and, per file name, its values in file order."""

    path: str
    columns: list  # ["label"] (one class per image), or the classes (0/1 each)
    rows: dict  # {file name: (values...)}: the class name, or 0/1 per class
    lines: dict = field(default_factory=dict)  # {file name: line number}

    @property
    def single(self) -> bool:
        """One class per image (a `label` column), as binary and multiclass data have."""
        return self.columns == [SINGLE_LABEL]


@dataclass
class Listing:
    """What a split's source holds before any file is read: its classes and items."""

    root: str
    classes: list
    items: list  # (relative path, class or ';'-joined labels (None: unlabelled), path in a split folder)
    missing: list = field(default_factory=list)  # label-file rows with no file
    labels: Optional[dict] = None  # label-file layouts: {file name: the values its split's labels.csv gets}
    columns: Optional[list] = None  # the label columns a split's labels.csv gets

    @property
    def multilabel(self) -> bool:
        return self.labels is not None and self.columns != [SINGLE_LABEL]


# ---------------------------------------------------------------------------- label files


def class_name(folder: str, class_names: Optional[Sequence[str]] = None) -> str:
    """The class a folder holds: `class_names[i]` for a folder named `i` (the study's `0` and
    `1`) when names are given, else the folder's own name."""
    if class_names and folder.isdigit() and int(folder) < len(class_names):
        return class_names[int(folder)]
    return folder


def has_label_file(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, LABELS_CSV))


def read_labels_csv(folder: str) -> LabelTable:
    """`<folder>/labels.csv`: `filename,label` (a class name per image) or
    `filename,<class>,...` (0 or 1 per class). A malformed row, an empty class name or a
    file listed twice is a DataError naming the line."""
    path = os.path.join(folder, LABELS_CSV)
    rows: list = []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            rows.extend(reader)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    except csv.Error as exc:  # a field over the csv module's limit (131,072 characters), a NUL byte
        raise DataError(f"{path} line {reader.line_num}: not a CSV row ({exc})") from None
    if not rows or len(rows[0]) < 2 or rows[0][0] != "filename":
        raise DataError(f"{path}: the header must be filename,label (one class per image) or "
                        f"filename,<class>,<class>... (0 or 1 per class)")
    table = LabelTable(path, rows[0][1:], {})
    for n, row in enumerate(rows[1:], 2):
        if not row:
            continue
        if table.single:
            if len(row) != 2 or not row[1].strip():
                raise DataError(f"{path} line {n}: expected a file name and its class")
            values = (row[1].strip(),)
        else:
            if len(row) != len(rows[0]) or any(v not in ("0", "1") for v in row[1:]):
                raise DataError(f"{path} line {n}: expected a file name and {len(table.columns)} values of 0 or 1")
            values = tuple(int(v) for v in row[1:])
        if row[0] in table.rows:
            raise DataError(f"{path} line {n}: {row[0]} is listed twice (first on line {table.lines[row[0]]})")
        table.rows[row[0]], table.lines[row[0]] = values, n
    return table


def is_graphene_layout(source: str) -> bool:
    """Whether `source` is the graphene study's dataset folder (training_images/ ...)."""
    return not has_label_file(source) and os.path.isdir(os.path.join(source, GRAPHENE_FOLDERS[0][0]))


def read_graphene_layout(source: str, class_names: Optional[Sequence[str]] = None) -> tuple[list, dict, list]:
    """(classes, {relative image path: (0/1, ...)}, relative image paths) of the graphene
    study's dataset folder: training_images/ and validation_images/ (both are pooled and split
    again), each image's labels in <images folder's labels sibling>/<stem>-labels.csv. An image
    without a labels file is listed without labels (and rejected by the split). Classes are
    `class_names` when given, else class1, class2, ..."""
    names, labels, width = [], {}, None
    for images, label_dir in GRAPHENE_FOLDERS:
        folder = os.path.join(source, images)
        if not os.path.isdir(folder):
            continue
        for f in sorted(x for x in os.listdir(folder) if not x.startswith(".")):
            rel = f"{images}/{f}"
            names.append(rel)
            path = os.path.join(source, label_dir, f.split(".")[0] + "-labels.csv")  # the study's name rule
            if os.path.isfile(path):
                labels[rel] = _label_file(path)
                if width is not None and len(labels[rel]) != width:
                    raise DataError(f"{path}: {len(labels[rel])} values, but other label files have {width}")
                width = len(labels[rel])
    if width is None:
        raise DataError(f"{source}: no <name>-labels.csv files in {GRAPHENE_FOLDERS[0][1]}/ for the images in "
                        f"{GRAPHENE_FOLDERS[0][0]}/")
    if class_names and len(class_names) != width:
        raise DataError(f"data.class_names names {len(class_names)} classes, but the label files have {width} values")
    return list(class_names or (f"class{i + 1}" for i in range(width))), labels, names


def _label_file(path: str) -> tuple:
    """The 0/1 values of one <stem>-labels.csv (numpy.savetxt writes them as 0.0/1.0)."""
    try:
        with open(path, encoding="utf-8") as fh:
            values = [float(v) for v in fh.read().replace("\n", ",").split(",") if v.strip()]
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if not values or any(v not in (0.0, 1.0) for v in values):
        raise DataError(f"{path}: expected comma-separated values of 0 or 1")
    return tuple(int(v) for v in values)


# ---------------------------------------------------------------------------- a split's source


def list_source(source: str, class_names: Optional[Sequence[str]] = None, strict: bool = True) -> Listing:
    """The Listing of a raw dataset folder in any layout (module docstring).

    With `strict`, a source without class folders or with an empty one is an error (a new
    split); without it (completing a `move` split) emptied folders are expected.
    """
    if is_graphene_layout(source):
        classes, labels, names = read_graphene_layout(source, class_names)
        return _label_listing(source, classes, labels, names, classes)
    if has_label_file(source):
        table = read_labels_csv(source)
        names = _names_beside(source)
        if table.single:
            classes = sorted({v[0] for v in table.rows.values()})
            return _label_listing(source, classes, table.rows, names, table.columns, single=True)
        return _label_listing(source, table.columns, table.rows, names, table.columns)
    classes, items = _source_class_folders(source, strict, class_names)
    return Listing(source, classes, items)


def _label_listing(source, classes, labels, names, columns, single=False):
    def cls(n):
        if n not in labels:
            return None
        return labels[n][0] if single else ";".join(c for c, v in zip(classes, labels[n]) if v)

    items = [(n, cls(n), n.split("/")[-1]) for n in names]
    return Listing(source, classes, items, sorted(set(labels) - set(names)), labels, list(columns))


def _names_beside(source):
    """The file names beside a labels.csv (links included, to be rejected)."""
    return sorted(f for f in os.listdir(source) if f != LABELS_CSV and not f.startswith(".")
                  and (os.path.isfile(os.path.join(source, f)) or os.path.islink(os.path.join(source, f))))


def _source_class_folders(source, strict=True, class_names=None):
    """(classes, [(rel, class, target)]) for every regular file under each class folder,
    sorted; `target` is where it goes below a split folder (its class's name, then the path
    below the class folder). The study's layout is read as one pool of class folders."""
    roots = [d for d in STUDY_FOLDERS if os.path.isdir(os.path.join(source, d))] or [""]
    folders = [(root, d) for root in roots for d in subfolders(os.path.join(source, root))]
    if not folders and strict:
        raise DataError(f"no class folders in {source} (expected one folder per class, e.g. cex/ and pg/, "
                        f"or images with a labels.csv)")
    items = []
    for root, folder in folders:
        base = os.path.join(source, root, folder)
        cls = class_name(folder, class_names)
        found = [(os.path.relpath(p, source).replace(os.sep, "/"), cls,
                  "/".join([cls, os.path.relpath(p, base).replace(os.sep, "/")])) for p in walk_files(base)]
        if not found and strict:
            raise DataError(f"class folder is empty: {base}")
        items.extend(found)
    return sorted({c for _, c, _ in items}), items


# ---------------------------------------------------------------------------- a split folder


def class_folders(folder: str, class_names: Optional[Sequence[str]] = None) -> dict[str, str]:
    """{class name: path} of a folder's class subfolders (numbered ones named by `class_names`)."""
    if not os.path.isdir(folder):
        raise DataError(f"folder not found: {folder}")
    return {class_name(d, class_names): os.path.join(folder, d) for d in subfolders(folder)}


def find_classes(folder: str, task: Task | str, class_names: Optional[Sequence[str]] = None,
                 any_class: bool = False) -> list[str]:
    """The class list of a (training) split folder for `task`: class folders' or the
    `label` column's names sorted (exclusive tasks), or a labels.csv's class columns in file
    order plus "any" with `any_class` (multi-label)."""
    task = get_task(task)
    if has_label_file(folder):
        table = read_labels_csv(folder)
        _check_kind(table, task)
        classes = sorted({v[0] for v in table.rows.values()}) if table.single else \
            list(table.columns) + (["any"] if any_class else [])
    elif not task.exclusive:
        raise DataError(f"{folder} has no {LABELS_CSV} (a {task.name} task reads its labels from one: "
                        f"filename,<class>,... with 0 or 1 per class)")
    else:
        classes = sorted(class_folders(folder, class_names))
    if task.exclusive:
        task.check_classes(classes, folder)
    return classes


def _check_kind(table, task):
    if table.single and not task.exclusive:
        raise DataError(f"{table.path} names one class per image (a label column); a {task.name} task needs a "
                        f"0/1 column per class")
    if not table.single and task.exclusive:
        raise DataError(f"{table.path} has a 0/1 column per class (multi-label); a {task.name} task needs one "
                        f"class per image: filename,label")


def labelled_images(folder: str, classes: Sequence[str], task: Task | str,
                    class_names: Optional[Sequence[str]] = None, any_class: bool = False,
                    partial: bool = False) -> tuple[list[str], np.ndarray]:
    """Files and labels (float32, (n, outputs), in `classes`' order) of a labelled folder.

    Args:
        classes: the run's class list (labels.json).
        task: the run's task.
        class_names: names of class folders named 0, 1, ...
        any_class: multi-label: the last class is the derived "any".
        partial: (evaluation) a class may be absent, and a folder or label naming no class of
            the run is an error; otherwise (training) every class must have its folder.
    """
    task = get_task(task)
    if has_label_file(folder):
        table = read_labels_csv(folder)
        _check_kind(table, task)
        return _table_images(folder, table, list(classes), task, any_class)
    if not task.exclusive:
        raise DataError(f"{folder} has no {LABELS_CSV} (a {task.name} model is evaluated and trained on images "
                        f"listed in one)")
    paths, index = _folder_images(folder, list(classes), class_names, partial)
    return paths, task.encode(index, len(classes))


def _table_images(folder, table, classes, task, any_class):
    paths, labels = [], []
    base = [c for c in classes if not (any_class and c == "any")]
    if not table.single and table.columns != base:
        raise DataError(f"{table.path}: columns {table.columns} differ from the run's classes {base}")
    for name, values in table.rows.items():
        if os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
            raise DataError(f"{table.path}: file name {name!r} points outside the split folder")
        if table.single and values[0] not in classes:
            raise DataError(f"{table.path} line {table.lines[name]}: class {values[0]!r} is not one of the run's "
                            f"classes {classes}")
        paths.append(os.path.join(folder, name))
        if table.single:
            labels.append(classes.index(values[0]))
        else:
            labels.append([float(v) for v in values] + ([float(max(values))] if any_class else []))
    if table.single:
        return paths, task.encode(labels, len(classes))
    return paths, np.asarray(labels, np.float32).reshape(-1, len(classes))


def _folder_images(folder, classes, class_names, partial):
    """(paths, class index int (n,)) of class folders, in `classes`' order."""
    found = class_folders(folder, class_names)
    if partial:
        unknown = [os.path.basename(p) for c, p in found.items() if c not in classes]
        if unknown or not found:
            raise DataError(f"{folder} must hold class folders named like the model's classes {classes} (or 0, 1, "
                            f"... in that order); " + (f"unknown: {', '.join(unknown)}" if unknown else "found none"))
    paths, labels = [], []
    for idx, cls in enumerate(classes):
        path = found.get(cls, os.path.join(folder, cls))
        if not os.path.isdir(path):
            if partial:
                continue
            raise DataError(f"class folder missing: {path} (classes recorded for this run: {classes})")
        got = image_files(path)
        paths.extend(got)
        labels.extend([idx] * len(got))
    return paths, np.asarray(labels, int)


def unlabelled_images(folder: str) -> list[str]:
    """Every image in a folder and its subfolders, whatever labels it has (contrastive
    pretraining reads images only)."""
    if not os.path.isdir(folder):
        raise DataError(f"folder not found: {folder}")
    return image_files(folder)
