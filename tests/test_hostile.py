"""What a careless or hostile run folder, labels.json or input does: one line and exit 2 (or a
logged skip), never a traceback, a file from outside the folder, or memory exhausted."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from helpers import error_lines, run_here

LABELS = {"task": "binary", "classes": ["cex", "pg"], "positive_class": "pg", "thresholds": {"pg": 0.5},
          "input_size": [32, 32], "resize": [32, 32], "center_crop": None, "preprocessing": "scale_01"}


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A copy of the shared run to spoil."""
    dst = tmp_path / os.path.basename(trained_run)
    shutil.copytree(trained_run, dst)
    return dst


def test_the_report_embeds_only_real_pngs_of_the_run_folder(run_copy, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:the secret line")
    os.symlink(secret, run_copy / "evil.png")  # a link to a file outside
    (run_copy / "fake.png").write_text("not an image, the secret line")  # not PNG content
    (run_copy / "folder.png").mkdir()  # a folder named like a figure
    real = [f for f in os.listdir(run_copy) if f.endswith(".png") and f not in ("evil.png", "fake.png", "folder.png")]
    proc = run_here("-m", "ga", "report", run_copy)
    page = (run_copy / "report.html").read_text(encoding="utf-8")
    assert "secret line" not in page and "cm9vdDp4" not in page  # nor in base64
    for name in ("evil.png", "fake.png", "folder.png"):
        assert f"figure {name} left out of the page" in proc.stderr
    assert page.count("data:image/png;base64,") == len(real) > 0


@pytest.mark.parametrize("spoil, needle", [
    (lambda d: (d / "config.yaml").write_text("!!python/object/apply:os.system ['echo hi']\n"), "config.yaml: cannot be read"),
    (lambda d: (d / "config.yaml").write_text("- a\n- list\n"), "config.yaml is a mapping, this is a list"),
    (lambda d: (d / "metrics.json").write_text("{not json"), "metrics.json: cannot be read"),
    (lambda d: (d / "metrics.json").write_text(json.dumps({"training": "x", "accuracy": "high"})),
     "holds values of unexpected types"),
])
def test_a_spoilt_run_folder_gives_the_report_one_line(run_copy, spoil, needle):
    spoil(run_copy)
    proc = run_here("-m", "ga", "report", run_copy, expect=2)
    (line,) = error_lines(proc)
    assert needle in line and "Traceback" not in proc.stderr


@pytest.mark.parametrize("change, needle", [
    ({"thresholds": {"pg": float("nan")}}, "threshold of 'pg' must be a number between 0 and 1"),
    ({"thresholds": {"pg": float("inf")}}, "threshold of 'pg'"),
    ({"thresholds": {"pg": 1.5}}, "threshold of 'pg'"),
    ({"thresholds": {"pg": "0.5"}}, "threshold of 'pg'"),
    ({"thresholds": {"other": 0.5}}, "threshold for 'other', which is not one of the classes"),
    ({"thresholds": [0.5]}, "thresholds must be a mapping"),
    ({"classes": ["cex", "cex"]}, "classes must be distinct"),
    ({"classes": [{"a": 1}, {"b": 2}]}, "task or classes are malformed"),
    ({"task": ["binary"]}, "task or classes are malformed"),
    ({"input_size": [99999999999, 32]}, "input_size must be [height, width] with each a whole number from 8 to 2048"),
    ({"input_size": [5000, 5000]}, "input_size must be"),
    ({"input_size": [32.5, 32]}, "input_size must be"),
    ({"center_crop": [99999, -1]}, "center_crop must be"),
    ({"center_crop": [40, 40]}, "center_crop [40, 40] is larger than resize [32, 32]"),
    ({"preprocessing": 3}, "preprocessing must be a name"),
])
def test_a_hostile_labels_json_is_one_line_before_any_model_is_built(tmp_path, change, needle):
    """labels.json beside an ONNX file (the file is never read: the check comes first)."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "labels.json").write_text(json.dumps({**LABELS, **change}))
    (folder / "m.onnx").write_bytes(b"not read")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "a.png")
    proc = run_here("inference.py", tmp_path / "a.png", "--model", folder / "m.onnx", expect=2)
    (line,) = error_lines(proc)
    assert needle in line and "Traceback" not in proc.stderr


def test_max_pixels_is_the_limit_not_pillows_own():
    """A 95-megapixel frame (over Pillow's 89.5 M bomb warning) is read under the default
    100 M limit and under --max-pixels 200000000, and refused, with the limit named, under 90 M."""
    import io

    from ga.images import ImageProblem, checked

    buf = io.BytesIO()
    Image.new("1", (10000, 9500)).save(buf, "PNG")  # 95 M pixels, a few kB
    data = buf.getvalue()
    assert checked(data) == "PNG" and checked(data, max_pixels=200_000_000) == "PNG"
    with pytest.raises(ImageProblem, match="95000000 pixels is over the limit of 90000000"):
        checked(data, max_pixels=90_000_000)


def test_a_labels_csv_field_over_the_csv_limit_is_one_line_naming_the_line(tmp_path):
    folder = tmp_path / "labelled"
    folder.mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / "a.png")
    (folder / "labels.csv").write_text("filename,label\na.png,cex\n" + "b.png," + "x" * 200_000 + "\n")
    proc = run_here("split_data.py", "--source", folder, "--dest", tmp_path / "out", "--no-progress", expect=2)
    (line,) = error_lines(proc)
    assert f"{folder / 'labels.csv'} line 3: not a CSV row" in line and "Traceback" not in proc.stderr


def test_a_newline_in_a_name_cannot_forge_a_printed_line(trained_run, tmp_path):
    """A frame or image named with a newline and a fake line after it: every printed and logged
    line shows the name escaped, so `ALERT` and `File` lines are one per alert and per image."""
    frames = tmp_path / "frames"
    frames.mkdir()
    img = np.full((120, 160), 25, np.uint8)
    img[40:80, 60:100] = 200
    forged = "f_20261201T100000.png\nALERT 10:00:00: pg_fraction > 0 (value 1 on frame x).png"
    Image.fromarray(img).save(frames / forged)
    proc = run_here("-m", "ga", "monitor", frames, "--model", trained_run, "--out-dir", tmp_path / "out",
                    "--alert", "particles > 0", "--no-progress")
    alert_lines = [line for line in proc.stderr.splitlines() if line.startswith("ALERT")]
    assert len(alert_lines) == 1 and "f_20261201T100000.png\\nALERT" in alert_lines[0]
    labelled = run_here("inference.py", frames, "--model", trained_run)
    assert [line.startswith("File ") for line in labelled.stdout.splitlines()] == [True]
    assert "\\nALERT" in labelled.stdout


def test_explain_and_scan_of_two_files_with_one_name_keep_both(trained_run, tmp_path):
    """--recursive over a/x.png and b/x.png: two Grad-CAM figures and two scans, under their
    relative paths; a name that occurs once stays flat."""
    rng = np.random.default_rng(0)
    for sub, name in (("a", "x.png"), ("b", "x.png"), ("b", "y.png")):
        (tmp_path / "in" / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "in" / sub / name)
    out = tmp_path / "out"
    run_here("inference.py", tmp_path / "in", "--recursive", "--model", trained_run, "--explain", "--out-dir", out,
             "--engine", "keras")
    written = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)
    assert written == ["a/x_gradcam.png", "b/x_gradcam.png", "y_gradcam.png"]
    run_here("inference.py", tmp_path / "in", "--recursive", "--scan", "--tile", "24", "--model", trained_run,
             "--out-dir", tmp_path / "scan")
    tables = sorted(os.path.relpath(os.path.join(d, f), tmp_path / "scan") for d, _, fs in os.walk(tmp_path / "scan")
                    for f in fs if f.endswith("_tiles.csv"))
    assert tables == ["a/x_tiles.csv", "b/x_tiles.csv", "y_tiles.csv"]
