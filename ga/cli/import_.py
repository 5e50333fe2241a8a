"""`ga import H5 --out RUN`: the Georgia study's whole-model .h5 as a ga run folder."""

from __future__ import annotations

import argparse

from ga.cli._base import Command, Parser


class Import(Command):
    name = "import"
    description = ("The Georgia study's GAweights_<timestamp>.h5 -> a ga run folder (labels.json, .keras, .h5, "
                   "parity-checked ONNX)")

    def add_arguments(self, p: Parser) -> None:
        p.add_argument("h5", help="the study's whole-model .h5 file")
        p.add_argument("--out", required=True, help="the run folder to create, e.g. deliverables/GA_study_import")
        p.add_argument("--input-size", type=int, default=224, help="model input side in pixels; default: %(default)s")
        p.add_argument("--threshold", type=float, default=0.5, help="decision threshold for pg; default: %(default)s")

    def run(self, args: argparse.Namespace) -> int:
        from ga.georgia import import_study_h5

        print(import_study_h5(args.h5, args.out, args.input_size, args.threshold))
        return 0


main = Import().main
