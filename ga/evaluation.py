"""A model evaluated on a labelled folder: the reports a run writes for its test split, from
the same code (ga.analysis)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ga.errors import GAError
from ga.frames import stack_pages
from ga.loading import LoadedModel
from ga.predict import Prediction, predict_files
from ga.tasks import get_task


def labelled_files(folder: str, labels: dict) -> tuple[list[str], np.ndarray]:
    """The images of a labelled folder and their labels in the model's class order (any
    layout `ga.layouts` reads: class folders named like the model's classes or 0, 1, ...; a
    labels.csv).

    Returns:
        (paths, y_true float32 (n, outputs)).
    """
    from ga.layouts import labelled_images

    classes = labels["classes"]
    if not os.path.isdir(folder):
        raise GAError(f"not a folder: {folder}", arg="folder")
    try:
        paths, y = labelled_images(folder, classes, get_task(labels), class_names=classes, any_class="any" in classes,
                                   partial=True)
    except GAError as exc:
        raise GAError(exc.message, arg="folder") from None
    # A multi-page TIFF is its pages, each with the file's label.
    pages = [stack_pages(p) for p in paths]
    return [p for ps in pages for p in ps], np.repeat(y, [len(ps) for ps in pages], axis=0)


def run_prefix(source: str) -> str:
    """The file-name prefix (output.prefix) of the run a model file belongs to, or ""."""
    import yaml

    path = os.path.join(os.path.dirname(os.path.abspath(source)), "config.yaml")
    try:
        with open(path, encoding="utf-8") as fh:
            return str((yaml.safe_load(fh) or {}).get("output", {}).get("prefix", ""))
    except (OSError, yaml.YAMLError, AttributeError):
        return ""


def evaluate_folder(model: LoadedModel, folder: str, out_dir: str, prefix: str = "", threshold: float | None = None,
                    **options: Any) -> tuple[dict, Prediction]:
    """Evaluate a model on a labelled folder and write the reports a run writes for its test
    split (metrics.json, FinalTestResults.txt, predictions.csv, confusion matrix, ROC/PR, and
    for multi-label a threshold sweep of this set) into `out_dir`, using the same code.

    Returns:
        (metrics dict, Prediction); unreadable files are error rows of the Prediction and
        left out of the metrics.
    """
    from ga import analysis

    paths, y_true = labelled_files(folder, model.labels)
    if not paths:
        raise GAError(f"no images in {folder}", arg="folder")
    pred = predict_files(model, paths, threshold=threshold, **options)
    ok = [i for i, r in enumerate(pred.results) if not r.error]
    if not ok:
        raise GAError(f"no readable images in {folder}", arg="folder")
    labels = model.labels
    y_prob = np.stack([pred.results[i].probs for i in ok]).astype(np.float32)
    title = f"{prefix} evaluation of {model.source} on {folder}".strip()
    extra = {"model": model.source, "engine": model.engine, "data": folder,
             "skipped": [{"path": r.path, "reason": r.error} for r in pred.errors]}
    m = analysis.write_evaluation(out_dir, prefix, get_task(labels), labels["classes"], pred.thresholds, y_true[ok],
                                  y_prob, [paths[i] for i in ok], title, extra)
    if get_task(labels).tunes_thresholds:
        grid, curves, best = analysis.threshold_sweep(labels["classes"], y_true[ok], y_prob)
        analysis.plot_threshold_sweep(grid, curves, best, os.path.join(out_dir, f"{prefix}threshold_sweep.png"))
    return m, pred
