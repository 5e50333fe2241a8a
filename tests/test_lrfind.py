"""The learning-rate finder: `main.py --config X --lr-find` from a shell, and its rules."""

import json
import os
import shlex

import numpy as np

from conftest import tiny_config
from helpers import one_error_line, read_csv, run_here, run_script
from ga.lrfind import rates, smooth, suggest, valley


def test_lr_find_from_a_shell(separable_split, tmp_path):
    """SGD on the tiny CNN over a range wide enough to diverge: the files, a CSV monotone in
    rate, a suggestion inside the swept range, and a printed command that parses."""
    runs = tmp_path / "runs"
    cfg = tiny_config(tmp_path / "c.yaml", separable_split, str(runs), training={"optimizer": "sgd"},
                      model={"head": {"batch_norm": [True]}})
    proc = run_script("main.py", "--config", cfg, "--lr-find", "--lr-steps", "40", "--lr-range", "1e-3", "1e6",
                      "--set", "data.batch_size=4")
    lines = proc.stdout.strip().splitlines()
    folder = lines[-1]
    assert os.path.dirname(folder) == str(runs) and folder.endswith("_lr_find")
    assert sorted(os.listdir(folder)) == ["config.yaml", "lr_find.csv", "lr_find.json", "lr_find.png"]
    rows = read_csv(os.path.join(folder, "lr_find.csv"))
    lrs = [float(r["learning_rate"]) for r in rows]
    assert [int(r["step"]) for r in rows] == list(range(1, len(rows) + 1))
    assert all(b > a for a, b in zip(lrs, lrs[1:])) and abs(lrs[0] - 1e-3) < 1e-9
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    doc = json.load(open(os.path.join(folder, "lr_find.json")))
    assert lrs[0] <= doc["suggested"] <= lrs[-1]
    assert np.allclose(doc["swept"], [lrs[0], lrs[-1]], rtol=1e-5)
    # SGD at a rate of 1e6 blows up: the sweep stops before its 40 steps
    assert len(rows) < 40 and doc["stopped"].startswith(("diverged", "loss not finite"))
    assert f"suggested learning rate: {doc['suggested']:.3g}" in lines
    command = shlex.split(next(line for line in lines if "main.py" in line))
    rate = float(f"{doc['suggested']:.3g}")
    assert "data.batch_size=4" in command and command[-1] == f"training.learning_rate={rate:.3g}"
    printed = run_script(*command[1:], "--print-config").stdout
    assert f"learning_rate: {rate}" in printed
    assert not any(d for d in os.listdir(runs) if not d.endswith("_lr_find"))  # nothing trained


def test_the_suggestion_lies_in_the_valley():
    lrs = rates(1e-6, 1.0, 120)
    x = np.log10(lrs)
    # flat, then falling, then blowing up past 1e-2
    loss = 1.0 - 0.8 / (1 + np.exp(-(x + 3.5) * 4)) + np.where(x > -2, (x + 2) ** 2 * 3, 0.0)
    noisy = loss + np.random.default_rng(0).normal(0, 0.01, len(loss))
    suggested, minimum, steepest = suggest(lrs, smooth(noisy))
    assert 10 ** -4.5 < suggested < minimum <= 10 ** -1.8
    assert 10 ** -4 < steepest < 10 ** -3
    assert valley([3, 2, 1, 0]) == 1 and valley([0, 0, 0]) == 0
    flat_then_zero = np.r_[np.ones(50), np.zeros(50)]  # never diverges: still inside the range
    assert lrs[0] <= suggest(lrs[:100], smooth(flat_then_zero))[0] <= lrs[99]


def test_bad_lr_find_options_are_one_line(separable_split, tmp_path):
    cfg = tiny_config(tmp_path / "c.yaml", separable_split, str(tmp_path / "runs"))
    assert "at least 5 steps" in one_error_line(run_here("main.py", "--config", cfg, "--lr-find", "--lr-steps",
                                                           "2", expect=2))
    assert "--lr-range" in one_error_line(run_here("main.py", "--config", cfg, "--lr-find", "--lr-range", "1",
                                                     "0.1", expect=2))
    assert not os.path.exists(tmp_path / "runs")
