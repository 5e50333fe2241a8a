"""Backbones, the in-model preprocessing layer, the classification head, and freezing.

A built model takes RGB pixels 0..255 at the configured size: preprocessing (ResNet's
"caffe" transform, the "torch" or [-1, 1] scaling of the other keras.applications families,
or /255 for CNN-4; ga/backbones.py) is the registered `ga.layers.Preprocess` layer inside
the model, so Keras, ONNX and inference consumers only resize.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Callable, Sequence

import keras

from ga.backbones import family_of, snapped_cut, weights_family
from ga.config import model_input_size, preprocessing_mode
from ga.errors import ConfigError, first_line
from ga.layers import Preprocess
from ga.tasks import get_task

if TYPE_CHECKING:
    from ga.config import Config, ModelConfig

log = logging.getLogger(__name__)

FEATURES_LAYER = "features"  # pooled backbone output, before the head (used for clustering)


def imagenet_weights_path(backbone: str) -> str:
    """Where Keras caches a backbone's ImageNet weights (no top), and the file name."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models", family_of(backbone).weights_file)


def _application(backbone, weights, shape):
    """A keras.applications backbone without its top (and without its own preprocessing
    layer: the model's Preprocess layer does that), ImageNet weights through Keras's own
    download and cache, a weights file, or none."""
    fam = family_of(backbone)
    build = getattr(keras.applications, fam.builder)
    options = dict(fam.options)
    if weights == "imagenet":
        cached = imagenet_weights_path(backbone)
        try:
            # Keras's own download and cache (~/.keras/models, or $KERAS_HOME/models).
            return build(include_top=False, weights="imagenet", input_shape=shape, **options)
        except Exception as exc:  # keras raises a bare Exception for a failed fetch
            if "URL fetch failure" not in str(exc) and not isinstance(exc, OSError):
                raise
            raise ConfigError(
                f"ImageNet weights for {backbone} are not cached at {cached} and cannot be downloaded "
                f"({str(exc).split(' -- ')[-1].strip()}); copy {os.path.basename(cached)} there, "
                f"or set model.weights to a weights file path, or model.weights: none"
            ) from None
    base = build(include_top=False, weights=None, input_shape=shape, **options)
    if weights not in ("none", None):
        load_weights_file(base, weights, backbone)
    return base


def load_weights_file(base: keras.Model, path: str, backbone: str) -> None:
    """`model.weights: <file>` into a backbone; a file of another family (or none) is one
    line naming both."""
    try:
        base.load_weights(path)
    except Exception as exc:  # h5py and Keras raise several types for a bad file
        other = _file_family(path)
        mine = family_of(backbone).family
        if other and other != mine:
            raise ConfigError(f"model.weights: {path} holds {other} weights, not {mine} ones (model.backbone: "
                              f"{backbone}); use a weights file of the {mine} family, or change model.backbone") from None
        raise ConfigError(f"model.weights: cannot load {path} into {backbone}: {first_line(exc).rstrip(':')}") from None


def _file_family(path):
    """The backbone family an .h5 weights file was saved from, or None."""
    shapes = []
    try:
        import h5py

        with h5py.File(path, "r") as fh:
            fh.visititems(lambda name, obj: shapes.append(obj.shape) if isinstance(obj, h5py.Dataset) else None)
    except (OSError, ValueError):
        return None
    return weights_family(shapes)


def cnn4(shape: Sequence[int], name: str = "cnn4") -> keras.Model:
    """The GrapheneClassifier's CNN-4: 32-64-128-256 filters, kernel 5 then 3, BatchNorm,
    ReLU, 2x2 max-pool after the first three blocks; its global pooling is the head's."""
    L = keras.layers
    inp = keras.Input(shape)
    x = inp
    for i, (filters, k) in enumerate(((32, 5), (64, 3), (128, 3), (256, 3))):
        x = L.Conv2D(filters, k, padding="same", use_bias=False, name=f"conv{i + 1}")(x)
        # momentum 0.9 is PyTorch's BatchNorm default (0.1 there), as in the original CNN-4.
        x = L.BatchNormalization(momentum=0.9, name=f"bn{i + 1}")(x)
        x = L.ReLU(name=f"relu{i + 1}")(x)
        if i < 3:
            x = L.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    return keras.Model(inp, x, name=name)


def build_backbone(model_cfg: ModelConfig, shape: Sequence[int]) -> keras.Model:
    """The backbone as a sub-model, weights loaded, with its trainable fraction set."""
    fam = family_of(model_cfg.backbone)
    if model_cfg.backbone_weights is not None:
        base = cnn4(shape) if not fam.pretrained else _application(model_cfg.backbone, "none", shape)
        load_backbone_weights(base, model_cfg.backbone_weights)
    elif not fam.pretrained:
        base = cnn4(shape)
        if model_cfg.weights not in ("none", "imagenet"):
            load_weights_file(base, model_cfg.weights, model_cfg.backbone)
        elif model_cfg.weights == "imagenet":
            raise ConfigError("model.weights: imagenet is not available for the cnn4 backbone; use none or a file")
    else:
        base = _application(model_cfg.backbone, model_cfg.weights, shape)
    pretrained = model_cfg.weights != "none" or model_cfg.backbone_weights is not None
    set_trainable_fraction(base, model_cfg.trainable_fraction, fam.freeze_bn_pretrained and pretrained, fam.block)
    return base


def load_backbone_weights(base: keras.Model, path: str) -> None:
    """Load a `.weights.h5` file saved from a backbone of the same architecture (a contrastive
    run's <prefix>backbone.weights.h5). Raises ConfigError when it does not fit."""
    load_checked(base, path, "model.backbone_weights", f"the {base.name} backbone")


def load_checked(model: keras.Model, path: str, key: str, what: str) -> None:
    """model.load_weights(path), where a file that does not fit `model` (shapes, or layers
    that find no weights) is a ConfigError naming `key`, not a model left partly at its
    random start."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except (ValueError, OSError, KeyError) as exc:
            raise ConfigError(f"{key}: {path} does not fit {what}: {first_line(exc)}") from None
    # Keras only warns when part of the file finds no matching layer. (The other warnings of
    # a load are NumPy's copy-keyword notes from h5py, dropped.)
    skipped = [str(w.message) for w in caught if "Skipping" in str(w.message) or "freshly-initialized" in str(w.message)]
    if skipped:
        raise ConfigError(f"{key}: {path} does not fit {what}: {first_line(skipped[0])}")


def init_weights_file(path: str) -> str:
    """The file model.init_weights names: a run folder's .keras model, or the file itself."""
    if not os.path.isdir(path):
        return path
    found = sorted(f for f in os.listdir(path) if f.endswith(".keras") and not f.startswith("."))
    if not found:
        raise ConfigError(f"model.init_weights: {path} holds no .keras model (a complete run folder has "
                          f"<prefix>model.keras)")
    return os.path.join(path, found[0])


def load_init_weights(model: keras.Model, path: str) -> str:
    """Start `model` from a whole trained model of the same architecture (model.init_weights);
    returns the file read."""
    file = init_weights_file(path)
    load_checked(model, file, "model.init_weights", f"this model ({model.name}, output {model.output_shape[1:]})")
    return file


def set_trainable_fraction(base: keras.Model, fraction: float, freeze_batchnorm: bool = False,
                           block: str | None = None) -> int:
    """Freeze all but the last `fraction` of the backbone's layers.

    Frozen BatchNorm layers run in inference mode (Keras 3 does this for any
    BatchNormalization with trainable=False), as in keras-io's fine-tuning guide;
    `freeze_batchnorm` keeps every BatchNorm layer so, as that guide does when it unfreezes
    a pretrained backbone. `block` (a family's block-prefix regex, ga.backbones) moves the
    cut back to the start of the block it falls in. Returns the number of trainable layers.
    """
    layers = base.layers
    cut = snapped_cut([(layer.name, bool(layer.weights)) for layer in layers],
                      len(layers) - int(round(len(layers) * fraction)), block)
    n_train = len(layers) - cut
    base.trainable = True
    for i, layer in enumerate(layers):
        layer.trainable = i >= cut
        if freeze_batchnorm and isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    log.debug("backbone %s: %d of %d layers trainable", base.name, n_train, len(layers))
    return n_train


def _backbone_features(cfg, inputs):
    """Preprocess -> backbone -> global pooling (the FEATURES_LAYER)."""
    m = cfg.model
    x = Preprocess(preprocessing_mode(m.backbone), name="preprocess")(inputs)
    base = build_backbone(m, tuple(inputs.shape[1:]))
    x = base(x)
    pool = keras.layers.GlobalAveragePooling2D if m.head.pooling == "avg" else keras.layers.GlobalMaxPooling2D
    return pool(name=FEATURES_LAYER)(x)


def build_encoder(cfg: Config) -> keras.Model:
    """The contrastive model: Input -> Preprocess -> backbone -> pooling -> projection head
    (mlp: dense + ReLU, dense; linear: dropout, dense), whose output the loss compares."""
    h, w = model_input_size(cfg)
    L = keras.layers
    c = cfg.contrastive
    inputs = keras.Input((h, w, 3), name="image")
    x = _backbone_features(cfg, inputs)
    if c.head == "mlp":
        x = L.Dense(c.projection[0], activation="relu", name="projection_dense1")(x)
    elif c.head_dropout > 0:
        x = L.Dropout(c.head_dropout, name="projection_dropout")(x)
    outputs = L.Dense(c.projection[-1], dtype="float32", name="projection")(x)
    return keras.Model(inputs, outputs, name=f"ga_simclr_{cfg.model.backbone}")


def backbone_of(model: keras.Model) -> keras.Model:
    """The backbone sub-model inside a model built here."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise ValueError(f"{model.name} holds no backbone sub-model")


def build_model(cfg: Config, num_outputs: int) -> keras.Model:
    """Input (RGB 0..255) -> Preprocess -> backbone -> pooling -> head -> outputs with the
    task's activation (softmax for multiclass, sigmoid otherwise)."""
    h, w = model_input_size(cfg)
    m = cfg.model
    L = keras.layers
    inputs = keras.Input((h, w, 3), name="image")
    x = _backbone_features(cfg, inputs)
    for i, (units, drop, bn) in enumerate(zip(m.head.units, m.head.dropout, m.head.batch_norm), 1):
        x = L.Dense(units, activation="relu", name=f"head_dense{i}")(x)
        if bn:
            x = L.BatchNormalization(name=f"head_bn{i}")(x)
        if drop > 0:
            x = L.Dropout(drop, name=f"head_dropout{i}")(x)
    if m.head.output_dropout > 0:
        x = L.Dropout(m.head.output_dropout, name="head_output_dropout")(x)
    # The output stays float32 under mixed precision, for a stable sigmoid/softmax and loss.
    outputs = L.Dense(num_outputs, activation=get_task(cfg).activation, dtype="float32", name="output")(x)
    return keras.Model(inputs, outputs, name=f"ga_{m.backbone}")


def batch_predictor(model: keras.Model) -> Callable[[Any], Any]:
    """A compiled inference function for batches of images (numpy in, numpy out).

    Called directly rather than through `predict_on_batch`, which under a
    MirroredStrategy returns each replica's share concatenated twice (Keras 3.15).
    """
    import numpy as np
    import tensorflow as tf

    cached = getattr(model, "_ga_batch_predictor", None)
    if cached is not None:
        return cached
    from ga.folding import folded_forward

    forward = folded_forward(model)  # each Conv2D + BatchNorm as one convolution: the same outputs, faster
    fn = tf.function(forward, reduce_retracing=True)
    predict = lambda x: np.asarray(fn(tf.convert_to_tensor(x, tf.float32)), np.float32)  # noqa: E731
    model._ga_batch_predictor = predict  # one traced function per model, reused by every pass
    return predict
