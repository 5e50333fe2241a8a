"""Typed configuration: nested dataclasses loaded from YAML, with `extends:` and `--set`.

Precedence, lowest first: dataclass defaults < parent file named by `extends:` < the file
itself < `--set section.key=value` overrides. Unknown keys, wrong types and out-of-range
values raise `ConfigError` at load time with a message that names the key and the fix.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Optional, Sequence, Union

import yaml

from ga.errors import ConfigError
from ga.tasks import get_task
from ga.typed_yaml import (apply_override, base_type, build, flow_yaml, read_with_extends, resolve_extends,
                           unknown_key)

# ---------------------------------------------------------------------------- sections




@dataclass
class AugmentConfig:
    """Augmentation of the training split (Keras preprocessing layers)."""

    enabled: bool = True  # apply augmentation to the training split
    placement: Literal["pipeline", "model"] = "pipeline"  # tf.data on CPU, or inside the model
    rotation: float = 30.0  # maximum rotation, degrees
    rotation_prob: float = 1.0  # share of images that get the random rotation (flakes: 0.25)
    shift: float = 0.2  # maximum translation, fraction of height/width
    zoom: float = 0.3  # zoom range: scale drawn from [1 - zoom, 1 + zoom]
    horizontal_flip: bool = True  # random left-right flips
    vertical_flip: bool = True  # random up-down flips
    fill_mode: Literal["nearest", "reflect", "wrap", "constant"] = "nearest"  # pixels uncovered by a transform
    rot90: bool = False  # random rotations by multiples of 90 degrees (flakes)
    color_scale: float = 0.0  # per-channel colour scaling, up to +/- this fraction (flakes) ...
    color_shift_p: float = 1.0  # ... applied to this share of images (the graphene study: 0.5)
    crop: Optional[list[int]] = None  # random crop (train) / centre crop (eval) to [h, w] after resize

    def validate(self, key: str) -> None:
        _range(f"{key}.rotation", self.rotation, 0, 180)
        _range(f"{key}.rotation_prob", self.rotation_prob, 0, 1)
        _range(f"{key}.shift", self.shift, 0, 1)
        _range(f"{key}.zoom", self.zoom, 0, 0.99)
        _range(f"{key}.color_scale", self.color_scale, 0, 1)
        _range(f"{key}.color_shift_p", self.color_shift_p, 0, 1)
        if self.rot90 and self.crop is not None and self.crop[0] != self.crop[1]:
            raise ConfigError(f"{key}.rot90 needs a square {key}.crop, got {self.crop}")
        if self.crop is not None:
            _size(f"{key}.crop", self.crop)
            if self.placement != "pipeline":
                raise ConfigError(f"{key}.crop changes the image size, so it needs {key}.placement: pipeline")


@dataclass
class DataConfig:
    """The images: where the split lives, the input size, batches, caching and augmentation."""

    split_root: str = "data/split"  # split_data.py output; train/valid/test live below it
    train_dir: Optional[str] = None  # default: <split_root>/train
    valid_dir: Optional[str] = None  # default: <split_root>/valid
    test_dir: Optional[str] = None  # default: <split_root>/test
    image_size: list[int] = field(default_factory=lambda: [224, 224])  # model input [height, width]
    batch_size: int = 64  # images per training step (global, across devices)
    classes: Optional[list[str]] = None  # expected class names; default: read from the data
    class_names: Optional[list[str]] = None  # names of class folders named 0, 1, ... (the study's layout), in order
    cache: Literal["auto", "memory", "none"] = "auto"  # keep decoded, resized images in memory
    cache_budget_mb: int = 4096  # "auto" caches a split only when it fits in this budget
    shuffle_buffer: int = 4096  # training shuffle buffer, images
    any_class: bool = False  # multilabel: add an "any" output that is 1 when any class is
    fraction: float = 1.0  # train on a seeded subset of the training split (0-1]
    balance: bool = False  # multilabel: sample images with and without labels equally
    # cross-validation: validate on this fold of the split's train + valid images and train on the
    # other folds (a split made with split_data.py --folds K; main.py --cv sets it for each fold)
    fold: Optional[int] = None
    imbalance_warning: float = 3.0  # warn when the largest training class outnumbers the smallest by more
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def dirs(self) -> tuple[str, str, str]:
        """The (train, valid, test) folders, defaults filled in from `split_root`."""
        root = self.split_root
        return (
            self.train_dir or os.path.join(root, "train"),
            self.valid_dir or os.path.join(root, "valid"),
            self.test_dir or os.path.join(root, "test"),
        )

    def validate(self, key: str) -> None:
        _size(f"{key}.image_size", self.image_size)
        _range(f"{key}.batch_size", self.batch_size, 1, 1 << 16)
        _range(f"{key}.cache_budget_mb", self.cache_budget_mb, 0, 1 << 24)
        _range(f"{key}.shuffle_buffer", self.shuffle_buffer, 1, 1 << 24)
        if self.fold is not None and self.fold < 0:
            raise ConfigError(f"{key}.fold must be a fold number (0 .. K-1), got {self.fold}")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"{key}.fraction must be in (0, 1], got {self.fraction}")
        if not self.imbalance_warning >= 1:
            raise ConfigError(f"{key}.imbalance_warning must be >= 1, got {self.imbalance_warning}")
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"{key}.classes has repeated names: {self.classes}")
        self.augment.validate(f"{key}.augment")
        if self.augment.rot90 and self.image_size[0] != self.image_size[1]:
            raise ConfigError(f"{key}.augment.rot90 needs a square {key}.image_size, got {self.image_size}")
        if self.augment.crop and any(c > s for c, s in zip(self.augment.crop, self.image_size)):
            raise ConfigError(
                f"{key}.augment.crop {self.augment.crop} is larger than {key}.image_size {self.image_size}"
            )


@dataclass
class SplitConfig:
    """How split_data.py (ga split) cuts a labelled folder into train, valid and test."""

    source: str = "data/archive/cropped/cropped"  # one folder per class (Kaggle layout) or images + labels.csv
    ratios: list[float] = field(default_factory=lambda: [0.70, 0.25, 0.05])  # train, valid, test
    seed: int = 42  # shuffle seed; same seed and source give the same split anywhere
    mode: Literal["copy", "link", "move"] = "copy"  # how files reach the split folders
    order: Literal["random", "sorted"] = "random"  # "sorted" reproduces the original sequential split
    group_tolerance: int = 4  # Hamming distance (of 64 bits) up to which two images count as copies

    def validate(self, key: str) -> None:
        _seed(f"{key}.seed", self.seed)
        if len(self.ratios) != 3:
            raise ConfigError(f"{key}.ratios needs three numbers (train, valid, test), got {self.ratios}")
        if any(r < 0 for r in self.ratios) or abs(sum(self.ratios) - 1) > 1e-6:
            raise ConfigError(f"{key}.ratios must be non-negative and sum to 1, got {self.ratios} (sum {sum(self.ratios):g})")
        _range(f"{key}.group_tolerance", self.group_tolerance, 0, 32)


@dataclass
class HeadConfig:
    """The classification head on the backbone's pooled features."""

    units: list[int] = field(default_factory=lambda: [512, 256])  # dense layers after global pooling
    dropout: list[float] = field(default_factory=lambda: [0.4, 0.3])  # dropout after each dense layer
    batch_norm: list[bool] = field(default_factory=lambda: [True, False])  # BatchNorm after each dense layer
    pooling: Literal["avg", "max"] = "avg"  # global pooling of the backbone's feature map
    output_dropout: float = 0.0  # dropout just before the output layer (CNN-4 uses 0.5)

    def validate(self, key: str) -> None:
        if not (len(self.units) == len(self.dropout) == len(self.batch_norm)):
            raise ConfigError(
                f"{key}.units, {key}.dropout and {key}.batch_norm need the same length, got "
                f"{len(self.units)}, {len(self.dropout)}, {len(self.batch_norm)}"
            )
        for i, u in enumerate(self.units):
            _range(f"{key}.units[{i}]", u, 1, 1 << 16)
        for i, d in enumerate(self.dropout):
            if not 0 <= d < 1:
                raise ConfigError(f"{key}.dropout[{i}] must be in [0, 1), got {d}")
        if not 0 <= self.output_dropout < 1:
            raise ConfigError(f"{key}.output_dropout must be in [0, 1), got {self.output_dropout}")


@dataclass
class ModelConfig:
    """The task, the backbone and its weights, how much of it trains, and the head."""

    # binary: one sigmoid unit (two class folders); multiclass: one softmax unit per class
    # folder (two or more, exclusive); multilabel: one sigmoid unit per labels.csv column;
    # contrastive: SimCLR pretraining on an unlabelled folder (see the `contrastive` section)
    task: Literal["binary", "multiclass", "multilabel", "contrastive"] = "binary"
    # keras.applications families (ga/backbones.py: preprocessing, default size, fine-tuning
    # rules): the study's ResNets, EfficientNetV2, ConvNeXt-Tiny, MobileNetV3, or CNN-4
    backbone: Literal["resnet50", "resnet101", "resnet152", "efficientnetv2_b0", "efficientnetv2_b1",
                      "efficientnetv2_b2", "efficientnetv2_b3", "efficientnetv2_s", "convnext_tiny",
                      "mobilenetv3_small", "mobilenetv3_large", "cnn4"] = "resnet101"
    weights: str = "imagenet"  # "imagenet" (Keras download/cache), "none", or a path to a weights file
    # backbone weights saved by a contrastive run (<prefix>backbone.weights.h5); replaces `weights`
    backbone_weights: Optional[str] = None
    # last fraction of backbone layers that train, the rest frozen: ResNet and CNN-4 by layer count
    # (the study's cut); EfficientNetV2, MobileNetV3 and ConvNeXt rounded back to a whole block,
    # their BatchNorm kept frozen with pretrained weights (ga/backbones.py)
    trainable_fraction: float = 0.10
    threshold: float = 0.5  # decision threshold on the positive-class probability
    # start from a whole trained model of the same architecture and outputs: a run folder, or a
    # .keras / .weights.h5 file (fine-tuning on a new batch of data); applied after weights
    init_weights: Optional[str] = None
    head: HeadConfig = field(default_factory=HeadConfig)

    def validate(self, key: str) -> None:
        _range(f"{key}.trainable_fraction", self.trainable_fraction, 0, 1)
        if not 0 < self.threshold < 1:
            raise ConfigError(f"{key}.threshold must be in (0, 1), got {self.threshold}")
        if not self.weights:
            raise ConfigError(f"{key}.weights is empty: use imagenet, none, or a path to a weights file")
        if self.init_weights is not None and self.init_weights.endswith((".h5", ".onnx")) and not \
                self.init_weights.endswith(".weights.h5"):
            raise ConfigError(f"{key}.init_weights must be a run folder, a .keras or a .weights.h5 file, "
                              f"got {self.init_weights}")
        if self.backbone_weights is not None and not self.backbone_weights.endswith(".weights.h5"):
            raise ConfigError(f"{key}.backbone_weights must be a .weights.h5 file (a contrastive run's "
                              f"<prefix>backbone.weights.h5), got {self.backbone_weights}")
        self.head.validate(f"{key}.head")


@dataclass
class EarlyStoppingConfig:
    """When training stops before `training.epochs`, and which epoch's weights are delivered."""

    f1_threshold: float = 0.997  # stop when every class's validation F1 reaches this ...
    f1_patience: int = 1  # ... for this many consecutive epochs
    monitor: str = "val_loss"  # EarlyStopping's quantity
    patience: int = 50  # epochs without improvement of `monitor` before stopping
    min_delta: float = 0.0  # a smaller change of `monitor` is no improvement (the study: 0.001)
    # Which weights a run delivers. stop_epoch: the epoch the per-class F1 rule stopped at,
    # else (EarlyStopping stopped the run) its best `monitor` epoch, else (all epochs ran) the
    # last one -- what the study's tf.keras 2.10 code delivered. best: the best `monitor`
    # epoch whatever stopped the run (Keras 3's restore_best_weights). last: the last epoch.
    deliver: Literal["stop_epoch", "best", "last"] = "stop_epoch"
    restore_best_weights: bool = True  # false: the same as deliver: last

    def validate(self, key: str) -> None:
        _range(f"{key}.f1_threshold", self.f1_threshold, 0, 1)
        _range(f"{key}.min_delta", self.min_delta, 0, 1e9)
        _range(f"{key}.f1_patience", self.f1_patience, 1, 1 << 20)
        _range(f"{key}.patience", self.patience, 0, 1 << 20)


@dataclass
class FineTuneConfig:
    """The second stage of `training.schedule: fine_tune` (every layer trains)."""

    epochs: int = 50  # second stage of `schedule: fine_tune`: every layer trains ...
    learning_rate: float = 1.0e-5  # ... at this learning rate ...
    weight_decay: float = 0.01  # ... and this weight decay

    def validate(self, key: str) -> None:
        _rate(f"{key}.learning_rate", self.learning_rate)
        _range(f"{key}.epochs", self.epochs, 1, 1 << 20)
        _range(f"{key}.weight_decay", self.weight_decay, 0, 10)


@dataclass
class LRScheduleConfig:
    """The learning rate of each epoch (set at the epoch's start; history.csv column `lr`).
    Under `training.schedule: fine_tune` it restarts with each stage, from that stage's
    learning rate (one_cycle: its own init/max/final rates in both stages)."""

    # constant: training.learning_rate; step: times gamma every step_size epochs; cosine:
    # cosine decay to cosine_alpha x the rate at the last epoch; one_cycle: the graphene
    # study's schedulers.OneCycle (lr and Adam's beta1, or SGD's momentum, per epoch)
    kind: Literal["constant", "step", "one_cycle", "cosine"] = "constant"
    warmup_epochs: int = 0  # constant, step, cosine: linear ramp to the rate over these first epochs
    step_size: int = 10  # step: epochs at each rate
    gamma: float = 0.1  # step: factor applied every step_size epochs
    cosine_alpha: float = 0.0  # cosine: the final rate as a fraction of training.learning_rate
    steps_up: int = 10  # one_cycle: epochs rising from init_lr to max_lr (beta1 falls to min_beta1) ...
    steps_down: int = 10  # ... epochs falling back to init_lr (beta1 back to init_beta1) ...
    steps_final: int = 5  # ... epochs falling from init_lr to final_lr; then final_lr stays
    init_lr: float = 3.0e-5  # one_cycle: the rate it starts from and falls back to
    max_lr: float = 3.0e-4  # one_cycle: the rate at the top of the rise
    final_lr: float = 3.0e-6  # one_cycle: the rate of the last epochs
    init_beta1: float = 0.95  # Adam's beta1 (SGD: momentum) at the start and end of the cycle
    min_beta1: float = 0.85  # ... and at the peak learning rate
    beta2: float = 0.99  # Adam's beta2 during one_cycle (replaces training.betas[1])
    start_epoch: int = 0  # one_cycle: start this many epochs into the cycle

    def validate(self, key: str) -> None:
        _range(f"{key}.warmup_epochs", self.warmup_epochs, 0, 1 << 20)
        _range(f"{key}.step_size", self.step_size, 1, 1 << 20)
        _range(f"{key}.gamma", self.gamma, 0, 10)
        _range(f"{key}.cosine_alpha", self.cosine_alpha, 0, 1)
        for name in ("steps_up", "steps_down", "steps_final", "start_epoch"):
            _range(f"{key}.{name}", getattr(self, name), 0, 1 << 20)
        for name in ("init_lr", "max_lr", "final_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{key}.{name} must be > 0, got {getattr(self, name)}")
        for name in ("init_beta1", "min_beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{key}.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.kind == "one_cycle" and self.warmup_epochs:
            raise ConfigError(f"{key}.warmup_epochs does not apply to kind: one_cycle (its steps_up is the warm-up)")


@dataclass
class TrainingConfig:
    """The optimizer, learning rate and its schedule, epochs, early stopping, precision and devices."""

    optimizer: Literal["sgd", "adamw", "adam"] = "sgd"  # the optimizer (the study: SGD with momentum)
    learning_rate: float = 0.1  # the learning rate (the peak one under a schedule's warm-up)
    momentum: float = 0.9  # SGD momentum
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam/AdamW beta1, beta2
    # Variables weight decay leaves alone: bias (every bias), batchnorm (BatchNorm's gamma
    # and beta), output_bias (the output layer's bias only: the graphene study's rule)
    no_decay: list[Literal["bias", "batchnorm", "output_bias"]] = field(default_factory=lambda: ["bias", "batchnorm"])
    lr_schedule: LRScheduleConfig = field(default_factory=LRScheduleConfig)
    nesterov: bool = False  # SGD Nesterov momentum
    weight_decay: float = 0.0  # AdamW (and SGD) decoupled weight decay
    epochs: int = 100  # upper bound on epochs
    # before each validation, re-estimate BatchNorm's moving statistics as the average over
    # this many training batches of the current weights (classifiers; 0: keep the running average)
    precise_bn_batches: int = 0
    steps_per_epoch: Optional[int] = None  # default: one pass over the training split
    seed: int = 42  # keras.utils.set_random_seed
    deterministic: bool = False  # TensorFlow op determinism (slower; same history on CPU)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    # auto: mixed_bfloat16 on a CPU with AVX512_BF16 or AMX (or a GPU of compute capability >= 8),
    # mixed_float16 on a GPU >= 7, float32 otherwise; the model is delivered in float32 either way
    mixed_precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = "auto"
    jit_compile: Literal["auto", "true", "false"] = "auto"  # XLA; "auto" lets Keras decide
    distribution: Literal["none", "mirrored", "multi_worker"] = "none"  # tf.distribute strategy
    # multi_worker: BatchNorm normalises a training batch with the statistics of the global
    # batch (all-reduced at every step: what one process would compute, and moving statistics
    # equal on every worker); false: each worker's own share (cheaper, see docs/cluster.md)
    sync_batchnorm: bool = True
    # standard: model.trainable_fraction of the backbone trains; linear_eval: the backbone is
    # frozen (BatchNorm in inference mode), only the head trains; fine_tune: linear_eval for
    # `epochs`, then every layer for fine_tune.epochs at fine_tune.learning_rate
    schedule: Literal["standard", "linear_eval", "fine_tune"] = "standard"
    fine_tune: FineTuneConfig = field(default_factory=FineTuneConfig)
    # Loss weight per class (binary, multiclass): none; balanced = n_images / (n_classes *
    # n_images of the class), from the training split; or a mapping {class name: weight}
    class_weight: Union[str, dict[str, float]] = "none"
    label_smoothing: float = 0.0  # cross-entropy label smoothing (binary, multiclass)

    def validate(self, key: str) -> None:
        _rate(f"{key}.learning_rate", self.learning_rate)
        _seed(f"{key}.seed", self.seed)
        if isinstance(self.class_weight, str) and self.class_weight not in ("none", "balanced"):
            raise ConfigError(f"{key}.class_weight must be none, balanced or a mapping {{class: weight}}, "
                              f"got {self.class_weight!r}")
        if isinstance(self.class_weight, dict) and any(not w > 0 for w in self.class_weight.values()):
            raise ConfigError(f"{key}.class_weight weights must be > 0, got {self.class_weight}")
        _range(f"{key}.label_smoothing", self.label_smoothing, 0, 0.5)
        _range(f"{key}.momentum", self.momentum, 0, 1)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"{key}.betas must be [beta1, beta2], each in [0, 1), got {self.betas}")
        self.lr_schedule.validate(f"{key}.lr_schedule")
        if self.lr_schedule.kind == "one_cycle" and self.optimizer == "sgd" and self.momentum == 0:
            raise ConfigError(f"{key}.lr_schedule.kind: one_cycle cycles SGD's momentum; set {key}.momentum > 0")
        _range(f"{key}.weight_decay", self.weight_decay, 0, 10)
        _range(f"{key}.epochs", self.epochs, 1, 1 << 20)
        _range(f"{key}.precise_bn_batches", self.precise_bn_batches, 0, 1 << 20)
        if self.steps_per_epoch is not None:
            _range(f"{key}.steps_per_epoch", self.steps_per_epoch, 1, 1 << 30)
        self.early_stopping.validate(f"{key}.early_stopping")
        self.fine_tune.validate(f"{key}.fine_tune")


@dataclass
class ContrastiveConfig:
    """SimCLR pretraining (model.task: contrastive): two strongly augmented views per image."""

    # ntxent: SimCLR's symmetric NT-Xent over all 2N views; one_way: the graphene study's
    # clr.py loss, cross-entropy of each first view against the N second views
    loss: Literal["ntxent", "one_way"] = "ntxent"
    temperature: float = 0.5  # softmax temperature of the loss (the study: 0.1)
    # mlp: Dense(projection[0]) + ReLU + Dense(projection[1]) (SimCLR); linear: dropout
    # head_dropout + Dense(projection[-1]) (the study's clr.py head)
    head: Literal["mlp", "linear"] = "mlp"
    projection: list[int] = field(default_factory=lambda: [256, 128])  # the projection head's layer sizes
    head_dropout: float = 0.5  # linear head: dropout before its Dense layer
    view_size: Optional[int] = None  # views are view_size px squares (the model input); default data.image_size
    val_fraction: float = 0.0  # hold out this seeded share of the images for a validation loss per epoch
    crop_area: list[float] = field(default_factory=lambda: [0.25, 1.0])  # random resized crop: share of the area
    color_scale: float = 0.5  # per-channel colour scaling up to +/- this fraction ...
    color_prob: float = 0.8  # ... applied to this share of views
    blur_prob: float = 0.2  # Gaussian blur for this share of views ...
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])  # ... sigma range, pixels
    rotation: float = 20.0  # small random rotation, degrees (after right-angle turns and flips) ...
    rotation_prob: float = 1.0  # ... for this share of views (the study: 0.2)

    def validate(self, key: str) -> None:
        if not 0 < self.temperature <= 10:
            raise ConfigError(f"{key}.temperature must be in (0, 10], got {self.temperature}")
        if len(self.projection) != (2 if self.head == "mlp" else 1) or any(u < 1 for u in self.projection):
            need = "two positive layer sizes (head: mlp)" if self.head == "mlp" else "one positive size (head: linear)"
            raise ConfigError(f"{key}.projection needs {need}, got {self.projection}")
        if not 0 <= self.head_dropout < 1:
            raise ConfigError(f"{key}.head_dropout must be in [0, 1), got {self.head_dropout}")
        if self.view_size is not None:
            _range(f"{key}.view_size", self.view_size, MIN_SIDE, MAX_SIDE)
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"{key}.val_fraction must be in [0, 1), got {self.val_fraction}")
        lo, hi = (self.crop_area + [0, 0])[:2]
        if len(self.crop_area) != 2 or not 0 < lo <= hi <= 1:
            raise ConfigError(f"{key}.crop_area must be [low, high] with 0 < low <= high <= 1, got {self.crop_area}")
        _range(f"{key}.color_scale", self.color_scale, 0, 1)
        _range(f"{key}.color_prob", self.color_prob, 0, 1)
        _range(f"{key}.blur_prob", self.blur_prob, 0, 1)
        if len(self.blur_sigma) != 2 or not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ConfigError(f"{key}.blur_sigma must be [low, high] with 0 < low <= high, got {self.blur_sigma}")
        _range(f"{key}.rotation", self.rotation, 0, 180)
        _range(f"{key}.rotation_prob", self.rotation_prob, 0, 1)


@dataclass
class OutputConfig:
    """The run folder: where it goes, what it is named, and which exports and figures it holds."""

    root: str = "deliverables"  # run folders are created below this
    prefix: str = "GA"  # run folder and file prefix (GAweights.h5, GAFinalTestResults.txt ...)
    save_every: int = 0  # every N epochs keep epoch_<n>.weights.h5 (contrastive: and its backbone); 0: never
    tensorboard: bool = True  # TensorBoard event files in <run>/tensorboard/ (tensorboard --logdir deliverables/)
    name: str = ""  # optional suffix of the run folder name
    onnx: bool = True  # export GAweights.onnx and check it against Keras
    saved_model: bool = True  # export <prefix>saved_model/ (TensorFlow Serving) and check it against Keras
    explain: bool = True  # <prefix>gradcam.png and <prefix>misclassified.png of the test split
    preview: bool = True  # <prefix>train_batch.png: one augmented training batch as the model sees it
    # MLflow tracking URI ("" off; file:///path/mlruns needs no server): config, history, test figures and the
    # run folder logged when the run finishes (pip install "ga-crystals[mlflow]"; ga/tracking.py)
    mlflow: str = ""
    mlflow_experiment: str = "ga"  # the MLflow experiment runs are logged to
    onnx_opset: int = 17  # ONNX opset for tf2onnx
    parity_tolerance: float = 1e-4  # largest |Keras - ONNX| allowed on test images
    # <prefix>weights_int8.onnx: static INT8 (QDQ, per-channel) by ONNX Runtime's tools, calibrated on
    # int8_calibration seeded training images and kept when its decisions agree with float32 on at
    # least int8_min_agreement of the test split (needs output.onnx)
    int8: bool = True
    int8_calibration: int = 128  # seeded training images that calibrate the INT8 model
    int8_min_agreement: float = 0.99  # share of equal decisions with float32 on the test split to keep it

    def validate(self, key: str) -> None:
        if not self.prefix or any(c in self.prefix for c in "/\\"):
            raise ConfigError(f"{key}.prefix must be a non-empty name without slashes, got {self.prefix!r}")
        if any(c in self.name for c in "/\\"):
            raise ConfigError(f"{key}.name must not contain slashes, got {self.name!r}")
        _range(f"{key}.onnx_opset", self.onnx_opset, 13, 21)
        _range(f"{key}.save_every", self.save_every, 0, 1 << 20)
        _range(f"{key}.int8_calibration", self.int8_calibration, 1, 1 << 16)
        if not 0 <= self.int8_min_agreement <= 1:
            raise ConfigError(f"{key}.int8_min_agreement must be in [0, 1], got {self.int8_min_agreement}")


THRESHOLD_METHODS = ("otsu", "li", "triangle")


@dataclass
class MonitorConfig:
    """Watching a process: particle detection in whole frames (ga.monitoring.detection), frame times,
    statistics and live polling (ga.monitoring.loop). Defaults suit dark-field probe frames
    (bright particles on a dark background) and `ga synth process`; "auto" (the default of each
    size-like key) chooses the value from each frame (ga.monitoring.detection.resolve)."""

    # particles brighter (dark field) or darker than the background; auto: the frame's larger tail
    polarity: Literal["auto", "bright", "dark"] = "auto"
    background: Literal["median", "none"] = "median"  # subtract a median-filtered background, or only the median
    # px: the background window, larger than the largest particle; auto: a fifth of the frame's shorter side
    background_size: Union[int, Literal["auto"]] = "auto"
    threshold: str = "otsu"  # otsu, li, triangle, or a number of grey levels above the background
    # an automatic threshold never goes below the background's median plus this many of its robust
    # standard deviations (1.4826 MAD): a frame with few particles is not split inside its background
    threshold_floor: float = 4.0
    open_radius: int = 0  # px: an opening (removes specks and lines thinner than 2r+1 px: needles too); 0: none
    close_radius: Union[int, Literal["auto"]] = "auto"  # px: closing (joins an aggregate's beads); 0: none
    min_area: Union[int, Literal["auto"]] = "auto"  # px: smaller objects are dropped
    max_area: int = 0  # px: larger objects are dropped; 0: no limit
    # ~1 / edge width in px: blurrier (out-of-focus) objects are dropped; auto: the gap between the frame's
    # sharp and blurred objects when they form two groups, else the frame-scaled default
    min_sharpness: Union[float, Literal["auto"]] = "auto"
    # the scale objects are found at (1: every pixel; 0.5: every 2 x 2 pixels averaged), their sizes and crops
    # always in the frame's own pixels; min_sharpness is measured at this scale. auto: 1 over the whole number
    # of reference frames (768 px high) that fit the frame's height, so large frames are searched at about the
    # reference scale, but never so coarse that the other size settings fall below a few pixels; 1 when
    # min_sharpness is given (a cut given for every pixel)
    detection_scale: Union[float, Literal["auto"]] = "auto"
    # particles in contact found as one object are cut apart where the distance map's saddle (the neck's
    # half-width) is under half of the thinner part's (ga.monitoring.touching); off: one object, one particle
    split_touching: Literal["auto", "on", "off"] = "auto"
    # turn each crop over (255 - level) before the model: auto when the model's labels.json records that its
    # training crops had particles the other way round from the frame's (a dark-field model on bright-field frames)
    invert_crops: Literal["auto", "on", "off"] = "auto"
    crop_margin: float = 0.15  # context around a particle's box in its crop, fraction of the box's longer side
    # frames: a particle where one sat in 80% of this many last frames is a deposit on the window (flagged
    # static, left out of counts, fractions and sizes); 0: off
    static_window: int = 10
    pixel_size_um: Optional[float] = None  # micrometres per pixel: sizes in um too
    # edges of equivalent-diameter bins (um with pixel_size_um, else px; .inf allowed last): frames.csv gains
    # count_<lo>_<hi>_<unit> per bin, for all particles and per class, and monitor_bins.png; [] (default): none
    size_bins: list[float] = field(default_factory=list)
    # Frame times, from the first of these that gives one: name (time_pattern in the file name),
    # tags (EXIF/TIFF DateTime), mtime (the file's modification time)
    time_sources: list[str] = field(default_factory=lambda: ["name", "tags", "mtime"])
    time_pattern: str = "%Y%m%dT%H%M%S"  # strftime codes found anywhere in a file name (%f: fractions)
    window: int = 10  # frames: the first and last windows of the size-distribution figure
    refresh_every: int = 10  # frames: --watch redraws the figures and monitor.html this often
    poll_seconds: float = 1.0  # --watch: seconds between listings of the folder
    settle_seconds: float = 2.0  # --watch: a file is read once its size and mtime stayed unchanged this long
    stale_seconds: float = 60.0  # the live dashboard (--serve) shows "stale" after this long without a frame
    batch_size: int = 64  # particle crops per prediction call
    ci_level: float = 0.95  # the Wilson interval of each class fraction

    def threshold_value(self) -> str | float:
        """The threshold: a method name or a number of grey levels."""
        return self.threshold if self.threshold in THRESHOLD_METHODS else float(self.threshold)

    def validate(self, key: str) -> None:
        if self.threshold not in THRESHOLD_METHODS:
            try:
                float(self.threshold)
            except ValueError:
                raise ConfigError(f"{key}.threshold must be {', '.join(THRESHOLD_METHODS)} or a number of grey "
                                  f"levels, got {self.threshold!r}") from None
        for name, lo, hi in (("background_size", 15, 4095), ("close_radius", 0, 50), ("min_area", 1, 1 << 30),
                             ("min_sharpness", 0, 10), ("detection_scale", 0.01, 1)):
            if getattr(self, name) != "auto":
                _range(f"{key}.{name}", getattr(self, name), lo, hi)
        _range(f"{key}.threshold_floor", self.threshold_floor, 0, 100)
        _range(f"{key}.static_window", self.static_window, 0, 10_000)
        _range(f"{key}.open_radius", self.open_radius, 0, 50)
        _range(f"{key}.max_area", self.max_area, 0, 1 << 30)
        _range(f"{key}.crop_margin", self.crop_margin, 0, 2)
        _range(f"{key}.window", self.window, 1, 1 << 20)
        _range(f"{key}.refresh_every", self.refresh_every, 1, 1 << 20)
        _range(f"{key}.poll_seconds", self.poll_seconds, 0.01, 3600)
        _range(f"{key}.settle_seconds", self.settle_seconds, 0, 3600)
        _range(f"{key}.stale_seconds", self.stale_seconds, 1, 1 << 20)
        _range(f"{key}.batch_size", self.batch_size, 1, 1 << 16)
        if not 0 < self.ci_level < 1:
            raise ConfigError(f"{key}.ci_level must be in (0, 1), got {self.ci_level}")
        if self.pixel_size_um is not None and not self.pixel_size_um > 0:
            raise ConfigError(f"{key}.pixel_size_um must be positive, got {self.pixel_size_um}")
        edges = self.size_bins
        if edges and (len(edges) < 2 or edges[0] < 0 or any(b <= a for a, b in zip(edges, edges[1:]))):
            raise ConfigError(f"{key}.size_bins must be at least two increasing edges, from 0 up, got {edges}")
        bad = [s for s in self.time_sources if s not in ("name", "tags", "mtime")]
        if bad or not self.time_sources:
            raise ConfigError(f"{key}.time_sources takes name, tags and mtime in the order to try, got "
                              f"{self.time_sources}")


@dataclass
class AnalysisConfig:
    """Confidence intervals of the test figures (metrics.json, the report, --evaluate)."""

    ci_level: float = 0.95  # the intervals' confidence level
    bootstrap_resamples: int = 2000  # resamples of the (cluster) bootstrap, stratified by class
    bootstrap_seed: int = 0  # seed of the resampling: the same predictions give the same intervals

    def validate(self, key: str) -> None:
        if not 0 < self.ci_level < 1:
            raise ConfigError(f"{key}.ci_level must be in (0, 1), got {self.ci_level}")
        _range(f"{key}.bootstrap_resamples", self.bootstrap_resamples, 100, 1 << 20)
        _seed(f"{key}.bootstrap_seed", self.bootstrap_seed)

    def settings(self) -> Any:
        """The ga.uncertainty.Settings of this section."""
        from ga.uncertainty import Settings

        return Settings(self.ci_level, self.bootstrap_resamples, self.bootstrap_seed)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)

    def validate(self) -> Config:
        """Check every section and the rules that cross sections. Raises ConfigError."""
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate(f.name)
        get_task(self.model.task).check_config(self)  # the keys a task refuses
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------- loading


def load_config(path: str | os.PathLike | None = None, overrides: Iterable[str] = (),
                data: Mapping | None = None) -> Config:
    """Load, merge, override, type-check and validate a configuration.

    Args:
        path: YAML file, or None for the defaults.
        overrides: iterable of "section.key=value" strings (`--set`).
        data: a dict to use instead of reading `path` (its `extends:` is relative to cwd).

    Returns:
        A validated `Config`.

    Raises:
        ConfigError: with a one-line message naming the key or path.
    """
    raw = {}
    if path is not None:
        raw = read_with_extends(resolve_config(os.fspath(path)))
    elif data is not None:
        raw = resolve_extends(dict(data), os.getcwd())
    for item in overrides:
        apply_override(raw, item, Config)
    cfg = build(Config, raw, "")
    return cfg.validate()


def section_overrides(sections: Mapping[str, Any]) -> list[str]:
    """`--set` strings from keyword sections, as `ga.train(cfg, training={"epochs": 3})` gives
    them: nested mappings follow the config's sections down to a field, whose value (a
    mapping too, for a mapping field such as training.class_weight) is written as YAML.

    Raises:
        ConfigError: an unknown section or key (named, with the closest valid one).
    """
    out = []

    def walk(cls, prefix, values):
        names = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        for key, value in values.items():
            if key not in names:
                raise ConfigError(unknown_key(key, ".".join(prefix), names))
            dotted = [*prefix, key]
            if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
                walk(hints[key], dotted, value)
            elif isinstance(value, str) and base_type(hints[key]) is str:
                out.append(f"{'.'.join(dotted)}={value}")
            else:
                out.append(f"{'.'.join(dotted)}={flow_yaml(value)}")

    walk(Config, [], dict(sections))
    return out


def shipped_configs_dir() -> str | None:
    """The folder of the configs shipped with `ga`: inside the installed package, or the
    repository's configs/ for a source checkout (editable install)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (os.path.join(here, "configs"), os.path.join(os.path.dirname(here), "configs")):
        if os.path.isdir(folder):
            return folder
    return None


def shipped_configs() -> dict[str, str]:
    """{name: path} of the shipped configs, by name."""
    folder = shipped_configs_dir()
    if folder is None:
        return {}
    return {f[:-5]: os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith(".yaml")}


def resolve_config(path: str) -> str:
    """The file `--config` names. A path that exists is read as it is; otherwise a bare name
    (`demo`, `demo.yaml`) or `configs/<name>.yaml` names a shipped config, so the shipped
    configs work from any folder. Paths inside a config (data, deliverables) stay relative to
    the current folder."""
    if os.path.isfile(path):
        return path
    head, name = os.path.split(path)
    found = shipped_configs().get(name[:-5] if name.endswith(".yaml") else name) if head in ("", "configs") else None
    if found or os.path.exists(path):
        return found or path  # a folder is reported as one when read
    names = ", ".join(shipped_configs()) or "none"
    raise ConfigError(f"config file not found: {path} (shipped configs: {names})")


def describe_shipped_configs() -> list[str]:
    """Lines 'name  first comment line' for `main.py --list-configs`."""
    lines = []
    for name, path in shipped_configs().items():
        with open(path, encoding="utf-8") as fh:
            first = next((line.lstrip("# ").rstrip() for line in fh if line.startswith("#")), "")
        lines.append(f"{name:<20} {first}")
    return lines


def dump_config(cfg: Config, path: str | None = None) -> str:
    """YAML text of a resolved config (written to `path` when given)."""
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
    if path is not None:
        from ga.files import atomic_write_text

        atomic_write_text(path, text)
    return text


def _rate(key, value):
    """A learning rate: a finite number above 0 (an infinite one gives a NaN loss in the first epoch)."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{key} must be a finite number > 0, got {value}")


def _seed(key, value):
    """A seed: what keras.utils.set_random_seed and NumPy take, 0 to 2**32 - 1."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 32:
        raise ConfigError(f"{key} must be a whole number from 0 to {(1 << 32) - 1}, got {value}")


def _range(key, value, lo, hi):
    if not lo <= value <= hi:
        raise ConfigError(f"{key} must be between {lo} and {hi}, got {value}")


# A model input side, in pixels: from 8 to 2048 (a 2048 x 2048 input already needs gigabytes per
# batch of a ResNet; labels.json's input_size, resize and center_crop are held to the same).
MIN_SIDE, MAX_SIDE = 8, 2048


def _size(key, value):
    if len(value) != 2 or any(v < MIN_SIDE or v > MAX_SIDE for v in value):
        raise ConfigError(f"{key} must be [height, width] with each between {MIN_SIDE} and {MAX_SIDE}, got {value}")


def model_input_size(cfg: Config) -> tuple[int, int]:
    """The model's input [h, w]: a contrastive run's view size, else the crop size when
    cropping, else the image size."""
    if cfg.model.task == "contrastive" and cfg.contrastive.view_size:
        return (cfg.contrastive.view_size,) * 2
    return tuple(cfg.data.augment.crop or cfg.data.image_size)


def preprocessing_mode(backbone: str) -> str:
    """The Preprocess layer mode a backbone expects (ga.backbones)."""
    from ga.backbones import family_of

    return family_of(backbone).preprocessing


def check_paths(cfg: Config, splits: Sequence[str] = ("train", "valid", "test")) -> None:
    """Raise ConfigError naming the first data folder that does not exist."""
    w = cfg.model.weights
    if cfg.model.backbone_weights is not None:
        if not os.path.isfile(cfg.model.backbone_weights):
            raise ConfigError(f"model.backbone_weights: file not found: {cfg.model.backbone_weights} (a contrastive "
                              f"run writes <prefix>backbone.weights.h5 in its run folder)")
    elif w not in ("imagenet", "none") and not os.path.isfile(w):
        raise ConfigError(f"model.weights: file not found: {w} (use imagenet, none, or an existing weights file)")
    init = cfg.model.init_weights
    if init is not None and not os.path.exists(init):
        raise ConfigError(f"model.init_weights: not found: {init} (a run folder, or a .keras or .weights.h5 file)")
    if cfg.model.task == "contrastive":
        splits = ("train",)  # one unlabelled folder
    for name, path in zip(("train", "valid", "test"), cfg.data.dirs()):
        if name in splits and not os.path.isdir(path):
            hint = " (run `python split_data.py` first, or set data.split_root)" if path.startswith(cfg.data.split_root) else ""
            raise ConfigError(f"data.{name}_dir: folder not found: {path}{hint}")
