"""What every command shares: the parser, the `Command` base, and the wrapper that turns a
command's errors into one line and an exit status.

Exit statuses: 0 success, 1 finished with skipped inputs, 2 usage or configuration error
(one line on stderr, no traceback), 130 interrupted. Library errors name the Python
argument they are about (`ga.errors`); `call` prints them with the command's flag instead.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from typing import Any, Callable, Iterator, NoReturn, Sequence

from ga.errors import GAError

log = logging.getLogger("ga.cli")

# The flag each library argument is given by (`GAError.arg`, `ga.errors.opt`); a command's
# `flags` adds to it.
FLAGS = {"model": "--model", "engine": "--engine", "threshold": "--threshold", "cluster": "--cluster",
         "scan": "--scan", "rule": "--rule", "folder": "--evaluate", "recursive": "--recursive", "unsafe": "--unsafe",
         "overwrite": "--overwrite", "dest": "--dest", "ratios": "--ratios", "resume": "--resume",
         "compare": "--compare", "cv": "--cv", "folds": "--folds", "lr_find": "--lr-find", "lr_steps": "--lr-steps",
         "lr_range": "--lr-range", "overrides": "--set", "out": "--out", "show_detection": "--show-detection",
         "train": "`python main.py --config configs/demo.yaml`"}


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (usage is one `--help` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def script_name(script: str) -> str:
    """The program name for usage lines: the installed command (ga-train ...) when run as
    one, else the script."""
    name = os.path.basename(sys.argv[0] or "")
    return name if name.startswith("ga-") else script


def call(fn: Callable[[Any], int], args: argparse.Namespace, flags: dict | None = None,
         also: tuple[type[BaseException], ...] = ()) -> int:
    """Call `fn(args)` and return its exit status; a GAError (or one of `also`, the
    exceptions a command's library raises for bad input) is one line on stderr and status 2,
    its arguments named by their flags."""
    import ga
    from ga.log import setup_logging

    ga.lean_keras()  # no command uses Keras's pandas, scikit-learn or pyplot integrations
    setup_logging(verbose=getattr(args, "verbose", False), quiet=getattr(args, "quiet", False))
    try:
        return fn(args)
    except GAError as exc:
        print(f"error: {exc.render({**FLAGS, **(flags or {})})}", file=sys.stderr)
        return exc.exit_code
    except also as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


class Command:
    """One command: `add_arguments` builds its parser, `check` says what argparse cannot
    (calling `parser.error`), `run(args)` does the work and returns the exit status."""

    name = ""  # `ga <name>`
    script: str | None = None  # the older script it also is (inference.py ...), for usage lines
    description = ""
    flags: dict[str, str] = {}  # library argument -> this command's flag, beyond FLAGS
    errors: tuple[type[BaseException], ...] = ()  # library exceptions that mean bad input here
    output_options = True  # -v/--verbose and -q/--quiet

    def add_arguments(self, parser: Parser) -> None:
        raise NotImplementedError

    def check(self, parser: Parser, args: argparse.Namespace) -> None:
        """The rules between options that argparse cannot say (none by default)."""

    def run(self, args: argparse.Namespace) -> int:
        raise NotImplementedError

    def flags_for(self, args: argparse.Namespace) -> dict[str, str]:
        return self.flags

    def needs_keras(self, args: argparse.Namespace) -> bool:
        """Whether this run loads a model: then Keras is imported (quietly, its objects
        registered) before anything else can import TensorFlow on its own."""
        return False

    def _start(self, args: argparse.Namespace) -> int:
        if self.needs_keras(args):
            import ga

            ga.register()
        return self.run(args)

    def parser(self, prog: str | None = None) -> Parser:
        p = Parser(prog=prog or (script_name(self.script) if self.script else f"ga {self.name}"),
                   description=self.description)
        self.add_arguments(p)
        if not self.output_options:
            return p
        g = p.add_argument_group("output")
        g.add_argument("-v", "--verbose", action="store_true", help="show debug messages")
        g.add_argument("-q", "--quiet", action="store_true", help="show warnings and errors only")
        return p

    def main(self, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
        """Parse `argv` (default: sys.argv), check, run: the exit status."""
        parser = self.parser(prog)
        args = parser.parse_args(argv)
        self.check(parser, args)
        return call(self._start, args, self.flags_for(args), self.errors)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[list[int]]:
    """Ctrl-C and SIGTERM ask a long command to stop after the work in hand: yields the list
    of signals received. The previous handlers come back when the block ends, so a process
    that called the command in-process (a notebook, a test) keeps its own Ctrl-C; off the
    main thread, where Python cannot set handlers, nothing is changed."""
    import signal
    import threading

    stopping: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield stopping
        return

    def stop(signum, _frame):
        stopping.append(signum)
        log.info("stopping after the frames in hand (signal %d)", signum)

    before = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stopping
    finally:
        for sig, handler in before.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python


class ModelCommand(Command):
    """A command that loads trained models (the shared model options, `ga.cli._options.MODEL`)."""

    def needs_keras(self, args: argparse.Namespace) -> bool:
        return True

    def load(self, args: argparse.Namespace, which: str = "model") -> Any:
        """The model named by `args.<which>` with the shared model options: the one place the
        commands load a model (through `ga.api.load`)."""
        from ga.api import load

        where = {"runs_root": args.runs_root} if hasattr(args, "runs_root") else {}
        return load(getattr(args, which), engine=args.engine, threads=args.threads, unsafe=args.unsafe, **where).model


def print_error(path: str, reason: str, lead: str = "error") -> None:
    """One line on stderr for an input that could not be used."""
    from ga.errors import printable

    print(f"{lead}: {printable(path)}: {printable(reason)}", file=sys.stderr)


def progress_flag(args: argparse.Namespace) -> bool | None:
    """--no-progress as the library's `progress`: None (a bar on a terminal) or False."""
    return None if not args.no_progress else False
