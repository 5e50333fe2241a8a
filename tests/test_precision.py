"""Low precision on any CPU: the bfloat16 choice with faked CPU flags, the float32 delivery of a
bfloat16-trained model, the INT8 ONNX model (file, metadata, agreement, the floor) and the
onnx-int8 engine, chosen by hand or automatically with faked flags."""

import json
import os
import shutil

import numpy as np
import onnx
import pytest

from conftest import tiny_config
from ga.config import load_config
from ga.hardware import bf16_units, choose_precision, cpu_flags, describe, int8_units
from helpers import read_csv, run_here


def test_cpu_flags_can_be_faked(monkeypatch):
    monkeypatch.setenv("GA_CPU_FLAGS", "avx2, avx512_vnni amx_bf16")
    assert cpu_flags() == {"avx2", "avx512_vnni", "amx_bf16"}
    assert bf16_units() == ["amx_bf16"] and int8_units() == ["avx512_vnni"]
    assert describe() == {"bf16": ["amx_bf16"], "int8": ["avx512_vnni"], "faked": True}
    monkeypatch.setenv("GA_CPU_FLAGS", "")
    assert cpu_flags() == frozenset() and bf16_units() == [] and int8_units() == []


@pytest.mark.parametrize("want, gpus, flags, policy", [
    ("auto", [], {"avx2", "avx512f", "avx512_bf16"}, "mixed_bfloat16"),
    ("auto", [], {"avx2", "amx_bf16", "amx_tile"}, "mixed_bfloat16"),
    ("auto", [], {"avx2", "avx512f", "avx512_vnni"}, "float32"),  # INT8 units are not bfloat16 units
    ("auto", [(8, 6)], set(), "mixed_bfloat16"),
    ("auto", [(7, 5), (8, 0)], {"avx512_bf16"}, "mixed_float16"),  # the weakest GPU decides; the CPU does not
    ("auto", [(6, 1)], {"avx512_bf16"}, "float32"),
    ("float32", [], {"avx512_bf16"}, "float32"),
    ("mixed_bfloat16", [], set(), "mixed_bfloat16"),
])
def test_precision_choice(want, gpus, flags, policy):
    chosen, why = choose_precision(want, gpus, flags)
    assert chosen == policy and why
    if want == "auto" and not gpus:
        assert ("avx512_bf16" in why or "amx_bf16" in why) == (policy == "mixed_bfloat16")


@pytest.mark.parametrize("backbone, want, gpus, policy", [
    ("resnet101", "auto", [], "mixed_bfloat16"),
    ("efficientnetv2_b0", "auto", [], "mixed_bfloat16"),
    ("cnn4", "auto", [], "mixed_bfloat16"),
    ("mobilenetv3_small", "auto", [], "float32"),  # slower in bfloat16 on a CPU
    ("mobilenetv3_large", "auto", [], "float32"),
    ("mobilenetv3_large", "mixed_bfloat16", [], "mixed_bfloat16"),  # forced stays forced
    ("mobilenetv3_large", "auto", [(8, 0)], "mixed_bfloat16"),  # a GPU's tensor cores: the rule is the CPU's
])
def test_auto_precision_keeps_float32_for_families_bfloat16_slows_on_a_cpu(backbone, want, gpus, policy):
    chosen, why = choose_precision(want, gpus, {"avx512f", "avx512_bf16", "amx_bf16"}, backbone=backbone)
    assert chosen == policy
    assert (backbone in why) == (want == "auto" and not gpus and policy == "float32")


def test_bfloat16_training_delivers_float32_files(tmp_path, separable_split):
    """auto on a CPU whose flags say bfloat16: trained in mixed_bfloat16, every delivered file
    float32 and within the usual export tolerances."""
    import keras

    cfg = tiny_config(tmp_path / "c.yaml", separable_split, str(tmp_path / "runs"), training={"epochs": 2},
                      output={"saved_model": True, "int8": True, "int8_min_agreement": 0.0})
    run = run_here("main.py", "--config", cfg, "--set", "training.mixed_precision=auto",
                     env={"GA_CPU_FLAGS": "avx2 avx512f avx512_bf16 avx512_vnni"}).stdout.strip().splitlines()[-1]
    device = json.load(open(os.path.join(run, "run.json")))["device"]
    assert device["precision_policy"] == "mixed_bfloat16" and device["precision_reason"] == "CPU with avx512_bf16"
    assert device["cpu_units"] == {"bf16": ["avx512_bf16"], "int8": ["avx512_vnni"], "faked": True}
    assert "delivered in float32 (trained in mixed_bfloat16)" in open(os.path.join(run, "train.log")).read()
    model = keras.models.load_model(os.path.join(run, "GAmodel.keras"))
    assert {layer.dtype_policy.name for layer in model._flatten_layers()} == {"float32"}
    graph = onnx.load(os.path.join(run, "GAweights.onnx")).graph
    assert not any(t.data_type == onnx.TensorProto.BFLOAT16 for t in graph.initializer)
    m = json.load(open(os.path.join(run, "metrics.json")))
    for key in ("onnx", "saved_model"):
        assert m[key]["max_abs_diff"] <= m[key]["tolerance"], key


def test_the_int8_model_of_a_run(trained_run):
    m = json.load(open(os.path.join(trained_run, "metrics.json")))["int8"]
    labels = json.load(open(os.path.join(trained_run, "labels.json")))
    assert m["kept"] and m["file"] == "GAweights_int8.onnx" and m["agreement"] >= 0.99
    assert m["test_images"] == 18 and m["calibration_images"] == 32  # the whole (small) training split
    assert 0 <= m["max_prob_diff"] < 0.5 and set(m["test_int8"]) == {"accuracy", "macro_f1"}
    model = onnx.load(os.path.join(trained_run, m["file"]))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["ga_labels"]) == labels and meta["task"] == "binary"
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ
    assert "INT8" in open(os.path.join(trained_run, "report.html")).read()


def test_int8_model_below_the_floor_is_not_kept(trained_run, tmp_path, monkeypatch, caplog):
    from ga import export
    from ga.data import build_datasets

    run = str(tmp_path / "run")
    shutil.copytree(trained_run, run)
    os.remove(os.path.join(run, "GAweights_int8.onnx"))
    cfg = load_config(os.path.join(run, "config.yaml"), ["output.int8_min_agreement=0.9"])
    monkeypatch.setattr(export, "int8_agreement", lambda *a: {"agreement": 0.5, "max_prob_diff": 0.7})
    data = build_datasets(cfg, ["cex", "pg"], splits=("test",))
    images = np.concatenate([x for x, _ in data.test.dataset])
    with caplog.at_level("WARNING", logger="ga"):
        info = export.export_int8(run, cfg, images[:4], [images], data.test.labels)
    assert not info["kept"] and info["file"] is None and "below output.int8_min_agreement 0.9" in info["why"]
    assert not os.path.exists(os.path.join(run, "GAweights_int8.onnx"))
    assert any("INT8 model not kept" in r.getMessage() for r in caplog.records)


def _engine_line(proc):
    return next(line for line in proc.stderr.splitlines() if " engine: " in line)


def test_engine_onnx_int8_and_the_automatic_choice(trained_run, separable_split, tmp_path):
    test = os.path.join(separable_split, "test")
    rows = {}
    for engine in ("onnx", "onnx-int8"):
        run_here("inference.py", test, "--recursive", "--model", trained_run, "--engine", engine, "--output",
                   tmp_path / f"{engine}.csv")
        rows[engine] = read_csv(tmp_path / f"{engine}.csv")
        assert {r["engine"] for r in rows[engine]} == {engine}
    assert [r["predicted"] for r in rows["onnx"]] == [r["predicted"] for r in rows["onnx-int8"]]
    assert rows["onnx-int8"][0]["model_file"].endswith("GAweights_int8.onnx")
    # Automatic: INT8 where the CPU has INT8 units, float32 ONNX where not; the log line says why.
    fast = run_here("inference.py", test, "--recursive", "--model", trained_run, "-v",
                      env={"GA_CPU_FLAGS": "avx2 avx512_vnni"})
    assert "(onnx-int8 engine: the run has an INT8 model and the CPU has avx512_vnni)" in _engine_line(fast)
    plain = run_here("inference.py", test, "--recursive", "--model", trained_run, "-v", env={"GA_CPU_FLAGS": "avx2"})
    assert "(onnx engine: the run has an INT8 model, but the CPU has no INT8 unit" in _engine_line(plain)
    # --evaluate takes the engine too.
    run_here("inference.py", test, "--evaluate", "--model", trained_run, "--engine", "onnx-int8", "--out-dir",
               tmp_path / "ev")
    assert json.load(open(tmp_path / "ev" / "metrics.json"))["engine"] == "onnx-int8"


def test_a_run_folder_without_its_int8_file_says_so(trained_run, separable_split, tmp_path):
    """The shared run copied without its INT8 file: --engine onnx-int8 is one line and exit 2, and
    the automatic choice on a CPU with INT8 units takes the float32 ONNX (a run trained without
    INT8 from the start: the test below, --long)."""
    run = str(tmp_path / os.path.basename(trained_run))
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("*_int8.onnx"))
    test = os.path.join(separable_split, "test")
    bad = run_here("inference.py", test, "--recursive", "--model", run, "--engine", "onnx-int8", expect=2)
    assert "--engine: onnx-int8: no INT8 model" in bad.stderr and "Traceback" not in bad.stderr
    auto = run_here("inference.py", test, "--recursive", "--model", run, "-v", env={"GA_CPU_FLAGS": "avx512_vnni"})
    assert "(onnx engine: the float32 ONNX model)" in _engine_line(auto)


def test_openvino_precision_follows_the_cpu_flags_and_openvinos_own_view():
    from ga.ov_engine import faster_here, precision_hint

    assert precision_hint({"avx2", "avx512_bf16"}, ["FP32", "BF16", "INT8"]) == "bf16"
    assert precision_hint({"avx2", "amx_bf16"}, ["FP32", "INT8"]) == "f32"  # OpenVINO cannot: no bfloat16
    assert precision_hint({"avx2", "avx512_vnni"}, ["FP32", "BF16"]) == "f32"  # GA_CPU_FLAGS can force float32
    assert faster_here({"avx2", "amx_int8"}) and faster_here({"amx_bf16"})
    assert not faster_here({"avx2", "avx512_bf16", "avx512_vnni"})  # not measured faster there: not chosen


def test_the_openvino_check_of_a_run(trained_run):
    """Training checks OpenVINO on both ONNX files as it checks the INT8 file: decisions and the
    largest probability difference against float32 on the test split."""
    pytest.importorskip("openvino")
    m = json.load(open(os.path.join(trained_run, "metrics.json")))["openvino"]
    assert set(m) == {"openvino", "openvino-int8"}
    assert m["openvino"]["file"] == "GAweights.onnx" and m["openvino-int8"]["file"] == "GAweights_int8.onnx"
    for check in m.values():
        assert check["kept"] and check["agreement"] >= 0.99 and 0 <= check["max_prob_diff"] < 0.5
        assert check["precision"] in ("bf16", "f32")
    assert m["openvino"]["max_prob_diff"] < 0.02  # float32 (or bfloat16) against float32: close


def test_engine_openvino_and_the_automatic_choice(trained_run, separable_split, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    import ga
    from ga import loading

    test = os.path.join(separable_split, "test")
    onnx_rows = ga.load(trained_run, engine="onnx").predict(test, recursive=True)
    # From a shell (OpenVINO is kept out of this process, which holds TensorFlow): the engine in every row.
    for engine in ("openvino", "openvino-int8"):
        run_here("inference.py", test, "--recursive", "--model", trained_run, "--engine", engine, "--output",
                 tmp_path / f"{engine}.csv")
        rows = read_csv(tmp_path / f"{engine}.csv")
        assert {r["engine"] for r in rows} == {engine}
        assert [r["predicted"] for r in rows] == [r["predicted"] for r in onnx_rows]
    assert rows[0]["model_file"].endswith("GAweights_int8.onnx")
    # Automatic: OpenVINO only on a CPU with AMX, and only when the run's check passed.
    files = loading._run_files(trained_run)
    monkeypatch.setenv("GA_CPU_FLAGS", "avx2 avx512_bf16 avx512_vnni amx_bf16 amx_int8")
    engine, why = loading._choose_engine(None, files)
    assert engine == "openvino-int8" and "AMX" in why
    monkeypatch.setenv("GA_CPU_FLAGS", "avx2 avx512_bf16 avx512_vnni")
    assert loading._choose_engine(None, files)[0] == "onnx-int8"
    run = str(tmp_path / "failed_check")
    shutil.copytree(trained_run, run)
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    metrics["openvino"]["openvino-int8"]["kept"] = False
    json.dump(metrics, open(os.path.join(run, "metrics.json"), "w"))
    monkeypatch.setenv("GA_CPU_FLAGS", "avx2 amx_bf16 amx_int8")
    assert loading._choose_engine(None, loading._run_files(run))[0] == "openvino"  # the float32 file's check passed


def test_the_openvino_engine_without_the_package_is_one_line(trained_run, monkeypatch):
    import ga
    from ga import ov_engine
    from ga.errors import ModelError

    monkeypatch.setattr(ov_engine, "available", lambda: False)
    with pytest.raises(ModelError, match=r"pip install 'ga-crystals\[openvino\]'"):
        ga.load(trained_run, engine="openvino")
    monkeypatch.setenv("GA_CPU_FLAGS", "amx_bf16 amx_int8")
    from ga import loading

    assert loading._choose_engine(None, loading._run_files(trained_run))[0] == "onnx-int8"


@pytest.mark.long  # about 50 s; the engine choice with an INT8 model: the test above
def test_a_run_without_an_int8_model_says_so(separable_split, tmp_path):
    cfg = tiny_config(tmp_path / "c.yaml", separable_split, str(tmp_path / "runs"), training={"epochs": 1})
    run = run_here("main.py", "--config", cfg).stdout.strip().splitlines()[-1]
    assert "int8" not in json.load(open(os.path.join(run, "metrics.json")))
    bad = run_here("inference.py", os.path.join(separable_split, "test"), "--recursive", "--model", run, "--engine",
                     "onnx-int8", expect=2)
    assert "--engine: onnx-int8: no INT8 model" in bad.stderr and "Traceback" not in bad.stderr
    auto = run_here("inference.py", os.path.join(separable_split, "test"), "--recursive", "--model", run, "-v",
                      env={"GA_CPU_FLAGS": "avx512_vnni"})
    assert "(onnx engine: the float32 ONNX model)" in _engine_line(auto)


def test_the_trainer_passes_its_backbone_to_the_choice(monkeypatch):
    """A run's precision policy is chosen for its own backbone (on a faked bfloat16 CPU)."""
    import keras

    from ga.config import load_config
    from ga.trainer import _precision_policy

    monkeypatch.setenv("GA_CPU_FLAGS", "avx2 avx512f avx512_bf16")
    try:
        chosen = {b: _precision_policy(load_config(None, [f"model.backbone={b}"]))[0]
                  for b in ("mobilenetv3_small", "resnet50")}
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert chosen == {"mobilenetv3_small": "float32", "resnet50": "mixed_bfloat16"}
