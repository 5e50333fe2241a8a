"""The monitor's tables by column name: frames.csv, particles.csv and alerts.csv, their
columns for a model's classes and the config, and how a value is written."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from ga.monitoring.detection import GEOMETRY, LENGTHS

if TYPE_CHECKING:
    from ga.config import MonitorConfig

PARTICLES, FRAMES, ALERTS, STATE = "particles.csv", "frames.csv", "alerts.csv", "monitor.json"
QUANTILES = (("10", 0.1), ("50", 0.5), ("90", 0.9))
ALERT_COLUMNS = ["time", "frame", "rule", "column", "value", "threshold"]
TEXT_COLUMNS = ("frame", "time", "time_source", "flags", "skipped", "source", "key")  # frames.csv's non-numbers


def size_unit(cfg: MonitorConfig) -> str:
    return "um" if cfg.pixel_size_um else "px"


def frame_columns(classes: Sequence[str], cfg: MonitorConfig) -> list[str]:
    """frames.csv's columns for a model's classes."""
    u = size_unit(cfg)
    sizes = lambda prefix: [f"{prefix}{w}{q}_{u}" for w in ("d", "dv") for q, _ in QUANTILES]  # noqa: E731
    cols = ["frame", "time", "elapsed_s", "time_source", "flags", "skipped", "particles", "edge_particles",
            "static_particles"]
    for c in classes:
        cols += [f"{c}_count", f"{c}_fraction", f"{c}_fraction_lo", f"{c}_fraction_hi"]
    cols += sizes("")
    for c in classes:
        cols += sizes(f"{c}_")
    for prefix in ["", *(f"{c}_" for c in classes)]:
        cols += [f"{prefix}{name}" for name in bin_columns(cfg)]
    return cols + ["source", "size", "mtime_ns", "key"]


def bin_columns(cfg: MonitorConfig) -> list[str]:
    """`count_<lo>_<hi>_<unit>` for each size bin of `monitor.size_bins` (none without)."""
    def edge(v):
        return "inf" if math.isinf(v) else f"{v:g}"

    e = cfg.size_bins
    return [f"count_{edge(a)}_{edge(b)}_{size_unit(cfg)}" for a, b in zip(e, e[1:])]


def geometry_columns(cfg: MonitorConfig) -> list[str]:
    """particles.csv's geometry columns (micrometre ones with monitor.pixel_size_um)."""
    geometry = list(GEOMETRY)
    if cfg.pixel_size_um:
        geometry += [f"{k}_um" for k in LENGTHS] + ["area_um2"]
    return geometry


def particle_columns(classes: Sequence[str], cfg: MonitorConfig) -> list[str]:
    """particles.csv's columns for a model's classes."""
    return (["frame", "time", "particle", "class", *(f"p_{c}" for c in classes), *geometry_columns(cfg), "static"]
            + ["model_file", "model_sha256", "engine"])


def cell(v: object, digits: int = 6) -> object:
    """A value as a CSV cell: "" for None and NaN, floats to `digits` places without trailing
    zeros (0 digits: rounded to a whole number)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}".rstrip("0").rstrip(".") if digits else str(round(v))
    return v


def numeric_columns(frame_cols: Sequence[str]) -> list[str]:
    """frames.csv's columns that hold numbers (what alert rules may name)."""
    return [c for c in frame_cols if c not in TEXT_COLUMNS]
