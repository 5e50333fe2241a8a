"""Run folder conventions: names, the RUNNING marker, labels.json, finding the newest run,
and the table of runs (`ga runs`).

The RUNNING marker holds `started <time> pid <pid> host <host>`; a run that stopped on an
error or an interrupt adds a line `failed <time>: <reason>`. A run's state is then:
finished (its deliverables written and the marker gone), RUNNING (the marker, and its
process alive on this host, or on another host, which cannot be told from here), or failed
(the marker says so, or its process on this host is gone: killed, or the machine restarted).
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import importlib.metadata as md
import json
import os
import platform
import re
import socket
import subprocess
import sys
from typing import TYPE_CHECKING, Any, Mapping, Sequence


from ga import __version__
from ga.config import MAX_SIDE, MIN_SIDE, model_input_size, preprocessing_mode
from ga.errors import GAError, ModelError
from ga.files import atomic_write_csv, atomic_write_json, sha256_file
from ga.hardware import describe
from ga.tasks import TASKS, get_task

if TYPE_CHECKING:
    from ga.config import Config, OutputConfig

RUNNING = "RUNNING"
LABELS = "labels.json"


def new_run_dir(output: OutputConfig) -> str:
    """Create `<root>/<prefix>_<YYYY-mm-dd_HH-MM-SS>[_<name>]`, never reusing a folder."""
    stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    base = f"{output.prefix}_{stamp}" + (f"_{output.name}" if output.name else "")
    os.makedirs(output.root, exist_ok=True)
    for i in range(1, 1000):
        path = os.path.join(output.root, base if i == 1 else f"{base}-{i}")
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        with open(os.path.join(path, RUNNING), "w", encoding="utf-8") as fh:
            fh.write(f"started {_dt.datetime.now().isoformat(timespec='seconds')} pid {os.getpid()} "
                     f"host {socket.gethostname()}\n")
        return path
    raise ModelError(f"could not create a new run folder under {output.root}")


def is_complete(run_dir: str) -> bool:
    """A run is complete when its deliverables are written and the marker is gone."""
    return (os.path.isfile(os.path.join(run_dir, LABELS)) and os.path.isfile(os.path.join(run_dir, "metrics.json"))
            and not os.path.exists(os.path.join(run_dir, RUNNING)))


def mark_complete(run_dir: str) -> None:
    os.remove(os.path.join(run_dir, RUNNING))


def mark_failed(run_dir: str, reason: str) -> None:
    """Add why the run stopped to its RUNNING marker (it stays: `main.py --resume` can go on)."""
    path = os.path.join(run_dir, RUNNING)
    if os.path.isfile(path):
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"failed {_dt.datetime.now().isoformat(timespec='seconds')}: {reason}\n")


def newest_run(root: str) -> str | None:
    """The most recently finished complete classifier run folder under `root`, or None
    (contrastive pretraining runs have no classifier and are passed over)."""
    if not os.path.isdir(root):
        return None
    runs = [os.path.join(root, d) for d in os.listdir(root)]
    runs = [r for r in runs if os.path.isdir(r) and is_complete(r) and _is_classifier(r)]
    return max(runs, key=lambda r: os.path.getmtime(os.path.join(r, "metrics.json")), default=None)


def _is_classifier(run_dir):
    try:
        with open(os.path.join(run_dir, LABELS), encoding="utf-8") as fh:
            return TASKS[json.load(fh).get("task")].classifier
    except (OSError, ValueError, AttributeError, KeyError):
        return False


def labels_document(cfg: Config, classes: Sequence[str], thresholds: Mapping[str, float] | None = None) -> dict:
    """The labels.json contract (also mirrored into the ONNX metadata). A multiclass model
    has no thresholds: it names its most probable class."""
    task = get_task(cfg)
    doc = {
        "task": task.name,
        "classes": list(classes),
        "positive_class": task.positive_class(classes),
        "thresholds": thresholds or task.default_thresholds(classes, cfg.model.threshold),
        "input_size": list(model_input_size(cfg)),
        "resize": list(cfg.data.image_size),
        "center_crop": list(cfg.data.augment.crop) if cfg.data.augment.crop else None,
        "preprocessing": preprocessing_mode(cfg.model.backbone),
        "backbone": cfg.model.backbone,
        "version": __version__,
    }
    return doc


def write_labels(run_dir: str, doc: dict) -> None:
    atomic_write_json(os.path.join(run_dir, LABELS), doc)


def read_labels(path: str) -> dict:
    """Read and check a labels.json file (or the one in a run folder)."""
    if os.path.isdir(path):
        path = os.path.join(path, LABELS)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        raise ModelError(f"labels file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from None
    return check_labels(doc, path)


def check_labels(doc: Any, path: str) -> dict:
    """Check a labels document before any model is built; `path` names its source in errors.

    Raises:
        ModelError: a key is missing or of the wrong type; the task is unknown; the classes are
            not distinct non-empty names; a threshold is not a number strictly between 0 and 1
            (NaN and infinities included) or names no class; input_size, resize or center_crop
            is not [height, width] of whole numbers from 8 to 2048 (a crop no larger than the
            resize).
    """
    need = ("task", "classes", "thresholds", "input_size", "preprocessing")
    if not isinstance(doc, dict) or any(k not in doc for k in need):
        raise ModelError(f"{path} is not a ga labels file (needs {', '.join(need)})")
    classes = doc["classes"]
    if not isinstance(doc["task"], str) or doc["task"] not in TASKS or not isinstance(classes, list) or \
            not all(isinstance(c, str) and c for c in classes):
        raise ModelError(f"{path}: task or classes are malformed (task one of {', '.join(TASKS)}; classes a list of "
                         f"names)")
    if len(set(classes)) != len(classes):
        raise ModelError(f"{path}: classes must be distinct, got {classes}")
    if get_task(doc).classifier and len(classes) < 1:
        raise ModelError(f"{path}: task or classes are malformed")
    get_task(doc).check_labels_document(classes, path)
    thresholds = doc["thresholds"]
    if not isinstance(thresholds, dict):
        raise ModelError(f"{path}: thresholds must be a mapping {{class: threshold}}, got {type(thresholds).__name__}")
    for c, t in thresholds.items():
        if c not in classes:
            raise ModelError(f"{path}: threshold for {c!r}, which is not one of the classes {classes}")
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < 1:  # NaN fails 0 < t
            raise ModelError(f"{path}: the threshold of {c!r} must be a number between 0 and 1 (exclusive), got {t!r}")
    if not isinstance(doc["preprocessing"], str):
        raise ModelError(f"{path}: preprocessing must be a name, got {doc['preprocessing']!r}")
    sizes = {k: doc.get(k) for k in ("input_size", "resize", "center_crop")}
    for key, value in sizes.items():
        if value is None and key != "input_size":
            continue
        if not (isinstance(value, list) and len(value) == 2 and
                all(isinstance(v, int) and not isinstance(v, bool) and MIN_SIDE <= v <= MAX_SIDE for v in value)):
            raise ModelError(f"{path}: {key} must be [height, width] with each a whole number from {MIN_SIDE} to "
                             f"{MAX_SIDE}, got {value!r}")
    if sizes["center_crop"] and sizes["resize"] and any(c > r for c, r in zip(sizes["center_crop"], sizes["resize"])):
        raise ModelError(f"{path}: center_crop {sizes['center_crop']} is larger than resize {sizes['resize']}")
    return doc


def read_history(path: str) -> list[dict]:
    """The rows of a run's history.csv as dicts (none before the first epoch)."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def trim_history(path: str, initial_epoch: int) -> None:
    """Drop history rows of epochs that will run again, so each epoch appears once.

    A process killed after CSVLogger wrote epoch k but before the backup of epoch k was
    saved repeats epoch k on resume; its first row is removed here.
    """
    rows = read_history(path)
    keep = [r for r in rows if str(r.get("epoch", "")).isdigit() and int(r["epoch"]) < initial_epoch]
    if keep != rows:
        with open(path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh))
        atomic_write_csv(path, header, ([r.get(k, "") for k in header] for r in keep))


# ---------------------------------------------------------------------------- provenance


def write_run_json(run_dir: str, cfg: Config, data: Any, precision: str, strategy: Any, fit_info: dict,
                   workers: int = 1, precision_reason: str = "") -> None:
    """run.json: package versions, seed, commit, command, device (`workers`: processes of a
    multi-worker run), data hashes, fit summary."""
    import tensorflow as tf

    versions = {"python": platform.python_version(), "ga": __version__}
    for pkg in ("tensorflow", "keras", "numpy", "scikit-learn", "tf2onnx", "onnx", "onnxruntime", "pillow"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    dirs = dict(zip(("train", "valid", "test"), cfg.data.dirs()))
    splits = [s for s in ("train", "valid", "test") if getattr(data, s) is not None]
    atomic_write_json(os.path.join(run_dir, "run.json"), {
        "versions": versions,
        "seed": cfg.training.seed,
        "deterministic": cfg.training.deterministic,
        "git_commit": _git_commit(),
        "command": " ".join(sys.argv),
        "device": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
            "strategy": type(strategy).__name__,
            "replicas": strategy.num_replicas_in_sync,
            "workers": workers,
            "precision_policy": precision,
            "precision_reason": precision_reason,
            "cpu_units": describe(),
        },
        "data": {
            "split_manifest_sha256": _manifest_sha256(cfg.data.split_root),
            "file_list_sha256": {s: _list_hash(getattr(data, s).paths, getattr(data, s).labels, dirs[s])
                                 for s in splits},
            "images": {s: getattr(data, s).size for s in splits},
            "images_per_class": data.class_counts(),
            "skipped": [{"path": p, "reason": r} for p, r in data.skipped()],
        },
        "fit": fit_info,
    })


def _git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(os.path.abspath(__file__)))
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _manifest_sha256(split_root):
    path = os.path.join(split_root, "manifest.csv")
    return sha256_file(path) if os.path.isfile(path) else None


def _list_hash(paths, labels, root):
    h = hashlib.sha256()
    for p, y in zip(paths, labels):
        h.update(f"{os.path.relpath(p, root)}\t{list(map(float, y))}\n".encode("utf-8"))
    return h.hexdigest()


# ---------------------------------------------------------------------------- the table of runs


RUN_COLUMNS = ("name", "date", "state", "task", "backbone", "epoch", "accuracy", "macro_f1", "roc_auc")
_STAMP = re.compile(r"_(\d{4}-\d{2}-\d{2})_(\d{2})-(\d{2})-(\d{2})")


def test_figures(m: Mapping) -> dict[str, float]:
    """The test figures of a metrics.json: accuracy, balanced accuracy, macro F1, ROC AUC
    (binary: the positive class; else the macro mean, or the mean of the per-class AUCs) and
    each class's F1."""
    auc = m.get("roc_auc")
    if isinstance(auc, dict):
        auc = m.get("roc_auc_macro")
        if auc is None:
            defined = [v for v in m["roc_auc"].values() if v is not None]
            auc = sum(defined) / len(defined) if defined else None
    out = {"accuracy": m.get("accuracy"), "balanced_accuracy": m.get("balanced_accuracy"),
           "macro_f1": (m.get("macro_avg") or {}).get("f1"), "roc_auc": auc}
    out.update({f"f1_{c}": v["f1"] for c, v in (m.get("per_class") or {}).items()})
    return {k: v for k, v in out.items() if v is not None}


def run_state(run_dir: str) -> tuple[str, str]:
    """(state, why): finished, RUNNING or failed (module docstring); "" for a folder that is
    no run (no config.yaml)."""
    marker = os.path.join(run_dir, RUNNING)
    if not os.path.isfile(marker):
        if not os.path.isfile(os.path.join(run_dir, "config.yaml")):
            return "", ""
        done = any(os.path.isfile(os.path.join(run_dir, f)) for f in ("metrics.json", "cv.json", "lr_find.json"))
        return ("finished", "") if done else ("failed", "no marker and no metrics.json")
    try:
        with open(marker, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        return "RUNNING", f"marker unreadable ({exc.strerror})"
    failed = [line for line in text.splitlines() if line.startswith("failed ")]
    if failed:
        return "failed", failed[-1].split(": ", 1)[-1]
    m = re.search(r"pid (\d+)(?: host (\S+))?", text)
    if not m or (m.group(2) and m.group(2) != socket.gethostname()):
        return "RUNNING", f"on {m.group(2)}" if m and m.group(2) else ""
    if _alive(int(m.group(1))):
        return "RUNNING", f"pid {m.group(1)}"
    return "failed", f"its process ({m.group(1)}) is gone"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_row(run_dir: str) -> dict[str, Any]:
    """One row of the runs table (RUN_COLUMNS, plus `why` and `path`), from the folder's
    config.yaml, labels.json, run.json or history.csv, and metrics.json (cv_summary.json's
    means for a cross-validation folder)."""
    import yaml

    state, why = run_state(run_dir)
    name = os.path.basename(os.path.normpath(run_dir))
    row: dict[str, Any] = {c: "" for c in RUN_COLUMNS}
    row.update(name=name, state=state, why=why, path=run_dir)
    m = _STAMP.search(name)
    row["date"] = (f"{m.group(1)} {m.group(2)}:{m.group(3)}:{m.group(4)}" if m else
                   _dt.datetime.fromtimestamp(os.path.getmtime(run_dir)).strftime("%Y-%m-%d %H:%M:%S"))
    cfg = _read_yaml(os.path.join(run_dir, "config.yaml"), yaml) or {}
    model = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    row["task"], row["backbone"] = model.get("task", ""), model.get("backbone", "")
    labels = _read_json(os.path.join(run_dir, LABELS))
    if labels.get("task"):
        row["task"] = labels["task"]
    fit = _read_json(os.path.join(run_dir, "run.json")).get("fit") or {}
    if fit.get("delivered_epoch"):
        row["epoch"] = fit["delivered_epoch"]
    elif os.path.isfile(os.path.join(run_dir, "history.csv")):
        row["epoch"] = len(read_history(os.path.join(run_dir, "history.csv")))
    figures = test_figures(_read_json(os.path.join(run_dir, "metrics.json")))
    summary = _read_json(os.path.join(run_dir, "cv_summary.json"))
    if summary:
        figures = {k: v["mean"] for k, v in summary.get("test_figures", {}).items() if isinstance(v, dict)}
        row["epoch"] = f"{summary.get('k', '')} folds"
    for k in ("accuracy", "macro_f1", "roc_auc"):
        row[k] = figures.get(k, "")
    return row


def list_runs(root: str) -> list[dict[str, Any]]:
    """The rows (`run_row`) of every run folder directly in `root`, oldest first.

    Raises:
        GAError: `root` is not a folder.
    """
    if not os.path.isdir(root):
        raise GAError(f"not a folder: {root}")
    found = [os.path.join(root, d) for d in sorted(os.listdir(root)) if not d.startswith(".")]
    rows = [_row_or_unreadable(d) for d in found if os.path.isdir(d) and run_state(d)[0]]
    return sorted(rows, key=lambda r: (r["date"], r["name"]))


def _row_or_unreadable(run_dir):
    """run_row, or for a folder whose files hold values of unexpected shapes (a metrics.json
    edited by hand, a per_class that is a list) a row in state `unreadable` saying why: one
    odd folder must not hide the others."""
    try:
        return run_row(run_dir)
    except (AttributeError, TypeError, ValueError, KeyError, OSError) as exc:
        name = os.path.basename(os.path.normpath(run_dir))
        stamp = _STAMP.search(name)
        return {**{c: "" for c in RUN_COLUMNS}, "name": name, "state": "unreadable", "path": run_dir,
                "date": f"{stamp.group(1)} {stamp.group(2)}:{stamp.group(3)}:{stamp.group(4)}" if stamp else "",
                "why": f"its files hold values of unexpected types ({type(exc).__name__}: {str(exc)[:80]})"}


def flat_config(doc: Mapping, prefix: str = "") -> dict[str, Any]:
    """A nested configuration as dotted keys (`training.learning_rate`)."""
    out: dict[str, Any] = {}
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flat_config(v, key + "."))
        else:
            out[key] = v
    return out


def diff_runs(a: str, b: str) -> dict[str, Any]:
    """What differs between two run folders: config keys {key: (a, b)} and test figures
    {figure: (a, b, b - a)}.

    Raises:
        GAError: either is not a run folder.
    """
    import yaml

    docs = []
    for run in (a, b):
        cfg = _read_yaml(os.path.join(run, "config.yaml"), yaml)
        if cfg is None:
            raise GAError(f"{run} is not a run folder (no readable config.yaml)")
        docs.append(flat_config(cfg))
    keys = sorted(set(docs[0]) | set(docs[1]))
    config = {k: (docs[0].get(k), docs[1].get(k)) for k in keys if docs[0].get(k) != docs[1].get(k)}
    figs = [test_figures(_read_json(os.path.join(run, "metrics.json"))) for run in (a, b)]
    metrics = {k: (figs[0][k], figs[1][k], figs[1][k] - figs[0][k]) for k in figs[0] if k in figs[1]}
    return {"a": a, "b": b, "config": config, "metrics": metrics}


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def _read_yaml(path, yaml):
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
        return doc if isinstance(doc, dict) else None
    except (OSError, yaml.YAMLError):
        return None
