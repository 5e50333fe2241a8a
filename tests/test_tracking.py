"""MLflow tracking (output.mlflow): a run logged to a local file store and read back; a
config that asks for MLflow without the package stops with one line."""

import json
import os
import sys

import pytest

from conftest import tiny_config
from helpers import one_error_line, read_csv, run_here, run_script


def test_a_run_logged_to_a_file_store_equals_its_folder(separable_split, tmp_path):
    pytest.importorskip("mlflow")  # here, not for the module: the test below needs it absent
    from mlflow.tracking import MlflowClient

    store = f"file://{tmp_path / 'mlruns'}"
    cfg = tiny_config(tmp_path / "c.yaml", separable_split, str(tmp_path / "runs"), training={"epochs": 3},
                      output={"onnx": False})
    run_dir = run_script("main.py", "--config", cfg, "--set", f"output.mlflow={store}", "--set",
                         "output.mlflow_experiment=crystals").stdout.strip().splitlines()[-1]
    doc = json.load(open(os.path.join(run_dir, "mlflow.json")))
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=store)
    run = client.get_run(doc["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == os.path.basename(run_dir)
    assert client.get_experiment(run.info.experiment_id).name == "crystals"
    assert run.data.params["training.epochs"] == "3" and run.data.params["model.backbone"] == "cnn4"
    history = read_csv(os.path.join(run_dir, "history.csv"))
    assert len(history) == 3
    columns = [c for c in history[0] if c != "epoch" and history[0][c] not in ("", "nan")]
    assert {"loss", "val_loss"} <= set(columns)
    for column in columns:
        logged = sorted((m.step, m.value) for m in client.get_metric_history(doc["run_id"], column))
        assert [s for s, _ in logged] == [int(r["epoch"]) for r in history], column
        assert [v for _, v in logged] == pytest.approx([float(r[column]) for r in history], rel=1e-6), column
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert run.data.metrics["test/accuracy"] == pytest.approx(metrics["accuracy"])
    artifacts = {a.path for a in client.list_artifacts(doc["run_id"])}
    assert {"labels.json", "metrics.json", "history.csv", "GAmodel.keras", "config.yaml", "mlflow.json"} <= artifacts


def test_mlflow_asked_for_without_the_package_is_one_line(separable_split, tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path / "c.yaml", separable_split, str(tmp_path / "runs"))
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` fails as if not installed
    proc = run_here("main.py", "--config", cfg, "--set", f"output.mlflow=file://{tmp_path}/mlruns", expect=2)
    line = one_error_line(proc)
    assert "output.mlflow needs MLflow" in line and 'pip install "ga-crystals[mlflow]"' in line
    assert not os.path.exists(tmp_path / "runs") or not os.listdir(tmp_path / "runs")
