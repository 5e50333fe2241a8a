"""This project against the original study's way of doing each stage, in one run.

    python bench/run.py [--quick] [--json bench.json] [--only NAME ...] [--set KEY=VALUE ...]

Names: pipeline_aug, pipeline_noaug, epoch, eval, inference, flops_fraction, train_bf16,
inference_int8 (the last two: this project's low precision against its float32, from
bench/precision.py). The reference
side needs tf-keras (`pip install -e ".[bench]"`, or `make bench`) for ImageDataGenerator.
Both sides run on this machine, on the same synthetic crops and the same model, in one
process, and each result is a ratio (> 1: this project is better; for flops_fraction the
figure is the achieved share of the measured matmul ceiling). `--set` changes the study's
config on both sides (e.g. `model.backbone=cnn4`): a smoke run, not the documented figures.
"""

import argparse
import importlib.metadata as md
import json
import os
import time

import numpy as np

from common import crystal_split, forward_flops, machine

NAMES = ("pipeline_aug", "pipeline_noaug", "epoch", "eval", "inference", "flops_fraction", "train_bf16",
         "inference_int8")
STUDY_AUG = dict(rotation_range=30, width_shift_range=0.2, height_shift_range=0.2, zoom_range=0.3,
                 horizontal_flip=True, vertical_flip=True, fill_mode="nearest")


OVERRIDES = []  # --set: config changes for both sides' model (e.g. a small backbone for a smoke run)


def _cfg(split, size, batch, extra=()):
    from ga.config import load_config

    return load_config("configs/resnet101.yaml", [f"data.split_root={split}", "model.weights=none",
                                                   f"data.image_size=[{size},{size}]", f"data.batch_size={batch}",
                                                   "data.cache=none", *OVERRIDES, *extra])


def _idg(**kw):
    from tf_keras.preprocessing.image import ImageDataGenerator

    return ImageDataGenerator(**kw)


def _result(ours, ref, unit, higher_is_better):
    ratio = ours / ref if higher_is_better else ref / ours
    return {"ours": round(ours, 4), "reference": round(ref, 4), "unit": unit, "ratio": round(ratio, 3)}


def _rate(batches, n_batches, batch):
    it = iter(batches)
    next(it)  # warm-up: first batch builds the pipeline
    t = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    return n_batches * batch / (time.perf_counter() - t)


def bench_pipeline(split, size, batch, n_batches, augment):
    """Images/s delivered for training (augment) or evaluation, over several epochs.

    Ours runs as configured by default: decoded images are cached in memory after the
    first epoch (data.cache: auto). `ours_cold` is the same pipeline without the cache.
    """
    from ga.data import build_datasets

    extra = [] if augment else ["data.augment.enabled=false"]
    cold = _rate(build_datasets(_cfg(split, size, batch, extra), splits=("train",)).train.dataset.repeat(),
                 n_batches, batch)
    cfg = _cfg(split, size, batch, [*extra, "data.cache=auto"])
    ours = _rate(build_datasets(cfg, splits=("train",)).train.dataset.repeat(), n_batches, batch)
    gen = _idg(**(STUDY_AUG if augment else {})).flow_from_directory(
        os.path.join(split, "train"), target_size=(size, size), batch_size=batch, class_mode="binary", shuffle=True,
        seed=42)
    ref = _rate(gen, n_batches, batch)
    return {**_result(ours, ref, "images/s", higher_is_better=True), "ours_cold": round(cold, 2),
            "ratio_cold": round(cold / ref, 3)}


def _model(size, batch):
    import keras

    from ga.model import build_model
    from ga.trainer import compile_model

    cfg = _cfg("unused", size, batch)
    keras.utils.set_random_seed(0)
    m = build_model(cfg, 1)
    compile_model(m, cfg, ["cex", "pg"])
    return m, cfg


def bench_epoch(split, size, batch):
    """One epoch with per-class F1 monitoring: ours vs the original's structure."""
    import keras
    from sklearn.metrics import f1_score

    from ga.callbacks import build_callbacks
    from ga.data import build_datasets

    # Ours: tf.data, one validation pass, per-class F1 from compiled metrics.
    cfg = _cfg(split, size, batch, ["data.augment.enabled=true"])
    data = build_datasets(cfg)
    model, _ = _model(size, batch)
    import tempfile

    with tempfile.TemporaryDirectory() as run_dir:
        cbs, _ = build_callbacks(cfg, run_dir, data.classes)
        t = time.perf_counter()
        model.fit(data.train.dataset, validation_data=data.valid.dataset, epochs=1, callbacks=cbs, verbose=0)
        ours = time.perf_counter() - t

    # Reference: a Python generator feeding fit, then two callbacks that each predict the
    # whole validation set batch by batch (the original's F1 monitor and early stop).
    ref_model, _ = _model(size, batch)
    train_gen = _idg(**STUDY_AUG).flow_from_directory(os.path.join(split, "train"), target_size=(size, size),
                                                      batch_size=batch, class_mode="binary", seed=42)
    val_dir = os.path.join(split, "valid")

    class PredictF1(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            gen = _idg().flow_from_directory(val_dir, target_size=(size, size), batch_size=batch, class_mode="binary",
                                             shuffle=False)
            preds = []
            for i in range(len(gen)):
                preds.append(self.model.predict(gen[i][0], verbose=0))
            p = np.concatenate(preds)[:, 0] > 0.5
            f1_score(gen.classes, p, average=None)

    def python_gen():
        while True:
            x, y = next(train_gen)
            yield x, y.reshape(-1, 1)

    val_gen = _idg().flow_from_directory(val_dir, target_size=(size, size), batch_size=batch, class_mode="binary",
                                         shuffle=False)

    def val_python_gen():
        while True:
            x, y = next(val_gen)
            yield x, y.reshape(-1, 1)

    t = time.perf_counter()
    ref_model.fit(python_gen(), steps_per_epoch=len(train_gen), validation_data=val_python_gen(),
                  validation_steps=len(val_gen), epochs=1, callbacks=[PredictF1(), PredictF1()], verbose=0)
    ref = time.perf_counter() - t
    return _result(ours, ref, "s per epoch", higher_is_better=False)


def bench_eval(split, size, batch):
    """Evaluation and reports on a held-out split: one batched pass (ours) against
    evaluate + two predicts at batch size 1 (the original). The validation split stands in
    for the test split here, for more images; both sides are warmed up (traced) first."""
    from ga.analysis import compute_metrics, predict_split
    from ga.data import build_datasets

    cfg = _cfg(split, size, batch, ["data.valid_dir=" + os.path.join(split, "valid")])
    held_out = build_datasets(cfg, splits=("valid",)).valid
    model, _ = _model(size, batch)
    predict_split(model, held_out)  # warm-up
    t = time.perf_counter()
    y, p = predict_split(model, held_out)
    compute_metrics("binary", ["cex", "pg"], y, p, {"pg": 0.5})
    ours = time.perf_counter() - t
    gen = _idg().flow_from_directory(os.path.join(split, "valid"), target_size=(size, size), batch_size=1,
                                     class_mode="binary", shuffle=False)

    def pairs():
        while True:
            for i in range(len(gen)):
                x, y = gen[i]
                yield x, y.reshape(-1, 1)

    def images():
        for x, _ in pairs():
            yield (x,)

    model.evaluate(pairs(), steps=2, verbose=0)  # warm-up
    model.predict(images(), steps=2, verbose=0)
    t = time.perf_counter()
    model.evaluate(pairs(), steps=len(gen), verbose=0)
    for _ in range(2):  # the original predicted the test set twice more, one image per batch
        model.predict(images(), steps=len(gen), verbose=0)
    ref = time.perf_counter() - t
    return {**_result(ours, ref, "s", higher_is_better=False), "images": len(gen)}


def bench_inference(size, count, per_image):
    """Images/s: ONNX Runtime batched vs Keras one image per predict() call."""
    from ga.export import onnx_session, to_onnx

    model, _ = _model(size, 64)
    sess = onnx_session(to_onnx(model, (size, size)).SerializeToString())
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (count, size, size, 3)).astype(np.float32)
    sess.run(None, {"image": images[:64]})
    t = time.perf_counter()
    for i in range(0, count, 64):
        sess.run(None, {"image": images[i:i + 64]})
    ours = count / (time.perf_counter() - t)
    model.predict(images[:1], verbose=0)
    t = time.perf_counter()
    for x in images[:per_image]:
        model.predict(x[None], verbose=0)
    ref = per_image / (time.perf_counter() - t)
    return _result(ours, ref, "images/s", higher_is_better=True)


def bench_flops(size, batch):
    """Achieved GFLOP/s of the ResNet-101 forward pass vs a large float32 matmul."""
    import tensorflow as tf

    model, _ = _model(size, batch)
    fn = tf.function(lambda x: model(x, training=False))
    x = tf.random.uniform((batch, size, size, 3), 0, 255)
    flops = forward_flops(fn, x)
    fn(x)
    t = time.perf_counter()
    reps = 3
    for _ in range(reps):
        fn(x).numpy()
    ours = flops * reps / (time.perf_counter() - t) / 1e9
    n = 2048
    a = tf.random.uniform((n, n))
    b = tf.random.uniform((n, n))
    mm = tf.function(lambda a, b: tf.matmul(a, b))
    mm(a, b).numpy()
    t = time.perf_counter()
    for _ in range(5):
        mm(a, b).numpy()
    ceiling = 2 * n**3 * 5 / (time.perf_counter() - t) / 1e9
    return _result(ours, ceiling, "GFLOP/s (reference: float32 matmul ceiling)", higher_is_better=True)


def bench_precision(name, size, quick):
    """Low precision against float32 (bench/precision.py): a training step in mixed_bfloat16,
    or the INT8 ONNX model; on a CPU without the units the figure says so (see its print)."""
    import tempfile

    import precision

    args = argparse.Namespace(size=size, batch=8 if quick else 16, steps=2 if quick else 6, quick=False,
                              overrides=OVERRIDES)
    if name == "train_bf16":
        k = precision.keras_rates(args)
        return _result(k["mixed_bfloat16"]["train"], k["float32"]["train"], "training images/s, bfloat16 vs float32",
                       True)
    with tempfile.TemporaryDirectory(prefix="ga_int8_") as work:
        o = precision.onnx_rates(args, work)
    return _result(o["onnx_int8"], o["onnx_float32"], "ONNX images/s, INT8 vs float32", True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller inputs and counts (under 10 minutes on 2 cores)")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--only", nargs="+", choices=NAMES, help="run only these")
    p.add_argument("--workdir", default="/tmp/ga_bench")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change the study's config for both sides, e.g. --set model.backbone=cnn4 (a smoke run; "
                        "the documented figures use the study's ResNet-101)")
    args = p.parse_args()
    OVERRIDES[:] = args.overrides
    size = 96 if args.quick else 224
    n_batches = 5 if args.quick else 20
    names = args.only or NAMES
    needs_data = {"pipeline_aug", "pipeline_noaug", "epoch", "eval"} & set(names)
    workdir = os.path.join(args.workdir, "quick" if args.quick else "full")
    split = crystal_split(workdir, per_class=100 if args.quick else 300) if needs_data else None
    results = {}
    for name in names:
        t = time.perf_counter()
        if name == "pipeline_aug":
            r = bench_pipeline(split, 224, 64, n_batches, True)
        elif name == "pipeline_noaug":
            r = bench_pipeline(split, 224, 64, n_batches, False)
        elif name == "epoch":
            r = bench_epoch(split, size, 32)
        elif name == "eval":
            r = bench_eval(split, size, 32)
        elif name == "inference":
            r = bench_inference(size, 128 if args.quick else 1000, 16 if args.quick else 100)
        elif name in ("train_bf16", "inference_int8"):
            r = bench_precision(name, size, args.quick)
        else:
            r = bench_flops(size, 8 if args.quick else 32)
        r["seconds"] = round(time.perf_counter() - t, 1)
        results[name] = r
        print(f"{name:<16} ours {r['ours']:10.3f}  reference {r['reference']:10.3f}  {r['unit']:<44} "
              f"ratio {r['ratio']:6.2f}", flush=True)
    versions = {}
    for pkg in ("tensorflow", "keras", "tf-keras", "onnxruntime", "tf2onnx", "numpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    doc = {"machine": machine(), "versions": versions, "quick": args.quick, "results": results}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)
    return doc


if __name__ == "__main__":
    main()
