"""`ga compare A B FOLDER` (inference.py FOLDER --evaluate --model A --compare B)."""

from __future__ import annotations

import argparse

from ga.cli import _options
from ga.cli._base import ModelCommand, Parser, print_error, progress_flag
from ga.errors import GAError


class Compare(ModelCommand):
    name = "compare"
    description = ("Compare two models on the same labelled folder: paired differences in accuracy and macro F1 with "
                   "bootstrap intervals, McNemar's exact test, and the images they decide differently (compare.json "
                   "and compare.csv in --out-dir).")
    flags = {"model": "A", "compare": "B", "folder": "FOLDER"}

    def add_arguments(self, p: Parser) -> None:
        p.add_argument("model", metavar="A", help="run folder or model file of model A")
        p.add_argument("compare", metavar="B", help="run folder or model file of model B")
        p.add_argument("inputs", nargs=1, metavar="FOLDER", help="the labelled folder")
        _options.add(p, "engine", "batch_size", "threads", "max_pixels", "unsafe", "no_progress", "out_dir",
                     engine={"help": "the engine of both models; default: as inference.py chooses"})

    def check(self, parser: Parser, args: argparse.Namespace) -> None:
        _options.check_numbers(parser, args)

    def run(self, args: argparse.Namespace) -> int:
        from ga.comparison import compare_models, summary_line

        a = self.load(args)
        try:
            b = self.load(args, "compare")
        except GAError as exc:
            raise GAError(exc.message, arg="compare") from None
        doc = compare_models(a, b, args.inputs[0], args.out_dir or "inference_out", batch_size=args.batch_size,
                             max_pixels=args.max_pixels, progress=progress_flag(args))
        for r in doc["skipped"]:
            print_error(r["path"], r["reason"])
        print(summary_line(doc))
        return 1 if doc["skipped"] else 0


main = Compare().main
