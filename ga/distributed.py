"""Multi-worker training (`training.distribution: multi_worker`): who writes, and two Keras fixes.

Every worker runs the same command with its own TF_CONFIG; `tf.distribute.
MultiWorkerMirroredStrategy` keeps them in step. Only the chief (the `chief` task, else worker
0) writes the run folder; every other worker writes to a temporary folder that it removes at
the end (Keras's multi-worker guide does the same for checkpoints).

Keras 3.15's TensorFlow trainer fails under MultiWorkerMirroredStrategy in two places
(keras-team/keras#20585): before the first step it averages the first distributed batch
across workers with `strategy.reduce` only to learn its shapes ("unsupported type PerReplica
to a Tensor"), and after each step it averages the scalar metric results with `axis=0`
("Invalid reduction dimension 0"). `patch_keras()` replaces both with what they mean: shapes
from this worker's own batch, and the mean of scalars over replicas. It is applied only when
a multi-worker strategy is made.
"""

import logging

log = logging.getLogger(__name__)

_PATCHED = False


def patch_keras():
    """Apply the two multi-worker fixes to Keras's TensorFlow trainer (idempotent)."""
    global _PATCHED
    if _PATCHED:
        return
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, it in iterator:
                local = self.distribute_strategy.experimental_local_results
                data_batch = tree.map_structure(
                    lambda x: local(x)[0] if isinstance(x, tf.distribute.DistributedValues) else x, next(it))
                break
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


def is_chief(strategy):
    """Whether this process writes the run folder: always, except for the non-chief workers of
    a multi-worker strategy."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    spec = resolver.cluster_spec().as_dict()
    if "chief" in spec:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and int(resolver.task_id or 0) == 0


def weights_digest(model):
    """SHA-256 of the model's trainable weights (the part synchronous training keeps equal)."""
    import hashlib

    import numpy as np

    h = hashlib.sha256()
    for v in model.trainable_weights:
        h.update(np.ascontiguousarray(np.asarray(v, np.float32)).tobytes())
    return h.hexdigest()
