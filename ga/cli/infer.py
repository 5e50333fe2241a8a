"""`ga infer` (inference.py, ga-infer): label images with a trained model.

inference.py's combined flags are the other model commands: FOLDER --evaluate is
`ga evaluate`, --evaluate --compare B is `ga compare`, --review is `ga review`, --scan is
`ga scan` (`Infer.run` hands over to them, here and nowhere else).
"""

from __future__ import annotations

import argparse
import logging

from ga.cli import _options
from ga.cli._base import ModelCommand, Parser, print_error, progress_flag
from ga.errors import GAError

log = logging.getLogger(__name__)


class Infer(ModelCommand):
    name, script = "infer", "inference.py"
    description = "Label every image in a folder (or single images) with a trained model, in batches."

    def add_arguments(self, p: Parser) -> None:
        p.add_argument("inputs", nargs="+", metavar="PATH", help="folders and/or image files")
        _options.add(p, *_options.MODEL, "recursive")
        p.add_argument("--output", metavar="FILE", help="write results to a .csv or .json file")
        p.add_argument("--print-format", choices=["ga", "study"], default="ga",
                       help="ga: 'File X prediction pg confidence 0.9871' (probability of the predicted class); "
                            "study: the Georgia study's 'File X prediction: PG with confidence 98.71%%' (probability "
                            "of the positive class, binary models); default: %(default)s")
        p.add_argument("--cluster", type=int, nargs="?", const=4, metavar="K",
                       help="k-means with K clusters (4 when K is left out) on backbone features: clusters.png and "
                            "clusters.csv")
        p.add_argument("--cluster-features", choices=["pooled", "map"], default="pooled",
                       help="pooled: the globally pooled feature vector; map: the last feature map flattened (the "
                            "study's); default: %(default)s")
        p.add_argument("--cluster-space", choices=["full", "pca2"], default="full",
                       help="full: k-means on the features, PCA for the figure only; pca2: PCA to 2-D, then k-means "
                            "(the study's); default: %(default)s")
        p.add_argument("--explain", action="store_true",
                       help="also write a Grad-CAM heat map per image (<name>_gradcam.png) into --out-dir: where the "
                            "model looked for the class it named (multi-label: one panel per class); needs the Keras "
                            "model")
        _options.add(p, "out_dir")
        p.add_argument("--evaluate", action="store_true",
                       help="PATH is a labelled folder (class subfolders, or a labels.csv): write the reports a run "
                            "writes for its test split into --out-dir and print accuracy and F1")
        p.add_argument("--compare", metavar="MODEL_B",
                       help="with --evaluate: compare --model (A) with this model (B) on the folder's images: paired "
                            "differences in accuracy and macro F1 with intervals, McNemar's exact test, and the "
                            "images they decide differently (compare.json, compare.csv in --out-dir); one line "
                            "printed")
        p.add_argument("--scan", action="store_true", help="tile whole frames and mark tiles where a class fires")
        p.add_argument("--review", action="store_true",
                       help="PATH is a labelled folder or a split folder: rank every image by its loss under its "
                            "label, flag likely mislabels and near-duplicates across classes; review.html, "
                            "review.csv and a corrected labels.csv in --out-dir (ga review has the options); no "
                            "image is touched")
        _options.add(p, *_options.SCAN)

    def check(self, parser: Parser, args: argparse.Namespace) -> None:
        _options.check_numbers(parser, args)
        _options.check_scan(parser, args)
        if args.cluster is not None and args.cluster < 1:
            parser.error("--cluster must be at least 1")
        if args.evaluate and (len(args.inputs) != 1 or args.scan or args.cluster is not None):
            parser.error("--evaluate takes one labelled folder, without --scan or --cluster")
        if args.review and (len(args.inputs) != 1 or args.scan or args.evaluate or args.cluster is not None):
            parser.error("--review takes one labelled or split folder, without --scan, --evaluate or --cluster")
        if args.compare and not args.evaluate:
            parser.error("--compare needs --evaluate and one labelled folder")

    def flags_for(self, args: argparse.Namespace) -> dict[str, str]:
        return {"folder": "--review"} if args.review else {}

    def run(self, args: argparse.Namespace) -> int:
        """Label the inputs, or hand over to the command a combined flag names; 0 when every
        file was used, 1 otherwise."""
        from ga.cli.compare import Compare
        from ga.cli.evaluate import Evaluate
        from ga.cli.review import Review
        from ga.cli.scan import Scan

        for flag, command in (("review", Review), ("compare", Compare), ("evaluate", Evaluate), ("scan", Scan)):
            if getattr(args, flag):
                cmd = command()  # its own defaults for what inference.py does not offer (ga review --top ...)
                return cmd.run(argparse.Namespace(**{**_options.defaults_of(cmd.parser()), **vars(args)}))
        return self.label(args)

    def label(self, args: argparse.Namespace) -> int:
        from ga.clustering import cluster
        from ga.inputs import input_files
        from ga.predict import predict_files, result_lines, write_table
        from ga.task_text import text_of

        files = input_files(args.inputs, args.recursive)
        model = self.load(args)
        if args.print_format == "study" and not text_of(model.labels).study_line:
            raise GAError("--print-format study is the binary study's line; this model is " + model.labels["task"])
        pred = predict_files(model, files, args.batch_size, args.max_pixels, args.threshold,
                             progress=progress_flag(args),
                             features=args.cluster_features if args.cluster is not None else False)
        lines = result_lines(pred, args.print_format)
        for r in pred.errors:
            print_error(r.path, r.error)
        if lines:
            print("\n".join(lines))
        if args.output:
            write_table(pred, args.output)
            log.info("results written to %s", args.output)
        if args.cluster is not None:
            png, table = cluster(pred, args.cluster, args.out_dir or "inference_out", args.cluster_space)
            log.info("clusters: %s, %s", png, table)
        if args.explain:
            _explain(args, model, pred)
        n_err = len(pred.errors)
        log.info("%d image(s) labelled, %d skipped", len(pred.results) - n_err, n_err)
        return 1 if n_err else 0


def _explain(args, model, pred):
    """--explain: a Grad-CAM figure per labelled image, in batches."""
    from ga.explain import explain_files

    out_dir = args.out_dir or "inference_out"
    done = explain_files(model, [r.path for r in pred.results if not r.error], out_dir, pred.thresholds,
                         batch_size=args.batch_size, max_pixels=args.max_pixels, unsafe=args.unsafe)
    log.info("Grad-CAM heat maps of %d image(s) in %s", done, out_dir)


main = Infer().main
