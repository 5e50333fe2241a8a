"""The project's serializable Keras objects: the preprocessing layer and per-class metrics.

They are registered under the package name "ga", so `import ga` is all a consumer needs to
load a saved model with `keras.models.load_model` in safe mode.
"""

import keras
from keras import ops

# ImageNet channel means in BGR order, as keras.applications.resnet's "caffe" mode uses.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

PREPROCESSING = ("resnet_caffe", "scale_01")


@keras.saving.register_keras_serializable(package="ga")
class Preprocess(keras.layers.Layer):
    """Turn RGB pixels in 0..255 into what the backbone expects.

    Modes:
        resnet_caffe: RGB to BGR, then subtract the ImageNet mean (keras.applications.resnet).
        scale_01: divide by 255 (the CNN-4 backbone).
    """

    def __init__(self, mode="resnet_caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING:
            raise ValueError(f"Preprocess mode must be one of {PREPROCESSING}, got {mode!r}")
        self.mode = mode

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        if self.mode == "scale_01":
            return x / 255.0
        x = ops.flip(x, axis=-1)
        mean = ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=self.compute_dtype)
        return x - mean

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


class _ColumnMetric:
    """Mixin: score one output column, or its complement (the negative class of a binary task)."""

    def __init__(self, column=0, negate=False, **kwargs):
        super().__init__(**kwargs)
        self.column = int(column)
        self.negate = bool(negate)

    def update_state(self, y_true, y_pred, sample_weight=None):
        c = self.column
        y_true = ops.cast(y_true, "float32")[:, c : c + 1]
        y_pred = ops.cast(y_pred, "float32")[:, c : c + 1]
        if self.negate:
            y_true, y_pred = 1.0 - y_true, 1.0 - y_pred
        return super().update_state(y_true, y_pred, sample_weight=sample_weight)

    def get_config(self):
        return {**super().get_config(), "column": self.column, "negate": self.negate}


@keras.saving.register_keras_serializable(package="ga")
class ClassF1(_ColumnMetric, keras.metrics.F1Score):
    """F1 of one class at a fixed threshold (keras.metrics.F1Score on one column)."""

    def __init__(self, column=0, negate=False, threshold=0.5, name="f1", **kwargs):
        kwargs.pop("average", None)
        kwargs.pop("num_classes", None)
        super().__init__(column=column, negate=negate, average="micro", threshold=threshold, name=name, **kwargs)


@keras.saving.register_keras_serializable(package="ga")
class ClassPrecision(_ColumnMetric, keras.metrics.Precision):
    """Precision of one class (keras.metrics.Precision on one column)."""


@keras.saving.register_keras_serializable(package="ga")
class ClassRecall(_ColumnMetric, keras.metrics.Recall):
    """Recall of one class (keras.metrics.Recall on one column)."""


def class_metrics(classes, task, threshold=0.5):
    """Per-class precision, recall and F1 metrics named `<kind>_<class>`.

    Binary: one sigmoid unit is the probability of classes[1]; classes[0] is scored on the
    complement. Multi-label: column i is classes[i].
    """
    out = []
    for i, name in enumerate(classes):
        if task == "binary":
            col, neg = 0, i == 0
        else:
            col, neg = i, False
        out.append(ClassPrecision(column=col, negate=neg, thresholds=threshold, name=f"precision_{name}"))
        out.append(ClassRecall(column=col, negate=neg, thresholds=threshold, name=f"recall_{name}"))
        out.append(ClassF1(column=col, negate=neg, threshold=threshold, name=f"f1_{name}"))
    return out
