"""Training throughput and the cost of validation per epoch.

    python bench/train_bench.py [--config configs/resnet101.yaml] [--size 64] [--epochs 3]

Trains on a synthetic crystal split (made under --workdir on first use) with the given
config and weights none, and prints, per epoch, training images/s (the validation pass
excluded) and the share of the epoch spent in validation — one pass, whose per-class F1
comes from compiled metrics, with no extra prediction pass.
"""

import argparse
import os
import time

from common import crystal_split, machine


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/resnet101.yaml")
    p.add_argument("--size", type=int, default=64, help="input size (the study uses 224)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workdir", default="/tmp/ga_train_bench")
    args = p.parse_args()

    import keras

    from ga import callbacks as ga_callbacks
    from ga.train import train

    split = crystal_split(args.workdir)
    times = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()
            self.val = 0.0

        def on_test_begin(self, logs=None):
            self.v0 = time.perf_counter()

        def on_test_end(self, logs=None):
            self.val += time.perf_counter() - self.v0

        def on_epoch_end(self, epoch, logs=None):
            times.append((time.perf_counter() - self.t0, self.val))

    real = ga_callbacks.build_callbacks
    ga_callbacks.build_callbacks = lambda *a, **k: (lambda cb: ([Clock(), *cb[0]], cb[1]))(real(*a, **k))
    run = train(args.config, [f"data.split_root={split}", "model.weights=none", f"data.image_size=[{args.size},{args.size}]",
                              f"training.epochs={args.epochs}", f"data.batch_size={args.batch_size}",
                              f"output.root={os.path.join(args.workdir, 'runs')}", "output.onnx=false",
                              "training.early_stopping.f1_patience=1000"])
    n_train = sum(len(f) for _, _, f in os.walk(os.path.join(split, "train")))
    print(f"machine: {machine()}; config {args.config} at {args.size}px, batch {args.batch_size}, {n_train} training images")
    print(f"{'epoch':>5} {'epoch s':>8} {'validation s':>13} {'val share':>9} {'train img/s':>12}")
    for i, (total, val) in enumerate(times, 1):
        print(f"{i:>5} {total:8.1f} {val:13.1f} {100 * val / total:8.1f}% {n_train / (total - val):12.1f}")
    print(f"run folder: {run}")


if __name__ == "__main__":
    main()
