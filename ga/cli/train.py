"""`ga train` (main.py, ga-train): train from a configuration; --cv, --resume, --lr-find."""

from __future__ import annotations

import argparse
import shlex
import sys

from ga.cli import _options
from ga.cli._base import Command, Parser
from ga.errors import ConfigError


class Train(Command):
    name, script = "train", "main.py"
    description = ("Train a classifier from a configuration and write a run folder under deliverables/ "
                   "(weights .h5/.keras/.onnx, labels.json, report, figures, history).")

    def add_arguments(self, p: Parser) -> None:
        _options.add(p, *_options.CONFIG, config={"default": "configs/resnet101.yaml"})
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

    def run(self, args: argparse.Namespace) -> int:
        import ga.api as api
        from ga.config import describe_shipped_configs, dump_config, load_config

        sets = [*args.overrides, *([f"output.name={args.name}"] if args.name else []),
                *(["output.preview=false"] if args.no_preview else [])]
        if args.list_configs:
            print("\n".join(describe_shipped_configs()))
            return 0
        if args.print_config:
            print(dump_config(load_config(args.config, sets)), end="")
            return 0
        if args.lr_find:
            return _lr_finding(args, sets)
        from ga.crossval import is_cv_folder

        if args.resume and is_cv_folder(args.resume):
            run_dir = api.cross_validate(None, resume=args.resume, sets=sets, device=args.device)
        elif args.cv:
            if args.resume:
                raise ConfigError(f"{args.resume} is not a cross-validation folder (no cv.json)", arg="resume")
            run_dir = api.cross_validate(args.config, sets=sets, device=args.device)
        else:
            run_dir = api.train(args.config, resume=args.resume, sets=sets, device=args.device)
        if run_dir is not None:  # None: a non-chief worker of a multi-worker run (the chief prints it)
            print(run_dir)
        return 0


def _lr_finding(args, sets):
    from ga.api import find_learning_rate

    if args.resume or args.cv:
        raise ConfigError("--lr-find trains nothing: it takes neither --resume nor --cv", arg="lr_find")
    r = find_learning_rate(args.config, sets=sets, steps=args.lr_steps, low=args.lr_range[0], high=args.lr_range[1],
                           progress=sys.stderr.isatty(), device=args.device)
    print(f"learning-rate range test: {len(r.rates)} steps from {r.rates[0]:.3g} to {r.rates[-1]:.3g} "
          f"({r.stopped}); lowest smoothed loss at {r.minimum:.3g}, steepest fall at {r.steepest:.3g}")
    print(f"suggested learning rate: {r.suggested:.3g}")
    config = args.config if args.config else "configs/resnet101.yaml"
    kept = "".join(f" --set {shlex.quote(o)}" for o in sets if not o.startswith("training.learning_rate="))
    print(f"  python main.py --config {shlex.quote(config)}{kept} --set training.learning_rate={r.suggested:.3g}")
    print(r.folder)
    return 0


main = Train().main
