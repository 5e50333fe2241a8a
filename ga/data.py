"""tf.data input pipelines: file lists, one decode/resize path, caching, augmentation.

Labels come from class folder names (binary: names sorted, so cex=0 and pg=1) or from a
split's `labels.csv` (multi-label: columns after `filename`, in file order, plus `any`
when enabled). Unreadable files are found by a pre-scan with Pillow (header and chunk
checks, no full decode) before the pipeline is built, skipped, counted and listed in the
run log; `Dataset.ignore_errors` stays behind it as a backstop for a file that passes the
scan but fails in TensorFlow's decoder, which is logged as a count mismatch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from ga.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
# Formats tf.io.decode_image reads; others are reported and skipped in training.
TF_FORMATS = ("PNG", "JPEG", "BMP", "GIF")
AUTOTUNE = tf.data.AUTOTUNE


# ---------------------------------------------------------------------------- labels


def binary_classes(split_dir):
    """Class names of a split folder: its subfolders, sorted."""
    if not os.path.isdir(split_dir):
        raise DataError(f"folder not found: {split_dir}")
    classes = sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)) and not d.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{split_dir} needs at least two class folders for a binary task, found {classes}")
    if len(classes) > 2:
        raise DataError(f"{split_dir} has {len(classes)} class folders {classes}; the binary task takes two")
    return classes


def multilabel_classes(split_dir, any_class=False):
    """Class names from a split's labels.csv header (plus "any")."""
    from ga.splitting import read_labels_csv

    return read_labels_csv(split_dir)[0] + (["any"] if any_class else [])


def image_files(folder):
    """Every image file below `folder` (by extension, hidden files left out), sorted by path."""
    paths = []
    for dirpath, dirnames, files in os.walk(folder):
        dirnames.sort()
        paths.extend(os.path.join(dirpath, f) for f in sorted(files)
                     if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
    return paths


def list_split(split_dir, classes, task, any_class=False):
    """Files and labels of one split, sorted by path.

    Returns:
        (paths list[str], labels float32 array of shape (n, outputs)).
    """
    paths, labels = [], []
    if task == "binary":
        for idx, cls in enumerate(classes):
            folder = os.path.join(split_dir, cls)
            if not os.path.isdir(folder):
                raise DataError(f"class folder missing: {folder} (classes recorded for this run: {classes})")
            found = image_files(folder)
            paths.extend(found)
            labels.extend([[float(idx)]] * len(found))
        return paths, np.asarray(labels, np.float32).reshape(-1, 1)
    from ga.splitting import read_labels_csv

    path = os.path.join(split_dir, "labels.csv")
    base = [c for c in classes if not (any_class and c == "any")]
    header, table = read_labels_csv(split_dir)
    if header != base:
        raise DataError(f"{path}: columns {header} differ from the run's classes {base}")
    for name, flags in table.items():
        if os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
            raise DataError(f"{path}: file name {name!r} points outside the split folder")
        vals = [float(v) for v in flags]
        if any_class:
            vals.append(float(max(vals)))
        paths.append(os.path.join(split_dir, name))
        labels.append(vals)
    return paths, np.asarray(labels, np.float32).reshape(-1, len(classes))


def prescan(paths):
    """Find files TensorFlow cannot decode, without decoding them fully.

    Returns:
        (keep: bool array, problems: list of (path, reason)).
    """
    keep = np.ones(len(paths), bool)
    problems = []
    for i, p in enumerate(paths):
        reason = None
        try:
            if os.path.getsize(p) == 0:
                reason = "empty file (0 bytes)"
            else:
                with Image.open(p) as im:
                    fmt = im.format
                    im.verify()  # structure and checksums, no pixel decode
                if fmt not in TF_FORMATS:
                    reason = f"{fmt} images are not read by tf.io; convert to PNG"
        except Image.UnidentifiedImageError:
            reason = "not an image (no known image format)"
        except Exception as exc:  # Pillow raises many types for damaged files; each is a per-file error
            msg = str(exc).splitlines()[0] if str(exc) else ""
            reason = f"cannot decode: {type(exc).__name__}{': ' + msg if msg else ''}"
        if reason:
            keep[i] = False
            problems.append((p, reason))
    return keep, problems


# ---------------------------------------------------------------------------- decoding


def decode_resize(data, size):
    """Encoded image bytes -> RGB uint8 tensor of `size` (the one path for training and inference).

    Grayscale is expanded to three channels, alpha is dropped, 16-bit is reduced to 8-bit,
    and the image is resized with antialiased bilinear interpolation.
    """
    img = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
    img = tf.image.resize(img, size, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(img), 0.0, 255.0), tf.uint8)


def load_image(path, size):
    """Read and decode one image file to a uint8 tensor of `size`."""
    return decode_resize(tf.io.read_file(path), size)


# ---------------------------------------------------------------------------- augmentation


@keras.saving.register_keras_serializable(package="ga")
class RandomRot90(keras.layers.Layer):
    """Each image turned by its own random multiple of 90 degrees and randomly mirrored:
    a random transpose and two random flips give the eight rotations/flips uniformly.
    Square inputs only."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self._gen = keras.random.SeedGenerator(seed)

    def call(self, x, training=True):
        if not training:
            return x
        n = tf.shape(x)[0]
        flags = keras.random.uniform((3, n), seed=self._gen) < 0.5
        pick = lambda f, a, b: tf.where(tf.reshape(f, (-1, 1, 1, 1)), a, b)  # noqa: E731
        x = pick(flags[0], tf.transpose(x, (0, 2, 1, 3)), x)
        x = pick(flags[1], tf.reverse(x, [1]), x)
        return pick(flags[2], tf.reverse(x, [2]), x)

    def get_config(self):
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

    def call(self, x, training=True):
        if not training:
            return x
        mask = keras.random.uniform((tf.shape(x)[0], 1, 1, 1), seed=self._gen) < self.rate
        return tf.where(mask, self.layer(x, training=True), x)

    def get_config(self):
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

    def call(self, x, training=True):
        if not training or self.scale <= 0:
            return x
        shape = (keras.ops.shape(x)[0], 1, 1, 3)
        f = keras.random.uniform(shape, 1 - self.scale, 1 + self.scale, seed=self._gen)
        return keras.ops.clip(x * f, 0.0, 255.0)

    def get_config(self):
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

    def call(self, x, training=True):
        size = (self.height, self.width)
        if not training:
            return tf.image.resize(x, size)
        n = tf.shape(x)[0]
        h, w = tf.cast(tf.shape(x)[1], tf.float32), tf.cast(tf.shape(x)[2], tf.float32)
        share = keras.random.uniform((n,), self.area[0], self.area[1], seed=self._gen)
        side = tf.minimum(tf.sqrt(share * h * w), tf.minimum(h, w))
        fh, fw = side / h, side / w
        y0 = keras.random.uniform((n,), seed=self._gen) * (1 - fh)
        x0 = keras.random.uniform((n,), seed=self._gen) * (1 - fw)
        boxes = tf.stack([y0, x0, y0 + fh, x0 + fw], axis=1)
        return tf.image.crop_and_resize(x, boxes, tf.range(n), size)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width, "area": list(self.area),
                "seed": self.seed}


def augmentation(aug, seed=0, name="augmentation"):
    """Keras preprocessing layers for the training split, or None when disabled.

    The study's defaults reproduce ImageDataGenerator(rotation_range=30, width/height_shift
    0.2, zoom_range 0.3, horizontal/vertical flip, fill_mode nearest).
    """
    if not aug.enabled:
        return None
    L = keras.layers
    layers = []
    if aug.rot90:
        layers.append(RandomRot90(seed=seed + 1))
    flip = {(True, True): "horizontal_and_vertical", (True, False): "horizontal", (False, True): "vertical"}
    mode = flip.get((aug.horizontal_flip, aug.vertical_flip))
    if mode:
        layers.append(L.RandomFlip(mode, seed=seed + 2))
    if aug.rotation > 0:
        rot = L.RandomRotation(aug.rotation / 360.0, fill_mode=aug.fill_mode, seed=seed + 3)
        layers.append(rot if aug.rotation_prob >= 1 else RandomSometimes(rot, aug.rotation_prob, seed=seed + 4))
    if aug.shift > 0:
        layers.append(L.RandomTranslation(aug.shift, aug.shift, fill_mode=aug.fill_mode, seed=seed + 5))
    if aug.zoom > 0:
        layers.append(L.RandomZoom((-aug.zoom, aug.zoom), fill_mode=aug.fill_mode, seed=seed + 6))
    if aug.color_scale > 0:
        layers.append(RandomChannelScale(aug.color_scale, seed=seed + 7))
    if aug.crop:
        layers.append(L.RandomCrop(*aug.crop, seed=seed + 8))
    if not layers:
        return None
    return keras.Sequential(layers, name=name)


# ---------------------------------------------------------------------------- datasets


@dataclass
class SplitData:
    """One split: its tf.data pipeline and what went into it."""

    dataset: tf.data.Dataset
    paths: list
    labels: np.ndarray
    skipped: list = field(default_factory=list)  # (path, reason)

    @property
    def size(self):
        return len(self.paths)


@dataclass
class Datasets:
    """The three splits, the class list and the task."""

    train: SplitData
    valid: SplitData
    test: SplitData
    classes: list
    task: str
    input_size: tuple

    def skipped(self):
        return [p for s in (self.train, self.valid, self.test) if s is not None for p in s.skipped]


def read_classes(cfg):
    """The class list from the training data (checked against `data.classes` when set)."""
    train_dir = cfg.data.dirs()[0]
    if cfg.model.task == "binary":
        classes = binary_classes(train_dir)
    else:
        classes = multilabel_classes(train_dir, cfg.data.any_class)
    if cfg.data.classes is not None:
        want = list(cfg.data.classes) + (["any"] if cfg.model.task == "multilabel" and cfg.data.any_class else [])
        if want != classes:
            raise DataError(f"data.classes {cfg.data.classes} does not match the classes found in {train_dir}: {classes}")
    return classes


def model_input_size(cfg):
    """The model's input [h, w]: the crop size when cropping, else the image size."""
    return tuple(cfg.data.augment.crop or cfg.data.image_size)


def build_datasets(cfg, classes=None, splits=("train", "valid", "test")):
    """tf.data pipelines for the splits of a configuration.

    Args:
        cfg: Config.
        classes: the recorded class list (a resumed run's), or None to read it from the data.
        splits: which splits to build.

    Returns:
        Datasets; splits not asked for are None.
    """
    classes = classes or read_classes(cfg)
    out = {}
    for name, split_dir in zip(("train", "valid", "test"), cfg.data.dirs()):
        if name not in splits:
            out[name] = None
            continue
        out[name] = _build_split(cfg, name, split_dir, classes)
    return Datasets(out["train"], out["valid"], out["test"], classes, cfg.model.task, model_input_size(cfg))


def _build_split(cfg, name, split_dir, classes):
    paths, labels = list_split(split_dir, classes, cfg.model.task, cfg.data.any_class)
    fraction = cfg.data.fraction if name == "train" else 1.0
    paths, labels, problems = usable(paths, labels, name, fraction, cfg.training.seed)
    if not paths:
        raise DataError(f"no usable images in the {name} split at {split_dir}")
    size = tuple(cfg.data.image_size)
    training = name == "train"
    cache = wants_cache(cfg, len(paths))
    seed = cfg.training.seed
    buffer = min(cfg.data.shuffle_buffer, len(paths))
    pos = labels.max(axis=1) > 0
    if training and cfg.model.task == "multilabel" and cfg.data.balance and 0 < pos.sum() < len(paths):
        # The original's weighted sampler: images with and without any label drawn equally.
        # Each half is its own decoded, cached, endless stream.
        halves = [decoded([p for p, k in zip(paths, pos) if k == want], labels[pos == want], size, cache)
                  .shuffle(buffer, seed=seed).repeat() for want in (True, False)]
        ds = tf.data.Dataset.sample_from_datasets(halves, [0.5, 0.5], seed=seed)
        if not cfg.training.steps_per_epoch:
            ds = ds.take(len(paths))
    else:
        ds = decoded(paths, labels, size, cache)
        if training:
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
            if cfg.training.steps_per_epoch:
                ds = ds.repeat()
    ds = ds.batch(cfg.data.batch_size)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=AUTOTUNE)
    aug = cfg.data.augment
    if training and aug.placement == "pipeline":
        layer = augmentation(aug, cfg.training.seed)
        if layer is not None:
            ds = ds.map(lambda x, y: (layer(x, training=True), y), num_parallel_calls=AUTOTUNE)
    elif not training and aug.crop:
        crop = keras.layers.CenterCrop(*aug.crop)
        ds = ds.map(lambda x, y: (crop(x), y), num_parallel_calls=AUTOTUNE)
    ds = ds.prefetch(AUTOTUNE)
    log.info("%s: %d images from %s%s", name, len(paths), split_dir, f" ({len(problems)} skipped)" if problems else "")
    return SplitData(ds, paths, labels, problems)


def usable(paths, labels, name, fraction=1.0, seed=0):
    """Drop the files the pre-scan finds unreadable (each logged), then keep a seeded share
    `fraction` of the rest (data.fraction; at least one). Returns (paths, labels, problems)."""
    keep, problems = prescan(paths)
    for p, reason in problems:
        log.warning("skipped %s image %s: %s", name, p, reason)
    paths = [p for p, k in zip(paths, keep) if k]
    labels = labels[keep]
    if fraction < 1 and paths:
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(len(paths), max(1, int(round(len(paths) * fraction))), replace=False))
        paths, labels = [paths[i] for i in idx], labels[idx]
    return paths, labels, problems


def wants_cache(cfg, n):
    """Whether `n` decoded images of data.image_size are kept in memory (data.cache)."""
    h, w = cfg.data.image_size
    return cfg.data.cache == "memory" or (cfg.data.cache == "auto" and n * h * w * 3 <= cfg.data.cache_budget_mb * 2**20)


def decoded(paths, labels, size, cache):
    """(uint8 image, label) pairs, decoded in parallel, optionally kept in memory."""
    ds = tf.data.Dataset.from_tensor_slices((list(paths), labels))
    ds = ds.map(lambda p, y: (load_image(p, size), y), num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors(log_warning=True)
    return ds.cache() if cache else ds
