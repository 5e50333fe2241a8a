"""What the CPU can do fast: bfloat16 (AVX512_BF16, AMX-BF16) and INT8 dot products (VNNI, AMX-INT8).

Read once from /proc/cpuinfo's flags (an empty set elsewhere). `GA_CPU_FLAGS` (flags
separated by spaces or commas) replaces them: the tests fake a CPU with it, and a user can
force a choice (`GA_CPU_FLAGS=avx2` keeps float32 training and float32 inference).

Example:
    >>> from ga.hardware import bf16_units
    >>> bf16_units({"avx2", "avx512_bf16"})
    ['avx512_bf16']
"""

from __future__ import annotations

import functools
import os
from typing import Iterable, Optional, Sequence

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # bfloat16 dot products: mixed_bfloat16 training pays
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # int8 dot products: ONNX Runtime's INT8 kernels pay


@functools.lru_cache(maxsize=None)
def _cpuinfo_flags() -> frozenset:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_flags() -> frozenset:
    """The CPU's feature flags (GA_CPU_FLAGS, when set, instead of /proc/cpuinfo's)."""
    fake = os.environ.get("GA_CPU_FLAGS")
    if fake is not None:
        return frozenset(fake.replace(",", " ").split())
    return _cpuinfo_flags()


def bf16_units(flags: Optional[Iterable[str]] = None) -> list[str]:
    """The bfloat16 units among `flags` (default: this CPU's)."""
    have = set(cpu_flags() if flags is None else flags)
    return [f for f in BF16_FLAGS if f in have]


def int8_units(flags: Optional[Iterable[str]] = None) -> list[str]:
    """The INT8 dot-product units among `flags` (default: this CPU's)."""
    have = set(cpu_flags() if flags is None else flags)
    return [f for f in INT8_FLAGS if f in have]


def describe(flags: Optional[Iterable[str]] = None) -> dict:
    """{"bf16": [...], "int8": [...], "faked": bool}: what run.json and the benchmarks record."""
    return {"bf16": bf16_units(flags), "int8": int8_units(flags),
            "faked": flags is None and os.environ.get("GA_CPU_FLAGS") is not None}


def choose_precision(want: str, gpu_capabilities: Sequence[tuple[int, int]] = (),
                     flags: Optional[Iterable[str]] = None, backbone: Optional[str] = None) -> tuple[str, str]:
    """(Keras precision policy, why) for training.mixed_precision `want`.

    `auto`: on GPUs, by their lowest compute capability (>= 8.0 bfloat16, >= 7.0 float16);
    on a CPU, mixed_bfloat16 where it has bfloat16 units (`flags`, default this CPU's) and the
    `backbone`'s family gains from them (not MobileNetV3: ga.backbones.Family.bf16_on_cpu),
    else float32 (bfloat16 without the units is emulated, slower than float32). Other values
    force.
    """
    if want != "auto":
        return want, f"training.mixed_precision: {want}"
    if gpu_capabilities:
        cc = min(tuple(c) for c in gpu_capabilities)
        name = f"GPU compute capability {cc[0]}.{cc[1]}"
        if cc >= (8, 0):
            return "mixed_bfloat16", f"{name} (bfloat16 tensor cores)"
        if cc >= (7, 0):
            return "mixed_float16", f"{name} (float16 tensor cores)"
        return "float32", f"{name} (no fast half precision)"
    units = bf16_units(flags)
    if not units:
        return "float32", "CPU without AVX512_BF16 or AMX-BF16 (bfloat16 would be emulated, slower than float32)"
    from ga.backbones import BACKBONES

    cpu = f"CPU with {' and '.join(units)}"
    family = BACKBONES.get(backbone or "")
    if family is not None and not family.bf16_on_cpu:
        return "float32", f"{cpu}, but {backbone} trains slower in bfloat16 than in float32 on a CPU"
    return "mixed_bfloat16", cpu
