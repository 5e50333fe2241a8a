"""Multi-label task: labels and the any output, per-class F1 against scikit-learn, the
threshold sweep, flake augmentation, data.fraction, tiling, and a scan end to end."""

import json
import os

import numpy as np
import pytest
import keras
import tensorflow as tf
from PIL import Image
from sklearn.metrics import f1_score

from conftest import tiny_config
from helpers import read_csv, run_here
from ga import synthetic as syn
from ga.analysis import compute_metrics, threshold_sweep
from ga.cli import inference_main
from ga.config import load_config
from ga.data import build_datasets
from ga.layers import RandomRot90, RandomSometimes
from ga.layers import ClassF1
from ga.scan import default_overlap, tile_boxes, tile_starts
from ga.splitting import split_dataset


@pytest.fixture(scope="module")
def graphene_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("graphene")
    src = syn.generate_graphene(str(root / "src"), count=60, size=64, seed=4)
    split_dataset(src, str(root / "split"), ratios=[0.6, 0.2, 0.2], progress=False)
    return str(root / "split")


def _ml_config(tmp_path, split, **extra):
    sections = {"model": {"task": "multilabel", "head": {"units": [], "dropout": [], "batch_norm": [],
                                                           "pooling": "max", "output_dropout": 0.5}},
                "data": {"any_class": True, "balance": True, "image_size": [32, 32],
                         "augment": {"enabled": True, "rot90": True, "horizontal_flip": False, "vertical_flip": True,
                                     "color_scale": 0.15, "rotation": 20, "rotation_prob": 0.25, "shift": 0,
                                     "zoom": 0, "crop": [24, 24], "fill_mode": "reflect"}},
                "output": {"prefix": "GC"}}
    for k, v in extra.items():
        sections.setdefault(k, {}).update(v)
    return tiny_config(tmp_path / "ml.yaml", split, str(tmp_path / "runs"), **sections)


def test_multilabel_labels_and_any_output(tmp_path, graphene_split):
    cfg = load_config(_ml_config(tmp_path, graphene_split))
    data = build_datasets(cfg)
    assert data.classes == ["class1", "class2", "class3", "any"]
    rows = {r["filename"]: r for r in read_csv(os.path.join(graphene_split, "test", "labels.csv"))}
    for path, y in zip(data.test.paths, data.test.labels):
        r = rows[os.path.basename(path)]
        want = [float(r["class1"]), float(r["class2"]), float(r["class3"])]
        assert list(y[:3]) == want and y[3] == max(want)
    x, y = next(iter(data.test.dataset))
    assert x.shape[1:] == (24, 24, 3) and y.shape[1] == 4  # centre crop for evaluation


def test_fraction_trains_on_a_seeded_subset(tmp_path, graphene_split):
    full = build_datasets(load_config(_ml_config(tmp_path, graphene_split)), splits=("train",))
    half = build_datasets(load_config(_ml_config(tmp_path, graphene_split), ["data.fraction=0.5"]), splits=("train",))
    again = build_datasets(load_config(_ml_config(tmp_path, graphene_split), ["data.fraction=0.5"]), splits=("train",))
    assert half.train.size == round(full.train.size * 0.5)
    assert set(half.train.paths) < set(full.train.paths) and half.train.paths == again.train.paths


def test_class_f1_and_report_match_sklearn():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 3)) < 0.3).astype(np.float32)
    p = np.clip(y * 0.6 + rng.random((200, 3)) * 0.5, 0, 1).astype(np.float32)
    want = f1_score(y, p > 0.5, average=None, zero_division=0)
    for i in range(3):
        m = ClassF1(column=i)
        m.update_state(y, p)
        assert float(m.result()) == pytest.approx(want[i], abs=1e-5)
    classes = ["class1", "class2", "class3"]
    metrics, _ = compute_metrics("multilabel", classes, y, p, {c: 0.5 for c in classes})
    for c, w in zip(classes, want):
        assert metrics["per_class"][c]["f1"] == pytest.approx(w, abs=1e-9)
    assert metrics["harmonic_mean_f1"] == pytest.approx(3 / sum(1 / w for w in want))
    # Binary: the negative class is scored on the complement of the single output.
    yb, pb = y[:, :1], p[:, :1]
    neg = ClassF1(column=0, negate=True)
    neg.update_state(yb, pb)
    assert float(neg.result()) == pytest.approx(f1_score(1 - yb[:, 0], pb[:, 0] <= 0.5), abs=1e-5)


def test_threshold_sweep_finds_the_best_f1_threshold():
    rng = np.random.default_rng(1)
    y = (rng.random((300, 2)) < 0.4).astype(np.float32)
    # Class a: positives score above 0.3, negatives below; class b: noisier.
    p = np.where(y > 0, rng.uniform(0.31, 0.6, y.shape), rng.uniform(0.0, 0.29, y.shape)).astype(np.float32)
    p[:, 1] = np.clip(p[:, 1] + rng.normal(0, 0.1, 300), 0, 1)
    grid, curves, best = threshold_sweep(["a", "b"], y, p)
    assert 0.29 <= best["a"] <= 0.31 and max(curves["a"]["f1"]) == 1.0
    for t in (0.2, 0.5, 0.7):
        i = int(np.argmin(np.abs(grid - t)))
        assert curves["b"]["f1"][i] == pytest.approx(f1_score(y[:, 1], p[:, 1] > grid[i], zero_division=0))
    assert curves["b"]["f1"][int(np.argmin(np.abs(grid - best["b"])))] == pytest.approx(max(curves["b"]["f1"]))


def test_flake_augmentation_layers():
    x = tf.constant(np.arange(2 * 5 * 5 * 3, dtype=np.float32).reshape(2, 5, 5, 3))
    out = RandomRot90(seed=3)(x, training=True).numpy()
    for a, b in zip(x.numpy(), out):
        assert any(np.array_equal(syn.dihedral(a, k), b) for k in range(8))
    seen = {tuple(RandomRot90(seed=s)(x[:1], training=True).numpy().ravel()[:3]) for s in range(20)}
    assert len(seen) > 2  # several orientations occur
    never = RandomSometimes(keras.layers.RandomFlip("horizontal", seed=1), rate=0.0, seed=1)
    np.testing.assert_array_equal(never(x, training=True).numpy(), x.numpy())
    ones = tf.ones((400, 4, 4, 1))
    marked = RandomSometimes(keras.layers.Rescaling(2.0), rate=0.25, seed=5)(ones, training=True).numpy()
    share = float((marked[:, 0, 0, 0] == 2.0).mean())
    assert 0.15 < share < 0.35


@pytest.mark.parametrize("w, h, tile, overlap", [(1001, 777, 300, 0), (300, 300, 300, 0), (4908, 3264, 300, 0),
                                                 (250, 180, 300, 0), (601, 301, 300, 0), (4908, 3264, 300, 60),
                                                 (1001, 777, 300, 299), (601, 301, 300, 1), (97, 61, 20, 7)])
def test_tiles_cover_every_pixel_with_the_fewest_tiles(w, h, tile, overlap):
    boxes = tile_boxes(w, h, tile, overlap)
    cover = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        cover[y0:y1, x0:x1] = True
    assert cover.all()
    if overlap == 0:
        assert len(boxes) == max(1, -(-w // tile)) * max(1, -(-h // tile))  # the fewest tiles that can cover it
    for length in (w, h):
        starts = tile_starts(length, tile, overlap)
        t = min(tile, length)
        shared = [t - (b - a) for a, b in zip(starts, starts[1:])]
        if shared:
            # every neighbour pair shares at least `overlap` pixels, evenly spread (within rounding) ...
            assert min(shared) >= overlap and max(shared) - min(shared) <= 1 and max(shared) < tile
            # ... and one tile fewer could not: its even spread would share less than `overlap`
            n = len(starts) - 1
            assert n == 1 or t - (length - t) / (n - 1) < overlap


def test_overlap_keeps_every_small_object_inside_one_tile():
    w, h, tile, overlap = 4908, 3264, 300, 60
    boxes = tile_boxes(w, h, tile, overlap)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        x, y = int(rng.integers(0, w - overlap)), int(rng.integers(0, h - overlap))
        assert any(x0 <= x and x + overlap <= x1 and y0 <= y and y + overlap <= y1 for x0, y0, x1, y1 in boxes)
    # at overlap 0 a square centred on the first tile's right edge is cut by every tile
    fewest = tile_boxes(w, h, tile, 0)
    left = tile - overlap // 2
    assert not any(x0 <= left and left + overlap <= x1 for x0, _, x1, _ in fewest)


def test_multilabel_run_and_scan(tmp_path, graphene_split, capsys):
    from ga.trainer import train

    # (an INT8 model kept whatever its agreement: --engine onnx-int8 is checked below)
    run = train(_ml_config(tmp_path, graphene_split, output={"int8": True, "int8_min_agreement": 0.0}),
                overrides=["training.epochs=2"])
    labels = json.load(open(os.path.join(run, "labels.json")))
    assert labels["task"] == "multilabel" and labels["classes"] == ["class1", "class2", "class3", "any"]
    assert labels["center_crop"] == [24, 24] and labels["input_size"] == [24, 24]
    assert set(labels["thresholds"]) == set(labels["classes"])
    m = json.load(open(os.path.join(run, "metrics.json")))
    assert "harmonic_mean_f1" in m and set(m["roc_auc"]) == set(labels["classes"])
    # Each multi-label figure has its interval: per-class F1, the harmonic mean, per-class AUC.
    assert len(m["harmonic_mean_f1_ci"]) == 2 and all(len(m["per_class"][c]["f1_ci"]) == 2 for c in labels["classes"])
    assert {c for c, v in m["roc_auc"].items() if v is not None} == {c for c, v in m["roc_auc_ci"].items() if v}
    for f in ("GCthreshold_sweep.png", "GCfinal_roc_auc.png", "GCweights.onnx", "predictions.csv"):
        assert os.path.isfile(os.path.join(run, f)), f
    frame, _ = syn.generate_wafer(str(tmp_path / "frame.png"), width=170, height=100, seed=2, n_flakes=2)
    out_dir = str(tmp_path / "scan")
    code = inference_main([frame, "--scan", "--tile", "24", "--model", run, "--out-dir", out_dir,
                           "--threshold", "0.0001"])
    assert code == 0
    rows = read_csv(os.path.join(out_dir, "frame_tiles.csv"))
    assert len(rows) == len(tile_boxes(170, 100, 24, default_overlap(24)))
    fired = [r for r in rows if r["fired"] == "1"]
    assert len(fired) == len(rows)  # a tiny threshold marks every tile
    assert len(os.listdir(os.path.join(out_dir, "frame_tiles"))) == len(fired)
    assert os.path.getsize(os.path.join(out_dir, "frame_scan.jpg")) > 0
    assert "tiles marked" in capsys.readouterr().out
    # The INT8 model scans and labels too (its labels read from the run, its file named in each row).
    assert inference_main([frame, "--scan", "--tile", "24", "--model", run, "--out-dir", str(tmp_path / "scan8"),
                           "--engine", "onnx-int8"]) == 0
    assert len(read_csv(os.path.join(tmp_path, "scan8", "frame_tiles.csv"))) == len(rows)
    table = str(tmp_path / "int8.csv")
    assert inference_main([os.path.join(graphene_split, "test"), "--model", run, "--engine", "onnx-int8",
                           "--output", table]) == 1  # the split's labels.csv is no image: its own error row
    got = read_csv(table)
    assert [os.path.basename(r["path"]) for r in got if r["error"]] == ["labels.csv"]
    got = [r for r in got if not r["error"]]
    assert got and {r["engine"] for r in got} == {"onnx-int8"} and got[0]["model_file"].endswith("GCweights_int8.onnx")
    assert {r["predicted"] for r in got} <= {";".join(c) for c in _subsets(labels["classes"])}


def _subsets(classes):
    from itertools import combinations

    return [c for n in range(len(classes) + 1) for c in combinations(classes, n)]


@pytest.mark.parametrize("argv, needle", [(["--scan", "--tile", "300", "--overlap", "300"], "--overlap"),
                                          (["--scan", "--overlap", "-1"], "--overlap"),
                                          (["--scan", "--tile", "0"], "--tile")])
def test_scan_options_out_of_range_exit_2(tmp_path, capsys, argv, needle):
    with pytest.raises(SystemExit) as exc:
        inference_main([str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and needle in err and err.count("\n") == 1


def test_label_review_of_a_multilabel_model_finds_a_planted_mislabel(tmp_path):
    """ga review on a multi-label model (two labels, each told by one colour channel): an image
    with `red` labelled without it ranks in the top 3, and labels.csv keeps the 0/1 columns
    with the suggestion applied."""
    rng = np.random.default_rng(0)
    combos = [(r, b) for r in (0, 1) for b in (0, 1)]
    for split, per in (("train", 10), ("valid", 4), ("test", 5)):
        folder = tmp_path / "split" / split
        folder.mkdir(parents=True)
        rows = ["filename,red,blue"]
        for i in range(per):
            for r, b in combos:
                img = np.stack([np.full((32, 32), 200 if r else 40), np.full((32, 32), 100),
                                np.full((32, 32), 200 if b else 40)], -1) + rng.normal(0, 20, (32, 32, 3))
                name = f"{split}_{i}_{r}{b}.png"
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / name)
                planted = split == "test" and i == 0 and (r, b) == (1, 0)
                rows.append(f"{name},{0 if planted else r},{b}")
        (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    cfg = tiny_config(tmp_path / "c.yaml", str(tmp_path / "split"), str(tmp_path / "runs"),
                      model={"task": "multilabel"}, data={"any_class": False}, training={"epochs": 12})
    run = run_here("main.py", "--config", cfg).stdout.strip().splitlines()[-1]
    run_here("-m", "ga", "review", tmp_path / "split" / "test", "--model", run, "--out-dir", tmp_path / "review",
             "--gradcam", "0", "--min-confidence", "0.5")
    ranked = read_csv(tmp_path / "review" / "review.csv")
    assert "test_0_10.png" in [os.path.basename(r["path"]) for r in ranked[:3]], ranked[:3]
    labels = {r["filename"]: r for r in read_csv(tmp_path / "review" / "labels.csv")}
    assert list(next(iter(labels.values()))) == ["filename", "red", "blue"] and len(labels) == 20
    assert (labels["test_0_10.png"]["red"], labels["test_0_10.png"]["blue"]) == ("1", "0")
