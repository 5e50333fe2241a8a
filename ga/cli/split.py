"""`ga split` (split_data.py, ga-split): a labelled folder into train/valid/test."""

from __future__ import annotations

import argparse
import sys

from ga.cli import _options
from ga.cli._base import Command, Parser


class Split(Command):
    name, script = "split", "split_data.py"
    description = ("Split a folder of class folders (or images + labels.csv) into train/valid/test without touching "
                   "the source, keeping rotated/flipped copies of one crop in one split.")

    def add_arguments(self, p: Parser) -> None:
        p.add_argument("--source", help="class folders (Kaggle layout), images + labels.csv, or the graphene study's "
                       "dataset folder (training_images/ + training_labels/<name>-labels.csv); "
                       "default: split.source of the config (data/archive/cropped/cropped)")
        p.add_argument("--dest", help="output root; default: data.split_root of the config (data/split)")
        p.add_argument("--ratios", nargs=3, type=float, metavar=("TRAIN", "VALID", "TEST"),
                       help="split fractions, summing to 1; default 0.70 0.25 0.05")
        p.add_argument("--seed", type=int, help="shuffle seed; default 42")
        p.add_argument("--mode", choices=["copy", "link", "move"],
                       help="copy (default), hard-link (copies across file systems), or move (only when asked)")
        p.add_argument("--order", choices=["random", "sorted"],
                       help="random (default, seeded), or sorted: the original study's sequential cut, for comparison")
        p.add_argument("--folds", type=int, metavar="K",
                       help="also deal train and valid into K cross-validation folds, each copy group in one fold "
                            "(the manifest's fold column; the test split stays held out; an existing split gets "
                            "them without a file moved); train them with main.py --cv")
        p.add_argument("--dry-run", action="store_true", help="report what would be done; write nothing")
        p.add_argument("--overwrite", action="store_true", help="replace a destination that holds a different split")
        _options.add(p, "no_progress", *_options.CONFIG)

    def run(self, args: argparse.Namespace) -> int:
        from ga.api import split

        result = split(args.source, args.dest, ratios=args.ratios, seed=args.seed, mode=args.mode, order=args.order,
                       dry_run=args.dry_run, overwrite=args.overwrite, folds=args.folds,
                       progress=not args.no_progress, config=args.config, sets=args.overrides)
        _print_split(result)
        return result.exit_code


def _print_split(result):
    """The split's unused files on stderr, then its table (or why nothing was done)."""
    if result.state == "unchanged":
        print(f"{result.dest} already holds this split ({sum(f.usable for f in result.files)} images)"
              + ("; folds written" if result.folds and not result.dry_run else "; nothing to do"))
    elif result.state == "completed":
        print(f"completing the split in {result.dest}: {result.to_place} file(s) to place")
    else:
        _print_split_table(result)
    if result.folds:
        k = len(next(iter(result.folds.values())))
        print(f"{k} cross-validation folds over train and valid (test held out), images per fold:")
        for cls, per in sorted(result.folds.items()):
            print(f"  {cls or '(none)'}: " + "  ".join(f"{i}: {n}" for i, n in per.items()))


def _print_split_table(result):
    from ga.splitting import SPLITS, safe_name

    for f in result.unused:
        print(f"skipped: {safe_name(f.source)}: {f.status}: {f.reason}", file=sys.stderr)
    strata = sorted(result.counts)
    width = max([len(s) for s in strata] + [8])
    lines = [("would split" if result.dry_run else "split")
             + f" ({'dry run: nothing written' if result.dry_run else 'done'})",
             f"{'class':<{width}}  {'groups':>6}  " + "  ".join(f"{s:>14}" for s in SPLITS) + f"  {'total':>6}"]
    for st in strata:
        c = result.counts[st]
        n = sum(c.values())
        cells = "  ".join(f"{c[s]:>6} ({100 * c[s] / n:5.1f}%)" if n else f"{0:>14}" for s in SPLITS)
        lines.append(f"{st or '(none)':<{width}}  {result.groups.get(st, 0):>6}  {cells}  {n:>6}")
    bad: dict[str, int] = {}
    for f in result.unused:
        bad[f.status] = bad.get(f.status, 0) + 1
    lines.append("not used: " + (", ".join(f"{k} {v}" for k, v in sorted(bad.items())) or "none")
                 + f"; byte-identical duplicates kept with their group: {result.duplicates}")
    print("\n".join(lines))


main = Split().main
