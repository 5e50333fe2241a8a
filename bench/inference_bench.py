"""Folder inference speed: ONNX Runtime batched, Keras batched, Keras one image per call.

    python bench/inference_bench.py [--model deliverables/<run>] [--count 1000] [--per-image 100]

Without --model, builds the study's model (ResNet-101 + head, weights none, 224x224) and
exports it to ONNX, so the figures are for the real architecture. Images are synthetic
crops decoded by the same loader as inference.py; the decode is timed separately, and
the table gives model throughput (images/s) for each way. The one-image-per-call figure
(the original script's way) is measured on --per-image images.
"""

import argparse
import os
import time

import numpy as np

from common import crystal_folder, machine


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="run folder; default: the study's model with weights none")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--per-image", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workdir", default="/tmp/ga_inference_bench")
    args = p.parse_args()

    from ga.model import batch_predictor
    from ga.config import load_config
    from ga.export import onnx_session, to_onnx
    from ga.model import build_model
    from ga.inputs import list_inputs
    from ga.loading import load_model
    from ga.predict import predict_files

    folder = crystal_folder(os.path.join(args.workdir, "crops"), args.count)
    files = list_inputs([folder])[0][: args.count]
    if args.model:
        onnx_m = load_model(args.model, engine="onnx")
        keras_m = load_model(args.model, engine="keras")
        km = keras_m.keras_model
        labels = onnx_m.labels
        onnx_predict, keras_predict = onnx_m.predict, keras_m.predict
        name = args.model
    else:
        cfg = load_config("configs/resnet101.yaml", ["model.weights=none"])
        km = build_model(cfg, 1)
        sess = onnx_session(to_onnx(km, (224, 224)).SerializeToString())
        onnx_predict = lambda x: sess.run(None, {"image": x})[0]  # noqa: E731
        keras_predict = batch_predictor(km)
        labels = {"task": "binary", "classes": ["cex", "pg"], "thresholds": {"pg": 0.5}, "input_size": [224, 224],
                  "preprocessing": "resnet_caffe"}
        name = "resnet101 (weights none), 224x224"

    class M:  # predict_files wants an object with labels and predict
        pass

    t = time.perf_counter()
    m = M()
    m.labels, m.predict = labels, (lambda x: np.zeros((len(x), 1), np.float32))
    predict_files(m, files, args.batch_size, progress=False)
    decode_s = time.perf_counter() - t
    from ga.inputs import read_image

    images = np.stack([read_image(f, labels) for f in files]).astype(np.float32)
    results = {}
    for label, fn in (("ONNX Runtime, batched", onnx_predict), ("Keras, batched", keras_predict)):
        fn(images[: args.batch_size])  # warm-up
        t = time.perf_counter()
        for i in range(0, len(images), args.batch_size):
            fn(images[i:i + args.batch_size])
        results[label] = len(images) / (time.perf_counter() - t)
    sub = images[: args.per_image]
    km.predict(sub[:1], verbose=0)
    t = time.perf_counter()
    for x in sub:
        km.predict(x[None], verbose=0)  # the original script's way
    results["Keras, one image per predict() call"] = len(sub) / (time.perf_counter() - t)
    print(f"machine: {machine()}; model: {name}; {len(files)} images; decode+resize (parallel): "
          f"{len(files) / decode_s:.0f} images/s")
    base = results["Keras, one image per predict() call"]
    print(f"{'way':<40} {'images/s':>9} {'vs one per call':>16}")
    for label, v in results.items():
        print(f"{label:<40} {v:9.1f} {v / base:15.1f}x")


if __name__ == "__main__":
    main()
