"""`ga monitor FOLDER --model RUN [--watch] [--alert RULE]`, its tuning modes (--show-detection,
--calibrate, --truth, --save-crops) and `ga monitor note`."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Sequence

from ga.cli import _options, _plant
from ga.cli._base import ModelCommand, Parser, print_error, stop_on_signals
from ga.errors import printable

log = logging.getLogger(__name__)
SUBCOMMANDS = ("note", "verify", "serve")  # modules of ga.cli


class Monitor(ModelCommand):
    name = "monitor"
    description = ("Find the particles in every frame (a folder of images, a TIFF stack, a video), classify each "
                   "with a trained model and write particles.csv, frames.csv (counts, class fractions with "
                   "intervals, d10/d50/d90), trend figures and monitor.html; --watch keeps taking new frames as they "
                   "arrive. `ga monitor note DIR TEXT` adds an operator's note; `ga monitor verify DIR` checks the "
                   "folder's audit trail; `ga monitor serve DIR` serves a folder's live dashboard.")
    flags = {"out_dir": "--out-dir", "watch": "--watch", "alert": "--alert", "inputs": "PATH", "truth": "--truth",
             "serve": "--serve", "opcua": "--opcua", "mqtt": "--mqtt"}

    def add_arguments(self, p: Parser) -> None:
        p.add_argument("inputs", nargs="*", metavar="PATH", help="a folder of frames, TIFF stacks or videos (--watch: "
                       "one folder)")
        _options.add(p, *_options.MODEL, batch_size={  # given or not told apart: the config's is the default
            "default": None, "help": "particle crops per prediction call; default: monitor.batch_size (64)"})
        p.add_argument("--out-dir", default="monitor_out",
                       help="the monitor folder (resumed when it holds earlier frames of the same inputs); "
                            "default: %(default)s")
        p.add_argument("--watch", action="store_true", help="keep polling the folder for new frames until interrupted")
        p.add_argument("--idle-exit", type=float, metavar="SECONDS",
                       help="with --watch: stop after this many seconds without a new frame")
        p.add_argument("--alert", action="append", default=[], metavar="RULE",
                       help='an alert rule on frames.csv\'s columns, e.g. "pg_fraction > 0.10 over 5 frames" '
                            "(repeatable; the rules: docs/monitoring.md, Alerts)")
        p.add_argument("--on-alert", metavar="CMD",
                       help="a shell command run on each alert, given GA_ALERT_RULE, GA_ALERT_VALUE, GA_ALERT_FRAME, "
                            "GA_ALERT_TIME, GA_ALERT_COLUMN, GA_ALERT_THRESHOLD and GA_MONITOR_DIR")
        p.add_argument("--show-detection", metavar="FRAME",
                       help="draw the detected outlines over one frame (<out-dir>/<name>_detection.png) and exit; "
                            "no model needed: for tuning monitor.*")
        p.add_argument("--calibrate", action="store_true",
                       help="choose the detection settings from a sample of the frames and write <out-dir>/"
                            "monitor.yaml (use it with --config), calibration.json and calibration.png; no model "
                            "needed")
        p.add_argument("--calibrate-frames", type=int, default=20, metavar="N",
                       help="frames sampled by --calibrate, spread over the run; default: %(default)s")
        p.add_argument("--save-crops", metavar="DIR",
                       help="write every kept particle's crop (the window the model sees) to DIR with crops.csv, "
                            "for labelling; no model needed")
        p.add_argument("--cluster", type=int, metavar="K",
                       help="with --save-crops: group the crops into DIR/cluster_<k>/ by k-means on simple image "
                            "features, or with --model on the model's backbone features")
        p.add_argument("--truth", metavar="FILE",
                       help="score the detection against annotated frames (COCO JSON, or a CSV of frame,count) and "
                            "write <out-dir>/detection_scores.csv; no model needed")
        _options.add(p, *_options.CONFIG)
        _plant.add_arguments(p)

    def main(self, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
        argv = list(sys.argv[1:] if argv is None else argv)
        if argv[:1] and argv[0] in SUBCOMMANDS:  # ga monitor note ..., ga monitor verify ...
            module = importlib.import_module(f"ga.cli.{argv[0]}")
            return module.main(argv[1:], prog=f"{prog or 'ga monitor'} {argv[0]}")
        return super().main(argv, prog)

    def needs_keras(self, args: argparse.Namespace) -> bool:
        """The tuning modes need no model (--save-crops only with --cluster's --model)."""
        return not (args.show_detection or args.truth or args.calibrate or (args.save_crops and not args.model))

    def check(self, parser: Parser, args: argparse.Namespace) -> None:
        alone = "goes with frames given at once, without --watch"
        rules = [
            (not args.inputs and not args.show_detection, "give a folder of frames (or --show-detection FRAME)"),
            (args.truth and (args.watch or args.show_detection), f"--truth {alone} or --show-detection"),
            (args.calibrate and (args.watch or args.show_detection or args.truth),
             f"--calibrate {alone}, --show-detection or --truth"),
            (args.calibrate_frames < 1, "--calibrate-frames must be at least 1"),
            (args.cluster is not None and not args.save_crops, "--cluster goes with --save-crops"),
            (args.cluster is not None and args.cluster < 2, "--cluster must be at least 2"),
            (args.save_crops and args.model and args.cluster is None,
             "--model with --save-crops is for --cluster's features: add --cluster K"),
            (args.save_crops and (args.watch or args.show_detection or args.truth or args.calibrate),
             f"--save-crops {alone}, --show-detection, --truth or --calibrate"),
        ]
        for broken, message in rules:
            if broken:
                parser.error(message)
        _options.check_numbers(parser, args)
        if args.idle_exit is not None and not args.watch:
            parser.error("--idle-exit goes with --watch")
        _plant.check(parser, args)

    def run(self, args: argparse.Namespace) -> int:
        from ga.api import monitor, monitor_settings

        cfg = monitor_settings(args.config, sets=args.overrides, batch_size=args.batch_size)  # the flag wins
        if args.show_detection:
            from ga.monitoring.calibration import show_detection

            print(show_detection(args.show_detection, cfg, args.out_dir, args.max_pixels))
            return 0
        if args.truth or args.save_crops or args.calibrate:
            from ga.monitoring.feed import check_inputs

            check_inputs(args.inputs, False)
            return _scored(args, cfg) if args.truth else _saved_crops(self, args, cfg) if args.save_crops \
                else _calibrated(args)
        _quick_checks(args)
        model = self.load(args)
        with stop_on_signals() as stopping, _plant.publishing(args, cfg.stale_seconds) as hooks:
            result = monitor(args.inputs, model, out_dir=args.out_dir,
                             alerts=args.alert, on_alert=args.on_alert, watch=args.watch, idle_exit=args.idle_exit,
                             threshold=args.threshold, config=args.config, sets=args.overrides,
                             progress=not args.no_progress, max_pixels=args.max_pixels, alert_hook=_print_alert,
                             on_progress=_log_progress, stop=lambda: bool(stopping), batch_size=args.batch_size,
                             hooks=hooks)
        print(f"{result.frames} frame(s) monitored ({result.resumed} done before), {result.particles} particle(s), "
              f"{result.skipped} skipped, {len(result.alerts)} alert(s) -> "
              f"{os.path.join(args.out_dir, 'monitor.html')}")
        return result.exit_code


def _quick_checks(args):
    """The inputs and alert rules, before the model loads (which takes seconds)."""
    from ga.monitoring.alerts import parse_rule
    from ga.monitoring.feed import check_inputs

    check_inputs(args.inputs, args.watch)
    for rule in args.alert:
        parse_rule(rule)


def _print_alert(a):
    print(f"ALERT {printable(a.time or a.frame)}: {printable(a.rule)} (value {a.value:.4g} on frame "
          f"{printable(a.frame)})", file=sys.stderr, flush=True)


def _log_progress(r):
    log.info("%d frame(s) done, %d particle(s), %d skipped, %d alert(s)", r.frames + r.resumed, r.particles,
             r.skipped, len(r.alerts))


def _calibrated(args):
    """--calibrate: the settings chosen, and the monitor.yaml that holds them."""
    from ga.api import calibrate
    from ga.monitoring.calibration import summary_lines

    doc = calibrate(args.inputs, out_dir=args.out_dir, frames=args.calibrate_frames, config=args.config,
                    sets=args.overrides, max_pixels=args.max_pixels, batch_size=args.batch_size)
    for s in doc["skipped"]:
        print_error(s["frame"], s["reason"], "skipped frame")
    print("\n".join(printable(line) for line in summary_lines(doc)))
    print(os.path.join(args.out_dir, "monitor.yaml"))
    return 1 if doc["skipped"] else 0


def _saved_crops(command, args, cfg):
    """--save-crops [--cluster K [--model RUN]]: the crops written, one line of what."""
    from ga.monitoring.crops import save_crops

    model = command.load(args) if args.model and args.cluster else None
    done = save_crops(args.inputs, cfg, args.save_crops, args.cluster, args.max_pixels, not args.no_progress, model)
    for frame, reason in done["skipped"]:
        print(f"skipped {printable(frame)}: {printable(reason)}", file=sys.stderr)
    groups = f" in {len(done['clusters'])} clusters ({', '.join(f'{k}: {n}' for k, n in done['clusters'].items())})" \
        if done["clusters"] else ""
    print(f"{done['crops']} crop(s) of {done['frames']} frame(s){groups}")
    print(os.path.join(args.save_crops, "crops.csv"))
    return 1 if done["skipped"] else 0


def _scored(args, cfg):
    """--truth FILE: detection scored against annotations (ga.monitoring.truth); exit 1 when a frame
    could not be read."""
    from ga.monitoring.truth import score_detection, summary_line

    result = score_detection(args.inputs, args.truth, cfg, args.out_dir, args.max_pixels,
                             progress=not args.no_progress)
    for s in result["skipped"]:
        print_error(s["frame"], s["reason"], "skipped frame")
    print(summary_line(result))
    print(os.path.join(args.out_dir, "detection_scores.csv"))
    return 1 if result["skipped"] else 0


main = Monitor().main
