"""What Keras and Ultralytics users reach for: TensorBoard scalars equal to history.csv, one
shareable report.html, Grad-CAM (checked where the answer is known) and the error gallery,
a SavedModel that matches Keras, inference output that names its model, and the installed
commands (ga-split, ga-train, ga-infer, python -m ga) from a non-editable install."""

import base64
import glob
import hashlib
import json
import os
import shutil
import sys
import sysconfig
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, make_separable_split
from helpers import read_csv, run_command, run_here


def scalars(folder):
    """{tag: {step: value}} of the TensorBoard event files in `folder`."""
    import tensorflow as tf

    out = {}
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for v in event.summary.value:
                value = float(tf.make_ndarray(v.tensor)) if v.HasField("tensor") else v.simple_value
                out.setdefault(v.tag, {})[event.step] = value
    return out


def test_tensorboard_scalars_match_history(trained_run):
    history = read_csv(os.path.join(trained_run, "history.csv"))
    train = scalars(os.path.join(trained_run, "tensorboard", "train"))
    valid = scalars(os.path.join(trained_run, "tensorboard", "validation"))
    epochs = [int(r["epoch"]) for r in history]
    for tag, column, events in (("epoch_loss", "loss", train), ("epoch_accuracy", "accuracy", train),
                                ("epoch_lr", "lr", train), ("epoch_loss", "val_loss", valid),
                                ("epoch_f1_pg", "val_f1_pg", valid), ("epoch_f1_cex", "val_f1_cex", valid)):
        assert sorted(events[tag]) == epochs, tag
        assert [events[tag][e] for e in epochs] == pytest.approx([float(r[column]) for r in history], rel=1e-5), tag


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.cells, self.scripts, self.links = [], [], 0, []
        self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append((a.get("alt"), a.get("src", "")))
        if tag == "script":
            self.scripts += 1
        if tag in ("link", "a") and (a.get("href") or "").startswith("http"):
            self.links.append(a["href"])
        if tag == "td":
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None


def test_report_html_embeds_every_figure_and_the_runs_numbers(trained_run):
    page = _Page()
    page.feed(open(os.path.join(trained_run, "report.html"), encoding="utf-8").read())
    pngs = sorted(f for f in os.listdir(trained_run) if f.endswith(".png"))
    assert {"GAgradcam.png", "GAmetrics_plot.png", "GAfinal_confusion_matrix.png"} <= set(pngs)
    assert sorted(alt for alt, _ in page.images) == pngs
    for alt, src in page.images:  # the figures themselves, byte for byte, with no network needed
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == open(os.path.join(trained_run, alt), "rb").read()
    assert page.scripts == 0 and not page.links
    m = json.load(open(os.path.join(trained_run, "metrics.json")))
    cells = page.cells
    def shown(v, ci):  # a figure and its interval, as the report writes them
        return f"{v:.4f} ({ci[0]:.4f}–{ci[1]:.4f})" if ci else f"{v:.4f}"

    assert cells[cells.index("accuracy") + 1] == shown(m["accuracy"], m["accuracy_ci"])
    for c, v in m["per_class"].items():
        i = cells.index(c)
        assert cells[i + 1:i + 4] == [shown(v[k], v[f"{k}_ci"]) for k in ("precision", "recall", "f1")]
    text = open(os.path.join(trained_run, "report.html"), encoding="utf-8").read()
    assert f"epoch {m['training']['delivered_epoch']} of {m['training']['epochs']}" in text
    assert f"{m['onnx']['max_abs_diff']:.2e}" in cells and f"{m['saved_model']['max_abs_diff']:.2e}" in cells
    assert "Model card" in text and "Intended use" in text


def test_misclassified_gallery_or_a_line(trained_run):
    m = json.load(open(os.path.join(trained_run, "metrics.json")))
    wrong = m["test_images"] - int(round(m["accuracy"] * m["test_images"]))
    gallery = os.path.isfile(os.path.join(trained_run, "GAmisclassified.png"))
    assert gallery == (wrong > 0)
    if not wrong:
        assert "no misclassified test images" in open(os.path.join(trained_run, "train.log")).read()


SAVED_MODEL_CHECK = """
import sys, json, numpy as np, tensorflow as tf, keras, ga
run = sys.argv[1]
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (6, 32, 32, 3)).astype("float32")
served = tf.saved_model.load(run + "/GAsaved_model")
a = np.asarray(served.serve(tf.constant(x)))
b = np.asarray(served.signatures["serving_default"](tf.constant(x))["output_0"])
k = keras.models.load_model(run + "/GAmodel.keras")(x, training=False).numpy()
labels = json.load(open(run + "/GAsaved_model/assets/labels.json"))
print(json.dumps({"serve": float(np.abs(a - k).max()), "signature": float(np.abs(b - k).max()),
                  "classes": labels["classes"]}))
"""


def test_saved_model_matches_keras(trained_run):
    proc = run_command([sys.executable, "-c", SAVED_MODEL_CHECK, trained_run], ROOT)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["serve"] < 1e-4 and got["signature"] < 1e-4 and got["classes"] == ["cex", "pg"]
    assert json.load(open(os.path.join(trained_run, "metrics.json")))["saved_model"]["max_abs_diff"] < 1e-4


def test_grad_cam_finds_the_bright_square():
    import keras

    from ga.explain import feature_map_fn, grad_cam, grad_cams
    from ga.layers import Preprocess

    # A model built like every ga model (Input -> Preprocess -> backbone sub-model -> pooling ->
    # output) whose answer is known: the output rises with the brightness that one 3x3
    # convolution sees, so the bright square alone decides the class.
    inp = keras.Input((32, 32, 3))
    feat_in = keras.Input((32, 32, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, kernel_initializer="ones")(feat_in)
    backbone = keras.Model(feat_in, keras.layers.ReLU()(conv), name="backbone")
    x = backbone(Preprocess("scale_01")(inp))
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    out = keras.layers.Dense(1, activation="sigmoid", kernel_initializer=keras.initializers.Constant(0.5),
                             name="output")(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 40, (5, 32, 32, 3)).astype("float32")
    squares = [(3, 5), (20, 22), (10, 2), (24, 24), (14, 14)]
    for img, (y, x0) in zip(images, squares):
        img[y:y + 6, x0:x0 + 6] = 255.0
    heat = grad_cam(model, images, 0)
    assert heat.shape == (5, 32, 32) and heat.max() <= 1.0 and heat.min() >= 0.0
    for h, (y, x0) in zip(heat, squares):
        r, c = np.unravel_index(np.argmax(h), h.shape)
        assert y <= r < y + 6 and x0 <= c < x0 + 6
    # the negative class of a binary model (column -1) does not point at the square
    neg = grad_cam(model, images, -1)
    assert all(h[y:y + 6, x0:x0 + 6].mean() < 0.5 for h, (y, x0) in zip(neg, squares))
    # several outputs in one call (one backbone pass), and a traced backbone shared across
    # batches, give the maps of one call each
    both = grad_cams(model, images, [0, -1])
    assert np.array_equal(both[0], heat) and np.array_equal(both[1], neg)
    features = feature_map_fn(model)
    for batch in (images[:3], images[3:]):
        assert np.array_equal(grad_cam(model, batch, 0, features), grad_cam(model, batch, 0))


def test_explain_and_provenance_from_the_shell(trained_run, tmp_path):
    folder = make_separable_split(str(tmp_path / "imgs"), counts={"test": (2, 1)})
    test_dir = os.path.join(folder, "test")
    out = tmp_path / "out"
    run_command([sys.executable, os.path.join(ROOT, "inference.py"), test_dir, "--recursive", "--model", trained_run,
         "--explain", "--out-dir", out, "--output", tmp_path / "p.csv"], tmp_path,
                env={"GA_CPU_FLAGS": "avx2"})  # no INT8 unit: the float32 ONNX labels (test_precision.py: INT8)
    images = sorted(glob.glob(os.path.join(test_dir, "*", "*.png")))
    assert sorted(os.listdir(out)) == sorted(os.path.basename(p)[:-4] + "_gradcam.png" for p in images)
    table = read_csv(tmp_path / "p.csv")
    onnx = os.path.join(trained_run, "GAweights.onnx")
    sha = hashlib.sha256(open(onnx, "rb").read()).hexdigest()
    assert {(r["model_file"], r["model_sha256"], r["engine"]) for r in table} == {(onnx, sha, "onnx")}
    run_command([sys.executable, os.path.join(ROOT, "inference.py"), test_dir, "--recursive", "--model", trained_run,
         "--engine", "keras", "--output", tmp_path / "p.json"], tmp_path)
    doc = json.load(open(tmp_path / "p.json"))
    keras_file = os.path.join(trained_run, "GAmodel.keras")
    assert doc["model"] == {"model_file": keras_file, "engine": "keras", "run": trained_run,
                            "model_sha256": hashlib.sha256(open(keras_file, "rb").read()).hexdigest()}


def _install_into_a_fresh_venv(tmp_path):
    """`pip install .` (not editable) into a fresh venv whose dependencies come from this
    interpreter's site-packages (a .pth), so only the package itself is installed; the venv's bin/."""
    venv = tmp_path / "venv"
    run_command([sys.executable, "-m", "venv", venv], tmp_path)
    site = run_command([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
               tmp_path).stdout.strip()
    with open(os.path.join(site, "deps.pth"), "w") as fh:
        fh.write(sysconfig.get_paths()["purelib"] + "\n")
    build = tmp_path / "src"  # the files a source distribution holds, without caches or run folders
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("ga", "configs"):
        shutil.copytree(os.path.join(ROOT, name), build / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), build / name)
    run_command([venv / "bin" / "pip", "install", "-q", "--no-deps", str(build)], tmp_path, timeout=600)
    return venv / "bin"


def test_installed_package_and_its_commands_without_tensorflow(tmp_path):
    """The non-editable install in the default suite: the package data and console scripts are
    there, the commands that need no TensorFlow run from the venv's bin/, and `ga-train` and
    `ga-infer` run the entry functions the installed scripts name, in-process (every installed
    command from a shell: the test below, --long)."""
    from configparser import ConfigParser

    import ga.cli
    from ga.synthetic import generate_crystals

    bin_ = _install_into_a_fresh_venv(tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = run_command([bin_ / "python", "-c", "import ga, os; print(os.path.dirname(ga.__file__))"], work).stdout.strip()
    assert where.startswith(str(tmp_path / "venv")) and os.path.isfile(os.path.join(where, "configs", "demo.yaml"))
    assert os.path.isfile(os.path.join(where, "py.typed"))
    listed = run_command([bin_ / "ga-train", "--list-configs"], work).stdout
    assert "resnet101" in listed and "demo" in listed
    printed = run_command([bin_ / "ga-train", "--config", "demo", "--print-config", "--set", "training.epochs=2"], work).stdout
    assert "epochs: 2" in printed and "backbone: cnn4" in printed
    generate_crystals(str(work / "data/archive"), per_class=16, seed=0)
    run_command([bin_ / "ga-split", "--source", "data/archive/cropped/cropped", "--dest", "data/split", "--no-progress"], work)
    assert sorted(os.listdir(work / "data/split")) == ["manifest.csv", "split.json", "test", "train", "valid"]
    dist = glob.glob(os.path.join(os.path.dirname(where), "ga_crystals-*.dist-info"))[0]
    scripts = ConfigParser()
    scripts.read(os.path.join(dist, "entry_points.txt"))
    entry = {name: getattr(ga.cli, value.split(":")[1]) for name, value in scripts["console_scripts"].items()}
    assert set(entry) == {"ga", "ga-split", "ga-train", "ga-infer"}
    trained = run_here("main.py", "--config", "demo", "--set", "data.image_size=[32,32]", "--set", "data.batch_size=8",
                       "--set", "training.epochs=1", "--set", "output.int8=false", "--set", "output.saved_model=false",
                       "--set", "output.explain=false", cwd=work, entry=entry["ga-train"])
    run_dir = trained.stdout.strip().splitlines()[-1]
    assert run_dir.startswith("deliverables") and os.path.isfile(work / run_dir / "report.html")
    labelled = run_here("inference.py", "data/split/test", "--recursive", cwd=work, entry=entry["ga-infer"])
    assert labelled.stdout.count("prediction") == len(glob.glob(str(work / "data/split/test/*/*.png")))


@pytest.mark.long  # 63 s: a fresh venv and a non-editable install; the same commands run editable in the suite
def test_installed_commands_from_another_folder(tmp_path):
    """Every installed command from the venv's bin/, in another folder."""
    bin_ = _install_into_a_fresh_venv(tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    venv = bin_.parent
    where = run_command([bin_ / "python", "-c", "import ga, os; print(os.path.dirname(ga.__file__))"], work).stdout.strip()
    assert where.startswith(str(venv)) and os.path.isfile(os.path.join(where, "configs", "demo.yaml"))
    listed = run_command([bin_ / "ga-train", "--list-configs"], work).stdout
    assert "resnet101" in listed and "demo" in listed
    printed = run_command([bin_ / "ga-train", "--config", "demo", "--print-config", "--set", "training.epochs=2"], work).stdout
    assert "epochs: 2" in printed and "backbone: cnn4" in printed
    run_command([bin_ / "python", "-m", "ga.synthetic", "crystals", "--out", "data/archive", "--per-class", "16",
         "--seed", "0"], work)
    run_command([bin_ / "ga-split", "--source", "data/archive/cropped/cropped", "--dest", "data/split", "--no-progress"], work)
    trained = run_command([bin_ / "ga-train", "--config", "demo", "--set", "data.image_size=[32,32]", "--set",
                   "data.batch_size=8", "--set", "training.epochs=1", "--set", "output.onnx=false"], work)
    run_dir = trained.stdout.strip().splitlines()[-1]
    assert run_dir.startswith("deliverables") and os.path.isfile(work / run_dir / "report.html")
    labelled = run_command([bin_ / "ga-infer", "data/split/test", "--recursive"], work)  # the newest run
    assert labelled.stdout.count("prediction") == len(glob.glob(str(work / "data/split/test/*/*.png")))
    usage = run_command([bin_ / "python", "-m", "ga", "infer", "--help"], work).stdout
    assert usage.startswith("usage: python -m ga infer")
    assert run_command([bin_ / "ga-split", "--help"], work).stdout.startswith("usage: ga-split")
    # The one `ga` command: its subcommands list, and an evaluation of the installed run.
    listed = run_command([bin_ / "ga", "--help"], work).stdout
    assert listed.startswith("usage: ga <command>") and "  evaluate " in listed
    evaluated = run_command([bin_ / "ga", "evaluate", "data/split/test", "--out-dir", "eval"], work)
    assert "accuracy" in evaluated.stdout and os.path.isfile(work / "eval" / "metrics.json")
    assert run_command([bin_ / "python", "-c", "import ga; print(ga.load().task)"], work).stdout.strip() == "binary"


def test_run_files_are_readable_by_the_group(trained_run):
    # Atomic writes go through mkstemp (mode 0600); a run folder on shared storage must still
    # be readable by the lab (the mode a plain open() would give under the umask).
    from ga.files import UMASK

    want_file, want_dir = 0o666 & ~UMASK, 0o777 & ~UMASK
    for dirpath, dirs, files in os.walk(trained_run):
        for d in dirs:
            assert os.stat(os.path.join(dirpath, d)).st_mode & 0o777 == want_dir, d
        for f in files:
            assert os.stat(os.path.join(dirpath, f)).st_mode & 0o777 == want_file, f


@pytest.mark.parametrize("backbone, task", [("resnet50", "multilabel"), ("cnn4", "multiclass")])
def test_grad_cam_on_the_real_backbones(backbone, task):
    from ga.config import load_config
    from ga.explain import grad_cam
    from ga.model import build_model

    cfg = load_config(data={"data": {"image_size": [32, 32]}, "model": {"task": task, "backbone": backbone,
                                                                        "weights": "none"}})
    model = build_model(cfg, 3)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    for column in range(3):  # every class of a multi-label or multiclass model
        heat = grad_cam(model, images, column)
        assert heat.shape == (2, 32, 32) and np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1


def test_explain_writes_a_panel_per_class_for_multilabel(tmp_path):
    from ga.config import load_config
    from ga.explain import explain_images
    from ga.model import build_model

    cfg = load_config(data={"data": {"image_size": [32, 32]}, "model": {"task": "multilabel", "backbone": "cnn4",
                                                                        "weights": "none"}})
    model = build_model(cfg, 2)
    labels = {"task": "multilabel", "classes": ["a", "b"]}
    images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    paths = explain_images(model, labels, images, ["x/one.png", "y/two.tif"], str(tmp_path), {"a": 0.5, "b": 0.5})
    assert [os.path.basename(p) for p in paths] == ["one_gradcam.png", "two_gradcam.png"]
    assert all(Image.open(p).size[0] > Image.open(p).size[1] for p in paths)  # two panels side by side


def test_report_of_a_class_without_test_auc(trained_run, tmp_path):
    # A multi-label test split where a class has no positive image has no ROC AUC for it.
    from ga.report import build_report

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    m = json.load(open(run_dir / "metrics.json"))
    m["roc_auc"] = {"cex": None, "pg": 0.9}
    (run_dir / "metrics.json").write_text(json.dumps(m))
    assert "cex n/a, pg 0.9000" in build_report(str(run_dir))


def test_the_class_explained_is_the_class_named():
    from ga.tasks import get_task

    def decision_columns(task, decided, probs):
        return get_task(task).gradcam_columns(decided, probs)

    binary = np.array([[True, False], [False, True]])
    assert decision_columns("binary", binary, np.array([[0.2], [0.9]])).tolist() == [-1, 0]
    named = np.array([[False, True, True], [False, False, False]])
    probs = np.array([[0.9, 0.6, 0.7], [0.2, 0.4, 0.1]])
    # the named class of highest probability (not the unnamed 0.9), else the most probable
    assert decision_columns("multilabel", named, probs).tolist() == [2, 1]
    onehot = np.array([[False, False, True], [True, False, False]])
    assert decision_columns("multiclass", onehot, probs).tolist() == [2, 0]
