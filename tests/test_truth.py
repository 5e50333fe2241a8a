"""Detection scored against annotations: `ga monitor FRAMES --truth FILE` (COCO JSON or a CSV
of per-frame counts), the matching by hand, and the synthetic process's own COCO truth,
rendered at other scales and polarities."""

import json
import math
import os

import pytest

from helpers import one_error_line, read_csv
from test_commands import Workspace
from ga.errors import GAError
from ga.monitoring.truth import Truth, box_iou, match, read_truth, score_frame, summary


def _coco(path, images, annotations, categories=(("cex", 1), ("pg", 2))):
    doc = {"images": [{"id": i + 1, "file_name": n, "width": 100, "height": 100} for i, n in enumerate(images)],
           "annotations": [{"id": k + 1, **a} for k, a in enumerate(annotations)],
           "categories": [{"id": i, "name": n} for n, i in categories]}
    path.write_text(json.dumps(doc))
    return str(path)


def test_matching_by_hand(tmp_path):
    """Truth A, B, C and an ignored region; found: A nearly (IoU 0.81), one box between B and C
    (IoU 0.5 with C, 0.33 with B: it takes C), one on the ignored region, one on nothing. Matched
    2 of 3 true, 3 found (the ignored one left out): precision 2/3, recall 2/3."""
    coco = _coco(tmp_path / "c.json", ["f.png"], [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},          # A
        {"image_id": 1, "category_id": 2, "bbox": [20, 0, 10, 10]},         # B
        {"image_id": 1, "category_id": 2, "bbox": [25, 0, 10, 10]},         # C
        {"image_id": 1, "category_id": 1, "bbox": [60, 60, 10, 10], "ignore": 1},
    ])
    truth = read_truth(coco)
    assert truth.boxes["f.png"][0] == (0.0, 0.0, 10.0, 10.0, "cex") and truth.count("f.png") == 3
    found = [(0, 0, 10, 9), (0, 0, 9, 9), (25, 0, 35, 10), (61, 61, 70, 70), (80, 80, 90, 90)]
    # (0, 0, 10, 9) against A: 90/100 = 0.9 beats (0, 0, 9, 9)'s 0.81, so the second is spurious
    row = score_frame("f.png", found, truth)
    assert row["matched"] == 2 and row["found"] == 4 and row["true"] == 3
    assert row["precision"] == pytest.approx(2 / 4) and row["recall"] == pytest.approx(2 / 3)
    assert row["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3)) and row["count_error"] == 1
    assert match([(0, 0, 10, 10)], [(5, 0, 15, 10)]) == []  # IoU 1/3 < 0.5
    assert match([(0, 0, 10, 10)], [(0, 0, 10, 10)], min_iou=0.99) == [(0, 0)]


def test_polygons_counts_and_sums(tmp_path):
    coco = _coco(tmp_path / "p.json", ["a.png", "b.png"], [
        {"image_id": 2, "category_id": 1, "segmentation": [[10, 10, 30, 12, 20, 40]]}])
    truth = read_truth(coco)
    assert truth.boxes["b.png"] == [(10.0, 10.0, 30.0, 40.0, "cex")] and truth.boxes["a.png"] == []
    counts = tmp_path / "n.csv"
    counts.write_text("frame,count\nsub/a.png,3\nb.png,0\n")
    n = read_truth(str(counts))
    assert not n.has_boxes and n.counts == {"a.png": 3, "b.png": 0}
    rows = [score_frame("a.png", [(0, 0, 1, 1)] * 2, n), score_frame("b.png", [(0, 0, 1, 1)], n)]
    assert [r["count_error"] for r in rows] == [-1, 1] and rows[0]["precision"] == ""
    assert summary(rows, False) == {"frames": 2, "true": 3, "found": 3, "count_mae": 1.0}
    boxed = summary([{"true": 4, "found": 2, "matched": 2, "count_error": -2}], True)
    assert boxed["precision"] == 1.0 and boxed["recall"] == 0.5 and boxed["f1"] == pytest.approx(2 / 3)
    empty = score_frame("a.png", [], Truth("x", boxes={"a.png": []}, counts={"a.png": 0}))
    assert math.isnan(empty["precision"]) and math.isnan(empty["recall"])


@pytest.mark.parametrize("suffix, content, message", [
    (".json", "{not json", "not a COCO JSON file"),
    (".json", '{"images": []}', "needs 'images' and 'annotations' lists"),
    (".json", '{"images": [{"id": 1}], "annotations": []}', "every image needs an id and a file_name"),
    (".json", '{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"id": 7, "image_id": 2, '
              '"bbox": [0,0,1,1]}]}', "annotation 7 names no image"),
    (".json", '{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"id": 3, "image_id": 1, '
              '"bbox": [0,0,-1,1]}]}', "annotation 3: bbox must be [x, y, width, height]"),
    (".json", '{"images": [], "annotations": []}', "no images in it"),
    (".csv", "frame,n\na.png,1\n", "needs the columns frame and count"),
    (".csv", "frame,count\na.png,two\n", "line 2: count 'two' is not a whole number"),
    (".csv", "frame,count\na.png,-1\n", "line 2: count -1 is negative"),
])
def test_bad_truth_files_are_one_line(tmp_path, suffix, content, message):
    path = tmp_path / f"t{suffix}"
    path.write_text(content)
    with pytest.raises(GAError) as err:
        read_truth(str(path))
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("truth"))
    ws.run("python -m ga synth process --out data/process --frames 4 --seed 31337")
    return ws


def test_truth_command_scores_the_synthetic_process(ws):
    """The documented command: per-frame rows and a summary line; the COCO truth holds the
    in-focus particles of truth/particles.csv (out-of-focus ones as regions to ignore)."""
    proc = ws.run("python -m ga monitor data/process --truth data/process/truth/coco.json --out-dir data/scores")
    rows = read_csv(ws / "data/scores/detection_scores.csv")
    assert [r["frame"] for r in rows] == sorted(r["frame"] for r in read_csv(ws / "data/process/truth/frames.csv"))
    truth = read_csv(ws / "data/process/truth/frames.csv")
    assert [int(r["true"]) for r in rows] == [int(t["particles"]) for t in truth]
    doc = json.load(open(ws / "data/scores/detection_summary.json"))
    assert doc["recall"] >= 0.9 and doc["precision"] >= 0.9 and doc["frames"] == 4
    line = proc.stdout.splitlines()[0]
    assert line.startswith("4 frame(s): ") and f"recall {doc['recall']:.3f}" in line
    coco = json.load(open(ws / "data/process/truth/coco.json"))
    drawn = read_csv(ws / "data/process/truth/particles.csv")
    assert len(coco["annotations"]) == len(drawn)
    assert sum(not a["ignore"] for a in coco["annotations"]) == sum(r["in_focus"] == "1" for r in drawn)


def test_truth_errors_are_one_line_exit_2(ws, tmp_path):
    (ws / "bad.json").write_text("{oops")
    proc = ws.run("python -m ga monitor data/process --truth bad.json", expect=2, here=True)
    assert "--truth: bad.json: not a COCO JSON file" in one_error_line(proc)
    _coco(ws / "other.json", ["frame_99999.png"], [])
    proc = ws.run("python -m ga monitor data/process --truth other.json", expect=2, here=True)
    assert "names 1 frame(s) the inputs do not hold, e.g. frame_99999.png" in one_error_line(proc)
    proc = ws.run("python -m ga monitor data/process --truth other.json --watch", expect=2, here=True)
    assert proc.stderr.strip().splitlines()[-1].startswith("ga monitor: error: --truth goes with frames given at once")


def test_counts_truth_from_a_shell(ws):
    names = [r["frame"] for r in read_csv(ws / "data/process/truth/frames.csv")]
    (ws / "counts.csv").write_text("frame,count\n" + "".join(f"{n},5\n" for n in names[:2]))
    proc = ws.run("python -m ga monitor data/process --truth counts.csv --out-dir data/counted")
    rows = read_csv(ws / "data/counted/detection_scores.csv")
    assert len(rows) == 2 and all(r["true"] == "5" and r["precision"] == "" for r in rows)
    assert "recall" not in proc.stdout.splitlines()[0] and "mean count error" in proc.stdout


@pytest.mark.parametrize("scale, polarity", [(0.5, "bright"), (1.0, "dark")])
def test_the_process_at_another_scale_and_polarity(tmp_path, scale, polarity):
    """--scale resizes frames and boxes together; --polarity dark inverts the grey levels."""
    import numpy as np
    from PIL import Image

    from ga.synthetic import generate_process

    base = generate_process(str(tmp_path / "base"), frames=1, seed=5)
    other = generate_process(str(tmp_path / "other"), frames=1, seed=5, scale=scale, polarity=polarity)
    name = read_csv(tmp_path / "base/truth/frames.csv")[0]["frame"]
    a, b = (np.asarray(Image.open(f"{d}/{name}").convert("L"), np.float32) for d in (base, other))
    assert b.shape == (round(a.shape[0] * scale), round(a.shape[1] * scale))
    if polarity == "dark":
        assert np.array_equal(b, 255 - a)
    ta, tb = read_csv(tmp_path / "base/truth/particles.csv"), read_csv(tmp_path / "other/truth/particles.csv")
    assert len(ta) == len(tb)
    for p, q in zip(ta, tb):
        assert abs(int(q["x0"]) - int(p["x0"]) * scale) <= 1 and abs(int(q["y1"]) - int(p["y1"]) * scale) <= 1


def test_synth_process_at_triple_scale_from_a_shell(ws):
    """The documented command (one frame of its twelve): frames three times the pixels across,
    and the COCO truth's image sizes and boxes with them."""
    from PIL import Image

    ws.run("python -m ga synth process --out data/process_x3 --frames 12 --scale 3", "--frames", "1")
    coco = json.load(open(ws / "data/process_x3/truth/coco.json"))
    (image,) = coco["images"]
    assert (image["width"], image["height"]) == (3072, 2304)
    assert Image.open(ws / "data/process_x3" / image["file_name"]).size == (3072, 2304)
    assert max(a["bbox"][0] + a["bbox"][2] for a in coco["annotations"]) > 2048


def test_a_large_frame_is_searched_reduced_and_measured_in_its_own_pixels(tmp_path):
    """A frame three times the reference's pixels across is searched at a third of its scale
    (auto detection_scale): the same particles as a search of every pixel (boxes at IoU >= 0.8,
    areas within 10%), and as many truth boxes found (one fewer at most)."""
    import numpy as np
    from PIL import Image

    from ga.config import load_config
    from ga.monitoring.detection import detect, resolve
    from ga.synthetic import generate_process

    frames = generate_process(str(tmp_path / "p"), frames=1, seed=3, scale=3.0)
    name = read_csv(f"{frames}/truth/frames.csv")[0]["frame"]
    img = np.asarray(Image.open(f"{frames}/{name}"))
    auto = load_config(None).monitor
    assert resolve(img, auto).detection_scale == pytest.approx(1 / 3)
    reduced = detect(img, auto)
    full = detect(img, load_config(None, ["monitor.detection_scale=1"]).monitor)
    assert len(reduced) >= 10 and abs(len(reduced) - len(full)) <= max(1, len(full) // 10)
    pairs = [(p, max(full, key=lambda q: box_iou(p.box, q.box))) for p in reduced]
    close = [(p, q) for p, q in pairs if box_iou(p.box, q.box) >= 0.8]
    assert len(close) >= 0.9 * len(reduced)
    assert all(abs(p.geometry["area_px"] / q.geometry["area_px"] - 1) < 0.1 for p, q in close)
    truth = [tuple(int(r[k]) for k in ("x0", "y0", "x1", "y1")) for r in read_csv(f"{frames}/truth/particles.csv")
             if r["in_focus"] == "1"]
    assert len(match([p.box for p in reduced], truth)) >= len(match([p.box for p in full], truth)) - 1


@pytest.mark.parametrize("shape, sets, factor", [
    ((768, 1024), [], 1), ((1536, 2048), [], 2), ((2848, 4288), [], 3),
    ((2848, 4288), ["monitor.min_sharpness=0.1"], 1),  # a cut measured at every pixel
    ((2848, 4288), ["monitor.close_radius=1"], 1),  # the closing would vanish
    ((2848, 4288), ["monitor.min_area=40"], 1),  # the smallest particle would be a few pixels
    ((768, 1024), ["monitor.detection_scale=0.25"], 4)])
def test_the_detection_scale_rule(shape, sets, factor):
    import numpy as np

    from ga.config import load_config
    from ga.monitoring.detection import at_scale, resolve, working_factor

    cfg = resolve(np.zeros(shape, np.uint8), load_config(None, sets).monitor)
    assert working_factor(cfg, shape) == factor
    small = at_scale(cfg, factor)
    assert small.min_area == max(1, round(cfg.min_area / factor ** 2))
    assert small.close_radius >= (1 if cfg.close_radius else 0)


def _discs(k, gap):
    """Two discs of radii 20k and 15k px whose centres are `gap` of the radii's sum apart."""
    import numpy as np

    r1, r2 = 20 * k, 15 * k
    yy, xx = np.mgrid[0:60 * k, 0:100 * k]
    c1 = 30 * k
    c2 = c1 + gap * (r1 + r2)
    return ((xx - c1) ** 2 + (yy - 30 * k) ** 2 <= r1 ** 2) | ((xx - c2) ** 2 + (yy - 30 * k) ** 2 <= r2 ** 2)


@pytest.mark.parametrize("k", [1, 3])
def test_touching_discs_are_cut_at_a_narrow_neck_at_any_scale(k):
    """The neck rule reads widths as ratios: the same verdicts at 1x and 3x. A neck under half
    the smaller disc's radius is cut (auto); a neck at 0.61 of it is cut only with `on`;
    `off` never cuts. Each part holds its own disc."""
    import numpy as np

    from ga.config import load_config
    from ga.monitoring.touching import labelled

    def parts(mask, mode):
        cfg = load_config(None, [f"monitor.split_touching={mode}", f"monitor.min_area={40 * k * k}"]).monitor
        return labelled(mask, cfg)

    narrow, wide = _discs(k, 0.95), _discs(k, 0.85)
    cut = parts(narrow, "auto")
    assert cut.max() == 2 and parts(narrow, "off").max() == 1
    areas = sorted(np.bincount(cut.ravel())[1:])
    assert areas[0] == pytest.approx(np.pi * (15 * k) ** 2, rel=0.15)
    assert areas[1] == pytest.approx(np.pi * (20 * k) ** 2, rel=0.15)
    assert parts(wide, "auto").max() == 1 and parts(wide, "on").max() == 2


def test_aggregates_and_needle_bundles_are_not_shattered():
    """The synthetic process's granular PG aggregates and CEX needle bundles, each alone on a
    frame: one particle each, with touching particles split (auto and on for aggregates)."""
    import math

    import numpy as np

    from ga.config import load_config
    from ga.monitoring.detection import detect
    from ga.synthetic import _cex_sprite, _pg_sprite, _place

    rng = np.random.default_rng(5)
    for i in range(24):
        img = np.full((400, 400), 30.0, np.float32)
        if i % 2:
            value, alpha = _pg_sprite(rng, float(np.clip(rng.lognormal(math.log(35), 0.25), 12, 60)))
        else:
            value = _cex_sprite(rng, float(np.clip(rng.lognormal(math.log(60), 0.3), 14, 160)))[0]
            alpha = np.ones_like(value)
        _place(img, value, alpha, 200, 200, additive=not i % 2)
        frame = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
        for mode in ("auto", "on") if i % 2 else ("auto",):
            found = detect(frame, load_config(None, [f"monitor.split_touching={mode}"]).monitor)
            assert len(found) == 1, (i, mode, [p.box for p in found])


# ---------------------------------------------------------------------------- calibration


def test_calibrate_then_score_on_a_half_scale_bright_field_process(ws):
    """The documented chain on frames another camera would write (half the pixels across, dark
    particles on a light background): --calibrate finds the polarity and scales the sizes,
    monitor.yaml loads with --config, and the detection it gives is scored. (Measured on 12
    frames per kind, --long: recall and precision >= 0.90 at half and triple scale and
    inverted.)"""
    ws.run("python -m ga synth process --out data/other --frames 6 --seed 31337 --scale 0.5 --polarity dark")
    proc = ws.run("python -m ga monitor data/other --calibrate --out-dir data/calibration")
    assert proc.stdout.splitlines()[0].startswith("calibrated on 6 frame(s) of 512x384")
    chosen = json.load(open(ws / "data/calibration/calibration.json"))["settings"]
    assert chosen["polarity"]["value"] == "dark" and chosen["min_area"]["value"] == 10
    assert chosen["close_radius"]["value"] == 1 and 0.15 < chosen["min_sharpness"]["value"] < 0.4
    assert (ws / "data/calibration/calibration.png").stat().st_size > 20_000
    ws.run("python -m ga monitor data/other --truth data/other/truth/coco.json --config data/calibration/monitor.yaml "
           "--out-dir data/other_scores")
    doc = json.load(open(ws / "data/other_scores/detection_summary.json"))
    assert doc["recall"] >= 0.85 and doc["precision"] >= 0.90, doc


@pytest.mark.long
@pytest.mark.parametrize("scale, polarity", [(0.5, "bright"), (3.0, "bright"), (1.0, "dark")])
def test_calibrated_detection_at_other_scales_and_polarity(tmp_path, scale, polarity):
    """The synthetic process at half and triple scale and inverted (12 frames, seed 0), after
    --calibrate: recall and precision >= 0.90, as at the generator's own scale."""
    from ga.monitoring.calibration import calibrate
    from ga.config import load_config
    from ga.synthetic import generate_process
    from ga.monitoring.truth import score_detection

    frames = generate_process(str(tmp_path / "p"), frames=12, seed=0, scale=scale, polarity=polarity)
    calibrate([frames], load_config(None).monitor, str(tmp_path / "cal"))
    cfg = load_config(str(tmp_path / "cal/monitor.yaml")).monitor
    doc = score_detection([frames], f"{frames}/truth/coco.json", cfg, str(tmp_path / "scores"))
    assert doc["recall"] >= 0.90 and doc["precision"] >= 0.90, doc


def test_calibration_bad_inputs(tmp_path):
    """Frames of different sizes: one line, exit 2. Frames with no objects: the documented
    fallback (the frame-scaled defaults), said in calibration.json. One frame is enough."""
    from PIL import Image

    from helpers import run_here

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("L", (64, 48), 20).save(mixed / "a.png")
    Image.new("L", (80, 48), 20).save(mixed / "b.png")
    proc = run_here("-m", "ga", "monitor", str(mixed), "--calibrate", "--out-dir", str(tmp_path / "c1"), expect=2)
    assert "different sizes (64x48 and 80x48)" in one_error_line(proc)
    blank = tmp_path / "blank"
    blank.mkdir()
    Image.new("L", (384, 288), 20).save(blank / "a.png")
    proc = run_here("-m", "ga", "monitor", str(blank), "--calibrate", "--out-dir", str(tmp_path / "c2"))
    doc = json.load(open(tmp_path / "c2/calibration.json"))
    assert doc["objects"] == 0 and doc["settings"]["min_sharpness"]["why"].startswith("no objects found")
    assert "calibrated on 1 frame(s) of 384x288, 0 object(s)" in proc.stdout
    proc = run_here("-m", "ga", "monitor", str(blank), "--calibrate", "--calibrate-frames", "0", expect=2)
    assert "--calibrate-frames must be at least 1" in proc.stderr


# ---------------------------------------------------------------------------- crops for labelling


def test_save_crops_cluster_into_class_like_folders_and_add_never_overwrite(tmp_path):
    """The documented command on four mid-run frames of the process (PG 20-40%): every kept
    particle's crop and its crops.csv row; two k-means clusters that follow the classes (each
    at least 90% one class, by the truth's boxes); a second run into the same folder adds
    crops under new names and rows, and leaves the first ones as they were."""
    import csv
    import collections
    import shutil

    from ga.synthetic import generate_process
    from ga.monitoring.truth import box_iou

    ws = Workspace(tmp_path)
    process = generate_process(str(ws / "all"), frames=11, seed=9)
    (ws / "data/frames").mkdir(parents=True)
    names = sorted(f for f in os.listdir(process) if f.endswith(".png"))[4:8]
    for n in names:
        shutil.copyfile(os.path.join(process, n), ws / "data/frames" / n)
    proc = ws.run("python -m ga monitor data/frames --save-crops data/crops --cluster 2")
    rows = read_csv(ws / "data/crops/crops.csv")
    assert proc.stdout.startswith(f"{len(rows)} crop(s) of 4 frame(s) in 2 clusters")
    truth = read_truth(os.path.join(process, "truth/coco.json"))
    by = collections.defaultdict(collections.Counter)
    for r in rows:
        box = tuple(int(r[k]) for k in ("x0", "y0", "x1", "y1"))
        best = max(truth.boxes[r["frame"]], key=lambda t: box_iou(box, t[:4]))
        if box_iou(box, best[:4]) >= 0.5:
            by[r["cluster"]][best[4]] += 1
        assert os.path.isfile(ws / "data/crops" / r["crop"]) and r["crop"].startswith(f"cluster_{r['cluster']}/")
    assert sorted(by) == ["0", "1"] and {c.most_common(1)[0][0] for c in by.values()} == {"cex", "pg"}
    assert all(c.most_common(1)[0][1] >= 0.9 * sum(c.values()) for c in by.values()), by
    first = {r["crop"]: open(ws / "data/crops" / r["crop"], "rb").read() for r in rows}
    ws.run("python -m ga monitor data/frames --save-crops data/crops", "--no-progress")
    again = read_csv(ws / "data/crops/crops.csv")
    assert len(again) == 2 * len(rows) and len({r["crop"] for r in again}) == len(again)
    assert all(open(ws / "data/crops" / c, "rb").read() == b for c, b in first.items())
    with open(ws / "data/crops/crops.csv", newline="") as fh:
        assert next(csv.reader(fh))[0] == "crop"


@pytest.mark.parametrize("extra, message", [
    (["--cluster", "2"], "--cluster goes with --save-crops"),
    (["--save-crops", "c", "--cluster", "1"], "--cluster must be at least 2"),
    (["--save-crops", "c", "--truth", "t.json"], "--save-crops goes with frames given at once"),
    (["--save-crops", "c", "--model", "m"], "--model with --save-crops is for --cluster's features"),
])
def test_save_crops_usage_errors(ws, extra, message):
    proc = ws.run("python -m ga monitor data/process", *extra, expect=2, here=True)
    assert message in proc.stderr and "Traceback" not in proc.stderr
