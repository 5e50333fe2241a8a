"""Multi-worker training on this machine: 2 workers x 1 core against 1 worker x 2 cores, at the
same global batch, and what the all-reduce costs.

    python bench/multi_worker.py [--config configs/demo.yaml] [--size 96] [--per-class 300]
                                 [--epochs 6] [--batch-size 32] [--json out.json]

Trains with `main.py` the ways of `WAYS` on a synthetic crystal split (made under --workdir
on first use), precise BatchNorm and early stopping off: one process with a compute thread per
core; two worker processes (TF_CONFIG, 127.0.0.1) with one compute thread each
(TF_NUM_INTRAOP_THREADS=1), with and without synchronised BatchNorm, and with one per core;
one process with one thread at half the global batch (a worker's computation with no
communication). "1 core" is one compute thread, not `taskset`: pinned to one core each, the
two workers' gRPC exchanges stalled in waits of 5, 10, 20, up to 80 s (measured; idle, not
computing), which says nothing about a cluster node.

From each run's history.csv, training images/s of the median epoch after the first
(validation excluded; the range of the epochs' times is printed too). The communication share
of a two-worker step is 1 - (the half-batch process's step time) / (the worker's step time):
what the gradient all-reduce, the synchronised BatchNorm statistics and the end-of-step
agreement add to each worker's own computation. Last, two workers time an all-reduce of one
float32 tensor as large as the model's trainable weights (what each step all-reduces as
gradients) and of one float (the latency of any collective).
"""

import argparse
import csv
import json
import os
import socket
import statistics
import subprocess
import sys
import time

from common import crystal_split, machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ALLREDUCE = """
import json, sys, time
import tensorflow as tf
from ga.distributed import make_strategy
strategy = make_strategy()
out = {}
for name, n in (("gradient", int(sys.argv[1])), ("one_float", 1)):
    x = tf.ones([n])
    step = tf.function(lambda: strategy.run(lambda: tf.distribute.get_replica_context().all_reduce("SUM", x)))
    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(20):
        float(strategy.experimental_local_results(step())[0][0])
    out[name] = (time.perf_counter() - t) / 20
print(json.dumps(out))
"""


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def launch(argv, threads=None, workers=1, timeout=900):
    """Run `workers` processes of `argv` (TF_CONFIG on 127.0.0.1 when more than one), each with
    `threads` TensorFlow compute threads (TF_NUM_INTRAOP_THREADS; None: one per core). Processes
    still running after `timeout` s are killed and the benchmark stops."""
    ports = free_ports(workers)
    procs = []
    for i in range(workers):
        e = {**os.environ, "MPLBACKEND": "Agg"}
        e.pop("GA_LOGICAL_CPUS", None)
        if threads:
            e["TF_NUM_INTRAOP_THREADS"] = str(threads)
        if workers > 1:
            e["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                         "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen([sys.executable, *argv], env=e, cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
            p.communicate()
        sys.exit(f"no result after {timeout:g} s (--timeout): {' '.join(argv[:3])} ...")
    for p, (_, err) in zip(procs, outs):
        if p.returncode:
            sys.exit(f"a process failed (exit {p.returncode}):\n{err[-3000:]}")
    return [out for out, _ in outs]


def train_rate(args, split, name, batch, threads, workers=1, sets=()):
    """Training images/s and seconds per step of the median epoch after the first."""
    sets = [f"data.split_root={split}", f"data.image_size=[{args.size},{args.size}]", f"data.batch_size={batch}",
            f"training.epochs={args.epochs}", "training.precise_bn_batches=0",
            "training.early_stopping.f1_patience=1000", "training.early_stopping.patience=1000",
            f"training.distribution={'multi_worker' if workers > 1 else 'none'}", "model.weights=none",
            f"output.root={os.path.join(args.workdir, 'runs')}", "output.onnx=false", "output.saved_model=false",
            "output.explain=false", f"output.name=bench_{name}", *sets]
    argv = [os.path.join(ROOT, "main.py"), "--config", args.config, "--quiet"]
    for s in sets:
        argv += ["--set", s]
    run = launch(argv, threads, workers, args.timeout)[0].strip().splitlines()[-1]
    rows = list(csv.DictReader(open(os.path.join(run, "history.csv"))))[1:]
    n_train = json.load(open(os.path.join(run, "run.json")))["data"]["images"]["train"]
    # The median epoch: this shared machine has bursts several times slower than the rest.
    epochs = sorted(float(r["epoch_seconds"]) - float(r["val_seconds"]) for r in rows)
    seconds = statistics.median(epochs)
    steps = -(-n_train // batch)  # `batch` is the global batch: the workers share each step's
    return {"images_per_s": round(n_train / seconds, 1), "step_s": round(seconds / steps, 4),
            "epoch_s_min_max": [round(epochs[0], 2), round(epochs[-1], 2)]}


# name: (what, global batch divided by, compute threads of each process, workers, --set)
WAYS = {
    "one_2_cores": ("1 process, 2 compute threads", 1, None, 1, ()),
    "two_1_core": ("2 workers, 1 compute thread each", 1, 1, 2, ()),
    "two_1_core_unsync_bn": ("2 workers, 1 thread each, sync_batchnorm false", 1, 1, 2,
                             ("training.sync_batchnorm=false",)),
    "two_2_cores": ("2 workers, 2 compute threads each", 1, None, 2, ()),
    "one_1_core_half_batch": ("1 process, 1 thread, half the batch (a worker's share)", 2, 1, 1, ()),
}


def trainable_count(args):
    code = (f"import sys; sys.path.insert(0, {ROOT!r}); import ga; from ga.config import load_config; "
            f"from ga.model import build_model; "
            f"cfg = load_config({args.config!r}, ['model.weights=none', 'data.image_size=[{args.size},{args.size}]']); "
            f"m = build_model(cfg, 1); print(sum(int(v.numpy().size) for v in m.trainable_weights))")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              cwd=ROOT).stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--per-class", type=int, default=300)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=32, help="the global batch")
    p.add_argument("--workdir", default="/tmp/ga_multi_worker_bench")
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--timeout", type=float, default=900, help="seconds one way may take before the benchmark gives up")
    p.add_argument("--ways", nargs="+", choices=list(WAYS), default=list(WAYS),
                   help="time only these ways (the all-reduce is timed when a two-worker way is among them)")
    args = p.parse_args()

    split = crystal_split(args.workdir, per_class=args.per_class)
    started = time.time()
    ways = {name: train_rate(args, split, name, args.batch_size // factor, threads, workers, sets)
            for name, (_, factor, threads, workers, sets) in WAYS.items() if name in args.ways}
    for name in ("two_1_core", "two_1_core_unsync_bn"):
        if name in ways and "one_1_core_half_batch" in ways:
            ways[name]["communication_share"] = round(1 - ways["one_1_core_half_batch"]["step_s"] / ways[name]["step_s"], 3)
    n = trainable_count(args)
    figures = {
        "machine": machine(), "config": args.config, "size": args.size, "global_batch": args.batch_size,
        "epochs_timed": args.epochs - 1, "ways": ways, "trainable_weights": n,
    }
    two_workers = any(WAYS[name][3] > 1 for name in ways)
    if two_workers:
        reduce = json.loads(launch(["-c", ALLREDUCE, str(n)], 1, 2, args.timeout)[0].strip().splitlines()[-1])
        figures.update(allreduce_gradient_s=round(reduce["gradient"], 5), allreduce_one_float_s=round(reduce["one_float"], 5))
    figures["wall_s"] = round(time.time() - started, 1)
    print(f"machine: {figures['machine']}")
    print(f"{args.config} at {args.size} px, global batch {args.batch_size}, {args.epochs - 1} timed epoch(s)")
    print(f"{'way':<58} {'train img/s':>11} {'s/step':>8} {'epoch s (range)':>16} {'communication':>13}")
    for name, w in ways.items():
        what = WAYS[name][0]
        share = f"{100 * w['communication_share']:.0f}%" if "communication_share" in w else ""
        spread = "{:.1f}-{:.1f}".format(*w["epoch_s_min_max"])
        print(f"{what:<58} {w['images_per_s']:>11} {w['step_s']:>8} {spread:>16} {share:>13}")
    if two_workers:
        print(f"all-reduce between two workers (1 thread each) of {n:,} float32 ({4 * n / 2**20:.2f} MiB, the "
              f"gradients): {1000 * reduce['gradient']:.2f} ms; of one float: {1000 * reduce['one_float']:.2f} ms")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)


if __name__ == "__main__":
    main()
