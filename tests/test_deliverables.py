"""Deliverables: every file, figures, report/metrics agreement, class names, exported
models that reproduce the trained model's predictions, atomic writes."""

import errno
import json
import os
import re

import keras
import numpy as np
import onnx
import pytest
from PIL import Image

from helpers import read_csv
import ga  # noqa: F401  (registers the project's layers for load_model)
from ga import export, files as ga_io
from ga.data import load_image
from ga.errors import WriteError
from ga.export import onnx_session
from ga.model import batch_predictor

FILES = ["GAweights.h5", "GAmodel.keras", "GAweights.onnx", "labels.json", "GAFinalTestResults.txt", "metrics.json",
         "GAmetrics_plot.png", "GAfinal_confusion_matrix.png", "GAfinal_roc_auc.png", "config.yaml", "history.csv",
         "train.log", "run.json", "model_card.md", "predictions.csv", "GAtrain_batch.png"]


def test_every_deliverable_exists(trained_run):
    for name in FILES:
        path = os.path.join(trained_run, name)
        assert os.path.isfile(path) and os.path.getsize(path) > 0, name
    assert not os.path.exists(os.path.join(trained_run, "RUNNING"))
    assert not [f for f in os.listdir(trained_run) if ".tmp" in f]  # no temporary leftovers
    for name in FILES:
        if name.endswith(".png"):
            with Image.open(os.path.join(trained_run, name)) as im:
                im.verify()
            with Image.open(os.path.join(trained_run, name)) as im:
                assert im.width >= 500 and im.height >= 300, (name, im.size)


def _report_rows(text):
    rows = {}
    for line in text.splitlines():
        m = re.match(r"\s*(\w+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s*$", line)
        if m:
            rows[m.group(1)] = tuple(float(v) for v in m.groups()[1:])
    return rows


def test_metrics_json_agrees_with_the_report_and_names_classes_right(trained_run):
    m = json.load(open(os.path.join(trained_run, "metrics.json")))
    text = open(os.path.join(trained_run, "GAFinalTestResults.txt")).read()
    rows = _report_rows(text)
    for c in ("cex", "pg"):
        p, r, f1, support = rows[c]
        v = m["per_class"][c]
        assert (p, r, f1) == pytest.approx((v["precision"], v["recall"], v["f1"]), abs=5e-5)
        assert support == v["support"]
    # The test split holds 12 cex and 6 pg: a swapped name would show here.
    assert m["per_class"]["cex"]["support"] == 12 and m["per_class"]["pg"]["support"] == 6
    cm = np.array(m["confusion_matrix"])
    assert cm.sum(axis=1).tolist() == [12, 6]
    assert m["accuracy"] >= 0.9  # trivially separable: the names must also match the predictions
    assert f"accuracy: {m['accuracy']:.4f}" in text and f"ROC AUC (pg): {m['roc_auc']:.4f}" in text
    assert re.search(r"true cex\s+%d\s+%d" % tuple(cm[0]), text)
    assert m["onnx"]["max_abs_diff"] <= 1e-4 and m["onnx"]["opset"] == 17


def test_predictions_name_each_image_by_its_folder(trained_run):
    rows = read_csv(os.path.join(trained_run, "predictions.csv"))
    assert len(rows) == 18
    right = sum(r["predicted"] == os.path.basename(os.path.dirname(r["path"])) for r in rows)
    assert all(r["true"] == os.path.basename(os.path.dirname(r["path"])) for r in rows)
    assert right >= 16


def test_exported_models_reproduce_the_trained_predictions(trained_run):
    rows = read_csv(os.path.join(trained_run, "predictions.csv"))
    images = np.stack([load_image(r["path"], (32, 32)).numpy() for r in rows]).astype("float32")
    want = np.array([float(r["p_pg"]) for r in rows], np.float32)
    for name in ("GAmodel.keras", "GAweights.h5"):
        model = keras.models.load_model(os.path.join(trained_run, name), compile=False, safe_mode=True)
        got = batch_predictor(model)(images)[:, 0]
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=name)
    sess = onnx_session(os.path.join(trained_run, "GAweights.onnx"))
    assert [i.name for i in sess.get_inputs()] == ["image"]
    assert [o.name for o in sess.get_outputs()] == ["probabilities"]
    got = sess.run(None, {"image": images})[0][:, 0]
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_onnx_describes_itself(trained_run):
    model = onnx.load(os.path.join(trained_run, "GAweights.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    labels = json.load(open(os.path.join(trained_run, "labels.json")))
    assert json.loads(meta["ga_labels"]) == labels
    assert json.loads(meta["classes"]) == ["cex", "pg"] and meta["preprocessing"] == "scale_01"


def test_parity_failure_fails_the_run_loudly(tmp_path, separable_split, monkeypatch):
    from conftest import tiny_config
    from ga.trainer import train

    monkeypatch.setattr(export, "parity", lambda *a, **k: 0.5)
    cfg = tiny_config(tmp_path / "c.yaml", separable_split, str(tmp_path / "runs"), training={"epochs": 1})
    with pytest.raises(export.ExportError, match=r"GAweights.onnx: ONNX output differs from Keras by 0.5"):
        train(cfg)
    (run_dir,) = [os.path.join(tmp_path / "runs", d) for d in os.listdir(tmp_path / "runs")]
    assert os.path.exists(os.path.join(run_dir, "RUNNING"))  # not complete, never "newest run"


def test_failed_write_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    real_replace = os.replace

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ga_io.os, "replace", full_disk)
    with pytest.raises(WriteError, match=r"could not write .*metrics.json: No space left on device"):
        ga_io.atomic_write_json(str(target), {"a": 1})
    monkeypatch.setattr(ga_io.os, "replace", real_replace)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_disk_full_during_deliverables_names_the_file(tmp_path, separable_split, monkeypatch):
    from conftest import tiny_config
    from ga.trainer import train

    real_replace = os.replace

    def full_disk_for_metrics(src, dst):
        if os.path.basename(dst) == "metrics.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(ga_io.os, "replace", full_disk_for_metrics)
    cfg = tiny_config(tmp_path / "c.yaml", separable_split, str(tmp_path / "runs"), training={"epochs": 1},
                      output={"onnx": False})
    with pytest.raises(WriteError, match=r"could not write .*metrics.json: No space left on device"):
        train(cfg)
    (run_dir,) = [os.path.join(tmp_path / "runs", d) for d in os.listdir(tmp_path / "runs")]
    names = os.listdir(run_dir)
    assert "metrics.json" not in names and not [n for n in names if ".tmp" in n]
    assert "RUNNING" in names  # the run stays marked incomplete


def test_onnx_optimizer_copies_collect_once_their_bytes_reach_the_budget(monkeypatch):
    """tf2onnx's per-pass graph copies: a full collection once the copies since the last one
    hold the budget's bytes (so a 1 MB model never pays for one), and the module restored."""
    import gc

    import tf2onnx.optimizer as passes

    collections = []
    monkeypatch.setattr(gc, "collect", lambda *a: collections.append(len(copies)))
    copies = []
    original = passes.copy
    with export._collected_between_optimizer_passes(graph_bytes=100, budget=250):
        for i in range(7):
            copies.append(passes.copy.deepcopy({"pass": i}))
    assert passes.copy is original and copies[-1] == {"pass": 6} and copies[-1] is not copies[0]
    assert collections == [2, 5]  # before the 3rd copy (300 bytes) and the 6th
    with export._collected_between_optimizer_passes(graph_bytes=2**20):
        for i in range(40):
            passes.copy.deepcopy({"pass": i})
    assert collections == [2, 5]


def test_int8_file_is_the_same_at_any_calibration_batch(tmp_path, trained_run):
    """The calibrator keeps each tensor's minimum and maximum per batch, so the batch size
    (which sets its memory) leaves the INT8 file unchanged."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (9, 32, 32, 3)).astype(np.float32)
    made = {}
    for batch in (1, 4, 9):
        out = str(tmp_path / f"int8_{batch}.onnx")
        export.quantize_int8(os.path.join(trained_run, "GAweights.onnx"), out, images, batch=batch)
        made[batch] = open(out, "rb").read()
    assert made[1] == made[4] == made[9]
    assert onnx.load_from_string(made[4]).metadata_props  # ga_labels carried over
