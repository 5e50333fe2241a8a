"""`ga report RUN` (python -m ga.report): rebuild a run folder's report.html."""

from __future__ import annotations

import argparse
import os

from ga.cli._base import Command, Parser
from ga.errors import GAError


class Report(Command):
    name = "report"
    description = "(Re)build a complete run folder's report.html"

    def add_arguments(self, p: Parser) -> None:
        p.add_argument("run", help="a run folder (with metrics.json)")

    def run(self, args: argparse.Namespace) -> int:
        from ga.report import write_report

        if not os.path.isfile(os.path.join(args.run, "metrics.json")):
            raise GAError(f"{args.run} is not a finished run folder (no metrics.json)")
        print(write_report(args.run))
        return 0


main = Report().main
