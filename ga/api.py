"""The Python API: what the commands do, as functions that take values and return objects.

    >>> import ga
    >>> ga.split("data/archive/cropped/cropped", "data/split")            # doctest: +SKIP
    >>> run = ga.train("demo", training={"epochs": 3})                     # doctest: +SKIP
    >>> run.metrics["accuracy"]                                            # doctest: +SKIP
    >>> rows = ga.load(run).predict("data/split/test", recursive=True)    # doctest: +SKIP
    >>> rows[0]["predicted"], rows.to_frame()                              # doctest: +SKIP
    >>> ga.evaluate("data/split/test", run)["accuracy_ci"]                 # doctest: +SKIP
    >>> ga.compare(run_a, run_b, "data/split/test")["mcnemar"]             # doctest: +SKIP
    >>> ga.monitor("data/process", run, alerts=["pg_fraction > 0.1"])      # doctest: +SKIP

Errors are `ga.errors.GAError` subclasses whose message names the argument to fix. Nothing
here imports TensorFlow until a model is built or loaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

if TYPE_CHECKING:
    from ga.config import Config, MonitorConfig
    from ga.monitoring.loop import MonitorResult
    from ga.loading import LoadedModel
    from ga.predict import Prediction
    from ga.splitting import SplitResult

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Run:
    """A finished run folder (`deliverables/<prefix>_<time>[_<name>]/`): its files, read on demand.

    A Run is a path (`os.fspath(run)`), so it goes wherever a run folder does. `ga.train`
    returns one; `Run(path)` wraps an existing folder.

    Args:
        path: the run folder.

    Examples:
        >>> run = ga.Run("deliverables/GA_2026-12-01_10-00-00")            # doctest: +SKIP
        >>> run.labels["classes"], run.metrics["accuracy"], len(run.history)  # doctest: +SKIP
        (['cex', 'pg'], 0.9975, 12)
    """

    path: str

    def __fspath__(self) -> str:
        return self.path

    def __str__(self) -> str:
        return self.path

    def _json(self, name: str) -> dict:
        with open(os.path.join(self.path, name), encoding="utf-8") as fh:
            return json.load(fh)

    @property
    def labels(self) -> dict:
        """labels.json: task, classes, thresholds, input size."""
        return self._json("labels.json")

    @property
    def metrics(self) -> dict:
        """metrics.json: the test figures, the delivered epoch and why, export checks."""
        return self._json("metrics.json")

    @property
    def config(self) -> "Config":
        """The resolved configuration the run trained with (config.yaml)."""
        from ga.config import load_config

        return load_config(os.path.join(self.path, "config.yaml"))

    @property
    def history(self) -> list[dict]:
        """history.csv's rows (one per epoch) as dicts of strings."""
        from ga.runs import read_history

        return read_history(os.path.join(self.path, "history.csv"))

    def load(self, engine: Optional[str] = None) -> "Predictor":
        """This run's model, ready to predict (see `ga.load`, which raises the same errors).

        Args:
            engine: as `ga.load`'s (None: the best for this CPU).

        Returns:
            A Predictor.
        """
        return load(self.path, engine=engine)


class Predictions(list):
    """Rows of predictions, one dict per image: `path`, `predicted` (';'-joined for
    multi-label), `p_<class>` for each class and `error` ("" when the image was used).
    `Predictor.predict` returns them; `prediction` keeps the arrays behind the rows.

    Args:
        rows: the row dicts.
        prediction: the `ga.predict.Prediction` they were made from (probabilities,
            thresholds, the model's provenance).

    Examples:
        >>> rows = ga.load().predict("data/split/test", recursive=True)   # doctest: +SKIP
        >>> rows.errors, rows.to_frame().groupby("predicted").size()     # doctest: +SKIP
    """

    def __init__(self, rows: Iterable[dict], prediction: "Prediction"):
        super().__init__(rows)
        self.prediction = prediction  # ga.predict.Prediction: probabilities, thresholds, model provenance

    @property
    def errors(self) -> list[dict]:
        """The rows of inputs that could not be used."""
        return [r for r in self if r["error"]]

    def to_frame(self) -> Any:
        """The rows as a pandas DataFrame.

        Raises:
            GAError: pandas is not installed.
        """
        try:
            import pandas as pd
        except ImportError:
            from ga.errors import GAError

            raise GAError("to_frame() needs pandas (pip install pandas); the rows are plain dicts") from None
        return pd.DataFrame(list(self))


class Predictor:
    """A loaded model (ONNX Runtime, OpenVINO or Keras) with its labels.json: what `ga.load`
    returns. `labels`, `classes`, `task`, `engine` and `source` (the file it came from)
    describe it; `predict` labels images.

    Args:
        loaded: the `ga.loading.LoadedModel` to wrap.

    Examples:
        >>> model = ga.load("deliverables/GA_2026-12-01_10-00-00", engine="onnx")   # doctest: +SKIP
        >>> model.classes, model.engine                                            # doctest: +SKIP
        (['cex', 'pg'], 'onnx')
    """

    def __init__(self, loaded: "LoadedModel"):
        self.model = loaded

    def __repr__(self) -> str:
        return f"Predictor({self.source!r}, task={self.task!r}, classes={self.classes}, engine={self.engine!r})"

    @property
    def labels(self) -> dict:
        return self.model.labels

    @property
    def classes(self) -> list[str]:
        return list(self.model.labels["classes"])

    @property
    def task(self) -> str:
        return self.model.labels["task"]

    @property
    def engine(self) -> str:
        return self.model.engine

    @property
    def source(self) -> str:
        return self.model.source

    def predict(self, inputs: Union[PathLike, np.ndarray, Sequence[Union[PathLike, np.ndarray]]], *,
                recursive: bool = False, batch_size: int = 64, threshold: Optional[float] = None,
                progress: bool = False) -> Predictions:
        """Predict image files, folders or arrays, in batches.

        Args:
            inputs: a file or folder path, a list of them, one image array (h, w[, c]), a
                batch (n, h, w, c), or a list of arrays. Arrays hold 0-255 values, RGB or grey.
            recursive: read subfolders of folders too.
            batch_size: images per prediction call.
            threshold: a decision threshold for every class instead of labels.json's.
            progress: a progress bar on stderr.

        Returns:
            Predictions (a list of row dicts; `.to_frame()` for pandas). A file that cannot be
            read is a row with its `error`, never dropped.

        Raises:
            GAError: a path that does not exist, or an array that is not an image.

        Examples:
            >>> model.predict("data/split/test", recursive=True)[0]["predicted"]   # doctest: +SKIP
            'pg'
            >>> model.predict(np.zeros((96, 96, 3), np.uint8))[0]["p_pg"]          # doctest: +SKIP
        """
        from ga.inputs import input_files
        from ga.predict import predict_arrays, predict_files, rows

        if isinstance(inputs, np.ndarray):  # one image, or a batch (n, h, w, c)
            pred = predict_arrays(self.model, list(inputs) if inputs.ndim == 4 else [inputs], batch_size, threshold)
        elif _arrays(inputs):
            pred = predict_arrays(self.model, list(inputs), batch_size, threshold)
        else:
            paths = [os.fspath(p) for p in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]
            pred = predict_files(self.model, input_files(paths, recursive), batch_size, threshold=threshold,
                                 progress=progress)
        return Predictions(rows(pred), pred)


def _arrays(inputs: Any) -> bool:
    """Whether `inputs` is a list of image arrays (or PIL images) rather than of paths."""
    if isinstance(inputs, (str, os.PathLike)):
        return False
    items = list(inputs) if isinstance(inputs, (list, tuple)) else []
    return bool(items) and not isinstance(items[0], (str, os.PathLike))


def train(config: Union[PathLike, "Config", None] = "demo", *, resume: Optional[PathLike] = None, device: str = "auto",
          sets: Sequence[str] = (), **overrides: dict) -> Optional[Run]:
    """Train a model and write its run folder (what `ga train` / main.py do).

    Args:
        config: a YAML file, the name of a shipped config ("demo", "resnet101", ...), or a
            `ga.config.Config`.
        resume: an interrupted run folder to continue instead (its own config.yaml is used).
        device: "auto", or "cpu" to hide every GPU.
        sets: single values to change, as `ga train --set` takes them: "training.epochs=3".
        **overrides: sections of the configuration to change, as mappings:
            `training={"epochs": 3}`, `data={"image_size": [64, 64], "augment": {"enabled": False}}`.

    Returns:
        The finished Run (None on a non-chief worker of a multi-worker run).

    Raises:
        ConfigError: an unknown key (the closest one named), a wrong type or a value out of range.
        DataError: the split's folders are missing or hold no images.
        TrainingError: the loss became NaN or no model could be delivered.
        ExportError: the exported ONNX or SavedModel does not reproduce the Keras model.

    Examples:
        >>> run = ga.train("demo", training={"epochs": 2})   # doctest: +SKIP
        >>> run.metrics["accuracy"]                          # doctest: +SKIP
    """
    from ga.config import section_overrides
    from ga.trainer import train as train_run

    changes = [*section_overrides(overrides), *sets]
    _register()
    if resume is not None:
        out = train_run(None, resume=os.fspath(resume), overrides=changes, device=device)
    else:
        out = train_run(_config(config, changes), device=device)
    return Run(out) if out is not None else None


def _config(config: Union[PathLike, "Config", None], changes: Sequence[str]) -> "Config":
    """The resolved configuration: a file or shipped name (None: the defaults), or a Config,
    with `changes` ("key=value") applied: the one place the front end resolves one."""
    from ga.config import Config, load_config

    if not isinstance(config, Config):
        return load_config(None if config is None else os.fspath(config), changes)
    return load_config(None, changes, data=config.to_dict()) if changes else config


def _register() -> None:
    import ga

    ga.register()


def cross_validate(config: Union[PathLike, "Config", None] = "demo", *, resume: Optional[PathLike] = None,
                   device: str = "auto", sets: Sequence[str] = (), **overrides: dict) -> Optional[str]:
    """Train one run per cross-validation fold of the split (made with `ga.split(...,
    folds=K)`) and write the summary across folds (what `main.py --cv` does).

    Args:
        config: as `train`'s: a YAML file, a shipped config's name or a Config.
        resume: an interrupted cross-validation folder to continue (finished folds are kept).
        device: "auto", or "cpu" to hide every GPU.
        sets: single values to change: "training.epochs=3".
        **overrides: sections to change, as mappings (`training={"epochs": 3}`).

    Raises:
        ConfigError: as `train`'s, or a split made without folds.
        DataError: as `train`'s.
        TrainingError: as `train`'s, for any fold.

    Returns:
        The cross-validation folder (cv.json, cv_summary.json, cv_folds.csv, cv_summary.png,
        oof/ and one run folder per fold); None on a non-chief worker of a multi-worker run.

    Examples:
        >>> cv = ga.cross_validate("demo", training={"epochs": 2})                # doctest: +SKIP
        >>> json.load(open(f"{cv}/cv_summary.json"))["test_figures"]["accuracy"]  # doctest: +SKIP
    """
    from ga.config import section_overrides
    from ga.crossval import cross_validate as run_cv

    changes = [*section_overrides(overrides), *sets]
    _register()
    if resume is not None:
        return run_cv(None, resume=os.fspath(resume), overrides=changes, device=device)
    return run_cv(_config(config, changes), device=device)


def find_learning_rate(config: Union[PathLike, "Config", None] = "demo", *, sets: Sequence[str] = (),
                       steps: int = 100, low: float = 1e-7, high: float = 10.0, device: str = "auto",
                       progress: bool = False, **overrides: dict) -> Any:
    """The learning-rate range test (what `ga train --lr-find` does): the rate rises
    exponentially over `steps` batches of the config's data and model until the loss
    diverges; lr_find.png and lr_find.csv are written to a `<prefix>_<time>_lr_find` folder.

    Args:
        config: as `train`'s.
        sets: single values to change: "data.batch_size=32".
        steps: batches to take (at least 5).
        low: the first learning rate (above 0).
        high: the last learning rate.
        device: "auto", or "cpu" to hide every GPU.
        progress: a progress bar on stderr.
        **overrides: sections to change, as mappings.

    Raises:
        ConfigError: fewer than 5 steps, a range not rising from above 0, a contrastive or
            multi-worker config.
        TrainingError: the loss was NaN from the first step.

    Returns:
        ga.lrfind.RangeTest: `rates`, `losses`, `suggested`, `minimum`, `steepest`, `folder`.

    Examples:
        >>> ga.find_learning_rate("demo", steps=50).suggested   # doctest: +SKIP
    """
    from ga.config import section_overrides
    from ga.lrfind import find_learning_rate as range_test

    return range_test(_config(config, [*section_overrides(overrides), *sets]), steps=steps, low=low, high=high,
                      progress=progress, device=device)


def compare(a: Union[PathLike, Run, "Predictor"], b: Union[PathLike, Run, "Predictor"], folder: PathLike, *,
            out_dir: PathLike = "inference_out", batch_size: int = 64, progress: bool = False) -> dict:
    """Compare two models on the same labelled folder (what `ga compare A B FOLDER` does):
    the paired differences B - A in accuracy and macro F1 with bootstrap intervals,
    McNemar's exact test, and the images decided differently (compare.json, compare.csv).

    Args:
        a: the first model (run folder, Run, model file or Predictor).
        b: the second, whose differences from `a` are reported.
        folder: a labelled folder (class subfolders or a labels.csv).
        out_dir: where compare.json and compare.csv go.
        batch_size: images per prediction call.
        progress: a progress bar on stderr.

    Returns:
        The compare.json document.

    Raises:
        GAError: the models decide different things (task or classes), or the folder holds
            no readable images.

    Examples:
        >>> out = ga.compare("deliverables/A", "deliverables/B", "data/split/test")   # doctest: +SKIP
        >>> out["mcnemar"]["p"]                                                       # doctest: +SKIP
    """
    from ga.comparison import compare_models

    ma, mb = (m.model if isinstance(m, Predictor) else load(m).model for m in (a, b))
    return compare_models(ma, mb, os.fspath(folder), os.fspath(out_dir), batch_size=batch_size, progress=progress)


def review(folder: PathLike, model: Optional[Union[PathLike, Run, "Predictor"]] = None, *,
           out_dir: PathLike = "review", top: int = 48, gradcam: int = 16, min_confidence: float = 0.9,
           progress: bool = False) -> list[dict]:
    """Review the labels of a labelled folder or split folder (what `ga review` does): every
    image ranked by its loss under its label, likely mislabels and copies across classes
    flagged; review.csv, review.html and labels.csv (the suggestions applied) in `out_dir`.

    Args:
        folder: a labelled folder (class subfolders or labels.csv) or a split folder.
        model: a run folder, Run, model file or Predictor; None: the newest run.
        out_dir: where the review goes.
        top: images shown on review.html.
        gradcam: Grad-CAM panels for the top images (Keras models only; 0: none).
        min_confidence: a disagreement is a likely mislabel when the model names its class
            with at least this probability.
        progress: a progress bar on stderr.

    Raises:
        GAError: not a folder, no images in it, or `min_confidence` outside (0, 1].
        ModelError: the model cannot be loaded.

    Returns:
        review.csv's rows, highest loss first (dicts: rank, path, label, predicted, loss,
        flags, suggested_label, ...).

    Examples:
        >>> rows = ga.review("data/split/test", "deliverables/GA_2026-12-01_10-00-00")  # doctest: +SKIP
        >>> [r["path"] for r in rows if "mislabel" in r["flags"]][:1]                # doctest: +SKIP
        ['data/split/test/pg/0042.png']
    """
    from ga.curation import review_folder

    loaded = model.model if isinstance(model, Predictor) else load(model).model
    return review_folder(loaded, os.fspath(folder), os.fspath(out_dir), top=top, gradcam=gradcam,
                         min_confidence=min_confidence, progress=progress).rows


def load(model: Optional[Union[PathLike, Run]] = None, *, engine: Optional[str] = None,
         runs_root: PathLike = "deliverables", threads: int = 0, unsafe: bool = False) -> Predictor:
    """Load a trained model for prediction (what `ga infer --model` loads).

    Args:
        model: a run folder (or Run), an .onnx, .keras or .h5 file (labels.json beside it),
            or None for the newest complete run under `runs_root`.
        engine: "onnx" (float32), "onnx-int8", "openvino", "openvino-int8" (the same files
            through OpenVINO, the `openvino` extra) or "keras"; default: OpenVINO on a CPU with
            AMX when installed and checked by the run, else the run's INT8 model on a CPU with
            INT8 units (VNNI, AMX), else the float32 ONNX when there is one.
        threads: ONNX Runtime or OpenVINO threads (0: all cores).
        runs_root: where to look for the newest run when `model` is None.
        unsafe: allow Keras files that hold code (Lambda layers); only for files you trust.

    Returns:
        A Predictor.

    Raises:
        ModelError: no such file or run, no complete run under `runs_root`, a file without
            its labels.json, or an engine the model or this machine cannot use.

    Examples:
        >>> model = ga.load("deliverables/GA_2026-12-01_10-00-00")   # doctest: +SKIP
        >>> model.predict(["a.png", "b.png"])[0]["predicted"]        # doctest: +SKIP
        'pg'
    """
    from ga.loading import load_model

    _register()  # Keras quietly first: loading (ONNX too) imports TensorFlow for the model's resize
    target = None if model is None else os.fspath(model)
    return Predictor(load_model(target, engine, os.fspath(runs_root), threads, unsafe))


def evaluate(folder: PathLike, model: Optional[Union[PathLike, Run, Predictor]] = None, *,
             out_dir: PathLike = "inference_out", threshold: Optional[float] = None, batch_size: int = 64,
             progress: bool = False) -> dict:
    """Evaluate a model on a labelled folder (class folders or a labels.csv) and write the
    reports a run writes for its test split into `out_dir` (what `ga evaluate` does).

    Args:
        folder: class subfolders, or images with a labels.csv.
        model: a run folder, Run, model file or Predictor; None: the newest run.
        out_dir: where the reports go (GAFinalTestResults.txt, metrics.json, figures).
        threshold: a decision threshold for every class instead of labels.json's.
        batch_size: images per prediction call.
        progress: a progress bar on stderr.

    Returns:
        The metrics dict (as metrics.json): accuracy, per-class precision/recall/F1, AUC, each
        with its confidence interval (`accuracy_ci`, ...).

    Raises:
        GAError: the folder is missing, unlabelled, names classes the model lacks, or holds no
            readable image.
        ModelError: the model cannot be loaded.

    Examples:
        >>> metrics = ga.evaluate("data/split/test", "deliverables/GA_2026-12-01_10-00-00")  # doctest: +SKIP
        >>> metrics["accuracy"], metrics["accuracy_ci"]                                       # doctest: +SKIP
    """
    from ga.evaluation import evaluate_folder, run_prefix

    predictor = model if isinstance(model, Predictor) else load(model)
    metrics, _ = evaluate_folder(predictor.model, os.fspath(folder), os.fspath(out_dir),
                                 run_prefix(predictor.source), threshold, batch_size=batch_size,
                                 progress=progress)
    return metrics


def split(source: Optional[PathLike] = None, dest: Optional[PathLike] = None, *,
          ratios: Optional[Sequence[float]] = None, seed: Optional[int] = None, mode: Optional[str] = None,
          order: Optional[str] = None, tolerance: Optional[int] = None, dry_run: bool = False,
          overwrite: bool = False, class_names: Optional[Sequence[str]] = None, folds: Optional[int] = None,
          progress: bool = False, config: Optional[PathLike] = None, sets: Sequence[str] = ()) -> "SplitResult":
    """Split a labelled folder into dest/{train,valid,test} and dest/manifest.csv, never
    touching the source (what `ga split` does). Rotated/flipped copies of one crop share a
    split. Every argument left as None takes the configuration's value (`config`, a file or
    shipped name, with `sets` such as "split.seed=7" applied; the defaults: `split.*`,
    `data.split_root`, `data.class_names`).

    Args:
        source: class folders, images with a labels.csv, or the graphene study's dataset folder.
        dest: the split's root.
        ratios: train, valid, test fractions (sum 1).
        mode: "copy", "link" or "move".
        order: "random" (seeded) or "sorted" (the original study's sequential cut).
        seed: the shuffle seed; the same seed and source give the same split anywhere.
        tolerance: Hamming distance (of 64 bits) up to which two images count as copies.
        dry_run: count and report, write nothing.
        overwrite: replace a destination that holds another split.
        class_names: names of class folders named 0, 1, ... (the study's layout).
        folds: also deal train and valid into this many cross-validation folds (each copy
            group in one fold; the manifest's `fold` column), for `cross_validate`.
        progress: a progress bar on stderr.
        config: a config file or shipped name whose `split.*` and `data.*` give the defaults.
        sets: single values to change in it: "split.seed=7".

    Returns:
        SplitResult: `counts` {class: {split: n}}, `files` (the manifest rows), `exit_code`
        (1 when some files were not usable: see `unused`).

    Raises:
        ConfigError: a bad `config` or `sets`.
        DataError: ratios that are not three numbers summing to 1, no such source, no images
            in it, a malformed labels.csv (its line named), a destination inside the source,
            or one holding another split without `overwrite`.

    Examples:
        >>> ga.split("data/archive/cropped/cropped", "data/split", seed=7).counts   # doctest: +SKIP
    """
    from ga.config import load_config
    from ga.splitting import split_dataset

    cfg = load_config(None if config is None else os.fspath(config), sets)
    s = cfg.split
    return split_dataset(os.fspath(source) if source is not None else s.source,
                         os.fspath(dest) if dest is not None else cfg.data.split_root,
                         ratios=list(ratios) if ratios is not None else s.ratios,
                         seed=s.seed if seed is None else seed, mode=mode or s.mode, order=order or s.order,
                         tolerance=s.group_tolerance if tolerance is None else tolerance, dry_run=dry_run,
                         overwrite=overwrite, progress=progress,
                         class_names=cfg.data.class_names if class_names is None else class_names, folds=folds)


def monitor_settings(config: Optional[PathLike] = None, *, sets: Sequence[str] = (),
                     **settings: Any) -> "MonitorConfig":
    """The monitor's settings: the `monitor` section of `config` (a file or shipped name;
    None: the defaults) with `sets` ("monitor.min_area=60") and `settings` (`min_area=60`;
    a None value leaves the key as it is) applied.

    Args:
        config: a config file or shipped name; None: the defaults.
        sets: single values to change: "monitor.min_area=60".
        **settings: `monitor.*` keys as keywords: `min_area=60, pixel_size_um=1.2`.

    Returns:
        The `ga.config.MonitorConfig`, checked.

    Raises:
        ConfigError: an unknown key (the closest one named), a wrong type or a value out of range.

    Examples:
        >>> ga.monitor_settings("monitor_out/monitor.yaml", pixel_size_um=1.2).min_area   # doctest: +SKIP
    """
    from ga.config import load_config, section_overrides

    given = {k: v for k, v in settings.items() if v is not None}
    changes = [*sets, *section_overrides({"monitor": given})] if given else list(sets)
    return load_config(None if config is None else os.fspath(config), changes).monitor


def _paths(inputs: Union[PathLike, Sequence[PathLike]]) -> list[str]:
    return [os.fspath(inputs)] if isinstance(inputs, (str, os.PathLike)) else [os.fspath(p) for p in inputs]


def _loaded(model: Any) -> "LoadedModel":
    """A loaded model from a Predictor, a LoadedModel, or what `load` takes."""
    from ga.loading import LoadedModel

    if isinstance(model, Predictor):
        return model.model
    return model if isinstance(model, LoadedModel) else load(model).model


def monitor(inputs: Union[PathLike, Sequence[PathLike]], model: Optional[Union[PathLike, Run, Predictor]] = None, *,
            out_dir: PathLike = "monitor_out", alerts: Sequence[str] = (), on_alert: Optional[str] = None,
            watch: bool = False, idle_exit: Optional[float] = None, threshold: Optional[float] = None,
            config: Optional[PathLike] = None, sets: Sequence[str] = (), progress: bool = False,
            max_pixels: int = 100_000_000, alert_hook: Optional[Callable[[Any], None]] = None,
            on_progress: Optional[Callable[["MonitorResult"], None]] = None,
            stop: Optional[Callable[[], bool]] = None, hooks: Sequence[Callable[[Any], None]] = (),
            **settings: Any) -> "MonitorResult":
    """Watch a process: find the particles in every frame, classify each and write
    particles.csv, frames.csv, alerts.csv, the trend figures and monitor.html into `out_dir`
    (what `ga monitor` does; resumed when `out_dir` holds earlier frames of these inputs).

    Args:
        inputs: a folder of frames, a TIFF stack, a video, or a list of them (`watch`: one folder).
        model: a run folder, model file or Predictor; None: the newest run under deliverables/.
        alerts: rules such as "pg_fraction > 0.10 over 5 frames" (`ga.monitoring.alerts`).
        on_alert: a shell command run on each alert (GA_ALERT_* in its environment).
        out_dir: the monitor folder (frames.csv, particles.csv, figures, monitor.html).
        watch: keep polling the folder for new frames.
        idle_exit: with `watch`, stop after this many seconds without a new frame (None: never).
        threshold: a decision threshold for every class instead of labels.json's.
        config: a config file whose `monitor` section to use (default: the defaults).
        sets: single values to change in it: "monitor.min_area=60".
        progress: a progress bar on stderr.
        max_pixels: frames larger than this are refused (a row whose `skipped` says why).
        alert_hook: called with each `ga.monitoring.alerts.Alert` as it fires.
        on_progress: called with the MonitorResult after every group of frames.
        stop: polled between frames; True ends the monitor after the frame in hand.
        hooks: called with each frame's `ga.monitoring.loop.FrameRecord` once its rows are
            written; one that raises is logged and the monitor goes on.
        **settings: `monitor.*` keys as keywords: `min_area=60, pixel_size_um=1.2`.

    Returns:
        MonitorResult: frames, skipped, particles, alerts (and `exit_code`: 1 when a frame
        was skipped).

    Raises:
        ConfigError: a bad setting (before any model is loaded).
        GAError: no such input, `watch` on something other than one folder, or an alert rule
            that is not one (before any model is loaded).
        ModelError: the model cannot be loaded.

    Examples:
        >>> result = ga.monitor("data/process", "deliverables/GA_2026-12-01_10-00-00")   # doctest: +SKIP
        >>> result.frames, [a.frame for a in result.alerts]                            # doctest: +SKIP
    """
    from ga.monitoring.alerts import parse_rule
    from ga.monitoring.feed import check_inputs
    from ga.monitoring.loop import monitor as run_monitor

    cfg = monitor_settings(config, sets=sets, **settings)
    paths = _paths(inputs)
    check_inputs(paths, watch)  # the quick checks first: loading a model takes seconds
    for rule in alerts:
        parse_rule(rule)
    _register()
    return run_monitor(_loaded(model), paths, os.fspath(out_dir), cfg, rules=list(alerts), on_alert=on_alert,
                       watch=watch, idle_exit=idle_exit, max_pixels=max_pixels, alert_hook=alert_hook,
                       progress=on_progress, stop=stop, threshold=threshold, bar=progress, hooks=hooks,
                       about=_settings_source(config, sets, settings))


def _settings_source(config: Optional[PathLike], sets: Sequence[str], settings: dict) -> dict:
    """Where a monitor's settings came from, for its audit trail: the config file and its
    sha256, the calibration.json beside it (a `ga monitor --calibrate` folder) and its
    sha256, the --set changes and keyword settings."""
    from ga.config import resolve_config
    from ga.files import sha256_file

    out: dict[str, Any] = {"sets": list(sets), "settings": {k: v for k, v in settings.items() if v is not None}}
    if config is not None:
        path = resolve_config(os.fspath(config))
        out.update(config_file=os.path.abspath(path), config_sha256=sha256_file(path))
        calibration = os.path.join(os.path.dirname(path), "calibration.json")
        if os.path.isfile(calibration):
            out.update(calibration_file=os.path.abspath(calibration), calibration_sha256=sha256_file(calibration))
    return out


def calibrate(inputs: Union[PathLike, Sequence[PathLike]], *, out_dir: PathLike = "monitor_out", frames: int = 20,
              config: Optional[PathLike] = None, sets: Sequence[str] = (), max_pixels: int = 100_000_000,
              **settings: Any) -> dict:
    """Choose the detection settings from a sample of `frames` frames spread over the run
    (what `ga monitor --calibrate` does): monitor.yaml (use it as `config`), calibration.json
    and calibration.png in `out_dir`. No model needed.

    Args:
        inputs: a folder of frames, a TIFF stack, a video, or a list of them.
        out_dir: where monitor.yaml, calibration.json and calibration.png go.
        frames: how many frames to sample, spread over the run.
        config: a config file whose `monitor` section to start from (default: the defaults).
        sets: single values to change in it; a key given is kept, not chosen.
        max_pixels: frames larger than this are refused.
        **settings: `monitor.*` keys as keywords, kept as given.

    Raises:
        ConfigError: a bad setting.
        GAError: no such input, no frame could be read, or frames of different sizes (calibrate
            each camera's frames apart), or `frames` below 1.

    Returns:
        calibration.json's content: the settings chosen, what they rest on, frames skipped.

    Examples:
        >>> ga.calibrate("frames/", out_dir="cal")["settings"]   # doctest: +SKIP
    """
    from ga.monitoring.calibration import calibrate as choose
    from ga.monitoring.feed import check_inputs

    paths = _paths(inputs)
    check_inputs(paths, False)
    return choose(paths, monitor_settings(config, sets=sets, **settings), os.fspath(out_dir), frames, max_pixels)


def scan_frames(frames: Union[PathLike, Sequence[PathLike]], model: Optional[Union[PathLike, Run, Predictor]] = None, *,
         tile: Union[int, Sequence[int]] = 300, out_dir: PathLike = "inference_out", recursive: bool = False,
         batch_size: int = 64, threshold: Optional[float] = None, overlap: Optional[int] = None,
         rule: str = "classes", max_pixels: int = 100_000_000) -> Iterator[tuple[str, Union[dict, str]]]:
    """Tile whole frames and mark the tiles where a class fires (what `ga scan` does):
    `<stem>_scan.jpg`, `<stem>_tiles.csv` and the marked tiles in `out_dir`.

    Args:
        frames: a frame, a folder of frames or a list of them (multi-page TIFFs page by page).
        model: a run folder, Run, model file or Predictor; None: the newest run.
        tile: the tile size in px, one number or (height, width).
        out_dir: where the marked frames and tables go.
        recursive: read subfolders of folders too.
        batch_size: tiles per prediction call.
        threshold: a decision threshold for every class instead of labels.json's.
        overlap: px shared by neighbouring tiles (None: the model's default for the task).
        rule: "classes" (a tile is marked when a class passes its threshold) or "any" (the
            model's last output, "any").
        max_pixels: frames larger than this are refused.

    Raises:
        GAError: a `rule` the model cannot answer (its task has no "any" output).
        ModelError: the model cannot be loaded.

    Returns:
        An iterator of (frame path, result) as each frame is done: a dict (tiles, fired,
        image, ...), or the reason a frame could not be read.

    Examples:
        >>> [r["fired"] for _, r in ga.scan_frames("data/wafer.png", run, tile=300)]   # doctest: +SKIP
    """
    from ga.inputs import input_files
    from ga.scan import scan_frames as scan_each

    files = input_files(_paths(frames), recursive)
    return scan_each(_loaded(model), files, tile, os.fspath(out_dir), batch_size=batch_size,
                       threshold=threshold, max_pixels=max_pixels, overlap=overlap, rule=rule)
