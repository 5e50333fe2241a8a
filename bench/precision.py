"""Low precision on this CPU: bfloat16 training and INT8 inference against float32.

    python bench/precision.py [--size 224] [--batch 16] [--steps 6] [--json precision.json] [--quick]

Prints the CPU's low-precision units (AVX512_BF16, AMX, VNNI), then, on the study's model
(ResNet-101 + head, weights none, the last 10% of the backbone trainable):

- ceilings per precision: a 2048x2048 matmul in float32 and bfloat16 (tf.matmul, and OpenVINO
  when installed) and in INT8 (a QDQ MatMul through ONNX Runtime and OpenVINO), GFLOP/s; each
  precision's ceiling is the best of its engines;
- Keras training step images/s in float32 and mixed_bfloat16 (median of --steps steps), as
  plain Keras runs it and as ga runs it (frozen BatchNorm folded into the convolutions,
  ga.folding);
- Keras forward images/s, the same four ways;
- ONNX Runtime images/s of the float32 export and of its static INT8 model (ga.export's recipe,
  calibrated on 32 synthetic crops), OpenVINO on both files (ga.ov_engine, when installed),
  and the study's way (Keras, one image per call);
- each model figure as a fraction of its precision's ceiling (forward FLOPs counted on the
  float32 graph; for a training step the forward FLOPs only, a lower bound).

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

from common import forward_flops, machine

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


def _gemm_onnx(n, int8):
    """An ONNX model of one n x n MatMul with a constant weight: float32, or INT8 in the QDQ
    form ga's INT8 files use (activations uint8, weights int8)."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(0, 1, (n, n)).astype(np.float32)
    if int8:
        inits = [numpy_helper.from_array(np.array(0.05, np.float32), "xs"),
                 numpy_helper.from_array(np.array(128, np.uint8), "xz"),
                 numpy_helper.from_array(np.clip(np.round(w / 0.03), -127, 127).astype(np.int8), "wq"),
                 numpy_helper.from_array(np.array(0.03, np.float32), "ws"),
                 numpy_helper.from_array(np.array(0, np.int8), "wz")]
        nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
                 helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
                 helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"]),
                 helper.make_node("MatMul", ["xd", "wd"], ["y"])]
    else:
        inits, nodes = [numpy_helper.from_array(w, "w")], [helper.make_node("MatMul", ["x", "w"], ["y"])]
    graph = helper.make_graph(nodes, "gemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def ceilings(n=2048, repeats=5):
    """{precision: {engine: GFLOP/s}} of an n x n matmul: float32 and bfloat16 through
    tf.matmul and OpenVINO (the float32 graph with bfloat16 inference precision), INT8 through
    ONNX Runtime and OpenVINO (a QDQ MatMul)."""
    import tensorflow as tf

    from ga import ov_engine
    from ga.export import onnx_session

    out = {"float32": {"tf.matmul": matmul_ceiling(tf.float32, n, repeats)},
           "bfloat16": {"tf.matmul": matmul_ceiling(tf.bfloat16, n, repeats)}, "int8": {}}
    x = np.random.default_rng(1).uniform(0, 10, (n, n)).astype(np.float32)
    flop = 2 * n ** 3 / 1e9
    models = {False: _gemm_onnx(n, False).SerializeToString(), True: _gemm_onnx(n, True).SerializeToString()}
    for int8, key in ((False, "float32"), (True, "int8")):
        sess = onnx_session(models[int8])
        out[key]["onnxruntime"] = round(flop * _median_rate(lambda: sess.run(None, {"x": x}), repeats, 1), 1)
    if ov_engine.available():
        import openvino as ov

        core = ov.Core()
        bf16 = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        for int8, hint, key in ((False, "f32", "float32"), (False, "bf16", "bfloat16"), (True, "bf16", "int8")):
            if hint == "bf16" and not bf16:
                hint = "f32"
                if key == "bfloat16":
                    continue
            compiled = core.compile_model(core.read_model(models[int8], b""), "CPU", {"INFERENCE_PRECISION_HINT": hint})
            out[key]["openvino"] = round(flop * _median_rate(lambda: compiled(x), repeats, 1), 1)
    return out


def keras_rates(args):
    """{policy: {"train", "train_folded", "forward", "forward_folded": img/s}}."""
    import tensorflow as tf

    from ga.folding import folded, folded_forward

    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 255, (args.batch, args.size, args.size, 3)).astype(np.float32))
    y = tf.constant(rng.integers(0, 2, (args.batch, 1)).astype(np.float32))
    out = {}
    for policy in ("float32", "mixed_bfloat16"):
        model = _model(_config(args, policy), policy)
        forward = tf.function(lambda: model(x, training=False))
        fold = folded_forward(model)
        forward_folded = tf.function(lambda: fold(x))
        r = out[policy] = {"train": round(_median_rate(lambda: model.train_on_batch(x, y), args.steps, args.batch), 2)}
        with folded(model):
            model.make_train_function(force=True)
            r["train_folded"] = round(_median_rate(lambda: model.train_on_batch(x, y), args.steps, args.batch), 2)
        r["forward"] = round(_median_rate(lambda: forward().numpy(), args.steps, args.batch), 2)
        r["forward_folded"] = round(_median_rate(lambda: forward_folded().numpy(), args.steps, args.batch), 2)
        print(f"  Keras {policy}: training step {r['train']} img/s ({r['train_folded']} folded), forward "
              f"{r['forward']} img/s ({r['forward_folded']} folded)", flush=True)
    return out


def forward_gflops(args):
    """GFLOP of one forward pass of the float32 model (TensorFlow's own count of the graph)."""
    import tensorflow as tf

    model = _model(_config(args, "float32"), "float32")
    fn = tf.function(lambda x: model(x, training=False))
    return forward_flops(fn, tf.TensorSpec((1, args.size, args.size, 3))) / 1e9


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
    from ga import ov_engine

    if ov_engine.available():
        for name, path in (("openvino", float_path), ("openvino_int8", int8_path)):
            engine = ov_engine.compile_onnx(path)
            out[name] = round(_median_rate(lambda: engine.predict(x), args.steps, len(x)), 2)
            out[f"{name}_precision"] = engine.precision
            print(f"  {name} ({engine.precision}): {out[name]} img/s (batches of {len(x)})", flush=True)
    else:
        print(f"  OpenVINO not measured: the openvino package is not installed ({ov_engine.EXTRA})", flush=True)
    one = x[:1]
    out["keras_one_per_call"] = round(_median_rate(lambda: model.predict(one, verbose=0), args.steps, 1), 2)
    print(f"  Keras one image per predict() call (the study's way): {out['keras_one_per_call']} img/s", flush=True)
    return out


def ratios(k, o):
    f32, bf16 = k["float32"], k["mixed_bfloat16"]
    out = {"train_bf16_vs_f32": round(bf16["train"] / f32["train"], 2),
           "train_bf16_folded_vs_f32": round(bf16["train_folded"] / f32["train"], 2),
           "train_bf16_folded_vs_f32_folded": round(bf16["train_folded"] / f32["train_folded"], 2),
           "forward_bf16_vs_f32": round(bf16["forward"] / f32["forward"], 2),
           "forward_bf16_folded_vs_f32": round(bf16["forward_folded"] / f32["forward"], 2),
           "onnx_int8_vs_f32": round(o["onnx_int8"] / o["onnx_float32"], 2),
           "onnx_int8_vs_one_per_call": round(o["onnx_int8"] / o["keras_one_per_call"], 2)}
    if "openvino" in o:
        out["openvino_vs_onnx_f32"] = round(o["openvino"] / o["onnx_float32"], 2)
        out["best_int8_vs_onnx_f32"] = round(max(o["onnx_int8"], o["openvino_int8"]) / o["onnx_float32"], 2)
    return out


def fractions(k, o, gflop, best):
    """Each model figure's GFLOP/s as a fraction of its precision's best matmul."""
    def frac(rate, precision):
        return round(rate * gflop / best[precision], 3) if best.get(precision) else None

    out = {}
    for policy, precision in (("float32", "float32"), ("mixed_bfloat16", "bfloat16")):
        for what in ("forward", "forward_folded", "train", "train_folded"):
            out[f"keras_{policy}_{what}"] = frac(k[policy][what], precision)
    out["onnx_float32"] = frac(o["onnx_float32"], "float32")
    out["onnx_int8"] = frac(o["onnx_int8"], "int8")
    if "openvino" in o:
        out["openvino"] = frac(o["openvino"], "bfloat16" if o["openvino_precision"] == "bf16" else "float32")
        out["openvino_int8"] = frac(o["openvino_int8"], "int8")
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
    result = {"machine": machine(), "cpu_units": units, "missing_units": missing,
              "model": "cnn4" if args.quick else "resnet101", "size": args.size, "batch": args.batch}
    result["ceilings_gflops"] = ceil = ceilings()
    best = result["matmul_gflops"] = {p: max(v.values()) for p, v in ceil.items() if v}
    for precision, engines in ceil.items():
        print(f"  matmul ceiling, {precision}: " + ", ".join(f"{e} {v} GFLOP/s" for e, v in engines.items()), flush=True)
    result["forward_gflop_per_image"] = gflop = round(forward_gflops(args), 3)
    result["keras"] = keras_rates(args)
    with tempfile.TemporaryDirectory(prefix="ga_precision_") as work:
        result["onnx"] = onnx_rates(args, work)
    k, o = result["keras"], result["onnx"]
    result["ratios"] = ratios(k, o)
    print("ratios: " + ", ".join(f"{k} {v}x" for k, v in result["ratios"].items()), flush=True)
    result["flops_fraction"] = fractions(k, o, gflop, best)
    print(f"fraction of the precision's ceiling ({gflop} GFLOP per forward pass): "
          + ", ".join(f"{k} {v}" for k, v in result["flops_fraction"].items()), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
