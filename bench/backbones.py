"""The backbone families side by side on this CPU: size, cost, speed and a small accuracy test.

    python bench/backbones.py [--families resnet101 efficientnetv2_b0 ...] [--quick] [--table docs/backbones.md]

Per family, at its own input size (ResNet-101 at 224x224 is the reference), weights none:
- parameters, and GFLOPs per image counted by TensorFlow's profiler on the frozen graph
  (a multiply-add counts as two);
- training images/s: the study's recipe (the last 10% of the backbone trainable, SGD, batch
  32) on in-memory batches, so no decoding is timed; 2 warm-up steps, then the median of
  --repeats runs of --steps;
- inference images/s, batches of 32: Keras, ONNX Runtime float32, ONNX Runtime INT8 (the
  project's static QDQ quantisation); where the CPU has bfloat16 units, training and Keras
  inference in mixed_bfloat16 as well;
- accuracy on the synthetic crystals (from scratch, every layer trainable, the same images,
  epochs, seed and optimiser for all: Adam 1e-3, --accuracy-size px, --accuracy-epochs),
  with its 95% interval from the run's metrics.json.
Prints a Markdown table (and writes it to --table) and a recommendation: among the pretrained
families at least 3x as fast as ResNet-101 in training and in labelling whose synthetic
accuracy interval reaches the best one's, the one with the highest ImageNet accuracy.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from common import crystal_split, machine

DEFAULT = ["resnet50", "resnet101", "efficientnetv2_b0", "efficientnetv2_s", "convnext_tiny", "mobilenetv3_small",
           "mobilenetv3_large", "cnn4"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", nargs="+", default=DEFAULT)
    p.add_argument("--size", type=int, help="one input size for every family; default: each family's own")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=6, help="timed training steps per repeat")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed training runs of --steps each; the median is reported (single runs varied up to 2x)")
    p.add_argument("--batches", type=int, default=4, help="timed inference batches per engine")
    p.add_argument("--accuracy-size", type=int, default=96)
    p.add_argument("--accuracy-epochs", type=int, default=4)
    p.add_argument("--per-class", type=int, default=400, help="synthetic crystals per class for the accuracy runs")
    p.add_argument("--no-accuracy", action="store_true")
    p.add_argument("--accuracy-only", action="store_true", help="the accuracy runs alone (no speed figures)")
    p.add_argument("--precise-bn", type=int, default=0, metavar="N",
                   help="training.precise_bn_batches of the accuracy runs (default 0: the table's recipe)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and steps: checks the script, not the figures")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "ga_backbones_bench"))
    p.add_argument("--table", help="also write the Markdown table to this file")
    args = p.parse_args()
    if args.quick:
        args.size, args.steps, args.batches, args.batch, args.repeats = 32, 1, 1, 4, 1
        args.accuracy_size, args.accuracy_epochs, args.per_class = 32, 1, 24

    import ga

    ga.register()
    from ga.hardware import bf16_units, int8_units

    bf16 = bool(bf16_units())
    rows = []
    for name in args.families:
        row = {"backbone": name} if args.accuracy_only else measure(name, args, bf16)
        if not args.no_accuracy or args.accuracy_only:
            row.update(accuracy(name, args))
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.accuracy_only:
        return 0
    table = markdown(rows, bf16)
    print(f"machine: {machine()}; bfloat16 units: {'yes' if bf16 else 'no'}")
    print(table)
    advice = recommendation(rows, int8=bool(int8_units()))
    print(advice)
    if args.table:
        with open(args.table, "w", encoding="utf-8") as fh:
            fh.write(table + "\n" + advice + "\n")


def _config(name, size, extra=()):
    from ga.config import load_config

    return load_config("configs/resnet101.yaml", [f"model.backbone={name}", "model.weights=none",
                                                   f"data.image_size=[{size},{size}]", "training.mixed_precision=float32",
                                                   *extra])


def gflops(model, size):
    """Floating-point operations of one image, by TensorFlow's profiler, in GFLOPs."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    from tensorflow.python.profiler.model_analyzer import profile
    from tensorflow.python.profiler.option_builder import ProfileOptionBuilder

    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, size, size, 3], tf.float32))
    frozen = convert_variables_to_constants_v2(fn)
    opts = ProfileOptionBuilder(ProfileOptionBuilder.float_operation()).with_empty_output().build()
    return profile(frozen.graph, options=opts).total_float_ops / 1e9


def measure(name, args, bf16):
    import keras
    import numpy as np
    import tensorflow as tf

    from ga.backbones import family_of
    from ga.data import without_autotune_wait
    from ga.export import onnx_session, quantize_int8, to_onnx
    from ga.model import batch_predictor, build_model
    from ga.trainer import compile_model

    size = args.size or family_of(name).size
    cfg = _config(name, size)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.batch, size, size, 3)).astype(np.float32)
    y = (rng.random((args.batch, 1)) < 0.5).astype(np.float32)
    # without tf.data's autotuning model, whose wake-up every fit's end waits for (ga.data):
    # with it, timed fits of 7.8 s returned at exactly 10.23 s
    ds = without_autotune_wait(tf.data.Dataset.from_tensors((x, y)).repeat())

    def trained(policy):
        """(model, training images/s) under a Keras precision policy."""
        keras.mixed_precision.set_global_policy(policy)
        try:
            m = build_model(cfg, 1)
            compile_model(m, cfg, ["cex", "pg"])
            m.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)
            rates = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                m.fit(ds, steps_per_epoch=args.steps, epochs=1, verbose=0)
                rates.append(args.steps * args.batch / (time.perf_counter() - t))
            return m, statistics.median(rates)
        finally:
            keras.mixed_precision.set_global_policy("float32")

    model, rate = trained("float32")
    row = {"backbone": name, "size": size, "params_m": model.count_params() / 1e6, "gflops": gflops(model, size),
           "train_img_s": rate}
    predict = batch_predictor(model)
    row["keras_img_s"] = _rate(lambda: predict(x), args)
    onnx = to_onnx(model, (size, size))
    session = onnx_session(onnx.SerializeToString())
    feed = session.get_inputs()[0].name
    row["onnx_img_s"] = _rate(lambda: session.run(None, {feed: x}), args)
    with tempfile.TemporaryDirectory() as tmp:
        f32, i8 = os.path.join(tmp, "m.onnx"), os.path.join(tmp, "m_int8.onnx")
        with open(f32, "wb") as fh:
            fh.write(onnx.SerializeToString())
        quantize_int8(f32, i8, x)
        s8 = onnx_session(i8)
        row["int8_img_s"] = _rate(lambda: s8.run(None, {feed: x}), args)
    if bf16:
        m16, row["train_bf16_img_s"] = trained("mixed_bfloat16")
        m16.set_weights(model.get_weights())
        p16 = batch_predictor(m16)
        row["bf16_img_s"] = _rate(lambda: p16(x), args)
    keras.backend.clear_session()
    return row


def _rate(fn, args):
    fn()  # warm-up (tracing, session set-up)
    t = time.perf_counter()
    for _ in range(args.batches):
        fn()
    return args.batches * args.batch / (time.perf_counter() - t)


def accuracy(name, args):
    """Test accuracy (95% interval) from scratch on the synthetic crystals, the same budget for all."""
    from ga.trainer import train

    split = crystal_split(os.path.join(args.workdir, f"data{args.per_class}"), per_class=args.per_class)
    cfg = _config(name, args.accuracy_size, [
        f"data.split_root={split}", "model.trainable_fraction=1.0", "training.optimizer=adam",
        "training.learning_rate=0.001", f"training.epochs={args.accuracy_epochs}", "data.batch_size=32",
        "data.augment.enabled=false", "training.early_stopping.f1_patience=1000", "training.seed=42",
        f"training.precise_bn_batches={args.precise_bn}",
        f"output.root={os.path.join(args.workdir, 'runs')}", f"output.name={name}", "output.onnx=false",
        "output.saved_model=false", "output.explain=false", "output.int8=false", "output.tensorboard=false"])
    t = time.perf_counter()
    run = train(cfg)
    with open(os.path.join(run, "metrics.json"), encoding="utf-8") as fh:
        m = json.load(fh)
    return {"accuracy": m["accuracy"], "accuracy_ci": m["accuracy_ci"], "test_images": m["test_images"],
            "accuracy_seconds": time.perf_counter() - t, "precise_bn_batches": args.precise_bn}


def markdown(rows, bf16):
    ref = next((r for r in rows if r["backbone"] == "resnet101"), None)
    head = ["backbone", "input", "parameters (M)", "GFLOPs", "train img/s", "Keras img/s", "ONNX img/s",
            "ONNX INT8 img/s", *(["train bf16 img/s", "Keras bf16 img/s"] if bf16 else []),
            "vs ResNet-101 (train / label)",
            "accuracy (95% interval)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        rel = (f"{r['train_img_s'] / ref['train_img_s']:.1f}× / {r['onnx_img_s'] / ref['onnx_img_s']:.1f}×"
               if ref else "")
        acc = (f"{r['accuracy']:.3f} ({r['accuracy_ci'][0]:.3f}–{r['accuracy_ci'][1]:.3f})" if "accuracy" in r else "")
        cells = [r["backbone"], f"{r['size']}", f"{r['params_m']:.1f}", f"{r['gflops']:.3g}", f"{r['train_img_s']:.1f}",
                 f"{r['keras_img_s']:.1f}", f"{r['onnx_img_s']:.1f}", f"{r['int8_img_s']:.1f}",
                 *([f"{r.get('train_bf16_img_s', 0):.1f}", f"{r.get('bf16_img_s', 0):.1f}"] if bf16 else []), rel, acc]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ImageNet top-1 accuracy (%) of the pretrained weights: Keras Applications' table for ResNet,
# EfficientNetV2 and ConvNeXt; Howard et al. 2019 (MobileNetV3, arXiv 1905.02244) for MobileNetV3.
IMAGENET_TOP1 = {"resnet50": 74.9, "resnet101": 76.4, "resnet152": 76.6, "efficientnetv2_b0": 78.7,
                 "efficientnetv2_b1": 79.8, "efficientnetv2_b2": 80.5, "efficientnetv2_b3": 82.0,
                 "efficientnetv2_s": 83.9, "convnext_tiny": 81.3, "mobilenetv3_small": 67.4,
                 "mobilenetv3_large": 75.2}


def recommendation(rows, factor=3.0, int8=False):
    """Among the pretrained families that train and label at least `factor` times as many
    images/s as ResNet-101 and whose synthetic accuracy interval reaches the best one's lower
    bound, the one with the highest ImageNet accuracy (what transfer to real crops rests on).
    With `int8` (the CPU has INT8 units, so `--engine auto` labels with each run's INT8 model)
    it also says how the pick labels against ResNet-101 both in INT8: the units speed up
    dense convolutions more than depthwise ones, so that ratio can be the smaller."""
    ref = next((r for r in rows if r["backbone"] == "resnet101"), None)
    pretrained = [r for r in rows if r["backbone"] in IMAGENET_TOP1 and r["backbone"] != "resnet101"]
    if not ref or not pretrained:
        return "recommendation: needs resnet101 and another pretrained family in --families"
    best_low = max((r["accuracy_ci"][0] for r in pretrained if "accuracy_ci" in r), default=None)
    fit = [r for r in pretrained if (best_low is None or r.get("accuracy_ci", [0, 1])[1] >= best_low)
           and r["train_img_s"] >= factor * ref["train_img_s"] and r["onnx_img_s"] >= factor * ref["onnx_img_s"]]
    if not fit:
        return f"recommendation: no family is {factor:g}x as fast as ResNet-101 in both training and labelling here"
    pick = max(fit, key=lambda r: IMAGENET_TOP1[r["backbone"]])
    line = (f"recommendation for a CPU: {pick['backbone']} at {pick['size']}x{pick['size']} (ImageNet top-1 "
            f"{IMAGENET_TOP1[pick['backbone']]}%): trains {pick['train_img_s'] / ref['train_img_s']:.1f}x and labels "
            f"{pick['onnx_img_s'] / ref['onnx_img_s']:.1f}x (ONNX) as many images/s as ResNet-101 at "
            f"{ref['size']}x{ref['size']} on this machine")
    if int8:
        line += (f"; with INT8 units, both labelling with their INT8 models (--engine auto): "
                 f"{pick['int8_img_s'] / ref['int8_img_s']:.1f}x ({pick['int8_img_s']:.1f} against "
                 f"{ref['int8_img_s']:.1f} images/s)")
    return line


if __name__ == "__main__":
    sys.exit(main())
