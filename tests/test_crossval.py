"""Cross-validation folds (split_data.py --folds), main.py --cv killed and resumed, and
comparing two models (inference.py --evaluate --compare, ga compare), each from a shell: a
fresh interpreter, real argv and exit codes, on synthetic crystals made on the fly."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import scipy.stats
import pytest
import yaml
from helpers import ROOT, error_lines, read_csv, run_here, run_script
from scipy.stats import binomtest

K = 3


# The documented `python main.py --config configs/demo.yaml --cv`, shrunk (the last --set wins).
SHRINK = ["--set", "data.image_size=[32,32]", "--set", "data.batch_size=16", "--set", "data.augment.enabled=false",
          "--set", "training.epochs=1", "--set", "training.mixed_precision=float32",
          "--set", "analysis.bootstrap_resamples=500", "--set", "output.onnx=false", "--set", "output.saved_model=false",
          "--set", "output.explain=false", "--set", "output.int8=false", "--set", "output.tensorboard=false"]


@pytest.fixture(scope="module")
def folded(tmp_path_factory):
    """Synthetic crystals (the PG class in groups of rotated copies), split with --folds 5,
    then refolded into K folds."""
    work = tmp_path_factory.mktemp("cv")
    os.symlink(os.path.join(ROOT, "configs"), work / "configs")
    run_script("-m", "ga", "synth", "crystals", "--out", "data/archive", "--per-class", "40", "--seed", "0", cwd=work)
    proc = run_script("split_data.py", "--folds", "5", "--no-progress", cwd=work)  # the documented command
    return work, proc


def _manifest(work):
    return read_csv(work / "data/split/manifest.csv")


def test_folds_put_each_group_in_one_fold_and_leave_test_out(folded):
    work, proc = folded
    assert "5 cross-validation folds" in proc.stdout
    rows = _manifest(work)
    folds_of_group = {}
    for r in rows:
        if r["split"] == "test":
            assert r["fold"] == "", r  # the hold-out stays out of every fold
        else:
            assert r["fold"] in {str(i) for i in range(5)}, r
            folds_of_group.setdefault(r["group"], set()).add(r["fold"])
    assert all(len(f) == 1 for f in folds_of_group.values())  # no group in two folds
    assert len({r["source"] for r in rows}) == len(rows)  # each image once: in one fold or in test
    assert any(len([r for r in rows if r["group"] == g]) > 1 for g in folds_of_group)  # groups of copies exist
    doc = json.load(open(work / "data/split/split.json"))
    assert doc["folds"]["k"] == 5
    # Again on the same split: the same folds, and not a file moved.
    before = {p: os.stat(os.path.join(d, p)).st_mtime_ns for d, _, fs in os.walk(work / "data/split/train") for p in fs}
    again = run_script("split_data.py", "--folds", "5", "--no-progress", cwd=work)
    assert "already holds this split" in again.stdout and _manifest(work) == rows
    after = {p: os.stat(os.path.join(d, p)).st_mtime_ns for d, _, fs in os.walk(work / "data/split/train") for p in fs}
    assert before == after
    bad = run_script("split_data.py", "--folds", "1", cwd=work, expect=2)
    assert error_lines(bad) == ["error: --folds: must be between 2 and 100, got 1"]


def _cv_state(cv_root):
    dirs = [os.path.join(cv_root, d) for d in os.listdir(cv_root)] if os.path.isdir(cv_root) else []
    for d in dirs:
        path = os.path.join(d, "cv.json")
        try:
            return d, json.load(open(path))
        except (OSError, ValueError):
            continue
    return None, None


def _python_env():
    return {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": ROOT}


@pytest.fixture(scope="module")
def cross_validated(folded):
    """main.py --cv on K folds, killed once two folds are finished, then resumed."""
    work, _ = folded
    run_script("split_data.py", "--folds", str(K), "--no-progress", cwd=work)
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py"), "--config", "configs/demo.yaml", "--cv",
                          *SHRINK], cwd=work, env=_python_env(), stdout=subprocess.DEVNULL,
                         stderr=open(work / "cv_killed.log", "w"))
    deadline = time.time() + 400
    cv_dir = doc = None
    while time.time() < deadline and p.poll() is None:
        cv_dir, doc = _cv_state(work / "deliverables")
        if doc and len(doc["folds"]) >= 2:
            break
        time.sleep(0.1)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert cv_dir is not None and len(doc["folds"]) == 2, "the run ended before it could be killed after fold 2"
    first = sorted(os.listdir(cv_dir))
    resumed = run_script("main.py", "--resume", os.path.relpath(cv_dir, work), cwd=work)
    return work, cv_dir, first, resumed


def test_cv_killed_after_fold_2_trains_only_the_rest(cross_validated):
    work, cv_dir, first, resumed = cross_validated
    log = resumed.stderr
    assert "fold 0 (1 of 3): finished earlier" in log and "fold 1 (2 of 3): finished earlier" in log
    assert "fold 2 (3 of 3): training" in log and log.count(": training") == 1
    runs = sorted(d for d in os.listdir(cv_dir) if os.path.isdir(os.path.join(cv_dir, d)) and "_fold" in d)
    assert [r.rsplit("_", 1)[1] for r in runs] == ["fold0", "fold1", "fold2"]  # one run per fold, no repeats
    assert runs[0] in first and runs[1] in first  # folds 1 and 2 kept their run folders
    assert os.path.normpath(os.path.join(work, resumed.stdout.strip().splitlines()[-1])) == os.path.normpath(cv_dir)


def test_cv_summary_is_the_mean_of_the_folds(cross_validated):
    work, cv_dir, _, _ = cross_validated
    summary = json.load(open(os.path.join(cv_dir, "cv_summary.json")))
    runs = summary["folds"]
    assert len(runs) == K
    folds = [json.load(open(os.path.join(cv_dir, r, "metrics.json"))) for r in runs]
    for key, pick in (("accuracy", lambda m: m["accuracy"]), ("macro_f1", lambda m: m["macro_avg"]["f1"]),
                      ("balanced_accuracy", lambda m: m["balanced_accuracy"])):
        values = [pick(m) for m in folds]
        s = summary["test_figures"][key]
        assert s["mean"] == pytest.approx(np.mean(values)) and s["sd"] == pytest.approx(np.std(values, ddof=1))
        half = scipy.stats.t.ppf(0.975, K - 1) * np.std(values, ddof=1) / np.sqrt(K)  # the t-interval of K folds
        assert s["ci"] == pytest.approx([np.mean(values) - half, np.mean(values) + half])
    # Each fold validated on its own fold and trained on the others.
    table = {r["source"]: r["fold"] for r in _manifest(work)}
    for i, r in enumerate(runs):
        cfg = yaml.safe_load(open(os.path.join(cv_dir, r, "config.yaml")))
        assert cfg["data"]["fold"] == i
    oof = read_csv(os.path.join(cv_dir, "oof", "predictions.csv"))
    assert len(oof) == sum(1 for v in table.values() if v != "")  # every train/valid image predicted once
    for row in oof:
        rel = os.path.relpath(row["path"], "data/split").split(os.sep, 1)[1]
        assert table[rel.replace(os.sep, "/")] == row["fold"]
    oof_metrics = json.load(open(os.path.join(cv_dir, "oof", "metrics.json")))
    truth = [os.path.normpath(r["path"]).split(os.sep)[-2] for r in oof]  # <split>/<class>/<file>
    assert oof_metrics["accuracy"] == pytest.approx(np.mean([t == r["predicted"] for t, r in zip(truth, oof)]))
    lo, hi = oof_metrics["accuracy_ci"]
    assert lo <= oof_metrics["accuracy"] <= hi and hi - lo > 0
    assert os.path.getsize(os.path.join(cv_dir, "cv_summary.png")) > 5000
    with open(os.path.join(cv_dir, "cv_folds.csv"), newline="") as fh:
        assert len(list(csv.DictReader(fh))) == K


def test_metrics_and_report_of_a_run_hold_intervals(cross_validated):
    work, cv_dir, _, _ = cross_validated
    run = os.path.join(cv_dir, json.load(open(os.path.join(cv_dir, "cv.json")))["folds"]["0"]["run"])
    m = json.load(open(os.path.join(run, "metrics.json")))
    for key in ("accuracy_ci", "balanced_accuracy_ci", "roc_auc_ci"):
        assert len(m[key]) == 2 and m[key][0] <= m[key.removesuffix("_ci")] <= m[key][1], key
    called = np.array(m["confusion_matrix"]).sum(axis=0)
    for i, c in enumerate(m["classes"]):
        for fig in ("precision", "recall", "f1"):
            ci = m["per_class"][c][f"{fig}_ci"]
            if fig == "precision" and called[i] == 0:  # no image called c: a share of nothing has no interval
                assert ci is None
            else:
                assert len(ci) == 2 and ci[0] <= m["per_class"][c][fig] <= ci[1], (c, fig)
    assert m["macro_avg"]["f1_ci"] and m["uncertainty"]["grouped"] and m["uncertainty"]["resamples"] == 500
    assert m["uncertainty"]["groups"] < m["test_images"]  # the PG copies resampled together
    lo, hi = m["accuracy_ci"]
    html = open(os.path.join(run, "report.html"), encoding="utf-8").read()
    assert f"{m['accuracy']:.4f} ({lo:.4f}–{hi:.4f})" in html and "95% intervals" in html
    text = open(os.path.join(run, "GAFinalTestResults.txt"), encoding="utf-8").read()
    assert f"accuracy: {m['accuracy']:.4f} ({lo:.4f}–{hi:.4f})" in text
    assert f"({lo:.4f}–{hi:.4f})" in open(os.path.join(run, "model_card.md"), encoding="utf-8").read()


def test_compare_two_models_gives_mcnemars_exact_p(cross_validated, tmp_path):
    work, cv_dir, _, _ = cross_validated
    a = os.path.join(cv_dir, json.load(open(os.path.join(cv_dir, "cv.json")))["folds"]["0"]["run"])
    b = tmp_path / "b"  # the same weights calling pg on every image: another model's decisions
    shutil.copytree(a, b)
    labels = json.load(open(b / "labels.json"))
    labels["thresholds"] = {c: 1e-6 for c in labels["thresholds"]}
    json.dump(labels, open(b / "labels.json", "w"))
    proc = run_script("inference.py", "data/split/test", "--evaluate", "--model", a, "--compare", b,
                      "--out-dir", tmp_path / "cmp", "--no-progress", cwd=work)
    doc = json.load(open(tmp_path / "cmp" / "compare.json"))
    mc = doc["mcnemar"]
    differ = read_csv(tmp_path / "cmp" / "compare.csv")
    assert len(differ) == doc["decided_differently"] > 0
    assert doc["accuracy_b"] == pytest.approx(np.mean([r["class"] == "pg" for r in _manifest(work) if r["split"] == "test"]))
    assert mc["a_right_b_wrong"] == sum(r["right_a"] == "1" and r["right_b"] == "0" for r in differ)
    assert mc["a_wrong_b_right"] == sum(r["right_a"] == "0" and r["right_b"] == "1" for r in differ)
    n = mc["a_right_b_wrong"] + mc["a_wrong_b_right"]
    assert mc["p_value"] == pytest.approx(binomtest(min(mc["a_right_b_wrong"], mc["a_wrong_b_right"]), n, 0.5).pvalue)
    d = doc["difference_b_minus_a"]["accuracy"]
    assert d["value"] == pytest.approx(doc["accuracy_b"] - doc["accuracy_a"]) and d["ci"][0] <= d["value"] <= d["ci"][1]
    assert d["value"] == pytest.approx((mc["a_wrong_b_right"] - mc["a_right_b_wrong"]) / doc["images"])
    assert len(proc.stdout.strip().splitlines()) == 1 and "McNemar exact p =" in proc.stdout
    # the variants in this interpreter (the documented command ran from a shell above)
    same = run_here("-m", "ga", "compare", a, a, "data/split/test", "--out-dir", tmp_path / "same", "--no-progress",
                    cwd=work)
    assert same.stdout.strip().splitlines() == [f"the two models decide all {doc_images(tmp_path / 'same')} images "
                                                f"alike (accuracy {json.load(open(tmp_path / 'same/compare.json'))['accuracy_a']:.4f}): "
                                                "no difference to test"]
    bad = run_here("-m", "ga", "compare", a, tmp_path / "nowhere", "data/split/test", cwd=work, expect=2)
    assert len(error_lines(bad)) == 1 and "nowhere" in error_lines(bad)[0]


def doc_images(folder):
    return json.load(open(os.path.join(folder, "compare.json")))["images"]
