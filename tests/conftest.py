"""Shared builders: tiny image splits made on the fly and a CPU-sized training config."""

import fcntl
import hashlib
import os
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# No test's outcome may depend on the CPU it runs on: `auto` (training precision, inference
# engine) reads the CPU's units through GA_CPU_FLAGS, so every test and every process it starts
# sees the same plain AVX2 CPU (float32 training, the float32 ONNX engine), whatever the machine
# and whatever the caller's environment. The tests of the low-precision branches set CPUS' flag
# sets themselves, both ways, so every machine runs both.
CPUS = {"avx2": "avx2 fma",
        "amx": "avx2 fma avx512f avx512_bf16 avx512_vnni amx_bf16 amx_int8 amx_tile"}
os.environ["GA_CPU_FLAGS"] = CPUS["avx2"]


@pytest.hookimpl(optionalhook=True)  # pytest -p no:xdist runs without it
def pytest_xdist_auto_num_workers(config):
    """`-n auto` (make test): one worker more than the cores this process may use. The tests
    spend about a sixth of their time waiting on the processes they start (start-up, kills,
    two-worker runs), and the extra worker fills it: 15 min 06 s with two workers, 13 min 26 s
    with three, on 2 cores (the same CPU time, 25.5 min)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores + 1


def pytest_addoption(parser):
    parser.addoption("--long", action="store_true",
                     help="long fuzzing and fault runs (2,000 fuzz cases, 200 kill points) instead of the quick defaults")


def pytest_configure(config):
    config.addinivalue_line("markers", "long: minutes-long; runs only with pytest --long (keeps make test under 15 min)")
    if config.getoption("--long"):
        os.environ.setdefault("GA_FUZZ_EXAMPLES", "2000")
        os.environ.setdefault("GA_KILL_POINTS", "200")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="long: runs with pytest --long")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


# Test set sizes differ per class so that a swapped class name shows in every report.
SEPARABLE_COUNTS = {"train": (16, 16), "valid": (8, 8), "test": (12, 6)}


def digest_tree(root):
    """{relative path: sha256} of every file under root."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def separable_image(rng, cls_index, size=None):
    """Class 0: bright textured; class 1: dark textured. Random size around 40 px."""
    w, h = size or (int(rng.integers(30, 56)), int(rng.integers(30, 56)))
    base = 190.0 if cls_index == 0 else 60.0
    arr = np.clip(base + rng.normal(0, 25, (h, w)), 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(arr[:, :, None], 3, axis=2))


def make_separable_split(root, classes=("cex", "pg"), counts=None, seed=0):
    """A split root {train,valid,test}/<class>/ of trivially separable PNGs."""
    rng = np.random.default_rng(seed)
    counts = counts or SEPARABLE_COUNTS
    for split, per_class in counts.items():
        for idx, (cls, n) in enumerate(zip(classes, per_class)):
            folder = os.path.join(root, split, cls)
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                separable_image(rng, idx).save(os.path.join(folder, f"{cls} {split} {i:03d}.png"))
    return root


def tiny_config(path, split_root, runs_root, **sections):
    """Write a CPU-sized config (CNN-4 at 32 px, no augmentation) and return its path."""
    doc = {
        "data": {"split_root": split_root, "image_size": [32, 32], "batch_size": 8,
                 "augment": {"enabled": False}},
        "model": {"backbone": "cnn4", "weights": "none", "trainable_fraction": 1.0,
                  "head": {"units": [16], "dropout": [0.0], "batch_norm": [False]}},
        # float32 whatever the CPU (auto picks bfloat16 where the CPU has it: test_precision.py)
        "training": {"optimizer": "adam", "learning_rate": 0.003, "epochs": 3, "seed": 1, "mixed_precision": "float32",
                     "early_stopping": {"f1_threshold": 1.0, "f1_patience": 100, "patience": 50}},
        # The SavedModel and INT8 exports and the Grad-CAM figures add seconds to every run; the
        # tests that check them turn them on (trained_run, and the commands run with real configs).
        "output": {"root": runs_root, "prefix": "GA", "saved_model": False, "explain": False, "int8": False,
                   "preview": False},
    }
    for section, values in sections.items():
        for k, v in values.items():
            if isinstance(v, dict):
                doc[section].setdefault(k, {}).update(v)
            else:
                doc.setdefault(section, {})[k] = v
    with open(path, "w") as fh:
        yaml.safe_dump(doc, fh)
    return str(path)


def shared(tmp_path_factory, name, build):
    """What `build(folder) -> str` returns, built once for the whole session: under
    pytest-xdist the first worker to ask builds it under a file lock, and the others wait for
    it and reuse it (so a fixture every worker needs costs one build, not one per worker).
    What it builds is read by the tests, never changed."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, shared by its workers
    done = root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            value = build(root / name)
            done.write_text(value)
        return done.read_text()


@pytest.fixture(scope="session")
def separable_split(tmp_path_factory):
    return shared(tmp_path_factory, "separable", lambda folder: make_separable_split(str(folder)))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, separable_split):
    """One complete run (CNN-4, 32 px, every export) on the separable split, trained in this
    interpreter (main.py itself runs from a shell in test_commands.py)."""
    from ga.trainer import train

    def build(work):
        os.makedirs(work)
        cfg = tiny_config(work / "c.yaml", separable_split, str(work / "runs"), training={"epochs": 5},
                          data={"batch_size": 4},
                          output={"saved_model": True, "explain": True, "int8": True, "preview": True})
        return train(cfg)

    return shared(tmp_path_factory, "trained", build)
