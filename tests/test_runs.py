"""ga.runs in-process: run-folder names, the RUNNING marker, labels.json, history."""

import json
import os
import time

import pytest

from ga import runs
from ga.config import load_config
from ga.errors import ModelError


def test_new_run_dirs_are_never_reused_and_carry_the_marker(tmp_path):
    out = load_config(None, [f"output.root={tmp_path}", "output.name=x"]).output
    a, b = runs.new_run_dir(out), runs.new_run_dir(out)
    assert a != b and os.path.basename(a).endswith("_x") and os.path.isfile(os.path.join(a, runs.RUNNING))
    assert not runs.is_complete(a)


def _finish(run_dir, task="binary", classes=("cex", "pg")):
    extra = ["training.early_stopping.monitor=loss"] if task == "contrastive" else []
    doc = runs.labels_document(load_config(None, [f"model.task={task}", *extra]), list(classes))
    runs.write_labels(run_dir, doc)
    with open(os.path.join(run_dir, "metrics.json"), "w") as fh:
        json.dump({"task": task}, fh)
    runs.mark_complete(run_dir)
    return doc


def test_labels_document_per_task_and_the_newest_classifier_run(tmp_path):
    out = load_config(None, [f"output.root={tmp_path}"]).output
    first = runs.new_run_dir(out)
    doc = _finish(first)
    assert doc["thresholds"] == {"pg": 0.5} and doc["positive_class"] == "pg" and doc["task"] == "binary"
    assert runs.read_labels(first) == doc
    time.sleep(0.02)
    pre = runs.new_run_dir(out)
    _finish(pre, "contrastive", [])
    assert runs.newest_run(str(tmp_path)) == first  # a pretraining run has no classifier
    time.sleep(0.02)
    multi = runs.new_run_dir(out)
    mdoc = _finish(multi, "multiclass", ["a", "b", "c"])
    assert mdoc["thresholds"] == {} and mdoc["positive_class"] is None
    assert runs.newest_run(str(tmp_path)) == multi


@pytest.mark.parametrize("change, message", [
    ({"task": "regression"}, "malformed"),
    ({"classes": ["a", "b", "c"]}, "exactly 2"),
    ({"task": "contrastive"}, "contrastive pretraining run"),
    ({"thresholds": None, "input_size": None, "preprocessing": None, "task": None}, None),
])
def test_labels_json_is_checked(tmp_path, change, message):
    doc = runs.labels_document(load_config(None), ["cex", "pg"])
    doc.update(change)
    if message is None:  # keys missing altogether
        doc = {k: v for k, v in doc.items() if v is not None}
        message = "not a ga labels file"
    with pytest.raises(ModelError, match=message):
        runs.check_labels(doc, "labels.json")


def test_history_is_trimmed_to_the_epochs_before_a_resume(tmp_path):
    path = str(tmp_path / "history.csv")
    with open(path, "w") as fh:
        fh.write("epoch,loss\n0,1.0\n1,0.5\n2,0.4\n")
    runs.trim_history(path, 2)
    assert [r["epoch"] for r in runs.read_history(path)] == ["0", "1"]
    assert runs.read_history(str(tmp_path / "none.csv")) == []


def _runs_csv(root):
    from helpers import read_csv, run_script

    proc = run_script("-m", "ga", "runs", root, "--csv")
    path = os.path.join(root, "..", "runs.csv")
    with open(path, "w") as fh:
        fh.write(proc.stdout)
    return {r["name"]: r for r in read_csv(path)}


def test_ga_runs_lists_finished_running_and_failed_runs(trained_run, separable_split, tmp_path):
    """From a shell: a finished run, a run training now (RUNNING), the same run after Ctrl-C
    and a run whose process was killed (failed); then --diff of two runs."""
    import shutil
    import signal
    import subprocess
    import sys

    from conftest import tiny_config
    from helpers import ROOT, one_error_line, run_script

    root = tmp_path / "runs"
    root.mkdir()
    finished = os.path.basename(trained_run)
    shutil.copytree(trained_run, root / finished)
    cfg = tiny_config(tmp_path / "c.yaml", separable_split, str(root), training={"epochs": 500},
                      output={"name": "long", "onnx": False})
    # Ctrl-C as at a terminal: a shell's background job (`make test &`) ignores SIGINT, and a
    # child inherits that, so the signal would never reach the run
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py"), "--config", cfg],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline, live = time.time() + 300, None
        while time.time() < deadline and proc.poll() is None and live is None:
            live = next((d for d in os.listdir(root) if d.endswith("_long") and os.path.isfile(root / d / "history.csv")
                         and len(open(root / d / "history.csv").read().splitlines()) >= 2), None)
            time.sleep(0.2)
        assert live, "the long run never finished an epoch"
        table = _runs_csv(root)
        assert table[finished]["state"] == "finished" and table[finished]["epoch"] == "5"
        assert float(table[finished]["accuracy"]) >= 0.9 and table[finished]["backbone"] == "cnn4"
        assert table[live]["state"] == "RUNNING" and table[live]["why"] == f"pid {proc.pid}"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 130
    finally:
        proc.kill()
    table = _runs_csv(root)
    assert (table[live]["state"], table[live]["why"]) == ("failed", "interrupted")
    assert int(table[live]["epoch"]) >= 1 and table[live]["accuracy"] == ""

    killed = root / "GA_2026-01-02_03-04-05_killed"
    killed.mkdir()
    shutil.copy(root / live / "config.yaml", killed)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (killed / "RUNNING").write_text(f"started 2026-01-02T03:04:05 pid {gone.stdout.strip()} host {os.uname()[1]}\n")
    table = _runs_csv(root)
    assert table[killed.name]["state"] == "failed" and "is gone" in table[killed.name]["why"]
    assert list(table) == sorted(table, key=lambda n: table[n]["date"])

    diff = run_script("-m", "ga", "runs", root, "--diff", finished, live).stdout
    assert "training.epochs" in diff and "output.name" in diff and "no test figures" in diff
    bad = run_script("-m", "ga", "runs", "--diff", finished, str(tmp_path / "nowhere"), cwd=str(root), expect=2)
    assert "is not a run folder" in one_error_line(bad)


def _finished(folder, config, metrics=None, cv_summary=None):
    os.makedirs(folder)
    with open(os.path.join(folder, "config.yaml"), "w") as fh:
        fh.write(config)
    for name, doc in (("metrics.json", metrics), ("cv_summary.json", cv_summary), ("cv.json", cv_summary and {})):
        if doc is not None:
            json.dump(doc, open(os.path.join(folder, name), "w"))
    return str(folder)


def test_diff_gives_b_minus_a_and_a_cv_folder_shows_its_mean(tmp_path, capsys):
    """`ga runs --diff A B`: the config keys that differ and each test figure of both with B - A;
    a cross-validation folder's row holds the mean over its folds (docs/review.md, "Runs")."""
    from ga.cli import main

    a = _finished(tmp_path / "GA_2026-12-01_10-00-00", "training:\n  epochs: 3\n  seed: 1\n",
                  {"accuracy": 0.8, "balanced_accuracy": 0.75, "macro_avg": {"f1": 0.7}, "roc_auc": 0.9,
                   "per_class": {"cex": {"f1": 0.6}, "pg": {"f1": 0.8}}})
    b = _finished(tmp_path / "GA_2026-12-02_10-00-00", "training:\n  epochs: 5\n  seed: 1\n",
                  {"accuracy": 0.85, "balanced_accuracy": 0.8, "macro_avg": {"f1": 0.65}, "roc_auc": 0.95,
                   "per_class": {"cex": {"f1": 0.5}, "pg": {"f1": 0.8}}})
    d = runs.diff_runs(a, b)
    assert d["config"] == {"training.epochs": (3, 5)}
    want = {"accuracy": 0.05, "balanced_accuracy": 0.05, "macro_f1": -0.05, "roc_auc": 0.05, "f1_cex": -0.1,
            "f1_pg": 0.0}
    assert set(d["metrics"]) == set(want)
    for k, delta in want.items():
        assert d["metrics"][k][2] == pytest.approx(delta) and d["metrics"][k][2] == pytest.approx(
            d["metrics"][k][1] - d["metrics"][k][0]), k
    assert main(["runs", "--diff", os.path.basename(a), os.path.basename(b), str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "training.epochs" in printed and "-0.1" in printed and "0.05" in printed
    cv = _finished(tmp_path / "GA_2026-12-03_10-00-00_cv", "training:\n  epochs: 3\n",
                   cv_summary={"k": 3, "test_figures": {"accuracy": {"mean": 0.9, "sd": 0.02},
                                                        "macro_f1": {"mean": 0.88, "sd": 0.03}}})
    row = next(r for r in runs.list_runs(str(tmp_path)) if r["path"] == cv)
    assert (row["accuracy"], row["macro_f1"], row["epoch"], row["state"]) == (0.9, 0.88, "3 folds", "finished")


def test_a_run_whose_metrics_have_an_odd_shape_is_listed_as_unreadable(tmp_path, capsys):
    from ga.cli import main

    good = _finished(tmp_path / "GA_2026-12-01_10-00-00", "model:\n  backbone: cnn4\n", {"accuracy": 0.8})
    _finished(tmp_path / "GA_2026-12-02_10-00-00", "model:\n  backbone: cnn4\n",
              {"accuracy": 0.9, "per_class": ["not", "a", "mapping"], "macro_avg": "x"})
    assert main(["runs", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    odd = next(line for line in lines if "GA_2026-12-02" in line)
    assert "unreadable" in odd and "unexpected types" in odd
    assert any(os.path.basename(good) in line and "finished" in line and "0.8" in line for line in lines)
