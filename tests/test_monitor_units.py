"""Process monitoring, piece by piece and without a model: detection against the synthetic
process's truth, particle geometry, frame times and sources, the statistics, alert rules,
and the CSV recovery a resumed monitor relies on."""

import csv
import datetime as dt
import math
import os

import numpy as np
import pytest
from PIL import Image

from ga.config import load_config
from ga.errors import GAError
from ga.files import CsvLog, keep_rows
from ga.frames import frames_of, read_frame, rgb8, time_from_name
from ga.monitoring.alerts import parse_rule
from ga.monitoring.detection import crop, detect, feret_diameters, grey
from ga.stats import weighted_percentiles, wilson_interval
from helpers import read_csv

CFG = load_config(None).monitor


def match(found, truth):
    """(true positives, false positives, false negatives) of boxes at IoU >= 0.5, greedy."""
    from ga.monitoring.outputs import box_iou

    used, tp = set(), 0
    for box in found:
        scores = [(box_iou(box, t), i) for i, t in enumerate(truth) if i not in used]
        best = max(scores, default=(0, None))
        if best[0] >= 0.5:
            used.add(best[1])
            tp += 1
    return tp, len(found) - tp, len(truth) - len(used)


@pytest.mark.parametrize("a, b, iou", [
    ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
    ((0, 0, 10, 10), (5, 0, 15, 10), 50 / 150),  # half overlap: 50 of 100 + 100 - 50
    ((0, 0, 10, 10), (2, 2, 8, 8), 36 / 100),  # one inside the other
    ((0, 0, 10, 10), (10, 0, 20, 10), 0.0),  # touching edges
    ((0, 0, 10, 10), (20, 20, 30, 30), 0.0),
    ((0, 0, 4, 2), (1, -1, 3, 5), 4 / 16),  # crossing: 2x2 of 8 + 12 - 4
    ((3, 3, 3, 3), (3, 3, 3, 3), 0.0),  # empty boxes
])
def test_box_iou_by_hand(a, b, iou):
    from ga.monitoring.outputs import box_iou

    assert box_iou(a, b) == pytest.approx(iou) and box_iou(b, a) == pytest.approx(iou)


def test_score_against_truth_on_known_matches(tmp_path):
    """Two frames whose matches are known: frame 1 has truth A (pg) and B (cex) and finds A
    shifted by 1 px (IoU 81/119, matched, right class), B's neighbour at IoU 1/3 (spurious) and a
    box far away (spurious), so B is missed; frame 2 finds its one truth box exactly but calls it
    cex (matched, wrong class); an out-of-focus truth particle never counts. Fractions: truth
    0.5 and 0.0 against 0.2 and 0.25."""
    from ga.monitoring.outputs import score_against_truth

    proc, out = tmp_path / "process", tmp_path / "monitor"
    (proc / "truth").mkdir(parents=True)
    out.mkdir()

    def write(path, header, rows):
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(rows)

    write(proc / "truth" / "particles.csv", ["frame", "x0", "y0", "x1", "y1", "class", "in_focus"], [
        ["f1.png", 0, 0, 10, 10, "pg", 1], ["f1.png", 40, 40, 50, 50, "cex", 1], ["f1.png", 70, 70, 80, 80, "pg", 0],
        ["f2.png", 0, 0, 20, 20, "pg", 1]])
    write(proc / "truth" / "frames.csv", ["frame", "pg_fraction"], [["f1.png", 0.5], ["f2.png", 0.0]])
    write(out / "particles.csv", ["frame", "x0", "y0", "x1", "y1", "class"], [
        ["f1.png", 1, 1, 11, 11, "pg"], ["f1.png", 45, 40, 55, 50, "cex"], ["f1.png", 200, 200, 210, 210, "cex"],
        ["f2.png", 0, 0, 20, 20, "cex"]])
    write(out / "frames.csv", ["frame", "pg_fraction"], [["f1.png", 0.2], ["f2.png", 0.25]])
    got = score_against_truth(str(proc), str(out))
    assert (got["matched"], got["spurious"], got["missed"]) == (2, 2, 1)
    assert got["recall"] == pytest.approx(2 / 3) and got["precision"] == pytest.approx(2 / 4)
    assert got["class_accuracy"] == pytest.approx(1 / 2)
    assert got["fraction_mae"] == pytest.approx((0.3 + 0.25) / 2) and got["fraction_max_error"] == pytest.approx(0.3)
    assert got["frames"] == 2
    # A stricter IoU: the shifted box (0.68) no longer matches either.
    strict = score_against_truth(str(proc), str(out), min_iou=0.7)
    assert (strict["matched"], strict["spurious"], strict["missed"]) == (1, 3, 2)


# ---------------------------------------------------------------------------- detection


@pytest.fixture(scope="module")
def process(tmp_path_factory):
    """A short synthetic process on a seed the detector's defaults were not tuned on."""
    from ga.synthetic import generate_process

    return generate_process(str(tmp_path_factory.mktemp("process") / "frames"), frames=10, seed=424242)


def test_detection_recall_and_precision_against_the_truth(process):
    truth = {}
    for r in read_csv(os.path.join(process, "truth", "particles.csv")):
        if r["in_focus"] == "1":
            truth.setdefault(r["frame"], []).append(tuple(int(r[k]) for k in ("x0", "y0", "x1", "y1")))
    tp = fp = fn = 0
    for name in sorted(truth):
        found = [p.box for p in detect(np.asarray(Image.open(os.path.join(process, name))), CFG)]
        a, b, c = match(found, truth[name])
        tp, fp, fn = tp + a, fp + b, fn + c
    assert tp / (tp + fn) >= 0.90, (tp, fp, fn)
    assert tp / (tp + fp) >= 0.90, (tp, fp, fn)


def test_out_of_focus_particles_are_dropped_and_edges_flagged():
    from PIL import ImageDraw, ImageFilter

    img = Image.new("L", (400, 300), 30)
    d = ImageDraw.Draw(img)
    d.ellipse([60, 60, 120, 120], fill=200)  # sharp
    blurred = Image.new("L", (400, 300), 0)
    ImageDraw.Draw(blurred).ellipse([230, 80, 300, 150], fill=170)
    d.rectangle([0, 200, 40, 260], fill=200)  # cut by the frame's left edge
    frame = np.asarray(img, np.float32) + np.asarray(blurred.filter(ImageFilter.GaussianBlur(5)), np.float32)
    frame = np.clip(frame + np.random.default_rng(0).normal(0, 2, frame.shape), 0, 255).astype(np.uint8)
    every = detect(frame, CFG, keep_dropped=True)
    kept = [p for p in every if not p.dropped]
    assert sorted(p.box[0] for p in kept) == [0, 60]
    assert [p.dropped for p in every if p.box[0] > 200] == ["out of focus"]
    assert [p.edge for p in sorted(kept, key=lambda p: p.box[0])] == [True, False]
    disc = next(p for p in kept if p.box[0] == 60).geometry
    assert disc["eq_diameter_px"] == pytest.approx(61, abs=1.5)
    assert disc["circularity"] > 0.9 and disc["aspect_ratio"] > 0.95


def test_dark_particles_with_polarity_dark_or_auto():
    """A dark particle on a light background: found with polarity dark and with auto (the
    default, which reads the frame's darker tail), not with bright."""
    img = np.full((200, 200), 220, np.uint8)
    img[50:90, 60:150] = 40
    assert detect(img, load_config(None, ["monitor.polarity=bright"]).monitor) == []
    for polarity in ("dark", "auto"):
        (p,) = detect(img, load_config(None, [f"monitor.polarity={polarity}"]).monitor)
        assert p.box == (60, 50, 150, 90)


def test_feret_diameters_of_known_shapes():
    rect = np.zeros((40, 40), bool)
    rect[5:15, 5:35] = True  # 10 x 30 px
    big, small, hull = feret_diameters(rect)
    assert big == pytest.approx(math.hypot(10, 30), rel=1e-3)
    assert small == pytest.approx(10, rel=1e-3) and hull == pytest.approx(300)
    assert feret_diameters(np.ones((1, 1), bool)) == (pytest.approx(math.sqrt(2)), pytest.approx(1.0), 1.0)


def test_crop_is_a_square_window_reflected_at_the_edge():
    frame = np.arange(100 * 80 * 3, dtype=np.uint16).reshape(100, 80, 3).astype(np.uint8)
    c = crop(frame, (0, 10, 20, 20), 0.25)  # 20 x 10 box at the left edge
    assert c.shape == (30, 30, 3)
    inner = crop(frame, (30, 30, 50, 50), 0.25)
    np.testing.assert_array_equal(inner, frame[25:55, 25:55])


def test_grey_and_rgb8_scale_16_bit():
    a16 = np.full((4, 4), 65535, np.uint16)
    assert grey(a16).max() == pytest.approx(255)
    assert rgb8(a16).dtype == np.uint8 and rgb8(a16).max() == 255 and rgb8(a16).shape == (4, 4, 3)


# ---------------------------------------------------------------------------- frames and times


def test_time_from_the_name_then_tags_then_mtime(tmp_path):
    assert time_from_name("run_20261201T101530.png", "%Y%m%dT%H%M%S") == dt.datetime(2026, 12, 1, 10, 15, 30)
    assert time_from_name("img_2026-12-01_10-15-30.123.tif", "%Y-%m-%d_%H-%M-%S.%f").microsecond == 123000
    assert time_from_name("no time here.png", "%Y%m%dT%H%M%S") is None
    tagged = tmp_path / "tagged.jpg"
    exif = Image.Exif()
    exif[306] = "2025:03:04 05:06:07"
    Image.new("RGB", (8, 8)).save(tagged, exif=exif)
    (f,) = frames_of(str(tagged), ["name", "tags", "mtime"], "%Y%m%dT%H%M%S")
    assert (f.time, f.time_source) == (dt.datetime(2025, 3, 4, 5, 6, 7), "tags")
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    os.utime(plain, (1_700_000_000, 1_700_000_000))
    (g,) = frames_of(str(plain), ["name", "tags", "mtime"], "%Y%m%dT%H%M%S")
    assert g.time_source == "mtime" and g.time == dt.datetime.fromtimestamp(1_700_000_000)


def test_every_page_of_a_tiff_stack_is_a_frame(tmp_path):
    import tifffile

    path = tmp_path / "stack.tif"
    pages = [np.full((20, 30), 1000 * (i + 1), np.uint16) for i in range(3)]
    with tifffile.TiffWriter(path) as tif:
        for p in pages:
            tif.write(p, contiguous=False)  # separate pages, not one series
    frames = list(frames_of(str(path), ["mtime"], ""))
    assert [f.name for f in frames] == ["stack.tif#p0", "stack.tif#p1", "stack.tif#p2"]
    assert [(f.time - frames[0].time).total_seconds() for f in frames] == [0, 1, 2]
    for f, p in zip(frames, pages):
        np.testing.assert_array_equal(read_frame(f, 10_000), p)


# ---------------------------------------------------------------------------- statistics


def test_wilson_interval_matches_the_formula():
    from scipy.stats import norm

    k, n = 7, 40
    z = norm.ppf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson_interval(k, n) == (pytest.approx(centre - half), pytest.approx(centre + half))
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_weighted_percentiles_number_and_volume():
    d = [1, 2, 3, 4, 10]
    assert weighted_percentiles(d, None, [0.1, 0.5, 0.9]) == [1, 3, 10]
    assert weighted_percentiles(d, np.array(d, float) ** 3, [0.5]) == [10]  # 10 px holds most of the volume
    assert math.isnan(weighted_percentiles([], None, [0.5])[0])


# ---------------------------------------------------------------------------- alerts


def test_alert_rules_fire_once_on_the_crossing():
    over = parse_rule("pg_fraction > 0.10 over 3 frames", ["pg_fraction"])
    each = parse_rule("pg_fraction>0.1 for 2 frames")
    now = parse_rule("pg_fraction >= 0.3")
    values = [0.0, 0.05, 0.2, 0.2, 0.3, 0.0, "", 0.0, 0.0, 0.5, 0.5]
    fired = {r.text: [i for i, v in enumerate(values) if r.observe({"pg_fraction": v}) is not None]
             for r in (over, each, now)}
    # over: means 0.083, 0.15 (fires on frame 3), ... 0.15 on frame 6 (0.3, 0 and an empty frame
    # left out: still on), 0 on frame 7 (off), 0.167 on frame 9 (fires again); for: two frames
    # over 0.1 on frames 2-3 and 9-10; the empty frame breaks nothing that was on
    assert fired == {"pg_fraction > 0.10 over 3 frames": [3, 9], "pg_fraction>0.1 for 2 frames": [3, 10],
                     "pg_fraction >= 0.3": [4, 9]}


@pytest.mark.parametrize("rule,message", [("pg_fractoin > 0.1", r"no column 'pg_fractoin'; did you mean pg_fraction\?"),
                                          ("pg_fraction is high", "not a rule"),
                                          ("pg_fraction > 0.1 over 0 frames", "at least 1 frame")])
def test_a_bad_alert_rule_is_one_line(rule, message):
    with pytest.raises(GAError, match=message):
        parse_rule(rule, ["pg_fraction", "particles"])


# ---------------------------------------------------------------------------- files a monitor resumes from


def test_keep_rows_drops_a_half_written_line_and_extra_rows(tmp_path):
    path = str(tmp_path / "t.csv")
    log = CsvLog(path, ["a", "b"])
    log.write([[1, 2], [3, 4], [5, 6]])
    log.close()
    with open(path, "a") as fh:
        fh.write("7,")  # a kill in the middle of a row
    assert keep_rows(path) == [["1", "2"], ["3", "4"], ["5", "6"]]
    assert keep_rows(path, 2) == [["1", "2"], ["3", "4"]]
    assert list(csv.reader(open(path))) == [["a", "b"], ["1", "2"], ["3", "4"]]
    with pytest.raises(GAError, match="other columns"):
        CsvLog(path, ["a", "c"])


# ---------------------------------------------------------------------------- watching, without a real model


def _fake_model(tmp_path, content=b"not a model"):
    """A binary model that calls every particle pg (probability 0.9), with a file to hash."""
    from ga.loading import LoadedModel

    source = tmp_path / "fake.onnx"
    source.write_bytes(content)
    labels = {"task": "binary", "classes": ["cex", "pg"], "positive_class": "pg", "thresholds": {"pg": 0.5},
              "input_size": [32, 32], "resize": [32, 32], "center_crop": None}
    return LoadedModel(labels, "onnx", str(source), lambda x: np.full((len(x), 1), 0.9, np.float32))


def test_watch_survives_the_folder_vanishing_and_takes_frames_once_settled(tmp_path, process, caplog):
    import logging
    import shutil
    import threading
    import time

    from ga.monitoring.loop import monitor

    folder, out = tmp_path / "incoming", tmp_path / "out"
    folder.mkdir()
    names = sorted(n for n in os.listdir(process) if n.endswith(".png"))[:3]
    shutil.copyfile(os.path.join(process, names[0]), folder / names[0])
    # Pieces 0.15 s apart against a settle time of 1 s: a loaded machine may delay a piece by
    # most of a second before the half-written file would be taken.
    cfg = load_config(None, ["monitor.poll_seconds=0.05", "monitor.settle_seconds=1.0"]).monitor
    stop, results = threading.Event(), []
    missing = threading.Event()

    class Seen(logging.Handler):
        def emit(self, record):
            if "is not there" in record.getMessage():
                missing.set()

    seen = Seen()
    logging.getLogger("ga.monitoring").addHandler(seen)
    watcher = threading.Thread(target=lambda: results.append(
        monitor(_fake_model(tmp_path), [str(folder)], str(out), cfg, watch=True, stop=stop.is_set)))
    caplog.set_level(logging.INFO, logger="ga.monitoring")
    watcher.start()

    def rows(n, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if os.path.isfile(out / "frames.csv") and len(read_csv(out / "frames.csv")) >= n:
                return read_csv(out / "frames.csv")
            time.sleep(0.05)
        raise AssertionError(f"fewer than {n} rows")

    try:
        rows(1)
        os.rename(folder, tmp_path / "away")  # an unmounted share, until the watcher has seen it gone
        assert missing.wait(60)
        shutil.copyfile(os.path.join(process, names[1]), tmp_path / "away" / names[1])
        os.rename(tmp_path / "away", folder)
        data = open(os.path.join(process, names[2]), "rb").read()
        with open(folder / names[2], "wb") as fh:  # written in pieces, each within the settle time
            for i in range(4):
                fh.write(data[i * len(data) // 4:(i + 1) * len(data) // 4])
                fh.flush()
                time.sleep(0.15)
        got = rows(3)
    finally:
        stop.set()
        watcher.join(timeout=60)
        logging.getLogger("ga.monitoring").removeHandler(seen)
    assert [r["frame"] for r in got] == names and not any(r["skipped"] for r in got)
    assert all(r["pg_fraction"] == "1" for r in got)
    assert results[0].frames == 3
    assert any("is not there" in m for m in caplog.messages) and any("is back" in m for m in caplog.messages)


def test_sizes_in_micrometres_and_edge_particles_left_out(tmp_path):
    """With monitor.pixel_size_um the lengths are also in micrometres (px x size) and the
    size statistics are in um; a particle cut by the frame's edge is counted but not sized."""
    from ga.monitoring.loop import monitor

    img = np.full((300, 400), 25, np.uint8)
    img[50:90, 60:100] = 200  # 40 x 40 px, inside
    img[150:170, 0:30] = 200  # cut by the left edge
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(img).save(folder / "f_20261201T100000.png")
    cfg = load_config(None, ["monitor.pixel_size_um=2.5"]).monitor
    result = monitor(_fake_model(tmp_path), [str(folder)], str(tmp_path / "out"), cfg)
    assert (result.frames, result.particles) == (1, 2)
    (row,) = read_csv(tmp_path / "out/frames.csv")
    assert row["particles"] == "2" and row["edge_particles"] == "1" and row["pg_count"] == "2"
    d = 2.5 * math.sqrt(4 * 1600 / math.pi)  # the inside square's equivalent diameter, in um
    assert float(row["d50_um"]) == pytest.approx(d, rel=1e-3) and float(row["pg_dv90_um"]) == pytest.approx(d, rel=1e-3)
    assert "d50_px" not in row
    inside = next(p for p in read_csv(tmp_path / "out/particles.csv") if p["edge"] == "0")
    assert float(inside["feret_max_um"]) == pytest.approx(2.5 * float(inside["feret_max_px"]), rel=1e-3)
    assert float(inside["area_um2"]) == pytest.approx(6.25 * 1600)


def test_frames_pass_the_named_stages_and_a_failing_publisher_stops_nothing(tmp_path, caplog):
    """Each frame's record reaches the publish hooks after its rows are written, its rows by
    column name equal to the files'; a skipped frame goes through the same stages; a hook
    that raises is logged once and every frame is still written."""
    import logging

    from ga.monitoring.loop import STAGES, FrameRecord, Monitor, monitor

    assert STAGES == ("read", "detect", "classify", "measure", "write", "publish")
    assert all(callable(getattr(Monitor, s)) for s in STAGES)
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(3):
        img = np.full((120, 160), 25, np.uint8)
        img[20:50, 30 + 20 * k:60 + 20 * k] = 200
        Image.fromarray(img).save(folder / f"f_20261201T10000{k}.png")
    (folder / "f_20261201T100009.png").write_bytes(b"not a png")
    seen = []

    def broken(record):
        raise ConnectionError("broker down")

    def record_it(record):
        assert isinstance(record, FrameRecord)
        seen.append((record.frame.name, dict(record.row), [dict(r) for r in record.particle_rows], record.problem))

    caplog.set_level(logging.WARNING, logger="ga.monitoring")
    result = monitor(_fake_model(tmp_path), [str(folder)], str(tmp_path / "out"), CFG, hooks=[broken, record_it])
    assert (result.frames, result.skipped) == (4, 1)
    frames, particles = read_csv(tmp_path / "out/frames.csv"), read_csv(tmp_path / "out/particles.csv")
    assert [s[0] for s in seen] == [r["frame"] for r in frames] and seen[-1][3]
    assert [{k: str(v) for k, v in s[1].items()} for s in seen] == frames
    assert [{k: str(v) for k, v in r.items()} for s in seen for r in s[2]] == particles and len(particles) == 3
    assert sum("broker down" in m for m in caplog.messages) == 1


@pytest.mark.parametrize("every, writes", [(2, 2), (10, 1)])
def test_the_page_is_rewritten_every_refresh_every_frames_while_watching(tmp_path, process, monkeypatch, every,
                                                                         writes):
    """Five frames waiting in a watched folder are taken as one group: with refresh_every 2 the
    page is written after them and again when the watch ends; with 10 only when it ends."""
    import shutil

    import ga.monitoring.outputs
    from ga.monitoring.loop import monitor

    folder = tmp_path / "incoming"
    folder.mkdir()
    for n in sorted(n for n in os.listdir(process) if n.endswith(".png"))[:5]:
        shutil.copyfile(os.path.join(process, n), folder / n)
    real, calls = ga.monitoring.outputs.write_outputs, []
    monkeypatch.setattr(ga.monitoring.outputs, "write_outputs",
                        lambda out, state, *rest: calls.append(len(read_csv(os.path.join(out, "frames.csv")))) or
                        real(out, state, *rest))
    cfg = load_config(None, ["monitor.poll_seconds=0.05", "monitor.settle_seconds=0.1",
                             f"monitor.refresh_every={every}"]).monitor
    result = monitor(_fake_model(tmp_path), [str(folder)], str(tmp_path / "out"), cfg, watch=True, idle_exit=1.0)
    assert result.frames == 5 and calls == [5] * writes


def test_a_refresh_reads_no_particle_rows_and_keeps_the_first_and_last_windows(tmp_path, process, monkeypatch):
    """A running monitor's refresh draws the size figure from the first and last
    `monitor.window` frames' particle rows held in memory (reading particles.csv grew with the
    run: 1.3 s at 1,300 frames); they equal the windows rebuilt from the files, skipped
    frames aside."""
    import shutil

    import ga.monitoring.outputs
    from ga.monitoring.feed import all_at_once
    from ga.monitoring.loop import Monitor
    from ga.monitoring.outputs import SizeWindows

    folder = tmp_path / "frames"
    folder.mkdir()
    names = sorted(n for n in os.listdir(process) if n.endswith(".png"))[:5]
    for n in names:
        shutil.copyfile(os.path.join(process, n), folder / n)
    (folder / "zz_broken.png").write_bytes(b"not a png")  # a skipped frame, last
    read, real = [], ga.monitoring.outputs._read
    monkeypatch.setattr(ga.monitoring.outputs, "_read", lambda path, *a: read.append(os.path.basename(path)) or real(path, *a))
    cfg = load_config(None, ["monitor.window=2"]).monitor
    m = Monitor(_fake_model(tmp_path), str(tmp_path / "out"), cfg, [str(folder)])
    all_at_once(m, [str(folder)], cfg, False, None)
    m.refresh(force=True)
    assert "particles.csv" not in read and "frames.csv" in read
    kept = {r["frame"] for r in m.windows.rows()}
    assert kept == {names[0], names[1], names[3], names[4]}
    rebuilt = SizeWindows.from_folder(str(tmp_path / "out"), read_csv(tmp_path / "out/frames.csv"), 2, m.size_column)
    assert rebuilt.rows() == m.windows.rows() and len(rebuilt.rows()) > 8
    for f in (m.frames_log, m.particles_log, m.alerts_log):
        f.close()


def test_sigterm_finishes_the_frames_in_hand_and_writes_the_page(tmp_path, process, trained_run):
    """`ga monitor --watch` (in-process, on the main thread) sent SIGTERM after its first frames:
    it logs that it stops, writes every frame it had taken and the page, exits 0, and gives the
    process its own handlers back."""
    import shutil
    import signal
    import threading
    import time

    from helpers import run_here

    folder, out = tmp_path / "incoming", tmp_path / "out"
    folder.mkdir()
    for n in sorted(n for n in os.listdir(process) if n.endswith(".png"))[:4]:
        shutil.copyfile(os.path.join(process, n), folder / n)

    def terminate():
        end = time.monotonic() + 120
        while time.monotonic() < end and not ((out / "frames.csv").is_file() and read_csv(out / "frames.csv")):
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    sender = threading.Thread(target=terminate, daemon=True)
    sender.start()
    proc = run_here("-m", "ga", "monitor", folder, "--model", trained_run, "--watch", "--out-dir", out, "--set",
                    "monitor.poll_seconds=0.05", "--set", "monitor.settle_seconds=0.1", "--set", "monitor.refresh_every=100")
    sender.join(5)
    assert "stopping after the frames in hand (signal 15)" in proc.stderr
    frames = read_csv(out / "frames.csv")
    assert [r["frame"] for r in frames] == sorted(os.listdir(folder))  # the group in hand, all of it
    page = (out / "monitor.html").read_text(encoding="utf-8")
    assert f"{len(frames)} frame(s) monitored" in proc.stdout and all(r["frame"] in page for r in frames[-1:])
    assert signal.getsignal(signal.SIGTERM) is before


def test_files_of_one_name_size_and_time_in_two_folders_are_two_frames(tmp_path, process):
    """Frames are keyed by path: a copy (same bytes and mtime) in another input folder is not
    taken as done; a folder resumed from keys written without the path is not done again."""
    import csv as _csv
    import shutil

    from ga.monitoring.loop import monitor

    name = sorted(n for n in os.listdir(process) if n.endswith(".png"))[0]
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy2(os.path.join(process, name), tmp_path / sub / name)
    out = tmp_path / "out"
    cfg = load_config(None).monitor
    result = monitor(_fake_model(tmp_path), [str(tmp_path / "a"), str(tmp_path / "b")], str(out), cfg)
    rows = read_csv(out / "frames.csv")
    assert result.frames == 2 and sorted(r["source"] for r in rows) == sorted(
        str(tmp_path / s / name) for s in ("a", "b"))
    assert len({r["key"] for r in rows}) == 2
    # keys as an earlier version wrote them (name|size|mtime): the same frames, not done again
    with open(out / "frames.csv", newline="", encoding="utf-8") as fh:
        table = list(_csv.reader(fh))
    at = table[0].index("key")
    for row in table[1:]:
        row[at] = os.path.basename(row[at])
    with open(out / "frames.csv", "w", newline="", encoding="utf-8") as fh:
        _csv.writer(fh).writerows(table)
    again = monitor(_fake_model(tmp_path), [str(tmp_path / "a"), str(tmp_path / "b")], str(out), cfg)
    assert again.frames == 0 and again.resumed == 2


def test_a_frame_written_again_in_place_is_a_new_frame_with_a_name_of_its_own(tmp_path, process):
    """--watch: x.png done, then rewritten with other content under the same name: its new
    version is x.png#v2 in frames.csv and particles.csv, and no (frame, particle) pair repeats."""
    import shutil
    import threading
    import time

    from ga.monitoring.loop import monitor

    names = sorted(n for n in os.listdir(process) if n.endswith(".png"))[:2]
    folder, out = tmp_path / "incoming", tmp_path / "out"
    folder.mkdir()
    shutil.copyfile(os.path.join(process, names[0]), folder / "x.png")
    cfg = load_config(None, ["monitor.poll_seconds=0.05", "monitor.settle_seconds=0.2"]).monitor
    stop = threading.Event()
    watcher = threading.Thread(target=lambda: monitor(_fake_model(tmp_path), [str(folder)], str(out), cfg, watch=True,
                                                      stop=stop.is_set))
    watcher.start()

    def rows(n):
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if (out / "frames.csv").is_file() and len(read_csv(out / "frames.csv")) >= n:
                return read_csv(out / "frames.csv")
            time.sleep(0.05)
        raise AssertionError(f"fewer than {n} rows")

    try:
        rows(1)
        shutil.copyfile(os.path.join(process, names[1]), folder / "x.png.part")
        os.replace(folder / "x.png.part", folder / "x.png")  # the same name, new content
        got = rows(2)
    finally:
        stop.set()
        watcher.join(60)
    assert [r["frame"] for r in got] == ["x.png", "x.png#v2"] and len({r["key"] for r in got}) == 2
    pairs = [(p["frame"], p["particle"]) for p in read_csv(out / "particles.csv")]
    assert len(pairs) == len(set(pairs)) and {f for f, _ in pairs} == {"x.png", "x.png#v2"}


def test_what_a_folder_listing_leaves_out_is_logged(tmp_path, process, caplog):
    """Frames in a subfolder and a self-looping link are not read, and each is logged with why."""
    import logging
    import shutil

    from ga.monitoring.loop import monitor

    name = sorted(n for n in os.listdir(process) if n.endswith(".png"))[0]
    (tmp_path / "in" / "sub").mkdir(parents=True)
    shutil.copy(os.path.join(process, name), tmp_path / "in" / name)
    shutil.copy(os.path.join(process, name), tmp_path / "in" / "sub" / "other.png")
    os.symlink(tmp_path / "in" / "loop.png", tmp_path / "in" / "loop.png")
    caplog.set_level(logging.WARNING, logger="ga.frames")
    result = monitor(_fake_model(tmp_path), [str(tmp_path / "in")], str(tmp_path / "out"), load_config(None).monitor)
    assert result.frames == 1
    said = "\n".join(caplog.messages)
    assert f"{tmp_path / 'in' / 'sub'}: a subfolder with frames, not read" in said
    assert f"{tmp_path / 'in' / 'loop.png'}: not a readable file" in said


def test_on_alert_gets_all_seven_variables_of_each_alert(tmp_path):
    """--on-alert's command sees GA_ALERT_RULE, _COLUMN, _VALUE, _THRESHOLD, _FRAME, _TIME and
    GA_MONITOR_DIR, equal to the alert's row in alerts.csv; one call per alert."""
    from ga.monitoring.loop import monitor

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, n in enumerate((1, 1, 3)):  # 1, 1 then 3 particles: the count rule fires on the third frame only
        img = np.full((200, 300), 25, np.uint8)
        for k in range(n):
            img[30 + 50 * k:60 + 50 * k, 40:70] = 200
        Image.fromarray(img).save(folder / f"f_20261201T1000{i:02d}.png")
    names = ("GA_ALERT_RULE", "GA_ALERT_COLUMN", "GA_ALERT_VALUE", "GA_ALERT_THRESHOLD", "GA_ALERT_FRAME",
             "GA_ALERT_TIME", "GA_MONITOR_DIR")
    seen = tmp_path / "seen.txt"
    command = "printf '%s|' " + " ".join(f'"${n}"' for n in names) + f" >> {seen}; echo >> {seen}"
    out = tmp_path / "out"
    monitor(_fake_model(tmp_path), [str(folder)], str(out), load_config(None).monitor,
            rules=["pg_fraction >= 0.9", "particles > 2"], on_alert=command)
    alerts = read_csv(out / "alerts.csv")
    calls = [line.split("|")[:-1] for line in seen.read_text().splitlines()]
    assert [a["rule"] for a in alerts] == ["pg_fraction >= 0.9", "particles > 2"] and len(calls) == len(alerts)
    for a, got in zip(alerts, calls):
        want = [a["rule"], a["column"], a["value"], a["threshold"], a["frame"], a["time"], str(out)]
        assert got == want
    assert calls[1][:5] == ["particles > 2", "particles", "3", "2", "f_20261201T100002.png"]


def test_a_monitor_folder_resumes_and_belongs_to_one_model_and_source(tmp_path, process):
    from ga.monitoring.loop import monitor

    cfg = load_config(None).monitor
    frames = tmp_path / "frames"
    frames.mkdir()
    for name in sorted(n for n in os.listdir(process) if n.endswith(".png"))[:2]:
        os.symlink(os.path.join(process, name), frames / name)
    model = _fake_model(tmp_path)
    first = monitor(model, [str(frames)], str(tmp_path / "out"), cfg)
    again = monitor(model, [str(frames)], str(tmp_path / "out"), cfg)
    assert (first.frames, again.frames, again.resumed) == (2, 0, 2)
    assert len(read_csv(tmp_path / "out/frames.csv")) == 2
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(GAError, match="holds the monitoring made with another model"):
        monitor(_fake_model(other, b"another model"), [str(frames)], str(tmp_path / "out"), cfg)
    with pytest.raises(GAError, match="holds the monitoring of"):
        monitor(model, [str(tmp_path)], str(tmp_path / "out"), cfg)


def test_detection_imports_nothing_after_preload():
    """`ga monitor` detects on worker threads; every module detection needs is imported by
    preload() on the calling thread first, so the threads never race through scikit-image's
    lazy imports (a half-initialised skimage.morphology once stopped a watch)."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from ga.config import load_config\n"
        "from ga.monitoring.detection import detect, preload\n"
        "preload()\n"
        "before = set(sys.modules)\n"
        "img = np.full((120, 120), 30, np.uint8); img[40:80, 30:90] = 200\n"
        "found = detect(img, load_config(None, ['monitor.open_radius=1', 'monitor.close_radius=2']).monitor)\n"
        "print(len(found), sorted(m for m in set(sys.modules) - before if m.split('.')[0] in ('skimage', 'scipy')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(" ", 1)
    assert out[0] == "1" and out[1].strip() == "[]", out


def test_monitor_batch_size_flag_wins_over_the_config(tmp_path, monkeypatch):
    """`--batch-size 64` (the former default value) is honoured when a config sets
    monitor.batch_size; without the flag the config's value holds."""
    import ga.cli
    import ga.monitoring.loop

    seen = []
    monkeypatch.setattr(ga.monitoring.loop, "monitor", lambda model, inputs, out, cfg, *a, **k:
                        seen.append(cfg.batch_size) or ga.monitoring.loop.MonitorResult(out))
    monkeypatch.setattr("ga.loading.load_model", lambda *a, **k: _fake_model(tmp_path))
    cfg = tmp_path / "m.yaml"
    cfg.write_text("monitor:\n  batch_size: 8\n")
    frames = tmp_path / "frames"
    frames.mkdir()
    for extra in (["--batch-size", "64"], []):
        assert ga.cli.main(["monitor", str(frames), "--config", str(cfg), "--out-dir", str(tmp_path / "o"), *extra]) == 0
    assert seen == [64, 8]


def test_fill_holes_and_grey_match_their_slow_forms():
    """The labelling fill and the 16-bit grey sum give exactly what scipy's binary_fill_holes
    and a float mean give."""
    from scipy import ndimage

    from ga.monitoring.detection import fill_holes, grey

    rng = np.random.default_rng(0)
    for density in (0.2, 0.45, 0.7):
        m = rng.random((60, 80)) < density
        assert (fill_holes(m) == ndimage.binary_fill_holes(m)).all()
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    np.testing.assert_allclose(grey(rgb), rgb.astype(np.float32).mean(axis=2), atol=1e-4)


def test_a_deposit_on_the_window_is_static_and_left_out_of_the_counts(tmp_path, process):
    """A crystal stuck on the probe's window (the same bright disc in every frame): once
    monitor.static_window frames have passed it is flagged static in every frame, and each
    frame's counts equal those of the same frames without it; frames.csv counts it."""
    from ga.monitoring.loop import monitor

    names = sorted(n for n in os.listdir(process) if n.endswith(".png"))
    # settings fixed as --calibrate writes them (per-frame auto ones would see the deposit as one
    # more object to choose from)
    cfg = load_config(None, ["monitor.static_window=4", "monitor.min_sharpness=0.15", "monitor.polarity=bright",
                             "monitor.background_size=151"]).monitor
    monitor(_fake_model(tmp_path), [process], str(tmp_path / "clean"), cfg)
    # the deposit where no particle of any frame comes within 8 px of it (so none merges with it)
    boxes = [tuple(int(p[k]) for k in ("x0", "y0", "x1", "y1")) for p in read_csv(tmp_path / "clean/particles.csv")]
    cy, cx = next((y, x) for y in range(60, 720, 20) for x in range(60, 980, 20)
                  if all(x + 26 < b[0] or b[2] < x - 26 or y + 26 < b[1] or b[3] < y - 26 for b in boxes))
    stuck = tmp_path / "stuck"
    stuck.mkdir()
    yy, xx = np.mgrid[:768, :1024]
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 18 ** 2
    for n in names:
        img = np.asarray(Image.open(os.path.join(process, n)).convert("L")).copy()
        img[disc] = 230
        Image.fromarray(img).save(stuck / n)
    monitor(_fake_model(tmp_path), [str(stuck)], str(tmp_path / "dirty"), cfg)
    clean, dirty = read_csv(tmp_path / "clean/frames.csv"), read_csv(tmp_path / "dirty/frames.csv")
    assert [r["static_particles"] for r in dirty] == ["0"] * 4 + ["1"] * (len(names) - 4)
    assert [r["particles"] for r in dirty[4:]] == [r["particles"] for r in clean[4:]]
    assert [r["pg_fraction"] for r in dirty[4:]] == [r["pg_fraction"] for r in clean[4:]]
    assert all(r["static_particles"] == "0" for r in clean)
    static = [p for p in read_csv(tmp_path / "dirty/particles.csv") if p["static"] == "1"]
    assert len(static) == len(names) - 4
    assert all(abs(int(p["x0"]) - (cx - 18)) <= 2 and abs(int(p["y0"]) - (cy - 18)) <= 2 for p in static)
    # monitor_latest.png draws the last frame: the deposit's box in magenta, none without it
    def magenta(folder):
        img = np.asarray(Image.open(tmp_path / folder / "monitor_latest.png").convert("RGB")).astype(int)
        return int(((img[..., 0] > 200) & (img[..., 1] < 80) & (img[..., 2] > 200)).sum())

    assert magenta("dirty") > 20 and magenta("clean") < 5


def _brightness_model(tmp_path, polarity):
    """A binary model whose pg probability is its crop's mean level / 255, trained (says its
    labels.json) on crops with `polarity` particles."""
    from ga.loading import LoadedModel

    source = tmp_path / "bright.onnx"
    source.write_bytes(b"brightness")
    labels = {"task": "binary", "classes": ["cex", "pg"], "positive_class": "pg", "thresholds": {"pg": 0.5},
              "input_size": [32, 32], "resize": [32, 32], "center_crop": None, "crop_polarity": polarity}
    return LoadedModel(labels, "onnx", str(source),
                       lambda x: (np.asarray(x).reshape(len(x), -1).mean(1, keepdims=True) / 255).astype(np.float32))


def test_crops_are_turned_over_for_a_model_that_learned_the_other_polarity(tmp_path):
    """The same frame drawn dark-field and bright-field (inverted): a model that learned from
    bright particles sees the same crops in both (auto), the inverted ones with `off`; a model
    whose crops were mixed is given the frame as it is."""
    from ga.monitoring.loop import monitor
    from ga.synthetic import generate_process

    def levels(polarity, learned, mode):
        frames = generate_process(str(tmp_path / f"p_{polarity}"), frames=1, seed=8, polarity=polarity)
        out = tmp_path / f"m_{polarity}_{learned}_{mode}"
        monitor(_brightness_model(tmp_path, learned), [frames], str(out),
                load_config(None, [f"monitor.invert_crops={mode}"]).monitor)
        rows = read_csv(out / "particles.csv")
        assert len(rows) >= 10
        return np.array([float(r["p_pg"]) for r in sorted(rows, key=lambda r: (int(r["y0"]), int(r["x0"])))])

    bright = levels("bright", "bright", "auto")
    assert np.allclose(levels("dark", "bright", "auto"), bright, atol=0.01)
    assert np.allclose(levels("dark", "bright", "off"), 1 - bright, atol=0.01)
    assert np.allclose(levels("dark", "mixed", "auto"), 1 - bright, atol=0.01)
    assert np.allclose(levels("bright", "dark", "auto"), 1 - bright, atol=0.01)
    assert np.allclose(levels("bright", "bright", "on"), 1 - bright, atol=0.01)


def test_training_crops_polarity(tmp_path):
    from PIL import Image

    from ga.monitoring.crops import crop_polarity

    rng = np.random.default_rng(0)
    paths = []
    for i in range(30):
        img = np.full((60, 50), 40, np.uint8)
        img[18:42, 15:35] = 200 + rng.integers(0, 40)  # a bright particle in the middle
        paths.append(str(tmp_path / f"b{i}.png"))
        Image.fromarray(img).save(paths[-1])
        Image.fromarray(255 - img).save(tmp_path / f"d{i}.png")
    dark = [p.replace("/b", "/d") for p in paths]
    assert crop_polarity(paths) == ("bright", 1.0)
    assert crop_polarity(dark) == ("dark", 1.0)
    assert crop_polarity(paths + dark)[0] == "mixed"
    assert crop_polarity(paths[:28] + dark[:2])[0] == "bright"  # 93% agree
    assert crop_polarity([]) == ("mixed", 0.0)


def test_size_bins_count_each_frames_particles_per_bin(tmp_path, process):
    """monitor.size_bins [0, 20, 40, .inf] px: frames.csv counts each frame's particles (those
    cut by the edge and deposits left out, as the sizes) per bin, for all and per class, as
    particles.csv's diameters say; monitor_bins.png is drawn and on the page; bad edges are
    one line."""
    from ga.errors import ConfigError
    from ga.monitoring.loop import monitor

    cfg = load_config(None, ["monitor.size_bins=[0, 20, 40, .inf]"]).monitor
    monitor(_fake_model(tmp_path), [process], str(tmp_path / "m"), cfg)
    frames = read_csv(tmp_path / "m/frames.csv")
    particles = read_csv(tmp_path / "m/particles.csv")
    bins = [("count_0_20_px", 0, 20), ("count_20_40_px", 20, 40), ("count_40_inf_px", 40, np.inf)]
    assert sum(int(r["count_40_inf_px"]) for r in frames) > 0 and sum(int(r["count_0_20_px"]) for r in frames) > 0
    for r in frames:
        d = [float(p["eq_diameter_px"]) for p in particles if p["frame"] == r["frame"] and p["edge"] == "0"
             and p["static"] == "0"]
        for name, lo, hi in bins:
            assert int(r[name]) == sum(lo <= v < hi for v in d), (r["frame"], name)
            assert int(r[f"pg_{name}"]) == int(r[name]) and int(r[f"cex_{name}"]) == 0  # the fake model says pg
        assert sum(int(r[name]) for name, _, _ in bins) == int(r["particles"]) - int(r["edge_particles"])
    assert Image.open(tmp_path / "m/monitor_bins.png").size[0] > 300
    assert open(tmp_path / "m/monitor.html", encoding="utf-8").read().count("data:image/png;base64,") == 4
    for edges in ("[10]", "[0, 20, 20]", "[-1, 5]"):
        with pytest.raises(ConfigError, match="size_bins must be at least two increasing edges"):
            load_config(None, [f"monitor.size_bins={edges}"])


def _stderr_of(argv, cwd, terminal):
    """A command's stderr, written to a terminal (a pseudo-terminal) or to a pipe."""
    import fcntl
    import pty
    import struct
    import subprocess
    import sys
    import termios

    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    if not terminal:
        proc = subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a terminal 120 columns wide
    proc = subprocess.Popen([sys.executable, *argv], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the command closed its end
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert proc.wait(timeout=300) == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


def test_progress_bars_go_to_a_terminal_and_not_to_a_log(tmp_path):
    """`ga synth` and `ga monitor --save-crops` draw their bars on a terminal; with stderr sent
    to a file or a pipe (a service's journal, a log) they write none."""
    synth = ["-m", "ga", "synth", "process", "--out", "frames", "--frames", "2"]
    crops = ["-m", "ga", "monitor", "frames", "--save-crops", "crops"]
    assert "frames: 100%" in _stderr_of(synth, tmp_path, terminal=True)
    assert "\r" not in _stderr_of(synth, tmp_path, terminal=False)
    assert "crops: 100%" in _stderr_of(crops, tmp_path, terminal=True)
    logged = _stderr_of(["-m", "ga", "monitor", "frames", "--save-crops", "crops2"], tmp_path, terminal=False)
    assert "\r" not in logged and "crops:" not in logged, logged
