"""Multi-worker training as a user starts it: two `main.py` processes on this machine, each with
its TF_CONFIG naming two ports on 127.0.0.1 (CPU, tiny CNN-4). Every wait is bounded and the
processes are killed if they outlive it."""

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from conftest import ROOT, tiny_config
from ga.distributed import is_chief


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start_workers(cfg, cwd, tmpdir, n=2, extra=()):
    ports = free_ports(n)
    procs = []
    for i in range(n):
        env = {**os.environ, "TMPDIR": str(tmpdir), "MPLBACKEND": "Agg",
               "TF_CONFIG": json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                        "task": {"type": "worker", "index": i}})}
        env.pop("GA_LOGICAL_CPUS", None)
        procs.append(subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py"), "--config", cfg, *extra],
                                      cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def wait_all(procs, timeout=240):
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


@pytest.mark.long  # two TensorFlow processes on 2 cores: kept out of make test's 15-minute budget for now
def test_two_workers_write_one_run_folder_with_the_same_weights(separable_split, tmp_path):
    cfg = tiny_config(tmp_path / "mw.yaml", separable_split, str(tmp_path / "runs"),
                      training={"epochs": 2, "distribution": "multi_worker"},
                      output={"onnx": False, "saved_model": False})
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    (chief_code, chief_out, chief_err), (code, out, err) = wait_all(start_workers(cfg, tmp_path, tmpdir))
    assert chief_code == 0, chief_err[-3000:]
    assert code == 0, err[-3000:]
    runs = os.listdir(tmp_path / "runs")
    assert len(runs) == 1  # the chief's; worker 1 wrote to a temporary folder ...
    run = os.path.join(tmp_path, "runs", runs[0])
    assert chief_out.strip().splitlines()[-1] == run and out.strip() == ""
    assert not os.path.exists(os.path.join(run, "RUNNING")) and os.path.isfile(os.path.join(run, "GAmodel.keras"))
    assert os.listdir(tmpdir) == []  # ... and removed it
    # Synchronous training: both workers end with the same trainable weights.
    digests = [re.findall(r"final trainable weights sha256 ([0-9a-f]{64})", e) for e in (chief_err, err)]
    assert digests[0] and digests[0] == digests[1]
    doc = json.load(open(os.path.join(run, "run.json")))
    assert doc["device"]["replicas"] == 2


class _Resolver:
    def __init__(self, spec, task_type, task_id):
        self.spec, self.task_type, self.task_id = spec, task_type, task_id

    def cluster_spec(self):
        class Spec:
            def as_dict(inner):
                return self.spec
        return Spec()


class _Strategy:
    def __init__(self, resolver):
        self.cluster_resolver = resolver


@pytest.mark.parametrize("spec, task, chief", [
    ({"worker": ["a", "b"]}, ("worker", 0), True),
    ({"worker": ["a", "b"]}, ("worker", 1), False),
    ({"chief": ["c"], "worker": ["a"]}, ("chief", 0), True),
    ({"chief": ["c"], "worker": ["a"]}, ("worker", 0), False),
])
def test_only_the_chief_writes(spec, task, chief):
    assert is_chief(_Strategy(_Resolver(spec, *task))) is chief
    assert is_chief(_Strategy(None)) is True  # one process: it writes
