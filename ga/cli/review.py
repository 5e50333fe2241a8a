"""`ga review FOLDER` (inference.py FOLDER --review): rank a labelled folder's images by loss."""

from __future__ import annotations

import argparse
import os

from ga.cli import _options
from ga.cli._base import ModelCommand, Parser, print_error, progress_flag
from ga.errors import printable

OUT = "review"


class Review(ModelCommand):
    name = "review"
    description = ("Review the labels of a labelled folder (class folders or a labels.csv) or of a split folder's "
                   "train/valid/test: every image ranked by its loss under its label, likely mislabels and "
                   "near-duplicates across classes flagged; review.html, review.csv and labels.csv (the suggestions "
                   "applied) in --out-dir. No image is moved or changed.")
    flags = {"folder": "review", "min_confidence": "--min-confidence"}

    def add_arguments(self, p: Parser) -> None:
        p.add_argument("inputs", nargs=1, metavar="FOLDER", help="the labelled folder or split folder")
        _options.add(p, *_options.MODEL)
        p.add_argument("--out-dir", default=OUT, help="where the review is written (default review)")
        p.add_argument("--top", type=int, default=48, metavar="N", help="images shown in review.html (default 48)")
        p.add_argument("--gradcam", type=int, default=16, metavar="N",
                       help="Grad-CAM (behind a click) for the first N of them (default 16; 0: none)")
        p.add_argument("--min-confidence", type=float, default=0.9, metavar="P",
                       help="a disagreement is a likely mislabel when the model names its class with at least this "
                            "probability (default 0.9)")

    def check(self, parser: Parser, args: argparse.Namespace) -> None:
        if args.top < 1 or args.gradcam < 0:
            parser.error("--top must be at least 1 and --gradcam at least 0")
        _options.check_numbers(parser, args)

    def run(self, args: argparse.Namespace) -> int:
        from ga.curation import review_folder

        out_dir = args.out_dir or OUT  # inference.py --review: its --out-dir, else ga review's
        r = review_folder(self.load(args), args.inputs[0], out_dir, top=args.top, gradcam=args.gradcam,
                          min_confidence=args.min_confidence, progress=progress_flag(args))
        for e in r.errors:
            print_error(e["path"], e["error"])
        mis = [x for x in r.rows if "mislabel" in x["flags"]]
        dup = [x for x in r.rows if "near-duplicate" in x["flags"]]
        print(f"{len(r.rows)} images reviewed: {len(mis)} likely mislabel(s), {len(dup)} near-duplicate(s) across "
              f"classes, {len(r.errors)} unreadable")
        for x in mis[:10]:
            print(f"  #{x['rank']} {printable(x['path'])}: labelled {x['label']}, the model says {x['predicted']} "
                  f"({x['confidence']:.3f})")
        print(f"review: {os.path.join(out_dir, 'review.html')}")
        return 1 if r.errors else 0


main = Review().main
