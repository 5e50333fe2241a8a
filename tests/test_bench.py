"""The benchmark runner works and writes the documented JSON (figures are not asserted)."""

import json
import os
import subprocess
import sys

from conftest import ROOT


def test_bench_quick_one_benchmark_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "run.py"), "--quick", "--only", "flops_fraction",
                           "--json", str(out), "--workdir", str(tmp_path / "work"),
                           "--set", "model.backbone=cnn4"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert set(doc) >= {"machine", "versions", "results"}
    r = doc["results"]["flops_fraction"]
    assert set(r) >= {"ours", "reference", "unit", "ratio"}
    assert r["ours"] > 0 and r["reference"] > 0 and abs(r["ratio"] - r["ours"] / r["reference"]) < 1e-2
    assert doc["machine"]["cpus"] >= 1 and doc["versions"]["tensorflow"]


def test_data_efficiency_script_runs_every_method(tmp_path):
    work = tmp_path / "de"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "data_efficiency.py"), "--workdir", str(work),
                           "--labelled", "40", "--unlabelled", "32", "--fractions", "0.5", "--pretrain-epochs", "1",
                           "--epochs", "2", "--steps", "1", "--size", "32", "--crop", "24",
                           "--pretrain-set", "data.batch_size=16",
                           "--figure", str(tmp_path / "f.png")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((work / "results.json").read_text())
    assert doc["pretraining"]["images"] == 32
    assert sorted(r["method"] for r in doc["runs"]) == ["fine_tune", "linear_eval", "scratch"]
    n_train = len([f for f in os.listdir(work / "split" / "train") if f.endswith(".png")])
    assert all(r["train_images"] == round(n_train * 0.5) and 0 <= r["harmonic_mean_f1"] <= 1 for r in doc["runs"])
    assert (tmp_path / "f.png").stat().st_size > 0
    assert (work / "table.md").read_text().startswith("| training images |")

    # The documented variants: given backbone weights (no pretraining), chosen methods and seed;
    # then a figure redrawn from saved results with a second set beside them.
    other = tmp_path / "de_seed7"
    backbone = os.path.join(doc["pretraining"]["run"], "GSbackbone.weights.h5")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "data_efficiency.py"), "--workdir", str(other),
                           "--labelled", "40", "--unlabelled", "32", "--seed", "7", "--fractions", "0.5",
                           "--methods", "linear_eval", "--backbone", backbone, "--epochs", "2", "--steps", "1",
                           "--size", "32", "--crop", "24", "--figure", str(tmp_path / "f2.png")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    second = json.loads((other / "results.json").read_text())
    assert "pretraining" not in second and [r["method"] for r in second["runs"]] == ["linear_eval"]
    assert second["settings"]["seed"] == 7
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "data_efficiency.py"), "--workdir", str(work),
                           "--plot-only", "--also", str(other / "results.json"), "--figure", str(tmp_path / "f3.png")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"figure: {tmp_path / 'f3.png'}" in proc.stdout and (tmp_path / "f3.png").stat().st_size > 0
