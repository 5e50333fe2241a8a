"""`ga monitor note DIR TEXT [--time ISO]`: an operator's note in a monitor folder."""

from __future__ import annotations

import argparse
import datetime

from ga.cli._base import Command, Parser


class Note(Command):
    name = "monitor note"
    description = ("Add an operator's note to a monitor folder: notes.csv, a dotted line on the trend figure and a "
                   "row on the page")
    flags = {"dir": "DIR", "text": "TEXT"}

    def add_arguments(self, p: Parser) -> None:
        p.add_argument("dir", metavar="DIR", help="the monitor folder (--out-dir of ga monitor)")
        p.add_argument("text", metavar="TEXT", help='the note, e.g. "seeded at 10:32"')
        p.add_argument("--time", metavar="ISO", help="when it happened (e.g. 2026-12-01T10:32:00); default: now")

    def check(self, parser: Parser, args: argparse.Namespace) -> None:
        args.when = None
        if args.time:
            try:
                args.when = datetime.datetime.fromisoformat(args.time)
            except ValueError:
                parser.error(f"--time takes an ISO time such as 2026-12-01T10:32:00, got {args.time!r}")

    def run(self, args: argparse.Namespace) -> int:
        from ga.monitoring.outputs import add_note, refresh

        time, text = add_note(args.dir, args.text, args.when)
        refresh(args.dir)  # the figures and page show it now (a running monitor at its next refresh)
        print(f"{time} {text}")
        return 0


main = Note().main
