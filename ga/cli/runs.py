"""`ga runs [ROOT] [--csv] [--diff A B]`: the run folders, or what differs between two."""

from __future__ import annotations

import argparse
import csv
import os
import sys

from ga.cli._base import Command, Parser


class Runs(Command):
    name = "runs"
    description = ("List the run folders (name, date, state, task, backbone, delivered epoch, test figures), or with "
                   "--diff A B show what differs between two runs.")

    def add_arguments(self, p: Parser) -> None:
        p.add_argument("root", nargs="?", default="deliverables", help="the folder holding run folders "
                       "(default deliverables)")
        p.add_argument("--csv", action="store_true", help="print the table as CSV")
        p.add_argument("--diff", nargs=2, metavar=("A", "B"),
                       help="two run folders (paths, or names of folders in ROOT): the config keys that differ and "
                            "the test figures of both with B - A")

    def run(self, args: argparse.Namespace) -> int:
        from ga.runs import RUN_COLUMNS, diff_runs, list_runs

        if args.diff:
            a, b = (p if os.path.isdir(p) else os.path.join(args.root, p) for p in args.diff)
            _print_diff(diff_runs(a, b), args.csv)
            return 0
        rows = list_runs(args.root)
        columns = [*RUN_COLUMNS, "why"]
        if args.csv:
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow([*columns, "path"])
            writer.writerows([[_cell(r[c], 6) for c in columns] + [r["path"]] for r in rows])
        elif not rows:
            print(f"no run folders in {args.root}")
        else:
            _print_table(columns, [[_cell(r[c]) for c in columns] for r in rows])
        return 0


def _print_diff(diff, as_csv):
    config = [[k, _cell(a), _cell(b)] for k, (a, b) in diff["config"].items()]
    metrics = [[k, _cell(a), _cell(b), f"{d:+.4f}"] for k, (a, b, d) in diff["metrics"].items()]
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["kind", "key", "a", "b", "b_minus_a"])
        writer.writerows([["config", *r, ""] for r in config] + [["metric", *r] for r in metrics])
        return
    print(f"A: {diff['a']}\nB: {diff['b']}\n")
    if config:
        _print_table(["config key", "A", "B"], config)
    else:
        print("the configurations are the same")
    print()
    if metrics:
        _print_table(["test figure", "A", "B", "B - A"], metrics)
    else:
        print("no test figures in both (a run without metrics.json)")


def _cell(value, digits=4):
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "" if value is None else str(value)


def _print_table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for line in [header, [("-" * w) for w in widths], *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())


main = Runs().main
