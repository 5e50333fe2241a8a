"""Multi-worker training as a user starts it: two `main.py` processes on this machine, each with
its TF_CONFIG naming two ports on 127.0.0.1 (CPU, tiny CNN-4), for a binary, a multi-label and
a contrastive config, and a worker killed mid-run. Every wait is bounded and the processes are
killed if they outlive it. The cluster's resolution under Slurm is checked with a faked
environment."""

import gc
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import ga.synthetic as syn
from conftest import ROOT, make_separable_split, tiny_config
from helpers import one_error_line, read_csv, run_here
from ga.distributed import SLURM_PORT_BASE, is_chief, shard_rows
from ga.splitting import split_dataset

WAIT = 120  # seconds any two-worker run may take before its processes are killed
LOST = 150  # seconds the surviving worker may take to stop after the other is killed


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# An HTTP proxy on a closed port, as on many clusters' nodes: gRPC would send the workers'
# connections through it and TensorFlow's start-up would wait for good (ga exempts the cluster).
PROXY = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}


def worker_env(ports, index, tmpdir):
    env = {**os.environ, **PROXY, "TMPDIR": str(tmpdir), "MPLBACKEND": "Agg",
           "TF_CONFIG": json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                    "task": {"type": "worker", "index": index}})}
    env.pop("GA_LOGICAL_CPUS", None)
    return env


def srun_env(port, index, tmpdir, n=2):
    """The environment srun gives task `index` of a job step of `n` tasks on this one node
    (no TF_CONFIG): ga finds the cluster through SlurmClusterResolver."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "GA_LOGICAL_CPUS", "CUDA_VISIBLE_DEVICES")}
    env.update({**PROXY, "TMPDIR": str(tmpdir), "MPLBACKEND": "Agg", "GA_PORT_BASE": str(port),
                "SLURM_PROCID": str(index),
                "SLURM_STEP_NUM_TASKS": str(n), "SLURM_STEP_NODELIST": "localhost",
                "SLURM_STEP_TASKS_PER_NODE": str(n), "SLURM_JOB_ID": "4242"})
    return env


def consecutive_free_port(n=2):
    """A port p with p .. p + n - 1 free on 127.0.0.1 (Slurm tasks on one node take consecutive ports)."""
    for _ in range(50):
        base = free_ports(1)[0]
        if base + n > 65535:
            continue
        socks = []
        try:
            for k in range(n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + k))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no run of free ports")


def start(argv, cwd, tmpdir, n=2, slurm=False):
    """Start `n` processes of `argv` (a list after the interpreter), one per worker, with
    TF_CONFIG (or, with `slurm`, the environment of srun's tasks)."""
    if slurm:
        port = consecutive_free_port(n)
        envs = [srun_env(port, i, tmpdir, n) for i in range(n)]
    else:
        ports = free_ports(n)
        envs = [worker_env(ports, i, tmpdir) for i in range(n)]
    return [subprocess.Popen([sys.executable, *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for env in envs]


def start_workers(cfg, cwd, tmpdir, n=2, extra=(), slurm=False):
    return start([os.path.join(ROOT, "main.py"), "--config", cfg, *extra], cwd, tmpdir, n, slurm)


def wait_all(procs, timeout=WAIT):
    """(exit code, stdout, stderr) of each process; any still running after `timeout` s is killed."""
    outs = []
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            try:
                outs.append(p.communicate(timeout=max(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                p.kill()
                outs.append(p.communicate())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


def digests(errs):
    return [re.findall(r"final weights sha256 ([0-9a-f]{64})", e) for e in errs]


def reads(err):
    """{epoch: {split: (images, padding, batches)}} from a worker's per-epoch shard lines."""
    out = {}
    for epoch, rest in re.findall(r"worker \d of 2, epoch (\d+): read (.*)", err):
        for split, images, pad, batches in re.findall(r"(\w+) (\d+) images(?: \(\+(\d+) padding\))? in (\d+) batches",
                                                      rest):
            out.setdefault(int(epoch), {})[split] = (int(images), int(pad or 0), int(batches))
    return out


def one_complete_run(tmp_path, results, tmpdir="tmp"):
    """Both workers exited 0; exactly one complete run folder (the chief's), printed by the chief
    alone; the other worker's temporary folder is gone; both end with the same weights."""
    (code0, out0, err0), (code1, out1, err1) = results
    assert code0 == 0, err0[-3000:]
    assert code1 == 0, err1[-3000:]
    runs = os.listdir(tmp_path / "runs")
    assert len(runs) == 1
    run = os.path.join(tmp_path, "runs", runs[0])
    assert out0.strip().splitlines()[-1] == run and out1.strip() == ""
    assert not os.path.exists(os.path.join(run, "RUNNING"))
    assert os.listdir(tmp_path / tmpdir) == []
    d = digests([err0, err1])
    assert d[0] and d[0] == d[1]  # every weight, BatchNorm's moving statistics included
    device = json.load(open(os.path.join(run, "run.json")))["device"]
    assert device["replicas"] == 2 and device["workers"] == 2
    return run, err0, err1


@pytest.fixture()
def work(tmp_path):
    (tmp_path / "tmp").mkdir()
    return tmp_path


@pytest.fixture(scope="module")
def odd_split(tmp_path_factory):
    """33 training and 17 validation images: the two workers' shards differ by one image."""
    root = str(tmp_path_factory.mktemp("odd"))
    return make_separable_split(root, counts={"train": (17, 16), "valid": (9, 8), "test": (5, 5)})


DEMO = ["--set", "data.image_size=[32,32]", "--set", "data.batch_size=16", "--set", "training.epochs=2",
        "--set", "training.precise_bn_batches=2", "--set", "training.class_weight=balanced",
        "--set", "output.onnx=false", "--set", "output.saved_model=false", "--set", "output.explain=false",
        # float32: the test compares history.csv's validation loss with the delivered (float32)
        # model's to 1e-4; auto trains in bfloat16 on a CPU with the units, 5% apart
        "--set", "training.mixed_precision=float32"]


def test_two_workers_binary_read_distinct_shards_and_end_with_the_same_weights(odd_split, work):
    # docs/cluster.md's command on each worker (its TF_CONFIG set), shrunk by --set.
    argv = [os.path.join(ROOT, "main.py"), "--config", "configs/demo.yaml", "--set",
            "training.distribution=multi_worker", "--set", f"data.split_root={odd_split}",
            "--set", f"output.root={work / 'runs'}", *DEMO]
    run, err0, err1 = one_complete_run(work, wait_all(start(argv, work, work / "tmp")))
    assert os.path.isfile(os.path.join(run, "GAmodel.keras"))
    # Each epoch the workers read 17 and 16 of the 33 training images (the shorter shard is
    # padded with one copy of weight 0), in the 3 steps of a single process at batch 16, and 9
    # and 8 of the 17 validation images, unpadded, in two batches each (of at most 7).
    first, second = reads(err0), reads(err1)
    assert sorted(first) == sorted(second) == [1, 2]
    for epoch in (1, 2):
        assert first[epoch]["train"] == (17, 0, 3) and second[epoch]["train"] == (16, 1, 3)
        assert first[epoch]["valid"] == (9, 0, 2) and second[epoch]["valid"] == (8, 0, 2)
    rows = read_csv(os.path.join(run, "history.csv"))
    assert len(rows) == 2
    # The validation figures are those of the whole split in one process: the delivered
    # model (BatchNorm statistics re-estimated before validation, as on every worker) scores
    # the 17 images with the loss and accuracy history.csv recorded for its epoch (padded
    # validation shards would give 17/18 of the loss).
    delivered = json.load(open(os.path.join(run, "run.json")))["fit"]["delivered_epoch"]
    row = rows[delivered - 1]
    y, p = validation_predictions(run)
    assert len(y) == 17
    bce = -np.mean(y * np.log(np.clip(p, 1e-7, 1)) + (1 - y) * np.log(np.clip(1 - p, 1e-7, 1)))
    assert float(row["val_loss"]) == pytest.approx(bce, rel=1e-4)
    assert float(row["val_accuracy"]) == pytest.approx(np.mean((p > 0.5) == (y > 0.5)))


def validation_predictions(run):
    """(labels, probabilities of pg) of the run's validation split under its delivered model,
    in one process (ga's own pipeline)."""
    import keras

    import ga
    from ga.analysis import predict_split
    from ga.config import load_config
    from ga.data import build_datasets

    ga.register()
    cfg = load_config(os.path.join(run, "config.yaml"), ["training.distribution=none"])
    model = keras.models.load_model(os.path.join(run, "GAmodel.keras"), compile=False)
    y, p = predict_split(model, build_datasets(cfg, splits=("valid",)).valid)
    return y[:, 0].astype(np.float64), p[:, 0].astype(np.float64)


@pytest.mark.parametrize("n, count", [(33, 2), (32, 2), (1, 2), (10, 3), (7, 4), (100, 8)])
def test_shards_are_disjoint_cover_the_list_and_have_one_length(n, count):
    shards = [shard_rows(n, i, count) for i in range(count)]
    real = [set(rows[mask > 0].tolist()) for rows, mask in shards]
    assert set().union(*real) == set(range(n))
    assert sum(len(r) for r in real) == n  # disjoint
    assert len({len(rows) for rows, _ in shards}) == 1
    trimmed = [shard_rows(n, i, count, "trim") for i in range(count)]
    assert all(len(rows) == n // count and mask.all() for rows, mask in trimmed)
    assert len(set().union(*[set(rows.tolist()) for rows, _ in trimmed])) == count * (n // count)
    exact = [shard_rows(n, i, count, "all") for i in range(count)]
    assert sorted(np.concatenate([rows for rows, _ in exact]).tolist()) == list(range(n))
    assert all(mask.all() for _, mask in exact)


@pytest.fixture(scope="module")
def graphene_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("graphene_mw")
    src = syn.generate_graphene(str(root / "src"), count=40, size=48, seed=4)
    split_dataset(src, str(root / "split"), ratios=[0.6, 0.2, 0.2], progress=False)
    unlabelled = syn.generate_graphene(str(root / "unlabelled"), count=32, size=48, seed=9)
    return {"split": str(root / "split"), "unlabelled": unlabelled}


@pytest.mark.long  # about 40 s; two workers (TF_CONFIG): the binary test above
def test_two_workers_multilabel_under_slurm(graphene_data, work):
    # No TF_CONFIG: the two tasks of a Slurm job step on one node, found by SlurmClusterResolver.
    cfg = tiny_config(work / "ml.yaml", graphene_data["split"], str(work / "runs"),
                      model={"task": "multilabel"}, data={"any_class": True, "balance": True},
                      training={"epochs": 1, "distribution": "multi_worker"}, output={"onnx": False, "prefix": "GC"})
    run, err0, err1 = one_complete_run(work, wait_all(start_workers(cfg, work, work / "tmp", slurm=True)))
    labels = json.load(open(os.path.join(run, "labels.json")))
    assert labels["task"] == "multilabel" and set(labels["thresholds"]) == set(labels["classes"])
    # 23 training images, drawn by the balanced sampler: 12 draws per worker (one shard padded),
    # in the 3 steps of a single process at batch 8.
    n = len(read_csv(os.path.join(graphene_data["split"], "train", "labels.csv")))
    for e in (err0, err1):
        images, padding, batches = reads(e)[1]["train"]
        assert images + padding == -(-n // 2) and batches == -(-n // 8)


def test_two_workers_contrastive(graphene_data, work):
    cfg = tiny_config(work / "cl.yaml", graphene_data["split"], str(work / "runs"),
                      data={"train_dir": graphene_data["unlabelled"], "batch_size": 16}, model={"task": "contrastive"},
                      contrastive={"projection": [16, 8]},
                      training={"epochs": 1, "distribution": "multi_worker", "early_stopping": {"monitor": "loss"}},
                      output={"prefix": "GS"})
    run, err0, err1 = one_complete_run(work, wait_all(start_workers(cfg, work, work / "tmp")))
    assert os.path.isfile(os.path.join(run, "GSbackbone.weights.h5"))
    assert np.isfinite(json.load(open(os.path.join(run, "metrics.json")))["final_loss"])
    # 32 images: 16 per worker, two steps of 8 pairs each (the global batch of 16).
    assert [reads(e)[1]["train"] for e in (err0, err1)] == [(16, 0, 2), (16, 0, 2)]


LOSS_WORKER = textwrap.dedent("""
    import json
    import numpy as np
    import tensorflow as tf
    from ga.contrastive import nt_xent, one_way
    from ga.distributed import make_strategy
    strategy = make_strategy()
    rng = np.random.default_rng(3)
    n = 5
    z1 = rng.normal(size=(2 * n, 8)).astype(np.float32)
    z2 = rng.normal(size=(2 * n, 8)).astype(np.float32)
    mine = lambda z: strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(z[ctx.replica_id_in_sync_group * n:(ctx.replica_id_in_sync_group + 1) * n]))
    doc = {"z1": z1.tolist(), "z2": z2.tolist()}
    for name, fn in (("nt_xent", nt_xent), ("one_way", one_way)):
        run = tf.function(lambda a, b: strategy.run(lambda x1, x2: fn(x1, x2, 0.3), args=(a, b)))
        doc[name] = float(strategy.experimental_local_results(run(mine(z1), mine(z2)))[0])
    print(json.dumps(doc))
""")


def test_contrastive_losses_gather_negatives_across_workers(work):
    from test_contrastive import NUMPY_LOSSES

    docs = []
    for code, out, err in wait_all(start(["-c", LOSS_WORKER], ROOT, work / "tmp")):
        assert code == 0, err[-3000:]
        docs.append(json.loads(out.strip().splitlines()[-1]))
    for loss in ("nt_xent", "one_way"):
        want = NUMPY_LOSSES[loss](np.array(docs[0]["z1"]), np.array(docs[0]["z2"]), 0.3)
        # Each worker scores its 5 rows against the 10 of the global batch; the mean of the two
        # workers' losses is the whole batch's loss, which neither worker's own rows give alone.
        assert docs[0][loss] != pytest.approx(docs[1][loss])
        assert (docs[0][loss] + docs[1][loss]) / 2 == pytest.approx(want, rel=1e-4)


def test_a_lost_workers_error_is_one_line_naming_the_worker_and_the_resume():
    """What the chief says when a collective operation fails because a worker went away (the
    error TensorFlow raises, as its heartbeat check words it); the two real workers and the kill:
    the test below, --long."""
    import tensorflow as tf

    from ga.distributed import collective_errors, lost_worker

    text = ("{{function_node __inference_train_function_123}} Collective ops is aborted by: The following tasks "
            "are unhealthy (stopped sending heartbeats):\n/job:worker/replica:0/task:1\nThe tasks have crashed. "
            "The error could be from a previous operation.\n\t [[{{node Collective}}]]")
    err = lost_worker(tf.errors.UnavailableError(None, None, text), "deliverables/GA_x")
    message = err.render({"resume": "--resume"})  # as the command line names the option
    assert "\n" not in message and "function_node" not in message
    assert message.startswith("multi-worker training lost a worker (worker 1 stopped sending heartbeats); "
                              "deliverables/GA_x keeps the last finished epoch")
    assert message.endswith("--resume deliverables/GA_x")
    other = lost_worker(tf.errors.DeadlineExceededError(None, None, "deadline passed"), None).render()
    assert "(DeadlineExceededError: deadline passed)" in other
    assert other.endswith("train(resume=...) on the chief's run folder")  # as the Python API names it
    assert collective_errors(tf.distribute.get_strategy()) == ()  # one process: no error means a lost worker


def test_the_lost_workers_error_stops_the_pool_the_failed_all_reduce_left_open():
    """TensorFlow's eager all-reduce maps over a ThreadPool and closes it only on success; the
    one a failed reduction leaves running (held by the exception) is stopped with the error."""
    import multiprocessing.pool

    import tensorflow as tf

    from ga.distributed import lost_worker

    def reduce_on_devices():
        pool = multiprocessing.pool.ThreadPool(2)
        pool.map(lambda i: (_ for _ in ()).throw(tf.errors.UnavailableError(None, None, "task 1 is down")), [0, 1])
        pool.close()

    try:
        reduce_on_devices()
    except tf.errors.UnavailableError as exc:
        held = exc
        left = [o for o in gc.get_objects() if isinstance(o, multiprocessing.pool.ThreadPool)
                and o._state == multiprocessing.pool.RUN]
        assert left
        lost_worker(exc, "run")
    assert all(p._state != multiprocessing.pool.RUN for p in left) and held


@pytest.mark.long  # about 70 s on a 2-core AVX2 machine; resume after a SIGKILL is also test_faults.py's
def test_a_killed_worker_stops_the_run_clearly_and_resume_completes_it(work):
    split = make_separable_split(str(work / "split"))
    cfg = tiny_config(work / "kill.yaml", split, str(work / "runs"), data={"batch_size": 16},
                      training={"epochs": 3, "distribution": "multi_worker"}, output={"onnx": False})
    procs = start_workers(cfg, work, work / "tmp")
    try:
        deadline = time.monotonic() + WAIT
        backup = None
        while time.monotonic() < deadline and backup is None:
            runs = list((work / "runs").glob("GA_*")) if (work / "runs").is_dir() else []
            done = [r for r in runs if (r / "backup" / "training_metadata.json").is_file()]
            backup = done[0] if done else None
            time.sleep(0.05)
        assert backup is not None, "the chief never finished an epoch"
        procs[1].send_signal(signal.SIGKILL)  # worker 2 dies after epoch 1
        started = time.monotonic()
        (code, out, err), _ = wait_all(procs, timeout=LOST)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    run = str(backup)
    # The chief notices (alone on this machine within about 10 s: TensorFlow's heartbeat
    # timeout; once 80 s under the full suite's load) and says what happened and what to do.
    assert time.monotonic() - started < LOST, err[-3000:]
    assert code == 2 and out.strip() == "" and "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: multi-worker training lost a worker ("), err[-3000:]
    assert f"--resume {run}" in message
    assert os.path.exists(os.path.join(run, "RUNNING"))
    # Both workers started again with --resume finish the run; every epoch is in history once.
    # (The killed worker could not remove its temporary folder: the restarted ones get another.)
    (work / "tmp2").mkdir()
    restarted = wait_all(start([os.path.join(ROOT, "main.py"), "--resume", run], work, work / "tmp2"))
    run, err0, err1 = one_complete_run(work, restarted, "tmp2")
    assert "resuming at epoch" in err0 and "resuming at epoch" in err1
    epochs = [int(r["epoch"]) for r in read_csv(os.path.join(run, "history.csv"))]
    assert epochs == list(range(3))


# ---------------------------------------------------------------------------- who writes, the cluster


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


SLURM = {"SLURM_PROCID": "2", "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "gpu[07-08]",
         "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}


@pytest.fixture()
def slurm_env(monkeypatch):
    for k in ("TF_CONFIG", "CUDA_VISIBLE_DEVICES", "SLURM_GPUS_ON_NODE", "GA_PORT_BASE"):
        monkeypatch.delenv(k, raising=False)
    for k, v in SLURM.items():
        monkeypatch.setenv(k, v)
    return monkeypatch


def test_slurm_job_step_gives_the_cluster_without_tf_config(slurm_env):
    from ga.distributed import cluster_resolver

    r = cluster_resolver()
    assert type(r).__name__ == "SlurmClusterResolver"
    p = SLURM_PORT_BASE
    assert r.cluster_spec().as_dict() == {"worker": [f"gpu07:{p}", f"gpu07:{p + 1}", f"gpu08:{p}", f"gpu08:{p + 1}"]}
    assert (r.task_type, r.task_id) == ("worker", 2)
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # CPU-only nodes: left alone


def test_slurm_gpus_are_shared_out_per_task(slurm_env):
    from ga.distributed import cluster_resolver

    slurm_env.setenv("SLURM_GPUS_ON_NODE", "4")
    slurm_env.setenv("GA_PORT_BASE", "9000")
    r = cluster_resolver()
    assert r.cluster_spec().as_dict()["worker"][0] == "gpu07:9000"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"  # task 2: the first task on gpu08
    slurm_env.setenv("CUDA_VISIBLE_DEVICES", "3")  # the task's own GPU (srun --gpus-per-task): kept
    cluster_resolver().cluster_spec()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"


def test_tf_config_wins_over_slurm(slurm_env):
    from ga.distributed import cluster_resolver

    slurm_env.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker",
                                                                                            "index": 1}}))
    r = cluster_resolver()
    assert type(r).__name__ == "TFConfigClusterResolver" and r.task_id == 1


def test_no_cluster_is_one_line_and_exit_2(slurm_env, tmp_path, separable_split):
    for k in SLURM:
        slurm_env.delenv(k)
    cfg = tiny_config(tmp_path / "c.yaml", separable_split, str(tmp_path / "runs"),
                      training={"distribution": "multi_worker"})
    out = run_here("main.py", "--config", cfg, cwd=tmp_path, expect=2)
    assert one_error_line(out).startswith("error: training.distribution: multi_worker needs "
                                                          "TF_CONFIG")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("n, count, batch", [(17, 2, 8), (16, 2, 8), (33, 2, 4), (9, 4, 3), (3, 2, 5), (25, 3, 4)])
def test_validation_shards_make_equal_batch_counts_none_empty(n, count, batch):
    from ga.distributed import validation_batch

    b = validation_batch(n, count, batch)
    assert b is not None and 1 <= b <= batch
    shards = [len(shard_rows(n, i, count, "all")[0]) for i in range(count)]
    assert len({-(-m // b) for m in shards}) == 1  # same number of batches on every worker ...
    assert all(m - (-(-m // b) - 1) * b > 0 for m in shards)  # ... and the last one is not empty
    # none: fewer images than workers; shards of 2 and 3 at batches of at most 2
    assert validation_batch(1, 2, 8) is None and validation_batch(9, 4, 2) is None
