"""`ga synth crystals|graphene|process|wafer` (python -m ga.synthetic): synthetic data."""

from __future__ import annotations

import argparse

from ga.cli._base import Command, Parser


class Synth(Command):
    name = "synth"
    errors = (ValueError, OSError)
    output_options = False  # the generators print their paths and a progress bar, nothing else

    @property
    def description(self) -> str:  # type: ignore[override]
        from ga import synthetic

        return synthetic.__doc__.split("\n\n")[0]

    def add_arguments(self, p: Parser) -> None:
        sub = p.add_subparsers(dest="kind", required=True)
        c = sub.add_parser("crystals", help="CEX vs PG crops in the Kaggle layout")
        c.add_argument("--out", default="data/archive",
                       help="the dataset folder (crops go to OUT/cropped/cropped/<class>/)")
        c.add_argument("--per-class", type=int, default=300, help="crops per class")
        c.add_argument("--pg-copies", type=int, default=5, help="rotated/flipped copies per PG crop (1: none)")
        c.add_argument("--seed", type=int, default=0, help="the same seed writes the same crops")
        c.add_argument("--classes", default="cex,pg",
                       help="kinds to write, comma-separated, from cex, pg, plate; `name:N` gives one class its own "
                            "count (e.g. cex,pg:80 for a 10:1 imbalance at --per-class 800); default: %(default)s")
        g = sub.add_parser("graphene", help="multi-label flake crops and labels.csv")
        g.add_argument("--out", default="data/graphene", help="the folder of crops and labels.csv")
        g.add_argument("--count", type=int, default=400, help="crops to write")
        g.add_argument("--size", type=int, default=400, help="crop side, px")
        g.add_argument("--seed", type=int, default=0, help="the same seed writes the same crops")
        pr = sub.add_parser("process", help="frames of a simulated crystallization over time, with the truth beside "
                                            "them")
        pr.add_argument("--out", default="data/process", help="the folder of frames (truth/ beside them)")
        pr.add_argument("--frames", type=int, default=120, help="frames to write")
        pr.add_argument("--interval", type=float, default=2.0, help="seconds between frames; default: %(default)s")
        pr.add_argument("--width", type=int, default=1024, help="frame width, px (before --scale)")
        pr.add_argument("--height", type=int, default=768, help="frame height, px (before --scale)")
        pr.add_argument("--seed", type=int, default=0, help="the same seed writes the same run")
        pr.add_argument("--scale", type=float, default=1.0,
                        help="resize every frame by this factor (another camera's pixel size); default: %(default)s")
        pr.add_argument("--polarity", choices=("bright", "dark"), default="bright",
                        help="bright particles on dark (default) or dark on light (bright-field)")
        w = sub.add_parser("wafer", help="one whole frame with labelled flakes and their boxes")
        w.add_argument("--out", default="data/wafer.png", help="the frame (its labels and boxes beside it)")
        w.add_argument("--width", type=int, default=4908, help="frame width, px")
        w.add_argument("--height", type=int, default=3264, help="frame height, px")
        w.add_argument("--seed", type=int, default=0, help="the same seed writes the same frame")

    def run(self, args: argparse.Namespace) -> int:
        """The folders or files written, one per line."""
        from ga import synthetic as syn

        if args.kind == "crystals":
            print(syn.generate_crystals(args.out, args.per_class, args.seed, args.pg_copies, progress=True,
                                        classes=args.classes.split(",")))
        elif args.kind == "graphene":
            print(syn.generate_graphene(args.out, args.count, args.size, args.seed, progress=True))
        elif args.kind == "process":
            print(syn.generate_process(args.out, args.frames, args.seed, args.interval, (args.width, args.height),
                                       progress=True, scale=args.scale, polarity=args.polarity))
        else:
            print(*syn.generate_wafer(args.out, args.width, args.height, args.seed), sep="\n")
        return 0


main = Synth().main
