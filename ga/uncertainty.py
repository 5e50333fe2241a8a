"""Confidence intervals of test figures: a stratified (cluster) bootstrap, Wilson intervals
for plain proportions, and the paired comparison of two models on the same images.

The test crops come in groups (rotated/flipped copies of one crystal share a manifest
`group`), so they are not independent. Resampling whole groups, within each class, keeps
that dependence: an interval over 120 groups of 4 copies is as wide as one over 120 images,
not over 480. Without groups (each image its own), accuracy, precision and recall are plain
proportions and get the Wilson score interval (with groups: Wilson at the effective number
of images, see `proportion_interval`); every other figure (F1, balanced accuracy, AUC, the
harmonic mean of F1) gets the percentile bootstrap, whose interval collapses to a point when
no resample can change the figure (no errors): `uncertainty.collapsed` lists those, and each
gets an honest lower bound from the Wilson bounds of its parts (`uncertainty.floored`, the
method in `uncertainty.floor`): F1 the harmonic mean of precision's and recall's lower bounds,
balanced accuracy the mean of the recalls', macro averages the mean of their classes', the
harmonic mean of F1 that of the classes' F1 bounds, and a perfect AUC the Wilson bound of a
share of min(positives, negatives) comparisons. "1.0 (1.0-1.0)" is no longer reported.

Every figure is computed from per-image weights (a resample's count of each image), so one
vectorised pass gives all resamples; weights of one reproduce the point figures of
ga.tasks (a test checks that).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

import numpy as np

from ga.tasks import get_task

if TYPE_CHECKING:
    from ga.tasks import Task

Key = tuple  # a figure's place in metrics.json: ("accuracy",), ("per_class", "pg", "f1"), ...

CHUNK = 250  # resamples per vectorised pass (bounds the weight matrix: CHUNK x images)


@dataclass(frozen=True)
class Settings:
    """How intervals are taken (the config's `analysis` section)."""

    level: float = 0.95
    resamples: int = 2000
    seed: int = 0


# ---------------------------------------------------------------------------- resampling


def strata_of(task: Task, y_true: np.ndarray) -> np.ndarray:
    """The stratum of each image: its class (exclusive tasks) or its label set (multi-label)."""
    y = np.asarray(y_true)
    if task.exclusive:
        return task.true_index(y)
    _, inverse = np.unique((y > 0.5).astype(np.int8), axis=0, return_inverse=True)
    return inverse.reshape(-1)


def group_index(groups: Sequence[str] | None, n: int) -> np.ndarray:
    """Integer group ids (n,): equal names share an id; None gives every image its own."""
    if groups is None:
        return np.arange(n)
    _, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    return inverse.reshape(-1)


def bootstrap_weights(strata: np.ndarray, groups: np.ndarray, resamples: int, seed: int,
                      chunk: int = CHUNK) -> Iterator[np.ndarray]:
    """Per-image weights of stratified cluster-bootstrap resamples, `chunk` at a time.

    Within each stratum, as many groups as it has are drawn with replacement; an image's
    weight is the number of times its group was drawn. A group's stratum is that of its
    first image.

    Yields:
        float64 arrays (b, n), b <= chunk, `resamples` rows in all.
    """
    rng = np.random.default_rng(seed)
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    first = np.full(n_groups, -1)
    first[groups[::-1]] = np.arange(len(groups))[::-1]
    members = [np.flatnonzero(strata[first] == s) for s in np.unique(strata)]
    done = 0
    while done < resamples:
        b = min(chunk, resamples - done)
        drawn = np.concatenate([m[rng.integers(0, len(m), (b, len(m)))] for m in members], axis=1)
        flat = (np.arange(b)[:, None] * n_groups + drawn).ravel()
        counts = np.bincount(flat, minlength=b * n_groups).reshape(b, n_groups).astype(np.float64)
        yield counts[:, groups]
        done += b


# ---------------------------------------------------------------------------- weighted figures


def truth_and_decisions(task: Task | str, classes: Sequence[str], y_true: np.ndarray, y_prob: np.ndarray,
                        thresholds: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """(truth, decisions): bool (n, k) matrices of the classes each image has and is called."""
    task = get_task(task)
    y_true = np.asarray(y_true)
    truth = np.eye(len(classes), dtype=bool)[task.true_index(y_true)] if task.exclusive else y_true > 0.5
    return truth, task.decide(y_prob, classes, thresholds).astype(bool)


def _ratio(num, den):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)  # sklearn's zero_division=0


def weighted_auc(truth: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of `weights` (b, n): P(score of a positive > score of a negative),
    ties counted half, each image counted with its weight; nan when a class has no weight."""
    order = np.argsort(score, kind="stable")
    s = np.asarray(score)[order]
    t = np.asarray(truth, bool)[order]
    w = weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    pos = np.add.reduceat(w * t, starts, axis=1)
    neg = np.add.reduceat(w * ~t, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    den = pos.sum(1) * neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (pos * (below + 0.5 * neg)).sum(1) / np.where(den > 0, den, 1), np.nan)


def figure_values(task: Task | str, classes: Sequence[str], y_true: np.ndarray, y_prob: np.ndarray,
                  thresholds: Mapping[str, float], weights: np.ndarray, point: Mapping) -> dict[Key, np.ndarray]:
    """Every test figure of `point` (a metrics dict of ga.tasks) under each row of
    `weights` (b, n): {key: (b,) values}. Figures `point` holds as None are left out."""
    task = get_task(task)
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, np.float64)
    k = len(classes)
    truth, decided = truth_and_decisions(task, classes, y_true, y_prob, thresholds)
    w = weights
    total = w.sum(1)
    tp = w @ (truth & decided).astype(float)  # (b, k)
    support = w @ truth.astype(float)
    called = w @ decided.astype(float)
    prec, rec = _ratio(tp, called), _ratio(tp, support)
    f1 = _ratio(2 * tp, support + called)
    out: dict[Key, np.ndarray] = {("accuracy",): _ratio(w @ (truth == decided).all(1).astype(float), total)}
    for i, c in enumerate(classes):
        out[("per_class", c, "precision")], out[("per_class", c, "recall")] = prec[:, i], rec[:, i]
        out[("per_class", c, "f1")] = f1[:, i]
    for name, fig in (("precision", prec), ("recall", rec), ("f1", f1)):
        if "macro_avg" in point:
            out[("macro_avg", name)] = fig.mean(1)
        if "weighted_avg" in point:
            out[("weighted_avg", name)] = _ratio((fig * support).sum(1), support.sum(1))
    if "balanced_accuracy" in point:
        present = truth.any(0)  # sklearn's mean recall over the classes in the truth
        out[("balanced_accuracy",)] = rec[:, present].mean(1)
    if "harmonic_mean_f1" in point:
        with np.errstate(divide="ignore"):
            out[("harmonic_mean_f1",)] = np.where((f1 > 0).all(1), k / (1 / np.where(f1 > 0, f1, 1)).sum(1), 0.0)
    auc = point.get("roc_auc")
    if isinstance(auc, Mapping):
        for i, c in enumerate(classes):
            if auc.get(c) is not None:
                out[("roc_auc", c)] = weighted_auc(truth[:, i], y_prob[:, i], w)
    elif auc is not None:  # binary: the positive class's probability, the single output
        out[("roc_auc",)] = weighted_auc(truth[:, 1], y_prob[:, 0], w)
    if point.get("roc_auc_macro") is not None:
        defined = [out[("roc_auc", c)] for c in classes if ("roc_auc", c) in out]
        out[("roc_auc_macro",)] = np.mean(defined, axis=0)
    if point.get("roc_auc_micro") is not None:
        out[("roc_auc_micro",)] = weighted_auc(truth.ravel(), y_prob.ravel(), np.repeat(w, k, axis=1))
    return out


# ---------------------------------------------------------------------------- intervals


PROPORTIONS = ("accuracy", "precision", "recall")


def intervals(task: Task | str, classes: Sequence[str], y_true: np.ndarray, y_prob: np.ndarray,
              thresholds: Mapping[str, float], point: Mapping, groups: Sequence[str] | None = None,
              settings: Settings = Settings()) -> tuple[dict[Key, list[float]], dict]:
    """Confidence intervals of every figure of `point`.

    Args:
        groups: each image's group (the manifest's `group`), or None: independent images.

    Returns:
        ({key: [low, high]}, how: the description stored as metrics.json's `uncertainty`).
    """
    task = get_task(task)
    n = len(y_true)
    gid = group_index(groups, n)
    n_groups = int(gid.max()) + 1 if n else 0
    grouped = n_groups < n
    samples: dict[Key, list[np.ndarray]] = {}
    if n:
        for w in bootstrap_weights(strata_of(task, y_true), gid, settings.resamples, settings.seed):
            for key, v in figure_values(task, classes, y_true, y_prob, thresholds, w, point).items():
                samples.setdefault(key, []).append(v)
    lo_q, hi_q = 50 * (1 - settings.level), 50 * (1 + settings.level)
    out = {}
    for key, parts in samples.items():
        v = np.concatenate(parts)
        v = v[np.isfinite(v)]
        out[key] = [float(np.percentile(v, lo_q)), float(np.percentile(v, hi_q))] if len(v) else None
    if n:
        for key, (hit, trials) in _proportions(task, classes, y_true, y_prob, thresholds).items():
            if key in out:
                out[key] = proportion_interval(hit[trials], gid[trials], settings.level)
    collapsed = sorted(".".join(k) for k, ci in out.items() if ci is not None and ci[0] == ci[1])
    floored = _floor_collapsed(out, task, classes, y_true, gid, settings.level) if n else []
    how = {"level": settings.level,
           "method": ("cluster bootstrap: whole groups resampled within each class" if grouped else
                      "bootstrap: images resampled within each class") + ", percentile intervals",
           "proportions": "wilson, effective size by design effect" if grouped else "wilson",
           "resamples": settings.resamples, "seed": settings.seed, "images": n, "groups": n_groups,
           "grouped": bool(grouped), "collapsed": collapsed, "floored": floored,
           "floor": "a bootstrap interval that no resample can move (no errors) gets its lower bound from "
                    "the Wilson bounds of what the figure is made of: F1 from precision's and recall's, "
                    "balanced accuracy from the recalls', averages from their classes', AUC as a share of "
                    "min(positives, negatives) pairs"}
    return out, how


def _floor_collapsed(out, task, classes, y_true, gid, level):
    """Give each interval the bootstrap left as a point (a perfect figure: no resample has an
    error to draw) a lower bound from the Wilson bounds of its parts (module docstring of
    `intervals`' how["floor"]); returns the keys changed, dotted."""
    from ga.stats import wilson_interval

    def point(key):
        ci = out.get(key)
        return ci is not None and ci[0] == ci[1]

    def low(key):
        ci = out.get(key)
        return None if ci is None else ci[0]

    changed = []

    def floor(key, value):
        if value is not None and point(key) and np.isfinite(value) and value < out[key][0]:
            out[key] = [float(value), out[key][1]]
            changed.append(".".join(key))

    f1_low = {}
    for c in classes:
        p, r = low(("per_class", c, "precision")), low(("per_class", c, "recall"))
        if p is not None and r is not None:
            f1_low[c] = 2 * p * r / (p + r) if p + r > 0 else 0.0
            floor(("per_class", c, "f1"), f1_low[c])
        f1_low[c] = low(("per_class", c, "f1"))
    for fig in ("precision", "recall", "f1"):
        parts = [low(("per_class", c, fig)) for c in classes]
        if all(v is not None for v in parts) and parts:
            floor(("macro_avg", fig), float(np.mean(parts)))
            floor(("weighted_avg", fig), float(np.min(parts)))  # no lower than its weakest class
    recalls = [low(("per_class", c, "recall")) for c in classes]
    recalls = [v for v in recalls if v is not None]
    if recalls:
        floor(("balanced_accuracy",), float(np.mean(recalls)))
    lows = [v for v in f1_low.values() if v is not None]
    if lows and all(v > 0 for v in lows):
        floor(("harmonic_mean_f1",), len(lows) / sum(1 / v for v in lows))
    for key in [k for k in out if k[0] in ("roc_auc", "roc_auc_macro")]:
        if point(key):
            pairs = _auc_pairs(task, classes, y_true, key)
            if pairs:
                floor(key, wilson_interval(round(out[key][0] * pairs), pairs, level)[0])
    return changed


def _auc_pairs(task, classes, y_true, key):
    """min(positives, negatives) of the class an AUC key is about: the effective number of
    independent comparisons a perfect AUC rests on."""
    y = np.asarray(y_true)

    def pairs(col):
        pos = int(np.sum(task.true_index(y) == col)) if task.exclusive else int(np.sum(y[:, col] > 0.5))
        return min(pos, len(y) - pos)

    if key[0] == "roc_auc_macro":
        return min(pairs(i) for i in range(len(classes)))
    if len(key) > 1:
        return pairs(classes.index(key[1]))
    return pairs(len(classes) - 1 if task.exclusive else 0)  # binary: the positive class


def proportion_interval(hit: np.ndarray, groups: np.ndarray, level: float = 0.95) -> list[float] | None:
    """Wilson interval of the share of `hit`, with images in groups counted by their
    effective number: n / design effect, the design effect being the cluster-robust
    variance of the share over the binomial one, between 1 and n / groups. With no errors
    (or no successes) the variance says nothing and the effective number is the number of
    groups, as if each group were one image: 1.0 on 120 groups of 4 gives (0.969, 1.0),
    the interval of 120 images. None when there are no trials."""
    n = len(hit)
    if n == 0:
        return None
    _, g = np.unique(groups, return_inverse=True)
    n_groups = int(g.max()) + 1
    k = int(np.sum(hit))
    ceiling = n / n_groups
    if n_groups == n:
        deff = 1.0
    elif k in (0, n) or n_groups < 2:
        deff = ceiling
    else:
        p = k / n
        resid = np.bincount(g, weights=hit - p, minlength=n_groups)  # y_g - p m_g
        robust = n_groups / (n_groups - 1) * np.sum(resid**2) / n**2
        deff = float(np.clip(robust / (p * (1 - p) / n), 1.0, ceiling))
    n_eff = n / deff
    lo, hi = _wilson(k / n, n_eff, level)
    return [lo, hi]


def _wilson(p: float, n: float, level: float) -> tuple[float, float]:
    """The Wilson score interval for a share p of n (n may be fractional: an effective size)."""
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2))
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _proportions(task, classes, y_true, y_prob, thresholds):
    """{key: (hit bool (n,), trials bool (n,))} of the figures that are plain proportions."""
    truth, decided = truth_and_decisions(task, classes, y_true, y_prob, thresholds)
    out = {("accuracy",): ((truth == decided).all(1), np.ones(len(truth), bool))}
    for i, c in enumerate(classes):
        hit = truth[:, i] & decided[:, i]
        out[("per_class", c, "precision")] = (hit, decided[:, i])
        out[("per_class", c, "recall")] = (hit, truth[:, i])
    return out


def attach(m: dict, cis: Mapping[Key, list[float] | None], how: Mapping) -> dict:
    """Write each interval beside its figure in the metrics dict: `accuracy_ci`,
    `per_class.<c>.f1_ci`, `roc_auc_ci` (a dict for per-class AUC), ... and `uncertainty`."""
    for key, ci in cis.items():
        *path, last = key
        if path and path[0] == "roc_auc":  # per-class AUC: roc_auc_ci is a dict beside roc_auc
            m.setdefault("roc_auc_ci", {})[last] = ci
            continue
        node = m
        for p in path:
            node = node[p]
        node[f"{last}_ci"] = ci
    m["uncertainty"] = dict(how)
    return m


def level_text(m: Mapping) -> str:
    """`95% intervals: cluster bootstrap ... (2000 resamples, 120 groups of 480 images)`."""
    u = m.get("uncertainty")
    if not u:
        return ""
    what = f"{u['proportions']} for accuracy, precision and recall; "
    return (f"{100 * u['level']:g}% intervals in brackets: {what}{u['method']} ({u['resamples']} resamples, seed "
            f"{u['seed']}; {u['groups']} groups of {u['images']} images)")
