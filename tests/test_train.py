"""Training: end to end, class order, one validation pass per epoch, F1 stop, resume,
offline weights, local weights, trainable fraction, mirrored strategy, bad images, NaN."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import make_separable_split, tiny_config
from helpers import read_csv, run_here, run_script
from ga import callbacks as ga_callbacks
from ga import data as ga_data
from ga.callbacks import ClassF1Stop
from ga.config import ConfigError, load_config
from ga.layers import Preprocess
from ga.model import build_backbone, set_trainable_fraction
from ga.trainer import train


def _run_main(args, env=None, timeout=600):
    return run_script("main.py", *args, env=env, timeout=timeout, expect=None)


def _history(run_dir):
    return read_csv(os.path.join(run_dir, "history.csv"))


def test_main_end_to_end(tmp_path, separable_split):
    cfg = tiny_config(tmp_path / "c.yaml", separable_split, str(tmp_path / "runs"))
    out = run_here("main.py", "--config", cfg, "--set", "training.epochs=2", "--name", "e2e", expect=None)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = out.stdout.strip().splitlines()[-1]
    assert os.path.basename(run_dir).startswith("GA_") and run_dir.endswith("_e2e")
    assert not os.path.exists(os.path.join(run_dir, "RUNNING"))
    labels = json.load(open(os.path.join(run_dir, "labels.json")))
    assert labels["classes"] == ["cex", "pg"] and labels["positive_class"] == "pg"
    assert len(_history(run_dir)) == 2
    m = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert m["per_class"]["cex"]["support"] == 12 and m["per_class"]["pg"]["support"] == 6
    assert m["training"]["epochs"] == 2 and m["training"]["stop_reason"] == "max_epochs"
    # tiny configs leave the preview off; --no-preview wins over a config that asks for it
    assert not os.path.exists(os.path.join(run_dir, "GAtrain_batch.png"))
    out = run_here("main.py", "--config", cfg, "--set", "training.epochs=1", "--set", "output.preview=true", "--no-preview",
                   expect=None)
    assert not os.path.exists(os.path.join(out.stdout.strip().splitlines()[-1], "GAtrain_batch.png"))


def test_the_preview_batch_is_augmented_and_leaves_training_alone(tmp_path, separable_split):
    """The preview shows the pipeline's decoding and augmentation, and drawing it changes
    nothing of what training reads."""
    from ga.data import build_datasets, preview_batch

    cfg = load_config(tiny_config(tmp_path / "c.yaml", separable_split, str(tmp_path / "runs")),
                      ["data.augment.enabled=true", "data.augment.rotation=0", "data.augment.shift=0",
                       "data.augment.zoom=0", "data.augment.horizontal_flip=false", "data.augment.rot90=true",
                       "data.augment.color_scale=0.5", "data.augment.color_shift_p=1.0"])
    # The order training reads (without augmentation, whose parallel map is not bit-reproducible)
    plain_cfg = load_config(str(tmp_path / "c.yaml"))
    first = next(iter(build_datasets(plain_cfg, ["cex", "pg"]).train.dataset))[0].numpy()
    data = build_datasets(cfg, ["cex", "pg"])
    x, y = preview_batch(cfg, data.train.paths, data.train.labels, 8)
    assert x.shape == (8, 32, 32, 3) and y.shape == (8, 1) and x.dtype == np.float32
    plain, _ = preview_batch(plain_cfg, data.train.paths, data.train.labels, 8)
    assert not np.allclose(x, plain)  # the colour scale changed the pixels
    assert np.allclose(plain, np.round(plain)) and plain.max() <= 255  # decoded uint8, no augmentation
    after = next(iter(build_datasets(plain_cfg, ["cex", "pg"]).train.dataset))[0].numpy()
    assert np.array_equal(first, after)  # the training stream starts as it would have


def test_class_order_follows_folder_names(tmp_path):
    split = make_separable_split(str(tmp_path / "split"), classes=("zeta", "alpha"),
                                 counts={"train": (6, 6), "valid": (3, 3), "test": (3, 3)})
    cfg = load_config(tiny_config(tmp_path / "c.yaml", split, str(tmp_path / "runs")))
    data = ga_data.build_datasets(cfg)
    assert data.classes == ["alpha", "zeta"]
    # Folder "alpha" holds the dark images (made as class index 1) and gets label 0.
    by_label = {int(y[0]): p for p, y in zip(data.train.paths, data.train.labels)}
    assert os.path.basename(os.path.dirname(by_label[0])) == "alpha"
    assert os.path.basename(os.path.dirname(by_label[1])) == "zeta"


def test_validation_read_once_per_epoch(tmp_path, separable_split, monkeypatch):
    counter = {"valid": 0}
    real = ga_data.build_datasets

    def counting(cfg, classes=None, splits=("train", "valid", "test")):
        d = real(cfg, classes, splits)

        def bump(x):
            counter["valid"] += 1
            return x

        def counted(x, y):
            out = tf.py_function(bump, [x], tf.float32)
            out.set_shape(x.shape)
            return out, y

        d.valid.dataset = d.valid.dataset.map(counted)
        return d

    monkeypatch.setattr(ga_data, "build_datasets", counting)
    cfg = tiny_config(tmp_path / "c.yaml", separable_split, str(tmp_path / "runs"), output={"onnx": False})
    run_dir = train(cfg, overrides=["training.epochs=3"])
    batches = -(-16 // 8)  # 16 validation images in batches of 8
    assert counter["valid"] == 3 * batches
    assert len(_history(run_dir)) == 3


def _f1_logs(values):
    return {f"val_f1_{c}": v for c, v in values.items()}


def test_f1_stop_fires_when_condition_holds_and_not_before():
    cb = ClassF1Stop(["cex", "pg"], threshold=0.9, patience=2)
    cb.set_model(keras.Sequential())
    seq = [{"cex": 0.95, "pg": 0.85}, {"cex": 0.95, "pg": 0.91}, {"cex": 0.89, "pg": 0.99},
           {"cex": 0.93, "pg": 0.92}, {"cex": 0.97, "pg": 0.90}]
    stopped_at = None
    for epoch, values in enumerate(seq):
        cb.model.stop_training = False
        cb.on_epoch_end(epoch, _f1_logs(values))
        if cb.model.stop_training:
            stopped_at = epoch
            break
    # Epochs 3 and 4 (0-based) are the first two consecutive epochs with both F1 >= 0.9.
    assert stopped_at == 4 and cb.stopped_epoch == 4
    assert cb.best["pg"] == (0.99, 2)


def test_f1_stop_ends_a_real_run(tmp_path, separable_split):
    cfg = tiny_config(tmp_path / "c.yaml", separable_split, str(tmp_path / "runs"), output={"onnx": False},
                      training={"epochs": 6, "early_stopping": {"f1_threshold": 0.0, "f1_patience": 1}})
    run_dir = train(cfg)
    m = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert m["training"]["stop_reason"] == "f1_threshold" and m["training"]["epochs"] == 1


@pytest.mark.parametrize("step", ["train", "lr_find"])
def test_a_finished_run_leaves_no_dataset_iterator_behind(step, tmp_path, separable_split):
    """Keras leaves fit's last tf.data iterator in a reference cycle; train() and the
    learning-rate finder free it, so a process that trains again does not carry the earlier
    runs' iterators and their threads (the suite, whose workers train again and again: 24 min
    of CPU and 14 min of wall before, 15 and 8.5 after, on 2 cores)."""
    import gc

    from tensorflow.python.data.ops.iterator_ops import OwnedIterator

    from ga.lrfind import find_learning_rate

    cfg = tiny_config(tmp_path / "c.yaml", separable_split, str(tmp_path / "runs"), output={"onnx": False},
                      training={"epochs": 2})
    gc.disable()  # only the collection the step runs itself
    try:
        train(cfg) if step == "train" else find_learning_rate(cfg, steps=10)
        left = sum(isinstance(o, OwnedIterator) for o in gc.get_objects())
    finally:
        gc.enable()
    assert left == 0


def test_resume_continues_at_the_right_epoch(tmp_path, separable_split, monkeypatch):
    cfg = tiny_config(tmp_path / "c.yaml", separable_split, str(tmp_path / "runs"), output={"onnx": False},
                      training={"epochs": 4})

    class Crash(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt("simulated kill after two epochs")

    real = ga_callbacks.build_callbacks

    def with_crash(*a, **k):
        cbs, handles = real(*a, **k)
        return [Crash(), *cbs], handles

    monkeypatch.setattr(ga_callbacks, "build_callbacks", with_crash)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    (run_dir,) = [os.path.join(tmp_path / "runs", d) for d in os.listdir(tmp_path / "runs")]
    assert os.path.exists(os.path.join(run_dir, "RUNNING"))
    assert not os.path.exists(os.path.join(run_dir, "metrics.json"))
    assert [int(r["epoch"]) for r in _history(run_dir)] == [0, 1]
    monkeypatch.setattr(ga_callbacks, "build_callbacks", real)
    # A history row written after the last backup (killed in between) must not be kept twice.
    with open(os.path.join(run_dir, "history.csv"), "a") as fh:
        fh.write(",".join(["2"] + ["0.5"] * (len(_history(run_dir)[0]) - 1)) + "\n")
    assert train(resume=run_dir) == run_dir
    assert [int(r["epoch"]) for r in _history(run_dir)] == [0, 1, 2, 3]
    run = json.load(open(os.path.join(run_dir, "run.json")))
    assert run["fit"]["resumed_at_epoch"] == 3 and run["fit"]["epochs_this_process"] == 2
    assert not os.path.exists(os.path.join(run_dir, "RUNNING"))
    with pytest.raises(ConfigError, match="already complete"):
        train(resume=run_dir)


def test_offline_imagenet_weights_error(tmp_path, separable_split):
    cfg = tiny_config(tmp_path / "c.yaml", separable_split, str(tmp_path / "runs"),
                      model={"backbone": "resnet50", "weights": "imagenet"})
    out = _run_main(["--config", cfg], env={"KERAS_HOME": str(tmp_path / "keras_home")}, timeout=300)
    assert out.returncode == 2
    err = [line for line in out.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(err) == 1 and out.stderr.strip().endswith(err[0]) and "Traceback" not in out.stderr
    want = os.path.join(str(tmp_path / "keras_home"), "models", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert want in err[0] and "model.weights: none" in err[0]
    runs = tmp_path / "runs"
    assert not runs.exists() or not os.listdir(runs)  # nothing left behind


def test_local_weights_file_is_loaded(tmp_path):
    cfg = load_config(None, ["model.backbone=resnet50", "model.weights=none", "model.trainable_fraction=1"])
    a = build_backbone(cfg.model, (32, 32, 3))
    for w in a.weights:
        w.assign(np.random.default_rng(len(w.path)).normal(0, 0.05, w.shape).astype("float32"))
    path = str(tmp_path / "backbone.weights.h5")
    a.save_weights(path)
    cfg2 = load_config(None, ["model.backbone=resnet50", f"model.weights={path}", "model.trainable_fraction=0.1"])
    b = build_backbone(cfg2.model, (32, 32, 3))
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa.numpy(), wb.numpy())


def test_trainable_fraction_freezes_all_but_the_tail():
    cfg = load_config(None, ["model.backbone=resnet50", "model.weights=none"])
    base = build_backbone(cfg.model, (32, 32, 3))
    n = len(base.layers)
    flags = [layer.trainable for layer in base.layers]
    k = round(n * 0.10)
    assert flags == [False] * (n - k) + [True] * k
    frozen_bn = [l for l in base.layers[: n - k] if isinstance(l, keras.layers.BatchNormalization)]
    assert frozen_bn and not any(l.trainable for l in frozen_bn)
    assert set_trainable_fraction(base, 1.0) == n


def test_preprocess_matches_keras_resnet():
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    want = keras.applications.resnet.preprocess_input(x.copy())
    np.testing.assert_allclose(np.asarray(Preprocess("resnet_caffe")(x)), want, atol=1e-4)
    np.testing.assert_allclose(np.asarray(Preprocess("scale_01")(x)), x / 255.0, atol=1e-6)


# about 50 s in the suite; two-replica runs in the default suite: test_schedules.py (precise BN,
# one-cycle) and test_contrastive.py::test_contrastive_on_two_replicas
@pytest.mark.long
def test_mirrored_on_two_logical_cpus(tmp_path, separable_split):
    cfg = tiny_config(tmp_path / "c.yaml", separable_split, str(tmp_path / "runs"), output={"onnx": False},
                      training={"epochs": 1, "distribution": "mirrored"})
    out = _run_main(["--config", cfg], env={"GA_LOGICAL_CPUS": "2"})
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = out.stdout.strip().splitlines()[-1]
    run = json.load(open(os.path.join(run_dir, "run.json")))
    assert run["device"]["strategy"] == "MirroredStrategy" and run["device"]["replicas"] == 2


def test_op_determinism_is_each_runs_own(tmp_path, separable_split):
    """training.deterministic turns TensorFlow's process-wide op determinism on for its run, and
    the next run in the same process without it turns it off again."""
    from tensorflow.python.framework import config as tf_config

    from ga.trainer import prepare

    def prepared(deterministic):
        cfg = load_config(tiny_config(tmp_path / f"{deterministic}.yaml", separable_split, str(tmp_path / "runs"),
                                      training={"deterministic": deterministic}))
        prepare(cfg)
        return tf_config.is_op_determinism_enabled()

    try:
        assert prepared(True) is True
        assert prepared(False) is False
    finally:
        tf_config.disable_op_determinism()


def test_unreadable_training_image_is_skipped_and_reported(tmp_path):
    split = make_separable_split(str(tmp_path / "split"), counts={"train": (6, 6), "valid": (3, 3), "test": (3, 3)})
    bad = os.path.join(split, "train", "pg", "broken.png")
    good = open(os.path.join(split, "train", "pg", "pg train 000.png"), "rb").read()
    open(bad, "wb").write(good[: len(good) // 2])
    open(os.path.join(split, "train", "cex", "empty.png"), "wb").close()
    cfg = tiny_config(tmp_path / "c.yaml", split, str(tmp_path / "runs"), output={"onnx": False},
                      training={"epochs": 1})
    run_dir = train(cfg)
    log_text = open(os.path.join(run_dir, "train.log")).read()
    assert "broken.png" in log_text and "empty.png" in log_text
    run = json.load(open(os.path.join(run_dir, "run.json")))
    assert {os.path.basename(s["path"]) for s in run["data"]["skipped"]} == {"broken.png", "empty.png"}
    assert run["data"]["images"]["train"] == 12


def test_nan_loss_stops_with_a_message(tmp_path, separable_split):
    cfg = tiny_config(tmp_path / "c.yaml", separable_split, str(tmp_path / "runs"),
                      training={"optimizer": "sgd", "learning_rate": 1e6, "epochs": 3})
    out = run_here("main.py", "--config", cfg, expect=None)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "NaN" in out.stderr and "learning_rate" in out.stderr and "Traceback" not in out.stderr


class _Scripted(keras.callbacks.Callback):
    """Rewrites each epoch's validation numbers (before the stop rules read them) and keeps a
    copy of the weights every epoch ended with."""

    def __init__(self, val_loss, f1):
        super().__init__()
        self.val_loss, self.f1, self.weights = val_loss, f1, []

    def on_epoch_end(self, epoch, logs=None):
        logs["val_loss"] = self.val_loss[epoch]
        for key in [k for k in logs if k.startswith("val_f1_")]:
            logs[key] = self.f1[epoch]
        self.weights.append([w.copy() for w in self.model.get_weights()])


@pytest.mark.parametrize("deliver, want_epoch", [("stop_epoch", 3), ("best", 1)])
def test_delivered_weights_follow_the_stop_rule(tmp_path, separable_split, monkeypatch, deliver, want_epoch):
    # Epoch 1 has the lowest val_loss; the F1 rule stops the run at epoch 3.
    script = _Scripted(val_loss=[0.1, 0.5, 0.9, 0.9, 0.9], f1=[0.5, 0.5, 1.0, 1.0, 1.0])
    real = ga_callbacks.build_callbacks
    monkeypatch.setattr(ga_callbacks, "build_callbacks",
                        lambda *a, **k: (lambda cbs, w: ([script, *cbs], w))(*real(*a, **k)))
    cfg = tiny_config(tmp_path / "c.yaml", separable_split, str(tmp_path / "runs"), output={"onnx": False},
                      training={"epochs": 5, "early_stopping": {"f1_threshold": 0.99, "f1_patience": 1,
                                                                "deliver": deliver}})
    run_dir = train(cfg)
    assert len(_history(run_dir)) == 3  # stopped by the F1 rule at epoch 3
    saved = keras.models.load_model(os.path.join(run_dir, "GAmodel.keras"), compile=False).get_weights()
    for epoch, weights in enumerate(script.weights, 1):
        same = all(np.array_equal(a, b) for a, b in zip(saved, weights))
        assert same == (epoch == want_epoch), (deliver, epoch)
    fit = json.load(open(os.path.join(run_dir, "metrics.json")))["training"]
    assert fit["stop_reason"] == "f1_threshold" and fit["best_epoch"] == 1
    assert fit["delivered_epoch"] == want_epoch
    assert fit["delivered_val_f1"] == {"cex": [0.5, 0.5, 1.0][want_epoch - 1], "pg": [0.5, 0.5, 1.0][want_epoch - 1]}
    log = open(os.path.join(run_dir, "train.log")).read()
    assert f"delivered epoch  {want_epoch} (" in log
    assert f"delivered weights: epoch {want_epoch}" in open(os.path.join(run_dir, "model_card.md")).read()


def test_epoch_table_has_average_rows():
    cb = ClassF1Stop(["cex", "pg"], supports={"cex": 3, "pg": 1})
    logs = {"val_precision_cex": 1.0, "val_recall_cex": 0.5, "val_f1_cex": 2 / 3,
            "val_precision_pg": 0.5, "val_recall_pg": 1.0, "val_f1_pg": 2 / 3}
    lines = cb.table(4, logs).splitlines()
    assert lines[0].startswith("epoch 5 validation")
    macro = lines[3].split()
    assert macro[:2] == ["macro", "avg"] and [float(v) for v in macro[2:]] == [0.75, 0.75, 0.6667]
    weighted = lines[4].split()
    # Weighted by support: precision (1.0 * 3 + 0.5 * 1) / 4, recall (0.5 * 3 + 1.0 * 1) / 4.
    assert weighted[:2] == ["weighted", "avg"] and [float(v) for v in weighted[2:5]] == [0.875, 0.625, 0.6667]
    assert weighted[5] == "4" and lines[5].strip() == "macro F1 0.6667"


def test_test_loss_is_keras_binary_cross_entropy():
    from ga.analysis import binary_cross_entropy, compute_metrics

    rng = np.random.default_rng(0)
    y = (rng.random((40, 1)) > 0.5).astype(np.float32)
    p = np.clip(rng.random((40, 1)).astype(np.float32), 0, 1)
    p[0, 0] = 1.0  # clipped as Keras clips
    want = float(keras.losses.BinaryCrossentropy()(y, p))
    assert abs(binary_cross_entropy(y, p) - want) < 1e-5
    m, _ = compute_metrics("binary", ["cex", "pg"], y, p, {"pg": 0.5})
    assert abs(m["loss"] - want) < 1e-5


def test_class_folders_named_0_and_1_take_data_class_names(tmp_path):
    split = make_separable_split(str(tmp_path / "split"), classes=("0", "1"),
                                 counts={"train": (6, 4), "valid": (3, 3), "test": (3, 3)})
    cfg = load_config(tiny_config(tmp_path / "c.yaml", split, str(tmp_path / "runs")),
                      ["data.class_names=[cex,pg]"])
    data = ga_data.build_datasets(cfg)
    assert data.classes == ["cex", "pg"]
    by_folder = {os.path.basename(os.path.dirname(p)): int(y[0]) for p, y in zip(data.train.paths, data.train.labels)}
    assert by_folder == {"0": 0, "1": 1}
    assert list(data.train.labels[:, 0]).count(0) == 6


def test_pipelines_leave_out_the_autotune_model_whose_wake_up_iterator_deletion_waits_for(tmp_path, separable_split):
    """Every split's pipeline (and the contrastive pairs) runs without tf.data's autotuning
    model (with it, deleting an iterator waits for the model's next wake-up: about 1 s after
    1.5 s of use, measured in ga.data.without_autotune_wait's docstring)."""
    from ga.contrastive import pairs
    from ga.data import build_datasets

    cfg = load_config(tiny_config(tmp_path / "c.yaml", separable_split, str(tmp_path / "runs")))
    data = build_datasets(cfg)
    streams = [data.train.dataset, data.valid.dataset, data.test.dataset, pairs(cfg, data.train.paths, training=True)]
    # The wait itself is not timed here: in a loaded test worker the autotuner's wake-up did not
    # always show (1 ms with the model on, once), so a timing would test the machine, not the fix.
    assert [ds.options().autotune.enabled for ds in streams] == [False] * 4


def test_augmentation_placed_in_the_model_leaves_the_pipeline_plain_and_the_delivered_model_bare(tmp_path,
                                                                                                separable_split):
    """data.augment.placement: model (docs/training.md): the training pipeline gives the plain
    images, the model that fits carries the augmentation layer, and the delivered model does not."""
    from ga.data import build_datasets
    from ga.trainer import _build

    def first_batch(**augment):
        cfg = load_config(tiny_config(tmp_path / "c.yaml", separable_split, str(tmp_path / "runs"),
                                      data={"augment": {"enabled": True, "rotation": 90.0, **augment}}))
        return cfg, next(iter(build_datasets(cfg, ["cex", "pg"], splits=("train",)).train.dataset))[0].numpy()

    _, plain = first_batch(enabled=False)
    cfg, in_model = first_batch(placement="model")
    _, in_pipeline = first_batch(placement="pipeline")
    np.testing.assert_array_equal(in_model, plain)
    assert np.abs(in_pipeline - plain).mean() > 1.0
    built = _build(cfg, ["cex", "pg"], tf.distribute.get_strategy())
    kinds = lambda m: {type(layer).__name__ for layer in m._flatten_layers()}  # noqa: E731
    assert built.fit_model is not built.model and "Sequential" in kinds(built.fit_model)
    assert not any("Random" in k for k in kinds(built.model)) and any("Random" in k for k in kinds(built.fit_model))


_FIRST_BATCHES = """
import hashlib, sys
sys.path.insert(0, {tests!r})
from conftest import tiny_config
from ga.config import load_config
from ga.data import build_datasets
cfg = load_config(tiny_config({cfg!r}, {split!r}, {runs!r}, data={{"augment": {{"enabled": True, "color_shift_p": 1.0}}}},
                              training={{"seed": {seed}, "deterministic": False}}))
it = iter(build_datasets(cfg, ["cex", "pg"], splits=("train",)).train.dataset)
print(" ".join(hashlib.md5(next(it)[0].numpy().tobytes()).hexdigest() for _ in range(3)))
"""


def test_seeded_augmentation_gives_the_same_batches_in_two_processes(tmp_path, separable_split):
    """The study's augmentation (rotation, shift, zoom, flips, colour) with the same seed gives
    the same first batches in two fresh interpreters, without training.deterministic: each batch
    has its own stateless seed, so the pipeline's parallel calls cannot reorder the draws (with
    the layers' seed variables they did: two of three processes differed). Another seed differs."""
    import subprocess
    import sys

    def batches(seed):
        code = _FIRST_BATCHES.format(tests=os.path.dirname(__file__), cfg=str(tmp_path / f"{seed}.yaml"),
                                     split=separable_split, runs=str(tmp_path / "runs"), seed=seed)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.split()

    first, again, other = batches(3), batches(3), batches(4)
    assert len(first) == 3 and first == again
    assert all(a != b for a, b in zip(first, other))


def test_augmentation_placed_in_the_model_trains(tmp_path, separable_split):
    """placement: model trains end to end (the wrapper is built before fit, as the backup
    callback needs) and delivers the plain model."""
    run_dir = train(tiny_config(tmp_path / "c.yaml", separable_split, str(tmp_path / "runs"), output={"onnx": False},
                                data={"augment": {"enabled": True, "placement": "model"}}, training={"epochs": 1}))
    model = keras.models.load_model(os.path.join(run_dir, "GAmodel.keras"), compile=False)
    assert not any("Random" in type(layer).__name__ for layer in model._flatten_layers())
    assert len(read_csv(os.path.join(run_dir, "history.csv"))) == 1


@pytest.mark.parametrize("budget_mb, cached", [(1, True), (0, False)])
def test_auto_cache_follows_the_budget(tmp_path, separable_split, monkeypatch, budget_mb, cached):
    """data.cache auto keeps a split's decoded images in memory only when they fit
    data.cache_budget_mb (the separable split's 32 training images at 32 px: 96 KB)."""
    from ga.data import wants_cache

    cfg = load_config(tiny_config(tmp_path / "c.yaml", separable_split, str(tmp_path / "runs"),
                                  data={"cache": "auto", "cache_budget_mb": budget_mb}))
    assert wants_cache(cfg, 32) is cached
    assert wants_cache(cfg, 32 * 11) is False  # 1 MB < 11 x 96 KB
    calls, real = [], ga_data.decoded
    monkeypatch.setattr(ga_data, "decoded", lambda paths, labels, size, cache, *a, **k:
                        calls.append(cache) or real(paths, labels, size, cache, *a, **k))
    ga_data.build_datasets(cfg, ["cex", "pg"], splits=("train",))
    assert calls == [cached]
