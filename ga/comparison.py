"""Two models on the same labelled images: is B really better than A?

Paired figures: both models decide every image; the difference B - A in accuracy and macro
F1 gets a paired bootstrap interval (the same resamples for both, whole copy groups of the
split's manifest together, stratified by class), and McNemar's exact test asks whether the
images only A gets right and those only B gets right are equally many (a two-sided
binomial test on the discordant pairs). The images they decide differently are listed.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from ga.errors import GAError
from ga.files import atomic_write_csv, atomic_write_json
from ga.splitting import manifest_groups
from ga.stats import with_ci
from ga.tasks import get_task
from ga.uncertainty import Settings, bootstrap_weights, figure_values, group_index, strata_of, truth_and_decisions

if TYPE_CHECKING:
    from ga.loading import LoadedModel

DIFFERENCES = {"accuracy": ("accuracy",), "macro_f1": ("macro_avg", "f1")}


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """McNemar's exact two-sided p-value: a binomial test of min(a_only, b_only) successes in
    a_only + b_only trials at p = 1/2 (1.0 when there are no discordant pairs)."""
    n = int(a_only) + int(b_only)
    if n == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(min(int(a_only), int(b_only)), n, 0.5, alternative="two-sided").pvalue)


def compare_models(a: LoadedModel, b: LoadedModel, folder: str, out_dir: str, settings: Settings = Settings(),
                   **options: Any) -> dict:
    """Decide every image of a labelled folder with both models; write compare.json and
    compare.csv (the images decided differently) into `out_dir`.

    Returns:
        The compare.json document.

    Raises:
        GAError: the models name different classes or tasks, or no image is readable.
    """
    from ga.analysis import compute_metrics
    from ga.evaluation import labelled_files
    from ga.predict import predict_files

    if (a.labels["classes"], a.labels["task"]) != (b.labels["classes"], b.labels["task"]):
        raise GAError(f"the models decide different things: {a.source} {a.labels['task']} {a.labels['classes']}, "
                      f"{b.source} {b.labels['task']} {b.labels['classes']}", arg="compare")
    paths, y_true = labelled_files(folder, a.labels)
    if not paths:
        raise GAError(f"no images in {folder}", arg="folder")
    preds = [predict_files(m, paths, **options) for m in (a, b)]
    ok = [i for i in range(len(paths)) if not preds[0].results[i].error and not preds[1].results[i].error]
    if not ok:
        raise GAError(f"no readable images in {folder}", arg="folder")
    task, classes = get_task(a.labels), a.labels["classes"]
    y = y_true[ok]
    probs = [np.stack([p.results[i].probs for i in ok]).astype(np.float32) for p in preds]
    thresholds = [p.thresholds for p in preds]
    (truth, decided_a), (_, decided_b) = (truth_and_decisions(task, classes, y, pr, th)
                                          for pr, th in zip(probs, thresholds))
    decided = [decided_a, decided_b]
    right = [task.right(y, d) for d in decided]
    a_only, b_only = int((right[0] & ~right[1]).sum()), int((~right[0] & right[1]).sum())
    used = [paths[i] for i in ok]
    groups, manifest = manifest_groups(used)
    points = [compute_metrics(task, classes, y, pr, th)[0] for pr, th in zip(probs, thresholds)]
    diffs = _paired_differences(task, classes, y, probs, thresholds, points, groups, settings)
    differ = np.flatnonzero((decided[0] != decided[1]).any(axis=1))
    doc = {"model_a": a.source, "model_b": b.source, "data": folder, "images": len(ok),
           "skipped": [{"path": r.path, "reason": r.error} for p in preds for r in p.errors],
           "accuracy_a": points[0]["accuracy"], "accuracy_b": points[1]["accuracy"],
           "macro_f1_a": points[0]["macro_avg"]["f1"], "macro_f1_b": points[1]["macro_avg"]["f1"],
           "difference_b_minus_a": diffs,
           "mcnemar": {"a_right_b_wrong": a_only, "a_wrong_b_right": b_only, "p_value": mcnemar_exact(a_only, b_only),
                       "test": "exact two-sided binomial test on the discordant images"},
           "decided_differently": int(len(differ)),
           "uncertainty": {"level": settings.level, "resamples": settings.resamples, "seed": settings.seed,
                           "method": "paired bootstrap: the same resamples for both models, "
                                     + ("whole groups" if groups else "images") + " resampled within each class",
                           "groups_from": manifest}}
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_json(os.path.join(out_dir, "compare.json"), doc)
    atomic_write_csv(os.path.join(out_dir, "compare.csv"),
                     ["path", "true", "predicted_a", "predicted_b", "right_a", "right_b",
                      *(f"p_{c}_a" for c in _prob_names(task, classes)), *(f"p_{c}_b" for c in _prob_names(task, classes))],
                     [[used[i], _names(task, classes, truth[i]), _names(task, classes, decided[0][i]),
                       _names(task, classes, decided[1][i]), int(right[0][i]), int(right[1][i]),
                       *(f"{v:.6f}" for v in probs[0][i]), *(f"{v:.6f}" for v in probs[1][i])] for i in differ])
    return doc


def _prob_names(task, classes):
    return [task.positive_class(classes)] if task.positive_class(classes) else list(classes)


def _names(task, classes, row):
    """The classes a decision (or truth) row names, ';'-joined."""
    return ";".join(c for c, f in zip(classes, row) if f)


def _paired_differences(task, classes, y, probs, thresholds, points, groups, settings):
    """{figure: {value, ci}} of B - A, both figures taken on the same resamples."""
    n = len(y)
    samples = {k: [] for k in DIFFERENCES}
    for w in bootstrap_weights(strata_of(task, y), group_index(groups, n), settings.resamples, settings.seed):
        va, vb = (figure_values(task, classes, y, pr, th, w, pt) for pr, th, pt in zip(probs, thresholds, points))
        for name, key in DIFFERENCES.items():
            samples[name].append(vb[key] - va[key])
    out = {}
    for name, key in DIFFERENCES.items():
        v = np.concatenate(samples[name])
        node_a, node_b = points[0], points[1]
        for k in key:
            node_a, node_b = node_a[k], node_b[k]
        ci = np.percentile(v, [50 * (1 - settings.level), 50 * (1 + settings.level)])
        out[name] = {"value": float(node_b - node_a), "ci": [float(ci[0]), float(ci[1])]}
    return out


def summary_line(doc: dict) -> str:
    """The one line `--compare` prints."""
    n = doc["images"]
    mc = doc["mcnemar"]
    if doc["decided_differently"] == 0:
        return (f"the two models decide all {n} images alike (accuracy {doc['accuracy_a']:.4f}): "
                "no difference to test")
    d = doc["difference_b_minus_a"]
    level = f"{100 * doc['uncertainty']['level']:g}%"
    return (f"B - A on {n} images: accuracy {doc['accuracy_b']:.4f} - {doc['accuracy_a']:.4f} = "
            f"{_signed(d['accuracy'])}, macro F1 {_signed(d['macro_f1'])} ({level} paired intervals); McNemar exact "
            f"p = {mc['p_value']:.4g} ({mc['a_right_b_wrong']} only A right, {mc['a_wrong_b_right']} only B right); "
            f"{doc['decided_differently']} image(s) decided differently: compare.csv")


def _signed(d):
    text = with_ci(d["value"], d["ci"])
    return ("+" if d["value"] >= 0 else "") + text
