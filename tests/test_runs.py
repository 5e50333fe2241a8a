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
