"""Batch inference: model resolution, safe loading, robust decoding, batched prediction,
feature clustering, and output tables.

Every file given (or found in a folder) gets one result row: either its prediction or
the reason it was skipped. Decoding uses the training path (`ga.images.decode_resize`) for
formats TensorFlow reads, and Pillow for the rest (TIFF, 16-bit), then the same resize and
centre crop (`ga.images`).
"""

from __future__ import annotations

import concurrent.futures as cf
import glob
import json
import logging
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ga.errors import GAError, ModelError, first_line, one_line, opt, printable
from ga.files import atomic_write_csv, atomic_write_text, sha256_file
from ga.frames import page_of, read_page, stack_pages
from ga.images import (
    MAX_PIXELS,
    TF_FORMATS,
    ImageProblem,
    center_crop,
    checked,
    decode_resize,
    pillow_rgb,
    read_bytes,
    resize_uint8,
    walk_files,
)
from ga.runs import LABELS, check_labels, is_complete, newest_run, read_labels
from ga.tasks import get_task

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- models


@dataclass
class LoadedModel:
    """A model ready to predict batches, with its labels document."""

    labels: dict
    engine: str  # "onnx" or "keras"
    source: str  # file the model came from
    predict: object = None  # callable: float32 (n, h, w, 3) -> (n, outputs)
    keras_model: object = None
    _keras_path: str = ""

    def provenance(self) -> dict:
        """Which model made a set of predictions: its file, the file's sha256, the engine and
        the run folder it belongs to (or null)."""
        if not hasattr(self, "_sha256"):
            self._sha256 = sha256_file(self.source)
        folder = os.path.dirname(os.path.abspath(self.source))
        return {"model_file": os.path.abspath(self.source), "model_sha256": self._sha256, "engine": self.engine,
                "run": folder if is_complete(folder) else None}

    def keras(self, unsafe: bool = False) -> Any:
        """The Keras model (loaded on demand, e.g. for feature extraction)."""
        if self.keras_model is None:
            if not self._keras_path:
                raise ModelError(f"{self.source}: feature extraction needs the Keras model (.keras or .h5) "
                                 f"beside it; none found")
            self.keras_model = load_keras(self._keras_path, unsafe)
        return self.keras_model


def resolve_model(model: str | None = None, runs_root: str = "deliverables") -> str:
    """Find the model file to use: (path or run folder, kind)."""
    if model is None:
        run = newest_run(runs_root)
        if run is None:
            train = opt("train", 'ga.train("demo")')
            raise GAError(f"no complete trained run under {runs_root}/; train one with {train}, or pass {opt('model')}")
        return run
    if not os.path.exists(model):
        raise GAError(f"not found: {model}", arg="model")
    return model


def _run_files(run_dir):
    files = {"onnx": None, "onnx_int8": None, "keras": None}
    for f in sorted(os.listdir(run_dir)):
        p = os.path.join(run_dir, f)
        if f.startswith("."):
            continue
        if f.endswith(INT8_SUFFIX):
            files["onnx_int8"] = files["onnx_int8"] or p
        elif f.endswith(".onnx"):
            files["onnx"] = files["onnx"] or p
        elif f.endswith(".keras"):
            files["keras"] = p
        elif f.endswith(".h5") and not f.endswith(".weights.h5") and files["keras"] is None:
            # *.weights.h5 (best.weights.h5, stage1.weights.h5) hold weights without a model
            files["keras_h5"] = p
    files["keras"] = files["keras"] or files.get("keras_h5")
    return files


INT8_SUFFIX = "_int8.onnx"  # <prefix>weights_int8.onnx (ga.export)
ENGINES = ("onnx", "onnx-int8", "keras")


def load_model(model: str | None = None, engine: str | None = None, runs_root: str = "deliverables", threads: int = 0,
               unsafe: bool = False) -> LoadedModel:
    """Load a model for inference.

    Args:
        model: run folder, .onnx, .keras or .h5 (with labels.json beside it), or None for
            the newest complete run under `runs_root`.
        engine: "onnx" (float32), "onnx-int8" (the run's INT8 model), "keras", or None: the
            INT8 model when the run has one and the CPU has INT8 units (VNNI, AMX), else the
            float32 ONNX when there is one, else Keras.
        threads: ONNX Runtime intra-op threads (0: its default).
        unsafe: allow Keras models that hold arbitrary code.
    """
    target = resolve_model(model, runs_root)
    labels, files = _model_files(target, engine)
    engine, why = _choose_engine(engine, files)
    if engine == "keras":
        if not files["keras"]:
            raise GAError(f"keras: no .keras or .h5 model at {target}", arg="engine")
        from ga.model import batch_predictor

        km = load_keras(files["keras"], unsafe)
        out_dim = km.output_shape[-1]
        loaded = LoadedModel(labels, "keras", files["keras"], batch_predictor(km), km, files["keras"])
    else:
        path = files["onnx_int8" if engine == "onnx-int8" else "onnx"]
        if not path:
            what = "INT8 model (output.int8 was off, or it fell below output.int8_min_agreement)" if \
                engine == "onnx-int8" else ".onnx model"
            raise GAError(f"{engine}: no {what} at {target}", arg="engine")
        sess = _onnx_session(path, threads)
        name = sess.get_inputs()[0].name
        predict = lambda x: sess.run(None, {name: np.asarray(x, np.float32)})[0]  # noqa: E731
        out_dim = sess.get_outputs()[0].shape[-1]
        loaded = LoadedModel(labels, engine, path, predict, _keras_path=files["keras"] or "")
    want = get_task(labels).units(labels["classes"])
    if isinstance(out_dim, int) and out_dim != want:
        raise ModelError(f"{loaded.source}: the model has {out_dim} output(s) but its labels.json lists "
                         f"{labels['classes']} ({labels['task']}, {want} output(s) expected)")
    log.info("model %s (%s engine: %s); classes %s", loaded.source, engine, why, labels["classes"])
    return loaded


def _model_files(target, engine):
    """(labels, {"onnx", "onnx_int8", "keras": path or None}) of a run folder or a model file."""
    if os.path.isdir(target):
        if not is_complete(target):
            raise GAError(f"{target} is not a complete run (interrupted or still training)", arg="model")
        return read_labels(target), _run_files(target)
    ext = os.path.splitext(target)[1].lower()
    if ext not in (".onnx", ".keras", ".h5"):
        raise GAError(f"{target} is not a run folder, .onnx, .keras or .h5 file", arg="model")
    beside = os.path.join(os.path.dirname(os.path.abspath(target)), LABELS)
    if os.path.isfile(beside):
        labels = read_labels(beside)
    elif ext == ".onnx":
        labels = _onnx_labels(target)
    else:
        raise ModelError(f"{target}: no {LABELS} beside it; the class names cannot be known")
    sibling = _run_files(os.path.dirname(os.path.abspath(target)))
    files = {"onnx": None, "onnx_int8": None, "keras": target if ext != ".onnx" else sibling["keras"]}
    if ext == ".onnx":  # the file given is the one used
        files["onnx_int8" if target.endswith(INT8_SUFFIX) else "onnx"] = target
    elif engine in ("onnx", "onnx-int8"):
        files.update(onnx=sibling["onnx"], onnx_int8=sibling["onnx_int8"])
    return labels, files


def _choose_engine(engine, files):
    """(engine, why) for the `engine` asked for (None: automatic) and the files there are."""
    if engine:
        return engine, "asked for"
    if files["onnx_int8"] and not files["onnx"]:
        return "onnx-int8", "the INT8 model was given"
    if files["onnx_int8"]:
        from ga.hardware import int8_units

        units = int8_units()
        if units:
            return "onnx-int8", f"the run has an INT8 model and the CPU has {' and '.join(units)}"
        return "onnx", "the run has an INT8 model, but the CPU has no INT8 unit (VNNI, AMX): float32 is faster"
    if files["onnx"]:
        return "onnx", "the float32 ONNX model"
    return "keras", "no ONNX model"


def _onnx_session(path, threads):
    from ga.export import onnx_session

    try:
        return onnx_session(path, threads)
    except Exception as exc:  # onnxruntime raises its own exception types for damaged files
        raise ModelError(f"{path}: cannot load the ONNX model ({first_line(exc)})") from None


def _onnx_labels(path):
    import onnx

    try:
        meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    except Exception as exc:  # protobuf decode errors
        raise ModelError(f"{path}: cannot read the ONNX file ({first_line(exc)})") from None
    if "ga_labels" not in meta:
        raise ModelError(f"{path}: no labels.json beside it and no ga_labels in its metadata")
    try:
        doc = json.loads(meta["ga_labels"])
    except ValueError:
        raise ModelError(f"{path}: its ga_labels metadata is not JSON") from None
    return check_labels(doc, f"{path} (metadata)")


def load_keras(path: str, unsafe: bool = False) -> Any:
    """keras.models.load_model in safe mode unless `unsafe`; one-line errors naming the file."""
    import ga

    ga.register()  # safe mode accepts only registered classes
    import keras

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return keras.models.load_model(path, compile=False, safe_mode=not unsafe)
    except ValueError as exc:
        text = str(exc)
        if "unsafe" in text.lower() or "lambda" in text.lower():
            raise ModelError(f"{path} contains code (a Lambda layer) that would run on loading; refusing without "
                             f"{opt('unsafe', 'unsafe=True')} (only for files you trust)") from None
        rebuilt = _rebuilt_from_run(path) if path.endswith(".h5") else None
        if rebuilt is not None:
            return rebuilt
        raise ModelError(f"{path}: cannot load the Keras model ({first_line(exc)})") from None
    except Exception as exc:  # h5py/zipfile raise many types for damaged files
        raise ModelError(f"{path}: cannot load the Keras model ({one_line(exc)})") from None


def _rebuilt_from_run(path):
    """A run's legacy HDF5 model whose architecture this Keras cannot read back (MobileNetV3's
    hard-swish is stored as ops with constant arguments, which the HDF5 loader refuses): the
    model rebuilt from the run's config.yaml and labels.json beside it, its weights read from
    the file. None when the file is not in a run folder or the weights do not fit."""
    import dataclasses

    from ga.config import load_config
    from ga.model import build_model

    folder = os.path.dirname(os.path.abspath(path))
    if not (os.path.isfile(os.path.join(folder, "config.yaml")) and os.path.isfile(os.path.join(folder, LABELS))):
        return None
    cfg = load_config(os.path.join(folder, "config.yaml"))
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights="none", backbone_weights=None,
                                                             init_weights=None))
    labels = read_labels(folder)
    model = build_model(cfg, get_task(labels).units(labels["classes"]))
    try:
        model.load_weights(path)
    except (ValueError, OSError, KeyError):
        return None
    log.info("%s: architecture rebuilt from the run's config.yaml (this Keras cannot read it from the HDF5 file), "
             "weights from the file", path)
    return model



# ---------------------------------------------------------------------------- images


def list_inputs(inputs: Sequence[str], recursive: bool = False) -> tuple[list[str], list[str]]:
    """Every file the inputs name, and the inputs that name nothing.

    An input is a folder (its files, hidden ones skipped, sorted; subfolders with
    `recursive`), a file, a glob pattern the shell left alone (`"frames/*.png"`,
    `"**/*.tif"`), or `@list.txt`: one path (or folder, or pattern) a line, `#` comments and
    blank lines ignored, relative paths taken from the list file's folder. A file the list
    names that does not exist stays in the result, so that it becomes a per-file error row
    (never a silent skip). Every multi-page TIFF becomes its pages, `stack.tif#p0`, ... .
    """
    files, missing = [], []
    for item in inputs:
        if item.startswith("@") and not os.path.exists(item):
            for entry in _list_file(item[1:]):
                # an entry is a path (a list naming a list, itself even, is not followed)
                found = [] if entry.startswith("@") else list_inputs([entry], recursive)[0]
                files.extend(found or [entry])
            continue
        if os.path.isdir(item):
            files.extend(walk_files(item, recursive))
        elif os.path.isfile(item):
            files.append(item)
        elif glob.has_magic(item) and (matches := sorted(glob.glob(item, recursive=True))):
            for m in matches:
                files.extend(walk_files(m, recursive) if os.path.isdir(m) else [m])
        else:
            missing.append(item)
    return [page for f in files for page in stack_pages(f)], missing


def _list_file(path):
    """The entries of a list file (`@list.txt`), relative ones joined to its folder."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise GAError(f"cannot read the list file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    base = os.path.dirname(path)
    entries = [line.strip() for line in lines]
    return [e if os.path.isabs(e) else os.path.join(base, e) for e in entries if e and not e.startswith("#")]


def read_image(path: str, labels: dict, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode, resize (and centre-crop) one file for the model. Returns uint8 (h, w, 3).

    Raises:
        ImageProblem: the reason the file cannot be used.
    """
    import tensorflow as tf

    resize = tuple(labels.get("resize") or labels["input_size"])
    if page_of(path)[1] is not None:
        return _model_crop(np.asarray(resize_uint8(read_page(path, max_pixels), resize)), labels)
    # Every file is tried whatever its extension: a non-image gets a clear reason.
    data = read_bytes(path)
    fmt = checked(data, max_pixels)
    if fmt in TF_FORMATS:
        try:
            arr = decode_resize(data, resize)
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as exc:
            raise ImageProblem(f"cannot decode ({first_line(exc.message, 160)})") from None
    else:
        arr = resize_uint8(pillow_rgb(data), resize)
    return _model_crop(np.asarray(arr), labels)


def _model_crop(arr, labels):
    """The centre crop labels.json asks for (the model's input), of image(s) at its resize."""
    crop = labels.get("center_crop")
    return center_crop(arr, crop) if crop else arr


# ---------------------------------------------------------------------------- prediction


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


def input_files(inputs: Sequence[str], recursive: bool = False) -> list[str]:
    """The files to label; a one-line GAError when an input is missing or nothing is found."""
    files, missing = list_inputs(inputs, recursive)
    if missing:
        raise GAError(f"not found: {', '.join(missing)}")
    if not files:
        raise GAError(f"no files in {', '.join(inputs)}" +
                      ("" if recursive else f" (use {opt('recursive', 'recursive=True')} for subfolders)"))
    return files


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


def prepare_arrays(images: Sequence[Any], labels: dict) -> np.ndarray:
    """Image arrays (h, w), (h, w, 1), (h, w, 3) or (h, w, 4), any dtype of 0-255 values,
    prepared as files are: RGB, resized (and centre-cropped) to the model's input. Images of
    one shape are resized in one call. Returns uint8 (n, h, w, 3)."""
    rgb = [_rgb_uint8(a) for a in images]
    size = tuple(labels.get("resize") or labels["input_size"])
    if len({a.shape for a in rgb}) == 1:
        out = np.asarray(resize_uint8(np.stack(rgb), size))
    else:
        out = np.stack([np.asarray(resize_uint8(a, size)) for a in rgb])
    return _model_crop(out, labels)


def _rgb_uint8(image):
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise GAError(f"an image array must be (height, width[, 1, 3 or 4 channels]), got shape {a.shape}",
                      arg="images")
    a = np.repeat(a, 3, axis=2) if a.shape[-1] == 1 else a[:, :, :3]
    return np.clip(np.round(a.astype(np.float32)), 0, 255).astype(np.uint8)


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


# ---------------------------------------------------------------------------- evaluation


def labelled_files(folder: str, labels: dict) -> tuple[list[str], np.ndarray]:
    """The images of a labelled folder and their labels in the model's class order (any
    layout `ga.layouts` reads: class folders named like the model's classes or 0, 1, ...; a
    labels.csv).

    Returns:
        (paths, y_true float32 (n, outputs)).
    """
    from ga.layouts import labelled_images

    classes = labels["classes"]
    if not os.path.isdir(folder):
        raise GAError(f"not a folder: {folder}", arg="folder")
    try:
        paths, y = labelled_images(folder, classes, get_task(labels), class_names=classes, any_class="any" in classes,
                                   partial=True)
    except GAError as exc:
        raise GAError(exc.message, arg="folder") from None
    # A multi-page TIFF is its pages, each with the file's label.
    pages = [stack_pages(p) for p in paths]
    return [p for ps in pages for p in ps], np.repeat(y, [len(ps) for ps in pages], axis=0)


def run_prefix(source: str) -> str:
    """The file-name prefix (output.prefix) of the run a model file belongs to, or ""."""
    import yaml

    path = os.path.join(os.path.dirname(os.path.abspath(source)), "config.yaml")
    try:
        with open(path, encoding="utf-8") as fh:
            return str((yaml.safe_load(fh) or {}).get("output", {}).get("prefix", ""))
    except (OSError, yaml.YAMLError, AttributeError):
        return ""


def evaluate_folder(model: LoadedModel, folder: str, out_dir: str, prefix: str = "", threshold: float | None = None,
                    **options: Any) -> tuple[dict, Prediction]:
    """Evaluate a model on a labelled folder and write the reports a run writes for its test
    split (metrics.json, FinalTestResults.txt, predictions.csv, confusion matrix, ROC/PR, and
    for multi-label a threshold sweep of this set) into `out_dir`, using the same code.

    Returns:
        (metrics dict, Prediction); unreadable files are error rows of the Prediction and
        left out of the metrics.
    """
    from ga import analysis

    paths, y_true = labelled_files(folder, model.labels)
    if not paths:
        raise GAError(f"no images in {folder}", arg="folder")
    pred = predict_files(model, paths, threshold=threshold, **options)
    ok = [i for i, r in enumerate(pred.results) if not r.error]
    if not ok:
        raise GAError(f"no readable images in {folder}", arg="folder")
    labels = model.labels
    y_prob = np.stack([pred.results[i].probs for i in ok]).astype(np.float32)
    title = f"{prefix} evaluation of {model.source} on {folder}".strip()
    extra = {"model": model.source, "engine": model.engine, "data": folder,
             "skipped": [{"path": r.path, "reason": r.error} for r in pred.errors]}
    m = analysis.write_evaluation(out_dir, prefix, get_task(labels), labels["classes"], pred.thresholds, y_true[ok],
                                  y_prob, [paths[i] for i in ok], title, extra)
    if get_task(labels).tunes_thresholds:
        grid, curves, best = analysis.threshold_sweep(labels["classes"], y_true[ok], y_prob)
        analysis.plot_threshold_sweep(grid, curves, best, os.path.join(out_dir, f"{prefix}threshold_sweep.png"))
    return m, pred


# ---------------------------------------------------------------------------- outputs


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
            lines.append(get_task(pred.labels).result_line(name, pred.labels["classes"], r.probs, names, conf))
    return lines


def cluster(pred: Prediction, k: int, out_dir: str, space: str = "full") -> tuple[str, str]:
    """k-means on the images' backbone features: clusters.png and clusters.csv.

    space "full": k-means on the features themselves, PCA to 2-D for the figure only;
    "pca2": PCA to 2-D first, then k-means on the 2-D points (the study's GAkmeans.py).
    k-means as the study ran it: random_state 42, n_init 10, max_iter 10000.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    ok = [r for r in pred.results if not r.error]
    if len(ok) < max(k, 2):
        raise GAError(f"{k}: needs at least {max(k, 2)} readable images, got {len(ok)}", arg="cluster")
    x = np.stack([r.features for r in ok])
    pca = PCA(n_components=2)
    xy = pca.fit_transform(x)
    km = KMeans(n_clusters=k, random_state=42, n_init=10, max_iter=10000).fit(xy if space == "pca2" else x)
    centres = km.cluster_centers_ if space == "pca2" else pca.transform(km.cluster_centers_)
    os.makedirs(out_dir, exist_ok=True)
    png, table = os.path.join(out_dir, "clusters.png"), os.path.join(out_dir, "clusters.csv")
    _plot_clusters(xy, km.labels_, centres, pca.explained_variance_ratio_,
                   [os.path.basename(r.path) for r in ok], k, png)
    atomic_write_csv(table, ["path", "cluster", "pc1", "pc2", "predicted"],
                     ([r.path, int(c), f"{px:.6f}", f"{py:.6f}", ";".join(decide(pred.labels, pred.thresholds, r.probs)[0])]
                      for r, c, (px, py) in zip(ok, km.labels_, xy)))
    return png, table


def _plot_clusters(xy, labels, centres, explained, names, k, out):
    from ga.figures import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(7, 6))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=18)
    ax.scatter(centres[:, 0], centres[:, 1], marker="X", s=160, c="black", label="centroids")
    if len(names) < 60:
        for (px, py), name in zip(xy, names):
            ax.annotate(name, (px, py), fontsize=6, alpha=0.8)
    ax.set(xlabel=f"PC1 ({100 * explained[0]:.1f}% of variance)", ylabel=f"PC2 ({100 * explained[1]:.1f}% of variance)",
           title=f"k-means on backbone features, k={k}")
    ax.legend(*sc.legend_elements(), title="cluster", loc="best", fontsize=7)
    save_figure(fig, out)
