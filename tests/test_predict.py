"""inference.py: class names with both engines, engine agreement, odd and bad files,
clustering, model resolution, safe loading."""

import json
import os
import shutil

import keras
import numpy as np
import pytest
from PIL import Image

from conftest import separable_image
from helpers import read_csv
from ga.cli import inference_main
from ga.errors import ModelError
from ga.loading import load_keras, load_model


def _out_lines(capsys):
    cap = capsys.readouterr()
    return [l for l in cap.out.splitlines() if l.startswith("File ")], cap.err


@pytest.mark.parametrize("engine", ["onnx", "keras"])
def test_class_names_are_right_with_both_engines(trained_run, separable_split, capsys, engine):
    test_dir = os.path.join(separable_split, "test")
    code = inference_main([test_dir, "--recursive", "--model", trained_run, "--engine", engine])
    lines, err = _out_lines(capsys)
    assert code == 0, err
    assert len(lines) == 18
    right = 0
    for line in lines:
        # "File cex test 003.png prediction cex confidence 0.9871"
        name = line[len("File "):line.index(" prediction ")]
        predicted = line.split(" prediction ")[1].split(" confidence ")[0]
        conf = float(line.rsplit(" ", 1)[1])
        assert 0.5 <= conf <= 1.0
        right += predicted == name.split(" ")[0]
    assert right >= 16


def test_engines_agree(trained_run, separable_split, tmp_path, capsys):
    test_dir = os.path.join(separable_split, "test")
    for engine in ("onnx", "keras"):
        assert inference_main([test_dir, "--recursive", "--model", trained_run, "--engine", engine,
                               "--output", str(tmp_path / f"{engine}.csv")]) == 0
    a = read_csv(tmp_path / "onnx.csv")
    b = read_csv(tmp_path / "keras.csv")
    assert [r["path"] for r in a] == [r["path"] for r in b]
    diff = max(abs(float(x["p_pg"]) - float(y["p_pg"])) for x, y in zip(a, b))
    assert diff <= 1e-4
    assert all(abs(float(r["p_cex"]) + float(r["p_pg"]) - 1) < 1e-5 for r in a)


def _mixed_folder(root):
    rng = np.random.default_rng(7)
    os.makedirs(root)
    good = {}
    separable_image(rng, 0).save(os.path.join(root, "rgb.png")); good["rgb.png"] = "cex"
    separable_image(rng, 1).convert("L").save(os.path.join(root, "grey.png")); good["grey.png"] = "pg"
    separable_image(rng, 0).convert("RGBA").save(os.path.join(root, "rgba.png")); good["rgba.png"] = "cex"
    arr16 = (np.asarray(separable_image(rng, 1).convert("L")).astype(np.uint16) * 257)
    Image.fromarray(arr16).save(os.path.join(root, "sixteen.png")); good["sixteen.png"] = "pg"
    separable_image(rng, 0).save(os.path.join(root, "photo.jpg"), quality=92); good["photo.jpg"] = "cex"
    separable_image(rng, 1).convert("P").save(os.path.join(root, "palette.gif")); good["palette.gif"] = "pg"
    separable_image(rng, 0).save(os.path.join(root, "scan.tif")); good["scan.tif"] = "cex"
    separable_image(rng, 1, size=(2600, 2100)).save(os.path.join(root, "large.png")); good["large.png"] = "pg"
    data = open(os.path.join(root, "rgb.png"), "rb").read()
    open(os.path.join(root, "empty.png"), "wb").close()
    open(os.path.join(root, "truncated.png"), "wb").write(data[: len(data) // 2])
    open(os.path.join(root, "text.png"), "w").write("this is not a PNG\n")
    return good, {"empty.png", "truncated.png", "text.png"}


def test_mixed_folder_one_row_per_file(trained_run, tmp_path, capsys):
    folder = str(tmp_path / "mixed")
    good, bad = _mixed_folder(folder)
    out = str(tmp_path / "res.csv")
    code = inference_main([folder, "--model", trained_run, "--output", out])
    lines, err = _out_lines(capsys)
    assert code == 1
    rows = {os.path.basename(r["path"]): r for r in read_csv(out)}
    assert set(rows) == set(good) | bad
    assert {n for n, r in rows.items() if r["error"]} == bad
    for n in bad:
        assert f"{n}:" in err and rows[n]["predicted"] == ""
    assert "empty" in rows["empty.png"]["error"]
    for n, cls in good.items():
        assert rows[n]["predicted"] == cls, (n, rows[n])
    assert len(lines) == len(good)


def test_pixel_limit_refuses_large_images(trained_run, tmp_path, capsys):
    folder = tmp_path / "big"
    folder.mkdir()
    separable_image(np.random.default_rng(0), 0, size=(600, 500)).save(folder / "big.png")
    code = inference_main([str(folder), "--model", trained_run, "--max-pixels", "100000",
                           "--output", str(tmp_path / "r.json")])
    assert code == 1
    doc = json.load(open(tmp_path / "r.json"))
    assert doc["classes"] == ["cex", "pg"]
    assert "over the limit" in doc["results"][0]["error"]


def test_cluster_outputs(trained_run, separable_split, tmp_path, capsys):
    out_dir = str(tmp_path / "clu")
    code = inference_main([os.path.join(separable_split, "test"), "--recursive", "--model", trained_run,
                           "--cluster", "2", "--out-dir", out_dir])
    assert code == 0
    rows = read_csv(os.path.join(out_dir, "clusters.csv"))
    assert len(rows) == 18 and {r["cluster"] for r in rows} == {"0", "1"}
    with Image.open(os.path.join(out_dir, "clusters.png")) as im:
        assert im.width > 300


def test_model_resolution(trained_run, tmp_path, capsys, monkeypatch):
    runs = os.path.dirname(trained_run)
    monkeypatch.setenv("GA_CPU_FLAGS", "avx2")  # no INT8 unit: the float32 ONNX (test_precision.py: with one)
    # Default: the newest complete run; an unfinished run folder is never chosen.
    unfinished = os.path.join(runs, "GA_9999-01-01_00-00-00")
    shutil.copytree(trained_run, unfinished)
    open(os.path.join(unfinished, "RUNNING"), "w").close()
    try:
        m = load_model(None, runs_root=runs)
        assert os.path.dirname(m.source) == trained_run and m.engine == "onnx"
    finally:
        shutil.rmtree(unfinished)
    # No run at all: one line saying how to train one.
    (tmp_path / "imgs").mkdir()
    separable_image(np.random.default_rng(1), 0).save(tmp_path / "imgs" / "a.png")
    capsys.readouterr()
    code = inference_main([str(tmp_path / "imgs"), "--runs-root", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 2 and "python main.py" in err and err.count("\n") == 1
    # A bare .onnx file carries its labels in its metadata.
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(os.path.join(trained_run, "GAweights.onnx"), lone / "m.onnx")
    assert load_model(str(lone / "m.onnx")).labels["classes"] == ["cex", "pg"]
    # A .keras file needs labels.json beside it.
    shutil.copy(os.path.join(trained_run, "GAmodel.keras"), lone / "m.keras")
    with pytest.raises(ModelError, match="no labels.json"):
        load_model(str(lone / "m.keras"))
    shutil.copy(os.path.join(trained_run, "labels.json"), lone / "labels.json")
    assert load_model(str(lone / "m.keras"), engine="keras").engine == "keras"


def test_labels_that_disagree_with_the_model(trained_run, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(trained_run, d)
    doc = json.load(open(d / "labels.json"))
    doc.update(task="multilabel", classes=["a", "b", "c"], thresholds={"a": 0.5, "b": 0.5, "c": 0.5})
    json.dump(doc, open(d / "labels.json", "w"))
    with pytest.raises(ModelError, match=r"1 output\(s\) but its labels.json lists"):
        load_model(str(d))


@pytest.mark.parametrize("name", ["GAweights.onnx", "GAmodel.keras", "GAweights.h5"])
def test_truncated_model_files_name_the_file(trained_run, tmp_path, name):
    d = tmp_path / "m"
    shutil.copytree(trained_run, d)
    data = open(d / name, "rb").read()
    open(d / name, "wb").write(data[: len(data) // 3])
    engine = "onnx" if name.endswith(".onnx") else "keras"
    if name.endswith(".h5"):
        os.remove(d / "GAmodel.keras")
    with pytest.raises(ModelError, match=name.replace(".", r"\.")):
        load_model(str(d), engine=engine)


def test_lambda_model_is_refused_without_unsafe(tmp_path):
    inp = keras.Input((8, 8, 3))
    out = keras.layers.Lambda(lambda x: x * 2.0)(inp)
    path = str(tmp_path / "lam.keras")
    keras.Model(inp, out).save(path)
    with pytest.raises(ModelError, match="unsafe=True"):
        load_keras(path)
    assert load_keras(path, unsafe=True) is not None


def _stack(path, rng, classes=(0, 1, 0)):
    """A multi-page TIFF, one separable crop of each class index a page."""
    pages = [separable_image(rng, c, (40, 40)) for c in classes]
    pages[0].save(path, save_all=True, append_images=pages[1:])


def test_globs_list_files_and_tiff_stacks(trained_run, tmp_path):
    """A quoted glob, a 3-page TIFF stack and an @list file each give one row per image;
    a list naming a missing file reports it and exits 1. inference.py's own argv, in this
    interpreter (test_commands.py::test_workbench_commands types them in a shell)."""
    from helpers import run_here

    rng = np.random.default_rng(3)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        separable_image(rng, i % 2).save(frames / f"f{i}.png")
    separable_image(rng, 0).save(frames / "other.jpg")
    _stack(frames / "stack.tif", rng)
    out = tmp_path / "glob.csv"
    run_here("inference.py", str(frames / "*.png"), str(frames / "stack.tif"), "--model", trained_run,
               "--output", out)
    names = [os.path.basename(r["path"]) for r in read_csv(out)]
    assert names == ["f0.png", "f1.png", "f2.png", "stack.tif#p0", "stack.tif#p1", "stack.tif#p2"]
    stack_rows = read_csv(out)[3:]
    assert [r["predicted"] for r in stack_rows] == ["cex", "pg", "cex"] and not any(r["error"] for r in stack_rows)

    (tmp_path / "list.txt").write_text("# frames to label\nframes/f1.png\n\nframes/gone.png\n"
                                       f"{frames / 'stack.tif'}\n")
    out = tmp_path / "list.csv"
    proc = run_here("inference.py", f"@{tmp_path / 'list.txt'}", "--model", trained_run, "--output", out,
                      expect=1)
    rows = read_csv(out)
    assert [os.path.basename(r["path"]) for r in rows] == ["f1.png", "gone.png", "stack.tif#p0", "stack.tif#p1",
                                                           "stack.tif#p2"]
    assert [bool(r["error"]) for r in rows] == [False, True, False, False, False]
    assert any("gone.png" in line for line in proc.stderr.splitlines() if line.startswith("error:"))

    proc = run_here("inference.py", f"@{tmp_path / 'nolist.txt'}", "--model", trained_run, expect=2)
    assert proc.stderr.strip().splitlines()[-1].startswith("error: cannot read the list file")


def test_tiff_stacks_are_scanned_and_evaluated_page_by_page(trained_run, tmp_path, capsys):
    rng = np.random.default_rng(4)
    _stack(tmp_path / "stack.tif", rng)
    assert inference_main([str(tmp_path / "stack.tif"), "--scan", "--tile", "40", "--model", trained_run,
                           "--out-dir", str(tmp_path / "scan")]) == 0
    out = capsys.readouterr().out
    assert [l.split(":")[0] for l in out.splitlines() if l.startswith("Frame ")] == [
        f"Frame stack.tif#p{i}" for i in range(3)]
    assert sorted(p.name for p in (tmp_path / "scan").glob("*_tiles.csv")) == [
        f"stack_p{i}_tiles.csv" for i in range(3)]

    labelled = tmp_path / "labelled"
    for cls, idx in (("cex", 0), ("pg", 1)):
        (labelled / cls).mkdir(parents=True)
        _stack(labelled / cls / "stack.tif", rng, (idx,) * 3)
        separable_image(rng, idx).save(labelled / cls / "one.png")
    assert inference_main([str(labelled), "--evaluate", "--model", trained_run,
                           "--out-dir", str(tmp_path / "eval")]) == 0
    rows = read_csv(tmp_path / "eval" / "predictions.csv")
    assert len(rows) == 8
    assert sum(r["path"].endswith("stack.tif#p2") for r in rows) == 2


def test_a_list_file_naming_a_list_is_not_followed(tmp_path, monkeypatch):
    from ga.inputs import list_inputs

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "self.txt").write_text("@self.txt\na.png\n# a comment\n\nmissing.png\n")
    files, missing = list_inputs(["@self.txt"])
    assert files == ["@self.txt", "a.png", "missing.png"] and missing == []
