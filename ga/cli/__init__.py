"""The command line: `ga <command>` (also `python -m ga`), one module per command.

`ga split | train | infer | evaluate | compare | review | scan | synth | monitor | import | report | runs`;
split_data.py, main.py, inference.py, ga-split, ga-train and ga-infer are the same commands
under their older names, and `python -m ga.synthetic | ga.georgia | ga.report` hand over to
`python -m ga synth | import | report`.

Each command module holds a `Command` (ga.cli._base) whose parser translates argv, one call
into `ga.api` (or the library module behind it), and what it prints; `main(argv)` returns the
exit status: 0 success, 1 finished with skipped inputs, 2 usage or configuration error (one
line on stderr, no traceback), 130 interrupted. The registry below names each command's
module, imported only when the command runs, so `ga --help` imports none of them.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Callable, Sequence

# name -> (module under ga.cli, summary for `ga --help`)
COMMANDS = {
    "split": ("split", "split a labelled folder into train/valid/test (split_data.py)"),
    "train": ("train", "train a model from a configuration (main.py)"),
    "infer": ("infer", "label images with a trained model (inference.py)"),
    "evaluate": ("evaluate", "evaluate a model on a labelled folder (inference.py FOLDER --evaluate)"),
    "compare": ("compare", "compare two models on one labelled folder (inference.py FOLDER --evaluate --compare)"),
    "review": ("review", "rank a labelled folder's images by loss, flag likely mislabels (inference.py FOLDER "
                         "--review)"),
    "scan": ("scan", "tile whole frames and mark where a class fires (inference.py FRAME --scan)"),
    "synth": ("synth", "write synthetic crystals, graphene crops or a wafer frame"),
    "monitor": ("monitor", "watch a crystallization: particles in frames over time, classes, sizes, alerts"),
    "import": ("import_", "import the Georgia study's GAweights_*.h5 as a run folder"),
    "report": ("report", "rebuild a run's report.html"),
    "runs": ("runs", "list the run folders and their state and test figures; --diff A B compares two"),
}

# The entry functions of the scripts and console scripts (`ga-split = ga.cli:split_main`).
ENTRIES = {"split_main": "split", "train_main": "train", "inference_main": "infer", "evaluate_main": "evaluate",
           "compare_main": "compare", "review_main": "review", "scan_main": "scan", "synth_main": "synth",
           "monitor_main": "monitor", "import_main": "import", "report_main": "report", "runs_main": "runs"}


def command(name: str) -> Any:
    """The Command object of `ga <name>` (its module imported now)."""
    module = importlib.import_module(f"ga.cli.{COMMANDS[name][0]}")
    return next(v for v in vars(module).values()
                if isinstance(v, type) and getattr(v, "name", None) == name and v.__module__ == module.__name__)()


def __getattr__(name: str) -> Callable[..., int]:
    """`ga.cli.split_main` and the like: the command's `main`, imported when first asked for."""
    if name in ENTRIES:
        return command(ENTRIES[name]).main
    raise AttributeError(f"module 'ga.cli' has no attribute {name!r}")


def usage(prog: str = "ga") -> str:
    """`ga --help`: the commands, one line each."""
    width = max(map(len, COMMANDS))
    return "\n".join([f"usage: {prog} <command> [options]   ({prog} <command> --help)", "", "commands:",
                      *(f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items())])


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """`ga <command> ...` (and `python -m ga <command> ...`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = prog or (os.path.basename(sys.argv[0] or "") if os.path.basename(sys.argv[0] or "") == "ga" else "ga")
    if argv[:1] in (["-h"], ["--help"]):
        print(usage(prog))
        return 0
    if not argv or argv[0] not in COMMANDS:
        print(usage(prog), file=sys.stderr)
        if argv:
            print(f"{prog}: error: unknown command {argv[0]!r}", file=sys.stderr)
        return 2
    return command(argv[0]).main(argv[1:], prog=f"{prog} {argv[0]}")
