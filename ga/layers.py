"""The project's serializable Keras objects: the preprocessing layer, the per-class metrics
and the augmentation layers Keras lacks.

They are registered under the package name "ga" when this module is imported; `ga.register()`
(or `import ga`) does that before any model is loaded.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import keras
import tensorflow as tf
from keras import ops

# ImageNet channel means in BGR order, as keras.applications.resnet's "caffe" mode uses.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

# ImageNet channel means and standard deviations in RGB order, on the 0-1 scale (the "torch"
# mode of keras.applications: EfficientNetV2-B*, ConvNeXt).
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)

PREPROCESSING = ("resnet_caffe", "scale_01", "torch", "tf", "tf128")


@keras.saving.register_keras_serializable(package="ga")
class Preprocess(keras.layers.Layer):
    """Turn RGB pixels in 0..255 into what the backbone expects.

    Modes:
        resnet_caffe: RGB to BGR, then subtract the ImageNet mean (keras.applications.resnet).
        scale_01: divide by 255 (the CNN-4 backbone).
        torch: divide by 255, subtract the ImageNet mean and divide by its standard deviation
            (EfficientNetV2-B0..B3 and ConvNeXt, as their own preprocessing layers do).
        tf: to [-1, 1] as x / 127.5 - 1 (MobileNetV3).
        tf128: to [-1, 1) as x / 128 - 1 (EfficientNetV2-S).
    """

    def __init__(self, mode="resnet_caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING:
            raise ValueError(f"Preprocess mode must be one of {PREPROCESSING}, got {mode!r}")
        self.mode = mode

    def call(self, x: Any) -> Any:
        x = ops.cast(x, self.compute_dtype)
        if self.mode == "scale_01":
            return x / 255.0
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "tf128":
            return x / 128.0 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, dtype=self.compute_dtype)
            std = ops.convert_to_tensor(_TORCH_STD, dtype=self.compute_dtype)
            return (x / 255.0 - mean) / std
        x = ops.flip(x, axis=-1)
        mean = ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=self.compute_dtype)
        return x - mean

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "mode": self.mode}


class _ColumnMetric:
    """Mixin: score one output column, or its complement (the negative class of a binary
    task); with `argmax`, the column of a one-hot of the most probable class (multiclass)."""

    def __init__(self, column=0, negate=False, argmax=False, **kwargs):
        super().__init__(**kwargs)
        self.column = int(column)
        self.negate = bool(negate)
        self.argmax = bool(argmax)

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        c = self.column
        y_pred = ops.cast(y_pred, "float32")
        if self.argmax:
            y_pred = ops.one_hot(ops.argmax(y_pred, axis=-1), ops.shape(y_pred)[-1])
        y_true = ops.cast(y_true, "float32")[:, c : c + 1]
        y_pred = y_pred[:, c : c + 1]
        if self.negate:
            y_true, y_pred = 1.0 - y_true, 1.0 - y_pred
        return super().update_state(y_true, y_pred, sample_weight=sample_weight)

    def get_config(self) -> dict:
        return {**super().get_config(), "column": self.column, "negate": self.negate, "argmax": self.argmax}


@keras.saving.register_keras_serializable(package="ga")
class ClassF1(_ColumnMetric, keras.metrics.F1Score):
    """F1 of one class at a fixed threshold (keras.metrics.F1Score on one column)."""

    def __init__(self, column=0, negate=False, argmax=False, threshold=0.5, name="f1", **kwargs):
        kwargs.pop("average", None)
        kwargs.pop("num_classes", None)
        super().__init__(column=column, negate=negate, argmax=argmax, average="micro", threshold=threshold, name=name,
                         **kwargs)


@keras.saving.register_keras_serializable(package="ga")
class ClassPrecision(_ColumnMetric, keras.metrics.Precision):
    """Precision of one class (keras.metrics.Precision on one column)."""


@keras.saving.register_keras_serializable(package="ga")
class ClassRecall(_ColumnMetric, keras.metrics.Recall):
    """Recall of one class (keras.metrics.Recall on one column)."""


def class_metrics(columns: Sequence[tuple[str, int, bool]], threshold: float = 0.5, argmax: bool = False) -> list:
    """Per-class precision, recall and F1 metrics named `<kind>_<class>`.

    Args:
        columns: (class, output column, scored on the complement) per class, from the task
            (`ga.tasks`): binary scores classes[0] on the complement of its one output.
        argmax: a class is predicted when its column is the largest (softmax outputs).
    """
    out = []
    for name, col, neg in columns:
        out.append(ClassPrecision(column=col, negate=neg, argmax=argmax, thresholds=threshold, name=f"precision_{name}"))
        out.append(ClassRecall(column=col, negate=neg, argmax=argmax, thresholds=threshold, name=f"recall_{name}"))
        out.append(ClassF1(column=col, negate=neg, argmax=argmax, threshold=threshold, name=f"f1_{name}"))
    return out


# ---------------------------------------------------------------------------- augmentation


@contextlib.contextmanager
def float32_layers() -> Iterator[None]:
    """Layers built inside compute in float32 whatever the global precision policy: image
    augmentation works on 0-255 pixels, which bfloat16's 8 significant bits would round (and
    a float32 factor times a bfloat16 image is a type error)."""
    old = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(old)



class BatchSeed(keras.random.SeedGenerator):
    """Random draws keyed by a seed tensor instead of a seed variable: the k-th draw from it
    uses the stateless seed (seed, k). It holds no state between calls, so a tf.data map that
    augments each batch with the batch's own seed gives the same images in any process, with
    any number of parallel calls (a seed variable advanced from parallel calls does not)."""

    def __init__(self, seed: Any, stream: int = 0):  # no variable: SeedGenerator's own __init__ makes one
        self._seed = tf.cast(seed, tf.int64)
        self._draws = stream << 20  # independent streams from one seed (the two views of SimCLR)

    def next(self, ordered: bool = True) -> Any:
        self._draws += 1
        return tf.stack([self._seed, tf.constant(self._draws, tf.int64)])


def stateless_augment(layers: Sequence[keras.layers.Layer], x: Any, seed: Any, stream: int = 0) -> Any:
    """Apply augmentation layers (training mode) to a batch, every random draw keyed by the
    scalar `seed` (the pipeline's per-batch seed) instead of the layers' seed variables.

    Keras' image layers are applied through their public `get_random_transformation(seed=)`
    and `transform_images`; the project's own through `augment(x, seed)`. `stream` gives
    another independent draw from the same seed; a BatchSeed `seed` (a wrapping layer's)
    goes on drawing from it."""
    gen = seed if isinstance(seed, BatchSeed) else BatchSeed(seed, stream)
    for layer in layers:
        if hasattr(layer, "augment"):
            x = layer.augment(x, gen)
        elif hasattr(layer, "get_random_transformation"):
            x = layer.transform_images(x, layer.get_random_transformation(x, training=True, seed=gen), training=True)
        else:
            raise TypeError(f"{type(layer).__name__} cannot be applied with a batch seed")
    return x


@keras.saving.register_keras_serializable(package="ga")
class RandomRot90(keras.layers.Layer):
    """Each image turned by its own random multiple of 90 degrees and randomly mirrored:
    a random transpose and two random flips give the eight rotations/flips uniformly.
    Square inputs only."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self._gen = keras.random.SeedGenerator(seed)

    def call(self, x: Any, training: bool = True) -> Any:
        return self.augment(x, self._gen) if training else x

    def augment(self, x: Any, seed: Any) -> Any:
        n = tf.shape(x)[0]
        flags = keras.random.uniform((3, n), seed=seed) < 0.5
        pick = lambda f, a, b: tf.where(tf.reshape(f, (-1, 1, 1, 1)), a, b)  # noqa: E731
        x = pick(flags[0], tf.transpose(x, (0, 2, 1, 3)), x)
        x = pick(flags[1], tf.reverse(x, [1]), x)
        return pick(flags[2], tf.reverse(x, [2]), x)

    def get_config(self) -> dict:
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="ga")
class RandomSometimes(keras.layers.Layer):
    """Apply a wrapped augmentation layer to each image with probability `rate`."""

    def __init__(self, layer, rate=0.25, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer if isinstance(layer, keras.layers.Layer) else keras.layers.deserialize(layer)
        self.rate = rate
        self.seed = seed
        self._gen = keras.random.SeedGenerator(seed)

    def call(self, x: Any, training: bool = True) -> Any:
        return tf.where(self._mask(x, self._gen), self.layer(x, training=True), x) if training else x

    def augment(self, x: Any, seed: Any) -> Any:
        return tf.where(self._mask(x, seed), stateless_augment([self.layer], x, seed), x)

    def _mask(self, x, seed):
        return keras.random.uniform((tf.shape(x)[0], 1, 1, 1), seed=seed) < self.rate

    def get_config(self) -> dict:
        return {**super().get_config(), "layer": keras.layers.serialize(self.layer), "rate": self.rate,
                "seed": self.seed}


@keras.saving.register_keras_serializable(package="ga")
class RandomChannelScale(keras.layers.Layer):
    """Multiply each colour channel of each image by a factor in [1 - s, 1 + s]."""

    def __init__(self, scale=0.15, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.seed = seed
        self._gen = keras.random.SeedGenerator(seed)

    def call(self, x: Any, training: bool = True) -> Any:
        return self.augment(x, self._gen) if training and self.scale > 0 else x

    def augment(self, x: Any, seed: Any) -> Any:
        shape = (keras.ops.shape(x)[0], 1, 1, 3)
        f = keras.random.uniform(shape, 1 - self.scale, 1 + self.scale, seed=seed)
        return keras.ops.clip(x * f, 0.0, 255.0)

    def get_config(self) -> dict:
        return {**super().get_config(), "scale": self.scale, "seed": self.seed}


@keras.saving.register_keras_serializable(package="ga")
class RandomResizedCrop(keras.layers.Layer):
    """Crop each image to a random square covering a random share of its area (drawn from
    `area`), at a random position, and resize it to (height, width) (SimCLR's crop with a
    square aspect). Outside training, the whole image is resized."""

    def __init__(self, height, width, area=(0.25, 1.0), seed=None, **kwargs):
        super().__init__(**kwargs)
        self.height, self.width = int(height), int(width)
        self.area = tuple(float(a) for a in area)
        self.seed = seed
        self._gen = keras.random.SeedGenerator(seed)

    def call(self, x: Any, training: bool = True) -> Any:
        return self.augment(x, self._gen) if training else tf.image.resize(x, (self.height, self.width))

    def augment(self, x: Any, seed: Any) -> Any:
        size = (self.height, self.width)
        n = tf.shape(x)[0]
        h, w = tf.cast(tf.shape(x)[1], tf.float32), tf.cast(tf.shape(x)[2], tf.float32)
        share = keras.random.uniform((n,), self.area[0], self.area[1], seed=seed)
        side = tf.minimum(tf.sqrt(share * h * w), tf.minimum(h, w))
        fh, fw = side / h, side / w
        y0 = keras.random.uniform((n,), seed=seed) * (1 - fh)
        x0 = keras.random.uniform((n,), seed=seed) * (1 - fw)
        boxes = tf.stack([y0, x0, y0 + fh, x0 + fw], axis=1)
        return tf.image.crop_and_resize(x, boxes, tf.range(n), size)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.height, self.width, input_shape[-1])

    def get_config(self) -> dict:
        return {**super().get_config(), "height": self.height, "width": self.width, "area": list(self.area),
                "seed": self.seed}
