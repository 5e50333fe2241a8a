"""Trained models for prediction: finding a run's model, loading it safely, choosing the engine
(ONNX Runtime float32 or INT8, or Keras), and the loaded model's provenance."""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ga.errors import GAError, ModelError, first_line, one_line, opt
from ga.files import sha256_file
from ga.runs import LABELS, check_labels, is_complete, newest_run, read_labels
from ga.tasks import get_task

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model ready to predict batches, with its labels document."""

    labels: dict
    engine: str  # one of ENGINES
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
ENGINES = ("onnx", "onnx-int8", "openvino", "openvino-int8", "keras")


def load_model(model: str | None = None, engine: str | None = None, runs_root: str = "deliverables", threads: int = 0,
               unsafe: bool = False) -> LoadedModel:
    """Load a model for inference.

    Args:
        model: run folder, .onnx, .keras or .h5 (with labels.json beside it), or None for
            the newest complete run under `runs_root`.
        engine: "onnx" (float32), "onnx-int8" (the run's INT8 model), "openvino" and
            "openvino-int8" (the same files through OpenVINO, ga.ov_engine), "keras", or None:
            OpenVINO on a CPU with AMX when it is installed and the run recorded its agreement
            (metrics.json), else the INT8 model when the run has one and the CPU has INT8 units
            (VNNI, AMX), else the float32 ONNX when there is one, else Keras.
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
        int8 = engine.endswith("-int8")
        path = files["onnx_int8" if int8 else "onnx"]
        if not path:
            what = "INT8 model (output.int8 was off, or it fell below output.int8_min_agreement)" if int8 \
                else ".onnx model"
            raise GAError(f"{engine}: no {what} at {target}", arg="engine")
        if engine.startswith("openvino"):
            from ga.ov_engine import compile_onnx

            compiled = compile_onnx(path, threads)
            predict, out_dim = compiled.predict, compiled.outputs
            why += f"; OpenVINO in {compiled.precision}"
        else:
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
    elif engine and engine != "keras":
        files.update(onnx=sibling["onnx"], onnx_int8=sibling["onnx_int8"])
    return labels, files


def _choose_engine(engine, files):
    """(engine, why) for the `engine` asked for (None: automatic) and the files there are."""
    if engine:
        return engine, "asked for"
    openvino = _openvino_choice(files)
    if openvino:
        return openvino
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


def _openvino_choice(files):
    """(engine, why) for OpenVINO where it was measured faster (a CPU with AMX), is installed,
    and the run's metrics.json records its agreement with float32 at or above the floor;
    else None."""
    from ga import ov_engine

    source = files["onnx_int8"] or files["onnx"]
    if not (source and ov_engine.faster_here() and ov_engine.available()):
        return None
    try:
        with open(os.path.join(os.path.dirname(os.path.abspath(source)), "metrics.json"), encoding="utf-8") as fh:
            record = json.load(fh).get("openvino") or {}
    except (OSError, ValueError, AttributeError):
        return None
    for engine, key in (("openvino-int8", "onnx_int8"), ("openvino", "onnx")):
        check = record.get(engine)
        if files[key] and isinstance(check, dict) and check.get("kept"):
            return engine, (f"a CPU with AMX, where OpenVINO is faster; its decisions agreed with float32 on "
                            f"{check.get('agreement')} of the test split")
    return None


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
