"""SimCLR pretraining and the linear-eval / fine-tune schedules: NT-Xent against NumPy (also
across replicas), the two views, backbone weights round trip, frozen backbone in linear
evaluation, and a tiny pretrain -> fine-tune chain."""

import glob
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, tiny_config
from helpers import read_csv, run_script
from ga import synthetic as syn
from ga.cli import inference_main, train_main
from ga.config import ConfigError, load_config
from ga.contrastive import nt_xent, one_way, views_layer
from ga.layers import RandomResizedCrop
from ga.model import backbone_of, build_model
from ga.splitting import split_dataset
from ga.trainer import train


def numpy_nt_xent(z1, z2, t):
    """SimCLR's loss written out term by term, in float64."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n2 = len(z)
    s = z @ z.T / t
    losses = []
    for i in range(n2):
        j = (i + n2 // 2) % n2
        denom = sum(np.exp(s[i, k]) for k in range(n2) if k != i)
        losses.append(-np.log(np.exp(s[i, j]) / denom))
    return float(np.mean(losses))


def numpy_one_way(z1, z2, t):
    """The graphene study's clr.py ContrastiveLoss written out: row i of z1 against every row
    of z2, the partner on the diagonal, in float64."""
    a = z1 / np.linalg.norm(z1, axis=1, keepdims=True)
    b = z2 / np.linalg.norm(z2, axis=1, keepdims=True)
    dots = a @ b.T / t
    return float(np.mean([-(dots[i, i] - np.log(np.sum(np.exp(dots[i])))) for i in range(len(a))]))


NUMPY_LOSSES = {"nt_xent": numpy_nt_xent, "one_way": numpy_one_way}


@pytest.mark.parametrize("n", [1, 2, 7, 32])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_one_way_matches_numpy(n, temperature):
    rng = np.random.default_rng(n * 10 + int(temperature * 10))
    z1, z2 = rng.normal(size=(n, 16)), rng.normal(size=(n, 16))
    got = float(one_way(tf.constant(z1, tf.float32), tf.constant(z2, tf.float32), temperature))
    assert got == pytest.approx(numpy_one_way(z1, z2, temperature), rel=1e-4, abs=1e-5)
    if n > 1:  # one-directional: swapping the views changes it, unlike NT-Xent
        assert got != pytest.approx(float(one_way(tf.constant(z2, tf.float32), tf.constant(z1, tf.float32),
                                                  temperature)), rel=1e-6)


@pytest.mark.parametrize("n", [1, 2, 7, 32])
@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_matches_numpy(n, temperature):
    rng = np.random.default_rng(n * 100 + int(temperature * 10))
    z1, z2 = rng.normal(size=(n, 16)), rng.normal(size=(n, 16))
    got = float(nt_xent(tf.constant(z1, tf.float32), tf.constant(z2, tf.float32), temperature))
    assert got == pytest.approx(numpy_nt_xent(z1, z2, temperature), rel=1e-4, abs=1e-5)


def test_nt_xent_is_low_for_matching_views_and_high_for_swapped():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(8, 32)).astype(np.float32)
    matched = float(nt_xent(z, z + 0.01 * rng.normal(size=z.shape).astype(np.float32), 0.1))
    shuffled = float(nt_xent(z, np.roll(z, 1, axis=0), 0.1))
    assert matched < 0.05 < 1.0 < shuffled


CROSS_REPLICA = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from ga.contrastive import nt_xent, one_way
    loss_fn = {"nt_xent": nt_xent, "one_way": one_way}[sys.argv[1]]
    strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    rng = np.random.default_rng(3)
    n, t = 6, 0.3
    z1 = tf.constant(rng.normal(size=(2 * n, 8)), tf.float32)
    z2 = tf.constant(rng.normal(size=(2 * n, 8)), tf.float32)

    def share(z):
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: z[ctx.replica_id_in_sync_group * n:(ctx.replica_id_in_sync_group + 1) * n])

    @tf.function
    def run(a, b):
        def step(x1, x2):
            with tf.GradientTape() as tape:
                tape.watch([x1, x2])
                loss = loss_fn(x1, x2, t)
                scaled = loss / 2.0  # what the training step does: replicas' gradients are summed
            return (loss, *tape.gradient(scaled, [x1, x2]))
        return strategy.run(step, args=(a, b))

    loss, g1, g2 = run(share(z1), share(z2))
    local = lambda v: [np.asarray(x) for x in strategy.experimental_local_results(v)]
    with tf.GradientTape() as tape:
        tape.watch([z1, z2])
        whole = loss_fn(z1, z2, t)
    w1, w2 = tape.gradient(whole, [z1, z2])
    json.dump({"replica_losses": [float(x) for x in local(loss)], "whole": float(whole),
               "g1": float(np.abs(np.concatenate(local(g1)) - np.asarray(w1)).max()),
               "g2": float(np.abs(np.concatenate(local(g2)) - np.asarray(w2)).max()),
               "z1": np.asarray(z1).tolist(), "z2": np.asarray(z2).tolist()}, sys.stdout)
""")


@pytest.mark.parametrize("loss", ["nt_xent", "one_way"])
def test_loss_across_replicas_uses_the_global_batch(loss):
    out = subprocess.run([sys.executable, "-c", CROSS_REPLICA, loss], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    want = NUMPY_LOSSES[loss](np.array(r["z1"]), np.array(r["z2"]), 0.3)
    # Each replica scores its own rows against every replica's negatives; their mean is the
    # loss of the whole batch, and the gathered gradients are the whole batch's.
    assert len(r["replica_losses"]) == 2 and r["replica_losses"][0] != pytest.approx(r["replica_losses"][1])
    assert np.mean(r["replica_losses"]) == pytest.approx(want, rel=1e-4)
    assert r["whole"] == pytest.approx(want, rel=1e-4)
    assert r["g1"] < 1e-5 and r["g2"] < 1e-5


def test_two_views_differ_and_keep_the_model_input_shape():
    cfg = load_config(data={"model": {"task": "contrastive"}, "training": {"early_stopping": {"monitor": "loss"}}})
    rng = np.random.default_rng(1)
    images = tf.constant(rng.uniform(0, 255, (4, 40, 40, 3)), tf.float32)
    layer = views_layer(cfg.contrastive, (24, 24), seed=3)
    a, b = layer(images, training=True), layer(images, training=True)
    assert a.shape == b.shape == (4, 24, 24, 3)
    for i in range(4):  # every image's two views differ
        assert float(tf.reduce_max(tf.abs(a[i] - b[i]))) > 1.0
    assert float(tf.reduce_min(a)) >= 0 and float(tf.reduce_max(a)) <= 255.0 + 1e-3


def test_random_resized_crop_area_and_identity():
    x = tf.reshape(tf.range(2 * 20 * 20 * 3, dtype=tf.float32), (2, 20, 20, 3))
    whole = RandomResizedCrop(20, 20, area=(1.0, 1.0), seed=0)(x, training=True)
    np.testing.assert_allclose(whole.numpy(), x.numpy(), atol=1e-3)  # the full square, unscaled
    # A quarter of the area: half the side, so output columns step by half a source pixel
    # (a source pixel to the right adds 3 to these values).
    small = RandomResizedCrop(20, 20, area=(0.25, 0.25), seed=0)(x, training=True).numpy()
    assert np.diff(small[:, :, :, 0], axis=2) == pytest.approx(1.5, rel=1e-3)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Unlabelled crops, a labelled split, and a tiny pretraining run."""
    root = tmp_path_factory.mktemp("simclr")
    unlabelled = syn.generate_graphene(str(root / "unlabelled"), count=48, size=64, seed=9)
    src = syn.generate_graphene(str(root / "labelled"), count=60, size=64, seed=4)
    split = str(root / "split")
    split_dataset(src, split, ratios=[0.6, 0.2, 0.2], progress=False)
    cfg = tiny_config(root / "pre.yaml", split, str(root / "runs"), data={"train_dir": unlabelled, "batch_size": 16},
                      model={"task": "contrastive", "head": {"units": [], "dropout": [], "batch_norm": [],
                                                             "pooling": "max"}},
                      training={"epochs": 2, "learning_rate": 0.003, "early_stopping": {"monitor": "loss"}},
                      contrastive={"projection": [16, 8]}, output={"prefix": "GS"})
    run = train(cfg)
    return {"root": root, "split": split, "pretrained": run,
            "backbone": os.path.join(run, "GSbackbone.weights.h5")}


def _finetune_config(chain, path, schedule, **training):
    return tiny_config(path, chain["split"], str(chain["root"] / "runs"),
                       data={"any_class": True, "batch_size": 8},
                       model={"task": "multilabel", "backbone_weights": chain["backbone"],
                              "head": {"units": [], "dropout": [], "batch_norm": [], "pooling": "max"}},
                       training={"epochs": 2, "schedule": schedule, **training}, output={"prefix": "GC"})


def _backbone_arrays(model):
    base = backbone_of(model)
    return {v.path: np.array(v.numpy()) for v in base.weights}


def test_pretraining_run_folder(chain):
    run = chain["pretrained"]
    for f in ("GSmodel.keras", "GSweights.h5", "GSbackbone.weights.h5", "GSloss_curve.png", "history.csv",
              "metrics.json", "run.json", "labels.json"):
        assert os.path.isfile(os.path.join(run, f)), f
    assert not os.path.exists(os.path.join(run, "RUNNING"))
    m = json.load(open(os.path.join(run, "metrics.json")))
    assert m["task"] == "contrastive" and m["images"] == 48 and m["training"]["epochs"] == 2
    rows = read_csv(os.path.join(run, "history.csv"))
    assert len(rows) == 2 and all(np.isfinite(float(r["loss"])) for r in rows)
    # 48 images, batch 16: random views score about log(31); any learning shows below it
    assert float(rows[0]["loss"]) < np.log(31) + 0.5


def test_study_objective_with_validation_loss_and_periodic_weights(chain, tmp_path):
    # The graphene study's clr.py objective: one-way loss, a linear head (dropout + dense),
    # views smaller than the loaded images, a held-out share with a validation loss per
    # epoch; plus output.save_every.
    cfg = tiny_config(tmp_path / "study.yaml", chain["split"], str(tmp_path / "runs"),
                      data={"train_dir": str(chain["root"] / "unlabelled"), "batch_size": 16},
                      model={"task": "contrastive", "head": {"units": [], "dropout": [], "batch_norm": [],
                                                             "pooling": "max"}},
                      training={"epochs": 2, "learning_rate": 0.003, "early_stopping": {"monitor": "val_loss"}},
                      contrastive={"loss": "one_way", "temperature": 0.1, "head": "linear", "projection": [24],
                                   "view_size": 20, "val_fraction": 0.25},
                      output={"prefix": "GS", "save_every": 1})
    run = train(cfg)
    rows = read_csv(os.path.join(run, "history.csv"))
    assert len(rows) == 2 and all(np.isfinite(float(r["val_loss"])) for r in rows)
    m = json.load(open(os.path.join(run, "metrics.json")))
    assert m["loss"] == "one_way" and m["images"] == 36 and m["validation_images"] == 12
    assert m["final_val_loss"] == pytest.approx(float(rows[-1]["val_loss"]), rel=1e-6)
    encoder = keras.models.load_model(os.path.join(run, "GSmodel.keras"))
    assert encoder.input_shape == (None, 20, 20, 3) and encoder.output_shape == (None, 24)
    assert [type(layer).__name__ for layer in encoder.layers[-2:]] == ["Dropout", "Dense"]
    for n in (1, 2):
        saved = keras.Model.from_config(encoder.get_config())
        saved.load_weights(os.path.join(run, f"epoch_{n}.weights.h5"))
        base = backbone_of(saved)
        base.load_weights(os.path.join(run, f"epoch_{n}.backbone.weights.h5"))
    assert not any(f.startswith(".") for f in os.listdir(run))  # written atomically, no temporary left


def test_backbone_weights_round_trip(chain, tmp_path):
    encoder = keras.models.load_model(os.path.join(chain["pretrained"], "GSmodel.keras"))
    saved = _backbone_arrays(encoder)
    cfg = load_config(_finetune_config(chain, tmp_path / "f.yaml", "standard"))
    model = build_model(cfg, 4)
    loaded = _backbone_arrays(model)
    assert saved.keys() == loaded.keys() and len(saved) > 8
    for k in saved:
        np.testing.assert_array_equal(saved[k], loaded[k])
    # and a fresh model without them differs
    fresh = _backbone_arrays(build_model(load_config(_finetune_config(chain, tmp_path / "g.yaml", "standard"),
                                                     ["model.backbone_weights=null"]), 4))
    assert any(not np.array_equal(saved[k], fresh[k]) for k in saved if "kernel" in k)


def test_linear_eval_leaves_every_backbone_weight_unchanged(chain, tmp_path):
    run = train(_finetune_config(chain, tmp_path / "lin.yaml", "linear_eval"))
    before = keras.models.load_model(os.path.join(chain["pretrained"], "GSmodel.keras"))
    after = keras.models.load_model(os.path.join(run, "GCmodel.keras"))
    b, a = _backbone_arrays(before), _backbone_arrays(after)
    assert any("moving" in k for k in b)  # BatchNorm statistics are among them
    for k in b:
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)
    # the output layer did train (its bias starts at zero)
    assert np.abs(after.get_layer("output").get_weights()[1]).max() > 0


def test_pretrain_then_fine_tune_gives_a_normal_multilabel_run(chain, tmp_path):
    run = train(_finetune_config(chain, tmp_path / "ft.yaml", "fine_tune", fine_tune={"epochs": 2,
                                                                                     "learning_rate": 1e-3}))
    labels = json.load(open(os.path.join(run, "labels.json")))
    assert labels["task"] == "multilabel" and labels["classes"] == ["class1", "class2", "class3", "any"]
    m = json.load(open(os.path.join(run, "metrics.json")))
    assert "harmonic_mean_f1" in m and m["training"]["linear_stage_epochs"] == 2
    for f in ("GCmodel.keras", "GCweights.onnx", "GCthreshold_sweep.png", "GCmetrics_plot.png", "predictions.csv",
              "GCFinalTestResults.txt", "model_card.md"):
        assert os.path.isfile(os.path.join(run, f)), f
    rows = read_csv(os.path.join(run, "history.csv"))
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3"] and [r["stage"] for r in rows] == ["1", "1", "2", "2"]
    # the second stage trained the backbone's convolutions; BatchNorm kept its pretrained state
    b = _backbone_arrays(keras.models.load_model(os.path.join(chain["pretrained"], "GSmodel.keras")))
    a = _backbone_arrays(keras.models.load_model(os.path.join(run, "GCmodel.keras")))
    assert all(not np.array_equal(b[k], a[k]) for k in b if k.endswith("kernel"))
    assert all(np.array_equal(b[k], a[k]) for k in b if "bn" in k.split("/")[-2])
    # inference reads it like any other run
    pngs = sorted(glob.glob(os.path.join(chain["split"], "test", "*.png")))
    assert inference_main([*pngs, "--model", run, "--output", str(tmp_path / "p.csv")]) == 0
    assert len(read_csv(tmp_path / "p.csv")) == len(pngs)


def test_contrastive_run_is_not_a_classifier(chain, tmp_path, capsys):
    from ga.runs import newest_run

    code = inference_main([os.path.join(chain["split"], "test"), "--model", chain["pretrained"]])
    err = capsys.readouterr().err
    assert code == 2 and "contrastive" in err and "backbone_weights" in err and err.count("\n") == 1
    assert newest_run(str(chain["root"] / "runs")) != chain["pretrained"]


@pytest.mark.parametrize("sets, needle", [
    (["model.task=contrastive"], "early_stopping.monitor: loss"),
    (["model.task=contrastive", "training.early_stopping.monitor=loss", "training.schedule=fine_tune"],
     "training.schedule"),
    (["model.backbone_weights=weights.h5"], ".weights.h5"),
    (["contrastive.temperature=0"], "contrastive.temperature"),
    (["contrastive.crop_area=[0.5,0.2]"], "crop_area"),
    (["training.fine_tune.learning_rate=0"], "fine_tune.learning_rate"),
])
def test_contrastive_config_errors(sets, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(None, sets)


def test_backbone_weights_of_another_architecture_exit_2(chain, tmp_path, capsys):
    cfg = _finetune_config(chain, tmp_path / "r.yaml", "linear_eval")
    code = train_main(["--config", cfg, "--set", "model.backbone=resnet50", "--set", "data.image_size=[32,32]"])
    err = capsys.readouterr().err
    assert code == 2 and "does not fit" in err and err.count("\n") == 1


def test_contrastive_on_two_replicas(chain, tmp_path):
    cfg = tiny_config(tmp_path / "m.yaml", chain["split"], str(tmp_path / "runs"),
                      data={"train_dir": str(chain["root"] / "unlabelled"), "batch_size": 16},
                      model={"task": "contrastive"}, contrastive={"projection": [16, 8]},
                      training={"epochs": 1, "distribution": "mirrored", "early_stopping": {"monitor": "loss"}},
                      output={"prefix": "GS"})
    out = run_script("main.py", "--config", cfg, env={"GA_LOGICAL_CPUS": "2"})
    run = out.stdout.strip().splitlines()[-1]
    assert json.load(open(os.path.join(run, "run.json")))["device"]["replicas"] == 2
    assert np.isfinite(json.load(open(os.path.join(run, "metrics.json")))["final_loss"])


# crash_at 2 (the fine-tuning stage's first epoch: stage 1 saved, stage 2 resumed; 38 s on a
# 2-core AVX2 CPU) in the default suite; 1 (stage 1, like any resume: test_train.py) and 3 with --long.
@pytest.mark.parametrize("crash_at", [pytest.param(1, marks=pytest.mark.long), 2, pytest.param(3, marks=pytest.mark.long)])
def test_fine_tune_resumes_in_either_stage(chain, tmp_path, monkeypatch, crash_at):
    from ga import callbacks as ga_callbacks

    cfg = _finetune_config(chain, tmp_path / "r.yaml", "fine_tune", fine_tune={"epochs": 3})
    cfg = cfg.replace("r.yaml", "r.yaml")
    real = ga_callbacks.build_callbacks

    class Crash(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == crash_at:
                raise KeyboardInterrupt(f"simulated kill at epoch {epoch}")

    monkeypatch.setattr(ga_callbacks, "build_callbacks", lambda *a, **k: ([Crash(), *real(*a, **k)[0]],
                                                                          real(*a, **k)[1]))
    runs_root = chain["root"] / "runs"
    before = set(os.listdir(runs_root))
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    (run,) = [os.path.join(runs_root, d) for d in set(os.listdir(runs_root)) - before]
    assert os.path.isfile(os.path.join(run, "stage1.json")) == (crash_at >= 2)
    monkeypatch.setattr(ga_callbacks, "build_callbacks", real)
    assert train(resume=run) == run
    rows = read_csv(os.path.join(run, "history.csv"))
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert [r["stage"] for r in rows] == ["1", "1", "2", "2", "2"]
    assert json.load(open(os.path.join(run, "metrics.json")))["training"]["linear_stage_epochs"] == 2
