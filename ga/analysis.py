"""Reports and figures from one batched pass over the test split and the saved history.

Class names always come from the run's recorded class list: index i is classes[i]
(binary: the sigmoid output is the probability of classes[1], the positive class).
The test split is predicted once; every report and plot reuses those predictions.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ga.figures import pyplot, save_figure
from ga.files import atomic_write_csv, atomic_write_json, atomic_write_text
from ga.model import batch_predictor
from ga.runs import LABELS, read_history, read_labels
from ga.splitting import manifest_groups
from ga.stats import shown
from ga.task_text import text_of
from ga.tasks import get_task
from ga.uncertainty import Settings, attach, intervals, level_text

if TYPE_CHECKING:
    from ga.config import Config
    from ga.data import Datasets, SplitData
    from ga.tasks import Task

log = logging.getLogger(__name__)


def predict_split(model: Any, split: SplitData) -> tuple[np.ndarray, np.ndarray]:
    """One pass over a split's dataset: (y_true (n, k), y_prob (n, k)), in dataset order."""
    ys, ps = [], []
    predict = batch_predictor(model)
    for x, y in split.dataset:
        ps.append(predict(x))
        ys.append(np.asarray(y, np.float32))
    if not ys:
        return np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32)
    return np.concatenate(ys), np.concatenate(ps)


def _thresholds(cfg, classes, run_dir=None):
    """The decision thresholds recorded in the run's labels.json, else the config's."""
    if run_dir and os.path.isfile(os.path.join(run_dir, LABELS)):
        return read_labels(run_dir)["thresholds"]
    return get_task(cfg).default_thresholds(classes, cfg.model.threshold)


def binary_cross_entropy(y_true: np.ndarray, y_prob: np.ndarray, eps: float = 1e-7) -> float | None:
    """The training loss on a split, as Keras computes it (probabilities clipped to
    [eps, 1 - eps], mean over outputs and images); None for an empty split."""
    return get_task("binary").cross_entropy(y_true, y_prob, eps)


def compute_metrics(task: Task | str, classes: Sequence[str], y_true: np.ndarray, y_prob: np.ndarray,
                    thresholds: Mapping[str, float]) -> tuple[dict, str]:
    """The metrics.json numbers (per-class precision/recall/F1/support, accuracy, AUC,
    confusion matrix) and the classification report text; `task` a name or a Task."""
    task = get_task(task)
    out = {"task": task.name, "classes": list(classes), "thresholds": thresholds, "test_images": int(len(y_true)),
           "loss": task.cross_entropy(y_true, y_prob)}
    m, text = task.metrics(classes, y_true, y_prob, thresholds)
    out.update(m)
    return out, text


def _results_text(title, m, report_text):
    task = get_task(m)
    lines = [title,
             f"test images: {m['test_images']}",
             "classes (index order): " + ", ".join(f"{c}={i}" for i, c in enumerate(m["classes"])),
             text_of(task).decision_line(m),
             "", report_text.rstrip(), "", f"accuracy: {shown(m, 'accuracy')}"]
    if "balanced_accuracy" in m:
        lines.append(f"balanced accuracy: {shown(m, 'balanced_accuracy')}")
    if m.get("loss") is not None:
        lines.append(f"test loss ({task.loss_kind} cross-entropy): {m['loss']:.4f}")
    return "\n".join(lines + text_of(task).report_lines(m) + _interval_lines(m)) + "\n"


def _interval_lines(m):
    """FinalTestResults.txt's closing section: every figure with its interval."""
    if "uncertainty" not in m:
        return []
    lines = ["", level_text(m)]
    for c, v in m["per_class"].items():
        lines.append(f"  {c}: precision {shown(v, 'precision')}, recall {shown(v, 'recall')}, F1 {shown(v, 'f1')}")
    for avg in ("macro_avg", "weighted_avg"):
        if avg in m:
            lines.append(f"  {avg.replace('_', ' ')}: F1 {shown(m[avg], 'f1')}")
    if m["uncertainty"].get("collapsed"):
        floored = m["uncertainty"].get("floored") or []
        lines.append("  no resample changes (no errors to resample): " + ", ".join(m["uncertainty"]["collapsed"])
                     + ("; lower bounds from the Wilson bounds of their parts: " + ", ".join(floored) if floored else ""))
    return lines


def test_summary(m: Mapping) -> str:
    """One line of the test figures with their intervals: accuracy, then F1 per class."""
    return f"accuracy {shown(m, 'accuracy')}, " + ", ".join(f"F1 {c} {shown(v, 'f1')}" for c, v in m["per_class"].items())


def write_predictions(path: str, paths: Sequence[str] | None, task: Task | str, classes: Sequence[str],
                      y_true: np.ndarray, y_prob: np.ndarray, thresholds: Mapping[str, float]) -> None:
    """predictions.csv of a labelled set: path, true, predicted and the probabilities."""
    if paths is None:
        paths = [""] * len(y_true)
    atomic_write_csv(path, *get_task(task).prediction_rows(paths, classes, y_true, y_prob, thresholds))


def write_reports(run_dir: str, cfg: Config, classes: Sequence[str], y_true: np.ndarray, y_prob: np.ndarray,
                  fit_info: dict | None = None, paths: Sequence[str] | None = None) -> dict:
    """A run's test reports: metrics.json, <prefix>FinalTestResults.txt, predictions.csv and
    the figures (training curves included).

    Returns:
        The metrics dict.
    """
    prefix = cfg.output.prefix
    history = os.path.join(run_dir, "history.csv")
    if os.path.isfile(history):
        plot_history(history, os.path.join(run_dir, f"{prefix}metrics_plot.png"))
    title = f"{prefix} final test results: {os.path.basename(os.path.abspath(run_dir))}"
    return write_evaluation(run_dir, prefix, get_task(cfg), classes, _thresholds(cfg, classes, run_dir), y_true,
                            y_prob, paths, title, {"training": fit_info or {}}, cfg.analysis.settings())


def write_evaluation(out_dir: str, prefix: str, task: Task | str, classes: Sequence[str], thresholds: Mapping[str, float],
                     y_true: np.ndarray, y_prob: np.ndarray, paths: Sequence[str] | None = None, title: str | None = None,
                     extra: dict | None = None, settings: Settings | None = None) -> dict:
    """The reports of one labelled set, the same for a run's test split and for
    `inference.py --evaluate`: metrics.json, <prefix>FinalTestResults.txt, predictions.csv
    (with `paths`), confusion matrix and ROC/PR figures. Every figure gets its confidence
    interval (ga.uncertainty; `settings`, default 95% and 2,000 resamples), resampling the
    copy groups of the split's manifest when the images lie in a split.

    Returns:
        The metrics dict.
    """
    t = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    m, text = compute_metrics(task, classes, y_true, y_prob, thresholds)
    groups, manifest = manifest_groups(paths) if paths is not None else (None, None)
    cis, how = intervals(task, classes, y_true, y_prob, thresholds, m, groups, settings or Settings())
    attach(m, cis, {**how, "groups_from": manifest})
    if paths is not None:
        write_predictions(os.path.join(out_dir, "predictions.csv"), paths, task, classes, y_true, y_prob, thresholds)
    m.update(extra or {})
    title = title or f"{prefix} evaluation: {os.path.basename(os.path.abspath(out_dir))}"
    atomic_write_text(os.path.join(out_dir, f"{prefix}FinalTestResults.txt"), _results_text(title, m, text))
    plot_confusion(m, os.path.join(out_dir, f"{prefix}final_confusion_matrix.png"))
    plot_roc_pr(get_task(task), classes, y_true, y_prob, os.path.join(out_dir, f"{prefix}final_roc_auc.png"))
    m["evaluation_seconds"] = round(time.perf_counter() - t, 3)
    atomic_write_json(os.path.join(out_dir, "metrics.json"), m)
    log.info("test: %s", test_summary(m))
    return m


def update_metrics(run_dir: str, extra: dict) -> dict:
    """Merge `extra` into metrics.json (atomically) and return the result."""
    path = os.path.join(run_dir, "metrics.json")
    with open(path, encoding="utf-8") as fh:
        m = json.load(fh)
    m.update(extra)
    atomic_write_json(path, m)
    return m


def tune_thresholds(cfg: Config, run_dir: str, model: Any, data: Datasets) -> dict[str, float]:
    """Multi-label: per-class thresholds that maximise validation F1, into labels.json, and
    the sweep figure."""
    from ga.runs import read_labels, write_labels

    y_true, y_prob = predict_split(model, data.valid)
    grid, curves, best = threshold_sweep(data.classes, y_true, y_prob)
    plot_threshold_sweep(grid, curves, best, os.path.join(run_dir, f"{cfg.output.prefix}threshold_sweep.png"))
    write_labels(run_dir, {**read_labels(run_dir), "thresholds": best})
    log.info("validation-tuned thresholds: %s", ", ".join(f"{c} {t:.2f}" for c, t in best.items()))
    return best


def write_contrastive_report(run_dir: str, cfg: Config, data: Datasets, fit_info: dict, backbone_file: str) -> None:
    """A pretraining run's loss curve (<prefix>loss_curve.png, with the validation loss when
    images were held out) and metrics.json."""
    history = os.path.join(run_dir, "history.csv")
    plot_history(history, os.path.join(run_dir, f"{cfg.output.prefix}loss_curve.png"))
    rows = read_history(history)
    doc = {"task": "contrastive", "loss": cfg.contrastive.loss, "images": data.train.size,
           "validation_images": data.valid.size if data.valid is not None else 0,
           "temperature": cfg.contrastive.temperature}
    for key in ("loss", "val_loss"):
        vals = [float(r[key]) for r in rows if r.get(key) not in (None, "")]
        if vals:
            doc.update({f"first_{key}": vals[0], f"final_{key}": vals[-1], f"best_{key}": min(vals)})
    doc.update({"backbone_weights": backbone_file, "training": fit_info})
    atomic_write_json(os.path.join(run_dir, "metrics.json"), doc)
    log.info("pretraining %s %s -> %s%s", cfg.contrastive.loss, doc.get("first_loss"), doc.get("final_loss"),
             f"; validation {doc['first_val_loss']} -> {doc['final_val_loss']}" if "final_val_loss" in doc else "")


def threshold_sweep(classes: Sequence[str], y_true: np.ndarray, y_prob: np.ndarray,
                    grid: Sequence[float] | None = None) -> tuple[np.ndarray, dict, dict[str, float]]:
    """Precision, recall and F1 of each class at each threshold of `grid`.

    Returns:
        (grid, {class: {"precision": [...], "recall": [...], "f1": [...]}}, {class: best threshold})
        where the best threshold maximises that class's F1 (the lowest such threshold on ties).
    """
    grid = np.round(np.arange(0.01, 1.0, 0.01), 2) if grid is None else np.asarray(grid)
    curves, best = {}, {}
    for i, c in enumerate(classes):
        t = y_true[:, i] > 0.5
        pred = y_prob[:, i][None, :] > grid[:, None]  # (thresholds, n)
        tp = (pred & t[None, :]).sum(1).astype(float)
        fp = (pred & ~t[None, :]).sum(1).astype(float)
        fn = (~pred & t[None, :]).sum(1).astype(float)
        prec = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
        rec = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
        f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
        curves[c] = {"precision": prec.tolist(), "recall": rec.tolist(), "f1": f1.tolist()}
        best[c] = float(grid[int(np.argmax(f1))]) if t.any() else 0.5
    return grid, curves, best


def plot_threshold_sweep(grid: np.ndarray, curves: dict, best: Mapping[str, float], out: str) -> None:
    """Precision, recall and F1 against threshold, one panel per class."""
    plt = pyplot()
    classes = list(curves)
    fig, axes = plt.subplots(1, len(classes), figsize=(3.6 * len(classes), 3.4), squeeze=False)
    for ax, c in zip(axes[0], classes):
        for k, style in (("precision", "-"), ("recall", "--"), ("f1", "-")):
            ax.plot(grid, curves[c][k], style, label=k, lw=2 if k == "f1" else 1)
        ax.axvline(best[c], color="k", lw=0.8, ls=":")
        ax.set(title=f"{c}: best F1 at {best[c]:.2f}", xlabel="threshold", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Validation threshold sweep")
    save_figure(fig, out)


# ---------------------------------------------------------------------------- figures


def plot_history(history_csv: str, out: str) -> None:
    """Training and validation accuracy and loss per epoch, from history.csv (the loss alone
    when there is no accuracy, as in contrastive pretraining), and the learning rate of each
    epoch (column `lr`). A two-stage schedule's second stage is marked by a dashed line."""
    plt = pyplot()
    rows = read_history(history_csv)
    epochs = [int(r["epoch"]) + 1 for r in rows]
    panels = [(k, t) for k, t in (("accuracy", "Accuracy"), ("loss", "Loss"), ("lr", "Learning rate"))
              if rows and k in rows[0]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    stage2 = next((e for e, r in zip(epochs, rows) if r.get("stage") == "2"), None)
    for ax, (key, title) in zip(axes[0], panels):
        for k, label, style in ((key, "learning rate" if key == "lr" else "training", "-o"),
                                (f"val_{key}", "validation", "-s")):
            if k not in rows[0]:
                continue
            vals = [float(r[k]) if r.get(k) not in (None, "") else np.nan for r in rows]
            ax.plot(epochs, vals, style, label=label, markersize=3)
        if key == "lr" and all(float(r.get("lr") or 0) > 0 for r in rows):
            ax.set_yscale("log")
        if stage2 is not None:
            ax.axvline(stage2 - 0.5, color="grey", linestyle="--", label="all layers train")
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, out)


def plot_confusion(m: dict, out: str) -> None:
    """Counts and row-normalised confusion matrices, axes named by the class list."""
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = pyplot()
    if get_task(m).exclusive:
        cm = np.array(m["confusion_matrix"])
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        side = max(4.2, 1.1 * len(cm) + 1.5)
        fig, axes = plt.subplots(1, 2, figsize=(2.4 * side, side))
        ConfusionMatrixDisplay(cm, display_labels=m["classes"]).plot(ax=axes[0], colorbar=False, values_format="d")
        ConfusionMatrixDisplay(norm, display_labels=m["classes"]).plot(ax=axes[1], colorbar=False, values_format=".3f")
        axes[0].set_title("Test confusion matrix (counts)")
        axes[1].set_title("Row-normalised (recall per class)")
    else:
        classes = m["classes"]
        fig, axes = plt.subplots(1, len(classes), figsize=(3.2 * len(classes), 3.4), squeeze=False)
        for ax, c in zip(axes[0], classes):
            ConfusionMatrixDisplay(np.array(m["confusion_matrix"][c]), display_labels=[f"not {c}", c]).plot(
                ax=ax, colorbar=False, values_format="d")
            ax.set_title(c)
    save_figure(fig, out)


def plot_roc_pr(task: Task, classes: Sequence[str], y_true: np.ndarray, y_prob: np.ndarray, out: str) -> None:
    """ROC curve with AUC for the positive class (each class for multi-label; each class
    against the rest for multiclass), and a precision-recall curve beside it."""
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    plt = pyplot()
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(10, 4.2))
    pairs = task.roc_pairs(classes, y_true, y_prob)
    drawn = 0
    for name, t, p in pairs:
        if len(set(t.astype(int))) < 2:
            continue
        RocCurveDisplay.from_predictions(t, p, name=name, ax=ax_roc)
        PrecisionRecallDisplay.from_predictions(t, p, name=name, ax=ax_pr)
        drawn += 1
    if not drawn:
        for ax in (ax_roc, ax_pr):
            ax.text(0.5, 0.5, "undefined: the test split holds one class only", ha="center", va="center")
    ax_roc.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax_roc.set(title=text_of(task).roc_title, xlabel="false positive rate", ylabel="true positive rate")
    ax_pr.set(title="Precision-recall (test)", xlabel="recall", ylabel="precision")
    save_figure(fig, out)


def write_model_card(run_dir: str, cfg: Config, data: Datasets, metrics: dict) -> None:
    """model_card.md: intended use, data, metrics, limits."""
    p = cfg.output.prefix
    classes = data.classes
    task = get_task(cfg)
    t = metrics.get("training", {})
    lines = [
        f"# Model card: {os.path.basename(os.path.abspath(run_dir))}",
        "",
        "## Intended use",
        text_of(task).intended_use(classes),
        "Not for: images from other instruments, magnifications or materials without re-validation.",
        "",
        "## Model",
        f"- backbone {cfg.model.backbone}, weights `{cfg.model.weights}`, trainable fraction {cfg.model.trainable_fraction:g}",
        f"- input {data.input_size[0]}x{data.input_size[1]} RGB 0-255; preprocessing inside the model",
        f"- files: `{p}model.keras`, `{p}weights.h5`" + (f", `{p}weights.onnx`" if cfg.output.onnx else "")
        + "; class list and thresholds in `labels.json`",
        "",
        "## Data",
        f"- training {data.train.size}, validation {data.valid.size}, test {data.test.size} images from `{cfg.data.split_root}`",
        f"- skipped unreadable images: {len(data.skipped())}",
        *(f"- {split} images per class: " + ", ".join(f"{c} {n}" for c, n in per.items())
          for split, per in data.class_counts().items()),
        *(["- class weights (training.class_weight): " + ", ".join(f"{c} {w:.4g}" for c, w in t["class_weight"].items())]
          if t.get("class_weight") else []),
        "",
        "## Test metrics",
        *([f"- {level_text(metrics)}"] if "uncertainty" in metrics else []),
        f"- accuracy {shown(metrics, 'accuracy')}",
        *([f"- balanced accuracy {shown(metrics, 'balanced_accuracy')}"] if "balanced_accuracy" in metrics else []),
    ]
    lines += text_of(task).card_lines(metrics, classes)
    if "harmonic_mean_f1" in metrics:
        lines.append(f"- harmonic mean of per-class F1 {shown(metrics, 'harmonic_mean_f1')}")
    for c, v in metrics["per_class"].items():
        lines.append(f"- {c}: precision {shown(v, 'precision')}, recall {shown(v, 'recall')}, F1 {shown(v, 'f1')}, "
                     f"support {v['support']}")
    lines += [
        f"- training: {t.get('epochs')} epochs, stopped by {str(t.get('stop_reason', '')).replace('_', ' ')}; "
        f"delivered weights: epoch {t.get('delivered_epoch')} ({t.get('delivered_because')})",
        "",
        "## Limits",
        f"- The test split has {data.test.size} images; the intervals above say how far the figures may be from "
        "the truth. Cross-validation (`--cv`) narrows them.",
        "- A model trained on synthetic crops has not been validated on real ones; check it on labelled real data "
        "before trusting it.",
        "- Rotated/flipped copies of one crop were kept in one split when the data came from split_data.py; other "
        "sources of leakage (neighbouring frames of one run) are not detected.",
    ]
    atomic_write_text(os.path.join(run_dir, "model_card.md"), "\n".join(lines) + "\n")
