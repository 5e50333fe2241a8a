"""Faults: SIGKILL at random points of split_data.py and of training, then recovery."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, digest_tree, tiny_config
from helpers import read_csv, run_script
from ga.runs import newest_run
from ga.splitting import read_manifest, split_dataset
from test_splitting import make_tree

KILL_POINTS = int(os.environ.get("GA_KILL_POINTS", "20"))


def _split_cmd(src, dest, mode):
    return [sys.executable, os.path.join(ROOT, "split_data.py"), "--source", src, "--dest", dest, "--mode", mode,
            "--no-progress", "-q"]


def _placed(dest):
    """{relative path: sha256} of the images in the split folders."""
    return {k: v for k, v in digest_tree(dest).items() if k.split(os.sep)[0] in ("train", "valid", "test")}


def _count(dest):
    n = 0
    for s in ("train", "valid", "test"):
        for _, _, files in os.walk(os.path.join(dest, s)):
            n += len(files)
    return n


def _check_split(dest, want_shas):
    files = read_manifest(os.path.join(dest, "manifest.csv"))
    placed = _placed(dest)
    listed = {os.path.join(f.split, *f.source.split("/")): f.sha256 for f in files if f.usable}
    assert placed == listed  # the manifest and the destination agree, no partial or stray file
    assert sorted(listed.values()) == sorted(want_shas)


def _full_run_seconds(src, tmp_path):
    t = time.perf_counter()
    subprocess.run(_split_cmd(src, str(tmp_path / "timing"), "copy"), check=True, capture_output=True)
    return time.perf_counter() - t


@pytest.mark.parametrize("mode, points", [("copy", KILL_POINTS), ("move", max(5, KILL_POINTS // 2))])
def test_sigkill_during_split_then_rerun(tmp_path, mode, points):
    pristine = make_tree(str(tmp_path / "pristine"), per_class={"cex": 60}, groups={"pg": [5] * 12})
    want = sorted(digest_tree(pristine).values())
    duration = _full_run_seconds(pristine, tmp_path)
    rng = random.Random(7)
    killed_mid_copy = 0
    for i in range(points):
        src = pristine
        if mode == "move":
            src = str(tmp_path / f"src{i}")
            shutil.copytree(pristine, src)
        dest = str(tmp_path / f"out{i}")
        proc = subprocess.Popen(_split_cmd(src, dest, mode), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if i % 2 == 0:
            # A random moment: start-up, scanning, planning or copying.
            time.sleep(rng.uniform(0.05, duration * 1.1))
        else:
            # Part-way through placing files: wait until some (not all) are in place.
            target = rng.randint(1, len(want) - 1)
            while proc.poll() is None and _count(dest) < target:
                time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if os.path.isdir(dest) and 0 < len(_placed(dest)) < len(want):
            killed_mid_copy += 1
        split_dataset(src, dest, mode=mode, progress=False)
        _check_split(dest, want)
        if mode == "copy":
            assert digest_tree(src) == digest_tree(pristine)  # the source is never touched
        else:
            left = sorted(digest_tree(src).values())
            # Every image exists exactly once across source and destination.
            assert left == [] and sorted(_placed(dest).values()) == want
    assert killed_mid_copy >= 1, "no kill landed in the copy phase; widen the kill window"


def test_sigkill_during_training_then_resume(tmp_path, separable_split):
    runs = tmp_path / "runs"
    cfg = tiny_config(tmp_path / "c.yaml", separable_split, str(runs), training={"epochs": 4},
                      output={"onnx": False})
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py"), "--config", cfg],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    history = None
    while time.time() < deadline and proc.poll() is None:
        found = [os.path.join(runs, d, "history.csv") for d in os.listdir(runs)] if runs.exists() else []
        if found and os.path.isfile(found[0]) and sum(1 for _ in open(found[0])) >= 3:  # header + 2 epochs
            history = found[0]
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert history, "training never reached epoch 2"
    run_dir = os.path.dirname(history)
    assert os.path.exists(os.path.join(run_dir, "RUNNING")) and not os.path.exists(os.path.join(run_dir, "metrics.json"))
    assert newest_run(str(runs)) is None  # an interrupted run is never "the newest run"
    run_script("main.py", "--resume", run_dir)
    epochs = [int(r["epoch"]) for r in read_csv(history)]
    assert epochs == [0, 1, 2, 3]
    assert newest_run(str(runs)) == run_dir
    assert not [f for f in os.listdir(run_dir) if ".tmp" in f]


def _interrupted_run(tmp_path, split):
    """A one-epoch run folder made to look interrupted (RUNNING back, metrics.json gone)."""
    from ga.trainer import train

    cfg = tiny_config(tmp_path / "c.yaml", split, str(tmp_path / "runs"), training={"epochs": 1},
                      output={"onnx": False})
    run_dir = train(cfg)
    os.remove(os.path.join(run_dir, "metrics.json"))
    open(os.path.join(run_dir, "RUNNING"), "w").close()
    return run_dir


def test_damaged_checkpoint_is_a_one_line_error(tmp_path, separable_split, capsys):
    from ga.cli import train_main

    run_dir = _interrupted_run(tmp_path, separable_split)
    os.makedirs(os.path.join(run_dir, "backup"), exist_ok=True)
    open(os.path.join(run_dir, "backup", "latest.weights.h5"), "wb").write(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    capsys.readouterr()
    assert train_main(["--resume", run_dir]) == 2
    err = capsys.readouterr().err
    assert "latest.weights.h5 is damaged" in err and "Traceback" not in err


def test_resume_removes_what_an_interrupted_atomic_write_left(tmp_path, separable_split):
    from ga.cli import train_main

    run_dir = _interrupted_run(tmp_path, separable_split)
    left = os.path.join(run_dir, ".best.ryowhkfr.tmp.weights.h5")  # a kill inside atomic_path
    open(left, "wb").write(b"\x89HDF\r\n\x1a\n")
    assert train_main(["--resume", run_dir]) == 0
    assert not os.path.exists(left) and not [f for f in os.listdir(run_dir) if ".tmp" in f]
    assert os.path.isfile(os.path.join(run_dir, "metrics.json"))
