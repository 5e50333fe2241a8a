"""`ga monitor verify DIR`: check a monitor folder's audit trail (audit.jsonl)."""

from __future__ import annotations

import argparse
import os
import sys

from ga.cli._base import Command, Parser
from ga.errors import GAError


class Verify(Command):
    name = "monitor verify"
    description = ("Check a monitor folder's audit trail (audit.jsonl): every entry against its hash and against the "
                   "entry before it; an edited, removed, inserted or moved line is named. Exit 0: intact; 1: broken. "
                   "A tamper-evident record, not a claim of 21 CFR Part 11 compliance.")
    flags = {"dir": "DIR"}

    def add_arguments(self, p: Parser) -> None:
        p.add_argument("dir", metavar="DIR", help="the monitor folder (--out-dir of ga monitor)")

    def run(self, args: argparse.Namespace) -> int:
        from ga.monitoring.audit import AUDIT, verify

        path = os.path.join(args.dir, AUDIT)
        try:
            n, problems = verify(args.dir)
        except FileNotFoundError:
            raise GAError(f"{args.dir}: no {AUDIT} (not a monitor folder, or one written before the audit trail)",
                          arg="dir") from None
        for problem in problems:
            print(f"error: {path}: {problem}", file=sys.stderr)
        state = f"broken ({len(problems)} problem(s))" if problems else "intact"
        print(f"{path}: {n} entries, the chain is {state}")
        return 1 if problems else 0


main = Verify().main
