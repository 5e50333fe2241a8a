"""tf.data input pipelines: file lists, one decode/resize path, caching, augmentation.

Labels come from class folder names (binary: names sorted, so cex=0 and pg=1) or from a
split's `labels.csv` (multi-label: columns after `filename`, in file order, plus `any`
when enabled). Unreadable files are found by a pre-scan with Pillow (header and chunk
checks, no full decode) before the pipeline is built, skipped, counted and listed in the
run log; `Dataset.ignore_errors` stays behind it as a backstop for a file that passes the
scan but fails in TensorFlow's decoder, which is logged as a count mismatch.
"""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from ga.config import model_input_size
from ga.errors import DataError
from ga.images import (
    ImageProblem,
    center_crop,
    checked,
    decode_resize,
    pillow_file,
    read_bytes,
    resize_uint8,
    tf_reads,
)
from ga.layers import RandomChannelScale, RandomRot90, RandomSometimes, float32_layers, stateless_augment
from ga.layouts import find_classes, labelled_images
from ga.tasks import Task, get_task

if TYPE_CHECKING:
    from ga.config import AugmentConfig, Config

log = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE


def prescan(paths: Sequence[str]) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Find files that cannot be decoded (by tf.io, or by Pillow for TIFF and the other
    formats tf.io does not read), without decoding them fully.

    Returns:
        (keep: bool array, problems: list of (path, reason)).
    """
    keep = np.ones(len(paths), bool)
    problems = []
    for i, p in enumerate(paths):
        try:
            checked(read_bytes(p))
        except ImageProblem as exc:
            keep[i] = False
            problems.append((p, str(exc)))
    return keep, problems


def release_iterators() -> None:
    """Free the tf.data iterators a finished fit or sweep left behind. Keras leaves fit's last
    iterator in a reference cycle, and with it its C++ iterator and threads, until Python's
    next full collection, which in a process holding TensorFlow can come many runs later: a
    process that trains again (cross-validation folds, the Python API, a test worker)
    carried every earlier run's iterators (ga.trainer.train and the learning-rate finder call
    this when they end)."""
    gc.collect()


def load_image(path: Any, size: Sequence[int], pillow: Any = False) -> tf.Tensor:
    """Read and decode one image file to a uint8 tensor of `size` (the training path); with
    `pillow` (a bool tensor) through Pillow: TIFF (8 or 16 bits) and other formats tf.io does
    not read, decoded as inference decodes them."""

    def with_pillow():
        img = tf.numpy_function(lambda p: pillow_file(p.decode()), [path], tf.uint8, stateful=False)
        return resize_uint8(tf.ensure_shape(img, [None, None, 3]), size)

    return tf.cond(pillow, with_pillow, lambda: decode_resize(tf.io.read_file(path), size))


# ---------------------------------------------------------------------------- augmentation


def augmentation(aug: AugmentConfig, seed: int = 0, name: str = "augmentation") -> keras.Sequential | None:
    """Keras preprocessing layers for the training split, or None when disabled.

    The study's defaults reproduce ImageDataGenerator(rotation_range=30, width/height_shift
    0.2, zoom_range 0.3, horizontal/vertical flip, fill_mode nearest).
    """
    if not aug.enabled:
        return None
    with float32_layers():
        return _augmentation(aug, seed, name)


def _augmentation(aug, seed, name):
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
    if aug.color_scale > 0 and aug.color_shift_p > 0:
        shift = RandomChannelScale(aug.color_scale, seed=seed + 7)
        layers.append(shift if aug.color_shift_p >= 1 else RandomSometimes(shift, aug.color_shift_p, seed=seed + 9))
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
    def size(self) -> int:
        return len(self.paths)


@dataclass
class Datasets:
    """The three splits, the class list and the task (a ga.tasks.Task)."""

    train: SplitData
    valid: SplitData
    test: SplitData
    classes: list
    task: Task
    input_size: tuple

    def skipped(self) -> list[tuple[str, str]]:
        return [p for s in (self.train, self.valid, self.test) if s is not None for p in s.skipped]

    def class_counts(self) -> dict[str, dict[str, int]]:
        """{split: {class: images}} of the splits built (multi-label: positives per class)."""
        return {name: self.task.class_counts(split.labels, self.classes)
                for name, split in (("train", self.train), ("valid", self.valid), ("test", self.test))
                if split is not None and self.classes}


def read_classes(cfg: Config) -> list[str]:
    """The class list from the training data (checked against `data.classes` when set)."""
    train_dir = cfg.data.dirs()[0]
    task = get_task(cfg)
    classes = find_classes(train_dir, task, cfg.data.class_names, cfg.data.any_class)
    if cfg.data.classes is not None:
        want = list(cfg.data.classes) + task.any_column(cfg)
        if want != classes:
            raise DataError(f"data.classes {cfg.data.classes} does not match the classes found in {train_dir}: {classes}")
    return classes


def build_datasets(cfg: Config, classes: Sequence[str] | None = None,
                   splits: Sequence[str] = ("train", "valid", "test")) -> Datasets:
    """tf.data pipelines for the splits of a configuration.

    Args:
        cfg: Config.
        classes: the recorded class list (a resumed run's), or None to read it from the data.
        splits: which splits to build.

    Returns:
        Datasets; splits not asked for are None.
    """
    classes = classes or read_classes(cfg)
    folds = fold_files(cfg, classes) if cfg.data.fold is not None else {}
    out = {}
    for name, split_dir in zip(("train", "valid", "test"), cfg.data.dirs()):
        if name not in splits:
            out[name] = None
            continue
        out[name] = _build_split(cfg, name, split_dir, classes, folds.get(name))
    return Datasets(out["train"], out["valid"], out["test"], classes, get_task(cfg), model_input_size(cfg))


def fold_files(cfg: Config, classes: Sequence[str]) -> dict[str, tuple[list[str], np.ndarray]]:
    """Cross-validation fold `data.fold`: {"train": (paths, labels) of the other folds,
    "valid": those of the fold}, from the split's train and valid folders and the manifest's
    fold column (split_data.py --folds K).

    Raises:
        DataError: the split has no folds, or data.fold is not one of them.
    """
    from ga.splitting import fold_table

    k, table = fold_table(cfg.data.split_root)
    fold = cfg.data.fold
    if fold >= k:
        raise DataError(f"data.fold is {fold} but the split at {cfg.data.split_root} has {k} folds (0 .. {k - 1})")
    task = get_task(cfg)
    paths, labels = [], []
    for split_dir in cfg.data.dirs()[:2]:
        p, y = labelled_images(split_dir, classes, task, cfg.data.class_names, cfg.data.any_class)
        paths += list(p)
        labels.append(y)
    y = np.concatenate(labels)
    where = np.array([table.get(os.path.abspath(p), -1) for p in paths])
    out = {}
    for name, keep in (("train", (where != fold) & (where >= 0)), ("valid", where == fold)):
        out[name] = ([p for p, k_ in zip(paths, keep) if k_], y[keep])
    log.info("cross-validation fold %d (of 0 .. %d): %d training and %d validation images", fold, k - 1, len(out["train"][0]),
             len(out["valid"][0]))
    return out


def _build_split(cfg, name, split_dir, classes, listed=None):
    if listed is None:
        paths, labels = labelled_images(split_dir, classes, get_task(cfg), cfg.data.class_names, cfg.data.any_class)
    else:
        paths, labels = listed
        split_dir = f"fold {cfg.data.fold} of {cfg.data.split_root}"
    fraction = cfg.data.fraction if name == "train" else 1.0
    paths, labels, problems = usable(paths, labels, name, fraction, cfg.training.seed)
    if not paths:
        raise DataError(f"no usable images in the {name} split at {split_dir}")
    ds = pipeline(cfg, name, paths, labels)
    log.info("%s: %d images from %s%s", name, len(paths), split_dir, f" ({len(problems)} skipped)" if problems else "")
    return SplitData(ds, paths, labels, problems)


def pipeline(cfg: Config, name: str, paths: Sequence[str], labels: np.ndarray, batch: int | None = None,
             weights: np.ndarray | None = None) -> tf.data.Dataset:
    """The batched tf.data pipeline of one split's (usable) files: decoded once, cached when
    small enough, shuffled and augmented for the training split.

    Args:
        batch: images per batch (default data.batch_size; a multi-worker shard takes its share).
        weights: per-image sample weights (n,), or None; with them the dataset yields
            (image, label, weight).
    """
    size = tuple(cfg.data.image_size)
    training = name == "train"
    cache = wants_cache(cfg, len(paths))
    seed = cfg.training.seed
    buffer = min(cfg.data.shuffle_buffer, len(paths))
    pos = labels.max(axis=1) > 0
    if training and cfg.data.balance and 0 < pos.sum() < len(paths):  # (multi-label only: config.py)
        # The original's weighted sampler: images with and without any label drawn equally.
        # Each half is its own decoded, cached, endless stream.
        halves = [decoded([p for p, k in zip(paths, pos) if k == want], labels[pos == want], size, cache,
                          None if weights is None else weights[pos == want])
                  .shuffle(buffer, seed=seed).repeat() for want in (True, False)]
        ds = tf.data.Dataset.sample_from_datasets(halves, [0.5, 0.5], seed=seed)
        if not cfg.training.steps_per_epoch:
            ds = ds.take(len(paths))
    else:
        ds = decoded(paths, labels, size, cache, weights)
        if training:
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
            if cfg.training.steps_per_epoch:
                ds = ds.repeat()
    ds = ds.batch(batch or cfg.data.batch_size)
    ds = ds.map(lambda x, *rest: (tf.cast(x, tf.float32), *rest), num_parallel_calls=AUTOTUNE)
    aug = cfg.data.augment
    if training and aug.placement == "pipeline":
        layer = augmentation(aug, seed)
        if layer is not None:
            # Each batch augmented with its own seed from a seeded stream (a new stream each
            # epoch): the same images in any process, however many calls run in parallel.
            seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
            ds = tf.data.Dataset.zip((ds, seeds)).map(
                lambda batch, s: (stateless_augment(layer.layers, batch[0], s), *batch[1:]), num_parallel_calls=AUTOTUNE)
    elif not training and aug.crop:
        ds = ds.map(lambda x, *rest: (center_crop(x, aug.crop), *rest), num_parallel_calls=AUTOTUNE)
    return without_autotune_wait(ds.prefetch(AUTOTUNE))


def without_autotune_wait(ds: tf.data.Dataset) -> tf.data.Dataset:
    """`ds` with tf.data's autotuning model off. With it on, deleting an iterator (the end of
    every fit, evaluate and predict) blocks until the autotuner's next wake-up, whose period
    doubles from 10 ms (to a minute): up to as long again as the iterator lived. Measured: an
    iterator of a map + prefetch pipeline took 0.3, 1.0, 2.1 and 4.2 s to delete after 0.3,
    1.5, 3 and 6 s of use, against 1 ms without; a 7.8 s ResNet-50 `fit` returned at 10.23 s;
    the demo at 96 px for 3 epochs (600 crops) took 19.8-26.4 s with it, 19.6-20.6 s without,
    at the same accuracy. Without the model, AUTOTUNE parallelism is the number of cores and
    prefetch buffers grow by TensorFlow's legacy rule."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def preview_batch(cfg: Config, paths: Sequence[str], labels: np.ndarray, n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """One training batch as the model sees it: up to `n` images drawn (seeded) from the
    split's files, decoded, resized and augmented as the training pipeline does, with a fresh
    augmentation layer (the training run's random streams are left untouched).

    Returns:
        (float32 pixels 0-255 (m, h, w, 3), labels (m, outputs)) for the m <= n images decoded.
    """
    rng = np.random.default_rng(cfg.training.seed)
    pick = rng.choice(len(paths), min(n, len(paths)), replace=False)  # in shuffled order, as a batch is
    ds = decoded([paths[i] for i in pick], np.asarray(labels)[pick], tuple(cfg.data.image_size), False)
    x, y = next(iter(ds.batch(len(pick))))
    x = tf.cast(x, tf.float32)
    layer = augmentation(cfg.data.augment, cfg.training.seed)
    if layer is not None:
        first = next(iter(tf.data.Dataset.random(seed=cfg.training.seed, rerandomize_each_iteration=True)))
        x = stateless_augment(layer.layers, x, first)
    return np.asarray(x, np.float32), np.asarray(y)


def usable(paths: Sequence[str], labels: np.ndarray, name: str, fraction: float = 1.0,
           seed: int = 0) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
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


def wants_cache(cfg: Config, n: int) -> bool:
    """Whether `n` decoded images of data.image_size are kept in memory (data.cache)."""
    h, w = cfg.data.image_size
    return cfg.data.cache == "memory" or (cfg.data.cache == "auto" and n * h * w * 3 <= cfg.data.cache_budget_mb * 2**20)


def decoded(paths: Sequence[str], labels: np.ndarray, size: Sequence[int], cache: bool,
            weights: np.ndarray | None = None) -> tf.data.Dataset:
    """(uint8 image, label) pairs, or (image, label, weight) with `weights`, decoded in
    parallel, optionally kept in memory."""
    pillow = [not tf_reads(p) for p in paths]
    extra = () if weights is None else (np.asarray(weights, np.float32),)
    ds = tf.data.Dataset.from_tensor_slices((list(paths), pillow, labels, *extra))
    ds = ds.map(lambda p, k, *rest: (load_image(p, size, k), *rest), num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors(log_warning=True)
    return ds.cache() if cache else ds
