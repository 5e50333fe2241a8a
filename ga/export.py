"""Model export: native .keras, legacy .h5, ONNX (tf2onnx) and a TensorFlow SavedModel (for TF
Serving), each export checked against Keras on test images.

The ONNX graph takes `image`: float32 [batch, h, w, 3], RGB 0..255 (preprocessing is
inside), and returns `probabilities`: float32 [batch, outputs]. Its metadata holds the
labels.json document under the key `ga_labels`, so the file describes itself. The SavedModel
(Keras's own `model.export(format="tf_saved_model")`) has the same raw-pixel input: its
`serve` endpoint (and the `serving_default` signature) takes the image batch and returns the
probabilities; labels.json is copied into its assets/ folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from ga.errors import ExportError
from ga.files import atomic_path, atomic_write_bytes, open_to_umask
from ga.model import batch_predictor
from ga.runs import read_labels

if TYPE_CHECKING:
    from ga.config import Config

log = logging.getLogger(__name__)


def save_keras(model: Any, run_dir: str, prefix: str) -> list[str]:
    """Write <prefix>model.keras and <prefix>weights.h5 atomically. Returns their paths."""
    paths = []
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # .h5 is asked for on purpose; no "legacy format" warning
    try:
        for name in (f"{prefix}model.keras", f"{prefix}weights.h5"):
            path = os.path.join(run_dir, name)
            with atomic_path(path) as tmp:
                model.save(tmp)
            paths.append(path)
    finally:
        absl.setLevel(level)
    return paths


def release_memory() -> None:
    """Collect Python's garbage and hand the C heap's free pages back to the system (glibc's
    malloc_trim; nothing elsewhere). Between the delivery stages of a large model the freed
    copies of its weights otherwise stay resident and the next stage's peak adds to them."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def to_onnx(model: Any, input_size: Sequence[int], opset: int = 17, metadata: dict | None = None) -> Any:
    """Convert a Keras model to an ONNX ModelProto with tf2onnx."""
    import tensorflow as tf
    import tf2onnx

    h, w = input_size
    spec = (tf.TensorSpec((None, h, w, 3), tf.float32, name="image"),)

    @tf.function(input_signature=spec)
    def serve(image: Any) -> Any:
        return {"probabilities": model(image, training=False)}

    quiet = _SkippedOptimizerPass()
    optimizer_log = logging.getLogger("tf2onnx.optimizer")
    optimizer_log.addFilter(quiet)
    try:
        with _traced_for_onnx(), _collected_between_optimizer_passes(weight_bytes(model)):
            proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=opset)
    finally:
        optimizer_log.removeFilter(quiet)
    for name in quiet.skipped:
        log.info("tf2onnx skipped its optional %s pass on this graph (the export is checked against Keras below)", name)
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    return proto


# Bytes of graph copies (weights counted) that tf2onnx's optimizer may leave uncollected
# before a full collection runs: small models never pay for one (each costs 0.1-0.2 s with
# TensorFlow's objects in the heap, 6 s per CNN-4 export if run before every pass).
COPIES_BEFORE_COLLECT = 256 * 2**20


def weight_bytes(model: Any) -> int:
    """The bytes of a Keras model's weights (every variable, trainable or not)."""
    return int(sum(np.prod(w.shape) * np.dtype(w.dtype).itemsize for w in model.weights))


@contextlib.contextmanager
def _collected_between_optimizer_passes(graph_bytes: int, budget: int = COPIES_BEFORE_COLLECT) -> Iterator[None]:
    """Garbage-collect between tf2onnx's optimizer passes once their copies add up to `budget`.

    tf2onnx deep-copies the whole graph, weights included, before every pass of its ONNX
    optimizer loop (`tf2onnx.optimizer.optimize_graph`). The graph a pass replaces is a
    reference cycle, freed only by a full collection, which the few Python objects of large
    weight arrays seldom trigger: the copies pile up. So a full collection runs before a copy
    whenever the copies since the last one hold `budget` bytes or more of weights
    (`graph_bytes` per copy): every second pass for ResNet-152, never for CNN-4. Measured
    (maximum RSS of a process that builds the model, weights none, and converts it): ResNet-50
    5.9 GB without, 2.9 GB collecting before every pass; ResNet-152 12.0 GB without, 6.0 GB
    with. Left alone if tf2onnx changes that code.
    """
    import copy
    import gc
    import types

    import tf2onnx.optimizer as passes

    original = getattr(passes, "copy", None)
    if original is not copy:
        yield
        return
    pending = [0]

    def deepcopy(graph: Any, memo: Any = None) -> Any:
        pending[0] += graph_bytes
        if pending[0] >= budget:
            gc.collect()
            pending[0] = 0
        return copy.deepcopy(graph, memo)

    passes.copy = types.SimpleNamespace(deepcopy=deepcopy)
    try:
        yield
    finally:
        passes.copy = original


@contextlib.contextmanager
def _traced_for_onnx() -> Iterator[None]:
    """Two ops of Keras 3's TensorFlow backend that tf2onnx cannot write, traced otherwise
    while the graph is converted (the export is then checked against Keras, as every export is):

    - a grouped convolution (ConvNeXt's depthwise layers) runs inside a nested XLA function,
      because TensorFlow's CPU kernel lacks groups; tf2onnx cannot convert that nested call
      ("No Op registered for StatefulPartitionedCall"). Traced as the plain convolution, it
      becomes an ONNX Conv with `group`;
    - the exact GELU (ConvNeXt) is TensorFlow's erfc form, and ONNX has no Erfc; traced as
      x/2 (1 + erf(x/sqrt 2)), the same function, it uses ONNX's Erf.
    """
    import math

    import tensorflow as tf
    from keras.src.backend.tensorflow import nn as tf_nn

    original = tf_nn.conv, tf_nn.gelu

    def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
        spatial = "DHW"[3 - (len(inputs.shape) - 2):]
        fmt = f"N{spatial}C" if data_format in (None, "channels_last") else f"NC{spatial}"
        return tf.nn.convolution(inputs, kernel, strides, padding.upper(), data_format=fmt, dilations=dilation_rate)

    def gelu(x, approximate=True):
        x = tf.convert_to_tensor(x)
        if approximate:
            return tf.nn.gelu(x, approximate=True)
        return 0.5 * x * (1.0 + tf.math.erf(x / math.sqrt(2.0)))

    tf_nn.conv, tf_nn.gelu = conv, gelu
    try:
        yield
    finally:
        tf_nn.conv, tf_nn.gelu = original


class _SkippedOptimizerPass(logging.Filter):
    """tf2onnx logs a traceback when one of its optional graph optimisations fails on a
    graph (its transpose pass on MobileNetV3's hard-swish: "max() arg is an empty
    sequence") and carries on without it; keep the pass's name for one log line instead."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Failed to apply"):
            self.skipped.append(record.getMessage().removeprefix("Failed to apply").strip())
            return False
        return True


def onnx_session(path_or_bytes: str | bytes, threads: int = 0) -> Any:
    """An onnxruntime CPU session (intra-op threads: 0 lets onnxruntime choose)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(path_or_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def parity(model: Any, session: Any, images: np.ndarray) -> float:
    """Largest |Keras - ONNX| over a batch of images (float32 RGB 0..255)."""
    keras_out = batch_predictor(model)(images)
    onnx_out = session.run(None, {session.get_inputs()[0].name: np.asarray(images, np.float32)})[0]
    return float(np.max(np.abs(keras_out - onnx_out)))


def export_onnx(model: Any, run_dir: str, cfg: Config, images: np.ndarray) -> dict:
    """Write <prefix>weights.onnx and check it on `images` (float32 RGB 0..255, e.g. a test
    batch) against the Keras model.

    Raises:
        ExportError: when the largest difference exceeds output.parity_tolerance.
    """
    labels = read_labels(run_dir)
    meta = {"ga_labels": labels, "classes": json.dumps(labels["classes"]), "task": labels["task"],
            "input_size": json.dumps(labels["input_size"]), "preprocessing": labels["preprocessing"]}
    release_memory()  # the conversion holds several copies of the weights: start it from a trimmed heap
    proto = to_onnx(model, labels["input_size"], cfg.output.onnx_opset, meta)
    path = os.path.join(run_dir, f"{cfg.output.prefix}weights.onnx")
    atomic_write_bytes(path, proto.SerializeToString())
    del proto
    release_memory()
    images = np.asarray(images, np.float32)
    diff = parity(model, onnx_session(path), images)
    tol = cfg.output.parity_tolerance
    info = {"file": os.path.basename(path), "opset": cfg.output.onnx_opset, "parity_images": int(images.shape[0]),
            "max_abs_diff": diff, "tolerance": tol}
    log.info("ONNX export %s (opset %d): max |Keras - ONNX| = %.2e on %d images",
             os.path.basename(path), cfg.output.onnx_opset, diff, images.shape[0])
    if not diff <= tol:
        raise ExportError(f"{path}: ONNX output differs from Keras by {diff:.3g} (> {tol:g}); the export is not trustworthy")
    return info


def export_saved_model(model: Any, run_dir: str, cfg: Config, images: np.ndarray) -> dict:
    """Write <prefix>saved_model/ (atomically: a folder renamed into place) and check its
    `serve` endpoint on `images` against the Keras model.

    Raises:
        ExportError: when the largest difference exceeds output.parity_tolerance.
    """
    import shutil
    import tempfile

    import tensorflow as tf

    path = os.path.join(run_dir, f"{cfg.output.prefix}saved_model")
    tmp = tempfile.mkdtemp(prefix=".saved_model.", dir=run_dir)
    open_to_umask(tmp)
    try:
        h, w = read_labels(run_dir)["input_size"]
        model.export(tmp, format="tf_saved_model", verbose=False,
                     input_signature=[tf.TensorSpec((None, h, w, 3), tf.float32, name="image")])
        os.makedirs(os.path.join(tmp, "assets"), exist_ok=True)
        shutil.copy(os.path.join(run_dir, "labels.json"), os.path.join(tmp, "assets", "labels.json"))
        images = np.asarray(images, np.float32)
        loaded = tf.saved_model.load(tmp)  # kept referenced: its variables live as long as it does
        served = np.asarray(loaded.serve(tf.constant(images)))
        diff = float(np.max(np.abs(batch_predictor(model)(images) - served)))
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    tol = cfg.output.parity_tolerance
    log.info("SavedModel export %s: max |Keras - SavedModel| = %.2e on %d images", os.path.basename(path), diff,
             images.shape[0])
    if not diff <= tol:
        raise ExportError(f"{path}: SavedModel output differs from Keras by {diff:.3g} (> {tol:g})")
    return {"folder": os.path.basename(path), "parity_images": int(images.shape[0]), "max_abs_diff": diff,
            "tolerance": tol}


# ---------------------------------------------------------------------------- INT8


def int8_path(run_dir: str, prefix: str) -> str:
    return os.path.join(run_dir, f"{prefix}weights_int8.onnx")


def quantize_int8(float_path: str, out_path: str, calibration: np.ndarray, batch: int = 4) -> None:
    """Static INT8 quantisation of an ONNX classifier with ONNX Runtime's own tools:
    `quant_pre_process` (shape inference, graph optimisation), then `quantize_static` in the
    QDQ format, weights per channel (signed 8-bit), activations unsigned 8-bit, ranges by
    MinMax calibration on `calibration` (float32 RGB 0..255 images). The float32 file's
    metadata (ga_labels, classes, ...) is carried over.

    The calibrator runs `batch` images at a time and keeps only each tensor's minimum and
    maximum, so the file is the same whatever `batch`; its memory grows with `batch` and the
    input area, hardly with the number of images. ResNet-50 at 224x224, 64 images: +3.6 GB at
    batch 16, +1.2 GB at 4 (byte-identical files, 27 s and 22 s)."""
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(np.array_split(calibration, max(1, -(-len(calibration) // batch))))

        def get_next(self):
            x = next(self.batches, None)
            return None if x is None else {"image": np.asarray(x, np.float32)}

    with tempfile.TemporaryDirectory(prefix="ga_int8_") as tmp:
        pre = os.path.join(tmp, "pre.onnx")
        quant_pre_process(float_path, pre, skip_symbolic_shape=True)
        raw = os.path.join(tmp, "int8.onnx")
        quantize_static(pre, raw, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        model = onnx.load(raw)
        source = onnx.load(float_path, load_external_data=False)
        del model.metadata_props[:]
        model.metadata_props.extend(source.metadata_props)
        atomic_write_bytes(out_path, model.SerializeToString())


def int8_agreement(task: Any, classes: Sequence[str], thresholds: dict, float_probs: np.ndarray,
                   int8_probs: np.ndarray) -> dict:
    """How far INT8 outputs are from float32 ones: the share of images with the same
    decisions and the largest probability difference."""
    same = (task.decide(float_probs, classes, thresholds) == task.decide(int8_probs, classes, thresholds)).all(axis=1)
    return {"agreement": float(same.mean()) if len(same) else None,
            "max_prob_diff": float(np.max(np.abs(float_probs - int8_probs))) if len(same) else None}


def _session_runner(path: str) -> Callable[[np.ndarray], np.ndarray]:
    session = onnx_session(path)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _openvino_probabilities(float_path: str, int8_file: str, images: np.ndarray) -> dict[str, tuple[np.ndarray, str]]:
    """{"openvino": (outputs, precision), "openvino-int8": ...} of `images` when the openvino
    package is installed, else {}. Run in a child interpreter (ga.ov_engine's command line):
    OpenVINO loaded into a process that holds TensorFlow crashed it later (a segmentation
    fault on the next signal, seen in the test suite)."""
    import subprocess
    import sys
    import tempfile

    from ga import ov_engine

    if not ov_engine.available():
        log.info("OpenVINO engine not checked: the openvino package is not installed (%s)", ov_engine.EXTRA)
        return {}
    with tempfile.TemporaryDirectory(prefix="ga_openvino_") as tmp:
        source, result = os.path.join(tmp, "images.npy"), os.path.join(tmp, "outputs.npz")
        np.save(source, np.asarray(images, np.float32))
        proc = subprocess.run([sys.executable, "-m", "ga.ov_engine", float_path, int8_file, source, result],
                              capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.isfile(result):
            lines = proc.stderr.strip().splitlines()
            log.warning("OpenVINO engine not checked: %s", lines[-1] if lines else f"exit {proc.returncode}")
            return {}
        with np.load(result) as out:
            return {name: (out[f"{name}:outputs"], str(out[f"{name}:precision"])) for name in ("openvino", "openvino-int8")}


def _probabilities(runners: dict, batches: Any, units: int) -> dict[str, np.ndarray]:
    """{name: outputs of runners[name] over all `batches`}, each batch read once."""
    outs: dict[str, list] = {name: [] for name in runners}
    for x in batches:
        for name, run in runners.items():
            outs[name].append(run(np.asarray(x, np.float32)))
    return {name: np.concatenate(o) if o else np.zeros((0, units), np.float32) for name, o in outs.items()}


def _agreement(task: Any, classes: Sequence[str], thresholds: dict, float_probs: np.ndarray, probs: np.ndarray,
               cfg: Config) -> dict:
    agree = int8_agreement(task, classes, thresholds, float_probs, probs)
    return {**agree, "kept": agree["agreement"] is not None and agree["agreement"] >= cfg.output.int8_min_agreement}


def export_int8(run_dir: str, cfg: Config, calibration: np.ndarray, test_batches: Any, y_true: np.ndarray) -> dict:
    """Write <prefix>weights_int8.onnx from the run's float32 ONNX (calibrated on
    `calibration`) and compare the two on the test split (`test_batches`: float32 image
    batches in the order of `y_true`). Below output.int8_min_agreement the file is removed.

    Returns:
        metrics.json's "int8" entry: file (or None), kept, why, calibration and test images,
        agreement, largest probability difference, test accuracy (and macro F1) of both.
    """
    from ga.tasks import get_task

    labels = read_labels(run_dir)
    task, classes, thr = get_task(labels), labels["classes"], labels["thresholds"]
    float_path = os.path.join(run_dir, f"{cfg.output.prefix}weights.onnx")
    path = int8_path(run_dir, cfg.output.prefix)
    quantize_int8(float_path, path, np.asarray(calibration, np.float32))
    runners = {"float32": _session_runner(float_path), "int8": _session_runner(path), "images": np.asarray}
    probs = _probabilities(runners, test_batches, task.units(classes))
    images = probs.pop("images")
    openvino = _openvino_probabilities(float_path, path, images) if len(images) else {}
    f32, i8 = probs["float32"], probs["int8"]
    info = {"file": os.path.basename(path), "calibration_images": int(len(calibration)), "test_images": int(len(f32)),
            **int8_agreement(task, classes, thr, f32, i8), "min_agreement": cfg.output.int8_min_agreement}
    for name, p in (("float32", f32), ("int8", i8)):
        if len(p):
            m, _ = task.metrics(classes, y_true, p, thr)
            info[f"test_{name}"] = {"accuracy": m["accuracy"], "macro_f1": m.get("macro_avg", {}).get("f1")}
    if openvino:  # the same checks for OpenVINO on both files, each against float32 ONNX Runtime
        info["openvino"] = {name: {"file": os.path.basename(float_path if name == "openvino" else path),
                                   "precision": precision, **_agreement(task, classes, thr, f32, outputs, cfg)}
                            for name, (outputs, precision) in openvino.items()}
    info["kept"] = info["agreement"] is not None and info["agreement"] >= cfg.output.int8_min_agreement
    if info["kept"]:
        log.info("INT8 export %s: decisions agree with float32 on %.4f of %d test images (max |p| diff %.3g), "
                 "calibrated on %d training images", info["file"], info["agreement"], info["test_images"],
                 info["max_prob_diff"], info["calibration_images"])
    else:
        os.remove(path)
        info["file"] = None
        info.get("openvino", {}).pop("openvino-int8", None)
        info["why"] = (f"decisions agreed with float32 on {info['agreement']} of the test split, below "
                       f"output.int8_min_agreement {cfg.output.int8_min_agreement}")
        log.warning("INT8 model not kept: %s", info["why"])
    return info
