"""SimCLR pretraining (`model.task: contrastive`): views, NT-Xent loss, the training model.

An unlabelled folder (`data.train_dir`, read recursively) feeds batches of two
independently, strongly augmented views of every image. The encoder (preprocessing,
backbone, global pooling, a two-layer projection head) embeds both; NT-Xent (Chen et al.
2020, arXiv 2006.10029) pulls each image's two views together and pushes it away from every
other view in the batch. Under `tf.distribute` the embeddings of all replicas are gathered,
so the negatives are those of the whole global batch, as in SimCLR.
"""

import logging
import os

import keras
import numpy as np
import tensorflow as tf

from ga.config import model_input_size
from ga.data import AUTOTUNE, SplitData, decoded, usable, wants_cache
from ga.errors import DataError
from ga.images import image_files
from ga.layers import (
    RandomChannelScale,
    RandomResizedCrop,
    RandomRot90,
    RandomSometimes,
)

log = logging.getLogger(__name__)

LARGE = 1e9  # subtracted from an embedding's similarity with itself


def nt_xent(z1, z2, temperature):
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


def views_layer(cc, size, seed=0):
    """The strong augmentation of one view: random resized square crop to `size`, right-angle
    turns and flips, per-channel colour scaling (some views), Gaussian blur (some views), a
    small rotation. Calling it twice on a batch gives two independent views."""
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
    if cc.rotation > 0:
        layers.append(L.RandomRotation(cc.rotation / 360.0, fill_mode="reflect", seed=seed + 16))
    return keras.Sequential(layers, name="contrastive_views")


def build_pairs(cfg):
    """The training input: batches of (view 1, view 2), float32 0..255, model input size.

    Returns:
        SplitData whose dataset yields (views1, views2) and whose labels are empty.
    """
    folder = cfg.data.dirs()[0]
    if not os.path.isdir(folder):
        raise DataError(f"folder not found: {folder}")
    found = image_files(folder)  # labels, if the folder has any, are ignored
    paths, no_labels, problems = usable(found, np.zeros((len(found), 0), np.float32), "unlabelled",
                                        cfg.data.fraction, cfg.training.seed)
    batch = cfg.data.batch_size
    if len(paths) < batch:
        raise DataError(f"contrastive training needs at least data.batch_size={batch} images; "
                        f"{folder} has {len(paths)} usable")
    size = tuple(cfg.data.image_size)
    cache = wants_cache(cfg, len(paths))
    ds = decoded(paths, no_labels, size, cache).map(lambda x, _: x)
    ds = ds.shuffle(min(cfg.data.shuffle_buffer, len(paths)), seed=cfg.training.seed, reshuffle_each_iteration=True)
    if cfg.training.steps_per_epoch:
        ds = ds.repeat()
    # Whole batches only: every replica gets the same share, and NT-Xent sees full batches.
    ds = ds.batch(batch, drop_remainder=True).map(lambda x: tf.cast(x, tf.float32), num_parallel_calls=AUTOTUNE)
    view = views_layer(cfg.contrastive, model_input_size(cfg), cfg.training.seed)
    ds = ds.map(lambda x: (view(x, training=True), view(x, training=True)), num_parallel_calls=AUTOTUNE)
    log.info("unlabelled: %d images from %s%s; %d pairs of views per step", len(paths), folder,
             f" ({len(problems)} skipped)" if problems else "", batch)
    return SplitData(ds.prefetch(AUTOTUNE), paths, no_labels, problems)


class SimCLR(keras.Model):
    """Trains `encoder` with NT-Xent on (view 1, view 2) batches; saving uses the encoder."""

    def __init__(self, encoder, temperature, **kwargs):
        super().__init__(name="simclr", **kwargs)
        self.encoder = encoder
        self.temperature = float(temperature)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.built = encoder.built  # its variables are the encoder's, which exist already

    def call(self, x, training=False):
        return self.encoder(x, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker]

    def train_step(self, data):
        v1, v2 = data
        n = tf.shape(v1)[0]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            # Both views in one pass: BatchNorm normalises over the pair, as in SimCLR.
            z = self.encoder(tf.concat([v1, v2], axis=0), training=True)
            loss = nt_xent(z[:n], z[n:], self.temperature)
            # The optimizer sums the replicas' gradients: scale so the sum is the global mean's.
            scaled = self.optimizer.scale_loss((loss + tf.add_n([0.0, *self.encoder.losses])) / replicas)
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        v1, v2 = data
        n = tf.shape(v1)[0]
        z = self.encoder(tf.concat([v1, v2], axis=0), training=False)
        self.loss_tracker.update_state(nt_xent(z[:n], z[n:], self.temperature))
        return {"loss": self.loss_tracker.result()}
