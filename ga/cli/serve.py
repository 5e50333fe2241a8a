"""`ga monitor serve DIR [--address [HOST:]PORT]`: a monitor folder's live dashboard, served on its own."""

from __future__ import annotations

import argparse
import os
import sys
import time

from ga.cli._base import Command, Parser, stop_on_signals
from ga.errors import GAError


class Serve(Command):
    name = "monitor serve"
    description = ("Serve a monitor folder's live dashboard (the page polls the folder's state every second: the "
                   "latest values with their intervals, a trend, the figures, alerts and notes, and whether the "
                   "monitor runs, stopped or went stale) until interrupted; the folder may be finished or still "
                   "written by a running `ga monitor`.")
    flags = {"dir": "DIR", "address": "--address"}

    def add_arguments(self, p: Parser) -> None:
        p.add_argument("dir", metavar="DIR", help="the monitor folder (--out-dir of ga monitor)")
        p.add_argument("--address", default="8050", metavar="[HOST:]PORT",
                       help="where to listen (host 127.0.0.1 unless given); default: %(default)s")
        p.add_argument("--stale-seconds", type=float, default=60.0, metavar="SECONDS",
                       help="show the monitor as stale after this long without a frame; default: %(default)s")

    def check(self, parser: Parser, args: argparse.Namespace) -> None:
        from ga.monitoring.publish import host_port

        try:
            host_port(args.address)
        except GAError as exc:
            parser.error(str(exc))
        if not args.stale_seconds > 0:
            parser.error("--stale-seconds must be positive")

    def run(self, args: argparse.Namespace) -> int:
        from ga.monitoring.columns import FRAMES
        from ga.monitoring.dashboard import Dashboard
        from ga.monitoring.publish import host_port

        if not os.path.isfile(os.path.join(args.dir, FRAMES)) and not os.path.isfile(os.path.join(args.dir, "audit.jsonl")):
            raise GAError(f"{args.dir}: not a monitor folder (no {FRAMES})", arg="dir")
        host, port = host_port(args.address)
        board = Dashboard(args.dir, host, port, args.stale_seconds).start()
        print(f"dashboard: {board.url}" if board.bound.is_set() else
              f"dashboard: waiting for {host}:{port} (in use)", file=sys.stderr, flush=True)
        try:
            with stop_on_signals() as stopping:
                while not stopping:
                    time.sleep(0.2)
        finally:
            board.close()
        return 0


main = Serve().main
