"""OpenVINO as an inference engine: the run's own ONNX files, float32 or INT8, read directly.

`--engine openvino` runs the float32 ONNX file and `--engine openvino-int8` the INT8 one (the
same files ONNX Runtime runs; nothing is converted on disk). Where this CPU has bfloat16 units
(AVX512_BF16, AMX-BF16) and OpenVINO can use them, the parts that are not INT8 run in
bfloat16 (OpenVINO's INFERENCE_PRECISION_HINT), else in float32. The package is the optional
extra `ga-crystals[openvino]`.

Measured on a 2-core Xeon with AMX (docs/benchmarks.md), ResNet-101 at 224 px, batches of 32:
ONNX Runtime float32 26 images/s, INT8 81; OpenVINO on the float32 file in bfloat16 151, on
the INT8 file 188. `auto` picks OpenVINO only on CPUs with AMX, the family it was measured
faster on, when the package is installed and the run's metrics.json records its agreement
with float32 on the test split at or above output.int8_min_agreement.

Example:
    >>> engine = compile_onnx("run/weights.onnx")                  # doctest: +SKIP
    >>> probs = engine.predict(images)                             # float32 (n, h, w, 3) -> (n, outputs)
"""

from __future__ import annotations

import importlib.util
from typing import Any, Callable, Iterable, NamedTuple, Optional

import numpy as np

from ga.errors import ModelError, first_line
from ga.hardware import bf16_units, cpu_flags

EXTRA = "pip install 'ga-crystals[openvino]'"
AMX_FLAGS = ("amx_bf16", "amx_int8")  # the CPU family OpenVINO was measured faster on than ONNX Runtime


def available() -> bool:
    """Whether the openvino package is installed (without importing it)."""
    return importlib.util.find_spec("openvino") is not None


def precision_hint(flags: Optional[Iterable[str]] = None, capabilities: Iterable[str] = ()) -> str:
    """"bf16" where the CPU's flags (default this CPU's, GA_CPU_FLAGS when set) have bfloat16
    units and OpenVINO reports BF16 among the CPU's `capabilities`, else "f32"."""
    return "bf16" if bf16_units(flags) and "BF16" in set(capabilities) else "f32"


def faster_here(flags: Optional[Iterable[str]] = None) -> bool:
    """Whether this CPU is of the family OpenVINO was measured faster on (AMX)."""
    have = set(cpu_flags() if flags is None else flags)
    return any(f in have for f in AMX_FLAGS)


class Compiled(NamedTuple):
    predict: Callable[[Any], np.ndarray]  # float32 images (n, h, w, 3) -> the first output, float32
    precision: str  # "bf16" or "f32": what the parts that are not INT8 run in
    outputs: Optional[int]  # the output's last dimension, None when not fixed


def compile_onnx(path: str, threads: int = 0) -> Compiled:
    """The ONNX file at `path` compiled for this CPU."""
    if not available():
        raise ModelError(f"the openvino engine needs the openvino package: {EXTRA}")
    import openvino as ov

    core = ov.Core()
    hint = precision_hint(capabilities=core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    try:
        compiled = core.compile_model(path, "CPU", config)
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own for unreadable models
        raise ModelError(f"{path}: OpenVINO cannot load the model ({_reason(exc)})") from None

    def predict(x: Any) -> np.ndarray:
        return np.asarray(compiled(np.ascontiguousarray(x, np.float32))[0], np.float32)

    last = compiled.outputs[0].get_partial_shape()[-1]
    return Compiled(predict, hint, last.get_length() if last.is_static else None)


def _reason(exc: BaseException) -> str:
    """The last line of OpenVINO's message (the earlier ones name its source files)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return first_line(lines[-1] if lines else type(exc).__name__)


def main(argv: Optional[list] = None) -> int:
    """python -m ga.ov_engine FLOAT.onnx INT8.onnx IMAGES.npy OUT.npz: both files' outputs on
    the images (batches of 32) and their precisions, for training's check (ga.export)."""
    import sys

    float_path, int8_path, images_path, out_path = (sys.argv[1:] if argv is None else argv)
    images = np.load(images_path)
    out: dict[str, Any] = {}
    for name, path in (("openvino", float_path), ("openvino-int8", int8_path)):
        engine = compile_onnx(path)
        out[f"{name}:outputs"] = np.concatenate([engine.predict(images[i:i + 32]) for i in range(0, len(images), 32)])
        out[f"{name}:precision"] = np.array(engine.precision)
    np.savez(out_path, **out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
