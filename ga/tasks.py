"""One object per `model.task`: everything that differs between binary, multiclass,
multi-label and contrastive models, in one place.

A task is chosen once (`get_task(cfg)`, `get_task(labels)` or `get_task("binary")`) and the
other modules ask it: how many outputs and which activation, the loss and compile metrics,
how labels are encoded, the decision rule, the metrics and tables of its reports, the
inference columns, the Grad-CAM target, the scan rules it allows and the configuration keys
it refuses. What the reports and printed lines say about each task is `ga.task_text`.

Conventions every task keeps (DESIGN's contracts):
- `classes` is the run's class list (labels.json); output column i is classes[i], except
  binary, whose one sigmoid output is the probability of classes[1] (the positive class).
- Labels `y` are float32 (n, outputs): binary the class index, multiclass one-hot,
  multi-label 0/1 per class.
- `decide` returns a bool matrix (n, len(classes)) of the classes each row names.

Example:
    >>> import numpy as np
    >>> from ga.tasks import get_task
    >>> task = get_task("binary")
    >>> task.decide(np.array([[0.2], [0.9]]), ["cex", "pg"], {"pg": 0.5}).tolist()
    [[True, False], [False, True]]
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np

from ga.errors import ConfigError, DataError, GAError, ModelError

TASK_NAMES = ("binary", "multiclass", "multilabel", "contrastive")


class Task:
    """What a task decides; subclasses override what differs."""

    name: str = ""
    classifier: bool = True  # it has classes and a classification head
    exclusive: bool = True  # each image has exactly one class (class folders, a `label` column)
    activation: str = "sigmoid"  # of the output layer
    loss_kind: str = "binary"  # "binary" or "categorical" cross-entropy (reports name it)
    tunes_thresholds: bool = False  # per-class thresholds tuned on the validation split after training
    min_classes: int = 2
    max_classes: int | None = None

    def __repr__(self) -> str:
        return f"<task {self.name}>"

    # ------------------------------------------------------------------ classes and labels

    def units(self, classes: Sequence[str]) -> int:
        """Model outputs: one per class (binary overrides: one sigmoid unit)."""
        return len(classes)

    def check_classes(self, classes: Sequence[str], where: str) -> None:
        """Raise DataError when `classes` (found in `where`) do not fit this task."""
        n = len(classes)
        if n < self.min_classes:
            raise DataError(f"{where} needs at least {self.min_classes} classes for a {self.name} task, found "
                            f"{list(classes)}")
        if self.max_classes is not None and n > self.max_classes:
            raise DataError(f"{where} has {n} classes {list(classes)}; the {self.name} task takes {self.max_classes} "
                            f"(set model.task: multiclass for more)")

    def check_labels_document(self, classes: Sequence[str], path: str) -> None:
        """Raise ModelError when a labels.json class list does not fit this task."""
        if len(classes) < self.min_classes or (self.max_classes and len(classes) > self.max_classes):
            raise ModelError(f"{path}: a {self.name} model needs {self._count_text()} classes, got {list(classes)}")

    def _count_text(self) -> str:
        return f"exactly {self.max_classes}" if self.max_classes == self.min_classes else f"at least {self.min_classes}"

    def encode(self, index: Sequence[int], n_classes: int) -> np.ndarray:
        """Labels (n, outputs) of exclusive classes from class indices (n,)."""
        return np.asarray(index, int).astype(np.float32).reshape(-1, 1)

    def true_index(self, y: np.ndarray) -> np.ndarray:
        """Class indices (n,) of exclusive labels."""
        return np.asarray(y)[:, 0].astype(int)

    def class_counts(self, y: np.ndarray, classes: Sequence[str]) -> dict[str, int]:
        """Images per class of a split's labels (multi-label: positives per class)."""
        y = np.asarray(y)
        return {c: int(y[:, i].sum()) for i, c in enumerate(classes)}

    def sample_weights(self, y: np.ndarray, classes: Sequence[str], weights: Mapping[str, float]) -> np.ndarray:
        """Per-image loss weights: the weight of each image's class (training.class_weight)."""
        return np.asarray([weights[classes[i]] for i in self.true_index(y)], np.float32)

    def any_column(self, cfg: Any) -> list[str]:
        """Extra derived classes the task appends to the data's (multi-label's "any")."""
        return []

    # ------------------------------------------------------------------ decisions

    def default_thresholds(self, classes: Sequence[str], threshold: float) -> dict[str, float]:
        """labels.json's thresholds before any tuning."""
        return {c: threshold for c in classes}

    def positive_class(self, classes: Sequence[str]) -> str | None:
        return None

    def decide(self, probs: np.ndarray, classes: Sequence[str], thresholds: Mapping[str, float]) -> np.ndarray:
        """Which classes each row of outputs names: bool (n, len(classes))."""
        raise NotImplementedError

    def predicted(self, probs: np.ndarray, classes: Sequence[str], thresholds: Mapping[str, float]) -> np.ndarray:
        """Predicted labels: exclusive tasks a class index (n,), multi-label a 0/1 matrix (n, k)."""
        on = self.decide(probs, classes, thresholds)
        return on.argmax(axis=1).astype(int) if self.exclusive else on.astype(int)

    def class_probabilities(self, probs: np.ndarray) -> np.ndarray:
        """One probability per class (binary: [1 - p, p])."""
        return np.asarray(probs, np.float32)

    def confidence(self, probs_row: np.ndarray, named: np.ndarray, classes: Sequence[str]) -> float:
        """The confidence printed beside a decision: the probability of the class named."""
        return float(np.max(probs_row))

    def check_threshold_override(self) -> None:
        """Raise GAError when a threshold override does not apply to this task."""

    def right(self, y_true: np.ndarray, decided: np.ndarray) -> np.ndarray:
        """Whether each decision equals the truth: bool (n,)."""
        return np.argmax(decided, axis=1) == self.true_index(y_true)

    def confidence_of_rows(self, y_prob: np.ndarray) -> np.ndarray:
        """How sure each decision is, to rank examples (higher: surer)."""
        return np.max(y_prob, axis=1)

    def strata(self, y_true: np.ndarray) -> np.ndarray:
        """A group per image for picking one example per class in figures."""
        return self.true_index(y_true)

    # ------------------------------------------------------------------ training

    def loss(self, smoothing: float = 0.0) -> Any:
        import keras

        return keras.losses.BinaryCrossentropy(label_smoothing=smoothing)

    def accuracy(self, threshold: float) -> Any:
        import keras

        return keras.metrics.BinaryAccuracy(name="accuracy", threshold=threshold)

    def metric_columns(self, classes: Sequence[str]) -> list[tuple[str, int, bool]]:
        """(class, output column, scored on the complement) of each per-class metric."""
        return [(c, i, False) for i, c in enumerate(classes)]

    def compile_metrics(self, classes: Sequence[str], threshold: float) -> list:
        """Accuracy, AUC (one-vs-rest macro average when there is a column per class) and the
        per-class precision, recall and F1 (ga.layers)."""
        import keras

        from ga.layers import class_metrics

        per_class = self.units(classes) > 1
        return [self.accuracy(threshold),
                keras.metrics.AUC(name="auc", multi_label=per_class, num_labels=len(classes) if per_class else None),
                *class_metrics(self.metric_columns(classes), threshold, argmax=self.activation == "softmax")]

    def check_config(self, cfg: Any) -> None:
        """Raise ConfigError for configuration keys this task refuses."""
        if cfg.data.any_class:
            raise ConfigError("data.any_class applies to model.task: multilabel only")
        if cfg.data.balance:
            raise ConfigError("data.balance applies to model.task: multilabel only (binary and multiclass: "
                              "training.class_weight)")

    # ------------------------------------------------------------------ reports

    def cross_entropy(self, y_true: np.ndarray, y_prob: np.ndarray, eps: float = 1e-7) -> float | None:
        """The training loss on a split, as Keras computes it (probabilities clipped to
        [eps, 1 - eps], mean over outputs and images); None for an empty split."""
        if len(y_true) == 0:
            return None
        return float(np.mean(self.row_losses(y_true, y_prob, eps)))

    def row_losses(self, y_true: np.ndarray, y_prob: np.ndarray, eps: float = 1e-7) -> np.ndarray:
        """Each image's training loss under its label (n,): binary cross-entropy, the mean
        over outputs."""
        p = np.clip(np.asarray(y_prob, np.float64), eps, 1 - eps)
        y = np.asarray(y_true, np.float64)
        return np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)), axis=1)

    def decided_labels(self, decided: np.ndarray, classes: Sequence[str]) -> np.ndarray:
        """Decisions (bool (n, classes), `decide`) as label rows, the layout of y_true."""
        return self.encode(np.argmax(decided, axis=1), len(classes))

    def metrics(self, classes: Sequence[str], y_true: np.ndarray, y_prob: np.ndarray,
                thresholds: Mapping[str, float]) -> tuple[dict, str]:
        """The metrics.json numbers (per-class precision/recall/F1/support, accuracy, AUC,
        confusion matrix) and the classification report text."""
        from sklearn import metrics as skm

        y_pred = self.predicted(y_prob, classes, thresholds)
        t = self.true_index(y_true)
        labels = list(range(len(classes)))
        kw = dict(labels=labels, target_names=list(classes), digits=4, zero_division=0)
        rep = skm.classification_report(t, y_pred, output_dict=True, **kw)
        out = {"positive_class": self.positive_class(classes), "accuracy": float(skm.accuracy_score(t, y_pred)),
               "balanced_accuracy": _balanced_accuracy(t, y_pred)}
        out.update(self._auc(classes, t, y_prob))
        out["confusion_matrix"] = skm.confusion_matrix(t, y_pred, labels=labels).tolist()
        return self._with_per_class(out, rep, classes), skm.classification_report(t, y_pred, **kw)

    @staticmethod
    def _with_per_class(out: dict, rep: dict, classes: Sequence[str]) -> dict:
        out["per_class"] = {c: {"precision": rep[c]["precision"], "recall": rep[c]["recall"],
                                "f1": rep[c]["f1-score"], "support": int(rep[c]["support"])} for c in classes}
        for avg in ("macro avg", "weighted avg"):
            if avg in rep:
                out[avg.replace(" ", "_")] = {k.replace("-score", ""): v for k, v in rep[avg].items()}
        return out

    def _auc(self, classes: Sequence[str], t: np.ndarray, y_prob: np.ndarray) -> dict:
        raise NotImplementedError

    def prediction_rows(self, paths: Sequence[str], classes: Sequence[str], y_true: np.ndarray,
                        y_prob: np.ndarray, thresholds: Mapping[str, float]) -> tuple[list[str], list[list]]:
        """predictions.csv of a labelled set: (header, rows)."""
        pred = self.predicted(y_prob, classes, thresholds)
        return (["path", "true", "predicted", *(f"p_{c}" for c in classes)],
                [[p, classes[int(t)], classes[int(d)], *(f"{x:.6f}" for x in pr)]
                 for p, t, d, pr in zip(paths, self.true_index(y_true), pred, y_prob)])

    def roc_pairs(self, classes: Sequence[str], y_true: np.ndarray, y_prob: np.ndarray) -> list:
        """(name, truth 0/1, score) of every ROC/PR curve drawn."""
        return [(c, y_true[:, i], y_prob[:, i]) for i, c in enumerate(classes)]

    # ------------------------------------------------------------------ inference

    def gradcam_columns(self, decided: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """The output column Grad-CAM explains for each image: the class the model named
        (-1: the negative class of a binary model)."""
        return np.argmax(decided, axis=1)

    def gradcam_panels(self, classes: Sequence[str]) -> list:
        """Panels of inference.py --explain: [None] is one panel for the class named."""
        return [None]

    def panel_value(self, probs_row: np.ndarray) -> float:
        """The probability shown on a one-panel Grad-CAM figure."""
        return float(np.max(probs_row))

    def scan_marker(self, classes: Sequence[str], thresholds: Mapping[str, float], rule: str,
                    threshold: float | None = None) -> Callable[[np.ndarray], np.ndarray]:
        """The function (tile outputs -> bool per tile) of a scan rule; GAError when the task
        cannot be scanned by it."""
        raise GAError(f"needs a multi-label or binary model; this one is {self.name}", arg="scan")

    def scan_columns(self, classes: Sequence[str]) -> list[str]:
        """The probability columns of a scan's tile table."""
        return list(classes)


class BinaryTask(Task):
    """Two exclusive classes; one sigmoid output, the probability of classes[1]."""

    name = "binary"
    min_classes = max_classes = 2

    def units(self, classes: Sequence[str]) -> int:
        return 1

    def default_thresholds(self, classes: Sequence[str], threshold: float) -> dict[str, float]:
        return {classes[1]: threshold}

    def positive_class(self, classes: Sequence[str]) -> str:
        return classes[1]

    def decide(self, probs: np.ndarray, classes: Sequence[str], thresholds: Mapping[str, float]) -> np.ndarray:
        pos = np.asarray(probs, np.float32)[:, 0] > thresholds[classes[1]]
        return np.stack([~pos, pos], axis=1)

    def class_probabilities(self, probs: np.ndarray) -> np.ndarray:
        probs = np.asarray(probs, np.float32)
        return np.stack([1 - probs[:, 0], probs[:, 0]], axis=1)

    def confidence(self, probs_row: np.ndarray, named: np.ndarray, classes: Sequence[str]) -> float:
        p = float(probs_row[0])
        return p if named[1] else 1 - p

    def class_counts(self, y: np.ndarray, classes: Sequence[str]) -> dict[str, int]:
        y = np.asarray(y)
        return {c: int((y[:, 0] == i).sum()) for i, c in enumerate(classes)}

    def confidence_of_rows(self, y_prob: np.ndarray) -> np.ndarray:
        return np.abs(y_prob[:, 0] - 0.5)

    def metric_columns(self, classes: Sequence[str]) -> list[tuple[str, int, bool]]:
        return [(c, 0, i == 0) for i, c in enumerate(classes)]  # classes[0] on the complement

    def _auc(self, classes: Sequence[str], t: np.ndarray, y_prob: np.ndarray) -> dict:
        from sklearn import metrics as skm

        return {"roc_auc": float(skm.roc_auc_score(t, y_prob[:, 0])) if len(set(t)) == 2 else None}

    def prediction_rows(self, paths: Sequence[str], classes: Sequence[str], y_true: np.ndarray,
                        y_prob: np.ndarray, thresholds: Mapping[str, float]) -> tuple[list[str], list[list]]:
        pred = self.predicted(y_prob, classes, thresholds)
        return (["path", "true", "predicted", f"p_{classes[1]}"],
                [[p, classes[int(t)], classes[int(d)], f"{pr:.6f}"]
                 for p, t, d, pr in zip(paths, y_true[:, 0], pred, y_prob[:, 0])])

    def roc_pairs(self, classes: Sequence[str], y_true: np.ndarray, y_prob: np.ndarray) -> list:
        return [(classes[1], y_true[:, 0], y_prob[:, 0])]

    def gradcam_columns(self, decided: np.ndarray, probs: np.ndarray) -> np.ndarray:
        return np.where(decided[:, 1], 0, -1)

    def panel_value(self, probs_row: np.ndarray) -> float:
        return float(probs_row[0])

    def scan_marker(self, classes: Sequence[str], thresholds: Mapping[str, float], rule: str,
                    threshold: float | None = None) -> Callable[[np.ndarray], np.ndarray]:
        if rule == "any":
            return _last_output_above(0.5 if threshold is None else threshold)
        thr = {c: (threshold if threshold is not None else v) for c, v in thresholds.items()}
        return lambda probs: self.decide(probs, classes, thr)[:, 1]

    def scan_columns(self, classes: Sequence[str]) -> list[str]:
        return list(classes[1:])


class MulticlassTask(Task):
    """Two or more exclusive classes; a softmax output, the most probable class named."""

    name = "multiclass"
    activation = "softmax"
    loss_kind = "categorical"

    def encode(self, index: Sequence[int], n_classes: int) -> np.ndarray:
        return np.eye(n_classes, dtype=np.float32)[np.asarray(index, int)]

    def true_index(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y).argmax(axis=1).astype(int)

    def default_thresholds(self, classes: Sequence[str], threshold: float) -> dict[str, float]:
        return {}  # the most probable class is named: nothing to threshold

    def decide(self, probs: np.ndarray, classes: Sequence[str], thresholds: Mapping[str, float]) -> np.ndarray:
        probs = np.asarray(probs, np.float32)
        if not len(probs):
            return np.zeros((0, len(classes)), bool)
        return np.eye(len(classes), dtype=bool)[np.argmax(probs, axis=1)]

    def check_threshold_override(self) -> None:
        raise GAError("does not apply to a multiclass model: it names its most probable class", arg="threshold")

    def loss(self, smoothing: float = 0.0) -> Any:
        import keras

        return keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)

    def accuracy(self, threshold: float) -> Any:
        import keras

        return keras.metrics.CategoricalAccuracy(name="accuracy")

    def row_losses(self, y_true: np.ndarray, y_prob: np.ndarray, eps: float = 1e-7) -> np.ndarray:
        p = np.clip(np.asarray(y_prob, np.float64), eps, 1 - eps)
        p = p / p.sum(axis=1, keepdims=True)
        return -(np.asarray(y_true, np.float64) * np.log(p)).sum(axis=1)

    def _auc(self, classes: Sequence[str], t: np.ndarray, y_prob: np.ndarray) -> dict:
        return one_vs_rest_auc(classes, t, y_prob)


class MultilabelTask(Task):
    """Independent classes (an image may have none or several); a sigmoid per class, each
    with its own threshold, tuned on the validation split after training."""

    name = "multilabel"
    exclusive = False
    tunes_thresholds = True
    min_classes = 1

    def encode(self, index: Sequence[int], n_classes: int) -> np.ndarray:
        raise DataError("multi-label labels come from a labels.csv with a 0/1 column per class, not class folders")

    def true_index(self, y: np.ndarray) -> np.ndarray:
        raise ValueError("multi-label images have no single class")

    def sample_weights(self, y: np.ndarray, classes: Sequence[str], weights: Mapping[str, float]) -> np.ndarray:
        return np.ones(len(y), np.float32)

    def any_column(self, cfg: Any) -> list[str]:
        return ["any"] if cfg.data.any_class else []

    def decide(self, probs: np.ndarray, classes: Sequence[str], thresholds: Mapping[str, float]) -> np.ndarray:
        return np.asarray(probs, np.float32) > np.array([thresholds[c] for c in classes], np.float32)[None, :]

    def confidence(self, probs_row: np.ndarray, named: np.ndarray, classes: Sequence[str]) -> float:
        conf = [float(p) for p, f in zip(probs_row, named) if f]
        return min(conf) if conf else float(1 - max(probs_row))

    def right(self, y_true: np.ndarray, decided: np.ndarray) -> np.ndarray:
        return (decided == (y_true > 0.5)).all(axis=1)

    def decided_labels(self, decided: np.ndarray, classes: Sequence[str]) -> np.ndarray:
        return np.asarray(decided, np.float32)

    def strata(self, y_true: np.ndarray) -> np.ndarray:
        return np.zeros(len(y_true), int)  # the most confident right image overall

    def check_config(self, cfg: Any) -> None:
        if cfg.training.class_weight != "none":
            raise ConfigError("training.class_weight applies to model.task binary and multiclass, not multilabel "
                              "(use data.balance)")

    def metrics(self, classes: Sequence[str], y_true: np.ndarray, y_prob: np.ndarray,
                thresholds: Mapping[str, float]) -> tuple[dict, str]:
        from sklearn import metrics as skm

        y_pred = self.predicted(y_prob, classes, thresholds)
        t = np.asarray(y_true).astype(int)
        kw = dict(target_names=list(classes), digits=4, zero_division=0)
        rep = skm.classification_report(t, y_pred, output_dict=True, **kw)
        out = {"positive_class": None,
               "accuracy": float(skm.accuracy_score(t, y_pred)),  # exact match of the whole label set
               "roc_auc": {c: (float(skm.roc_auc_score(t[:, i], y_prob[:, i])) if len(set(t[:, i])) == 2 else None)
                           for i, c in enumerate(classes)},
               "confusion_matrix": {c: m.tolist() for c, m in zip(classes, skm.multilabel_confusion_matrix(t, y_pred))}}
        f1s = [rep[c]["f1-score"] for c in classes]
        out["harmonic_mean_f1"] = float(len(f1s) / sum(1 / f for f in f1s)) if all(f > 0 for f in f1s) else 0.0
        return self._with_per_class(out, rep, classes), skm.classification_report(t, y_pred, **kw)

    def prediction_rows(self, paths: Sequence[str], classes: Sequence[str], y_true: np.ndarray,
                        y_prob: np.ndarray, thresholds: Mapping[str, float]) -> tuple[list[str], list[list]]:
        pred = self.predicted(y_prob, classes, thresholds)

        def names(v):
            return ";".join(c for c, f in zip(classes, v) if f)

        return (["path", "true", "predicted", *(f"p_{c}" for c in classes)],
                [[p, names(t.astype(int)), names(d), *(f"{x:.6f}" for x in pr)]
                 for p, t, d, pr in zip(paths, y_true, pred, y_prob)])

    def gradcam_columns(self, decided: np.ndarray, probs: np.ndarray) -> np.ndarray:
        named = np.where(decided, probs, -1.0)
        return np.where(decided.any(axis=1), np.argmax(named, axis=1), np.argmax(probs, axis=1))

    def gradcam_panels(self, classes: Sequence[str]) -> list:
        return list(range(len(classes)))

    def scan_marker(self, classes: Sequence[str], thresholds: Mapping[str, float], rule: str,
                    threshold: float | None = None) -> Callable[[np.ndarray], np.ndarray]:
        if rule == "any":
            if classes[-1] != "any":
                raise GAError("any reads the model's 'any' output, and this multi-label model has none (train with "
                              "data.any_class: true), or use the rule classes", arg="rule")
            return _last_output_above(0.5 if threshold is None else threshold)
        thr = {c: (threshold if threshold is not None else v) for c, v in thresholds.items()}
        watched = [c != "any" for c in classes]  # the derived "any" marks nothing by itself
        return lambda probs: self.decide(probs, classes, thr)[:, watched].any(axis=1)


class ContrastiveTask(Task):
    """SimCLR pretraining: no classes, no classifier; the encoder's backbone is the product."""

    name = "contrastive"
    classifier = False
    exclusive = False
    min_classes = 0

    def check_config(self, cfg: Any) -> None:
        if cfg.training.class_weight != "none":
            raise ConfigError("training.class_weight applies to model.task binary and multiclass, not contrastive")
        super().check_config(cfg)
        if cfg.training.schedule != "standard":
            raise ConfigError("training.schedule applies to classifiers; model.task: contrastive trains the "
                              "whole backbone (use schedule: standard)")
        if cfg.training.early_stopping.monitor.startswith("val_") and not cfg.contrastive.val_fraction:
            raise ConfigError("model.task: contrastive has no validation images unless contrastive.val_fraction "
                              "> 0; set training.early_stopping.monitor: loss, or a val_fraction")
        if cfg.contrastive.view_size and any(cfg.contrastive.view_size > s for s in cfg.data.image_size):
            raise ConfigError(f"contrastive.view_size {cfg.contrastive.view_size} is larger than "
                              f"data.image_size {cfg.data.image_size}")

    def check_labels_document(self, classes: Sequence[str], path: str) -> None:
        raise ModelError(f"{path} belongs to a contrastive pretraining run, which has no classifier: train one "
                         f"from its backbone (model.backbone_weights: <run>/<prefix>backbone.weights.h5) and use that")


TASKS: dict[str, Task] = {t.name: t for t in (BinaryTask(), MulticlassTask(), MultilabelTask(), ContrastiveTask())}


def get_task(what: Union[str, Task, Mapping, Any]) -> Task:
    """The task of a name, a labels.json / metrics.json document, or a Config.

    Raises:
        ModelError: an unknown task name.
    """
    if isinstance(what, Task):
        return what
    if isinstance(what, Mapping):
        what = what.get("task")
    elif not isinstance(what, str):
        what = what.model.task
    try:
        return TASKS[what]
    except KeyError:
        raise ModelError(f"unknown task {what!r} (one of {', '.join(TASK_NAMES)})") from None


def one_vs_rest_auc(classes: Sequence[str], t: np.ndarray, y_prob: np.ndarray) -> dict:
    """Multiclass ROC AUC: each class against the rest, their mean (macro) and the AUC of
    all (class, image) pairs pooled (micro); a class absent from `t` has None."""
    from sklearn import metrics as skm

    onehot = np.eye(len(classes), dtype=int)[t]
    per = {c: (float(skm.roc_auc_score(onehot[:, i], y_prob[:, i])) if 0 < onehot[:, i].sum() < len(t) else None)
           for i, c in enumerate(classes)}
    defined = [v for v in per.values() if v is not None]
    micro = float(skm.roc_auc_score(onehot.ravel(), np.asarray(y_prob).ravel())) if defined else None
    return {"roc_auc": per, "roc_auc_macro": float(np.mean(defined)) if defined else None, "roc_auc_micro": micro}


def _last_output_above(threshold: float) -> Callable[[np.ndarray], np.ndarray]:
    """The graphene study's scan rule: the model's last output above `threshold`."""
    return lambda probs: np.asarray(probs)[:, -1] > threshold


def _balanced_accuracy(t: np.ndarray, y_pred: np.ndarray) -> float | None:
    """The mean recall over the classes present in `t` (scikit-learn's balanced accuracy)."""
    import warnings

    from sklearn import metrics as skm

    if not len(t):
        return None
    with warnings.catch_warnings():  # a predicted class absent from the truth only warns
        warnings.simplefilter("ignore", UserWarning)
        return float(skm.balanced_accuracy_score(t, y_pred))


