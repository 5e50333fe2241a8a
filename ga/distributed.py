"""Multi-worker training (`training.distribution: multi_worker`): the cluster, who writes, which
images each worker reads, and two Keras fixes.

Every worker runs the same command; `tf.distribute.MultiWorkerMirroredStrategy` keeps them in
step. The cluster comes from TF_CONFIG, else from a Slurm job step's environment
(`SlurmClusterResolver`). Only the chief (the `chief` task, else worker 0) writes the run
folder; every other worker writes to a temporary folder that it removes at the end (Keras's
multi-worker guide does the same for checkpoints), and on `--resume` starts from a copy of the
run folder's checkpoints, so every worker restores the same state.

Data: each worker decodes and trains on its own shard of every split (`shard_rows`). Training
shards have one length, so that every step has a batch of one size on every worker (a shorter
shard is padded with copies of weight 0); validation shards are the exact split, so the
validation loss and metrics are those of one process. The global batch stays `data.batch_size`
(each worker batches its share), so an epoch has the steps a single process would take.

Keras 3.15's TensorFlow trainer fails under MultiWorkerMirroredStrategy in two places
(keras-team/keras#20585): before the first step it averages the first distributed batch
across workers with `strategy.reduce` only to learn its shapes ("unsupported type PerReplica
to a Tensor"), and after each step it averages the scalar metric results with `axis=0`
("Invalid reduction dimension 0"). `patch_keras()` replaces both with what they mean: shapes
from the dataset's element spec (Keras draws a real batch, which also starts a read-ahead over
the validation set at every epoch), and the mean of scalars over replicas. It is applied only
when a multi-worker strategy is made.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ga.errors import ConfigError, TrainingError, opt
from ga.tasks import get_task

if TYPE_CHECKING:
    from ga.config import Config

log = logging.getLogger(__name__)

SLURM_PORT_BASE = 8888  # first port of a Slurm task on its node (one more per further task)
SLURM_STEP = ("PROCID", "STEP_NUM_TASKS", "STEP_NODELIST", "STEP_TASKS_PER_NODE")  # set by srun for each task

_PATCHED = False


def patch_keras() -> None:
    """Apply the two multi-worker fixes to Keras's TensorFlow trainer (idempotent)."""
    global _PATCHED
    if _PATCHED:
        return
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None and data_batch is None:
            data_batch = _batch_spec(iterator, self.distribute_strategy)
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction == "auto" and trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    trainer.reduce_per_replica = reduce_per_replica
    _PATCHED = True


def _batch_spec(iterator, strategy):
    """The shapes and dtypes of one replica's batch, from the distributed dataset's element
    spec: Keras only needs them to build its metrics, and drawing a real batch (what Keras
    does) starts a read-ahead over the dataset at every `fit` and every validation."""
    import tensorflow as tf
    from keras.src import tree

    spec = getattr(getattr(iterator, "_distributed_dataset", None), "element_spec", None)
    if spec is not None:
        return tree.map_structure(lambda s: getattr(s, "_value_specs", [s])[0], spec)
    for _, _, it in iterator:  # another Keras version: this worker's own first batch
        local = strategy.experimental_local_results
        return tree.map_structure(lambda x: local(x)[0] if isinstance(x, tf.distribute.DistributedValues) else x,
                                  next(it))
    return None


def is_chief(strategy: Any) -> bool:
    """Whether this process writes the run folder: always, except for the non-chief workers of
    a multi-worker strategy."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    spec = resolver.cluster_spec().as_dict()
    if "chief" in spec:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and int(resolver.task_id or 0) == 0


def weights_digest(model: Any, trainable: bool = False) -> str:
    """SHA-256 of the model's weights: all of them (BatchNorm's moving statistics included), or
    the trainable ones (equal on every worker even when BatchNorm is not synchronised)."""
    import hashlib

    h = hashlib.sha256()
    for v in model.trainable_weights if trainable else model.weights:
        h.update(np.ascontiguousarray(np.asarray(v, np.float32)).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------- the cluster


def cluster_resolver() -> Any:
    """The cluster of this worker: TF_CONFIG when set, else the Slurm job step's environment
    (a task started by srun: SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_STEP_NODELIST,
    SLURM_STEP_TASKS_PER_NODE).

    Raises:
        ConfigError: neither is there, or Slurm's variables cannot be read.
    """
    import tensorflow as tf

    env = os.environ
    if env.get("TF_CONFIG"):
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if all(env.get(f"SLURM_{k}") for k in SLURM_STEP):
        try:
            return _slurm_resolver(env)
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"training.distribution: multi_worker: cannot read the Slurm job step ({exc})") from None
    raise ConfigError("training.distribution: multi_worker needs TF_CONFIG describing the cluster, or a Slurm job "
                      "step (one main.py per task, started by srun); see docs/cluster.md")


def _slurm_resolver(env):
    """SlurmClusterResolver, one worker per Slurm task, ports from SLURM_PORT_BASE (or
    GA_PORT_BASE) up, one more per further task on a node. GPUs: a task that already sees
    its own (CUDA_VISIBLE_DEVICES set, as --gpus-per-task does) keeps them; a node's GPUs
    (SLURM_GPUS_ON_NODE) are otherwise shared out among its tasks. The resolver needs a GPU
    count even without GPUs (TF 2.21 divides by it), so there each task gets one notional
    slot and CUDA_VISIBLE_DEVICES is left alone."""
    import tensorflow as tf

    slurm = tf.distribute.cluster_resolver.SlurmClusterResolver
    port = int(env.get("GA_PORT_BASE") or SLURM_PORT_BASE)
    gpus = int(env.get("SLURM_GPUS_ON_NODE") or 0)
    if gpus and not env.get("CUDA_VISIBLE_DEVICES"):
        return slurm(port_base=port, gpus_per_node=gpus)
    tasks = max(int(part.split("(")[0]) for part in env["SLURM_STEP_TASKS_PER_NODE"].split(","))
    return slurm(port_base=port, gpus_per_node=tasks, gpus_per_task=1, auto_set_gpu=False)


def make_strategy() -> Any:
    """MultiWorkerMirroredStrategy over this worker's cluster (with the Keras fixes applied)."""
    import tensorflow as tf

    resolver = cluster_resolver()
    patch_keras()
    _bypass_proxy(resolver.cluster_spec().as_dict())
    return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)


def _bypass_proxy(spec):
    """Workers talk to each other directly. gRPC sends its connections through an HTTP proxy
    named in http_proxy (common on cluster login and compute nodes), which cannot reach the
    workers' ports: TensorFlow's start-up then waits for good (seen here with a proxy on a
    closed port). gRPC's own no_grpc_proxy exempts the cluster's hosts and leaves the proxy
    to everything else (Keras's weight download)."""
    hosts = {address.rsplit(":", 1)[0] for addresses in spec.values() for address in addresses}
    have = [h for h in os.environ.get("no_grpc_proxy", "").split(",") if h]
    os.environ["no_grpc_proxy"] = ",".join(have + sorted(hosts - set(have)))


def worker_count(strategy: Any) -> int:
    """Workers of a multi-worker strategy (1 for any other)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return 1
    spec = resolver.cluster_spec().as_dict()
    return sum(len(spec.get(job, [])) for job in ("chief", "worker"))


def seed_scratch(run_dir: str, scratch: str) -> None:
    """Copy an interrupted run's checkpoints (backup folders, best and linear-stage weights,
    history.csv) into a non-chief worker's scratch folder, which it then resumes from; the
    run folder itself is only read."""
    for name in os.listdir(run_dir):
        src = os.path.join(run_dir, name)
        if name.startswith("backup") and os.path.isdir(src):
            shutil.copytree(src, os.path.join(scratch, name))
        elif name in ("best.weights.h5", "stage1.weights.h5", "stage1.json", "history.csv"):
            shutil.copy2(src, os.path.join(scratch, name))


def close_left_pools() -> int:
    """Terminate every multiprocessing pool of this process that is still running; how many."""
    import gc
    import multiprocessing.pool

    left = [o for o in gc.get_objects() if isinstance(o, multiprocessing.pool.Pool)
            and getattr(o, "_state", None) == multiprocessing.pool.RUN]
    for pool in left:
        pool.terminate()
    return len(left)


def collective_errors(strategy: Any) -> tuple[type, ...]:
    """The TensorFlow errors that mean a worker of `strategy` went away (none for a single
    process): its peers' collective operations fail with them once its heartbeats stop."""
    import tensorflow as tf

    if worker_count(strategy) < 2:
        return ()
    return (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
            tf.errors.CancelledError)


def lost_worker(exc: BaseException, run_dir: str | None) -> TrainingError:
    """The TrainingError for a collective operation that failed because a worker went away.

    TensorFlow's eager all-reduce maps over a multiprocessing ThreadPool and closes it only
    when every device's reduction returns; the failed one leaves it open, held by the
    exception's frames, and its finaliser then wrote an "Exception ignored ... Bad file
    descriptor" traceback at interpreter exit after the one-line error. Such pools are
    stopped here."""
    import re

    close_left_pools()

    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", str(exc)).strip()
    found = re.search(r"unhealthy.*?/job:(\w+)/replica:\d+/task:(\d+)", text, re.S)
    if found:
        what = f"{found.group(1)} {found.group(2)} stopped sending heartbeats"
    else:
        what = type(exc).__name__ + (f": {text.splitlines()[0][:120]}" if text else "")
    where = run_dir or "the chief's run folder"
    return TrainingError(f"multi-worker training lost a worker ({what}); {where} keeps the last finished epoch: "
                         f"start every worker again with {opt('resume', 'train(resume=...) on')} {where}")


# ---------------------------------------------------------------------------- data shards


def shard_rows(n: int, index: int, count: int, mode: str = "pad") -> tuple[np.ndarray, np.ndarray]:
    """Rows of a list of `n` images that worker `index` of `count` reads: every count-th,
    from `index`. `mode` says what happens when `count` does not divide `n`:
    "pad": every shard has ceil(n / count) rows, a short one completed by rows of weight 0
    (training: every worker has a batch of the same size at every step);
    "trim": every shard has n // count rows (the rest is left out: whole contrastive batches);
    "all": the shards differ by one row (validation, batched by `validation_batch` so that
    every worker has the same number of batches, none empty).

    Returns:
        (rows int array, weight mask float32 array of 1s and 0s).
    """
    rows = np.arange(index, n, count)
    length = {"pad": math.ceil(n / count), "trim": n // count, "all": len(rows)}[mode]
    mask = np.ones(length, np.float32)
    if len(rows) >= length:
        return rows[:length], mask
    extra = np.arange(length - len(rows)) % n
    mask[len(rows):] = 0.0
    return np.concatenate([rows, extra]), mask


class ShardLedger:
    """Counts what this worker's pipelines deliver per epoch: images (weight > 0), padding
    and batches, per split; `line()` reports and resets the counts."""

    def __init__(self, index, count):
        self.index, self.count = index, count
        self.seen = {}

    def counted(self, ds: Any, split: str) -> Any:
        """`ds` (batches of (x, y, w) or (view 1, view 2)) with its deliveries counted."""
        import tensorflow as tf

        def add(real, total):
            images, padding, batches = self.seen.get(split, (0, 0, 0))
            self.seen[split] = (images + int(real), padding + int(total - real), batches + 1)
            return np.int64(0)

        def tally(*batch):
            total = tf.shape(batch[0])[0]
            real = tf.reduce_sum(tf.cast(batch[2] > 0, tf.int32)) if len(batch) == 3 else total
            done = tf.numpy_function(add, [real, total], tf.int64, stateful=True)
            with tf.control_dependencies([done]):
                return tuple(tf.identity(t) for t in batch)

        return ds.map(tally)

    def line(self, epoch: int) -> str:
        parts = [f"{split} {images} images" + (f" (+{pad} padding)" if pad else "") + f" in {batches} batches"
                 for split, (images, pad, batches) in sorted(self.seen.items(), key=lambda kv: kv[0] != "train")]
        self.seen = {}
        return f"worker {self.index + 1} of {self.count}, epoch {epoch + 1}: read " + "; ".join(parts)


def sharded_inputs(strategy: Any, cfg: Config, data: Any,
                   class_weight: Mapping[str, float] | None = None) -> tuple[Any, Any, ShardLedger, Any]:
    """The training and validation inputs of `fit` on a multi-worker run: every worker reads
    its shard (`shard_rows`) of `data`'s usable files, batched by its share of data.batch_size.
    Classifier batches are (image, label, weight): the weight is the class weight
    (`class_weight`, {class: w}) times 0 for padding.

    Returns:
        (train, valid or None, ShardLedger of this worker, the training shards again, not
        counted: for re-estimating BatchNorm, training.precise_bn_batches).
    """
    from ga.data import pipeline

    count = worker_count(strategy)
    if cfg.data.batch_size % count:
        raise ConfigError(f"data.batch_size {cfg.data.batch_size} must be a multiple of the {count} workers of "
                          f"this multi-worker run (each worker batches an equal share)")
    batch = cfg.data.batch_size // count
    contrastive = not get_task(cfg).classifier
    ledger = ShardLedger(0, count)

    def distributed(split, name, counted=True):
        if split is None:
            return None
        # Class weights weigh the training loss only (as `fit(class_weight=)` does).
        weight = _sample_weights(split.labels, data, class_weight if name == "train" else None)

        exact = None if contrastive or name == "train" else validation_batch(split.size, count, batch)

        def dataset_fn(ctx):
            ledger.index = ctx.input_pipeline_id
            mode = "trim" if contrastive else "all" if exact else "pad"
            rows, mask = shard_rows(split.size, ctx.input_pipeline_id, ctx.num_input_pipelines, mode)
            paths = [split.paths[i] for i in rows]
            if contrastive:
                from ga.contrastive import pairs

                ds = pairs(cfg, paths, training=name == "train", batch=batch)
            else:
                ds = pipeline(cfg, name, paths, split.labels[rows], exact or batch, weight[rows] * mask)
            if counted:
                log.info("worker %d of %d reads %d of the %d %s images%s", ctx.input_pipeline_id + 1, count,
                         int(mask.sum()), split.size, name, f" (+{int(len(mask) - mask.sum())} padding)"
                         if mask.sum() < len(mask) else "")
            return ledger.counted(ds, name) if counted else ds

        return strategy.distribute_datasets_from_function(dataset_fn)

    precise = cfg.training.precise_bn_batches and not contrastive
    bn = distributed(data.train, "train", counted=False) if precise else None
    return distributed(data.train, "train"), distributed(data.valid, "valid"), ledger, bn


def validation_batch(n: int, count: int, batch: int) -> int | None:
    """A batch size, at most `batch`, at which every worker's shard of `n` validation images
    ("all" mode: shards of q and q + 1) makes the same number of batches, none empty (TF 2.21
    fails on the empty batch a worker gets once its shard has run out); None when there is
    none (padded shards are used instead; their copies of weight 0 still count in the
    denominator of the validation loss, which is then n / (n + copies) of the exact value)."""
    q = n // count
    if q == 0:
        return None
    if n % count == 0:
        return batch
    return next((b for b in range(batch, 1, -1) if q % b), None)


def _sample_weights(labels, data, class_weight):
    """Per-image loss weights of a split: its class's weight (binary, multiclass), else 1."""
    if not class_weight:
        return np.ones(len(labels), np.float32)
    return data.task.sample_weights(labels, data.classes, class_weight)


def shard_log(ledger: ShardLedger) -> Any:
    """A callback logging, after each epoch, what this worker read (`ShardLedger.line`)."""
    import keras

    class ShardLog(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            log.info(ledger.line(epoch))

    return ShardLog()


def synchronize_batchnorm(model: Any, on: bool = True) -> None:
    """Make every BatchNormalization layer of `model` normalise a training batch with the
    statistics of the global batch (all-reduced over the workers) instead of its own shard's:
    training then matches one process with the whole batch, and the moving statistics stay
    equal on every worker. Switched off again before the model is saved."""
    import keras

    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = on
