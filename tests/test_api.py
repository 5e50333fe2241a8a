"""The Python API in-process: Run, load -> Predictor.predict (files, folders, arrays), rows and
DataFrame, evaluate, split, section overrides, and errors that name Python arguments."""

import os

import numpy as np
import pytest
from PIL import Image

import ga
from ga.config import load_config, section_overrides
from ga.errors import ConfigError, GAError
from helpers import read_csv


def test_run_reads_its_folder(trained_run):
    run = ga.api.Run(trained_run)
    assert os.fspath(run) == trained_run and run.labels["classes"] == ["cex", "pg"]
    epochs = read_csv(os.path.join(trained_run, "history.csv"))
    assert run.metrics["test_images"] == 18 and len(run.history) == len(epochs) >= 1
    assert [float(r["loss"]) for r in run.history] == pytest.approx([float(r["loss"]) for r in epochs])
    assert run.config.model.backbone == "cnn4"


def test_predict_files_folders_and_arrays_agree(trained_run, separable_split, tmp_path):
    # the suite's plain CPU (conftest.CPUS): the float32 ONNX, so arrays and files agree to 1e-5
    model = ga.load(ga.api.Run(trained_run))
    assert model.task == "binary" and model.classes == ["cex", "pg"] and model.engine == "onnx"
    folder = os.path.join(separable_split, "test", "pg")
    rows = model.predict(folder)
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder))
    assert [r["path"] for r in rows] == files and all(r["predicted"] == "pg" and not r["error"] for r in rows)
    arrays = [np.asarray(Image.open(f)) for f in files]
    by_array = model.predict(arrays)
    assert [r["path"] for r in by_array] == [f"array[{i}]" for i in range(len(files))]
    np.testing.assert_allclose([r["p_pg"] for r in by_array], [r["p_pg"] for r in rows], atol=1e-5)
    one = model.predict(arrays[0][:, :, 0])  # one grey image
    assert len(one) == 1 and one[0]["p_pg"] == pytest.approx(rows[0]["p_pg"], abs=1e-5)
    resized = [Image.open(f).resize((40, 40)) for f in files[:3]]
    batch = model.predict(np.stack([np.asarray(im) for im in resized]))
    for i, im in enumerate(resized):  # a stacked batch of arrays gives what the same images as files give
        im.save(tmp_path / f"r{i}.png")
    as_files = model.predict([str(tmp_path / f"r{i}.png") for i in range(3)])
    np.testing.assert_allclose([r["p_pg"] for r in batch], [r["p_pg"] for r in as_files], atol=1e-5)
    frame = rows.to_frame()
    assert list(frame.columns[:2]) == ["path", "predicted"] and len(frame) == len(rows)
    assert model.predict(folder, threshold=0.999999)[0]["predicted"] == "cex"


def test_unreadable_files_are_rows_with_their_error(trained_run, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    rows = ga.load(trained_run).predict([tmp_path / "notes.txt"])
    assert len(rows) == 1 and rows.errors == rows and "not an image" in rows[0]["error"]


def test_evaluate_returns_the_metrics_it_writes(trained_run, separable_split, tmp_path):
    m = ga.evaluate(os.path.join(separable_split, "test"), trained_run, out_dir=tmp_path / "ev")
    assert m["test_images"] == 18 and os.path.isfile(tmp_path / "ev" / "metrics.json")
    assert m["accuracy"] == ga.api.Run(trained_run).metrics["accuracy"]


def test_errors_name_the_python_argument(tmp_path, trained_run):
    with pytest.raises(GAError, match=r"^model: not found: "):
        ga.load(tmp_path / "none")
    with pytest.raises(GAError, match=r"use recursive=True for subfolders"):
        ga.load(trained_run).predict([tmp_path])
    with pytest.raises(GAError, match=r"^ratios: must be three"):
        ga.split(tmp_path, tmp_path / "out", ratios=(0.5, 0.5, 0.5))
    with pytest.raises(GAError, match=r"shape"):
        ga.load(trained_run).predict(np.zeros((2, 3, 4, 5, 6)))


def test_section_overrides_are_typed_and_checked():
    sets = section_overrides({"training": {"epochs": 3, "class_weight": {"cex": 1, "pg": 2.5}},
                              "data": {"augment": {"enabled": False}}, "output": {"name": "007"}})
    cfg = load_config(None, sets)
    assert cfg.training.epochs == 3 and cfg.training.class_weight == {"cex": 1.0, "pg": 2.5}
    assert cfg.data.augment.enabled is False and cfg.output.name == "007"
    with pytest.raises(ConfigError, match="did you mean training.epochs"):
        section_overrides({"training": {"epoch": 3}})
    with pytest.raises(ConfigError, match="did you mean training"):
        ga.train("demo", trainng={"epochs": 1})


def test_every_api_function_is_typed():
    import inspect

    import ga.trainer  # noqa: F401  (a submodule named like an API function would replace it)

    assert ga.train is ga.api.train and ga.split is ga.api.split and ga.load is ga.api.load

    import ga.monitoring.calibration  # noqa: F401
    import ga.scan  # noqa: F401

    assert ga.scan_frames is ga.api.scan_frames and ga.calibrate is ga.api.calibrate
    for fn in (ga.train, ga.cross_validate, ga.find_learning_rate, ga.load, ga.evaluate, ga.compare, ga.review,
               ga.split, ga.scan_frames, ga.monitor, ga.monitor_settings, ga.calibrate, ga.Predictor.predict):
        sig = inspect.signature(fn)
        assert sig.return_annotation is not inspect.Signature.empty, fn
        assert all(p.annotation is not inspect.Parameter.empty for n, p in sig.parameters.items() if n != "self"), fn
    assert os.path.isfile(os.path.join(os.path.dirname(ga.__file__), "py.typed"))


def test_commands_load_keras_without_its_extras():
    """A command (inference.py's entry on a missing file: it loads Keras, then stops with
    exit 2) loads Keras as if pandas, scikit-learn and matplotlib were not installed, and
    the project's own later imports of them still work (a user's `import ga` keeps Keras
    whole: test_commands.py::test_models_load_in_a_fresh_interpreter)."""
    import subprocess
    import sys

    code = ("import sys\nfrom ga.cli import inference_main\ncode = inference_main(['nowhere.png'])\n"
            "import keras.src.wrappers.fixes as f\n"
            "print(code, 'keras' in sys.modules, f.sklearn is None, *(m in sys.modules for m in ga.KERAS_EXTRAS))\n"
            "import sklearn.metrics, matplotlib.pyplot\nprint(sklearn.metrics.accuracy_score([1], [1]))\n")
    proc = subprocess.run([sys.executable, "-c", "import ga\n" + code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["2", "True", "True", "False", "False", "False", "1.0"], proc.stderr[-2000:]


def test_the_split_has_one_set_of_defaults(tmp_path, monkeypatch):
    """ga.split and `ga split` resolve their defaults from the config (split.*), the library
    function's own defaults are the same values, and the copy tolerance is passed on."""
    import inspect

    import ga.splitting
    from ga.cli import split_main
    from ga.config import SplitConfig

    library = inspect.signature(ga.splitting.split_dataset).parameters
    d = SplitConfig()
    assert [library[k].default for k in ("seed", "mode", "order", "tolerance")] == \
        [d.seed, d.mode, d.order, d.group_tolerance] and list(library["ratios"].default) == d.ratios
    import types

    seen = []
    done = types.SimpleNamespace(state="unchanged", dest="out", files=[], folds=None, dry_run=False, exit_code=0)
    monkeypatch.setattr(ga.splitting, "split_dataset", lambda source, dest, **kw: seen.append((source, dest, kw)) or done)
    ga.split("src", sets=["split.group_tolerance=7", "split.seed=3"])
    ga.split("src", "out", tolerance=0, ratios=(0.5, 0.25, 0.25))
    assert split_main(["--source", "src", "--set", "split.group_tolerance=7", "--set", "split.seed=3",
                       "--no-progress"]) == 0
    first, second, cli = seen
    assert first[:2] == ("src", "data/split") and first[2]["tolerance"] == 7 and first[2]["seed"] == 3
    assert first[2]["progress"] is False
    assert second[2]["tolerance"] == 0 and second[2]["ratios"] == [0.5, 0.25, 0.25] and second[2]["mode"] == "copy"
    assert cli == first
