"""The data-efficiency script (a research script: every method takes minutes even at toy size,
`pytest --long`; one method in the default suite) runs every method and its documented variants, and redraws its figure (figures are not
asserted). The benchmark runner is run by test_chains.py::test_bench_only_command."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from helpers import run_here


def test_data_efficiency_script_from_scratch_and_redrawn(tmp_path):
    """The default suite's run of the script (in-process; its trainings are main.py processes):
    the from-scratch method alone needs no pretraining, then the figure is redrawn from the saved
    results with a second set beside it (every method: the --long tests below)."""
    work = tmp_path / "de"
    tiny = ["--labelled", "40", "--fractions", "0.5", "--epochs", "1", "--steps", "1", "--size", "32", "--crop", "24"]
    proc = run_here("scripts/data_efficiency.py", "--workdir", work, "--methods", "scratch", *tiny,
                    "--figure", tmp_path / "f.png")
    doc = json.loads((work / "results.json").read_text())
    assert "pretraining" not in doc and [r["method"] for r in doc["runs"]] == ["scratch"]
    n_train = len([f for f in os.listdir(work / "split" / "train") if f.endswith(".png")])
    assert doc["runs"][0]["train_images"] == round(n_train * 0.5) and "harmonic-mean F1" in proc.stdout
    assert (work / "table.md").read_text().startswith("| training images |")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**doc, "runs": [{**doc["runs"][0], "method": "linear_eval"}]}))
    proc = run_here("scripts/data_efficiency.py", "--workdir", work, "--plot-only", "--also", other,
                    "--figure", tmp_path / "f2.png")
    assert f"figure: {tmp_path / 'f2.png'}" in proc.stdout and (tmp_path / "f2.png").stat().st_size > 0


@pytest.mark.long
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

    # A figure redrawn from saved results, a second set drawn beside them.
    proc = _data_efficiency(work, "--plot-only", "--also", str(work / "results.json"), "--figure", str(tmp_path / "f3.png"))
    assert f"figure: {tmp_path / 'f3.png'}" in proc.stdout and (tmp_path / "f3.png").stat().st_size > 0


def _data_efficiency(work, *args):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "data_efficiency.py"), "--workdir", str(work),
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.mark.long
def test_data_efficiency_variants(tmp_path):
    """The documented variants: chosen methods with a pretraining setting; given backbone
    weights (no pretraining) with another seed."""
    tiny = ["--labelled", "40", "--unlabelled", "32", "--fractions", "0.5", "--epochs", "2", "--steps", "1",
            "--size", "32", "--crop", "24"]
    first = tmp_path / "nocolor"
    _data_efficiency(first, *tiny, "--methods", "linear_eval", "fine_tune", "--pretrain-epochs", "1",
                     "--pretrain-set", "data.batch_size=16", "--pretrain-set", "contrastive.color_prob=0",
                     "--figure", str(tmp_path / "f1.png"))
    doc = json.loads((first / "results.json").read_text())
    assert sorted(r["method"] for r in doc["runs"]) == ["fine_tune", "linear_eval"]
    assert "contrastive.color_prob=0" in doc["settings"]["pretrain_set"]
    other = tmp_path / "seed7"
    backbone = os.path.join(doc["pretraining"]["run"], "GSbackbone.weights.h5")
    _data_efficiency(other, *tiny, "--seed", "7", "--methods", "linear_eval", "--backbone", backbone,
                     "--figure", str(tmp_path / "f2.png"))
    second = json.loads((other / "results.json").read_text())
    assert "pretraining" not in second and [r["method"] for r in second["runs"]] == ["linear_eval"]
    assert second["settings"]["seed"] == 7
