"""Configuration: typing, extends, --set, validation errors, round trip, CLI exit status."""

import glob
import os

import pytest
import yaml

from helpers import run_script

from ga.cli import split_main, train_main
from ga.config import Config, ConfigError, dump_config, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))


def _write(tmp_path, name, doc):
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return str(p)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_shipped_config_loads_and_round_trips(path, tmp_path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    out = tmp_path / "resolved.yaml"
    dump_config(cfg, out)
    again = load_config(str(out))
    assert again == cfg
    # A resolved config has no extends: left in it.
    assert "extends" not in out.read_text()


def test_study_config_carries_the_study_settings():
    cfg = load_config(os.path.join(ROOT, "configs", "resnet101.yaml"))
    assert cfg.model.backbone == "resnet101" and cfg.model.weights == "imagenet"
    assert cfg.model.trainable_fraction == pytest.approx(0.10)
    assert cfg.model.head.units == [512, 256] and cfg.model.head.dropout == [0.4, 0.3]
    assert cfg.training.optimizer == "sgd" and cfg.training.learning_rate == pytest.approx(0.1)
    assert cfg.training.momentum == pytest.approx(0.9) and cfg.data.batch_size == 64
    assert cfg.training.early_stopping.f1_threshold == pytest.approx(0.997)
    assert cfg.training.early_stopping.patience == 50
    assert cfg.data.split_root == "data/split" and cfg.split.ratios == [0.70, 0.25, 0.05]


def test_extends_merges_parent_and_child(tmp_path):
    parent = _write(tmp_path, "parent.yaml", {"data": {"batch_size": 8, "image_size": [64, 64]},
                                              "training": {"epochs": 7}})
    child = _write(tmp_path, "child.yaml", {"extends": os.path.basename(parent),
                                            "data": {"batch_size": 4}})
    cfg = load_config(child)
    assert cfg.data.batch_size == 4  # child wins
    assert cfg.data.image_size == [64, 64]  # parent's sibling key kept
    assert cfg.training.epochs == 7
    assert cfg.model.backbone == "resnet101"  # default where neither says


def test_resnet50_extends_the_study():
    cfg = load_config(os.path.join(ROOT, "configs", "resnet50.yaml"))
    assert cfg.model.backbone == "resnet50"
    assert cfg.training.learning_rate == pytest.approx(1e-4) and cfg.data.batch_size == 32
    assert cfg.model.head.units == [512, 256]  # inherited


def test_extends_cycle_is_an_error(tmp_path):
    _write(tmp_path, "a.yaml", "extends: b.yaml\n")
    _write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(tmp_path / "a.yaml"))


def test_set_is_typed_by_field():
    cfg = load_config(None, ["training.epochs=3", "model.weights=none", "training.learning_rate=1e-3",
                             "data.image_size=[32, 48]", "training.deterministic=true", "output.name=001",
                             "training.steps_per_epoch=null", "training.jit_compile=false"])
    assert cfg.training.epochs == 3 and isinstance(cfg.training.epochs, int)
    assert cfg.model.weights == "none"
    assert cfg.training.learning_rate == pytest.approx(1e-3) and isinstance(cfg.training.learning_rate, float)
    assert cfg.data.image_size == [32, 48]
    assert cfg.training.deterministic is True
    assert cfg.output.name == "001"  # text fields keep the text as written
    assert cfg.training.steps_per_epoch is None
    assert cfg.training.jit_compile == "false"
    # YAML reads on/off as bools too: a key whose choices are on/off takes them back
    assert load_config(None, ["monitor.split_touching=off"]).monitor.split_touching == "off"
    assert load_config(None, ["monitor.split_touching=on"]).monitor.split_touching == "on"


def test_set_wins_over_file(tmp_path):
    path = _write(tmp_path, "c.yaml", {"training": {"epochs": 9}})
    assert load_config(path, ["training.epochs=2"]).training.epochs == 2


@pytest.mark.parametrize(
    "doc, overrides, needle",
    [
        ({"trainig": {"epochs": 1}}, [], "did you mean training"),
        ({"training": {"epoch": 1}}, [], "training.epochs"),
        ({}, ["model.backbon=resnet50"], "model.backbone"),
        ({"training": {"epochs": "many"}}, [], "training.epochs must be an integer"),
        ({"training": {"epochs": 0}}, [], "training.epochs"),
        ({"model": {"head": {"dropout": [1.5, 0.3]}}}, [], "model.head.dropout[0]"),
        ({"split": {"ratios": [0.7, 0.2, 0.2]}}, [], "split.ratios must be non-negative and sum to 1"),
        ({"model": {"backbone": "resnet10"}}, [], "model.backbone must be one of"),
        ({"data": {"image_size": [224]}}, [], "data.image_size"),
        ({"data": {"augment": {"horizontal_flip": "yes"}}}, [], "data.augment.horizontal_flip must be true or false"),
        ({"data": "oops"}, [], "data must be a mapping"),
        ({}, ["training.epochs"], "overrides: expects section.key=value"),
        ({}, ["training=3"], "is a section"),
        ({}, ["training.epochs=[1,2]"], "training.epochs must be an integer"),
        ({"model": {"task": "binary"}, "data": {"any_class": True}}, [], "data.any_class"),
        ({"model": {"head": {"units": [512], "dropout": [0.4, 0.3], "batch_norm": [True]}}}, [], "same length"),
        ({}, ["training.seed=-1"], "training.seed must be a whole number from 0 to 4294967295, got -1"),
        ({}, [f"training.seed={2 ** 64}"], "training.seed must be a whole number from 0 to 4294967295"),
        ({}, ["split.seed=-3"], "split.seed must be a whole number"),
        ({}, ["analysis.bootstrap_seed=-1"], "analysis.bootstrap_seed must be a whole number"),
        ({}, ["training.learning_rate=.inf"], "training.learning_rate must be a finite number > 0, got inf"),
        ({}, ["training.learning_rate=.nan"], "training.learning_rate must be a finite number > 0, got nan"),
        ({}, ["training.fine_tune.learning_rate=-.inf"], "training.fine_tune.learning_rate must be a finite number > 0"),
    ],
)
def test_config_errors_name_the_key(tmp_path, doc, overrides, needle):
    path = _write(tmp_path, "bad.yaml", doc)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_config_file_is_named(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(missing)


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = _write(tmp_path, "broken.yaml", "data:\n  batch_size: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken.yaml line \d+"):
        load_config(path)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--config", "{cfg}", "--set", "training.epochz=1"], "training.epochs"),
        (["--config", "{cfg}", "--set", "model.head.dropout=[1.5, 0.1]"], "model.head.dropout[0]"),
        (["--config", "{missing}"], "missing.yaml"),
        (["--config", "{cfg}", "--set", "data.split_root={tmp}/nowhere"], "nowhere"),
        (["--config", "{cfg}", "--set", "model.weights={tmp}/w.h5"], "w.h5"),
        (["--config", "{cfg}", "--set", "training.seed=-1"], "training.seed must be a whole number"),
        (["--config", "{cfg}", "--set", "training.learning_rate=.inf"], "training.learning_rate must be a finite"),
    ],
)
def test_main_exits_2_with_one_line(tmp_path, capsys, argv, needle):
    cfg = _write(tmp_path, "ok.yaml", {"model": {"weights": "none"}})
    subs = {"cfg": cfg, "missing": str(tmp_path / "missing.yaml"), "tmp": str(tmp_path)}
    code = train_main([a.format(**subs) for a in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_split_with_missing_source_exits_2(tmp_path, capsys):
    code = split_main(["--source", str(tmp_path / "absent"), "--dest", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "absent" in err and err.count("\n") == 1


def test_split_ratio_error_exits_2(tmp_path, capsys):
    code = split_main(["--source", str(tmp_path), "--ratios", "0.5", "0.5", "0.5"])
    err = capsys.readouterr().err
    assert code == 2 and "sum to 1" in err


@pytest.mark.parametrize("script", ["main.py", "split_data.py", "inference.py"])
def test_scripts_help_and_usage_errors(script):
    out = run_script(script, "--help")
    assert "usage:" in out.stdout and "--verbose" in out.stdout
    bad = run_script(script, "--no-such-flag", "x", expect=2)
    assert bad.stderr.count("\n") == 1 and "--no-such-flag" in bad.stderr


@pytest.mark.parametrize("text, needle", [
    ("training:\n  epochs: 2\ndata:\n  batch_size: 4\ntraining:\n  epochs: 3\n", "line 5: the key 'training' is given twice"),
    ("training:\n  epochs: 2\n  epochs: 3\n", "line 3: the key 'epochs' is given twice"),
])
def test_a_key_given_twice_is_refused(tmp_path, text, needle):
    path = _write(tmp_path, "twice.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_extends_naming_a_file_that_is_no_config_names_it_without_its_content(tmp_path):
    secret = tmp_path / "shadow"
    secret.write_text("root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n")
    path = _write(tmp_path, "c.yaml", f"extends: {secret}\ntraining:\n  epochs: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(secret) in str(info.value) and "is not a ga config" in str(info.value)
    assert "root" not in str(info.value).replace(str(tmp_path), "") and "19000" not in str(info.value)


@pytest.mark.parametrize("override, message", [
    ("monitor.min_area=big", "monitor.min_area must be an integer or auto, got str 'big'"),
    ("monitor.min_sharpness=-1", "monitor.min_sharpness must be between 0 and 10"),
    ("monitor.polarity=grey", "monitor.polarity must be one of auto, bright, dark"),
])
def test_monitor_auto_keys_take_a_value_or_auto(override, message):
    cfg = load_config(None, ["monitor.min_area=60", "monitor.background_size=auto"]).monitor
    assert cfg.min_area == 60 and cfg.background_size == "auto" and cfg.min_sharpness == "auto"
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)
