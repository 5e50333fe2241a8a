"""The command line: every parser, every printed line and every exit status of `ga`.

`ga split | train | infer | evaluate | compare | scan | monitor | synth | import | report` (also `python -m ga`);
split_data.py, main.py, inference.py, ga-split, ga-train, ga-infer and `python -m
ga.synthetic | ga.georgia | ga.report` are the same commands under their older names.

Each `*_main(argv)` parses, configures logging, calls one `ga` function and returns the
exit status: 0 success, 1 finished with skipped inputs, 2 usage or configuration error
(one line on stderr, no traceback). Library errors name the Python argument they are about
(`ga.errors`); `_run` prints them with this command's flag instead.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import logging
import os
import shlex
import sys
from typing import NoReturn, Sequence

from ga.errors import ConfigError, GAError, printable

log = logging.getLogger(__name__)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (usage is one `--help` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _prog(script):
    """The program name for usage lines: the installed command (ga-train ...) when run as
    one, else the script."""
    name = os.path.basename(sys.argv[0] or "")
    return name if name.startswith("ga-") else script


def _common(parser):
    g = parser.add_argument_group("output")
    g.add_argument("-v", "--verbose", action="store_true", help="show debug messages")
    g.add_argument("-q", "--quiet", action="store_true", help="show warnings and errors only")


def _config_args(parser, default=None):
    parser.add_argument(
        "--config",
        default=default,
        metavar="YAML",
        help="configuration file, or the name of a shipped config (main.py --list-configs); "
        "default: %(default)s",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, typed by its field, e.g. --set training.epochs=3 "
        "(repeatable; wins over the file)",
    )


# The flag each library argument is given by (`GAError.arg`, `ga.errors.opt`).
FLAGS = {"model": "--model", "engine": "--engine", "threshold": "--threshold", "cluster": "--cluster",
         "scan": "--scan", "rule": "--rule", "folder": "--evaluate", "recursive": "--recursive", "unsafe": "--unsafe",
         "overwrite": "--overwrite", "dest": "--dest", "ratios": "--ratios", "resume": "--resume", "compare": "--compare", "cv": "--cv", "folds": "--folds",
         "lr_find": "--lr-find", "lr_steps": "--lr-steps", "lr_range": "--lr-range",
         "overrides": "--set", "out": "--out", "show_detection": "--show-detection", "train": "`python main.py --config configs/demo.yaml`"}


def _run(fn, args, flags=None, also=()):
    """Call `fn(args)` and return its exit status; a GAError (or one of `also`, the
    exceptions a command's library raises for bad input) is one line on stderr and status 2,
    its arguments named by their flags (`flags` adds to FLAGS)."""
    import ga
    from ga.log import setup_logging

    ga.lean_keras()  # no command uses Keras's pandas, scikit-learn or pyplot integrations
    setup_logging(verbose=getattr(args, "verbose", False), quiet=getattr(args, "quiet", False))
    try:
        return fn(args)
    except GAError as exc:
        print(f"error: {exc.render({**FLAGS, **(flags or {})})}", file=sys.stderr)
        return exc.exit_code
    except also as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------------------- split_data.py


def split_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = _Parser(
        prog=prog or _prog("split_data.py"),
        description="Split a folder of class folders (or images + labels.csv) into train/valid/test "
        "without touching the source, keeping rotated/flipped copies of one crop in one split.",
    )
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
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _config_args(p)
    _common(p)
    return p


def split_main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    args = split_parser(prog).parse_args(argv)
    return _run(_splitting, args)


def _splitting(args):
    from ga.config import load_config
    from ga.splitting import split_dataset

    cfg = load_config(args.config, args.overrides)
    s = cfg.split
    result = split_dataset(
        source=args.source or s.source,
        dest=args.dest or cfg.data.split_root,
        ratios=list(args.ratios) if args.ratios else s.ratios,
        seed=s.seed if args.seed is None else args.seed,
        mode=args.mode or s.mode,
        order=args.order or s.order,
        dry_run=args.dry_run,
        overwrite=args.overwrite,
        tolerance=s.group_tolerance,
        progress=not args.no_progress,
        class_names=cfg.data.class_names,
        folds=args.folds,
    )
    _print_split(result)
    return result.exit_code


def _print_split(result):
    """The split's unused files on stderr, then its table (or why nothing was done)."""
    from ga.splitting import SPLITS, safe_name

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
    bad = {}
    for f in result.unused:
        bad[f.status] = bad.get(f.status, 0) + 1
    lines.append("not used: " + (", ".join(f"{k} {v}" for k, v in sorted(bad.items())) or "none")
                 + f"; byte-identical duplicates kept with their group: {result.duplicates}")
    print("\n".join(lines))


# ---------------------------------------------------------------------------- main.py


def train_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = _Parser(
        prog=prog or _prog("main.py"),
        description="Train a classifier from a configuration and write a run folder under deliverables/ "
        "(weights .h5/.keras/.onnx, labels.json, report, figures, history).",
    )
    _config_args(p, default="configs/resnet101.yaml")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue an interrupted run from its last completed epoch (uses the run's config.yaml)")
    p.add_argument("--name", help="suffix of the run folder name (output.name)")
    p.add_argument("--cv", action="store_true",
                   help="cross-validation: one run per fold of the split's folds (split_data.py --folds K) inside "
                        "one <prefix>_<time>_cv folder, then the summary across folds; --resume that folder to "
                        "continue an interrupted one")
    p.add_argument("--no-preview", action="store_true",
                   help="do not write <prefix>train_batch.png (one augmented training batch; output.preview)")
    p.add_argument("--lr-find", action="store_true",
                   help="learning-rate range test instead of training: the rate rises exponentially over "
                        "--lr-steps batches of the config's data and model until the loss diverges; writes "
                        "lr_find.png and lr_find.csv to a <prefix>_<time>_lr_find folder and prints the suggested "
                        "rate with the --set line that uses it")
    p.add_argument("--lr-steps", type=int, default=100, metavar="N", help="with --lr-find: batches (default 100)")
    p.add_argument("--lr-range", type=float, nargs=2, default=[1e-7, 10.0], metavar=("LOW", "HIGH"),
                   help="with --lr-find: the rates swept (default 1e-7 10)")
    p.add_argument("--device", choices=["auto", "cpu"], default="auto",
                   help="cpu hides every GPU from TensorFlow before it starts; default: auto")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved configuration (after extends: and --set) as YAML and exit")
    p.add_argument("--list-configs", action="store_true", help="list the shipped configs and exit")
    # Accepted for scripts written against earlier versions; resuming rebuilds the model from
    # the run's config.yaml and restores weights, so it never loads saved code.
    p.add_argument("--unsafe", action="store_true", help=argparse.SUPPRESS)
    _common(p)
    return p


def train_main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    args = train_parser(prog).parse_args(argv)
    return _run(_training, args)


def _training(args):
    from ga.config import describe_shipped_configs, dump_config, load_config

    overrides = list(args.overrides)
    if args.name:
        overrides.append(f"output.name={args.name}")
    if args.no_preview:
        overrides.append("output.preview=false")
    if args.list_configs:
        print("\n".join(describe_shipped_configs()))
        return 0
    if args.print_config:
        print(dump_config(load_config(args.config, overrides)), end="")
        return 0
    import ga

    ga.register()
    from ga.crossval import cross_validate, is_cv_folder
    from ga.trainer import train

    if args.lr_find:
        return _lr_finding(args, overrides)
    if args.resume and is_cv_folder(args.resume):
        run_dir = cross_validate(None, resume=args.resume, overrides=overrides, device=args.device)
    elif args.cv:
        if args.resume:
            raise ConfigError(f"{args.resume} is not a cross-validation folder (no cv.json)", arg="resume")
        run_dir = cross_validate(args.config, overrides=overrides, device=args.device)
    elif args.resume:
        run_dir = train(None, resume=args.resume, overrides=overrides, device=args.device)
    else:
        run_dir = train(load_config(args.config, overrides), device=args.device)
    if run_dir is not None:  # None: a non-chief worker of a multi-worker run (the chief prints it)
        print(run_dir)
    return 0


def _lr_finding(args, overrides):
    from ga.config import load_config
    from ga.lrfind import find_learning_rate

    if args.resume or args.cv:
        raise ConfigError("--lr-find trains nothing: it takes neither --resume nor --cv", arg="lr_find")
    r = find_learning_rate(load_config(args.config, overrides), steps=args.lr_steps, low=args.lr_range[0],
                           high=args.lr_range[1], progress=sys.stderr.isatty(), device=args.device)
    print(f"learning-rate range test: {len(r.rates)} steps from {r.rates[0]:.3g} to {r.rates[-1]:.3g} "
          f"({r.stopped}); lowest smoothed loss at {r.minimum:.3g}, steepest fall at {r.steepest:.3g}")
    print(f"suggested learning rate: {r.suggested:.3g}")
    config = args.config if args.config else "configs/resnet101.yaml"
    sets = "".join(f" --set {shlex.quote(o)}" for o in overrides if not o.startswith("training.learning_rate="))
    print(f"  python main.py --config {shlex.quote(config)}{sets} --set training.learning_rate={r.suggested:.3g}")
    print(r.folder)
    return 0


# ---------------------------------------------------------------------------- inference.py


def _model_args(p):
    """The options of every command that loads a trained model."""
    p.add_argument("--model", help="run folder, .onnx, .keras or .h5 (with labels.json beside it); "
                   "default: the newest complete run under deliverables/")
    p.add_argument("--runs-root", default="deliverables", help="where to look for the newest run; default: %(default)s")
    p.add_argument("--engine", choices=["onnx", "onnx-int8", "keras"], default=None,
                   help="onnx (float32), onnx-int8 (the run's INT8 model) or keras; default: onnx-int8 when the run "
                        "has it and the CPU has INT8 units (VNNI, AMX), else onnx when there is one")
    p.add_argument("--batch-size", type=int, default=64, help="images per prediction call; default: %(default)s")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: all cores)")
    p.add_argument("--threshold", type=float, help="decision threshold; default: the model's labels.json")
    p.add_argument("--max-pixels", type=int, default=100_000_000,
                   help="refuse images with more pixels than this (decompression bombs); default: %(default)s")
    p.add_argument("--unsafe", action="store_true", help="allow Keras models that hold arbitrary code (Lambda layers)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _out_dir_arg(p):
    p.add_argument("--out-dir", default=None, help="folder for cluster, evaluation, explanation and scan outputs; "
                   "default: inference_out/")


def _label_args(p):
    """inference.py's (and `ga infer`'s) own options: outputs, clusters, explanations."""
    p.add_argument("--recursive", action="store_true", help="also read subfolders")
    p.add_argument("--output", metavar="FILE", help="write results to a .csv or .json file")
    p.add_argument("--print-format", choices=["ga", "study"], default="ga",
                   help="ga: 'File X prediction pg confidence 0.9871' (probability of the predicted class); study: the "
                        "Georgia study's 'File X prediction: PG with confidence 98.71%%' (probability of the positive "
                        "class, binary models); default: %(default)s")
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
                        "model looked for the class it named (multi-label: one panel per class); needs the Keras model")


def _scan_args(p):
    p.add_argument("--tile", type=int, nargs="+", default=[300], metavar=("W", "H"),
                   help="tile width and height in pixels for --scan (one number: square); default: 300")
    p.add_argument("--overlap", type=int, default=None,
                   help="least overlap of neighbouring tiles in pixels for --scan (objects up to this size always "
                   "lie wholly in some tile); 0: the fewest tiles; default: a fifth of the tile's smaller side")
    p.add_argument("--rule", choices=["classes", "any"], default="classes",
                   help="--scan marks a tile when: classes: a class passes its threshold (multi-label: any but "
                        "'any'; binary: the positive class); any: the last output ('any', or a binary model's "
                        "one output) is above --threshold (default 0.5), the graphene study's rule; "
                        "default: %(default)s")


def inference_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = _Parser(
        prog=prog or _prog("inference.py"),
        description="Label every image in a folder (or single images) with a trained model, in batches.",
    )
    p.add_argument("inputs", nargs="+", metavar="PATH", help="folders and/or image files")
    _model_args(p)
    _label_args(p)
    _out_dir_arg(p)
    p.add_argument("--evaluate", action="store_true",
                   help="PATH is a labelled folder (class subfolders, or a labels.csv): write the reports a run "
                        "writes for its test split into --out-dir and print accuracy and F1")
    p.add_argument("--compare", metavar="MODEL_B",
                   help="with --evaluate: compare --model (A) with this model (B) on the folder's images: paired "
                        "differences in accuracy and macro F1 with intervals, McNemar's exact test, and the images "
                        "they decide differently (compare.json, compare.csv in --out-dir); one line printed")
    p.add_argument("--scan", action="store_true", help="tile whole frames and mark tiles where a class fires")
    p.add_argument("--review", action="store_true",
                   help="PATH is a labelled folder or a split folder: rank every image by its loss under its label, "
                        "flag likely mislabels and near-duplicates across classes; review.html, review.csv and a "
                        "corrected labels.csv in --out-dir (ga review has the options); no image is touched")
    _scan_args(p)
    _common(p)
    return p


def _load_model(args, which="model"):
    """The model named by `args.<which>` with the shared model options: the one place the
    commands load a model."""
    from ga.predict import load_model

    return load_model(getattr(args, which), args.engine, args.runs_root, args.threads, args.unsafe)


def _check_numbers(parser, args):
    """--batch-size and --threshold, where a command has them (the same rule everywhere)."""
    if getattr(args, "batch_size", None) is not None and args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if getattr(args, "threshold", None) is not None and not 0 < args.threshold < 1:
        parser.error("--threshold must be between 0 and 1")


def _check_inference(parser, args):
    """The rules between inference options that argparse cannot say."""
    _check_numbers(parser, args)
    if len(args.tile) > 2 or min(args.tile) < 1:
        parser.error("--tile takes a width and an optional height, each at least 1")
    if args.overlap is not None and not 0 <= args.overlap < min(args.tile):
        parser.error("--overlap must be at least 0 and less than the tile's smaller side")
    if args.cluster is not None and args.cluster < 1:
        parser.error("--cluster must be at least 1")
    if args.evaluate and (len(args.inputs) != 1 or args.scan or args.cluster is not None):
        parser.error("--evaluate takes one labelled folder, without --scan or --cluster")
    if args.review and (len(args.inputs) != 1 or args.scan or args.evaluate or args.cluster is not None):
        parser.error("--review takes one labelled or split folder, without --scan, --evaluate or --cluster")
    if args.compare and not args.evaluate:
        parser.error("--compare needs --evaluate and one labelled folder")


def inference_main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = inference_parser(prog)
    args = parser.parse_args(argv)
    _check_inference(parser, args)
    return _run(_inference, args, {"folder": "--review"} if args.review else None)


# Defaults of inference.py's options that `ga evaluate` and `ga scan` do not offer.
_INFER_DEFAULTS = {"recursive": False, "output": None, "print_format": "ga", "cluster": None,
                   "cluster_features": "pooled", "cluster_space": "full", "explain": False, "evaluate": False,
                   "scan": False, "tile": [300], "overlap": None, "rule": "classes", "compare": None, "review": False,
                   "top": 48, "gradcam": 16, "min_confidence": 0.9}


def evaluate_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = _Parser(prog=prog or "ga evaluate",
                description="Evaluate a model on a labelled folder (class subfolders, or a labels.csv): the reports a "
                            "run writes for its test split, into --out-dir; accuracy and F1 printed.")
    p.add_argument("inputs", nargs=1, metavar="FOLDER", help="the labelled folder")
    _model_args(p)
    _out_dir_arg(p)
    _common(p)
    p.set_defaults(**{**_INFER_DEFAULTS, "evaluate": True})
    return p


def evaluate_main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """`ga evaluate FOLDER`: inference.py FOLDER --evaluate."""
    parser = evaluate_parser(prog)
    args = parser.parse_args(argv)
    _check_inference(parser, args)
    return _run(_inference, args, {"folder": "evaluate"})


def scan_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = _Parser(prog=prog or "ga scan",
                description="Tile whole frames and mark the tiles where a class fires: <stem>_scan.jpg, "
                            "<stem>_tiles.csv and the marked tiles in --out-dir.")
    p.add_argument("inputs", nargs="+", metavar="FRAME", help="frames and/or folders of frames")
    p.add_argument("--recursive", action="store_true", help="also read subfolders")
    _model_args(p)
    _out_dir_arg(p)
    _scan_args(p)
    _common(p)
    p.set_defaults(**{**{k: v for k, v in _INFER_DEFAULTS.items() if k not in ("tile", "overlap", "rule", "recursive")},
                      "scan": True})
    return p


def scan_main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """`ga scan FRAME...`: inference.py FRAME --scan."""
    parser = scan_parser(prog)
    args = parser.parse_args(argv)
    _check_inference(parser, args)
    return _run(_inference, args, {"scan": "scan"})


def _inference(args):
    """Label the inputs (or scan them with --scan); 0 when every file was used, 1 otherwise."""
    import ga

    ga.register()
    from ga.tasks import get_task
    from ga.predict import (
        cluster,
        input_files,
        predict_files,
        result_lines,
        write_table,
    )

    if args.review:
        return _reviewing(args)
    if args.evaluate and args.compare:
        return _comparison(args)
    if args.evaluate:
        return _evaluation(args)
    files = input_files(args.inputs, args.recursive)
    model = _load_model(args)
    if args.print_format == "study" and not get_task(model.labels).study_line:
        raise GAError("--print-format study is the binary study's line; this model is " + model.labels["task"])
    if args.scan:
        return _scan(args, model, files)
    pred = predict_files(model, files, args.batch_size, args.max_pixels, args.threshold,
                         progress=None if not args.no_progress else False,
                         features=args.cluster_features if args.cluster is not None else False)
    lines = result_lines(pred, args.print_format)
    _print_errors(pred)
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
    """inference.py --explain: a Grad-CAM figure per labelled image, in batches."""
    import numpy as np

    from ga.explain import explain_images
    from ga.images import output_stems
    from ga.predict import read_image

    keras_model = model.keras(args.unsafe)
    out_dir = args.out_dir or "inference_out"
    done = [r.path for r in pred.results if not r.error]
    stems = output_stems(done)  # a/x.png and b/x.png (--recursive): a/x_gradcam.png and b/x_gradcam.png
    for start in range(0, len(done), args.batch_size):
        chunk = done[start:start + args.batch_size]
        images = np.stack([read_image(p, model.labels, args.max_pixels) for p in chunk]).astype(np.float32)
        explain_images(keras_model, model.labels, images, chunk, out_dir, pred.thresholds, [stems[p] for p in chunk])
    log.info("Grad-CAM heat maps of %d image(s) in %s", len(done), out_dir)


def _evaluation(args):
    """inference.py FOLDER --evaluate: reports into --out-dir; accuracy and F1 printed."""
    from ga.analysis import test_summary
    from ga.predict import evaluate_folder, run_prefix

    model = _load_model(args)
    out_dir = args.out_dir or "inference_out"
    m, pred = evaluate_folder(model, args.inputs[0], out_dir, run_prefix(model.source), args.threshold,
                              batch_size=args.batch_size, max_pixels=args.max_pixels,
                              progress=None if not args.no_progress else False)
    _print_errors(pred)
    print(f"{m['test_images']} images: {test_summary(m)}; reports in {out_dir}")
    return 1 if pred.errors else 0


def _comparison(args):
    """inference.py FOLDER --evaluate --model A --compare B (and `ga compare A B FOLDER`)."""
    from ga.comparison import compare_models, summary_line

    a = _load_model(args)
    try:
        b = _load_model(args, "compare")
    except GAError as exc:
        raise GAError(exc.message, arg="compare") from None
    out_dir = args.out_dir or "inference_out"
    doc = compare_models(a, b, args.inputs[0], out_dir, batch_size=args.batch_size, max_pixels=args.max_pixels,
                         progress=None if not args.no_progress else False)
    for r in doc["skipped"]:
        print(f"error: {printable(r['path'])}: {r['reason']}", file=sys.stderr)
    print(summary_line(doc))
    return 1 if doc["skipped"] else 0


def review_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = _Parser(prog=prog or "ga review",
                description="Review the labels of a labelled folder (class folders or a labels.csv) or of a split "
                            "folder's train/valid/test: every image ranked by its loss under its label, likely "
                            "mislabels and near-duplicates across classes flagged; review.html, review.csv and "
                            "labels.csv (the suggestions applied) in --out-dir. No image is moved or changed.")
    p.add_argument("inputs", nargs=1, metavar="FOLDER", help="the labelled folder or split folder")
    _model_args(p)
    p.add_argument("--out-dir", default="review", help="where the review is written (default review)")
    p.add_argument("--top", type=int, default=48, metavar="N", help="images shown in review.html (default 48)")
    p.add_argument("--gradcam", type=int, default=16, metavar="N",
                   help="Grad-CAM (behind a click) for the first N of them (default 16; 0: none)")
    p.add_argument("--min-confidence", type=float, default=0.9, metavar="P",
                   help="a disagreement is a likely mislabel when the model names its class with at least this "
                        "probability (default 0.9)")
    _common(p)
    p.set_defaults(**{**{k: v for k, v in _INFER_DEFAULTS.items() if k not in ("top", "gradcam", "min_confidence")},
                      "review": True})
    return p


def review_main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """`ga review FOLDER --model RUN`: inference.py FOLDER --review."""
    parser = review_parser(prog)
    args = parser.parse_args(argv)
    if args.top < 1 or args.gradcam < 0:
        parser.error("--top must be at least 1 and --gradcam at least 0")
    _check_inference(parser, args)
    return _run(_inference, args, {"folder": "review", "min_confidence": "--min-confidence"})


def _reviewing(args):
    from ga.curation import review_folder

    model = _load_model(args)
    # inference.py --review has ga review's defaults
    top, gradcam, min_conf = (getattr(args, k, _INFER_DEFAULTS[k]) for k in ("top", "gradcam", "min_confidence"))
    r = review_folder(model, args.inputs[0], args.out_dir or "review", top=top, gradcam=gradcam,
                      min_confidence=min_conf, progress=None if not args.no_progress else False)
    _print_errors_rows(r.errors)
    mis = [x for x in r.rows if "mislabel" in x["flags"]]
    dup = [x for x in r.rows if "near-duplicate" in x["flags"]]
    print(f"{len(r.rows)} images reviewed: {len(mis)} likely mislabel(s), {len(dup)} near-duplicate(s) across "
          f"classes, {len(r.errors)} unreadable")
    for x in mis[:10]:
        print(f"  #{x['rank']} {printable(x['path'])}: labelled {x['label']}, the model says {x['predicted']} "
              f"({x['confidence']:.3f})")
    print(f"review: {os.path.join(args.out_dir or 'review', 'review.html')}")
    return 1 if r.errors else 0


def _print_errors_rows(rows):
    for r in rows:
        print(f"error: {printable(r['path'])}: {r['error']}", file=sys.stderr)


def compare_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = _Parser(prog=prog or "ga compare",
                description="Compare two models on the same labelled folder: paired differences in accuracy and "
                            "macro F1 with bootstrap intervals, McNemar's exact test, and the images they decide "
                            "differently (compare.json and compare.csv in --out-dir).")
    p.add_argument("model_a", metavar="A", help="run folder or model file of model A")
    p.add_argument("model_b", metavar="B", help="run folder or model file of model B")
    p.add_argument("inputs", nargs=1, metavar="FOLDER", help="the labelled folder")
    p.add_argument("--engine", choices=["onnx", "onnx-int8", "keras"], default=None,
                   help="the engine of both models; default: as inference.py chooses")
    p.add_argument("--batch-size", type=int, default=64, help="images per prediction call; default: %(default)s")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: all cores)")
    p.add_argument("--max-pixels", type=int, default=100_000_000, help="refuse images with more pixels than this")
    p.add_argument("--unsafe", action="store_true", help="allow Keras models that hold arbitrary code (Lambda layers)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _out_dir_arg(p)
    _common(p)
    p.set_defaults(runs_root="deliverables", threshold=None)
    return p


def compare_main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """`ga compare A B FOLDER`: inference.py FOLDER --evaluate --model A --compare B."""
    args = compare_parser(prog).parse_args(argv)
    args.model, args.compare = args.model_a, args.model_b
    _check_numbers(compare_parser(prog), args)
    return _run(_comparison, args, {"model": "A", "compare": "B", "folder": "FOLDER"})


def _print_errors(pred):
    """One line on stderr per file that could not be used."""
    for r in pred.errors:
        print(f"error: {printable(r.path)}: {r.error}", file=sys.stderr)


def _scan(args, model, files):
    """inference.py --scan: a line per frame; exit 1 if some frames could not be read."""
    from ga.scan import scan_frames

    failed = 0
    for path, r in scan_frames(model, files, tuple(args.tile), args.out_dir or "inference_out",
                               batch_size=args.batch_size, threshold=args.threshold, max_pixels=args.max_pixels,
                               overlap=args.overlap, rule=args.rule):
        if isinstance(r, str):
            print(f"error: {printable(path)}: {r}", file=sys.stderr)
            failed += 1
        else:
            print(f"Frame {printable(os.path.basename(path))}: {r['fired']} of {r['tiles']} tiles marked -> {r['image']}")
    return 1 if failed else 0


# ---------------------------------------------------------------------------- synth, import, report


def synth_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from ga import synthetic

    p = _Parser(prog=prog or "ga synth", description=synthetic.__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="kind", required=True)
    c = sub.add_parser("crystals", help="CEX vs PG crops in the Kaggle layout")
    c.add_argument("--out", default="data/archive")
    c.add_argument("--per-class", type=int, default=300)
    c.add_argument("--pg-copies", type=int, default=5, help="rotated/flipped copies per PG crop (1: none)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--classes", default="cex,pg",
                   help="kinds to write, comma-separated, from cex, pg, plate; `name:N` gives one class its own "
                        "count (e.g. cex,pg:80 for a 10:1 imbalance at --per-class 800); default: %(default)s")
    g = sub.add_parser("graphene", help="multi-label flake crops and labels.csv")
    g.add_argument("--out", default="data/graphene")
    g.add_argument("--count", type=int, default=400)
    g.add_argument("--size", type=int, default=400)
    g.add_argument("--seed", type=int, default=0)
    pr = sub.add_parser("process", help="frames of a simulated crystallization over time, with the truth beside them")
    pr.add_argument("--out", default="data/process")
    pr.add_argument("--frames", type=int, default=120)
    pr.add_argument("--interval", type=float, default=2.0, help="seconds between frames; default: %(default)s")
    pr.add_argument("--width", type=int, default=1024)
    pr.add_argument("--height", type=int, default=768)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--scale", type=float, default=1.0,
                    help="resize every frame by this factor (another camera's pixel size); default: %(default)s")
    pr.add_argument("--polarity", choices=("bright", "dark"), default="bright",
                    help="bright particles on dark (default) or dark on light (bright-field)")
    w = sub.add_parser("wafer", help="one whole frame with labelled flakes and their boxes")
    w.add_argument("--out", default="data/wafer.png")
    w.add_argument("--width", type=int, default=4908)
    w.add_argument("--height", type=int, default=3264)
    w.add_argument("--seed", type=int, default=0)
    return p


def synth_main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """`ga synth crystals|graphene|wafer` (python -m ga.synthetic): the folders or files written."""
    args = synth_parser(prog).parse_args(argv)
    return _run(_synthesising, args, also=(ValueError, OSError))


def _synthesising(args):
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


def import_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = _Parser(prog=prog or "ga import",
                description="The Georgia study's GAweights_<timestamp>.h5 -> a ga run folder (labels.json, .keras, "
                            ".h5, parity-checked ONNX)")
    p.add_argument("h5", help="the study's whole-model .h5 file")
    p.add_argument("--out", required=True, help="the run folder to create, e.g. deliverables/GA_study_import")
    p.add_argument("--input-size", type=int, default=224, help="model input side in pixels; default: %(default)s")
    p.add_argument("--threshold", type=float, default=0.5, help="decision threshold for pg; default: %(default)s")
    _common(p)
    return p


def import_main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """`ga import H5 --out RUN` (python -m ga.georgia import): the run folder written."""
    args = import_parser(prog).parse_args(argv)
    return _run(_importing, args)


def _importing(args):
    from ga.georgia import import_study_h5

    print(import_study_h5(args.h5, args.out, args.input_size, args.threshold))
    return 0


def report_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = _Parser(prog=prog or "ga report", description="(Re)build a complete run folder's report.html")
    p.add_argument("run", help="a run folder (with metrics.json)")
    _common(p)
    return p


def report_main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """`ga report RUN` (python -m ga.report): the page written."""
    args = report_parser(prog).parse_args(argv)
    return _run(_reporting, args)


def _reporting(args):
    from ga.report import write_report

    if not os.path.isfile(os.path.join(args.run, "metrics.json")):
        raise GAError(f"{args.run} is not a finished run folder (no metrics.json)")
    print(write_report(args.run))
    return 0


# ---------------------------------------------------------------------------- runs


def runs_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = _Parser(prog=prog or "ga runs",
                description="List the run folders (name, date, state, task, backbone, delivered epoch, test figures), "
                            "or with --diff A B show what differs between two runs.")
    p.add_argument("root", nargs="?", default="deliverables", help="the folder holding run folders "
                   "(default deliverables)")
    p.add_argument("--csv", action="store_true", help="print the table as CSV")
    p.add_argument("--diff", nargs=2, metavar=("A", "B"),
                   help="two run folders (paths, or names of folders in ROOT): the config keys that differ and the "
                        "test figures of both with B - A")
    _common(p)
    return p


def runs_main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """`ga runs [ROOT] [--csv] [--diff A B]`."""
    args = runs_parser(prog).parse_args(argv)
    return _run(_runs, args)


def _runs(args):
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
        return 0
    if not rows:
        print(f"no run folders in {args.root}")
        return 0
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


# ---------------------------------------------------------------------------- monitor


def monitor_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = _Parser(prog=prog or "ga monitor",
                description="Find the particles in every frame (a folder of images, a TIFF stack, a video), classify "
                            "each with a trained model and write particles.csv, frames.csv (counts, class fractions "
                            "with intervals, d10/d50/d90), trend figures and monitor.html; --watch keeps taking new "
                            "frames as they arrive.")
    p.add_argument("inputs", nargs="*", metavar="PATH", help="a folder of frames, TIFF stacks or videos (--watch: one "
                   "folder)")
    _model_args(p)
    for action in p._actions:  # given or not is told apart: a config's monitor.batch_size is the default
        if action.dest == "batch_size":
            action.default, action.help = None, "particle crops per prediction call; default: monitor.batch_size (64)"
    p.add_argument("--out-dir", default="monitor_out",
                   help="the monitor folder (resumed when it holds earlier frames of the same inputs); "
                        "default: %(default)s")
    p.add_argument("--watch", action="store_true", help="keep polling the folder for new frames until interrupted")
    p.add_argument("--idle-exit", type=float, metavar="SECONDS",
                   help="with --watch: stop after this many seconds without a new frame")
    p.add_argument("--alert", action="append", default=[], metavar="RULE",
                   help='an alert rule on frames.csv\'s columns, e.g. "pg_fraction > 0.10 over 5 frames" '
                        "(repeatable; see the README)")
    p.add_argument("--on-alert", metavar="CMD",
                   help="a shell command run on each alert, given GA_ALERT_RULE, GA_ALERT_VALUE, GA_ALERT_FRAME, "
                        "GA_ALERT_TIME, GA_ALERT_COLUMN, GA_ALERT_THRESHOLD and GA_MONITOR_DIR")
    p.add_argument("--show-detection", metavar="FRAME",
                   help="draw the detected outlines over one frame (<out-dir>/<name>_detection.png) and exit; "
                        "no model needed: for tuning monitor.*")
    p.add_argument("--calibrate", action="store_true",
                   help="choose the detection settings from a sample of the frames and write <out-dir>/monitor.yaml "
                        "(use it with --config), calibration.json and calibration.png; no model needed")
    p.add_argument("--calibrate-frames", type=int, default=20, metavar="N",
                   help="frames sampled by --calibrate, spread over the run; default: %(default)s")
    p.add_argument("--save-crops", metavar="DIR",
                   help="write every kept particle's crop (the window the model sees) to DIR with crops.csv, for "
                        "labelling; no model needed")
    p.add_argument("--cluster", type=int, metavar="K",
                   help="with --save-crops: group the crops into DIR/cluster_<k>/ by k-means on simple image "
                        "features, or with --model on the model's backbone features")
    p.add_argument("--truth", metavar="FILE",
                   help="score the detection against annotated frames (COCO JSON, or a CSV of frame,count) and write "
                        "<out-dir>/detection_scores.csv; no model needed")
    _config_args(p)
    _common(p)
    return p


def note_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = _Parser(prog=prog or "ga monitor note", description="Add an operator's note to a monitor folder: "
                "notes.csv, a dotted line on the trend figure and a row on the page")
    p.add_argument("dir", metavar="DIR", help="the monitor folder (--out-dir of ga monitor)")
    p.add_argument("text", metavar="TEXT", help='the note, e.g. "seeded at 10:32"')
    p.add_argument("--time", metavar="ISO", help="when it happened (e.g. 2026-12-01T10:32:00); default: now")
    _common(p)
    return p


def note_main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """`ga monitor note DIR TEXT [--time ISO]`."""
    parser = note_parser(prog)
    args = parser.parse_args(argv)
    when = None
    if args.time:
        try:
            when = datetime.datetime.fromisoformat(args.time)
        except ValueError:
            parser.error(f"--time takes an ISO time such as 2026-12-01T10:32:00, got {args.time!r}")
    args.when = when
    return _run(_noting, args, {"dir": "DIR", "text": "TEXT"})


def _noting(args):
    import json

    from ga.monitor_report import add_note, write_outputs

    time, text = add_note(args.dir, args.text, args.when)
    state = os.path.join(args.dir, "monitor.json")
    if os.path.isfile(state):  # the figures and page show it now (a running monitor at its next refresh)
        with open(state, encoding="utf-8") as fh:
            write_outputs(args.dir, json.load(fh))
    print(f"{time} {text}")
    return 0


def monitor_main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """`ga monitor FOLDER --model RUN [--watch] [--alert RULE]` (and `ga monitor note DIR TEXT`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["note"]:
        return note_main(argv[1:], prog=f"{prog or 'ga monitor'} note")
    parser = monitor_parser(prog)
    args = parser.parse_args(argv)
    if not args.inputs and not args.show_detection:
        parser.error("give a folder of frames (or --show-detection FRAME)")
    if args.truth and (args.watch or args.show_detection):
        parser.error("--truth goes with frames given at once, without --watch or --show-detection")
    if args.calibrate and (args.watch or args.show_detection or args.truth):
        parser.error("--calibrate goes with frames given at once, without --watch, --show-detection or --truth")
    if args.calibrate_frames < 1:
        parser.error("--calibrate-frames must be at least 1")
    if args.cluster is not None and not args.save_crops:
        parser.error("--cluster goes with --save-crops")
    if args.cluster is not None and args.cluster < 2:
        parser.error("--cluster must be at least 2")
    if args.save_crops and args.model and args.cluster is None:
        parser.error("--model with --save-crops is for --cluster's features: add --cluster K")
    if args.save_crops and (args.watch or args.show_detection or args.truth or args.calibrate):
        parser.error("--save-crops goes with frames given at once, without --watch, --show-detection, --truth or "
                     "--calibrate")
    _check_numbers(parser, args)
    if args.idle_exit is not None and not args.watch:
        parser.error("--idle-exit goes with --watch")
    return _run(_monitoring, args, {"out_dir": "--out-dir", "watch": "--watch", "alert": "--alert",
                                    "inputs": "PATH", "truth": "--truth"})


def _saved_crops(args, cfg):
    """--save-crops [--cluster K [--model RUN]]: the crops written, one line of what."""
    from ga.crops import save_crops

    model = _load_model(args) \
        if args.model and args.cluster else None
    done = save_crops(args.inputs, cfg, args.save_crops, args.cluster, args.max_pixels, not args.no_progress, model)
    for frame, reason in done["skipped"]:
        print(f"skipped {printable(frame)}: {printable(reason)}", file=sys.stderr)
    groups = f" in {len(done['clusters'])} clusters ({', '.join(f'{k}: {n}' for k, n in done['clusters'].items())})" \
        if done["clusters"] else ""
    print(f"{done['crops']} crop(s) of {done['frames']} frame(s){groups}")
    print(os.path.join(args.save_crops, "crops.csv"))
    return 1 if done["skipped"] else 0


def _monitoring(args):
    from ga.config import load_config

    cfg = load_config(args.config, args.overrides).monitor
    if args.batch_size is not None:  # the flag wins over the config, whatever its value
        cfg.batch_size = args.batch_size
    if args.show_detection:
        print(_show_detection(args.show_detection, cfg, args.out_dir, args.max_pixels))
        return 0
    from ga.alerts import parse_rule
    from ga.monitoring import check_inputs, monitor

    check_inputs(args.inputs, args.watch)  # the quick checks first: loading a model takes seconds
    if args.truth:
        return _scored(args, cfg)
    if args.save_crops:
        return _saved_crops(args, cfg)
    if args.calibrate:
        from ga.calibration import calibrate, summary_lines

        doc = calibrate(args.inputs, cfg, args.out_dir, args.calibrate_frames, args.max_pixels)
        for s in doc["skipped"]:
            print(f"skipped frame {printable(s['frame'])}: {printable(s['reason'])}", file=sys.stderr)
        print("\n".join(printable(line) for line in summary_lines(doc)))
        print(os.path.join(args.out_dir, "monitor.yaml"))
        return 1 if doc["skipped"] else 0
    for rule in args.alert:
        parse_rule(rule)
    import ga

    ga.register()
    model = _load_model(args)

    def alert(a):
        print(f"ALERT {printable(a.time or a.frame)}: {printable(a.rule)} (value {a.value:.4g} on frame "
              f"{printable(a.frame)})", file=sys.stderr,
              flush=True)

    def progress(r):
        log.info("%d frame(s) done, %d particle(s), %d skipped, %d alert(s)", r.frames + r.resumed, r.particles,
                 r.skipped, len(r.alerts))

    with _stop_on_signals() as stopping:
        result = monitor(model, args.inputs, args.out_dir, cfg, args.alert, args.on_alert, args.watch,
                         args.idle_exit, args.max_pixels, alert, progress, stop=lambda: bool(stopping),
                         threshold=args.threshold, bar=not args.no_progress)
    print(f"{result.frames} frame(s) monitored ({result.resumed} done before), {result.particles} particle(s), "
          f"{result.skipped} skipped, {len(result.alerts)} alert(s) -> {os.path.join(args.out_dir, 'monitor.html')}")
    return result.exit_code


@contextlib.contextmanager
def _stop_on_signals():
    """Ctrl-C and SIGTERM ask `ga monitor` to stop after the frames in hand: yields the list of
    signals received. The previous handlers come back when the block ends, so a process that
    called the command in-process (a notebook, a test) keeps its own Ctrl-C; off the main
    thread, where Python cannot set handlers, nothing is changed."""
    import signal
    import threading

    stopping: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield stopping
        return

    def stop(signum, _frame):
        stopping.append(signum)
        log.info("stopping after the frames in hand (signal %d)", signum)

    before = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stopping
    finally:
        for sig, handler in before.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python


def _scored(args, cfg):
    """--truth FILE: detection scored against annotations (ga.truth); exit 1 when a frame
    could not be read."""
    from ga.truth import score_detection, summary_line

    result = score_detection(args.inputs, args.truth, cfg, args.out_dir, args.max_pixels,
                             progress=not args.no_progress)
    for s in result["skipped"]:
        print(f"skipped frame {printable(s['frame'])}: {printable(s['reason'])}", file=sys.stderr)
    print(summary_line(result))
    print(os.path.join(args.out_dir, "detection_scores.csv"))
    return 1 if result["skipped"] else 0


def _show_detection(path, cfg, out_dir, max_pixels):
    """--show-detection FRAME: the outlines over the frame; returns the figure's path."""
    from ga.frames import frames_of, read_frame
    from ga.images import ImageProblem
    from ga.monitor_report import draw_detection
    from ga.particles import detect, threshold_of, thresholded

    if not os.path.isfile(path):
        raise GAError(f"not found: {path}", arg="show_detection")
    try:
        frame = next(frames_of(path, cfg.time_sources, cfg.time_pattern))
        pixels = read_frame(frame, max_pixels)
    except ImageProblem as exc:
        raise GAError(f"{path}: {exc}", arg="show_detection") from None
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(path))[0]
    used, image, _ = thresholded(pixels, cfg)
    level = threshold_of(image, used)
    return draw_detection(pixels, detect(pixels, cfg, keep_dropped=True), os.path.join(out_dir, f"{stem}_detection.png"),
                          f"{frame.name} (threshold {level:.1f} grey levels above the background)")


# ---------------------------------------------------------------------------- ga


COMMANDS = {
    "split": (split_main, "split a labelled folder into train/valid/test (split_data.py)"),
    "train": (train_main, "train a model from a configuration (main.py)"),
    "infer": (inference_main, "label images with a trained model (inference.py)"),
    "evaluate": (evaluate_main, "evaluate a model on a labelled folder (inference.py FOLDER --evaluate)"),
    "compare": (compare_main, "compare two models on one labelled folder (inference.py FOLDER --evaluate --compare)"),
    "review": (review_main, "rank a labelled folder's images by loss, flag likely mislabels (inference.py FOLDER --review)"),
    "scan": (scan_main, "tile whole frames and mark where a class fires (inference.py FRAME --scan)"),
    "synth": (synth_main, "write synthetic crystals, graphene crops or a wafer frame"),
    "monitor": (monitor_main, "watch a crystallization: particles in frames over time, classes, sizes, alerts"),
    "import": (import_main, "import the Georgia study's GAweights_*.h5 as a run folder"),
    "report": (report_main, "rebuild a run's report.html"),
    "runs": (runs_main, "list the run folders and their state and test figures; --diff A B compares two"),
}


def usage(prog: str = "ga") -> str:
    """`ga --help`: the commands, one line each."""
    width = max(map(len, COMMANDS))
    return "\n".join([f"usage: {prog} <command> [options]   ({prog} <command> --help)", "", "commands:",
                      *(f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items())])


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """`ga <command> ...` (and `python -m ga <command> ...`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = prog or (os.path.basename(sys.argv[0] or "") if os.path.basename(sys.argv[0] or "") == "ga" else "ga")
    if argv[:1] in (["-h"], ["--help"]):
        print(usage(prog))
        return 0
    if not argv or argv[0] not in COMMANDS:
        print(usage(prog), file=sys.stderr)
        if argv:
            print(f"{prog}: error: unknown command {argv[0]!r}", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]][0](argv[1:], prog=f"{prog} {argv[0]}")
