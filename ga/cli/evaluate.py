"""`ga evaluate FOLDER` (inference.py FOLDER --evaluate): a model's reports on a labelled folder."""

from __future__ import annotations

import argparse

from ga.cli import _options
from ga.cli._base import ModelCommand, Parser, print_error, progress_flag


class Evaluate(ModelCommand):
    name = "evaluate"
    description = ("Evaluate a model on a labelled folder (class subfolders, or a labels.csv): the reports a run "
                   "writes for its test split, into --out-dir; accuracy and F1 printed.")
    flags = {"folder": "evaluate"}

    def add_arguments(self, p: Parser) -> None:
        p.add_argument("inputs", nargs=1, metavar="FOLDER", help="the labelled folder")
        _options.add(p, *_options.MODEL, "out_dir")

    def check(self, parser: Parser, args: argparse.Namespace) -> None:
        _options.check_numbers(parser, args)

    def run(self, args: argparse.Namespace) -> int:
        """Reports into --out-dir; accuracy and F1 printed."""
        from ga.analysis import test_summary
        from ga.evaluation import evaluate_folder, run_prefix

        model = self.load(args)
        out_dir = args.out_dir or "inference_out"
        m, pred = evaluate_folder(model, args.inputs[0], out_dir, run_prefix(model.source), args.threshold,
                                  batch_size=args.batch_size, max_pixels=args.max_pixels,
                                  progress=progress_flag(args))
        for r in pred.errors:
            print_error(r.path, r.error)
        print(f"{m['test_images']} images: {test_summary(m)}; reports in {out_dir}")
        return 1 if pred.errors else 0


main = Evaluate().main
