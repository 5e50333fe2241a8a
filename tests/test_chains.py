"""The documented chains that need no shared fixture, run as a user runs them, each in its own
scratch clone: `python -m ga` from synthetic data to a report, a labels.csv dataset, the
Python API page's blocks, three classes, the study's .h5 weights in a ga model, and the bench
and figure scripts. The rules are test_commands.py's (fresh interpreters, real argv and exit
codes, no network); its docstring lists which documented command each test runs. A file of
its own, so that pytest-xdist can run it beside test_commands.py's fixtures."""

import ast
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from helpers import error_lines, read_csv, run_here
from test_commands import TINY_CRYSTALS, Workspace, images_under, study_model_h5


def test_study_weights_land_in_the_ga_model(tmp_path):
    """The import's weight mapping (ResNet layers by name, head layers in order, caffe
    preprocessing moved inside) reproduces the study's preprocess_input + predict."""
    from tf_keras.applications.resnet50 import preprocess_input

    import ga
    from ga.georgia import copy_study_weights, read_h5_weights, study_config
    from ga.model import batch_predictor, build_model

    ga.register()
    h5 = str(tmp_path / "GAweights.h5")
    study = study_model_h5(h5)
    batch = np.random.default_rng(1).uniform(0, 255, (4, 224, 224, 3)).astype(np.float32)
    want = study.predict(preprocess_input(batch.copy()), verbose=0)[:, 0]
    assert want.std() > 1e-3
    model = build_model(study_config(224), 1)
    names, weights = read_h5_weights(h5)
    copy_study_weights(model, names, weights, h5)
    assert np.abs(batch_predictor(model)(batch)[:, 0] - want).max() <= 1e-4


def test_ga_command_chain(tmp_path):
    """synth, split, train, report with `python -m ga` in a scratch clone."""
    ws = Workspace(tmp_path)
    ws.run("python -m ga synth crystals --out data/archive --per-class 300", "--per-class", "20")
    assert len(os.listdir(ws / "data/archive/cropped/cropped/pg")) == 20
    split = ws.run("python -m ga split --source data/archive/cropped/cropped --dest data/split", "--no-progress")
    assert "split (done)" in split.stdout and len(read_csv(ws / "data/split/manifest.csv")) == 40
    run = ws.printed(ws.run("python -m ga train --config demo", *TINY_CRYSTALS))
    first = open(os.path.join(run, "report.html"), encoding="utf-8").read()
    os.remove(os.path.join(run, "report.html"))
    proc = ws.run("python -m ga report deliverables/<run>", subs={"deliverables/<run>": run})
    assert ws.printed(proc) == os.path.join(run, "report.html")
    assert open(os.path.join(run, "report.html"), encoding="utf-8").read() == first  # rebuilt from the folder alone
    bad = ws.run("python -m ga import", "missing.h5", "--out", "deliverables/x", expect=2)
    assert error_lines(bad) == ["error: not found: missing.h5"]
    bad = ws.run("python -m ga split --source data/archive/cropped/cropped --dest data/split", "--ratios", "0.5", "0.5",
                 "0.5", "--dest", "data/other", expect=2)
    assert error_lines(bad)[0].startswith("error: --ratios: must be three")


def _labels_csv_dataset(ws, per_class=24):
    """data/labelled: flat images and a labels.csv naming each one's class (filename,label)."""
    ws.run("python -m ga.synthetic crystals --out data/raw --per-class 300", "--per-class", str(per_class))
    folder = ws / "data/labelled"
    folder.mkdir(parents=True)
    rows = []
    for cls in ("cex", "pg"):
        for i, p in enumerate(sorted(images_under(ws / "data/raw/cropped/cropped" / cls))):
            name = f"img_{cls}_{i:03d}.png"
            shutil.copy(p, folder / name)
            rows.append(f"{name},{cls}")
    random_order = np.random.default_rng(0).permutation(len(rows))
    (folder / "labels.csv").write_text("filename,label\n" + "".join(rows[i] + "\n" for i in random_order))
    return folder


def test_binary_labels_csv_chain(tmp_path):
    """A binary dataset given as images + labels.csv (filename,label) splits, trains and
    evaluates from the shell, each split keeping a labels.csv."""
    ws = Workspace(tmp_path)
    _labels_csv_dataset(ws)
    ws.run("python split_data.py --source data/labelled --dest data/split_labelled", "--no-progress")
    for s in ("train", "valid", "test"):
        rows = read_csv(ws / f"data/split_labelled/{s}/labels.csv")
        assert rows and set(rows[0]) == {"filename", "label"} and {r["label"] for r in rows} == {"cex", "pg"}
        assert all(r["filename"].split("_")[1] == r["label"] for r in rows)
        assert not os.path.isdir(ws / f"data/split_labelled/{s}/cex")
    run = ws.printed(ws.run("python main.py --config configs/demo.yaml --set data.split_root=data/split_labelled",
                            *TINY_CRYSTALS))
    labels = json.load(open(os.path.join(run, "labels.json")))
    assert labels["task"] == "binary" and labels["classes"] == ["cex", "pg"]
    want = json.load(open(os.path.join(run, "metrics.json")))
    test_rows = read_csv(ws / "data/split_labelled/test/labels.csv")
    assert want["test_images"] == len(test_rows)
    assert want["per_class"]["pg"]["support"] == sum(r["label"] == "pg" for r in test_rows)
    # The float32 engine, named: the run's figures are float32's (the INT8 engine's: test_commands.py)
    ws.run("python inference.py data/split_labelled/test --evaluate --model deliverables/<run> --out-dir eval",
           "--engine", "onnx", subs={"deliverables/<run>": run})
    got = json.load(open(ws / "eval/metrics.json"))
    for key in ("classes", "test_images", "accuracy", "per_class", "confusion_matrix", "accuracy_ci", "roc_auc_ci"):
        assert got[key] == want[key], key  # the intervals too: the same images, groups and resamples
    assert got["uncertainty"]["groups_from"] == os.path.abspath(ws / "data/split_labelled/manifest.csv")
    # A class the model does not know, in a labels.csv: one line naming the line.
    odd = tmp_path / "odd"
    odd.mkdir()
    shutil.copy(ws / "data/split_labelled/test" / test_rows[0]["filename"], odd / "a.png")
    (odd / "labels.csv").write_text("filename,label\na.png,needles\n")
    bad = ws.run("python inference.py", odd, "--evaluate", "--model", run, expect=2, here=True)
    (line,) = error_lines(bad)
    assert "line 2" in line and "'needles'" in line and "['cex', 'pg']" in line


# Applied to docs/api.md's Python blocks so they run in seconds (each must still be in them).
PY_SHRINK = {
    "per_class=800": "per_class=20",
    'training={"epochs": 5}': 'training={"epochs": 2}, data={"image_size": [32, 32], "batch_size": 8}',
}


def test_the_api_page_python_blocks_run(tmp_path):
    text = open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8").read()
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)
    assert len(blocks) >= 2
    code = "\n".join(blocks)
    for k, v in PY_SHRINK.items():
        assert k in code, k
        code = code.replace(k, v)
    ws = Workspace(tmp_path)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ws.path, env=ws.env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.splitlines()
    counts = ast.literal_eval(out[0])  # {class: {split: images}}, as split_data.py writes them
    assert {c: sum(n.values()) for c, n in counts.items()} == {"cex": 20, "pg": 20}
    assert counts == {c: {s: sum(r["split"] == s and r["class"] == c for r in read_csv(ws / "data/split/manifest.csv"))
                          for s in ("train", "valid", "test")} for c in ("cex", "pg")}
    (run,) = ws.runs("GA_")
    assert out[1].split()[0] == os.path.relpath(run, ws.path) and out[1].endswith("['cex', 'pg']")
    assert "'path': 'data/split/test/" in out[2] and "'error': ''" in out[2]
    assert out[-2] in ("cex", "pg")  # the array's label
    accuracy, f1 = map(float, out[-1].split())
    assert json.load(open(ws / "eval/metrics.json"))["accuracy"] == accuracy


def test_help_shows_the_typed_api():
    proc = subprocess.run([sys.executable, "-c", "import ga; help(ga.train)"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PAGER": "cat"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    first = proc.stdout.split("\n\n")[1] if "Help on" in proc.stdout else proc.stdout
    assert "config: " in first and "resume: " in first and "-> " in first and "Run" in first, first


def test_multiclass_chain(tmp_path):
    ws = Workspace(tmp_path)
    ws.run("python -m ga.synthetic crystals --out data/archive_multiclass --per-class 800 --classes cex,pg,plate "
           "--seed 0", "--per-class", "25")
    ws.run("python split_data.py --config configs/demo_multiclass.yaml")
    assert sorted(os.listdir(ws / "data/split_multiclass/train")) == ["cex", "pg", "plate"]
    run = ws.printed(ws.run("python main.py --config configs/demo_multiclass.yaml", *TINY_CRYSTALS))
    labels = json.load(open(os.path.join(run, "labels.json")))
    assert labels["task"] == "multiclass" and labels["classes"] == ["cex", "pg", "plate"]
    assert np.array(json.load(open(os.path.join(run, "metrics.json")))["confusion_matrix"]).shape == (3, 3)
    ws.run("python inference.py data/split_multiclass/test --recursive --output data/multiclass_predictions.csv")
    rows = read_csv(ws / "data/multiclass_predictions.csv")
    assert rows and {"p_cex", "p_pg", "p_plate"} <= set(rows[0])
    assert {r["predicted"] for r in rows} <= {"cex", "pg", "plate"}


def test_imbalanced_chain(tmp_path):
    """In-process: the same argv through the same entry functions (each script and module runs
    from a shell in the demo chain)."""
    ws = Workspace(tmp_path)
    # The documented 800:80, shrunk to 60:6 (single PG copies, so the six form six groups).
    ws.run("python -m ga.synthetic crystals --out data/archive_imbalanced --per-class 800 --classes cex,pg:80 "
           "--seed 0", "--per-class", "60", "--classes", "cex,pg:6", "--pg-copies", "1", here=True)
    assert [len(os.listdir(ws / f"data/archive_imbalanced/cropped/cropped/{c}")) for c in ("cex", "pg")] == [60, 6]
    ws.run("python split_data.py --source data/archive_imbalanced/cropped/cropped --dest data/split_imbalanced",
           "--no-progress", here=True)
    run = ws.printed(ws.run("python main.py --config configs/demo.yaml --set data.split_root=data/split_imbalanced "
                            "--set training.class_weight=balanced", *TINY_CRYSTALS, "--set", "output.int8=false",
                            "--set", "output.saved_model=false", here=True))
    fit = json.load(open(os.path.join(run, "run.json")))["fit"]
    counts = json.load(open(os.path.join(run, "run.json")))["data"]["images_per_class"]["train"]
    total = sum(counts.values())
    assert fit["class_weight"] == pytest.approx({c: total / (2 * n) for c, n in counts.items()})
    assert "imbalanced training split" in open(os.path.join(run, "train.log")).read()


def test_split_bench_command(tmp_path):
    ws = Workspace(tmp_path / "ws")
    proc = ws.run("python bench/split_bench.py", "--count", "120", "--workdir", tmp_path / "bench")
    assert re.search(r"split 120 files in [\d.]+ s \(\d+ files/s\)", proc.stdout), proc.stdout


def test_multi_worker_bench_on_one_way_in_process(tmp_path):
    """bench/multi_worker.py timing one single-process way, in-process (its training is a main.py
    process): the figures of that way, no all-reduce (every way from a shell: the test below, --long)."""
    out = tmp_path / "mw.json"
    proc = run_here("bench/multi_worker.py", "--ways", "one_2_cores", "--per-class", "20", "--size", "32", "--epochs", "2",
                    "--workdir", tmp_path / "work", "--json", out, "--timeout", "300", cwd=ROOT)
    doc = json.load(open(out))
    assert set(doc["ways"]) == {"one_2_cores"} and "allreduce_gradient_s" not in doc
    w = doc["ways"]["one_2_cores"]
    assert w["images_per_s"] > 0 and w["step_s"] > 0 and doc["trainable_weights"] > 1000
    assert "1 process, 2 compute threads" in proc.stdout and "all-reduce" not in proc.stdout


@pytest.mark.long  # five short trainings and two two-worker runs
def test_multi_worker_bench_command(tmp_path):
    ws = Workspace(tmp_path / "ws")
    out = tmp_path / "mw.json"
    proc = ws.run("python bench/multi_worker.py", "--per-class", "20", "--size", "32", "--epochs", "2",
                  "--workdir", tmp_path / "work", "--json", out, "--timeout", "120")
    assert "2 workers, 1 compute thread each" in proc.stdout and "all-reduce between two workers" in proc.stdout
    doc = json.load(open(out))
    assert set(doc["ways"]) == {"one_2_cores", "two_1_core", "two_1_core_unsync_bn", "two_2_cores",
                                "one_1_core_half_batch"}
    assert all(w["images_per_s"] > 0 and w["step_s"] > 0 for w in doc["ways"].values())
    assert 0 < doc["allreduce_one_float_s"] and doc["trainable_weights"] > 1000


def test_figure_scripts(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.run("python scripts/synthetic_figure.py", "--out", tmp_path / "samples.png")
    assert Image.open(tmp_path / "samples.png").size[0] > 200
    real = tmp_path / "real"
    real.mkdir()
    rng = np.random.default_rng(0)
    for name, level in (("CEX (1).png", 90), ("PG (1).png", 140)):
        Image.fromarray(np.clip(rng.normal(level, 30, (64, 64)), 0, 255).astype(np.uint8)).save(real / name)
    proc = ws.run("python scripts/compare_real.py --real path/to/real/crops", "--real", real, "--n", "4",
                  "--out", tmp_path / "cmp.png")
    assert "real cex" in proc.stdout and "synthetic pg" in proc.stdout
    assert os.path.isfile(tmp_path / "cmp.png")


def test_bench_quick_json_in_process(tmp_path):
    """bench/run.py's --quick, --json and --only on one small figure, in-process (the same argv
    from a shell, on four figures: the test below, --long)."""
    out = tmp_path / "b.json"
    proc = run_here("bench/run.py", "--quick", "--json", out, "--only", "inference", "--workdir", tmp_path / "work",
                    "--set", "model.backbone=cnn4", "--set", "model.trainable_fraction=1.0")
    doc = json.load(open(out))
    assert doc["quick"] is True and set(doc["results"]) == {"inference"}
    r = doc["results"]["inference"]
    assert r["ours"] > 0 and r["reference"] > 0 and r["ratio"] == pytest.approx(r["ours"] / r["reference"], rel=1e-2)
    assert re.match(r"inference +ours +[\d.]+ +reference", proc.stdout)


@pytest.mark.long  # about 45 s; the bench entry's other commands: test_precision_bench_command, test_split_bench_command
def test_bench_only_command(tmp_path):
    ws = Workspace(tmp_path / "ws")
    out = tmp_path / "b.json"
    ws.run(".venv/bin/python bench/run.py --only eval inference", "train_bf16", "inference_int8", "--quick", "--json",
           out, "--workdir", tmp_path / "work", "--set", "model.backbone=cnn4", "--set", "model.trainable_fraction=1.0")
    doc = json.load(open(out))
    assert set(doc) >= {"machine", "versions", "results"} and doc["quick"] is True
    assert set(doc["results"]) == {"eval", "inference", "train_bf16", "inference_int8"}
    for r in doc["results"].values():
        assert set(r) >= {"ours", "reference", "unit", "ratio"} and r["ours"] > 0 and r["reference"] > 0
        higher = r["unit"] != "s"
        assert abs(r["ratio"] - (r["ours"] / r["reference"] if higher else r["reference"] / r["ours"])) < 1e-2


def test_precision_bench_command(tmp_path):
    """bench/precision.py's figures on the small model: every key, the CPU's units named."""
    ws = Workspace(tmp_path)
    proc = ws.run("python bench/precision.py", "--quick", "--json", "p.json", timeout=900)
    doc = json.load(open(ws / "p.json"))
    assert proc.stdout.startswith("CPU low-precision units: bfloat16 ")
    assert set(doc["keras"]) == {"float32", "mixed_bfloat16"} and all(v > 0 for v in doc["matmul_gflops"].values())
    assert all(set(k) == {"train", "train_folded", "forward", "forward_folded"} for k in doc["keras"].values())
    assert set(doc["matmul_gflops"]) == {"float32", "bfloat16", "int8"}  # INT8: ONNX Runtime at least
    assert {"onnx_float32", "onnx_int8", "keras_one_per_call", "openvino", "openvino_int8"} <= set(doc["onnx"])
    assert {"train_bf16_vs_f32", "train_bf16_folded_vs_f32", "forward_bf16_vs_f32", "onnx_int8_vs_f32",
            "onnx_int8_vs_one_per_call", "best_int8_vs_onnx_f32"} <= set(doc["ratios"])
    assert doc["forward_gflop_per_image"] > 0 and 0 < doc["flops_fraction"]["onnx_float32"]


# The documented loop from a probe's frames to a model that monitors them, as written there.
LOOP = ["python -m ga synth process --out data/frames --frames 60 --seed 2",
        "python -m ga monitor data/frames --save-crops data/crops --cluster 2",
        "mkdir data/classes",
        "mv data/crops/cluster_<k> data/classes/pg",
        "mv data/crops/cluster_<j> data/classes/cex",
        "python split_data.py --source data/classes --dest data/crops_split",
        "python main.py --config configs/demo.yaml --set data.split_root=data/crops_split",
        "python -m ga monitor data/frames --calibrate --out-dir data/calibration",
        "python -m ga monitor data/frames --model deliverables/<run> --config data/calibration/monitor.yaml "
        "--out-dir data/loop_monitor",
        "python -m ga monitor data/frames --save-crops data/crops_by_model --cluster 2 --model deliverables/<run>"]


# With --long the loop's model also watches another run, bright-field at half scale (in the default
# suite: calibration on such a run in test_truth.py, crops turned over in test_monitor_units.py).
@pytest.mark.parametrize("other_run", [False, pytest.param(True, marks=pytest.mark.long)])
def test_readme_labelling_loop(tmp_path, other_run):
    """Frames -> crops in two clusters -> class folders -> split -> train -> calibrate ->
    monitor, from a shell (12 frames, a small model), then the crops clustered again by the
    model's features. The person who looks at the clusters is stood in for by the truth: the
    cluster holding more PG crops becomes pg."""
    from ga.monitoring.outputs import score_against_truth
    from ga.monitoring.truth import box_iou

    ws = Workspace(tmp_path)
    ws.run(LOOP[0], "--frames", "12")
    ws.run(LOOP[1])
    truth = {}
    for r in read_csv(ws / "data/frames/truth/particles.csv"):
        truth.setdefault(r["frame"], []).append((tuple(int(r[k]) for k in ("x0", "y0", "x1", "y1")), r["class"]))
    pg = {}
    for c in read_csv(ws / "data/crops/crops.csv"):
        box = tuple(int(c[k]) for k in ("x0", "y0", "x1", "y1"))
        best = max(truth.get(c["frame"], []), key=lambda t: box_iou(box, t[0]))
        pg.setdefault(c["cluster"], []).append(best[1] == "pg")
    assert sorted(pg) == ["0", "1"]
    k = max(pg, key=lambda c: np.mean(pg[c]))
    for command in LOOP[2:5]:
        command = command.replace("<k>", k).replace("<j>", str(1 - int(k)))
        assert subprocess.run(command, shell=True, cwd=ws.path).returncode == 0, command
    ws.run(LOOP[5], "--no-progress")
    run = ws.printed(ws.run(LOOP[6], *TINY_CRYSTALS, "--set", "data.image_size=[48,48]", "--set", "output.int8=false",
                            "--set", "output.saved_model=false", "--set", "output.explain=false",
                            "--set", "training.deterministic=true", "-q"))
    with open(os.path.join(run, "labels.json"), encoding="utf-8") as fh:
        assert json.load(fh)["crop_polarity"] == "bright"
    ws.run(LOOP[7])
    assert os.path.isfile(ws / "data/calibration/monitor.yaml")
    ws.run(LOOP[8], subs={"deliverables/<run>": run})
    score = score_against_truth(str(ws / "data/frames"), str(ws / "data/loop_monitor"))
    assert score["frames"] == 12 and score["recall"] >= 0.9 and score["precision"] >= 0.9, score
    # on the frames its crops came from (measured: 0.996 and 0.005)
    assert score["class_accuracy"] >= 0.95 and score["fraction_mae"] <= 0.05, score
    # the same model on another run drawn bright-field at half scale: calibrated, its crops
    # turned over for the model (it learned bright particles), the fraction as close
    if other_run:
        _watch_another_run(ws, run)
    # the model's features sort the crops by class: each cluster at least 90% one class (measured:
    # 452 cex + 2 pg, 3 cex + 58 pg)
    proc = ws.run(LOOP[9], subs={"deliverables/<run>": run})
    assert "in 2 clusters" in proc.stdout
    by = {}
    for c in read_csv(ws / "data/crops_by_model/crops.csv"):
        box = tuple(int(c[k]) for k in ("x0", "y0", "x1", "y1"))
        best = max(truth.get(c["frame"], []), key=lambda t: box_iou(box, t[0]))
        if box_iou(box, best[0]) >= 0.5:
            by.setdefault(c["cluster"], []).append(best[1])
    assert sorted(by) == ["0", "1"]
    assert {max(set(v), key=v.count) for v in by.values()} == {"cex", "pg"}
    assert all(max(v.count("cex"), v.count("pg")) >= 0.9 * len(v) for v in by.values()), \
        {k: (v.count("cex"), v.count("pg")) for k, v in by.items()}


def _watch_another_run(ws, run):
    from ga.monitoring.outputs import score_against_truth

    ws.run("python -m ga synth process --out data/other --frames 8 --seed 5 --scale 0.5 --polarity dark")
    ws.run("python -m ga monitor data/other --calibrate --out-dir data/other_cal")
    proc = ws.run("python -m ga monitor data/other --model deliverables/<run> --config data/other_cal/monitor.yaml "
                  "--out-dir data/other_monitor", subs={"deliverables/<run>": run})
    assert "turned over" in proc.stderr
    other = score_against_truth(str(ws / "data/other"), str(ws / "data/other_monitor"))
    assert other["recall"] >= 0.85 and other["class_accuracy"] >= 0.95 and other["fraction_mae"] <= 0.05, other
