"""Experiment tracking in MLflow (optional: `pip install "ga-crystals[mlflow]"`, mlflow-skinny).

With `output.mlflow: <tracking uri>` (a local `file:///path/mlruns` store needs no server;
`http://host:5000` a tracking server; `sqlite:///mlflow.db` needs the full `mlflow`
package), a finished run is logged to the experiment
`output.mlflow_experiment` as one MLflow run named like the run folder:

- parameters: the resolved configuration, flattened (`training.learning_rate`);
- metrics: every history.csv column per epoch (step = the epoch, 0-based as in the file),
  and the test figures of metrics.json under `test/` (accuracy, balanced accuracy, macro F1,
  ROC AUC, each class's F1);
- artifacts: every file of the run folder, with mlflow.json (the tracking URI, experiment
  and run id) written into it first.

The run folder is complete before anything is logged: a tracking server that cannot be
reached is a warning, and the run stays finished. A config that asks for MLflow without the
package stops before training, with one line naming the extra.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

from ga import runs
from ga.config import Config
from ga.errors import ConfigError, one_line
from ga.files import atomic_write_json

log = logging.getLogger(__name__)

EXTRA = 'pip install "ga-crystals[mlflow]"'


def check_available(cfg: Config) -> None:
    """A ConfigError when `output.mlflow` is set and MLflow is not installed."""
    if not cfg.output.mlflow:
        return
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ConfigError(f"output.mlflow needs MLflow, which is not installed: {EXTRA}") from None


def log_run(cfg: Config, run_dir: str) -> str | None:
    """Log a finished run folder to MLflow (module docstring). Returns the MLflow run id, or
    None when logging failed (a warning says why)."""
    if not cfg.output.mlflow:
        return None
    try:
        return _log(cfg, run_dir)
    except Exception as exc:  # the tracking client raises its own types (MlflowException, HTTP, OS errors)
        log.warning("the run was not logged to MLflow at %s: %s", cfg.output.mlflow, one_line(exc))
        return None


def _log(cfg, run_dir):
    import yaml
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    if cfg.output.mlflow.startswith("file:") or "://" not in cfg.output.mlflow:
        # A folder store asked for by name: MLflow 3 keeps it working only on this opt-in
        # (it calls the store "maintenance mode"; sqlite:// needs the full mlflow package).
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=cfg.output.mlflow)
    name = cfg.output.mlflow_experiment
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name)
    folder = os.path.basename(os.path.normpath(run_dir))
    run = client.create_run(exp_id, run_name=folder, tags={"ga.run_folder": os.path.abspath(run_dir)})
    run_id = run.info.run_id
    with open(os.path.join(run_dir, "config.yaml"), encoding="utf-8") as fh:
        flat = runs.flat_config(yaml.safe_load(fh) or {})
    params = [Param(k, str(v)[:6000]) for k, v in flat.items()]
    now = int(time.time() * 1000)
    metrics = history_metrics(os.path.join(run_dir, "history.csv"), now)
    figures = runs.test_figures(_read_metrics(run_dir))
    metrics += [Metric(f"test/{k}", float(v), now, 0) for k, v in figures.items() if _finite(v)]
    for start in range(0, len(params), 100):
        client.log_batch(run_id, params=params[start:start + 100])
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start:start + 1000])
    atomic_write_json(os.path.join(run_dir, "mlflow.json"),
                      {"tracking_uri": cfg.output.mlflow, "experiment": name, "experiment_id": exp_id,
                       "run_id": run_id})
    client.log_artifacts(run_id, run_dir)
    client.set_terminated(run_id, "FINISHED")
    log.info("logged to MLflow: experiment %r, run %s (%s)", name, run_id, cfg.output.mlflow)
    return run_id


def history_metrics(path: str, timestamp: int) -> list[Any]:
    """mlflow Metric objects of every numeric history.csv column, one per epoch (step =
    the epoch column)."""
    from mlflow.entities import Metric

    out = []
    for row in runs.read_history(path):
        step = int(float(row.get("epoch", 0)))
        for key, value in row.items():
            if key == "epoch":
                continue
            try:
                v = float(value)
            except (TypeError, ValueError):
                continue
            if _finite(v):
                out.append(Metric(key, v, timestamp, step))
    return out


def _finite(v):
    return isinstance(v, (int, float)) and math.isfinite(v)


def _read_metrics(run_dir):
    import json

    try:
        with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}
