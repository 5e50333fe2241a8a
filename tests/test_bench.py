"""The benchmark runner works and writes the documented JSON (figures are not asserted)."""

import json
import os
import subprocess
import sys

from conftest import ROOT


def test_bench_quick_one_benchmark_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "run.py"), "--quick", "--only", "flops_fraction",
                           "--json", str(out), "--workdir", str(tmp_path / "work")], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert set(doc) >= {"machine", "versions", "results"}
    r = doc["results"]["flops_fraction"]
    assert set(r) >= {"ours", "reference", "unit", "ratio"}
    assert r["ours"] > 0 and r["reference"] > 0 and abs(r["ratio"] - r["ours"] / r["reference"]) < 1e-2
    assert doc["machine"]["cpus"] >= 1 and doc["versions"]["tensorflow"]
