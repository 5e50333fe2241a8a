"""Learning-rate schedules per epoch (`training.lr_schedule`) and the callback that applies them.

The rate is set at the start of each epoch, as the graphene study's schedulers step at each
epoch's end; `step` and `cosine` are Keras's own `ExponentialDecay(staircase=True)` and
`CosineDecay` evaluated at the epoch number, after an optional linear warm-up. `one_cycle`
is the study's `schedulers.OneCycle`: the rate rises linearly from init_lr to max_lr over
steps_up epochs while Adam's beta1 (SGD's momentum) falls from init_beta1 to min_beta1, both
go back over steps_down epochs, then the rate falls to final_lr over steps_final epochs and
stays there.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import keras

if TYPE_CHECKING:
    from ga.config import TrainingConfig

log = logging.getLogger(__name__)


def one_cycle(s: Any, epoch: int) -> tuple[float, float]:
    """(learning rate, beta1) of `epoch` (0-based) under the study's OneCycle: the values after
    `epoch + start_epoch` of its per-epoch steps, in closed form."""
    n = epoch + s.start_epoch
    up = min(n, s.steps_up)
    down = min(max(n - s.steps_up, 0), s.steps_down)
    final = min(max(n - s.steps_up - s.steps_down, 0), s.steps_final)
    rise = (up / s.steps_up if s.steps_up else 0.0) - (down / s.steps_down if s.steps_down else 0.0)
    lr = s.init_lr + rise * (s.max_lr - s.init_lr) - (final / s.steps_final if s.steps_final else 0.0) * (
        s.init_lr - s.final_lr)
    return lr, s.init_beta1 + rise * (s.min_beta1 - s.init_beta1)


def epoch_rate(training: TrainingConfig, epoch: int, epochs: int) -> float:
    """(learning rate, beta1 or None) of `epoch` (0-based, counted in its stage) of a stage of
    `epochs` epochs, at the stage's training.learning_rate."""
    s = training.lr_schedule
    if s.kind == "one_cycle":
        return one_cycle(s, epoch)
    base = training.learning_rate
    if epoch < s.warmup_epochs:
        return base * (epoch + 1) / (s.warmup_epochs + 1), None
    k = epoch - s.warmup_epochs
    if s.kind == "step":
        return float(keras.optimizers.schedules.ExponentialDecay(base, s.step_size, s.gamma, staircase=True)(k)), None
    if s.kind == "cosine":
        decay = max(1, epochs - s.warmup_epochs - 1)  # the last epoch reaches cosine_alpha x base
        return float(keras.optimizers.schedules.CosineDecay(base, decay, alpha=s.cosine_alpha)(k)), None
    return base, None


class EpochSchedule(keras.callbacks.Callback):
    """Sets the optimizer's learning rate (and, for one_cycle, Adam's beta1 or SGD's momentum)
    at the start of every epoch, and records the rate as `lr` in the epoch's logs.

    Keras optimizers read beta1/momentum as a Python number baked into the traced step; for
    one_cycle the attribute is a variable while `fit` runs (and a number again after it, so
    the optimizer still serialises).
    """

    def __init__(self, training, first_epoch=0, epochs=1):
        super().__init__()
        self.training = training
        self.first_epoch = first_epoch
        self.epochs = epochs
        self.lr = None
        self._beta = None
        self._attr = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        import tensorflow as tf

        if self.training.lr_schedule.kind != "one_cycle":
            return
        opt = self.model.optimizer
        self._attr = "beta_1" if hasattr(opt, "beta_1") else "momentum"
        if self._attr == "beta_1":
            opt.beta_2 = self.training.lr_schedule.beta2
        with self.model.distribute_strategy.scope():
            self._beta = tf.Variable(float(getattr(opt, self._attr)), trainable=False, dtype=tf.float32,
                                     name="ga_one_cycle_beta1")
        setattr(opt, self._attr, self._beta)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.lr, beta = epoch_rate(self.training, epoch - self.first_epoch, self.epochs)
        self.model.optimizer.learning_rate = self.lr
        if self._beta is not None:
            self._beta.assign(beta)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None and self.lr is not None:
            logs["lr"] = self.lr

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._beta is not None:
            setattr(self.model.optimizer, self._attr, float(self._beta.numpy()))
            self._beta = None

    def beta1(self) -> float:
        """The beta1 (or momentum) the optimizer uses now, or None when not cycled."""
        return None if self._beta is None else float(self._beta.numpy())
