"""`ga monitor` as a user runs it: on a simulated crystallization with a demo model trained
here, live on a folder another process writes into (through a kill and a restart), on a TIFF
stack and a video, and on bad frames. Every documented command runs in a fresh interpreter
with real argv (tests/test_commands.py's Workspace), the fixture's steps too; the option and
bad-input checks run in this one through the same entry function (`here=True`).

The process's seed (90210) is not one the detector's defaults or the simulation were tuned
on (0, 1, 11, 777)."""

import contextlib
import datetime as dt
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from helpers import one_error_line, read_csv
from test_commands import Workspace, argv_of

SEED = "90210"
FRAMES = 16
MONITOR = "python -m ga monitor data/process --model deliverables/<run> --out-dir data/monitor"
WATCH = ("python -m ga monitor incoming/ --model deliverables/<run> --watch --alert \"pg_fraction > 0.10 over 5 frames\" "
         "--on-alert 'echo \"$GA_ALERT_RULE at $GA_ALERT_FRAME\" >> alerts.log'")
FAST_WATCH = ["--set", "monitor.poll_seconds=0.2", "--set", "monitor.settle_seconds=1.0", "--out-dir", "out"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace with a demo model (configs/demo.yaml at 64 px, 150 crops per class, 5
    epochs: about 40 s) and a synthetic process of FRAMES frames. The model trains with
    training.deterministic: without it, about one model in seven (in the full suite) scored
    its own test split perfectly yet classified the process's particles at 0.80 instead of
    0.99 (fraction error 0.19 against <= 0.05), with nearly the same training history."""
    ws = Workspace(tmp_path_factory.mktemp("monitor"))
    ws.run("python -m ga.synthetic crystals --out data/archive --per-class 150 --seed 3")
    ws.run("python split_data.py --no-progress")
    train = ws.run("python main.py --config configs/demo.yaml", "--set", "training.epochs=5", "--set",
                   "data.image_size=[64,64]", "--set", "output.saved_model=false", "--set", "output.explain=false",
                   "--set", "output.int8=false", "--set", "training.deterministic=true", "-q")
    ws.model = ws.printed(train)
    ws.run("python -m ga synth process --out data/process --frames 120 --seed 0", "--frames", FRAMES, "--seed", SEED)
    return ws


@pytest.fixture(scope="module")
def monitored(ws):
    proc = ws.run(MONITOR, "--alert", "pg_fraction > 0.10 over 5 frames", subs={"deliverables/<run>": ws.model})
    return ws, proc


def _truth_crossing(ws, window=5, level=0.10, folder="data/process"):
    """The index of the first frame where the truth's mean over `window` frames passes `level`."""
    truth = [float(r["pg_fraction"]) for r in read_csv(ws / folder / "truth/frames.csv")]
    return next(i for i in range(len(truth)) if np.mean(truth[max(0, i - window + 1):i + 1]) > level)


def test_pg_fraction_and_detection_against_the_truth(monitored):
    from ga.monitoring.outputs import score_against_truth

    ws, proc = monitored
    score = score_against_truth(str(ws / "data/process"), str(ws / "data/monitor"))
    assert score["frames"] == FRAMES
    assert score["recall"] >= 0.90 and score["precision"] >= 0.90, score
    assert score["fraction_mae"] <= 0.05, score
    # the synthetic crops' particles are bright: recorded for the monitor (monitor.invert_crops)
    with open(ws / ws.model / "labels.json", encoding="utf-8") as fh:
        assert json.load(fh)["crop_polarity"] == "bright"
    frames = read_csv(ws / "data/monitor/frames.csv")
    assert [r["frame"] for r in frames] == sorted(os.listdir(ws / "data/process"))[:FRAMES]  # time order = name order
    particles = read_csv(ws / "data/monitor/particles.csv")
    assert len(particles) == sum(int(r["particles"]) for r in frames)
    assert {p["class"] for p in particles} == {"cex", "pg"} and {p["engine"] for p in particles} <= {"onnx", "onnx-int8"}
    for r in frames:  # the interval holds the fraction; counts add up
        f, lo, hi = (float(r[k]) for k in ("pg_fraction", "pg_fraction_lo", "pg_fraction_hi"))
        assert lo <= f <= hi and int(r["pg_count"]) + int(r["cex_count"]) == int(r["particles"])
        assert float(r["d10_px"]) <= float(r["d50_px"]) <= float(r["d90_px"])
    # the alert fired where the truth's 5-frame mean passed 10%, within the window
    (alert,) = read_csv(ws / "data/monitor/alerts.csv")
    fired = [r["frame"] for r in frames].index(alert["frame"])
    assert abs(fired - _truth_crossing(ws)) <= 2
    assert "ALERT" in proc.stderr and alert["frame"] in proc.stderr
    # the page embeds the three figures
    page = open(ws / "data/monitor/monitor.html", encoding="utf-8").read()
    assert page.count("data:image/png;base64,") == 3 and "pg_fraction &gt; 0.10 over 5 frames" in page
    for name in ("monitor_trend.png", "monitor_sizes.png", "monitor_latest.png"):
        assert Image.open(ws / "data/monitor" / name).size[0] > 300


NOTE = 'python -m ga monitor note data/monitor "seeded at 10:32" --time 2026-12-01T10:32:00'


def test_an_operators_note_lands_on_the_figures_and_the_page(monitored):
    """`ga monitor note` from a shell: notes.csv gains the row, the page a Notes section, the
    trend figure its line (events() places it on the frames' clock, the alert at its frame);
    a folder that is no monitor folder and a bad time are one line, exit 2."""
    from ga.monitoring.outputs import events

    ws, _ = monitored
    shutil.copytree(ws / "data/monitor", ws / "data/noted")
    frames = read_csv(ws / "data/noted/frames.csv")
    third = frames[2]["time"]
    proc = ws.run(NOTE.replace("data/monitor", "data/noted").replace("2026-12-01T10:32:00", third))
    assert proc.stdout.strip() == f"{third} seeded at 10:32"
    assert read_csv(ws / "data/noted/notes.csv") == [{"time": third, "note": "seeded at 10:32"}]
    assert "<h2>Notes</h2>" in open(ws / "data/noted/monitor.html", encoding="utf-8").read()
    marks = events(str(ws / "data/noted"), frames)
    assert ("note", "seeded at 10:32") in [(k, t) for _, k, t in marks]
    note_at = next(t for t, k, _ in marks if k == "note")
    assert note_at == pytest.approx(float(frames[2]["elapsed_s"]))
    (alert,) = read_csv(ws / "data/noted/alerts.csv")
    assert [t for t, k, _ in marks if k == "alert"] == [float(r["elapsed_s"]) for r in frames if r["frame"] == alert["frame"]]
    bad = ws.run("python -m ga monitor note data/process x", expect=2)
    assert "not a monitor folder" in one_error_line(bad)
    bad = ws.run("python -m ga monitor note data/noted x --time yesterday", expect=2)
    assert "--time takes an ISO time" in bad.stderr and "Traceback" not in bad.stderr


VERIFY = "python -m ga monitor verify data/monitor"


def test_the_audit_trail_records_the_run_and_verify_finds_an_edited_line(monitored, tmp_path):
    """audit.jsonl holds the run's start (command, settings, model and its sha256, version,
    host), one entry per alert, its stop and a note added after; `ga monitor verify` from a
    shell passes the chain (exit 0) and names an edited line (exit 1); a removed line and a
    torn last line are found too, and a folder without a trail is one line, exit 2."""
    from ga.cli import main
    from ga.monitoring.audit import verify

    ws, _ = monitored
    shutil.copytree(ws / "data/monitor", ws / "data/audited")
    ws.run(NOTE.replace("data/monitor", "data/audited"))
    trail = ws / "data/audited/audit.jsonl"
    lines = trail.read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["event"] for e in entries][0] == "start" and [e["event"] for e in entries][-2:] == ["stop", "note"]
    start, stop = entries[0], entries[-2]
    alerts = read_csv(ws / "data/audited/alerts.csv")
    assert [e["frame"] for e in entries if e["event"] == "alert"] == [a["frame"] for a in alerts] and alerts
    assert start["model"]["model_sha256"] == read_csv(ws / "data/audited/particles.csv")[0]["model_sha256"]
    assert "monitor" in start["command"] and start["ga_version"] and start["host"] and start["monitor"]["min_area"]
    assert stop["frames"] == len(read_csv(ws / "data/audited/frames.csv")) and stop["ending"] == "finished"
    ok = ws.run(VERIFY.replace("data/monitor", "data/audited"))
    assert ok.stdout.strip().endswith(f"{len(lines)} entries, the chain is intact")
    edited = [*lines]
    alert_line = next(i for i, e in enumerate(entries) if e["event"] == "alert")
    edited[alert_line] = json.dumps({**entries[alert_line], "value": 0.01})
    trail.write_text("\n".join(edited) + "\n", encoding="utf-8")
    bad = ws.run(VERIFY.replace("data/monitor", "data/audited"), expect=1)
    assert f"line {alert_line + 1}: its content does not match its hash" in bad.stderr and "broken" in bad.stdout
    trail.write_text("\n".join(lines[:1] + lines[2:]) + "\n", encoding="utf-8")
    assert any(p.startswith("line 2: does not follow") for p in verify(str(ws / "data/audited"))[1])
    trail.write_text("\n".join(lines) + "\n" + lines[-1][:20], encoding="utf-8")
    assert any("incomplete" in p for p in verify(str(ws / "data/audited"))[1])
    assert main(["monitor", "verify", str(tmp_path)]) == 2


def test_show_detection_draws_the_outlines(ws):
    frame = "data/process/frame_00012_20261201T100022.png"
    proc = ws.run("python -m ga monitor data/process --show-detection data/process/frame_00060_20261201T100158.png "
                  "--out-dir data/monitor", subs={"data/process/frame_00060_20261201T100158.png": frame})
    out = ws.printed(proc)
    assert out.endswith("frame_00012_20261201T100022_detection.png") and Image.open(out).size[0] > 500
    # Drawn over a grey frame, the outlines are the only saturated pixels: kept particles in lime,
    # the synthetic process's blurred ones in orange (the colours the docs name).
    rgb = np.asarray(Image.open(out).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    lime = np.sum((g > 200) & (r < 90) & (b < 90))
    orange = np.sum((r > 200) & (g > 120) & (g < 200) & (b < 90))
    assert lime > 200 and orange > 20, (lime, orange)


def _popen(ws, command, *extra):
    argv = argv_of(command.replace("deliverables/<run>", ws.model)) + [str(e) for e in extra]
    return subprocess.Popen(argv, cwd=ws.path, env=ws.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _rows(path):
    return read_csv(path) if os.path.isfile(path) else []


def test_watch_takes_every_frame_once_through_a_kill_and_restart(ws):
    """Frames arrive from another process (one written slowly, in pieces); the monitor is
    killed half-way and started again: every frame is in frames.csv once, none skipped, the
    particle rows add up, and the alert fires once, where the truth crosses it."""
    (ws / "incoming").mkdir()
    names = sorted(n for n in os.listdir(ws / "data/process") if n.endswith(".png"))
    first = _popen(ws, WATCH, *FAST_WATCH)
    # The writer starts once the monitor says it is watching (its model loaded), so the slow
    # write and the kill happen while it runs, not before it has started.
    said, watching = [], threading.Event()

    def read_stderr():
        for line in first.stderr:
            said.append(line)
            if "watching incoming" in line:
                watching.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    assert watching.wait(240) and first.poll() is None, "".join(said)[-3000:]
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(ws / "data/process"), str(ws / "incoming"),
                               names[3]], cwd=ws.path)
    deadline = time.monotonic() + 240
    while len(_rows(ws / "out/frames.csv")) < 5 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
    assert first.poll() is None, "".join(said)[-3000:]
    first.send_signal(signal.SIGKILL)
    first.wait()
    reader.join(10)
    done_before = len(_rows(ws / "out/frames.csv"))
    assert 5 <= done_before < FRAMES
    second = _popen(ws, WATCH, *FAST_WATCH, "--idle-exit", "4")
    assert writer.wait(timeout=120) == 0
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err[-3000:]
    assert f"({done_before} done before)" in out
    frames = read_csv(ws / "out/frames.csv")
    assert sorted(r["frame"] for r in frames) == names  # each frame once, none lost
    assert not any(r["skipped"] for r in frames), [r for r in frames if r["skipped"]]
    assert len(read_csv(ws / "out/particles.csv")) == sum(int(r["particles"]) for r in frames)
    alerts = read_csv(ws / "out/alerts.csv")
    assert len(alerts) == 1
    order = [r["frame"] for r in frames]
    assert abs(order.index(alerts[0]["frame"]) - _truth_crossing(ws)) <= 2
    assert open(ws / "alerts.log").read().strip() == f"pg_fraction > 0.10 over 5 frames at {alerts[0]['frame']}"


# Copies the frames one by one, a quarter of a second apart; the named one in four pieces
# 0.3 s apart (shorter than the monitor's settle time, as the docs ask of a writer).
_WRITER = r"""
import os, shutil, sys, time
src, dst, slow = sys.argv[1:4]
for name in sorted(n for n in os.listdir(src) if n.endswith(".png")):
    if name == slow:
        data = open(os.path.join(src, name), "rb").read()
        with open(os.path.join(dst, name), "wb") as fh:
            for i in range(4):
                fh.write(data[i * len(data) // 4:(i + 1) * len(data) // 4])
                fh.flush()
                time.sleep(0.3)
    else:
        shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
    time.sleep(0.25)
"""


def test_a_tiff_stack_and_a_video(monitored):
    """The same frames as a 16-bit, 3-page TIFF stack give the same particles; as a video
    (lossy MPEG-4), nearly the same counts."""
    import av
    import tifffile

    ws, _ = monitored
    names = sorted(n for n in os.listdir(ws / "data/process") if n.endswith(".png"))[8:12]
    pixels = [np.asarray(Image.open(ws / "data/process" / n).convert("L")) for n in names]
    with tifffile.TiffWriter(ws / "stack.tif") as tif:
        for p in pixels[:3]:
            tif.write(p.astype(np.uint16) * 257, contiguous=False)
    ws.run("python -m ga monitor stack.tif --model deliverables/<run> --out-dir stack_monitor",
           subs={"deliverables/<run>": ws.model})
    by_name = {r["frame"]: r for r in read_csv(ws / "data/monitor/frames.csv")}
    stack = read_csv(ws / "stack_monitor/frames.csv")
    assert [r["frame"] for r in stack] == ["stack.tif#p0", "stack.tif#p1", "stack.tif#p2"]
    assert [r["particles"] for r in stack] == [by_name[n]["particles"] for n in names[:3]]
    with av.open(str(ws / "run.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=1)
        stream.width, stream.height, stream.pix_fmt = 1024, 768, "yuv420p"
        stream.options = {"qscale": "2"}
        for p in pixels:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.repeat(p[:, :, None], 3, 2), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    ws.run("python -m ga monitor run.mp4 --model deliverables/<run> --out-dir video_monitor",
           subs={"deliverables/<run>": ws.model})
    video = read_csv(ws / "video_monitor/frames.csv")
    assert [r["frame"] for r in video] == [f"run.mp4#f{i}" for i in range(4)]
    for r, n in zip(video, names):
        assert abs(int(r["particles"]) - int(by_name[n]["particles"])) <= 0.2 * int(by_name[n]["particles"])
    assert [r["time_source"] for r in video] == ["mtime+video"] * 4
    assert [float(r["elapsed_s"]) for r in video] == [0, 1, 2, 3]


def test_bad_frames_are_rows_never_a_stop(ws, tmp_path):
    """A truncated frame and one over the pixel limit are skipped rows (exit 1, one line
    each); a frame with no particle is a row with count 0 and no fraction; frames whose
    times go backwards are ordered by time and flagged."""
    folder = tmp_path / "frames"
    folder.mkdir()
    src = sorted(n for n in os.listdir(ws / "data/process") if n.endswith(".png"))
    shutil.copyfile(ws / "data/process" / src[10], folder / "a_20261201T100010.png")
    shutil.copyfile(ws / "data/process" / src[11], folder / "b_20261201T100000.png")  # earlier, named later
    data = open(ws / "data/process" / src[12], "rb").read()
    (folder / "c_20261201T100020.png").write_bytes(data[: len(data) // 2])
    Image.new("L", (1024, 768), 30).save(folder / "d_20261201T100030.png")
    Image.new("L", (3000, 3000), 30).save(folder / "e_20261201T100040.png")
    handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
    proc = ws.run("python -m ga monitor", folder, "--model", ws.model, "--out-dir", tmp_path / "out", "--max-pixels",
                  5_000_000, expect=1, here=True)
    # the command's stop-after-the-frames-in-hand handlers end with it: this process keeps its Ctrl-C
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == handlers
    rows = read_csv(tmp_path / "out/frames.csv")
    assert [r["frame"] for r in rows] == ["b_20261201T100000.png", "a_20261201T100010.png", "c_20261201T100020.png",
                                          "d_20261201T100030.png", "e_20261201T100040.png"]
    flags = {r["frame"][0]: r["flags"] for r in rows}
    assert flags == {"a": "", "b": "time_backwards", "c": "", "d": "", "e": ""}
    skipped = {r["frame"][0]: r["skipped"] for r in rows if r["skipped"]}
    assert set(skipped) == {"c", "e"} and "over the limit" in skipped["e"]
    assert "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if "skipped frame" in line]) == 2
    empty = rows[3]
    assert empty["particles"] == "0" and empty["pg_fraction"] == "" and empty["d50_px"] == ""
    assert int(rows[0]["particles"]) > 10


def test_monitor_figure_script(ws, tmp_path):
    proc = ws.run("python scripts/monitor_figure.py --model deliverables/<run>", "--frames", "2", "--workdir",
                  tmp_path / "work", "--out", tmp_path / "fig.png", subs={"deliverables/<run>": ws.model})
    assert '"recall"' in proc.stdout and Image.open(tmp_path / "fig.png").size[0] > 300
    assert len(read_csv(tmp_path / "work/monitor_seed11/frames.csv")) == 2


@pytest.mark.parametrize("extra,message", [
    (["--alert", "pg_fractoin > 0.1"], "did you mean pg_fraction?"),
    (["--alert", "pg_fraction is high"], "not a rule"),
    (["--watch"], "--watch: takes one folder"),
    (["--set", "monitor.threshold=bright"], "monitor.threshold must be otsu, li, triangle or a number"),
])
def test_usage_errors_are_one_line(ws, extra, message):
    target = "data/process/frame_00001_20261201T100000.png" if extra == ["--watch"] else "data/process"
    proc = ws.run("python -m ga monitor", target, "--model", ws.model, "--out-dir", "errors_out", *extra, expect=2,
                  here=True)
    assert message in one_error_line(proc)


def test_a_missing_input_is_one_line(ws):
    missing = ws.run("python -m ga monitor nowhere --model", ws.model, expect=2, here=True)
    assert one_error_line(missing) == "error: PATH: not found: nowhere"


def test_monitor_bench_command(tmp_path):
    """bench/monitor.py on the small model: frames/s and particles/s, detection alone too."""
    import json

    ws = Workspace(tmp_path)
    proc = ws.run("python bench/monitor.py", "--quick", "--json", "m.json", timeout=900)
    doc = json.load(open(ws / "m.json"))
    assert proc.stdout.startswith("CPU: INT8 units ")
    assert doc["frames"] == 3 and doc["detection_only"]["frames_per_s"] > 0
    assert doc["demo"]["frames_per_s"] > 0 and doc["demo"]["particles_per_frame"] > 20
    assert doc["demo"]["particles_per_s"] == pytest.approx(doc["demo"]["frames_per_s"] * doc["demo"]["particles_per_frame"],
                                                           rel=0.02)
    assert doc["demo_openvino"]["engine"] == "openvino" and doc["demo_openvino"]["particles_per_frame"] == \
        doc["demo"]["particles_per_frame"]  # the same frames through the OpenVINO engine (the package is a test extra)
    assert doc["refresh"]["frames"] == 200 and 0 < doc["refresh"]["refresh_running_s"] < 60
    assert doc["large_frame"]["size"] == [2144, 1424]
    assert doc["large_frame"]["detection_s_scale_auto"] > 0 and doc["large_frame"]["detection_s_scale_1"] > 0


def test_python_api_monitor_in_a_fresh_interpreter(ws, tmp_path):
    """ga.monitor as docs/api.md shows it: settings as keywords, a MonitorResult back; the
    module ga.monitoring.loop loaded does not replace the function (as ga.train once was)."""
    frame = sorted(n for n in os.listdir(ws / "data/process") if n.endswith(".png"))[12]
    code = ("import ga, ga.monitoring.loop\n"
            f"r = ga.monitor({str(ws / 'data/process' / frame)!r}, {ws.model!r}, out_dir={str(tmp_path / 'api')!r},"
            " alerts=['particles > 1'], min_area=60)\n"
            "print(r.frames, r.particles, len(r.alerts), r.exit_code, callable(ga.monitor))\n")
    proc = ws.run("python -c", code)
    frames, particles, alerts, code_, still = proc.stdout.split()
    assert (frames, alerts, code_, still) == ("1", "1", "0", "True") and int(particles) > 10
    import json

    assert json.load(open(tmp_path / "api/monitor.json"))["monitor"]["min_area"] == 60


PLANT = ("python -m ga monitor incoming/ --model deliverables/<run> --watch --serve 8050 "
         "--opcua opc.tcp://127.0.0.1:4840 --mqtt mqtt://127.0.0.1:1883/ga/reactor1")


@pytest.fixture(scope="module")
def plant(ws, tmp_path_factory):
    """The documented plant command from a shell, with real peers (tests/plant_peers.py): a
    mosquitto broker, a paho subscriber, an asyncua client subscribed to the variables, an
    HTTP client. A writer process drops frames in; on the way: the dashboard's port is taken
    when the monitor starts (freed after the third frame), an HTTP client drops its connection
    mid-request, the broker is killed after the third frame (two frames arrive meanwhile, one
    unreadable and one whose time runs backwards) and started again; then two more frames and
    SIGTERM. What each peer saw is returned for the tests below."""
    from plant_peers import MOSQUITTO, NO_BROKER, Broker, OpcUaWatcher, Subscriber, free_port, wait_for

    if not MOSQUITTO:
        pytest.skip(NO_BROKER)
    pytest.importorskip("asyncua", reason="asyncua is in the test extra")
    tmp = tmp_path_factory.mktemp("plant")
    incoming, out = tmp / "incoming", tmp / "out"
    incoming.mkdir()
    http_port, opc_port, mqtt_port = free_port(), free_port(), free_port()
    broker = Broker(str(tmp), mqtt_port).start()
    sub = Subscriber(mqtt_port, "ga/reactor1")
    wait_for(lambda: sub.connects == 1, 10, "the subscriber to connect")
    taken = socket.socket()
    taken.bind(("127.0.0.1", http_port))
    taken.listen()
    command = PLANT.replace("incoming/", str(incoming)).replace("8050", str(http_port)).replace(
        "4840", str(opc_port)).replace("1883", str(mqtt_port))
    proc = _popen(ws, command, "--out-dir", out, *FAST_WATCH[:4])
    said = []
    threading.Thread(target=lambda: said.extend(proc.stderr), daemon=True).start()
    opc = OpcUaWatcher(f"opc.tcp://127.0.0.1:{opc_port}", "out", ["ParticleCount", "pgFraction", "AcquisitionCounter"])
    seen = {"said": said, "sub": sub, "opc": opc, "out": out, "json": []}
    try:
        assert opc.subscribed.wait(300) and opc.error is None, (opc.error, "".join(said)[-3000:])
        names = sorted(n for n in os.listdir(ws / "data/process") if n.endswith(".png"))

        def drop(*files):  # a writer process, as a camera's software would be
            subprocess.run([sys.executable, "-c", "import shutil, sys\nfor s, d in zip(sys.argv[1::2], sys.argv[2::2]): "
                            "shutil.copyfile(s, d)", *[str(a) for pair in files for a in pair]], check=True)

        def frames_done(n):
            wait_for(lambda: len(_rows(out / "frames.csv")) >= n or proc.poll() is not None, 120, f"{n} frames")
            assert proc.poll() is None, "".join(said)[-3000:]

        def state():
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/state.json", timeout=5) as r:
                seen["json"].append(json.loads(r.read()))
            return seen["json"][-1]

        for name in names[:3]:
            drop((ws / "data/process" / name, incoming / name))
            frames_done(names.index(name) + 1)
        taken.close()
        wait_for(lambda: _answers(http_port), 40, "the dashboard to bind once its port is free")
        assert state()["frames"] == 3
        _drop_mid_request(http_port)
        broker.kill()
        drop((ws / "data/process" / names[3], incoming / names[3]))
        frames_done(4)
        (incoming / "frame_00091_20261201T100007.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
        drop((ws / "data/process" / names[0], incoming / "frame_00092_20261201T095000.png"))  # before the others
        frames_done(6)
        assert state()["frames"] == 6  # the page's JSON moved on, nothing restarted
        broker.start()
        wait_for(lambda: sub.connects == 2, 20, "the subscriber to reconnect")
        wait_for(lambda: sub.status().count(("online", False)) + sub.status().count(("online", True)) >= 2, 60,
                 "the monitor to reconnect (its status online again)")
        for name in names[4:6]:
            drop((ws / "data/process" / name, incoming / name))
        frames_done(8)
        wait_for(lambda: set(names[4:6]) <= set(sub.frames()), 30, "the last frames' messages")
        assert state()["frames"] == 8
        # every frame's notification (and the value it had when subscribed) in before the client leaves:
        # on a loaded machine the last one can arrive after the page has moved on
        wait_for(lambda: len(opc.seen["ParticleCount"]) >= len(_rows(out / "frames.csv")) + 1, 30,
                 "the OPC UA client to see every frame")
        assert opc.error is None, opc.error
        opc.close()  # the client leaves first (a server stopping under it is the client's noise, not ours)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        seen["returncode"] = proc.returncode
        late = Subscriber(mqtt_port, "ga/reactor1")  # a client that comes after the stop: the retained status
        wait_for(lambda: late.status(), 10, "the retained status")
        seen["retained"] = late.status()
        late.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.ExitStack() as stack:  # each one closed, whatever the others raise
            for close in (taken.close, broker.kill, sub.close, opc.close):
                stack.callback(close)
    return seen


def _answers(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/state.json", timeout=2):
            return True
    except OSError:
        return False


def _drop_mid_request(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /state.json HTTP/1.1\r\nHo")
    s.close()


def test_plant_opcua_client_sees_every_frame_with_its_time_and_status(plant):
    from ga.monitoring.publish import utc

    frames = read_csv(plant["out"] / "frames.csv")
    seen = plant["opc"].seen["ParticleCount"]
    stamps = [utc(r["time"]) for r in frames]
    got = [(s.replace(tzinfo=dt.timezone.utc) if s.tzinfo is None else s) for _, _, s in seen]
    assert got[-len(frames):] == stamps, (got, stamps)  # after the value it had when subscribed
    want = {"": 0, "time_backwards": 0x40000000}
    for (value, code, _), r in zip(seen[-len(frames):], frames):
        if r["skipped"]:
            assert code == 0x80000000 and (value is None or math.isnan(value)), r  # Bad: no value
        else:
            assert code == want[r["flags"]] and value == float(r["particles"]), (value, code, r)
    assert [v for v, _, _ in plant["opc"].seen["AcquisitionCounter"]][-len(frames):] == list(range(1, len(frames) + 1))
    assert {r["frame"] for r in frames if r["skipped"]} == {"frame_00091_20261201T100007.png"}
    assert [r["flags"] for r in frames].count("time_backwards") == 1


def test_plant_mqtt_message_per_frame_through_a_broker_restart_and_offline_retained(plant):
    frames = [r["frame"] for r in read_csv(plant["out"] / "frames.csv")]
    got = plant["sub"].frames()
    assert len(got) == len(set(got)) and set(got) <= set(frames)  # none twice, none made up
    before, meanwhile, after = frames[:3], frames[3:6], frames[6:]
    assert got[:3] == before and set(after) <= set(got), got  # published before the kill, and again after
    # while the broker was away paho kept the messages and sent them once it was back: said, not required
    print(f"frames published while the broker was down and delivered after: {len(set(meanwhile) & set(got))} of 3")
    assert plant["retained"] == [("offline", True)]
    assert plant["sub"].status()[0] == ("online", False)
    said = "".join(plant["said"])
    assert said.count("MQTT broker") == 2 and "publishing again" in said, said[-3000:]  # down once, back once


def test_plant_dashboard_json_follows_the_frames_and_no_row_is_lost(plant, ws):
    frames = read_csv(plant["out"] / "frames.csv")
    assert len(frames) == 8 and plant["returncode"] == 1  # one unreadable frame: exit 1, as without publishing
    assert [s["frames"] for s in plant["json"]] == [3, 6, 8] and plant["json"][-1]["state"] == "running"
    assert plant["json"][-1]["latest"]["frame"] == frames[-1]["frame"]
    particles = read_csv(plant["out"] / "particles.csv")
    assert len(particles) == sum(int(r["particles"]) for r in frames)
    said = "".join(plant["said"])
    assert said.count("cannot listen") == 1 and "Traceback" not in said, said[-3000:]
    assert "dashboard: http://127.0.0.1:" in said
    from ga.monitoring.audit import verify

    n, problems = verify(str(plant["out"]))
    assert not problems and n >= 2
