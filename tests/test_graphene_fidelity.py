"""What a user of the graphene study's code brings and expects, run from the shell: its dataset
folder (training_images/ + per-image <name>-labels.csv, TIFF among the images), a run started
from a whole trained model, and the scan's binary models, rectangular tiles and `any` rule."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, make_separable_split, tiny_config
from helpers import one_error_line, read_csv, run_here
from ga import synthetic as syn
from ga.errors import GAError
from ga.scan import marking, tile_boxes


def write_graphene_layout(root, count=48, seed=5):
    """The study's dataset folder from synthetic flakes: 80% under training_*, the rest under
    validation_*; labels one line "1,0,1" or numpy.savetxt's one value per line; every
    eighth image an 8-bit RGB TIFF, every eighth (offset 4) a 16-bit grey TIFF."""
    src = syn.generate_graphene(str(root / "flakes"), count=count, size=64, seed=seed)
    labels = {r["filename"]: [int(r[c]) for c in ("class1", "class2", "class3")] for r in read_csv(f"{src}/labels.csv")}
    tiffs = []
    for i, (name, y) in enumerate(sorted(labels.items())):
        part = "training" if i < int(count * 0.8) else "validation"
        images, label_dir = root / "dataset" / f"{part}_images", root / "dataset" / f"{part}_labels"
        images.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(exist_ok=True)
        stem = name.split(".")[0]
        img = Image.open(os.path.join(src, name))
        if i % 8 == 0:
            img.save(images / f"{stem}.tif")
            tiffs.append(f"{stem}.tif")
        elif i % 8 == 4:
            grey = np.asarray(img.convert("L")).astype(np.uint16) * 257
            Image.fromarray(grey).save(images / f"{stem}.tif")  # 16-bit greyscale TIFF
            tiffs.append(f"{stem}.tif")
        else:
            shutil.copy(os.path.join(src, name), images / name)
        if i % 2:
            np.savetxt(label_dir / f"{stem}-labels.csv", np.array(y, float))
        else:
            (label_dir / f"{stem}-labels.csv").write_text(",".join(map(str, y)) + "\n")
    return root / "dataset", labels, tiffs


@pytest.fixture(scope="module")
def original_layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("layout")
    os.symlink(os.path.join(ROOT, "configs"), root / "configs")
    dataset, labels, tiffs = write_graphene_layout(root)
    split = run_here("split_data.py", "--source", "dataset", "--dest", "data/split", "--ratios", "0.6", "0.2", "0.2",
                "--no-progress", cwd=root)
    train = run_here("main.py", "--config", "configs/graphene_cnn4.yaml", "--set", "data.split_root=data/split",
                "--set", "data.image_size=[48,48]", "--set", "data.augment.crop=[36,36]", "--set", "data.batch_size=8",
                "--set", "training.epochs=2", "--set", "output.onnx=false", cwd=root)
    return root, labels, tiffs, split, train, train.stdout.strip().splitlines()[-1]


def test_the_studys_dataset_folder_splits_with_its_labels(original_layout):
    root, labels, tiffs, split, _, _ = original_layout
    placed = {}
    for s in ("train", "valid", "test"):
        for r in read_csv(root / f"data/split/{s}/labels.csv"):
            placed[r["filename"]] = [int(r[c]) for c in ("class1", "class2", "class3")]
            assert os.path.isfile(root / f"data/split/{s}" / r["filename"])
    # every image of both folders, under its own name, with the labels of its -labels.csv
    assert len(placed) == len(labels)
    for name, y in labels.items():
        stem = name.split(".")[0]
        got = placed.get(name, placed.get(f"{stem}.tif"))
        assert got == y, name
    assert set(tiffs) <= set(placed)


def test_the_studys_dataset_folder_trains_on_tiff_and_evaluates(original_layout):
    root, labels, tiffs, _, train, run_dir = original_layout
    run_dir = os.path.join(root, run_dir)
    log = open(os.path.join(run_dir, "train.log")).read()
    assert "skipped" not in log  # the TIFF images (8- and 16-bit) are read, not skipped
    counted = sum(len(read_csv(root / f"data/split/{s}/labels.csv")) for s in ("train",))
    assert f"train: {counted} images" in train.stderr
    doc = json.load(open(os.path.join(run_dir, "labels.json")))
    assert doc["classes"] == ["class1", "class2", "class3", "any"]
    history = read_csv(os.path.join(run_dir, "history.csv"))
    assert [float(r["lr"]) for r in history] == pytest.approx([3e-4, 3e-4])  # the config's constant rate
    ev = run_here("inference.py", "data/split/test", "--evaluate", "--model", run_dir, "--out-dir", "eval", cwd=root)
    metrics = json.load(open(root / "eval/metrics.json"))
    assert metrics["test_images"] == len(read_csv(root / "data/split/test/labels.csv"))
    assert "F1" in ev.stdout or "f1" in ev.stdout


def test_a_label_file_with_other_values_is_one_line(tmp_path):
    dataset, _, _ = write_graphene_layout(tmp_path, count=10)
    bad = sorted((dataset / "training_labels").iterdir())[0]
    bad.write_text("1,0,2\n")
    proc = run_here("split_data.py", "--source", dataset, "--dest", tmp_path / "split", "--no-progress", cwd=tmp_path,
               expect=2)
    assert bad.name in one_error_line(proc) and "0 or 1" in proc.stderr


def test_init_weights_starts_from_a_whole_trained_model(trained_run, separable_split, tmp_path):
    import keras

    cfg = tiny_config(tmp_path / "c.yaml", separable_split, str(tmp_path / "runs"),
                      training={"epochs": 1, "learning_rate": 1e-9}, output={"onnx": False})
    proc = run_here("main.py", "--config", cfg, "--set", f"model.init_weights={trained_run}", cwd=tmp_path)
    new = proc.stdout.strip().splitlines()[-1]
    assert f"model weights initialised from {trained_run}" in open(os.path.join(new, "train.log")).read()
    before = keras.models.load_model(os.path.join(trained_run, "GAmodel.keras"))
    after = keras.models.load_model(os.path.join(new, "GAmodel.keras"))
    kernels = [w.path for w in before.weights if w.path.endswith("kernel")]
    for name in kernels:  # one epoch at lr 1e-9 moved nothing: the run started from those weights
        np.testing.assert_allclose(_weight(before, name), _weight(after, name), atol=1e-6)
    # ... and a run folder of another architecture is one line, exit 2
    mismatch = run_here("main.py", "--config", cfg, "--set", f"model.init_weights={trained_run}",
                   "--set", "model.head.units=[8]", cwd=tmp_path, expect=2)
    assert "model.init_weights" in one_error_line(mismatch) and "does not fit" in mismatch.stderr
    missing = run_here("main.py", "--config", cfg, "--set", "model.init_weights=nowhere/GAmodel.keras", cwd=tmp_path,
                  expect=2)
    assert "model.init_weights: not found" in one_error_line(missing)


def _weight(model, path):
    return next(np.asarray(w) for w in model.weights if w.path == path)


def test_binary_model_scans_rectangular_tiles_with_the_any_rule(trained_run, tmp_path):
    frame = tmp_path / "frame.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (70, 130, 3), dtype=np.uint8)).save(frame)
    threshold = json.load(open(os.path.join(trained_run, "labels.json")))["thresholds"]["pg"]
    for rule, cut in (("any", 0.5), ("classes", threshold)):
        out = tmp_path / rule
        proc = run_here("inference.py", frame, "--scan", "--tile", "40", "24", "--rule", rule, "--model", trained_run,
                   "--out-dir", out, cwd=tmp_path)
        tiles = read_csv(out / "frame_tiles.csv")
        boxes = [tuple(int(t[k]) for k in ("x0", "y0", "x1", "y1")) for t in tiles]
        assert boxes == tile_boxes(130, 70, (40, 24), 24 // 5)
        assert {(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes} == {(40, 24)}
        cover = np.zeros((70, 130), bool)
        for x0, y0, x1, y1 in boxes:
            cover[y0:y1, x0:x1] = True
        assert cover.all()
        assert list(tiles[0]) == ["x0", "y0", "x1", "y1", "fired", "p_pg"]
        assert [t["fired"] == "1" for t in tiles] == [float(t["p_pg"]) > cut for t in tiles]
        assert f"{sum(t['fired'] == '1' for t in tiles)} of {len(tiles)} tiles marked" in proc.stdout


def test_scan_rules_refuse_models_they_cannot_read():
    ml = {"task": "multilabel", "classes": ["class1", "class2"], "thresholds": {"class1": 0.5, "class2": 0.5}}
    with pytest.raises(GAError, match="has none"):
        marking(ml, "any")
    fired = marking({**ml, "classes": ["class1", "any"], "thresholds": {"class1": 0.3, "any": 0.9}}, "any", 0.6)
    assert fired(np.array([[0.0, 0.7], [1.0, 0.5]])).tolist() == [True, False]  # the last output only
    with pytest.raises(GAError, match="multi-label or binary"):
        marking({"task": "multiclass", "classes": ["a", "b", "c"], "thresholds": {}}, "classes")


def test_tile_option_takes_one_or_two_sizes(tmp_path):
    make_separable_split(str(tmp_path / "s"), counts={"test": (1, 1)})
    proc = run_here("inference.py", tmp_path / "s", "--scan", "--tile", "4", "5", "6", cwd=tmp_path, expect=2)
    assert "--tile" in proc.stderr and "Traceback" not in proc.stderr
