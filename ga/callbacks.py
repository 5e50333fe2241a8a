"""Training callbacks: per-class F1 table and early stop, crash-safe backup, timing and NaN
watch, and the list `fit` gets (BackupAndRestore, EarlyStopping, TerminateOnNaN, CSVLogger).

Per-class precision, recall and F1 come from metrics compiled into the model
(`ga.layers.class_metrics`), so they are computed in the validation pass that `fit` runs
anyway: no extra prediction over the validation set (the original ran two per epoch).
History rows of epochs that run again after a resume are trimmed by `ga.runs.trim_history`.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import keras

from ga.files import atomic_write_text

if TYPE_CHECKING:
    from ga.config import Config

log = logging.getLogger(__name__)


class ClassF1Stop(keras.callbacks.Callback):
    """Log the per-class validation table each epoch (with macro and support-weighted
    averages and the macro F1, as the study's report has); stop when every class's F1 has
    been at least `threshold` for `patience` consecutive epochs.

    `supports`: validation images per class (positives per class for multi-label), which
    weight the weighted average; without them it is left out.
    """

    def __init__(self, classes, threshold=0.997, patience=1, supports=None):
        super().__init__()
        self.classes = list(classes)
        self.threshold = threshold
        self.patience = patience
        self.supports = dict(supports or {})
        self.streak = 0
        self.stopped_epoch = None
        self.best = {}  # class -> (f1, epoch)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        f1 = {c: logs.get(f"val_f1_{c}") for c in self.classes}
        if not f1 or any(v is None for v in f1.values()):
            return
        for c in self.classes:
            if c not in self.best or float(f1[c]) > self.best[c][0]:
                self.best[c] = (float(f1[c]), epoch)
        log.info(self.table(epoch, logs))
        if all(float(v) >= self.threshold for v in f1.values()):
            self.streak += 1
        else:
            self.streak = 0
        if self.streak >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            log.info("every class's validation F1 >= %.4f for %d epoch(s): stopping", self.threshold, self.patience)

    def table(self, epoch: int, logs: dict) -> str:
        """The epoch's per-class precision/recall/F1 table with its average rows."""
        scores = {c: [float(logs.get(f"val_{k}_{c}", float("nan"))) for k in ("precision", "recall", "f1")]
                  for c in self.classes}
        rows = [f"epoch {epoch + 1} validation   precision    recall        f1   support"]
        for c, (p, r, f) in scores.items():
            n = self.supports.get(c)
            rows.append(f"  {c:<22} {p:9.4f} {r:9.4f} {f:9.4f} {'' if n is None else n:>9}")
        cols = list(zip(*scores.values()))
        macro = [sum(col) / len(col) for col in cols]
        rows.append(f"  {'macro avg':<22} " + " ".join(f"{v:9.4f}" for v in macro))
        total = sum(self.supports.get(c, 0) for c in self.classes)
        if total and all(c in self.supports for c in self.classes):
            weighted = [sum(v * self.supports[c] for v, c in zip(col, self.classes)) / total for col in cols]
            rows.append(f"  {'weighted avg':<22} " + " ".join(f"{v:9.4f}" for v in weighted) + f" {total:>9}")
        rows.append(f"  macro F1 {macro[2]:.4f}")
        return "\n".join(rows)


class DeliveringEarlyStopping(keras.callbacks.EarlyStopping):
    """keras.callbacks.EarlyStopping that ends training with the weights `deliver` names,
    the best epoch's read from its file on disk (`BestWeights`), so they survive `--resume`.

    Keras 3 restores the best epoch's weights at the end of training whatever stopped it;
    tf.keras 2.10, which the study used, restored them only when EarlyStopping itself
    stopped the run. deliver="stop_epoch" does the latter (the per-class F1 rule's stop epoch
    keeps its own weights), "best" the former, "last" never restores. `delivered` is then
    (epoch index, why).

    A resumed stage starts from the best recorded in `best_path` (epoch and value, when that
    epoch belongs to this stage and ran before `resumed_at`), so patience and the delivered
    weights count the epochs before the interruption.
    """

    def __init__(self, deliver="stop_epoch", f1_stop=None, target=None, best_path=None, first_epoch=0,
                 resumed_at=0, **kwargs):
        super().__init__(restore_best_weights=False, **kwargs)
        self.deliver = deliver
        self.f1_stop = f1_stop
        self.target = target
        self.best_path = best_path
        self.first_epoch = first_epoch
        self.resumed_at = resumed_at
        self.last_epoch = None
        self.delivered = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        recorded = read_best(self.best_path) if self.best_path else None
        if recorded and self.first_epoch <= recorded[0] < self.resumed_at:
            self.best_epoch, self.best = recorded
            self.wait = self.resumed_at - 1 - recorded[0]
            log.info("best %s so far: %.6g at epoch %d (%s)", self.monitor, self.best, self.best_epoch + 1,
                     os.path.basename(self.best_path))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        self.last_epoch = epoch

    @property
    def has_best(self) -> bool:
        return self.best is not None

    def on_train_end(self, logs: dict | None = None) -> None:
        f1_stopped = self.f1_stop is not None and self.f1_stop.stopped_epoch is not None
        restore = self.has_best and self.deliver != "last" and (
            self.deliver == "best" or (self.stopped_epoch > 0 and not f1_stopped))
        recorded = read_best(self.best_path) if restore and self.best_path else None
        if restore and recorded and recorded[0] == self.best_epoch:
            if self.best_epoch != self.last_epoch:
                (self.target or self.model).load_weights(self.best_path)
            self.delivered = (self.best_epoch, f"best {self.monitor}, {os.path.basename(self.best_path)}")
        elif restore:
            log.warning("the best epoch's weights (epoch %d) are not on disk; delivering the last epoch's",
                        self.best_epoch + 1)
            self.delivered = (self.last_epoch, "last epoch; the best epoch's weights were not on disk")
        elif f1_stopped and self.deliver == "stop_epoch":
            self.delivered = (self.last_epoch, "the per-class F1 rule stopped here")
        else:
            self.delivered = (self.last_epoch, "last epoch")


BEST_WEIGHTS = "best.weights.h5"


def read_best(path: str) -> tuple[int, float] | None:
    """(epoch index, monitored value) recorded in a best-weights file, or None."""
    import h5py

    if not os.path.isfile(path):
        return None
    try:
        with h5py.File(path, "r") as fh:
            return int(fh.attrs["ga_epoch"]), float(fh.attrs["ga_value"])
    except (OSError, KeyError, ValueError):
        return None


class BestWeights(keras.callbacks.Callback):
    """Writes the model's weights to `path` whenever `early` records a better monitored
    value, atomically, with the epoch and value as file attributes. It runs after the
    backup, so the file never holds an epoch that `--resume` would run again."""

    def __init__(self, early, target, path):
        super().__init__()
        self.early = early
        self.target = target
        self.path = path

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        import h5py

        from ga.files import atomic_path

        if self.early.best_epoch != epoch or self.early.best is None:
            return
        with atomic_path(self.path) as tmp:
            (self.target or self.model).save_weights(tmp)
            with h5py.File(tmp, "a") as fh:
                fh.attrs["ga_epoch"] = int(epoch)
                fh.attrs["ga_value"] = float(self.early.best)
                fh.attrs["ga_monitor"] = self.early.monitor


class SafeBackupAndRestore(keras.callbacks.BackupAndRestore):
    """keras.callbacks.BackupAndRestore whose checkpoint survives a kill at any moment.

    Keras writes the weights and the epoch file in place, so a process killed while
    writing leaves a damaged checkpoint that the next `--resume` cannot read. Here both are
    written to temporary names and renamed, weights first: a kill between the two renames
    repeats one epoch (its history row is trimmed), and never leaves a broken file.
    """

    def _save_model(self):
        weights = getattr(self, "_weights_path", None)
        meta = getattr(self, "_training_metadata_path", None)
        if weights is None or meta is None:  # a Keras version with other internals
            return super()._save_model()
        os.makedirs(self.backup_dir, exist_ok=True)
        tmp = weights + ".tmp.weights.h5"  # save_weights insists on the .weights.h5 ending
        self.model.save_weights(tmp, overwrite=True)
        os.replace(tmp, weights)
        atomic_write_text(meta, json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen}))


def resume_epoch(run_dir: str, backup: str = "backup") -> int:
    """The epoch a resumed run starts at: what BackupAndRestore recorded, else 0."""
    meta = os.path.join(run_dir, backup, "training_metadata.json")
    try:
        with open(meta, encoding="utf-8") as fh:
            return int(json.load(fh).get("epoch", 0))
    except (OSError, ValueError):
        return 0


class RunClock(keras.callbacks.Callback):
    """Wall time, epochs run in this process, and per-epoch timing (`epoch_seconds`,
    `val_seconds`) added to the logs and so to history.csv."""

    def __init__(self):
        super().__init__()
        self.start = None
        self.epochs = 0
        self.last_epoch = None
        self._epoch_t0 = self._val_t0 = None
        self._val = 0.0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_t0 = time.perf_counter()
        self._val = 0.0

    def on_test_begin(self, logs: dict | None = None) -> None:
        self._val_t0 = time.perf_counter()

    def on_test_end(self, logs: dict | None = None) -> None:
        if self._val_t0 is not None:
            self._val += time.perf_counter() - self._val_t0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epochs += 1
        self.last_epoch = epoch
        if logs is not None and self._epoch_t0 is not None:
            logs["epoch_seconds"] = round(time.perf_counter() - self._epoch_t0, 3)
            logs["val_seconds"] = round(self._val, 3)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start if self.start else 0.0


class EpochLine(keras.callbacks.Callback):
    """One compact line per epoch in the log (loss, accuracy, val_loss, val_accuracy, time;
    every metric stays in history.csv and TensorBoard), and on a terminal a progress bar over
    the epoch's steps (`fit` itself runs with verbose=0)."""

    KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")

    def __init__(self, epochs, bar=False):
        super().__init__()
        self.epochs = epochs
        self.bar_on = bar
        self._bar = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.bar_on:
            from tqdm import tqdm

            self._bar = tqdm(total=self.params.get("steps"), desc=f"epoch {epoch + 1}/{self.epochs}", unit="step",
                             leave=False)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._bar is not None:
            self._bar.update(1)
            if logs and "loss" in logs:
                self._bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        logs = logs or {}
        parts = [f"{k} {float(logs[k]):.4f}" for k in self.KEYS if k in logs]
        seconds = logs.get("epoch_seconds")
        log.info("epoch %d/%d: %s%s", epoch + 1, self.epochs, ", ".join(parts),
                 f" ({float(seconds):.1f} s)" if seconds is not None else "")


class NaNWatch(keras.callbacks.Callback):
    """Remembers whether a training batch's loss was NaN or infinite (TerminateOnNaN stops
    the run; this tells the trainer why it stopped)."""

    def __init__(self):
        super().__init__()
        self.seen = False

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and (math.isnan(float(loss)) or math.isinf(float(loss))):
            self.seen = True


class StageTag(keras.callbacks.Callback):
    """Adds `stage` (1: linear, 2: all layers) to the logs of a two-stage schedule."""

    def __init__(self, stage):
        super().__init__()
        self.stage = stage

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["stage"] = self.stage


class PreciseBatchNorm(keras.callbacks.Callback):
    """Before each validation pass of `fit`, re-estimate the moving mean and variance of every
    trainable BatchNorm layer of `target` as the plain average over `batches` training batches
    of the current weights ("precise BN", Wu & Johnson 2021, arXiv 2105.07576).

    The exponential average that BatchNorm keeps while training (momentum 0.9: the last ~10
    steps) mixes statistics of weights that were still changing. Measured on the demo (CNN-4
    from scratch, Adam 1e-3), epochs 1-4: validation accuracy 0.72, 0.94, 0.95, 0.87 with the
    running average, and 0.98, 0.99, 0.98, 1.00 for the same weights re-estimated. The
    re-estimated statistics are what the backup, best.weights.h5 and the delivered model hold.
    """

    def __init__(self, dataset, batches, target=None):
        super().__init__()
        self.dataset = dataset
        self.batches = batches
        self.target = target
        self._fn = self._momentum = None

    def on_test_begin(self, logs: dict | None = None) -> None:
        import tensorflow as tf

        model = self.target or self.model
        layers = [x for x in model._flatten_layers() if isinstance(x, keras.layers.BatchNormalization) and x.trainable]
        if not layers:
            return
        # A multi-worker run passes its distributed input: every worker re-estimates on its own
        # shard, inside the strategy, so synchronised BatchNorm averages the statistics over
        # the workers and every worker ends with the same ones.
        distributed = isinstance(self.dataset, tf.distribute.DistributedDataset)
        if self._fn is None:
            self._momentum = tf.Variable(0.0, trainable=False, dtype=tf.float32)
            call = lambda x: model(x, training=True)  # noqa: E731
            strategy = model.distribute_strategy
            self._fn = tf.function(lambda x: strategy.run(call, args=(x,)) if distributed else call(x))
        saved = [x.momentum for x in layers]
        for x in layers:
            x.momentum = self._momentum  # read when the step runs, not baked in at tracing
        try:
            batches = itertools.islice(self.dataset, self.batches) if distributed else self.dataset.take(self.batches)
            for k, batch in enumerate(batches):
                self._momentum.assign(k / (k + 1))  # running mean of the batches' statistics
                self._fn(batch[0])
        finally:
            for x, m in zip(layers, saved):
                x.momentum = m


class SaveEvery(keras.callbacks.Callback):
    """Every `every` epochs, <run>/epoch_<n>.weights.h5 of `target` (and, when `backbone` is
    given, epoch_<n>.backbone.weights.h5 of it), each written atomically (output.save_every)."""

    def __init__(self, every, run_dir, target, backbone=None):
        super().__init__()
        self.every = every
        self.run_dir = run_dir
        self.target = target
        self.backbone = backbone

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        from ga.files import atomic_path

        if (epoch + 1) % self.every:
            return
        for model, name in ((self.target or self.model, "weights"), (self.backbone, "backbone.weights")):
            if model is not None:
                with atomic_path(os.path.join(self.run_dir, f"epoch_{epoch + 1}.{name}.h5")) as tmp:
                    model.save_weights(tmp)


def tensorboard(run_dir: str) -> keras.callbacks.TensorBoard:
    """Keras's TensorBoard callback writing epoch scalars (every column of history.csv: losses,
    metrics with the per-class F1, lr, timing) to <run>/tensorboard/{train,validation}; no
    graph, no histograms."""
    return keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), histogram_freq=0, write_graph=False,
                                       update_freq="epoch")


@dataclass
class Watchers:
    """The callbacks whose state the trainer reads after `fit`."""

    f1: ClassF1Stop
    early: DeliveringEarlyStopping
    clock: RunClock
    nan: NaNWatch


def build_callbacks(cfg: Config, run_dir: str, classes: Sequence[str], backup: str = "backup", stage: int | None = None,
                    supports: Mapping[str, int] | None = None, target: Any = None, first_epoch: int = 0,
                    resumed_at: int = 0, schedule: Any = None, backbone: Any = None, train_data: Any = None,
                    epochs: int | None = None, bar: bool = False) -> tuple[list, Watchers]:
    """The callback list for `fit`, in the order their hooks must run.

    Args:
        backup: the checkpoint folder inside the run folder (one per training stage).
        stage: tag history rows with this stage number (two-stage schedules).
        supports: validation images per class, for the weighted average of the epoch table.
        target: the model whose weights are delivered (default: the one `fit` trains); its
            best epoch's weights go to <run>/best.weights.h5.
        first_epoch: the stage's first epoch; resumed_at: the epoch a resumed stage restarts at.
        schedule: the stage's ga.schedules.EpochSchedule (its `lr` goes into history.csv).
        backbone: the backbone that output.save_every also keeps (contrastive runs).
        train_data: the training dataset, for training.precise_bn_batches.
        epochs: the last epoch number, for the per-epoch line; bar: a progress bar per epoch.

    Returns:
        (callbacks, Watchers: the ones the trainer reads afterwards).
    """
    es = cfg.training.early_stopping
    f1_stop = ClassF1Stop(classes, es.f1_threshold, es.f1_patience, supports)
    best_path = os.path.join(run_dir, BEST_WEIGHTS)
    early = DeliveringEarlyStopping(es.deliver if es.restore_best_weights else "last", f1_stop, target, best_path,
                                    first_epoch, resumed_at, monitor=es.monitor, patience=es.patience,
                                    min_delta=es.min_delta, verbose=0)
    watch = Watchers(f1_stop, early, RunClock(), NaNWatch())
    history_path = os.path.join(run_dir, "history.csv")
    # BackupAndRestore comes last, so an epoch's history row is written before the epoch
    # counts as done; trim_history() removes the row again if the backup never happened.
    precise = cfg.training.precise_bn_batches if train_data is not None else 0
    callbacks = [
        *([PreciseBatchNorm(train_data, precise, target)] if precise else []),
        watch.clock,
        watch.nan,
        keras.callbacks.TerminateOnNaN(),
        f1_stop,
        EpochLine(epochs or cfg.training.epochs, bar),
        early,
        *([StageTag(stage)] if stage else []),
        *([schedule] if schedule else []),
        *([tensorboard(run_dir)] if cfg.output.tensorboard else []),
        keras.callbacks.CSVLogger(history_path, append=True),
        SafeBackupAndRestore(os.path.join(run_dir, backup)),
        BestWeights(early, target, best_path),
        *([SaveEvery(cfg.output.save_every, run_dir, target, backbone)] if cfg.output.save_every else []),
    ]
    return callbacks, watch
