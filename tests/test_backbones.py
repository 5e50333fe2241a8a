"""Every backbone family (ga/backbones.py): built with weights none at a small size, trained one
step, every delivered file exported and checked (.keras, .h5, ONNX, SavedModel, INT8), Grad-CAM
on it, backbone features for --cluster, --scan; the preprocessing of each family equals
keras.applications' own; the trainable cut keeps blocks whole; bad backbones and weights files
are one line."""

import json
import os
import sys
import typing

import numpy as np
from PIL import Image
import pytest
from conftest import tiny_config

from ga.backbones import BACKBONES, family_of, snapped_cut, weights_family
from ga.config import ModelConfig, load_config
from ga.errors import ConfigError

# One family runs in the default suite (45 s on a 2-core AVX2 CPU); the others (45-120 s each)
# with --long. ResNet-101 and CNN-4 are the default suite's own runs (test_deliverables, test_train).
FAST = ["mobilenetv3_small"]
LONG = [b for b in BACKBONES if b not in FAST + ["resnet101", "cnn4"]]


@pytest.fixture(autouse=True)
def _free_models():
    """Each family's models freed after its test: ten of them in one worker otherwise grow it
    past 11 GB (an OOM kill seen with --long)."""
    yield
    import gc

    import keras

    keras.backend.clear_session()
    gc.collect()


def test_the_config_offers_every_family():
    hints = typing.get_type_hints(ModelConfig)
    assert set(typing.get_args(hints["backbone"])) == set(BACKBONES)


@pytest.mark.parametrize("backbone", FAST + [pytest.param(b, marks=pytest.mark.long) for b in LONG])
def test_every_family_trains_exports_and_explains(backbone, tmp_path, separable_split):
    import ga
    from ga.loading import load_model
    from ga.predict import predict_files
    from ga.trainer import train

    ga.register()
    cfg = tiny_config(tmp_path / "c.yaml", separable_split, str(tmp_path / "runs"),
                      model={"backbone": backbone, "trainable_fraction": 0.3},
                      training={"epochs": 1, "steps_per_epoch": 1}, data={"batch_size": 4},
                      output={"saved_model": True, "explain": True, "int8": True, "int8_min_agreement": 0.0})
    run = train(cfg)
    m = json.load(open(os.path.join(run, "metrics.json")))
    assert m["onnx"]["max_abs_diff"] <= m["onnx"]["tolerance"]  # checked against Keras by the run
    assert m["saved_model"]["max_abs_diff"] <= m["saved_model"]["tolerance"]
    assert m["int8"]["kept"] and os.path.isfile(os.path.join(run, "GAweights_int8.onnx"))
    assert os.path.getsize(os.path.join(run, "GAgradcam.png")) > 5000
    labels = json.load(open(os.path.join(run, "labels.json")))
    assert labels["backbone"] == backbone and labels["preprocessing"] == family_of(backbone).preprocessing
    images = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(separable_split, "test")) for f in fs)[:6]
    probs = {}
    for engine, target in (("keras", run), ("onnx", run), ("keras", os.path.join(run, "GAweights.h5"))):
        pred = predict_files(load_model(target, engine), images, progress=False)
        probs[(engine, target)] = np.stack([r.probs for r in pred.results])
    first = probs[("keras", run)]
    for key, p in probs.items():
        assert np.abs(p - first).max() < 1e-4, key
    feats = predict_files(load_model(run, "keras"), images, progress=False, features=True)
    assert np.stack([r.features for r in feats.results]).shape[0] == len(images)
    from ga.cli import inference_main

    assert inference_main([images[0], "--scan", "--tile", "24", "--model", run, "--engine", "onnx-int8",
                           "--out-dir", str(tmp_path / "scan"), "--no-progress", "-q"]) == 0
    from helpers import read_csv

    stem = os.path.splitext(os.path.basename(images[0]))[0]
    tiles = read_csv(tmp_path / "scan" / f"{stem}_tiles.csv")
    width, height = Image.open(images[0]).size
    assert tiles and {int(t["x1"]) - int(t["x0"]) for t in tiles} == {24}  # every tile the size asked for
    assert min(int(t["x0"]) for t in tiles) == 0 and max(int(t["x1"]) for t in tiles) == width  # the frame covered
    assert max(int(t["y1"]) for t in tiles) == height
    marked = tmp_path / "scan" / f"{stem}_tiles"
    assert (len(os.listdir(marked)) if marked.is_dir() else 0) == sum(int(t["fired"]) for t in tiles)


# One of each preprocessing (ResNet's is also test_train.py's); every family with --long.
PREPROCESSING = ["resnet50", "efficientnetv2_b0", "efficientnetv2_s", "convnext_tiny", "mobilenetv3_small"]


@pytest.mark.parametrize("backbone", PREPROCESSING + [pytest.param(b, marks=pytest.mark.long) for b in BACKBONES
                                                      if b not in PREPROCESSING + ["cnn4"]])
def test_preprocessing_equals_the_applications_own(backbone):
    """The Preprocess layer in the family's mode gives what the application's own
    preprocessing layer gives, so ImageNet weights see the inputs they were trained on."""
    import keras

    from ga.layers import Preprocess

    fam = family_of(backbone)
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    got = np.asarray(Preprocess(fam.preprocessing)(x))
    if fam.family == "resnet":
        want = keras.applications.resnet.preprocess_input(x.copy())
    else:
        build = getattr(keras.applications, fam.builder)
        own = build(include_top=False, weights=None, input_shape=(32, 32, 3))
        raw = build(include_top=False, weights=None, input_shape=(32, 32, 3), include_preprocessing=False)
        # The layers the application adds in front of its first layer with weights, applied alone.
        first = raw.layers[1].name
        head = [layer for layer in own.layers[1:own.layers.index(own.get_layer(first))]]
        want = x
        for layer in head:
            want = layer(want)
        want = np.asarray(want)
    assert np.allclose(got, want, atol=1e-4), backbone


def test_the_trainable_cut_keeps_blocks_whole():
    names = ["input", "stem_conv", "block1a_conv", "block1a_bn", "add", "block2a_expand", "block2a_bn", "multiply",
             "block2a_project", "top_conv"]
    layers = [(n, n not in ("input", "add", "multiply")) for n in names]  # (name, has weights)
    block = r"^(block\d+[a-z])_"
    # A cut inside block2a moves back to its start (past the weightless add and multiply among its layers).
    assert snapped_cut(layers, 7, block) == 4 and snapped_cut(layers, 6, block) == 4
    assert snapped_cut(layers, 9, block) == 9  # top_conv has weights and is in no block: it stands alone
    assert snapped_cut(layers, 3, block) == 2  # block1a starts after the stem's convolution
    assert snapped_cut(layers, 7, None) == 7  # ResNet: the study's exact layer count


def test_a_weights_file_is_recognised_by_family():
    assert weights_family([(64,), (7, 7, 3, 64), (1, 1, 64, 256)]) == "resnet"
    assert weights_family([(3, 3, 3, 32)]) == "efficientnetv2"
    assert weights_family([(3, 3, 16, 1), (3, 3, 3, 16)]) == "mobilenetv3"  # a depthwise kernel is no stem
    assert weights_family([(4, 4, 3, 96)]) == "convnext"
    assert weights_family([(5, 5, 3, 32)]) == "cnn4"
    assert weights_family([(3, 3, 8, 8)]) is None


def test_unknown_backbone_and_a_weights_file_of_another_family_are_one_line(tmp_path):
    import keras

    import ga
    from ga.model import build_model

    with pytest.raises(ConfigError) as exc:
        load_config("configs/demo.yaml", ["model.backbone=resnet18"])
    msg = str(exc.value)
    assert "\n" not in msg and all(b in msg for b in ("efficientnetv2_b0", "mobilenetv3_small", "convnext_tiny"))
    ga.register()
    other = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3),
                                               include_preprocessing=False)
    path = str(tmp_path / "mobilenet.weights.h5")
    other.save_weights(path)
    cfg = load_config("configs/demo.yaml", ["model.backbone=efficientnetv2_b0", f"model.weights={path}",
                                            "data.image_size=[32,32]"])
    with pytest.raises(ConfigError) as exc:
        build_model(cfg, 1)
    msg = str(exc.value)
    assert "\n" not in msg and "mobilenetv3" in msg and "efficientnetv2" in msg and path in msg


def test_backbones_bench_on_one_small_family_in_process(tmp_path):
    """bench/backbones.py --quick on CNN-4 alone, in-process: a row of positive figures, and the
    recommendation says what it needs (the two-family run from a shell: the test below, --long)."""
    from helpers import ROOT, run_here

    os.symlink(os.path.join(ROOT, "configs"), tmp_path / "configs")
    proc = run_here("bench/backbones.py", "--quick", "--families", "cnn4", "--no-accuracy", "--workdir", tmp_path / "w",
                    "--table", tmp_path / "t.md", cwd=tmp_path)
    lines = [[c.strip() for c in line.split("|")[1:-1]] for line in open(tmp_path / "t.md", encoding="utf-8")
             if line.startswith("| ")]
    row = dict(zip(lines[0], lines[1]))
    assert len(lines) == 2 and row["backbone"] == "cnn4" and row["input"] == "32"
    assert all(float(row[h]) > 0 for h in lines[0] if h.endswith("img/s") or h in ("parameters (M)", "GFLOPs")), row
    assert "recommendation: needs resnet101" in proc.stdout


@pytest.mark.long  # 40 s: ResNet-101 built, converted to ONNX and quantised, even at 32 px
def test_backbones_bench_command(tmp_path):
    """bench/backbones.py --quick: a row of figures per family, ResNet-101 the reference."""
    from helpers import run_script

    os.symlink(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs"), tmp_path / "configs")
    proc = run_script("bench/backbones.py", "--quick", "--families", "resnet101", "mobilenetv3_small", "--no-accuracy",
                      "--table", tmp_path / "t.md", cwd=tmp_path, timeout=900)
    lines = [[c.strip() for c in line.split("|")[1:-1]] for line in open(tmp_path / "t.md", encoding="utf-8")
             if line.startswith("| ")]
    head, rows = lines[0], {cells[0]: dict(zip(lines[0], cells)) for cells in lines[1:]}
    assert set(rows) == {"resnet101", "mobilenetv3_small"}
    speeds = [h for h in head if h.endswith("img/s")]  # train, Keras, ONNX, INT8 (and bf16 where the CPU has it)
    for name, row in rows.items():
        assert all(float(row[h]) > 0 for h in ["parameters (M)", "GFLOPs", *speeds]), row
    assert rows["resnet101"]["vs ResNet-101 (train / label)"] == "1.0× / 1.0×"
    assert float(rows["mobilenetv3_small"]["parameters (M)"]) < float(rows["resnet101"]["parameters (M)"])
    assert "recommendation" in proc.stdout


def test_the_efficientnetv2_config_offline_names_the_weights_file_to_place(tmp_path, separable_split):
    """`python main.py --config configs/efficientnetv2.yaml` with no network: one line naming
    the ImageNet file and where to put it, exit 2, nothing left behind."""
    from helpers import run_script, one_error_line

    home = tmp_path / "keras_home"
    proxy = "http://127.0.0.1:9"  # a closed port: any download fails at once
    proc = run_script("main.py", "--config", "configs/efficientnetv2.yaml", "--set", f"data.split_root={separable_split}",
                      "--set", f"output.root={tmp_path / 'runs'}", cwd=os.path.dirname(os.path.dirname(__file__)),
                      env={"KERAS_HOME": str(home), "http_proxy": proxy, "https_proxy": proxy, "HTTP_PROXY": proxy,
                           "HTTPS_PROXY": proxy}, expect=2, timeout=300)
    line = one_error_line(proc)
    assert os.path.join(str(home), "models", "efficientnetv2-b0_notop.h5") in line and "model.weights: none" in line
    assert not (tmp_path / "runs").exists() or not os.listdir(tmp_path / "runs")


def _strategy_config(tmp_path, split, backbone, distribution):
    return tiny_config(tmp_path / "c.yaml", split, str(tmp_path / "runs"),
                       model={"backbone": backbone, "trainable_fraction": 0.3},
                       training={"epochs": 1, "steps_per_epoch": 2, "distribution": distribution},
                       data={"batch_size": 4}, output={"onnx": False})


# cnn4 on two replicas: test_train, test_distributed, test_schedules (default suite); every other family
# with --long (MobileNetV3-Small's 55 s moved there to keep make test under 15 min on a 2-core AVX2 CPU).
@pytest.mark.parametrize("backbone", [pytest.param(b, marks=pytest.mark.long) for b in BACKBONES if b != "cnn4"])
def test_every_family_trains_mirrored_on_two_replicas(backbone, tmp_path, separable_split):
    from helpers import run_script

    proc = run_script("main.py", "--config", _strategy_config(tmp_path, separable_split, backbone, "mirrored"),
                      env={"GA_LOGICAL_CPUS": "2"})
    run = proc.stdout.strip().splitlines()[-1]
    device = json.load(open(os.path.join(run, "run.json")))["device"]
    assert device["strategy"] == "MirroredStrategy" and device["replicas"] == 2
    assert json.load(open(os.path.join(run, "labels.json")))["backbone"] == backbone


# The families whose fine-tuning keeps BatchNorm frozen (EfficientNetV2, MobileNetV3), the
# one with LayerNorm (ConvNeXt), and a ResNet: two worker processes each, the same weights at
# the end (every variable, BatchNorm's moving statistics included).
@pytest.mark.long
@pytest.mark.parametrize("backbone", ["efficientnetv2_b0", "mobilenetv3_small", "convnext_tiny", "resnet50"])
def test_block_families_train_on_two_workers_to_the_same_weights(backbone, tmp_path, separable_split):
    from test_distributed import one_complete_run, start_workers, wait_all

    (tmp_path / "tmp").mkdir()
    cfg = _strategy_config(tmp_path, separable_split, backbone, "multi_worker")
    run, _, _ = one_complete_run(tmp_path, wait_all(start_workers(cfg, tmp_path, tmp_path / "tmp"), timeout=900))
    assert json.load(open(os.path.join(run, "labels.json")))["backbone"] == backbone


def test_the_bench_recommendation_says_the_int8_ratio_where_the_cpu_has_int8_units():
    """bench/backbones.py's rule on given rows: the fastest-enough family with the best ImageNet
    accuracy, and, on a CPU with INT8 units, the two INT8 models' ratio as well."""
    import importlib.util

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(root, "bench"))  # its `common` import
    try:
        spec = importlib.util.spec_from_file_location("bench_backbones", os.path.join(root, "bench", "backbones.py"))
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
    finally:
        sys.path.remove(os.path.join(root, "bench"))

    def row(name, train, onnx, int8):
        return {"backbone": name, "size": 224, "train_img_s": train, "onnx_img_s": onnx, "int8_img_s": int8}

    rows = [row("resnet101", 10, 20, 60), row("efficientnetv2_b0", 45, 120, 150), row("mobilenetv3_large", 50, 200, 300),
            row("resnet50", 20, 40, 120)]
    plain = bench.recommendation(rows)
    assert plain.startswith("recommendation for a CPU: efficientnetv2_b0") and "4.5x" in plain and "6.0x" in plain
    assert "INT8" not in plain
    assert bench.recommendation(rows, int8=True).endswith("2.5x (150.0 against 60.0 images/s)")
    assert "no family" in bench.recommendation([row("resnet101", 10, 20, 60), row("resnet50", 20, 40, 120)])
