"""Run folder conventions: names, the RUNNING marker, labels.json, finding the newest run."""

import datetime as _dt
import json
import os

from ga import __version__
from ga.errors import ModelError
from ga.io import atomic_write_json

RUNNING = "RUNNING"
LABELS = "labels.json"


def new_run_dir(output):
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
            fh.write(f"started {_dt.datetime.now().isoformat(timespec='seconds')} pid {os.getpid()}\n")
        return path
    raise ModelError(f"could not create a new run folder under {output.root}")


def is_complete(run_dir):
    """A run is complete when its deliverables are written and the marker is gone."""
    return (os.path.isfile(os.path.join(run_dir, LABELS)) and os.path.isfile(os.path.join(run_dir, "metrics.json"))
            and not os.path.exists(os.path.join(run_dir, RUNNING)))


def mark_complete(run_dir):
    os.remove(os.path.join(run_dir, RUNNING))


def newest_run(root):
    """The most recently finished complete classifier run folder under `root`, or None
    (contrastive pretraining runs have no classifier and are passed over)."""
    if not os.path.isdir(root):
        return None
    runs = [os.path.join(root, d) for d in os.listdir(root)]
    runs = [r for r in runs if os.path.isdir(r) and is_complete(r) and _task(r) != "contrastive"]
    return max(runs, key=lambda r: os.path.getmtime(os.path.join(r, "metrics.json")), default=None)


def _task(run_dir):
    try:
        with open(os.path.join(run_dir, LABELS), encoding="utf-8") as fh:
            return json.load(fh).get("task")
    except (OSError, ValueError, AttributeError):
        return None


def labels_document(cfg, classes, thresholds=None):
    """The labels.json contract (also mirrored into the ONNX metadata)."""
    from ga.data import model_input_size
    from ga.model import preprocessing_mode

    task = cfg.model.task
    thr = thresholds or {c: cfg.model.threshold for c in (classes[1:] if task == "binary" else classes)}
    doc = {
        "task": task,
        "classes": list(classes),
        "positive_class": classes[1] if task == "binary" else None,
        "thresholds": thr,
        "input_size": list(model_input_size(cfg)),
        "resize": list(cfg.data.image_size),
        "center_crop": list(cfg.data.augment.crop) if cfg.data.augment.crop else None,
        "preprocessing": preprocessing_mode(cfg.model.backbone),
        "backbone": cfg.model.backbone,
        "version": __version__,
    }
    return doc


def write_labels(run_dir, doc):
    atomic_write_json(os.path.join(run_dir, LABELS), doc)


def read_labels(path):
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


def check_labels(doc, path):
    """Check a labels document's shape; `path` names its source in errors."""
    need = ("task", "classes", "thresholds", "input_size", "preprocessing")
    if not isinstance(doc, dict) or any(k not in doc for k in need):
        raise ModelError(f"{path} is not a ga labels file (needs {', '.join(need)})")
    if doc["task"] == "contrastive":
        raise ModelError(f"{path} belongs to a contrastive pretraining run, which has no classifier: train one "
                         f"from its backbone (model.backbone_weights: <run>/<prefix>backbone.weights.h5) and use that")
    if doc["task"] not in ("binary", "multilabel") or not isinstance(doc["classes"], list) or len(doc["classes"]) < 1:
        raise ModelError(f"{path}: task or classes are malformed")
    if doc["task"] == "binary" and len(doc["classes"]) != 2:
        raise ModelError(f"{path}: a binary model needs exactly two classes, got {doc['classes']}")
    return doc
