"""`ga scan FRAME...` (inference.py FRAME --scan): tile whole frames, mark where a class fires."""

from __future__ import annotations

import argparse
import os

from ga.cli import _options
from ga.cli._base import ModelCommand, Parser, print_error
from ga.errors import printable


class Scan(ModelCommand):
    name = "scan"
    description = ("Tile whole frames and mark the tiles where a class fires: <stem>_scan.jpg, <stem>_tiles.csv and "
                   "the marked tiles in --out-dir.")
    flags = {"scan": "scan"}

    def add_arguments(self, p: Parser) -> None:
        p.add_argument("inputs", nargs="+", metavar="FRAME", help="frames and/or folders of frames")
        _options.add(p, "recursive", *_options.MODEL, "out_dir", *_options.SCAN)

    def check(self, parser: Parser, args: argparse.Namespace) -> None:
        _options.check_numbers(parser, args)
        _options.check_scan(parser, args)

    def run(self, args: argparse.Namespace) -> int:
        """A line per frame; exit 1 if some frames could not be read."""
        from ga.api import scan_frames
        from ga.inputs import input_files

        input_files(args.inputs, args.recursive)  # a bad path is reported before the model loads
        failed = 0
        for path, r in scan_frames(args.inputs, self.load(args), recursive=args.recursive, tile=tuple(args.tile), out_dir=args.out_dir or "inference_out",
                                   batch_size=args.batch_size, threshold=args.threshold,
                                   max_pixels=args.max_pixels, overlap=args.overlap, rule=args.rule):
            if isinstance(r, str):
                print_error(path, r)
                failed += 1
            else:
                print(f"Frame {printable(os.path.basename(path))}: {r['fired']} of {r['tiles']} tiles marked -> "
                      f"{r['image']}")
        return 1 if failed else 0


main = Scan().main
