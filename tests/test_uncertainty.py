"""Confidence intervals (ga.uncertainty): coverage on simulated decisions with a known truth,
the cluster bootstrap's width on grouped copies, and agreement with the point figures."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ga.analysis import compute_metrics
from ga.stats import shown, with_ci
from ga.uncertainty import (
    Settings,
    attach,
    bootstrap_weights,
    figure_values,
    intervals,
    proportion_interval,
    weighted_auc,
)

TRUE_ACCURACY, N, REPEATS = 0.9, 200, 500


def _simulated(rng, n=N):
    """Two classes of n/2 images, each decision right with probability TRUE_ACCURACY."""
    cls = np.repeat([0, 1], n // 2)
    right = rng.random(n) < TRUE_ACCURACY
    return cls, right


def _bootstrap_accuracy(cls, right, groups, resamples=1000, seed=0):
    w = np.concatenate(list(bootstrap_weights(cls, groups, resamples, seed)))
    acc = (w @ right) / w.sum(1)
    return np.percentile(acc, [2.5, 97.5])


def test_intervals_cover_a_known_accuracy_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    wilson = boot = 0
    for r in range(REPEATS):
        cls, right = _simulated(rng)
        lo, hi = proportion_interval(right, np.arange(N))
        wilson += lo <= TRUE_ACCURACY <= hi
        lo, hi = _bootstrap_accuracy(cls, right, np.arange(N), seed=r)
        boot += lo <= TRUE_ACCURACY <= hi
    assert 0.93 <= wilson / REPEATS <= 0.97
    assert 0.93 <= boot / REPEATS <= 0.97


def test_grouped_copies_widen_the_interval_twice_and_it_still_covers():
    """Each image duplicated 4x as a group: 800 rows that hold 200 images' information."""
    rng = np.random.default_rng(1)
    covered, ratios, boot_ratios = 0, [], []
    groups = np.repeat(np.arange(N), 4)
    for r in range(REPEATS):
        cls, right = _simulated(rng)
        cls4, right4 = np.repeat(cls, 4), np.repeat(right, 4)
        naive = proportion_interval(right4, np.arange(4 * N))
        grouped = proportion_interval(right4, groups)
        covered += grouped[0] <= TRUE_ACCURACY <= grouped[1]
        ratios.append((grouped[1] - grouped[0]) / (naive[1] - naive[0]))
        if r < 50:  # the bootstrap's width ratio settles quickly
            b_naive = _bootstrap_accuracy(cls4, right4, np.arange(4 * N), 500, r)
            b_group = _bootstrap_accuracy(cls4, right4, groups, 500, r)
            boot_ratios.append((b_group[1] - b_group[0]) / (b_naive[1] - b_naive[0]))
    assert 0.93 <= covered / REPEATS <= 0.97
    assert np.mean(ratios) == pytest.approx(2.0, rel=0.05)
    assert np.mean(boot_ratios) == pytest.approx(2.0, rel=0.1)


def test_a_perfect_score_still_has_an_interval():
    """1.0 on 120 crops is compatible with 97%; on 40 with 91%; 120 groups of 4 copies count as 120."""
    assert proportion_interval(np.ones(120, bool), np.arange(120))[0] == pytest.approx(0.969, abs=1e-3)
    assert proportion_interval(np.ones(40, bool), np.arange(40))[0] == pytest.approx(0.912, abs=1e-3)
    assert proportion_interval(np.ones(480, bool), np.repeat(np.arange(120), 4))[0] == pytest.approx(0.969, abs=1e-3)
    assert proportion_interval(np.ones(0, bool), np.arange(0)) is None


def test_bootstrap_weights_resample_whole_groups_within_each_class():
    cls = np.repeat([0, 1], [12, 8])
    groups = np.repeat(np.arange(5), 4)  # groups 0-2 are class 0, 3-4 class 1
    w = np.concatenate(list(bootstrap_weights(cls, groups, 300, seed=3, chunk=70)))
    assert w.shape == (300, 20)
    for g in range(5):  # the copies of one group are always drawn together
        assert (w[:, groups == g] == w[:, groups == g][:, :1]).all()
    assert (w[:, cls == 0].sum(1) == 12).all() and (w[:, cls == 1].sum(1) == 8).all()  # class sizes kept
    again = np.concatenate(list(bootstrap_weights(cls, groups, 300, seed=3, chunk=70)))
    assert (w == again).all()  # seeded


def test_weighted_auc_equals_scikit_learn_with_sample_weights():
    rng = np.random.default_rng(2)
    truth = rng.random(90) < 0.4
    score = np.round(rng.random(90), 1)  # ties
    w = rng.integers(0, 4, (5, 90)).astype(float)
    got = weighted_auc(truth, score, w)
    for row, g in zip(w, got):
        assert g == pytest.approx(roc_auc_score(truth, score, sample_weight=row))


def _toy(task, rng, n=160):
    if task == "binary":
        y = rng.integers(0, 2, (n, 1)).astype(np.float32)
        return ["cex", "pg"], y, np.clip(0.6 * y + 0.5 * rng.random((n, 1)), 0, 1), {"pg": 0.5}
    if task == "multiclass":
        y = np.eye(3)[rng.integers(0, 3, n)]
        p = rng.random((n, 3)) + 0.8 * y
        return ["a", "b", "c"], y, p / p.sum(1, keepdims=True), {}
    y = (rng.random((n, 3)) < 0.4).astype(np.float32)
    return ["x", "y", "z"], y, np.clip(0.5 * y + 0.6 * rng.random((n, 3)), 0, 1), {c: 0.5 for c in "xyz"}


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_every_figure_gets_an_interval_around_its_point_value(task):
    rng = np.random.default_rng(4)
    classes, y, p, th = _toy(task, rng)
    m, _ = compute_metrics(task, classes, y, p, th)
    values = figure_values(task, classes, y, p, th, np.ones((1, len(y))), m)
    cis, how = intervals(task, classes, y, p, th, m, groups=[str(i // 2) for i in range(len(y))],
                         settings=Settings(resamples=400))
    assert set(cis) == set(values) and how["groups"] == len(y) // 2 and how["grouped"]
    for key, v in values.items():  # weights of one give the figure metrics.json reports
        node = m
        for k in key:
            node = node[k]
        assert node == pytest.approx(v[0], abs=1e-9), key
        lo, hi = cis[key]
        assert lo <= node + 1e-9 and node - 1e-9 <= hi, key
    attach(m, cis, how)
    assert m["accuracy_ci"] == cis[("accuracy",)] and m["uncertainty"]["resamples"] == 400
    first = classes[0]
    assert m["per_class"][first]["f1_ci"] == cis[("per_class", first, "f1")]
    assert m["macro_avg"]["f1_ci"] == cis[("macro_avg", "f1")]
    if task == "binary":
        assert m["roc_auc_ci"] == cis[("roc_auc",)] and "balanced_accuracy_ci" in m
    else:
        assert m["roc_auc_ci"][first] == cis[("roc_auc", first)]
    assert ("harmonic_mean_f1_ci" in m) == (task == "multilabel")
    assert ("roc_auc_macro_ci" in m) == (task == "multiclass")


def test_with_ci_text():
    assert with_ci(0.98333, [0.9571, 0.99512]) == "0.9833 (0.9571–0.9951)"
    assert with_ci(0.5, None) == "0.5000"
    assert with_ci(None, None) == "undefined"
    assert shown({"f1": 0.9, "f1_ci": [0.8, 0.95]}, "f1", 2) == "0.90 (0.80–0.95)"


def test_data_efficiency_bars_come_from_the_repeats_or_the_runs_own_interval():
    import importlib.util
    import os

    from helpers import ROOT

    spec = importlib.util.spec_from_file_location("data_efficiency", os.path.join(ROOT, "scripts", "data_efficiency.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rows = [{"method": "scratch", "train_images": 72, "harmonic_mean_f1": 0.5, "harmonic_mean_f1_ci": [0.4, 0.6]},
            *({"method": "fine_tune", "train_images": 72, "harmonic_mean_f1": v} for v in (0.70, 0.74, 0.78))]
    agg = script.aggregate(rows)
    assert agg[("scratch", 72)] == (0.5, [0.4, 0.6], 1)
    mean, (lo, hi), n = agg[("fine_tune", 72)]
    half = 4.302653 * 0.04 / np.sqrt(3)  # t(0.975, 2) x sd / sqrt(n)
    assert n == 3 and mean == pytest.approx(0.74) and (lo, hi) == pytest.approx((0.74 - half, 0.74 + half))
    assert "0.740 (" in script._table({"runs": rows}) and "3 runs" in script._table({"runs": rows})


def test_the_f1_interval_is_the_percentile_bootstrap_of_a_stratified_resample():
    """pg's F1 interval against a bootstrap written here: images resampled with replacement within
    each true class, F1 of each resample, the 2.5th and 97.5th percentiles. The two use different
    random draws, so they agree to Monte Carlo error (0.003 here; a 90% interval is 0.012 off); an interval
    that only contains the point (say [0, 1]) does not."""
    rng = np.random.default_rng(7)
    classes, th = ["cex", "pg"], {"pg": 0.5}
    y = rng.integers(0, 2, (120, 1)).astype(np.float32)
    p = np.clip(0.35 * y + 0.5 * rng.random((120, 1)) + 0.1, 0, 1)  # classes overlap: F1 about 0.8
    m, _ = compute_metrics("binary", classes, y, p, th)
    cis, _ = intervals("binary", classes, y, p, th, m, settings=Settings(resamples=2000, seed=1))
    truth, called = y[:, 0] > 0.5, p[:, 0] > 0.5
    by_class = [np.flatnonzero(~truth), np.flatnonzero(truth)]
    own = np.random.default_rng(123)
    f1s = []
    for _ in range(2000):
        idx = np.concatenate([c[own.integers(0, len(c), len(c))] for c in by_class])
        tp = np.sum(truth[idx] & called[idx])
        f1s.append(2 * tp / (np.sum(truth[idx]) + np.sum(called[idx])))
    want = np.percentile(f1s, [2.5, 97.5])
    got = cis[("per_class", "pg", "f1")]
    assert got == pytest.approx(want, abs=0.006), (got, want)  # seeded: the same draws every run
    assert want[1] - want[0] > 0.05  # a real interval on this data, not a point


def test_a_perfect_score_gets_a_lower_bound_from_its_parts():
    """No errors on 30 + 20 images: the bootstrap cannot move F1, balanced accuracy or AUC, so
    each gets the lower bound its parts' Wilson bounds give (was "1.0 (1.0-1.0)")."""
    from ga.stats import wilson_interval

    classes, th = ["cex", "pg"], {"pg": 0.5}
    y = np.array([0.0] * 30 + [1.0] * 20).reshape(-1, 1)
    p = np.where(y > 0.5, 0.9, 0.1)
    m, _ = compute_metrics("binary", classes, y, p, th)
    cis, how = intervals("binary", classes, y, p, th, m, settings=Settings(resamples=200))
    r_pg, r_cex = wilson_interval(20, 20)[0], wilson_interval(30, 30)[0]  # recall = precision here
    assert cis[("per_class", "pg", "f1")] == pytest.approx([r_pg, 1.0])  # 2PR/(P+R) with P = R
    assert cis[("per_class", "cex", "f1")] == pytest.approx([r_cex, 1.0])
    assert cis[("balanced_accuracy",)] == pytest.approx([(r_pg + r_cex) / 2, 1.0])
    assert cis[("macro_avg", "f1")] == pytest.approx([(r_pg + r_cex) / 2, 1.0])
    assert cis[("roc_auc",)] == pytest.approx([wilson_interval(20, 20)[0], 1.0])  # min(30, 20) comparisons
    assert "per_class.pg.f1" in how["floored"] and "roc_auc" in how["floored"] and how["floor"]
    assert all(ci[0] < ci[1] for key, ci in cis.items() if ci is not None and key[-1] in ("f1", "balanced_accuracy"))
