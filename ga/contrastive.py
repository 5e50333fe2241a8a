"""SimCLR pretraining (`model.task: contrastive`): views, the losses, the training model.

An unlabelled folder (`data.train_dir`, read recursively) feeds batches of two
independently, strongly augmented views of every image. The encoder (preprocessing,
backbone, global pooling, a projection head) embeds both; NT-Xent (Chen et al. 2020, arXiv
2006.10029) pulls each image's two views together and pushes it away from every other view
in the batch (the graphene study's one-way loss: each first view against the second views).
A held-out share of the images (contrastive.val_fraction) gives a validation loss. Under
`tf.distribute` the embeddings of all replicas are gathered, so the negatives are those of
the whole global batch, as in SimCLR.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from ga.config import model_input_size
from ga.data import AUTOTUNE, SplitData, decoded, usable, wants_cache, without_autotune_wait
from ga.errors import DataError
from ga.layers import (
    RandomChannelScale,
    RandomResizedCrop,
    RandomRot90,
    RandomSometimes,
    float32_layers,
    stateless_augment,
)
from ga.layouts import unlabelled_images

if TYPE_CHECKING:
    from ga.config import Config, ContrastiveConfig

log = logging.getLogger(__name__)

LARGE = 1e9  # subtracted from an embedding's similarity with itself


def nt_xent(z1: Any, z2: Any, temperature: float) -> Any:
    """NT-Xent loss of a batch of view pairs: the mean over all 2n views of
    -log(exp(s(i, j) / t) / sum_{k != i} exp(s(i, k) / t)), s being cosine similarity
    and j the other view of i's image.

    Inside a `tf.distribute` replica context with several replicas, (z1, z2) are this
    replica's rows; the other replicas' rows are gathered and serve as negatives, and the
    mean is over this replica's 2n views (the mean of the replicas' losses is then the
    loss of the global batch).
    """
    z1 = tf.math.l2_normalize(tf.cast(z1, tf.float32), axis=1)
    z2 = tf.math.l2_normalize(tf.cast(z2, tf.float32), axis=1)
    n = tf.shape(z1)[0]
    ctx = tf.distribute.get_replica_context()
    if ctx is not None and ctx.num_replicas_in_sync > 1:
        all1, all2 = ctx.all_gather(z1, axis=0), ctx.all_gather(z2, axis=0)
        offset = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * n
    else:
        all1, all2, offset = z1, z2, 0
    total = tf.shape(all1)[0]
    every = tf.concat([all1, all2], axis=0)  # (2N, d)
    logits = tf.matmul(tf.concat([z1, z2], axis=0), every, transpose_b=True) / temperature  # (2n, 2N)
    rows = tf.range(n) + offset
    itself = tf.concat([rows, rows + total], axis=0)
    partner = tf.concat([rows + total, rows], axis=0)
    logits -= LARGE * tf.one_hot(itself, 2 * total)
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=partner, logits=logits)
    return tf.reduce_mean(loss)


def one_way(z1: Any, z2: Any, temperature: float) -> Any:
    """The graphene study's contrastive loss (clr.py ContrastiveLoss): the mean over the n
    first views of -log softmax_k(c(z1_i, z2_k) / t)[i], c being cosine similarity and k
    running over the second views of the batch (N candidates, the partner on the diagonal).

    Under `tf.distribute` the second views of every replica are the candidates (the global
    batch), and the mean is over this replica's rows.
    """
    z1 = tf.math.l2_normalize(tf.cast(z1, tf.float32), axis=1)
    z2 = tf.math.l2_normalize(tf.cast(z2, tf.float32), axis=1)
    n = tf.shape(z1)[0]
    ctx = tf.distribute.get_replica_context()
    if ctx is not None and ctx.num_replicas_in_sync > 1:
        every, offset = ctx.all_gather(z2, axis=0), tf.cast(ctx.replica_id_in_sync_group, tf.int32) * n
    else:
        every, offset = z2, 0
    logits = tf.matmul(z1, every, transpose_b=True) / temperature  # (n, N)
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.range(n) + offset, logits=logits)
    return tf.reduce_mean(loss)


LOSSES = {"ntxent": nt_xent, "one_way": one_way}


def views_layer(cc: ContrastiveConfig, size: Sequence[int], seed: int = 0) -> keras.Sequential:
    """The strong augmentation of one view: random resized square crop to `size`, right-angle
    turns and flips, per-channel colour scaling (some views), Gaussian blur (some views), a
    small rotation. Calling it twice on a batch gives two independent views."""
    with float32_layers():
        return _views_layer(cc, size, seed)


def _views_layer(cc, size, seed):
    L = keras.layers
    sigma_max = cc.blur_sigma[1]
    kernel = 2 * int(np.ceil(2 * sigma_max)) + 1
    layers = [
        RandomResizedCrop(*size, area=tuple(cc.crop_area), seed=seed + 11),
        RandomRot90(seed=seed + 12),
        RandomSometimes(RandomChannelScale(cc.color_scale, seed=seed + 13), cc.color_prob, seed=seed + 14),
        L.RandomGaussianBlur(factor=(cc.blur_prob, cc.blur_prob), kernel_size=kernel, sigma=tuple(cc.blur_sigma),
                             value_range=(0, 255), seed=seed + 15),
    ]
    if cc.rotation > 0 and cc.rotation_prob > 0:
        rot = L.RandomRotation(cc.rotation / 360.0, fill_mode="reflect", seed=seed + 16)
        layers.append(rot if cc.rotation_prob >= 1 else RandomSometimes(rot, cc.rotation_prob, seed=seed + 17))
    return keras.Sequential(layers, name="contrastive_views")


def build_pairs(cfg: Config) -> tuple[SplitData, SplitData | None]:
    """The training input, and the validation input when contrastive.val_fraction > 0: batches
    of (view 1, view 2), float32 0..255, model input size, from images loaded at
    data.image_size.

    Returns:
        (train, valid or None): SplitData whose datasets yield (views1, views2) and whose
        labels are empty.
    """
    folder = cfg.data.dirs()[0]
    found = unlabelled_images(folder)  # labels, if the folder has any, are ignored
    paths, no_labels, problems = usable(found, np.zeros((len(found), 0), np.float32), "unlabelled",
                                        cfg.data.fraction, cfg.training.seed)
    batch = cfg.data.batch_size
    held = int(round(len(paths) * cfg.contrastive.val_fraction))
    if held:  # a seeded share, as the study's --f_split holds out the shuffled list's tail
        order = np.random.default_rng(cfg.training.seed).permutation(len(paths))
        paths, held_paths = [paths[i] for i in sorted(order[held:])], [paths[i] for i in sorted(order[:held])]
    if len(paths) < batch:
        after = f" after holding out {held} for validation" if held else ""
        raise DataError(f"contrastive training needs at least data.batch_size={batch} images; "
                        f"{folder} has {len(paths)} usable{after}")
    train = SplitData(pairs(cfg, paths, training=True), paths, no_labels[:len(paths)], problems)
    log.info("unlabelled: %d images from %s%s; %d pairs of views per step", len(paths), folder,
             f" ({len(problems)} skipped)" if problems else "", batch)
    if not held:
        return train, None
    log.info("contrastive validation: %d held-out images (contrastive.val_fraction %g)", held,
             cfg.contrastive.val_fraction)
    return train, SplitData(pairs(cfg, paths, training=False), held_paths, no_labels[:held], [])


def pairs(cfg: Config, paths: Sequence[str], training: bool, batch: int | None = None) -> tf.data.Dataset:
    """(view 1, view 2) batches of `paths` (`batch` pairs, default data.batch_size); the
    training stream is shuffled, and repeated when training.steps_per_epoch is set."""
    batch = batch or cfg.data.batch_size
    size = tuple(cfg.data.image_size)
    ds = decoded(paths, np.zeros((len(paths), 0), np.float32), size, wants_cache(cfg, len(paths))).map(lambda x, _: x)
    if training:
        ds = ds.shuffle(min(cfg.data.shuffle_buffer, len(paths)), seed=cfg.training.seed, reshuffle_each_iteration=True)
        if cfg.training.steps_per_epoch:
            ds = ds.repeat()
    # Whole training batches only: every replica gets the same share, and the loss sees
    # full batches (a short last validation batch has fewer candidates, as in the study).
    ds = ds.batch(batch, drop_remainder=training).map(lambda x: tf.cast(x, tf.float32), num_parallel_calls=AUTOTUNE)
    view = views_layer(cfg.contrastive, model_input_size(cfg), cfg.training.seed + (0 if training else 100))
    # Two independent views, every draw keyed by the batch's own seed (reproducible: ga.data.pipeline).
    seeds = tf.data.Dataset.random(seed=cfg.training.seed + (0 if training else 100), rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip((ds, seeds)).map(
        lambda x, s: (stateless_augment(view.layers, x, s, 0), stateless_augment(view.layers, x, s, 1)),
        num_parallel_calls=AUTOTUNE)
    return without_autotune_wait(ds.prefetch(AUTOTUNE))


class SimCLR(keras.Model):
    """Trains `encoder` with a contrastive loss (`LOSSES`: ntxent, one_way) on (view 1, view 2)
    batches; saving uses the encoder."""

    def __init__(self, encoder, temperature, loss="ntxent", **kwargs):
        super().__init__(name="simclr", **kwargs)
        self.encoder = encoder
        self.temperature = float(temperature)
        self.contrastive_loss = LOSSES[loss]
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.built = encoder.built  # its variables are the encoder's, which exist already

    def call(self, x: Any, training: bool = False) -> Any:
        return self.encoder(x, training=training)

    @property
    def metrics(self) -> list:
        return [self.loss_tracker]

    def train_step(self, data: Any) -> dict:
        v1, v2 = data
        n = tf.shape(v1)[0]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            # Both views in one pass: BatchNorm normalises over the pair, as in SimCLR.
            z = self.encoder(tf.concat([v1, v2], axis=0), training=True)
            loss = self.contrastive_loss(z[:n], z[n:], self.temperature)
            # The optimizer sums the replicas' gradients: scale so the sum is the global mean's.
            scaled = self.optimizer.scale_loss((loss + tf.add_n([0.0, *self.encoder.losses])) / replicas)
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data: Any) -> dict:
        v1, v2 = data
        n = tf.shape(v1)[0]
        z = self.encoder(tf.concat([v1, v2], axis=0), training=False)
        self.loss_tracker.update_state(self.contrastive_loss(z[:n], z[n:], self.temperature))
        return {"loss": self.loss_tracker.result()}
