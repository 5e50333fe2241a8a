"""Grouped, stratified k-fold cross-validation: one normal run per fold, and a summary.

The split's train and valid images are dealt into K folds by `split_data.py --folds K`
(each copy group in one fold; the test split stays held out). Fold i trains on the other
folds and validates on fold i (`data.fold: i`); every fold is a complete run folder inside
the cross-validation folder `<root>/<prefix>_<time>_cv/`, with its own test figures on the
common test split. Then:

- cv.json: the folds, their run folders and state (the record an interrupted
  cross-validation continues from: `main.py --resume <cv folder>` trains only the folds not
  finished, and resumes a fold interrupted mid-training);
- cv_folds.csv and cv_summary.json: each fold's test figures, their mean, standard
  deviation and a t interval across folds;
- cv_summary.png: each fold's test figures with their mean;
- oof/: the out-of-fold predictions (each image of train + valid predicted by the model
  that did not train on it) with the reports of a labelled set, intervals included.

Under multi-worker training every worker runs the same folds in the same order; only the
chief writes.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
from typing import Any, Sequence

import numpy as np

from ga import runs
from ga.config import Config, dump_config, load_config
from ga.errors import ConfigError
from ga.files import atomic_write_csv, atomic_write_json
from ga.figures import pyplot, save_figure
from ga.splitting import fold_table

log = logging.getLogger(__name__)

CV_FILE = "cv.json"
FIGURES = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc")


def is_cv_folder(path: str) -> bool:
    """Whether `path` is a cross-validation folder (holds cv.json)."""
    return os.path.isfile(os.path.join(path, CV_FILE))


def cross_validate(cfg: Config | str | None = None, resume: str | None = None, overrides: Sequence[str] = (),
                   device: str = "auto") -> str | None:
    """Train one run per fold of the split's folds, then write the summary.

    Args:
        cfg: a Config or a YAML path (ignored when resuming).
        resume: an interrupted cross-validation folder to continue.
        overrides: `--set` strings.

    Returns:
        The cross-validation folder (None on a non-chief worker of a multi-worker run).
    """
    from ga.trainer import train

    if resume:
        if not is_cv_folder(resume):
            raise ConfigError(f"{resume} is not a cross-validation folder (no {CV_FILE})", arg="resume")
        cv_dir = resume
        cfg = load_config(os.path.join(cv_dir, "config.yaml"), overrides)
        doc = _read(cv_dir)
    else:
        cfg = cfg if isinstance(cfg, Config) else load_config(cfg, overrides)
        if cfg.data.fold is not None:
            raise ConfigError("--cv trains every fold; leave data.fold unset", arg="cv")
        k, _ = fold_table(cfg.data.split_root)  # a split without folds stops here, before any folder
        cv_dir = None
        doc = {"k": k, "split_root": cfg.data.split_root, "folds": {}}
    k = doc["k"]
    chief = _is_chief(cfg)
    if cv_dir is None and chief:
        cv_dir = runs.new_run_dir(dataclasses.replace(cfg.output, name=(cfg.output.name + "_cv").lstrip("_")))
        dump_config(cfg, os.path.join(cv_dir, "config.yaml"))
        _write(cv_dir, doc)
    for i in range(k):
        if doc["folds"].get(str(i), {}).get("state") == "finished":
            log.info("fold %d (%d of %d): finished earlier (%s)", i, i + 1, k, doc["folds"][str(i)]["run"])
            continue
        log.info("fold %d (%d of %d): training", i, i + 1, k)
        fold_cfg = _fold_config(cfg, cv_dir, i)
        unfinished = _unfinished_run(cv_dir, fold_cfg) if cv_dir else None
        run_dir = train(None, resume=unfinished, device=device) if unfinished else train(fold_cfg, device=device)
        if chief and run_dir is not None:
            doc["folds"][str(i)] = {"run": os.path.basename(run_dir), "state": "finished",
                                    "metrics": runs.test_figures(_metrics(run_dir))}
            _write(cv_dir, doc)
    if not chief:
        return None
    write_summary(cv_dir, cfg, doc)
    runs.mark_complete(cv_dir)
    return cv_dir


def _is_chief(cfg):
    """Whether this process writes: always, except a non-chief worker of a multi-worker run."""
    if cfg.training.distribution != "multi_worker":
        return True
    from types import SimpleNamespace

    from ga.distributed import cluster_resolver, is_chief

    return is_chief(SimpleNamespace(cluster_resolver=cluster_resolver()))


def _fold_config(cfg, cv_dir, i):
    data = dataclasses.replace(cfg.data, fold=i)
    output = dataclasses.replace(cfg.output, root=cv_dir or cfg.output.root, name=f"fold{i}")
    return dataclasses.replace(cfg, data=data, output=output).validate()


def _unfinished_run(cv_dir, fold_cfg):
    """The fold's run folder an interruption left incomplete, to resume, or None."""
    suffix = f"_{fold_cfg.output.name}"
    found = [os.path.join(cv_dir, n) for n in sorted(os.listdir(cv_dir))
             if n.startswith(fold_cfg.output.prefix) and n.endswith(suffix)
             and os.path.isfile(os.path.join(cv_dir, n, "config.yaml"))]
    todo = [d for d in found if not runs.is_complete(d)]
    if todo and os.path.isfile(os.path.join(todo[-1], runs.LABELS)):
        return todo[-1]
    return None


def _read(cv_dir):
    with open(os.path.join(cv_dir, CV_FILE), encoding="utf-8") as fh:
        return json.load(fh)


def _write(cv_dir, doc):
    atomic_write_json(os.path.join(cv_dir, CV_FILE), doc)


def _metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as fh:
        return json.load(fh)


def summary_of(per_fold: Sequence[dict[str, float]], level: float = 0.95) -> dict[str, dict]:
    """Mean, standard deviation (n - 1) and the t interval of the mean across folds, per figure."""
    from scipy import stats

    out = {}
    for key in per_fold[0]:
        v = np.array([f[key] for f in per_fold if key in f], np.float64)
        mean = float(v.mean())
        sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * sd / np.sqrt(len(v))) if len(v) > 1 else 0.0
        out[key] = {"mean": mean, "sd": sd, "ci": [mean - half, mean + half], "folds": len(v)}
    return out


def write_summary(cv_dir: str, cfg: Config, doc: dict) -> dict:
    """cv_folds.csv, cv_summary.json, cv_summary.png and the out-of-fold reports in oof/."""
    k = doc["k"]
    folds = [doc["folds"][str(i)] for i in range(k)]
    per_fold = [f["metrics"] for f in folds]
    level = cfg.analysis.ci_level
    summary = summary_of(per_fold, level)
    keys = list(summary)
    atomic_write_csv(os.path.join(cv_dir, "cv_folds.csv"), ["fold", "run", *keys],
                     [[i, f["run"], *(f"{f['metrics'].get(key, float('nan')):.6f}" for key in keys)]
                      for i, f in enumerate(folds)])
    oof = out_of_fold(cv_dir, cfg, folds)
    out = {"k": k, "level": level, "interval": "t interval of the mean across folds",
           "split_root": doc["split_root"], "folds": [f["run"] for f in folds], "test_figures": summary,
           "out_of_fold": oof}
    atomic_write_json(os.path.join(cv_dir, "cv_summary.json"), out)
    plot_folds(per_fold, summary, os.path.join(cv_dir, "cv_summary.png"), level)
    log.info("cross-validation over %d folds: test accuracy %.4f ± %.4f (sd), %g%% interval %.4f–%.4f", k,
             summary["accuracy"]["mean"], summary["accuracy"]["sd"], 100 * level, *summary["accuracy"]["ci"])
    return out


def out_of_fold(cv_dir: str, cfg: Config, folds: Sequence[dict]) -> dict:
    """Each fold's model predicts its own validation fold; the pooled predictions get the
    reports of a labelled set in <cv_dir>/oof/ (metrics.json with intervals, predictions.csv)."""
    from ga.analysis import write_evaluation
    from ga.data import fold_files, read_classes
    from ga.loading import load_model
    from ga.predict import predict_files
    from ga.tasks import get_task

    classes = read_classes(cfg)
    paths, truth, probs, fold_of = [], [], [], []
    for i, f in enumerate(folds):
        fold_cfg = _fold_config(cfg, cv_dir, i)
        p, y = fold_files(fold_cfg, classes)["valid"]
        model = load_model(os.path.join(cv_dir, f["run"]), engine="keras")
        pred = predict_files(model, p, progress=False)
        ok = [j for j, r in enumerate(pred.results) if not r.error]
        paths += [p[j] for j in ok]
        truth.append(y[ok])
        probs.append(np.stack([pred.results[j].probs for j in ok]).astype(np.float32))
        fold_of += [i] * len(ok)
    labels = runs.read_labels(os.path.join(cv_dir, folds[0]["run"]))
    out_dir = os.path.join(cv_dir, "oof")
    m = write_evaluation(out_dir, cfg.output.prefix, get_task(cfg), classes, labels["thresholds"],
                         np.concatenate(truth), np.concatenate(probs), paths,
                         f"{cfg.output.prefix} out-of-fold predictions of {len(folds)} folds", {},
                         cfg.analysis.settings())
    _add_fold_column(os.path.join(out_dir, "predictions.csv"), fold_of)
    return {"images": len(paths), "folder": "oof", **runs.test_figures(m)}


def _add_fold_column(path, fold_of):
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    atomic_write_csv(path, [*rows[0], "fold"], [[*r, f] for r, f in zip(rows[1:], fold_of)])


def plot_folds(per_fold: Sequence[dict], summary: dict, out: str, level: float) -> Any:
    """Each fold's test figures as points, the mean as a bar with its interval."""
    plt = pyplot()
    keys = [k for k in FIGURES if k in summary] + [k for k in summary if k.startswith("f1_")]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(keys) + 1.5), 4))
    x = np.arange(len(keys))
    means = [summary[k]["mean"] for k in keys]
    err = np.array([[summary[k]["mean"] - summary[k]["ci"][0], summary[k]["ci"][1] - summary[k]["mean"]]
                    for k in keys]).T
    ax.bar(x, means, color="#cfe0f3", edgecolor="#5b8cc0", yerr=err, capsize=4,
           label=f"mean, {100 * level:g}% interval")
    for i, f in enumerate(per_fold):
        ax.plot(x + (i - (len(per_fold) - 1) / 2) * 0.08, [f.get(k, np.nan) for k in keys], "o", ms=4,
                label=f"fold {i}")
    ax.set_xticks(x, [k.replace("_", " ") for k in keys], rotation=20)
    low = min(min(f.get(k, 1) for f in per_fold for k in keys), min(summary[k]["ci"][0] for k in keys))
    ax.set_ylim(max(0.0, low - 0.05), 1.005)
    ax.set_title(f"{len(per_fold)}-fold cross-validation: test figures per fold")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, out)
