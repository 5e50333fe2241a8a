"""Process monitoring speed: frames/s and particles/s of `ga monitor` on 1024x768 frames
with about 50 particles each.

    python bench/monitor.py [--frames 20] [--models demo resnet101 resnet101_int8] [--refresh-frames 10000]
                            [--json monitor.json] [--quick]

Frames come from the synthetic process (`ga synth process`, the plateau of the run: about
50 in-focus particles, 10 out of focus). For each model the whole monitor runs on every
frame (read, detect, crop, classify in batches, write the CSVs; the figures and page once at
the end) and its wall time gives frames/s and particles/s; detection alone (no model) is
timed too, to show where the time goes. Models (weights none: speed does not depend on them):

- demo: configs/demo.yaml's CNN-4 at 96 px, ONNX Runtime float32;
- resnet101: the study's ResNet-101 + head at 224 px, ONNX Runtime float32;
- resnet101_int8: its static INT8 model (ga.export's recipe, calibrated on 32 crops). On a
  CPU without VNNI/AMX INT8 runs on plain AVX2 kernels; the first line says which units exist.

With the openvino package installed each model is also run through OpenVINO (`<model>_openvino`:
the openvino engine on the float32 file, openvino-int8 on the INT8 one).

`--refresh-frames N` (default 10,000; 0: not measured): the cost of one page-and-figures
refresh in a long run. The demo model's monitor folder is grown to N frames (its rows
repeated under new names and times), then one refresh is timed as a running monitor does it
(the size figure's particle rows held in memory) and as rebuilding from the files does it
(particles.csv read whole), with the resume that reads the folder once.

Large frames: detection alone on 3 frames of 4288 x 2848 (12 megapixels: the process
rendered at 1072 x 712 and resized 4 times, as a camera with 4 times the pixels across would
see it), the median time per frame, with every setting `auto` (searched at a third of the
frame's scale) and with `detection_scale` 1 (every pixel searched). `--large-only`: only these.

`--quick`: the demo model only, 3 frames (a smoke run; refresh at 200 frames; large frames
at 2144 x 1424).
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from common import machine

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MODELS = {"demo": ("configs/demo.yaml", []), "resnet101": ("configs/resnet101.yaml", ["model.weights=none"]),
          "resnet101_int8": ("configs/resnet101.yaml", ["model.weights=none"])}


def frames(folder, n, seed=0):
    """n frames of the process's plateau (run fraction 0.5-1: about 50 particles each)."""
    from PIL import Image

    from ga.synthetic import make_process_frame, rngs

    os.makedirs(folder, exist_ok=True)
    for i, rng in enumerate(rngs([seed, 99], n)):
        img, _ = make_process_frame(rng, 0.5 + 0.5 * i / max(1, n - 1))
        Image.fromarray(img).save(os.path.join(folder, f"frame_{i:04d}.png"))
    return folder


def model_file(name, work):
    """An .onnx file with labels.json beside it, for one of MODELS."""
    import keras

    from ga.config import load_config, model_input_size
    from ga.export import quantize_int8, to_onnx
    from ga.model import build_model
    from ga.runs import labels_document, write_labels

    path, sets = MODELS[name]
    cfg = load_config(path, sets)
    folder = os.path.join(work, name)
    os.makedirs(folder, exist_ok=True)
    size = model_input_size(cfg)
    model = build_model(cfg, 1)
    f32 = os.path.join(folder, "weights.onnx")
    with open(f32, "wb") as fh:
        fh.write(to_onnx(model, size).SerializeToString())
    write_labels(folder, labels_document(cfg, ["cex", "pg"]))
    keras.backend.clear_session()
    if not name.endswith("_int8"):
        return f32
    from ga.synthetic import make_cex, make_pg, rngs

    crops = np.stack([np.asarray(keras.ops.image.resize(np.repeat((make_cex(r) if i % 2 else make_pg(r))[:, :, None], 3, 2)
                                                         .astype(np.float32), size)) for i, r in enumerate(rngs(1, 32))])
    int8 = os.path.join(folder, "weights_int8.onnx")
    quantize_int8(f32, int8, crops)
    os.remove(f32)
    return int8


def detection_rate(folder):
    """Frames/s of reading and detecting alone."""
    from PIL import Image

    from ga.config import load_config
    from ga.monitoring.detection import detect

    cfg = load_config(None).monitor
    names = sorted(os.listdir(folder))
    images = [np.asarray(Image.open(os.path.join(folder, n))) for n in names]
    t = time.perf_counter()
    counts = [len(detect(img, cfg)) for img in images]
    return len(images) / (time.perf_counter() - t), float(np.mean(counts))


def large_frame_seconds(work, scale=4.0, n=3, detection_scale="auto"):
    """Median seconds of detection on n frames of (1072 x 712) * scale, and the frame size."""
    from PIL import Image

    from ga.config import load_config
    from ga.monitoring.detection import detect, preload
    from ga.synthetic import generate_process

    folder = os.path.join(work, "large")
    if not os.path.isdir(folder):
        generate_process(folder, frames=n, seed=7, size=(1072, 712), scale=scale)
    names = sorted(f for f in os.listdir(folder) if f.endswith(".png"))
    cfg = load_config(None, [f"monitor.detection_scale={detection_scale}"]).monitor
    preload()
    times = []
    for name in names:
        img = np.asarray(Image.open(os.path.join(folder, name)))
        t = time.perf_counter()
        detect(img, cfg)
        times.append(time.perf_counter() - t)
    return float(np.median(times)), list(img.shape[1::-1])


def large(result, work, scale):
    """The large frames' detection time, searched reduced (auto) and at every pixel."""
    for setting in ("auto", 1):
        seconds, size = large_frame_seconds(work, scale, detection_scale=setting)
        result.setdefault("large_frame", {"size": size})[f"detection_s_scale_{setting}"] = round(seconds, 2)
        print(f"  detection of a {size[0]}x{size[1]} frame, detection_scale {setting}: {seconds:.2f} s", flush=True)


def monitor_rate(model_path, folder, out, engine=None):
    from ga.config import load_config
    from ga.loading import load_model
    from ga.monitoring.loop import monitor

    model = load_model(model_path, engine)
    t = time.perf_counter()
    result = monitor(model, [folder], out, load_config(None).monitor)
    seconds = time.perf_counter() - t
    return {"frames_per_s": round(result.frames / seconds, 3), "particles_per_s": round(result.particles / seconds, 1),
            "particles_per_frame": round(result.particles / result.frames, 1), "seconds": round(seconds, 1),
            "engine": model.engine}


def grow(out, n):
    """Repeat a monitor folder's frames.csv and particles.csv rows until it holds n frames."""
    import csv

    def table(name):
        with open(os.path.join(out, name), newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        return rows[0], rows[1:]

    fh_, frames = table("frames.csv")
    ph, particles = table("particles.csv")
    fi, pi = {c: i for i, c in enumerate(fh_)}, ph.index("frame")
    step = max(1.0, max(float(r[fi["elapsed_s"]] or 0) for r in frames))
    with open(os.path.join(out, "frames.csv"), "a", newline="", encoding="utf-8") as ff, \
            open(os.path.join(out, "particles.csv"), "a", newline="", encoding="utf-8") as pf:
        fw, pw = csv.writer(ff, lineterminator="\n"), csv.writer(pf, lineterminator="\n")
        for k in range(len(frames), n):
            src = frames[k % len(frames)]
            row = list(src)
            row[fi["frame"]] = row[fi["key"]] = f"grown_{k:06d}.png"
            row[fi["elapsed_s"]] = f"{k * step:.3f}"
            fw.writerow(row)
            pw.writerows([[*p[:pi], row[fi["frame"]], *p[pi + 1:]] for p in particles if p[pi] == src[fi["frame"]]])


def refresh_cost(model_path, folder, out, n):
    """Seconds of one refresh of a monitor folder grown to n frames: in a running monitor
    (size windows in memory) and rebuilt from the files; and of the resume that reads it."""
    import json as json_

    from ga.config import load_config
    from ga.loading import load_model
    from ga.monitoring.columns import STATE
    from ga.monitoring.loop import Monitor, monitor
    from ga.monitoring.outputs import write_outputs

    model = load_model(model_path)
    monitor(model, [folder], out, load_config(None).monitor)
    grow(out, n)
    t = time.perf_counter()
    m = Monitor(model, out, load_config(None).monitor, [folder])
    resume = time.perf_counter() - t
    t = time.perf_counter()
    m.refresh(force=True)
    running = time.perf_counter() - t
    with open(os.path.join(out, STATE), encoding="utf-8") as fh:
        state = json_.load(fh)
    t = time.perf_counter()
    write_outputs(out, state)
    from_files = time.perf_counter() - t
    for f in (m.frames_log, m.particles_log, m.alerts_log):
        f.close()
    size = sum(os.path.getsize(os.path.join(out, f)) for f in ("frames.csv", "particles.csv"))
    return {"frames": n, "csv_mb": round(size / 1e6, 1), "refresh_running_s": round(running, 2),
            "refresh_from_files_s": round(from_files, 2), "resume_s": round(resume, 2)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--refresh-frames", type=int, default=10_000, help="time a refresh at this many frames (0: no)")
    p.add_argument("--quick", action="store_true", help="the demo model, 3 frames")
    p.add_argument("--large-only", action="store_true", help="only the large frames' detection")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    if args.quick:
        args.frames, args.models, args.refresh_frames = 3, ["demo"], min(args.refresh_frames, 200)
    import ga
    from ga.hardware import describe

    ga.register()
    units = describe()
    print(f"CPU: INT8 units {units['int8'] or 'none (INT8 runs on plain AVX2 kernels)'}; "
          f"{os.cpu_count()} cores", flush=True)
    result = {"machine": machine(), "cpu_units": units, "frames": args.frames, "frame_size": [1024, 768]}
    with tempfile.TemporaryDirectory(prefix="ga_monitor_bench_") as work:
        large(result, work, 2.0 if args.quick else 4.0)
        if args.large_only:
            args.models, args.refresh_frames = [], 0
        else:
            folder = frames(os.path.join(work, "frames"), args.frames)
            rate, per_frame = detection_rate(folder)
            result["detection_only"] = {"frames_per_s": round(rate, 3), "particles_per_frame": round(per_frame, 1)}
            print(f"  detection alone: {rate:.2f} frames/s ({per_frame:.1f} particles per frame)", flush=True)
        from ga import ov_engine

        for name in args.models:
            engines = [(name, None)]
            if ov_engine.available():
                engines.append((f"{name}_openvino", "openvino-int8" if name.endswith("_int8") else "openvino"))
            path = model_file(name, work)  # built and exported once, timed through each engine
            for key, engine in engines:
                r = monitor_rate(path, folder, os.path.join(work, f"out_{key}"), engine)
                result[key] = r
                print(f"  {key} ({r['engine']}): {r['frames_per_s']} frames/s, {r['particles_per_s']} particles/s",
                      flush=True)
        if args.refresh_frames:
            name = "demo"
            r = result["refresh"] = refresh_cost(model_file(name, work), folder, os.path.join(work, "out_refresh"),
                                                 args.refresh_frames)
            print(f"  refresh at {r['frames']} frames ({r['csv_mb']} MB of CSV): {r['refresh_running_s']} s running, "
                  f"{r['refresh_from_files_s']} s from the files (resume {r['resume_s']} s)", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
