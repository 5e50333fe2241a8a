"""Model export: native .keras, legacy .h5, and ONNX (tf2onnx) with a parity check.

The ONNX graph takes `image`: float32 [batch, h, w, 3], RGB 0..255 (preprocessing is
inside), and returns `probabilities`: float32 [batch, outputs]. Its metadata holds the
labels.json document under the key `ga_labels`, so the file describes itself.
"""

import json
import logging
import os

import numpy as np

from ga.errors import GAError
from ga.io import atomic_path, atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)


class ExportError(GAError):
    """The exported model does not reproduce the Keras model."""


def save_keras(model, run_dir, prefix):
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


def to_onnx(model, input_size, opset=17, metadata=None):
    """Convert a Keras model to an ONNX ModelProto with tf2onnx."""
    import tensorflow as tf
    import tf2onnx

    h, w = input_size
    spec = (tf.TensorSpec((None, h, w, 3), tf.float32, name="image"),)

    @tf.function(input_signature=spec)
    def serve(image):
        return {"probabilities": model(image, training=False)}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=opset)
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    return proto


def onnx_session(path_or_bytes, threads=0):
    """An onnxruntime CPU session (intra-op threads: 0 lets onnxruntime choose)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(path_or_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def parity(model, session, images):
    """Largest |Keras - ONNX| over a batch of images (float32 RGB 0..255)."""
    from ga.analysis import batch_predictor

    keras_out = batch_predictor(model)(images)
    onnx_out = session.run(None, {session.get_inputs()[0].name: np.asarray(images, np.float32)})[0]
    return float(np.max(np.abs(keras_out - onnx_out)))


def export_onnx(model, run_dir, cfg, data):
    """Write <prefix>weights.onnx and check it on test images against the Keras model.

    Raises:
        ExportError: when the largest difference exceeds output.parity_tolerance.
    """
    from ga.runs import read_labels

    labels = read_labels(run_dir)
    meta = {"ga_labels": labels, "classes": json.dumps(labels["classes"]), "task": labels["task"],
            "input_size": json.dumps(labels["input_size"]), "preprocessing": labels["preprocessing"]}
    proto = to_onnx(model, data.input_size, cfg.output.onnx_opset, meta)
    path = os.path.join(run_dir, f"{cfg.output.prefix}weights.onnx")
    blob = proto.SerializeToString()
    atomic_write_bytes(path, blob)
    batch = next(iter(data.test.dataset))[0][:32]
    diff = parity(model, onnx_session(blob), np.asarray(batch))
    tol = cfg.output.parity_tolerance
    info = {"file": os.path.basename(path), "opset": cfg.output.onnx_opset, "parity_images": int(batch.shape[0]),
            "max_abs_diff": diff, "tolerance": tol}
    log.info("ONNX export %s (opset %d): max |Keras - ONNX| = %.2e on %d test images",
             os.path.basename(path), cfg.output.onnx_opset, diff, batch.shape[0])
    if not diff <= tol:
        raise ExportError(f"{path}: ONNX output differs from Keras by {diff:.3g} (> {tol:g}); the export is not trustworthy")
    return info


def write_model_card(run_dir, cfg, data, metrics):
    """model_card.md: intended use, data, metrics, limits."""
    p = cfg.output.prefix
    classes = data.classes
    t = metrics.get("training", {})
    lines = [
        f"# Model card: {os.path.basename(os.path.abspath(run_dir))}",
        "",
        "## Intended use",
        ("Classify in-situ microscope crops of a crystallization as " + " or ".join(classes)
         + f" (positive class: {classes[1]}), for process monitoring. Input: an image crop, RGB or grey, any size "
           "(resized to the model's input)." if cfg.model.task == "binary" else
         "Flag microscope crops that hold flakes of each class (" + ", ".join(classes) + "); labels are not exclusive."),
        "Not for: images from other instruments, magnifications or materials without re-validation.",
        "",
        "## Model",
        f"- backbone {cfg.model.backbone}, weights `{cfg.model.weights}`, trainable fraction {cfg.model.trainable_fraction:g}",
        f"- input {data.input_size[0]}x{data.input_size[1]} RGB 0-255; preprocessing inside the model",
        f"- files: `{p}model.keras`, `{p}weights.h5`" + (f", `{p}weights.onnx`" if cfg.output.onnx else "")
        + "; class list and thresholds in `labels.json`",
        "",
        "## Data",
        f"- training {data.train.size}, validation {data.valid.size}, test {data.test.size} images from `{cfg.data.split_root}`",
        f"- skipped unreadable images: {len(data.skipped())}",
        "",
        "## Test metrics",
        f"- accuracy {metrics['accuracy']:.4f}",
    ]
    if cfg.model.task == "binary" and metrics.get("roc_auc") is not None:
        lines.append(f"- ROC AUC ({classes[1]}) {metrics['roc_auc']:.4f}")
    if "harmonic_mean_f1" in metrics:
        lines.append(f"- harmonic mean of per-class F1 {metrics['harmonic_mean_f1']:.4f}")
    for c, v in metrics["per_class"].items():
        lines.append(f"- {c}: precision {v['precision']:.4f}, recall {v['recall']:.4f}, F1 {v['f1']:.4f}, support {v['support']}")
    lines += [
        f"- training: {t.get('epochs')} epochs, stopped by {str(t.get('stop_reason', '')).replace('_', ' ')}",
        "",
        "## Limits",
        f"- The test split has {data.test.size} images; with few images the metrics carry wide uncertainty.",
        "- A model trained on synthetic crops has not been validated on real ones; check it on labelled real data "
        "before trusting it.",
        "- Rotated/flipped copies of one crop were kept in one split when the data came from split_data.py; other "
        "sources of leakage (neighbouring frames of one run) are not detected.",
    ]
    atomic_write_text(os.path.join(run_dir, "model_card.md"), "\n".join(lines) + "\n")
