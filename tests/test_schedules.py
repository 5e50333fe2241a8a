"""Learning-rate schedules against the graphene study's schedulers.py, the cycled beta1 reaching
the optimizer's update, weight-decay exclusions, precise BatchNorm statistics and the colour
shift's probability."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_config
from helpers import read_csv, run_script
from ga.callbacks import PreciseBatchNorm
from ga.config import ConfigError, load_config
from ga.data import augmentation
from ga.schedules import EpochSchedule, epoch_rate
from ga.trainer import _optimizer

# The OneCycle parameters of the graphene study's scheduler interface, in its order:
# steps_up, steps_down, steps_final, init_lr, max_lr, final_lr, init_beta1, min_beta1, beta2.
ONE_CYCLE = dict(steps_up=7, steps_down=9, steps_final=5, init_lr=3e-5, max_lr=3e-4, final_lr=1e-6,
                 init_beta1=0.95, min_beta1=0.85, beta2=0.99)


def study_one_cycle(epochs, steps_up, steps_down, steps_final, init_lr, max_lr, final_lr, init_beta1, min_beta1,
                    beta2, start_epoch=0):
    """schedulers.OneCycle's arithmetic, statement by statement: the (lr, beta1) each epoch
    trains with (its step() runs at each epoch's end; start_epoch steps run at construction)."""
    lr, beta1, epoch, out = init_lr, init_beta1, 0, []

    def step():
        nonlocal lr, beta1, epoch
        if epoch < steps_up:
            lr += (max_lr - init_lr) / steps_up
            beta1 += (min_beta1 - init_beta1) / steps_up
        elif epoch >= steps_up and epoch < steps_down + steps_up:
            lr -= (max_lr - init_lr) / steps_down
            beta1 -= (min_beta1 - init_beta1) / steps_down
        elif epoch >= steps_down + steps_up and epoch < steps_down + steps_up + steps_final:
            lr -= (init_lr - final_lr) / steps_final
        epoch += 1

    for _ in range(start_epoch):
        step()
    for _ in range(epochs):
        out.append((lr, beta1))
        step()
    return out


def study_step_decay(epochs, lr, step_size, gamma):
    """schedulers.StepDecay's arithmetic: the lr each epoch trains with."""
    out = []
    for epoch in range(epochs):
        out.append(lr)
        if (epoch + 1) % step_size == 0:
            lr *= gamma
    return out


def schedule_config(**values):
    return load_config(data={"training": {"optimizer": "adamw", "learning_rate": 1e-3, "lr_schedule": values}})


@pytest.mark.parametrize("start_epoch", [0, 3])
def test_one_cycle_is_the_studys_sequence(start_epoch):
    cfg = schedule_config(kind="one_cycle", start_epoch=start_epoch, **ONE_CYCLE)
    want = study_one_cycle(30, **ONE_CYCLE, start_epoch=start_epoch)
    got = [epoch_rate(cfg.training, e, 30) for e in range(30)]
    for (lr, b1), (wlr, wb1) in zip(got, want):
        assert abs(lr - wlr) < 1e-9 and abs(b1 - wb1) < 1e-9
    lrs = [lr for lr, _ in got]
    assert max(lrs) == pytest.approx(ONE_CYCLE["max_lr"]) and lrs[-1] == pytest.approx(ONE_CYCLE["final_lr"])


def test_step_decay_is_the_studys_sequence():
    cfg = schedule_config(kind="step", step_size=4, gamma=0.3)
    want = study_step_decay(17, 1e-3, 4, 0.3)
    got = [epoch_rate(cfg.training, e, 17)[0] for e in range(17)]
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-9
    assert epoch_rate(cfg.training, 3, 17)[1] is None  # beta1 is left alone


def test_cosine_and_warmup():
    cfg = schedule_config(kind="cosine", warmup_epochs=2, cosine_alpha=0.1)
    got = [epoch_rate(cfg.training, e, 12)[0] for e in range(12)]
    assert got[:3] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3])  # the ramp, then the full rate
    assert got[-1] == pytest.approx(1e-4)  # cosine_alpha x the rate at the last epoch
    assert all(a >= b for a, b in zip(got[2:], got[3:]))
    assert [epoch_rate(schedule_config().training, e, 5)[0] for e in range(5)] == [1e-3] * 5


def test_schedule_config_errors():
    with pytest.raises(ConfigError, match="lr_schedule.kind must be one of"):
        schedule_config(kind="onecycle")
    with pytest.raises(ConfigError, match="warmup_epochs does not apply"):
        schedule_config(kind="one_cycle", warmup_epochs=2)
    with pytest.raises(ConfigError, match="betas must be"):
        load_config(data={"training": {"betas": [0.9]}})


def _tiny_fit(optimizer, callbacks=(), epochs=3):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype("float32"), rng.normal(size=(32, 1)).astype("float32")
    history = model.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, callbacks=list(callbacks), verbose=0)
    return model, history


def test_one_cycle_beta1_reaches_the_adam_update():
    # beta1 cycled from 0 (and held there by min_beta1 0) must train exactly as Adam built
    # with beta_1 = 0; Adam's default 0.9 trains differently.
    cfg = schedule_config(kind="one_cycle", steps_up=1, steps_down=1, steps_final=1, init_lr=1e-2, max_lr=1e-2,
                          final_lr=1e-2, init_beta1=0.0, min_beta1=0.0, beta2=0.999)
    schedule = EpochSchedule(cfg.training, epochs=3)
    cycled, history = _tiny_fit(keras.optimizers.Adam(1e-2, beta_1=0.9), [schedule])
    plain, _ = _tiny_fit(keras.optimizers.Adam(1e-2, beta_1=0.0))
    default, _ = _tiny_fit(keras.optimizers.Adam(1e-2, beta_1=0.9))
    for a, b in zip(cycled.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert not np.allclose(cycled.get_weights()[0], default.get_weights()[0])
    assert history.history["lr"] == pytest.approx([1e-2] * 3)
    assert isinstance(cycled.optimizer.beta_1, float)  # a number again after fit: the optimizer serialises
    keras.optimizers.serialize(cycled.optimizer)


def test_one_cycle_lr_and_beta1_per_epoch_in_fit():
    cfg = schedule_config(kind="one_cycle", **ONE_CYCLE)
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                seen.append((float(self.model.optimizer.learning_rate), schedule.beta1()))

    schedule = EpochSchedule(cfg.training, epochs=6)
    _, history = _tiny_fit(keras.optimizers.AdamW(1e-3), [schedule, Watch()], epochs=6)
    want = study_one_cycle(6, **ONE_CYCLE)
    assert [lr for lr, _ in seen] == pytest.approx([lr for lr, _ in want], rel=1e-6)
    assert [b for _, b in seen] == pytest.approx([b for _, b in want], rel=1e-6)
    assert history.history["lr"] == pytest.approx([lr for lr, _ in want], rel=1e-6)


ALL = {"hidden/kernel", "hidden/bias", "bn/gamma", "bn/beta", "output/kernel", "output/bias"}


@pytest.mark.parametrize("no_decay, decayed", [
    (["bias", "batchnorm"], {"hidden/kernel", "output/kernel"}),
    (["output_bias"], ALL - {"output/bias"}),  # the study: every variable but the output bias
    (["batchnorm"], ALL - {"bn/gamma", "bn/beta"}),
    ([], ALL),
])
def test_weight_decay_exclusions(no_decay, decayed):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="hidden"),
                              keras.layers.BatchNormalization(name="bn"), keras.layers.Dense(1, name="output")])
    cfg = load_config(data={"training": {"optimizer": "adamw", "weight_decay": 0.1, "no_decay": no_decay}})
    opt = _optimizer(cfg.training, model.layers[-1])
    uses = {"/".join(v.path.split("/")[-2:]): opt._use_weight_decay(v) for v in model.trainable_variables}
    assert set(uses) == ALL
    assert {k for k, on in uses.items() if on} == decayed


def test_betas_reach_adam():
    cfg = load_config(data={"training": {"optimizer": "adamw", "betas": [0.8, 0.99]}})
    opt = _optimizer(cfg.training)
    assert (opt.beta_1, opt.beta_2) == (0.8, 0.99)


def test_precise_batchnorm_is_the_average_of_the_batches():
    keras.utils.set_random_seed(0)
    inp = keras.Input((2,))
    bn = keras.layers.BatchNormalization(momentum=0.9)
    model = keras.Model(inp, bn(inp))
    rng = np.random.default_rng(1)
    batches = [rng.normal(loc=m, size=(16, 2)).astype("float32") for m in (0.0, 4.0, 8.0, 100.0)]
    ds = tf.data.Dataset.from_tensor_slices((np.concatenate(batches), np.zeros(64, "float32"))).batch(16)
    callback = PreciseBatchNorm(ds, batches=3, target=model)
    callback.set_model(model)
    callback.on_test_begin()
    want_mean = np.mean([b.mean(axis=0) for b in batches[:3]], axis=0)
    want_var = np.mean([b.var(axis=0) for b in batches[:3]], axis=0)
    np.testing.assert_allclose(bn.moving_mean.numpy(), want_mean, rtol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), want_var, rtol=1e-3)
    assert bn.momentum == 0.9 and isinstance(bn.momentum, float)  # restored: the layer still serialises


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_color_shift_probability(p):
    cfg = load_config(data={"data": {"augment": {"rotation": 0, "shift": 0, "zoom": 0, "horizontal_flip": False,
                                                 "vertical_flip": False, "color_scale": 0.15, "color_shift_p": p}}})
    layer = augmentation(cfg.data.augment, seed=3)
    images = tf.fill((400, 4, 4, 3), 100.0)
    if p == 0:
        assert layer is None
        return
    changed = np.mean(np.any(np.abs(layer(images, training=True).numpy() - 100.0) > 1e-3, axis=(1, 2, 3)))
    assert abs(changed - p) < 0.08


def test_precise_batchnorm_and_one_cycle_on_two_replicas(separable_split, tmp_path):
    cfg = tiny_config(tmp_path / "m.yaml", separable_split, str(tmp_path / "runs"),
                      training={"epochs": 2, "distribution": "mirrored", "precise_bn_batches": 2,
                                "lr_schedule": {"kind": "one_cycle", "steps_up": 1, "steps_down": 1}},
                      output={"onnx": False})
    out = run_script("main.py", "--config", cfg, env={"GA_LOGICAL_CPUS": "2"})
    run = out.stdout.strip().splitlines()[-1]
    assert json.load(open(os.path.join(run, "run.json")))["device"]["replicas"] == 2
    rows = read_csv(os.path.join(run, "history.csv"))
    assert [float(r["lr"]) for r in rows] == pytest.approx([3e-5, 3e-4])
