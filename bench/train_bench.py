"""Training throughput and the cost of validation per epoch.

    python bench/train_bench.py [--config configs/resnet101.yaml] [--size 64] [--epochs 3]

Trains on a synthetic crystal split (made under --workdir on first use) with the given
config and weights none, then prints from the run's history.csv, per epoch, training
images/s (validation excluded) and the share of the epoch spent in validation: one pass,
whose per-class F1 comes from compiled metrics, with no extra prediction pass.
"""

import argparse
import csv
import os

from common import crystal_split, machine


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/resnet101.yaml")
    p.add_argument("--size", type=int, default=64, help="input size (the study uses 224)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--trainable-fraction", type=float, default=None, help="override model.trainable_fraction")
    p.add_argument("--workdir", default="/tmp/ga_train_bench")
    args = p.parse_args()

    from ga.trainer import train

    split = crystal_split(args.workdir)
    sets = [f"data.split_root={split}", "model.weights=none", f"data.image_size=[{args.size},{args.size}]",
            f"training.epochs={args.epochs}", f"data.batch_size={args.batch_size}",
            f"output.root={os.path.join(args.workdir, 'runs')}", "output.onnx=false",
            "training.early_stopping.f1_patience=1000"]
    if args.trainable_fraction is not None:
        sets.append(f"model.trainable_fraction={args.trainable_fraction}")
    run = train(args.config, sets)
    rows = list(csv.DictReader(open(os.path.join(run, "history.csv"))))
    n_train = sum(len(f) for _, _, f in os.walk(os.path.join(split, "train")))
    n_valid = sum(len(f) for _, _, f in os.walk(os.path.join(split, "valid")))
    print(f"machine: {machine()}")
    print(f"config {args.config} at {args.size}px, batch {args.batch_size}, {n_train} training / {n_valid} validation images")
    print(f"{'epoch':>5} {'epoch s':>8} {'validation s':>13} {'val share':>9} {'train img/s':>12}")
    for r in rows:
        total, val = float(r["epoch_seconds"]), float(r["val_seconds"])
        print(f"{int(r['epoch']) + 1:>5} {total:8.1f} {val:13.1f} {100 * val / total:8.1f}% {n_train / (total - val):12.1f}")
    print(f"run folder: {run}")


if __name__ == "__main__":
    main()
