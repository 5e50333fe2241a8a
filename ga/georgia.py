"""The Georgia study's own artefacts in `ga` (`python -m ga.georgia import ...`).

    python -m ga.georgia import GAweights_<timestamp>.h5 --out deliverables/<name>

The study's training code (tf.keras 2.10) saves a whole model as `GAweights_<timestamp>.h5`:
ResNet-101 without its top, then global average pooling, Dense 512 (ReLU), BatchNorm,
Dropout 0.4, Dense 256 (ReLU), Dropout 0.3, Dense 1 (sigmoid), fed with images that
`preprocess_input` (caffe: RGB to BGR, ImageNet mean subtracted) prepared outside the model,
and with output 1 = PG (its class folders were `0` = CEX, `1` = PG).

`import` rebuilds that architecture as a `ga` model (`configs/resnet101.yaml`'s), copies the
weights from the file layer by layer (ResNet layers by name, head layers in order), and
writes a run folder that follows `ga`'s contract: raw RGB 0-255 input with the caffe
preprocessing inside the model, labels.json with classes [cex, pg] and positive class pg,
`.keras`, `.h5` and a parity-checked ONNX. `inference.py`, `--cluster` and `--evaluate` then
work on it like on any run. The weights are read with h5py, so no tf.keras is needed.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from ga.errors import GAError, ModelError, first_line

if TYPE_CHECKING:
    from ga.config import Config

log = logging.getLogger(__name__)

def study_config(input_size: int = 224, threshold: float = 0.5) -> Config:
    """The study's model as a `ga` Config (weights none; they come from the file)."""
    from ga.config import load_config

    h = int(input_size)
    return load_config(None, ["model.backbone=resnet101", "model.weights=none", "model.head.units=[512,256]",
                              "model.head.dropout=[0.4,0.3]", "model.head.batch_norm=[true,false]",
                              "model.head.pooling=avg", "model.head.output_dropout=0.0", f"model.threshold={threshold}",
                              f"data.image_size=[{h},{h}]", "data.classes=[cex,pg]", "output.prefix=GA"])


def read_h5_weights(path: str) -> tuple[list[str], dict[str, list[np.ndarray]]]:
    """{layer name: [arrays in saved order]} and the layer order of a tf.keras whole-model
    (or weights-only) HDF5 file."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["layer_names"]]
            weights = {}
            for name in names:
                g = group[name]
                wnames = [w.decode() if isinstance(w, bytes) else w for w in g.attrs.get("weight_names", [])]
                weights[name] = [np.asarray(g[w]) for w in wnames]
    except (OSError, KeyError) as exc:
        raise ModelError(f"{path}: not a Keras HDF5 model file ({first_line(exc)})") from None
    return names, weights


def copy_study_weights(model: Any, names: list[str], weights: dict[str, list[np.ndarray]], path: str) -> None:
    """Set a `ga` study model's weights from the study file's layers."""
    from ga.model import backbone_of

    backbone = backbone_of(model)
    done = set()
    for layer in backbone.layers:
        if not layer.weights:
            continue
        if layer.name not in weights:
            raise ModelError(f"{path}: no layer {layer.name!r}; not the study's ResNet-101 model")
        _set(layer, weights[layer.name], path)
        done.add(layer.name)
    # The head's layers were named by tf.keras's counters (dense, dense_1, ...): take them in order.
    rest = [n for n in names if n not in done and weights[n]]
    dense = [n for n in rest if n == "dense" or n.startswith("dense_")]
    norm = [n for n in rest if n.startswith("batch_normalization")]
    if len(dense) != 3 or len(norm) != 1 or len(rest) != 4:
        raise ModelError(f"{path}: its head layers {rest} are not the study's (Dense 512, BatchNorm, Dense 256, "
                         f"Dense 1)")
    for source, target in zip(dense + norm, ["head_dense1", "head_dense2", "output", "head_bn1"]):
        _set(model.get_layer(target), weights[source], path)


def _set(layer, arrays, path):
    want = [tuple(w.shape) for w in layer.weights]
    got = [tuple(a.shape) for a in arrays]
    if want != got:
        raise ModelError(f"{path}: layer {layer.name!r} holds weights of shapes {got}, the study's model needs {want}")
    layer.set_weights(arrays)


def import_study_h5(path: str, out: str, input_size: int = 224, threshold: float = 0.5) -> str:
    """Turn the study's whole-model HDF5 file into a complete `ga` run folder at `out`.

    Returns:
        The run folder.
    """
    import ga

    ga.register()
    from ga import export, runs
    from ga.config import dump_config
    from ga.files import atomic_write_json, atomic_write_text, sha256_file
    from ga.model import build_model

    if not os.path.isfile(path):
        raise GAError(f"not found: {path}")
    if os.path.exists(out) and os.listdir(out):
        raise GAError(f"{out} exists and is not empty; choose a new folder", arg="out")
    names, weights = read_h5_weights(path)
    cfg = study_config(input_size, threshold)
    model = build_model(cfg, 1)
    copy_study_weights(model, names, weights, path)
    os.makedirs(out, exist_ok=True)
    open(os.path.join(out, runs.RUNNING), "w").close()
    dump_config(cfg, os.path.join(out, "config.yaml"))
    runs.write_labels(out, runs.labels_document(cfg, ["cex", "pg"]))
    export.save_keras(model, out, "GA")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (8, input_size, input_size, 3)).astype(np.float32)
    onnx_info = export.export_onnx(model, out, cfg, images)
    source = {"file": os.path.abspath(path), "sha256": sha256_file(path),
              "imported": _dt.datetime.now().isoformat(timespec="seconds"), "by": "python -m ga.georgia import"}
    atomic_write_json(os.path.join(out, "metrics.json"), {"task": "binary", "classes": ["cex", "pg"],
                                                          "imported_from": source, "onnx": onnx_info})
    atomic_write_text(os.path.join(out, "model_card.md"), _card(out, source, input_size))
    runs.mark_complete(out)
    return out


def _card(out, source, size):
    return "\n".join([
        f"# Model card: {os.path.basename(os.path.abspath(out))}",
        "",
        "Imported from the Georgia study's training code output (`python -m ga.georgia import`):",
        f"`{source['file']}` (sha256 {source['sha256']}).",
        "",
        "## Model",
        "- ResNet-101 + GAP, Dense 512, BatchNorm, Dropout 0.4, Dense 256, Dropout 0.3, Dense 1 (sigmoid): the "
        "study's architecture, its weights unchanged",
        f"- input {size}x{size} RGB 0-255; the caffe preprocessing the study applied outside the model is inside it "
        "here",
        "- output: probability of pg (the study's class 1); cex is class 0",
        "",
        "## Metrics",
        "None here: the file carries no record of its data. Evaluate it on labelled crops with "
        "`python inference.py <folder> --evaluate --model <this folder>`.",
        "",
    ])


if __name__ == "__main__":
    # `python -m ga.georgia import ...` is `python -m ga import ...`, run in a process of its own: the
    # command line (ga.cli) sits above every library module, and none imports it
    import subprocess

    args = sys.argv[2:] if sys.argv[1:2] == ["import"] else sys.argv[1:]
    sys.exit(subprocess.call([sys.executable, "-m", "ga", "import", *args]))
