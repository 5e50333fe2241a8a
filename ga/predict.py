"""Batched prediction: every file given (or found in a folder) gets one result row, either
its prediction or the reason it was skipped; arrays too; decisions and output tables."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ga.errors import ModelError, printable
from ga.files import atomic_write_csv, atomic_write_text
from ga.images import MAX_PIXELS
from ga.inputs import input_files, prepare_arrays, read_image
from ga.loading import LoadedModel
from ga.task_text import text_of
from ga.tasks import get_task


@dataclass
class Result:
    path: str
    probs: np.ndarray = None
    error: str = ""
    features: np.ndarray = None


@dataclass
class Prediction:
    """All results of a run over some inputs."""

    labels: dict
    thresholds: dict
    results: list = field(default_factory=list)
    model: dict = field(default_factory=dict)  # LoadedModel.provenance(): which model made them

    @property
    def errors(self) -> list[Result]:
        return [r for r in self.results if r.error]


def class_probabilities(labels: dict, probs: np.ndarray) -> np.ndarray:
    """Per-class probabilities: binary (p) -> [1 - p, p]; the others unchanged."""
    return get_task(labels).class_probabilities(probs)


def decide(labels: dict, thresholds: Mapping[str, float], probs_row: np.ndarray) -> tuple[list[str], float]:
    """(predicted names, confidence) for one image's model output row."""
    task, classes = get_task(labels), labels["classes"]
    on = task.decide(np.asarray(probs_row, np.float32)[None, :], classes, thresholds)[0]
    return [c for c, f in zip(classes, on) if f], task.confidence(probs_row, on, classes)


def predict_folder(model: LoadedModel, inputs: Sequence[str], recursive: bool = False, **options: Any) -> Prediction:
    """Predict every image named in `inputs` (files, or folders read with `recursive`).

    Raises:
        GAError: an input does not exist, or there is no file to read.

    Returns:
        Prediction (see `predict_files` for the options).
    """
    files = input_files(inputs, recursive)
    return predict_files(model, files, **options)


def predict_files(model: LoadedModel, files: Sequence[str], batch_size: int = 64, max_pixels: int = MAX_PIXELS,
                  threshold: float | None = None, progress: bool | None = None, features: bool | str = False,
                  workers: int | None = None) -> Prediction:
    """Predict every file; undecodable files become error rows. Returns Prediction.

    `features`: False, or which backbone features to keep per image for clustering:
    "pooled" (the globally pooled vector, True means this) or "map" (the last feature map,
    flattened, as the study's k-means used).
    """
    from tqdm import tqdm

    labels = model.labels
    out = Prediction(labels, decision_thresholds(labels, threshold), model=model.provenance())
    # With --cluster, one Keras pass gives both the features and the probabilities.
    both_fn = features_and_probs_fn(model.keras(), "pooled" if features is True else features) if features else None
    show = progress if progress is not None else len(files) > 200
    bar = tqdm(total=len(files), unit="img", desc="inference", disable=not show, file=sys.stderr)
    with cf.ThreadPoolExecutor(workers or os.cpu_count() or 2) as pool:
        for start in range(0, len(files), batch_size):
            chunk = files[start:start + batch_size]
            loaded = list(pool.map(lambda p: _safe_read(p, labels, max_pixels), chunk))
            good = [(p, a) for p, a in zip(chunk, loaded) if not isinstance(a, str)]
            batch_probs, batch_feats = [], None
            if good:
                batch = np.stack([a for _, a in good]).astype(np.float32)
                if both_fn:
                    batch_feats, batch_probs = both_fn(batch)
                else:
                    batch_probs = model.predict(batch)
            gi = 0
            for p, a in zip(chunk, loaded):
                if isinstance(a, str):
                    out.results.append(Result(p, error=a))
                else:
                    out.results.append(Result(p, probs=np.asarray(batch_probs[gi]),
                                              features=None if batch_feats is None else batch_feats[gi]))
                    gi += 1
            bar.update(len(chunk))
    bar.close()
    return out


def decision_thresholds(labels: dict, threshold: float | None = None) -> dict[str, float]:
    """The thresholds decisions use: labels.json's, or `threshold` for every class (a
    GAError for a model that names its most probable class)."""
    if threshold is None:
        return dict(labels["thresholds"])
    get_task(labels).check_threshold_override()
    return {k: threshold for k in labels["thresholds"]}


def predict_arrays(model: LoadedModel, images: Sequence[Any], batch_size: int = 64, threshold: float | None = None,
                   names: Sequence[str] | None = None) -> Prediction:
    """Predict image arrays (a sequence of arrays, or one (n, h, w, c) array), in batches.

    Returns:
        Prediction whose results are named by `names` (default `array[i]`).
    """
    labels = model.labels
    out = Prediction(labels, decision_thresholds(labels, threshold), model=model.provenance())
    images = list(images)
    names = list(names) if names is not None else [f"array[{i}]" for i in range(len(images))]
    for start in range(0, len(images), batch_size):
        batch = prepare_arrays(images[start:start + batch_size], labels).astype(np.float32)
        out.results += [Result(n, probs=np.asarray(p))
                        for n, p in zip(names[start:start + batch_size], model.predict(batch))]
    return out


def _safe_read(path, labels, max_pixels):
    try:
        return read_image(path, labels, max_pixels)
    except (ValueError, OSError) as exc:
        return str(exc) if str(exc) else type(exc).__name__


def features_and_probs_fn(keras_model: Any, kind: str = "pooled") -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """One traced pass returning (backbone features, output probabilities); features are
    the pooled vector ("pooled") or the flattened last feature map ("map")."""
    import keras
    import tensorflow as tf

    from ga.model import FEATURES_LAYER

    try:
        layer = keras_model.get_layer(FEATURES_LAYER)
    except ValueError:
        raise ModelError(f"the model has no '{FEATURES_LAYER}' layer to take features from") from None
    feats = layer.output if kind == "pooled" else keras.layers.Flatten()(layer.input)
    both = keras.Model(keras_model.inputs, [feats, keras_model.output])
    fn = tf.function(lambda x: both(x, training=False), reduce_retracing=True)

    def run(x):
        feats, probs = fn(tf.convert_to_tensor(x))
        return np.asarray(feats, np.float32), np.asarray(probs, np.float32)

    return run




def rows(pred: Prediction) -> list[dict]:
    """Result table rows: path, predicted, p_<class>..., error."""
    classes = pred.labels["classes"]
    table = []
    for r in pred.results:
        row = {"path": r.path, "predicted": "", **{f"p_{c}": "" for c in classes}, "error": r.error}
        if not r.error:
            names, _ = decide(pred.labels, pred.thresholds, r.probs)
            row["predicted"] = ";".join(names)
            for c, p in zip(classes, class_probabilities(pred.labels, r.probs[None, :])[0]):
                row[f"p_{c}"] = round(float(p), 6)
        table.append(row)
    return table


def write_table(pred: Prediction, path: str) -> None:
    """Write results as .csv or .json (by extension)."""
    table = rows(pred)
    if path.lower().endswith(".json"):
        atomic_write_text(path, json.dumps({"model": pred.model, "classes": pred.labels["classes"],
                                            "thresholds": pred.thresholds, "results": table}, indent=2) + "\n")
        return
    # Every row names the model that made it (file, sha256, engine), so a table that travels
    # alone still says where it came from.
    made_by = {k: pred.model.get(k) for k in ("model_file", "model_sha256", "engine")}
    header = (list(table[0].keys()) if table else ["path", "predicted", "error"]) + list(made_by)
    atomic_write_csv(path, header, ([*(r[k] for k in header[:-3]), *made_by.values()] for r in table))


PRINT_FORMATS = ("ga", "study")


def result_lines(pred: Prediction, fmt: str = "ga") -> list[str]:
    """One line per labelled image (skipped files have none; see `Prediction.errors`).

    Formats: "ga": `File <name> prediction <class> confidence <p>`, p being the probability
    of the predicted class (multi-label: each class that fires, with its probability);
    "study": the Georgia study's own line, `File <name> prediction: <CLASS> with confidence
    <P>%`, P being the positive class's probability in percent (binary models only).

    """
    lines = []
    for r in pred.results:
        if r.error:
            continue
        names, conf = decide(pred.labels, pred.thresholds, r.probs)
        name = printable(os.path.basename(r.path))
        if fmt == "study":
            lines.append(f"File {name} prediction: {names[0].upper()} with confidence {100 * float(r.probs[0]):.2f}%")
        else:
            lines.append(text_of(pred.labels).result_line(name, pred.labels["classes"], r.probs, names, conf))
    return lines
