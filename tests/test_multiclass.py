"""More than two exclusive classes, class weights, and the best epoch's weights on disk
across a resume."""

import json
import os
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, tiny_config
from helpers import read_csv, run_here
from ga import callbacks as ga_callbacks
from ga.config import ConfigError, load_config
from ga.trainer import train

CLASSES = ("cex", "pg", "plate")
LEVELS = (200.0, 120.0, 40.0)  # mean grey level per class index


def make_split(root, counts, levels=LEVELS, noise=25.0, seed=0, size=(32, 32), jitter=0.0):
    """{train,valid,test}/<class>/ of grey PNGs whose mean level gives the class (each
    image's level drawn around its class's with standard deviation `jitter`: overlap)."""
    rng = np.random.default_rng(seed)
    for split, per_class in counts.items():
        for idx, n in enumerate(per_class):
            folder = os.path.join(root, split, CLASSES[idx])
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                level = levels[idx] + rng.normal(0, jitter)
                arr = np.clip(level + rng.normal(0, noise, size), 0, 255).astype(np.uint8)
                Image.fromarray(np.repeat(arr[:, :, None], 3, axis=2)).save(os.path.join(folder, f"{i:03d}.png"))
    return root


@pytest.fixture(scope="module")
def three_class_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("three")
    # Test counts differ per class, so a swapped class shows in the report.
    split = make_split(str(tmp / "split"), {"train": (12, 12, 12), "valid": (6, 6, 6), "test": (7, 5, 3)})
    cfg = tiny_config(tmp / "c.yaml", split, str(tmp / "runs"), model={"task": "multiclass"})
    out = run_here("main.py", "--config", cfg, "--set", "training.epochs=8", "--set", "output.int8=true", "--set",
                     "output.int8_min_agreement=0")
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1], split, tmp


def test_three_class_run_reports_every_class(three_class_run):
    run_dir, _, _ = three_class_run
    labels = json.load(open(os.path.join(run_dir, "labels.json")))
    assert labels["task"] == "multiclass" and labels["classes"] == list(CLASSES) and labels["thresholds"] == {}
    m = json.load(open(os.path.join(run_dir, "metrics.json")))
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum(axis=1).tolist() == [7, 5, 3]
    assert {c: v["support"] for c, v in m["per_class"].items()} == {"cex": 7, "pg": 5, "plate": 3}
    assert m["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert m["accuracy"] >= 0.8  # three well-separated grey levels
    assert set(m["roc_auc"]) == set(CLASSES) and m["roc_auc_macro"] is not None and m["roc_auc_micro"] is not None
    assert m["onnx"]["max_abs_diff"] <= m["onnx"]["tolerance"]
    text = open(os.path.join(run_dir, "GAFinalTestResults.txt")).read()
    assert "categorical cross-entropy" in text and "ROC AUC (plate vs rest)" in text and "pred plate" in text
    rows = read_csv(os.path.join(run_dir, "predictions.csv"))
    assert len(rows) == 15 and all(r["true"] == os.path.basename(os.path.dirname(r["path"])) for r in rows)
    for r in rows:
        probs = [float(r[f"p_{c}"]) for c in CLASSES]
        assert sum(probs) == pytest.approx(1, abs=1e-4) and r["predicted"] == CLASSES[int(np.argmax(probs))]
    run = json.load(open(os.path.join(run_dir, "run.json")))
    assert run["data"]["images_per_class"]["test"] == {"cex": 7, "pg": 5, "plate": 3}
    card = open(os.path.join(run_dir, "model_card.md")).read()
    assert "test images per class: cex 7, pg 5, plate 3" in card and "exclusive classes" in card


def test_inference_labels_three_classes_and_evaluates(three_class_run, tmp_path):
    run_dir, split, _ = three_class_run
    out_csv = tmp_path / "pred.csv"
    got = run_here("inference.py", os.path.join(split, "test"), "--recursive", "--model", run_dir, "--output", str(out_csv))
    assert got.returncode == 0, got.stderr[-2000:]
    rows = read_csv(out_csv)
    assert [k for k in rows[0] if k.startswith("p_")] == ["p_cex", "p_pg", "p_plate"] and len(rows) == 15
    printed = [line for line in got.stdout.splitlines() if line.startswith("File ")]
    assert len(printed) == 15 and all(" prediction " in line and " confidence " in line for line in printed)
    ev = run_here("inference.py", os.path.join(split, "test"), "--model", run_dir, "--evaluate", "--out-dir",
              str(tmp_path / "ev"))
    assert ev.returncode == 0, ev.stderr[-2000:]
    m = json.load(open(tmp_path / "ev" / "metrics.json"))
    trained = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert m["confusion_matrix"] == trained["confusion_matrix"]
    refused = run_here("inference.py", os.path.join(split, "test"), "--recursive", "--model", run_dir, "--threshold", "0.3",
                         expect=None)
    assert refused.returncode == 2 and "multiclass" in refused.stderr and "Traceback" not in refused.stderr
    clustered = run_here("inference.py", os.path.join(split, "test"), "--recursive", "--model", run_dir, "--cluster", "3",
                     "--out-dir", str(tmp_path / "cl"))
    assert clustered.returncode == 0, clustered.stderr[-2000:]
    assert {r["predicted"] for r in read_csv(tmp_path / "cl" / "clusters.csv")} <= set(CLASSES)
    run_here("inference.py", os.path.join(split, "test"), "--recursive", "--model", run_dir, "--engine", "onnx-int8",
               "--output", str(tmp_path / "int8.csv"))
    int8 = read_csv(tmp_path / "int8.csv")
    assert len(int8) == 15 and {r["engine"] for r in int8} == {"onnx-int8"}
    for r in int8:
        probs = [float(r[f"p_{c}"]) for c in CLASSES]
        assert sum(probs) == pytest.approx(1, abs=0.02) and r["predicted"] == CLASSES[int(np.argmax(probs))]


def test_a_two_folder_dataset_stays_binary_and_three_folders_need_multiclass(tmp_path):
    split = make_split(str(tmp_path / "split"), {"train": (2, 2, 2), "valid": (1, 1, 1), "test": (1, 1, 1)})
    cfg = tiny_config(tmp_path / "c.yaml", split, str(tmp_path / "runs"))
    got = run_here("main.py", "--config", cfg, expect=None)
    assert got.returncode == 2 and "model.task: multiclass" in got.stderr and "Traceback" not in got.stderr
    assert load_config(cfg).model.task == "binary"


def test_class_weight_config_is_checked():
    with pytest.raises(ConfigError, match="class_weight must be none, balanced"):
        load_config(None, ["training.class_weight=equal"])
    with pytest.raises(ConfigError, match="weights must be > 0"):
        load_config(None, ["training.class_weight={pg: 0}"])
    with pytest.raises(ConfigError, match="use data.balance"):
        load_config(None, ["model.task=multilabel", "training.class_weight=balanced"])
    assert load_config(None, ["training.class_weight={pg: 4}"]).training.class_weight == {"pg": 4.0}


def _minority_recall(tmp_path, split, weight, name):
    cfg = tiny_config(tmp_path / f"{name}.yaml", split, str(tmp_path / "runs"), output={"onnx": False, "name": name},
                      training={"epochs": 4, "class_weight": weight, "deterministic": True})
    run_dir = train(cfg)
    return json.load(open(os.path.join(run_dir, "metrics.json"))), run_dir


def test_balanced_class_weight_raises_minority_recall(tmp_path):
    # 10:1 in training, overlapping grey levels: unweighted, the model leans to the majority.
    split = make_split(str(tmp_path / "split"), {"train": (100, 10), "valid": (20, 20), "test": (40, 40)},
                       levels=(135.0, 115.0), noise=20.0, jitter=12.0, seed=3)
    plain, _ = _minority_recall(tmp_path, split, "none", "none")
    weighted, run_dir = _minority_recall(tmp_path, split, "balanced", "balanced")
    recall = {k: m["per_class"]["pg"]["recall"] for k, m in (("none", plain), ("balanced", weighted))}
    print("minority recall", recall)
    assert recall["balanced"] > recall["none"] + 0.1, recall
    assert weighted["training"]["class_weight"] == pytest.approx({"cex": 110 / 200, "pg": 110 / 20})
    log = open(os.path.join(run_dir, "train.log")).read()
    assert "imbalanced training split: cex has 100 images, pg only 10" in log
    run = json.load(open(os.path.join(run_dir, "run.json")))
    assert run["fit"]["class_weight"] == weighted["training"]["class_weight"]


class _Scripted(keras.callbacks.Callback):
    """Sets each epoch's val_loss and keeps a copy of each epoch's weights."""

    def __init__(self, val_loss):
        super().__init__()
        self.val_loss = val_loss
        self.weights = {}

    def on_epoch_end(self, epoch, logs=None):
        logs["val_loss"] = self.val_loss[epoch]
        self.weights[epoch] = [w.copy() for w in self.model.get_weights()]


# The best epoch comes before the interruption; the epochs after the resume are worse. The
# shortest case runs by default (about 25 s: two trainings), the five-epoch one with --long.
@pytest.mark.parametrize("val_loss, crash_at", [([0.5, 0.1, 0.6], 2),
                                                pytest.param([0.5, 0.1, 0.6, 0.7, 0.8], 3, marks=pytest.mark.long)])
def test_best_weights_on_disk_are_delivered_after_a_resume(tmp_path, monkeypatch, val_loss, crash_at):
    split = make_split(str(tmp_path / "split"), {"train": (6, 6, 6), "valid": (2, 2, 2), "test": (2, 2, 2)})
    script = _Scripted(val_loss)
    epochs = len(val_loss)

    class Crash(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == crash_at:
                raise KeyboardInterrupt(f"simulated kill after {crash_at} epochs")

    real = ga_callbacks.build_callbacks
    monkeypatch.setattr(ga_callbacks, "build_callbacks", lambda *a, **k: (lambda c, w: ([Crash(), script, *c], w))(
        *real(*a, **k)))
    cfg = tiny_config(tmp_path / "c.yaml", split, str(tmp_path / "runs"), model={"task": "multiclass"},
                      output={"onnx": False}, training={"epochs": epochs, "early_stopping": {"deliver": "best"}})
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    (run_dir,) = [os.path.join(tmp_path / "runs", d) for d in os.listdir(tmp_path / "runs")]
    with h5py.File(os.path.join(run_dir, "best.weights.h5"), "r") as fh:
        assert int(fh.attrs["ga_epoch"]) == 1 and float(fh.attrs["ga_value"]) == pytest.approx(0.1)
    monkeypatch.setattr(ga_callbacks, "build_callbacks", lambda *a, **k: (lambda c, w: ([script, *c], w))(
        *real(*a, **k)))
    assert train(resume=run_dir) == run_dir
    assert sorted(script.weights) == list(range(epochs))
    delivered = keras.models.load_model(os.path.join(run_dir, "GAmodel.keras"), compile=False).get_weights()
    for epoch, weights in script.weights.items():
        same = all(np.array_equal(a, b) for a, b in zip(delivered, weights))
        assert same == (epoch == 1), epoch
    fit = json.load(open(os.path.join(run_dir, "metrics.json")))["training"]
    assert fit["best_epoch"] == 2 and fit["delivered_epoch"] == 2 and "best.weights.h5" in fit["delivered_because"]
    assert "delivered epoch  2 (best val_loss, best.weights.h5)" in open(os.path.join(run_dir, "train.log")).read()


def test_three_kinds_of_synthetic_crystals(tmp_path):
    from ga.synthetic import generate_crystals

    root = generate_crystals(str(tmp_path / "a"), per_class=4, seed=0, classes=["cex", "pg:2", "plate"])
    assert {c: len(os.listdir(os.path.join(root, c))) for c in sorted(os.listdir(root))} == \
        {"cex": 4, "pg": 2, "plate": 4}
    with Image.open(os.path.join(root, "plate", "PLATE (1).png")) as im:
        assert im.size == (151, 151)
    bad = subprocess.run([sys.executable, "-m", "ga.synthetic", "crystals", "--out", str(tmp_path / "b"), "--classes",
                          "cex,rods"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and "unknown crystal kind 'rods'" in bad.stderr


@pytest.mark.parametrize("task, hint", [("binary", "training.class_weight: balanced"),
                                        ("multilabel", "data.balance: true")])
def test_imbalance_warning_suggests_a_setting_the_task_accepts(caplog, task, hint):
    from types import SimpleNamespace

    from ga.tasks import get_task
    from ga.trainer import _log_class_counts

    counts = {"train": {"a": 40, "b": 4}, "valid": {"a": 5, "b": 5}}
    data = SimpleNamespace(task=get_task(task), class_counts=lambda: counts)
    with caplog.at_level("INFO", logger="ga"):
        _log_class_counts(load_config(None), data, None)
    warning = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning == [f"imbalanced training split: a has 40 images, b only 4 (more than 3:1); consider {hint}"]
    if task == "multilabel":  # what the hint names is accepted by the config
        load_config(None, ["model.task=multilabel", "data.balance=true"])


def test_label_review_of_a_multiclass_model_finds_a_planted_mislabel(three_class_run, tmp_path):
    """ga review on a three-class model: a plate crop filed under cex ranks in the top 3 with
    plate suggested, and labels.csv is the filename,label layout with the suggestion applied."""
    import shutil

    run_dir, split, _ = three_class_run
    folder = tmp_path / "labelled"
    shutil.copytree(os.path.join(split, "test"), folder)
    shutil.move(folder / "plate" / "000.png", folder / "cex" / "planted.png")
    run_here("-m", "ga", "review", folder, "--model", run_dir, "--out-dir", tmp_path / "review", "--gradcam", "0",
             "--min-confidence", "0.5")
    rows = read_csv(tmp_path / "review" / "review.csv")
    top = {os.path.basename(r["path"]): r for r in rows[:3]}
    assert "planted.png" in top and top["planted.png"]["suggested_label"] == "plate", rows[:3]
    labels = read_csv(tmp_path / "review" / "labels.csv")
    assert list(labels[0]) == ["filename", "label"] and len(labels) == len(rows)
    assert {r["filename"]: r["label"] for r in labels}["cex/planted.png"] == "plate"
