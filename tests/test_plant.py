"""The monitor's plant side in this process: each frame's message, the live dashboard (what it
serves and refuses, a port in use, a client that goes away, stale and stopped states, a
browser watching a frame arrive), the OPC UA server's layout and the options' bad input.
The whole chain from a shell (`ga monitor --watch --serve --opcua --mqtt`, a real broker, the
broker killed and restarted) is tests/test_monitor.py's test_plant_*."""

import http.client
import json
import logging
import os
import shutil
import socket
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from ga.config import load_config
from ga.monitoring import audit
from ga.monitoring.dashboard import Dashboard, state
from ga.monitoring.loop import monitor
from helpers import read_csv
from test_monitor_units import _fake_model

CFG = load_config(None, overrides=["monitor.size_bins=[0,20,40,.inf]", "monitor.static_window=0"]).monitor
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _frame(path, k, blobs=2):
    img = np.full((120, 160), 25, np.uint8)
    for b in range(blobs):
        img[20 + 30 * b:40 + 30 * b, 20 + 25 * k % 100:44 + 25 * k % 100] = 200
    Image.fromarray(img).save(path)


@pytest.fixture
def frames(tmp_path):
    """Four frames: two good, one whose time runs backwards (flagged), one unreadable."""
    folder = tmp_path / "frames"
    folder.mkdir()
    _frame(folder / "a_20261201T100000.png", 0)
    _frame(folder / "b_20261201T100010.png", 1, blobs=3)
    _frame(folder / "c_20261201T100005.png", 2)  # named after b, timed before it: time_backwards
    (folder / "d_20261201T100020.png").write_bytes(b"not a png")
    return folder


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


def test_each_frame_is_one_message_with_its_values_quality_and_alerts(tmp_path, frames):
    seen = []
    monitor(_fake_model(tmp_path), [str(frames)], str(tmp_path / "out"), CFG, rules=["particles >= 3"],
            hooks=[lambda r: seen.append(json.loads(json.dumps(r.message)))])
    rows = read_csv(tmp_path / "out/frames.csv")
    assert [m["frame"] for m in seen] == [r["frame"] for r in rows] and [m["counter"] for m in seen] == [1, 2, 3, 4]
    quality = {m["frame"][0]: m["quality"] for m in seen}
    assert quality == {"a": "good", "b": "good", "c": "uncertain", "d": "bad"}, quality
    for m, r in zip(seen, rows):
        assert m["time"] == r["time"] and m["unit"] == "px"
        if m["quality"] == "bad":
            assert set(m["values"].values()) == {None} and m["skipped"] and set(m["size_bins"]["counts"]) == {None}
            continue
        assert m["values"]["particles"] == float(r["particles"]) and m["values"]["pg_fraction"] == float(r["pg_fraction"])
        assert m["values"]["d50_px"] == float(r["d50_px"])
        assert m["size_bins"]["edges"] == [0, 20, 40, "inf"]
        assert m["size_bins"]["counts"] == [float(r[c]) for c in ("count_0_20_px", "count_20_40_px", "count_40_inf_px")]
    # in time order a, c, b, d; the rule holds on b (3 particles) only: fired there, active there only
    assert [m["frame"][0] for m in seen] == ["a", "c", "b", "d"]
    assert [m["alerts_active"]["particles >= 3"] for m in seen] == [False, False, True, False]
    assert [len(m["alerts"]) for m in seen] == [0, 0, 1, 0] and seen[2]["alerts"][0]["value"] == 3


@pytest.fixture
def folder(tmp_path, frames):
    monitor(_fake_model(tmp_path), [str(frames)], str(tmp_path / "out"), CFG)
    return tmp_path / "out"


def test_the_dashboard_serves_its_page_state_figures_and_tables_and_nothing_else(folder):
    board = Dashboard(str(folder), port=0).start()
    try:
        assert board.bound.is_set() and board.url.startswith("http://127.0.0.1:")
        code, kind, page = _get(board.url)
        assert code == 200 and kind.startswith("text/html") and b"state.json" in page
        code, kind, body = _get(board.url + "state.json")
        s = json.loads(body)
        rows = read_csv(folder / "frames.csv")
        assert (s["frames"], s["state"], s["classes"]) == (4, "stopped", ["cex", "pg"])
        assert s["latest"]["frame"] == rows[-1]["frame"] and s["latest"]["skipped"]
        assert s["series"]["particles"] == [float(r["particles"]) if r["particles"] else None for r in rows]
        assert set(s["figures"]) >= {"monitor_trend.png", "monitor_latest.png", "monitor_bins.png"}
        assert _get(board.url + "monitor_trend.png?v=1")[1] == "image/png"
        assert _get(board.url + "frames.csv")[2] == (folder / "frames.csv").read_bytes()
        host, port = "127.0.0.1", board.port
        for path in ("/particles.csv", "/audit.jsonl", "/monitor.json", "/../frames.csv", "/%2e%2e/etc/passwd",
                     "/frames.csv/", "//etc/passwd", "/out/", "/monitor_trend.png/../audit.jsonl"):
            c = http.client.HTTPConnection(host, port, timeout=5)
            c.request("GET", path)
            r = c.getresponse()
            assert r.status == 404 and b"audit" not in r.read(), path
            c.close()
        c = http.client.HTTPConnection(host, port, timeout=5)
        c.request("POST", "/state.json", body=b"{}")
        assert c.getresponse().status == 501  # only GET and HEAD
    finally:
        board.close()
    assert not board._thread.is_alive()


def test_stale_when_running_without_a_frame_and_stopped_after_the_stop_entry(folder):
    assert state(str(folder))["state"] == "stopped"
    audit.append(str(folder), "start", command="ga monitor (resumed)")
    assert state(str(folder), stale_seconds=60)["state"] == "running"
    old = time.time() - 120
    os.utime(folder / "frames.csv", (old, old))
    s = state(str(folder), stale_seconds=60)
    assert s["state"] == "stale" and s["age_s"] >= 119


def test_a_port_in_use_is_one_warning_and_the_dashboard_binds_once_it_is_free(folder, caplog):
    caplog.set_level(logging.WARNING, logger="ga.monitoring")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    board = Dashboard(str(folder), port=port)
    try:
        board.start(wait=0.5)
        assert not board.bound.is_set()
        time.sleep(2.5)  # a retry or two meanwhile: still one warning
        taken.close()
        assert board.bound.wait(10)
        assert json.loads(_get(board.url + "state.json")[2])["frames"] == 4
    finally:
        board.close()
        taken.close()
    warned = [m for m in caplog.messages if "dashboard" in m]
    assert len(warned) == 2 and "in use" in warned[0] and "retrying" in warned[0] and "listening" in warned[1], warned


def test_a_client_that_goes_away_mid_request_leaves_the_dashboard_serving(folder, caplog):
    caplog.set_level(logging.WARNING)
    board = Dashboard(str(folder), port=0).start()
    try:
        for request in (b"GET /state.js", b"GET /monitor_trend.png HTTP/1.1\r\nHost: x\r\n\r\n"):
            s = socket.create_connection(("127.0.0.1", board.port))
            s.sendall(request)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
            s.close()
        time.sleep(0.3)
        assert json.loads(_get(board.url + "state.json")[2])["frames"] == 4
    finally:
        board.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_page_shows_a_new_frame_without_a_reload(tmp_path, frames, folder):
    """Chromium (Debian's, driven by Playwright) on the dashboard: the frame count changes
    when the monitor takes one more frame, and the page was never reloaded."""
    if not CHROMIUM:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium; .ci/run installs it as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    board = Dashboard(str(folder), port=0).start()
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"])
            page = browser.new_page()
            page.goto(board.url)
            page.wait_for_function("document.querySelector('#frames .v') && "
                                   "document.querySelector('#frames .v').textContent === '4'", timeout=15000)
            assert page.text_content("#state") == "stopped"
            page.evaluate("window.notReloaded = true")
            _frame(frames / "e_20261201T100030.png", 3)
            monitor(_fake_model(tmp_path), [str(frames)], str(folder), CFG)
            page.wait_for_function("document.querySelector('#frames .v').textContent === '5'", timeout=15000)
            assert page.evaluate("window.notReloaded") is True
            assert "e_20261201T100030.png" in page.text_content("#frames")
            browser.close()
    finally:
        board.close()


@pytest.mark.parametrize("extra, message", [
    (["--mqtt", "http://127.0.0.1/ga"], "give mqtt://HOST[:PORT]/PREFIX"),
    (["--mqtt", "mqtt://127.0.0.1"], "give mqtt://HOST[:PORT]/PREFIX"),
    (["--opcua", "tcp://127.0.0.1:4840"], "give opc.tcp://HOST:PORT"),
    (["--serve", "70000"], "a port from 0 to 65535"),
    (["--opcua-cert", "c.der"], "--opcua-cert and --opcua-key go with --opcua"),
    (["--mqtt-user", "u"], "go with --mqtt"),
    (["--serve", "8050", "--calibrate"], "not with the tuning modes"),
])
def test_plant_options_bad_input_is_one_line_exit_2(tmp_path, frames, capsys, extra, message):
    from ga.cli.monitor import main

    with pytest.raises(SystemExit) as done:
        main([str(frames), "--model", "nowhere", *extra])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) <= 2 and message in err[-1], err  # argparse: the usage line, then the one error line


def test_opcua_lays_out_one_object_per_monitor_with_each_class_and_rule():
    from ga.monitoring.opcua import variable_names

    names = variable_names({"classes": ["cex", "pg"], "rules": ["pg_fraction > 0.1 over 5 frames"], "unit": "um",
                            "size_bins": [0, 20, 50]})
    assert {"Running", "AcquisitionCounter", "ParticleCount", "StaticDeposits", "pgFraction", "pgFraction_Lo",
            "pgFraction_Hi", "cexCount", "D50", "SizeDistribution", "SizeBinEdges"} <= set(names)
    assert "AlertActive/pg_fraction > 0.1 over 5 frames" in names and len(names) == len(set(names))


def test_ga_monitor_serve_from_a_shell_until_sigterm(folder, tmp_path):
    """`python -m ga monitor serve DIR --address PORT` as typed: it serves a finished folder,
    stops on SIGTERM with exit 0, and refuses a folder that is not a monitor's (one line, exit 2)."""
    import signal
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ga", "monitor", "serve", str(folder), "--address", str(port)],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                body = _get(f"http://127.0.0.1:{port}/state.json", timeout=2)[2]
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.2)
        assert json.loads(body)["frames"] == 4
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert f"dashboard: http://127.0.0.1:{port}/" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    done = subprocess.run([sys.executable, "-m", "ga", "monitor", "serve", str(tmp_path), "--address", str(port)],
                          capture_output=True, text=True, env=env, timeout=60)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1 and "not a monitor folder" in err[0], done.stderr
