"""Low precision on this CPU: bfloat16 training and INT8 inference against float32.

    python bench/precision.py [--size 224] [--batch 16] [--steps 6] [--json precision.json] [--quick]

Prints the CPU's low-precision units (AVX512_BF16, AMX, VNNI), then, on the study's model
(ResNet-101 + head, weights none, the last 10% of the backbone trainable):

- matmul ceiling: tf.matmul of 2048x2048 in float32 and bfloat16 (GFLOP/s);
- Keras training step images/s in float32 and mixed_bfloat16 (median of --steps steps);
- Keras forward images/s in float32 and mixed_bfloat16;
- ONNX Runtime images/s of the float32 export and of its static INT8 model (ga.export's recipe,
  calibrated on 32 synthetic crops), and the study's way (Keras, one image per call).

On a CPU without the units every figure is still measured (bfloat16 is then emulated, INT8
runs on plain AVX2 kernels) and the first line says which units were missing. `--quick` runs
the small CNN-4 at 64 px, for a smoke test.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

from common import machine

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(args, policy):
    from ga.config import load_config

    extra = (["model.backbone=cnn4", "model.trainable_fraction=1.0"] if args.quick else []) + \
        list(getattr(args, "overrides", []))
    return load_config("configs/resnet101.yaml", ["model.weights=none", f"data.image_size=[{args.size},{args.size}]",
                                                  f"data.batch_size={args.batch}", f"training.mixed_precision={policy}",
                                                  *extra])


def _model(cfg, policy):
    import keras

    from ga.model import backbone_of, build_model, set_trainable_fraction
    from ga.trainer import compile_model

    keras.mixed_precision.set_global_policy(policy)
    model = build_model(cfg, 1)
    set_trainable_fraction(backbone_of(model), cfg.model.trainable_fraction)
    return compile_model(model, cfg, ["cex", "pg"])


def _median_rate(fn, steps, images):
    fn()  # warm-up: traces the function
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return images / statistics.median(times)


def matmul_ceiling(dtype, n=2048, repeats=5):
    """GFLOP/s of an n x n matmul in `dtype` (tf.matmul, the kernel Keras's Dense and conv use)."""
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)
    f = tf.function(lambda: tf.matmul(a, b))
    rate = _median_rate(lambda: f().numpy(), repeats, 1)
    return round(2 * n ** 3 * rate / 1e9, 1)


def keras_rates(args):
    """{policy: {"train": img/s, "forward": img/s}}."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 255, (args.batch, args.size, args.size, 3)).astype(np.float32))
    y = tf.constant(rng.integers(0, 2, (args.batch, 1)).astype(np.float32))
    out = {}
    for policy in ("float32", "mixed_bfloat16"):
        model = _model(_config(args, policy), policy)
        forward = tf.function(lambda: model(x, training=False))
        out[policy] = {"train": round(_median_rate(lambda: model.train_on_batch(x, y), args.steps, args.batch), 2),
                       "forward": round(_median_rate(lambda: forward().numpy(), args.steps, args.batch), 2)}
        print(f"  Keras {policy}: training step {out[policy]['train']} img/s, forward {out[policy]['forward']} img/s",
              flush=True)
    return out


def onnx_rates(args, work):
    """Images/s of the float32 ONNX export, its INT8 model, and Keras one image per call."""
    import keras

    from ga.export import onnx_session, quantize_int8, to_onnx
    from ga.synthetic import make_cex, make_pg, rngs

    cfg = _config(args, "float32")
    model = _model(cfg, "float32")
    keras.mixed_precision.set_global_policy("float32")
    float_path, int8_path = os.path.join(work, "f32.onnx"), os.path.join(work, "int8.onnx")
    with open(float_path, "wb") as fh:
        fh.write(to_onnx(model, (args.size, args.size)).SerializeToString())
    crops = [np.asarray(keras.ops.image.resize(np.repeat((make_cex(r) if i % 2 else make_pg(r))[:, :, None], 3, 2)
                                                .astype(np.float32), (args.size, args.size)))
             for i, r in enumerate(rngs(1, 32))]
    t = time.perf_counter()
    quantize_int8(float_path, int8_path, np.stack(crops))
    quant_seconds = time.perf_counter() - t
    x = np.random.default_rng(0).uniform(0, 255, (32, args.size, args.size, 3)).astype(np.float32)
    out = {"int8_quantisation_seconds": round(quant_seconds, 1)}
    for name, path in (("onnx_float32", float_path), ("onnx_int8", int8_path)):
        sess = onnx_session(path)
        inp = sess.get_inputs()[0].name
        out[name] = round(_median_rate(lambda: sess.run(None, {inp: x}), args.steps, len(x)), 2)
        print(f"  {name}: {out[name]} img/s (batches of {len(x)})", flush=True)
    one = x[:1]
    out["keras_one_per_call"] = round(_median_rate(lambda: model.predict(one, verbose=0), args.steps, 1), 2)
    print(f"  Keras one image per predict() call (the study's way): {out['keras_one_per_call']} img/s", flush=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--quick", action="store_true", help="CNN-4 at 64 px, 2 steps: a smoke run")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    if args.quick:
        args.size, args.batch, args.steps = 64, 8, 2
    import ga
    from ga.hardware import BF16_FLAGS, INT8_FLAGS, describe

    ga.register()
    units = describe()
    missing = [kind for kind, flags in (("bfloat16 (" + " or ".join(BF16_FLAGS) + ")", units["bf16"]),
                                        ("INT8 (" + " or ".join(INT8_FLAGS) + ")", units["int8"])) if not flags]
    print(f"CPU low-precision units: bfloat16 {units['bf16'] or 'none'}, INT8 {units['int8'] or 'none'}"
          + (f"; missing: {', '.join(missing)} (emulated or plain kernels: those figures are no speed-up measure)"
             if missing else ""), flush=True)
    import tensorflow as tf

    result = {"machine": machine(), "cpu_units": units, "missing_units": missing,
              "model": "cnn4" if args.quick else "resnet101", "size": args.size, "batch": args.batch,
              "matmul_gflops": {"float32": matmul_ceiling(tf.float32), "bfloat16": matmul_ceiling(tf.bfloat16)}}
    print(f"  matmul ceiling: float32 {result['matmul_gflops']['float32']} GFLOP/s, bfloat16 "
          f"{result['matmul_gflops']['bfloat16']} GFLOP/s", flush=True)
    result["keras"] = keras_rates(args)
    with tempfile.TemporaryDirectory(prefix="ga_precision_") as work:
        result["onnx"] = onnx_rates(args, work)
    k, o = result["keras"], result["onnx"]
    result["ratios"] = {"train_bf16_vs_f32": round(k["mixed_bfloat16"]["train"] / k["float32"]["train"], 2),
                        "forward_bf16_vs_f32": round(k["mixed_bfloat16"]["forward"] / k["float32"]["forward"], 2),
                        "onnx_int8_vs_f32": round(o["onnx_int8"] / o["onnx_float32"], 2),
                        "onnx_int8_vs_one_per_call": round(o["onnx_int8"] / o["keras_one_per_call"], 2)}
    print("ratios: " + ", ".join(f"{k} {v}x" for k, v in result["ratios"].items()), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
