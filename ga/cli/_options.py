"""Options that several commands share, each declared once, and the checks of their values.

`add(parser, "model", "engine", ...)` adds options by name; `changes` adjusts one for one
command (`add(p, "batch_size", batch_size={"default": None})`).
"""

from __future__ import annotations

import argparse
from typing import Any

_MODEL_HELP = ("run folder, .onnx, .keras or .h5 (with labels.json beside it); default: the newest complete run "
               "under deliverables/")
_ENGINE_HELP = ("onnx (float32), onnx-int8 (the run's INT8 model), openvino, openvino-int8 (the same files through "
                "OpenVINO: pip install 'ga-crystals[openvino]') or keras; default: OpenVINO on a CPU with AMX when "
                "installed and checked by the run, else onnx-int8 when the run has it and the CPU has INT8 units "
                "(VNNI, AMX), else onnx when there is one")

OPTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "model": (("--model",), {"help": _MODEL_HELP}),
    "runs_root": (("--runs-root",), {"default": "deliverables",
                                     "help": "where to look for the newest run; default: %(default)s"}),
    "engine": (("--engine",), {"choices": ["onnx", "onnx-int8", "openvino", "openvino-int8", "keras"], "default": None, "help": _ENGINE_HELP}),
    "batch_size": (("--batch-size",), {"type": int, "default": 64,
                                       "help": "images per prediction call; default: %(default)s"}),
    "threads": (("--threads",), {"type": int, "default": 0, "help": "ONNX Runtime intra-op threads (0: all cores)"}),
    "threshold": (("--threshold",), {"type": float, "help": "decision threshold; default: the model's labels.json"}),
    "max_pixels": (("--max-pixels",), {"type": int, "default": 100_000_000,
                                       "help": "refuse images with more pixels than this (decompression bombs); "
                                               "default: %(default)s"}),
    "unsafe": (("--unsafe",), {"action": "store_true",
                               "help": "allow Keras models that hold arbitrary code (Lambda layers)"}),
    "no_progress": (("--no-progress",), {"action": "store_true", "help": "no progress bar"}),
    "out_dir": (("--out-dir",), {"default": None, "help": "folder for cluster, evaluation, explanation and scan "
                                                          "outputs; default: inference_out/"}),
    "recursive": (("--recursive",), {"action": "store_true", "help": "also read subfolders"}),
    "config": (("--config",), {"default": None, "metavar": "YAML",
                               "help": "configuration file, or the name of a shipped config (main.py "
                                       "--list-configs); default: %(default)s"}),
    "overrides": (("--set",), {"dest": "overrides", "action": "append", "default": [], "metavar": "KEY=VALUE",
                               "help": "override one config value, typed by its field, e.g. --set "
                                       "training.epochs=3 (repeatable; wins over the file)"}),
    "tile": (("--tile",), {"type": int, "nargs": "+", "default": [300], "metavar": ("W", "H"),
                           "help": "tile width and height in pixels for --scan (one number: square); default: 300"}),
    "overlap": (("--overlap",), {"type": int, "default": None,
                                 "help": "least overlap of neighbouring tiles in pixels for --scan (objects up to "
                                         "this size always lie wholly in some tile); 0: the fewest tiles; default: "
                                         "a fifth of the tile's smaller side"}),
    "rule": (("--rule",), {"choices": ["classes", "any"], "default": "classes",
                           "help": "--scan marks a tile when: classes: a class passes its threshold (multi-label: "
                                   "any but 'any'; binary: the positive class); any: the last output ('any', or a "
                                   "binary model's one output) is above --threshold (default 0.5), the graphene "
                                   "study's rule; default: %(default)s"}),
}

# The options of every command that loads a trained model by --model.
MODEL = ("model", "runs_root", "engine", "batch_size", "threads", "threshold", "max_pixels", "unsafe", "no_progress")
SCAN = ("tile", "overlap", "rule")
CONFIG = ("config", "overrides")


def add(parser: argparse.ArgumentParser, *names: str, **changes: dict[str, Any]) -> None:
    """Add the named shared options to `parser`, each with its `changes` (keyword: the
    option's name) applied."""
    for name in names:
        flags, kwargs = OPTIONS[name]
        parser.add_argument(*flags, **{**kwargs, **changes.get(name, {})})


def check_numbers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--batch-size and --threshold, where a command has them (the same rule everywhere)."""
    if getattr(args, "batch_size", None) is not None and args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if getattr(args, "threshold", None) is not None and not 0 < args.threshold < 1:
        parser.error("--threshold must be between 0 and 1")


def check_scan(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--tile and --overlap."""
    if len(args.tile) > 2 or min(args.tile) < 1:
        parser.error("--tile takes a width and an optional height, each at least 1")
    if args.overlap is not None and not 0 <= args.overlap < min(args.tile):
        parser.error("--overlap must be at least 0 and less than the tile's smaller side")


def defaults_of(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Every option's default (what parsing no options gives), by its dest."""
    return {a.dest: a.default for a in parser._actions if argparse.SUPPRESS not in (a.dest, a.default)}
