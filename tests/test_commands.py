"""Every command that README.md and the documentation site (docs/**/*.md) show, run as a user runs it.

Each command runs in a fresh interpreter (`sys.executable script ...` or `-m ga.synthetic`),
with real argv and real exit codes, in a scratch working folder laid out like a clone
(`configs/` linked in; `data/` and `deliverables/` made by the commands themselves), on tiny
synthetic data. Where a documented command would train for minutes, the test runs it
verbatim and appends overrides that shrink it (argparse and `--set` let the last value win).
No network: a proxy on a closed loopback port makes any download fail at once.

Documented commands (every fenced block of README.md and docs/**/*.md) and the tests that run
them; `test_every_documented_command_is_tested` checks this list against the files, and that
each command has a test in the default suite (read from the tests' decorators, not from the
notes in brackets): a command whose full form runs only with --long has a smaller or
in-process default counterpart.

  $ pip install .
      -> test_ecosystem.py::test_installed_package_and_its_commands_without_tensorflow (ga-train and ga-infer in-process), test_ecosystem.py::test_installed_commands_from_another_folder (--long)
  $ ga-train --config demo --print-config
      -> test_ecosystem.py::test_installed_package_and_its_commands_without_tensorflow (ga-train and ga-infer in-process), test_ecosystem.py::test_installed_commands_from_another_folder (--long)
  $ ga-split --source data/archive/cropped/cropped --dest data/split
      -> test_ecosystem.py::test_installed_package_and_its_commands_without_tensorflow (ga-train and ga-infer in-process), test_ecosystem.py::test_installed_commands_from_another_folder (--long)
  $ ga-train --config demo
      -> test_ecosystem.py::test_installed_package_and_its_commands_without_tensorflow (ga-train and ga-infer in-process), test_ecosystem.py::test_installed_commands_from_another_folder (--long)
  $ ga-infer data/split/test --recursive
      -> test_ecosystem.py::test_installed_package_and_its_commands_without_tensorflow (ga-train and ga-infer in-process), test_ecosystem.py::test_installed_commands_from_another_folder (--long)
  $ python -m ga --help
      -> test_ga_help_lists_the_subcommands
  $ python -m ga split --source data/archive/cropped/cropped --dest data/split
      -> test_chains.py::test_ga_command_chain
  $ python -m ga train --config demo
      -> test_chains.py::test_ga_command_chain
  $ python -m ga infer data/split/test --recursive --output predictions.csv
      -> test_ga_infer_evaluate_scan_give_the_files_of_inference_py (in-process: the same argv)
  $ python -m ga evaluate data/split/test --model deliverables/<run> --out-dir eval
      -> test_ga_infer_evaluate_scan_give_the_files_of_inference_py (in-process: the same argv)
  $ python -m ga scan frame.png --tile 300 --model deliverables/<run>
      -> test_ga_infer_evaluate_scan_give_the_files_of_inference_py (in-process: the same argv)
  $ python -m ga synth crystals --out data/archive --per-class 300
      -> test_chains.py::test_ga_command_chain
  $ python -m ga import GAweights_<ts>.h5 --out deliverables/<name>
      -> test_import_the_studys_h5 (--long), test_chains.py::test_ga_command_chain (its one-line error)
  $ python -m ga report deliverables/<run>
      -> test_chains.py::test_ga_command_chain
  $ python split_data.py --source data/labelled --dest data/split_labelled
      -> test_chains.py::test_binary_labels_csv_chain
  $ python main.py --config configs/demo.yaml --set data.split_root=data/split_labelled
      -> test_chains.py::test_binary_labels_csv_chain
  $ python inference.py data/split_labelled/test --evaluate --model deliverables/<run> --out-dir eval
      -> test_chains.py::test_binary_labels_csv_chain
  $ python split_data.py --folds 5
      -> test_crossval.py::test_folds_put_each_group_in_one_fold_and_leave_test_out
  $ python main.py --config configs/demo.yaml --cv
      -> test_crossval.py::test_cv_summary_is_the_mean_of_the_folds
  $ python main.py --resume deliverables/<run>_cv
      -> test_crossval.py::test_cv_killed_after_fold_2_trains_only_the_rest
  $ python inference.py data/split/test --evaluate --model deliverables/<A> --compare deliverables/<B>
      -> test_crossval.py::test_compare_two_models_gives_mcnemars_exact_p
  $ python -m ga compare deliverables/<A> deliverables/<B> data/split/test
      -> test_crossval.py::test_compare_two_models_gives_mcnemars_exact_p
  $ python main.py --config configs/demo.yaml --lr-find
      -> test_workbench_commands, test_lrfind.py::test_lr_find_from_a_shell
  $ python inference.py "frames/*.png" --model deliverables/<run>
      -> test_workbench_commands, test_predict.py::test_globs_list_files_and_tiff_stacks
  $ python inference.py @frames.txt --model deliverables/<run> --output frames.csv
      -> test_workbench_commands, test_predict.py::test_globs_list_files_and_tiff_stacks
  $ python inference.py stack.tif --scan --tile 300 --model deliverables/<run>
      -> test_predict.py::test_tiff_stacks_are_scanned_and_evaluated_page_by_page (in-process: the same argv)
  $ python -m ga review data/split/test --model deliverables/<run> --out-dir review
      -> test_workbench_commands, test_review.py::test_ga_review_ranks_a_planted_mislabel_first
  $ python inference.py data/split --review --model deliverables/<run>
      -> test_workbench_commands, test_review.py::test_inference_review_of_a_split_folder
  $ python -m ga runs
      -> test_workbench_commands, test_runs.py::test_ga_runs_lists_finished_running_and_failed_runs
  $ python -m ga runs deliverables --csv
      -> test_workbench_commands, test_runs.py::test_ga_runs_lists_finished_running_and_failed_runs
  $ python -m ga runs --diff <A> <B>
      -> test_workbench_commands, test_runs.py::test_ga_runs_lists_finished_running_and_failed_runs
  $ pip install ".[mlflow]"
      -> test_tracking.py::test_a_run_logged_to_a_file_store_equals_its_folder (make test installs the test extra: mlflow-skinny)
  $ python main.py --config configs/demo.yaml --set output.mlflow=file:///path/to/mlruns
      -> test_tracking.py::test_a_run_logged_to_a_file_store_equals_its_folder
  $ make demo
      -> test_make_demo_chain, test_the_make_demo_block_is_the_makefile_chain
  $ make test
      -> test_make_test_is_what_ci_runs, test_the_lock_pins_every_dependency_inside_its_range
  $ make docs
      -> test_docs.py::test_make_docs_builds_every_page_and_the_generated_reference, test_docs.py::test_a_broken_link_or_a_page_outside_the_navigation_fails_the_build
  $ make docs-serve
      -> test_docs.py::test_make_docs_serve_serves_the_site_on_the_loopback
  $ python -m ga.synthetic crystals --out data/archive --per-class 800 --seed 0
      -> test_make_demo_chain
  $ python split_data.py
      -> test_make_demo_chain
  $ python main.py --config configs/demo.yaml
      -> test_make_demo_chain
  $ python inference.py data/split/test --recursive --output data/demo_predictions.csv
      -> test_make_demo_chain
  $ python -m ga.synthetic process --out data/process --frames 30 --seed 1
      -> test_make_demo_chain
  $ python -m ga monitor data/process --out-dir data/monitor --alert "pg_fraction > 0.10 over 3 frames"
      -> test_make_demo_chain
  $ python -m ga synth process --out data/process --frames 120 --seed 0
      -> test_monitor.py::test_pg_fraction_and_detection_against_the_truth
  $ python -m ga monitor data/process --model deliverables/<run> --out-dir data/monitor
      -> test_monitor.py::test_pg_fraction_and_detection_against_the_truth, test_monitor.py::test_watch_takes_every_frame_once_through_a_kill_and_restart
  $ python -m ga monitor data/process --show-detection data/process/frame_00060_20261201T100158.png --out-dir data/monitor
      -> test_monitor.py::test_show_detection_draws_the_outlines
  $ python -m ga monitor data/process --truth data/process/truth/coco.json --out-dir data/scores
      -> test_truth.py::test_truth_command_scores_the_synthetic_process
  $ python -m ga synth process --out data/process_x3 --frames 12 --scale 3
      -> test_truth.py::test_synth_process_at_triple_scale_from_a_shell
  $ python -m ga monitor note data/monitor "seeded at 10:32" --time 2026-12-01T10:32:00
      -> test_monitor.py::test_an_operators_note_lands_on_the_figures_and_the_page
  $ python -m ga monitor verify data/monitor
      -> test_monitor.py::test_the_audit_trail_records_the_run_and_verify_finds_an_edited_line
  $ python -m ga monitor data/other --calibrate --out-dir data/calibration
      -> test_truth.py::test_calibrate_then_score_on_a_half_scale_bright_field_process
  $ python -m ga monitor data/other --truth data/other/truth/coco.json --config data/calibration/monitor.yaml --out-dir data/other_scores
      -> test_truth.py::test_calibrate_then_score_on_a_half_scale_bright_field_process
  $ python -m ga monitor data/frames --save-crops data/crops --cluster 2
      -> test_truth.py::test_save_crops_cluster_into_class_like_folders_and_add_never_overwrite, test_chains.py::test_readme_labelling_loop
  $ python -m ga synth process --out data/frames --frames 60 --seed 2
      -> test_chains.py::test_readme_labelling_loop
  $ mkdir data/classes
      -> test_chains.py::test_readme_labelling_loop
  $ mv data/crops/cluster_<k> data/classes/pg
      -> test_chains.py::test_readme_labelling_loop
  $ mv data/crops/cluster_<j> data/classes/cex
      -> test_chains.py::test_readme_labelling_loop
  $ python split_data.py --source data/classes --dest data/crops_split
      -> test_chains.py::test_readme_labelling_loop
  $ python main.py --config configs/demo.yaml --set data.split_root=data/crops_split
      -> test_chains.py::test_readme_labelling_loop
  $ python -m ga monitor data/frames --calibrate --out-dir data/calibration
      -> test_chains.py::test_readme_labelling_loop
  $ python -m ga monitor data/frames --model deliverables/<run> --config data/calibration/monitor.yaml --out-dir data/loop_monitor
      -> test_chains.py::test_readme_labelling_loop
  $ python -m ga monitor data/frames --save-crops data/crops_by_model --cluster 2 --model deliverables/<run>
      -> test_chains.py::test_readme_labelling_loop
  $ python -m ga monitor incoming/ --model deliverables/<run> --watch --alert "pg_fraction > 0.10 over 5 frames" --on-alert 'echo "$GA_ALERT_RULE at $GA_ALERT_FRAME" >> alerts.log'
      -> test_monitor.py::test_watch_takes_every_frame_once_through_a_kill_and_restart
  $ python -m ga monitor stack.tif --model deliverables/<run> --out-dir stack_monitor
      -> test_monitor.py::test_a_tiff_stack_and_a_video
  $ python -m ga monitor run.mp4 --model deliverables/<run> --out-dir video_monitor
      -> test_monitor.py::test_a_tiff_stack_and_a_video
  $ python -m ga monitor incoming/ --model deliverables/<run> --watch --serve 8050 --opcua opc.tcp://127.0.0.1:4840 --mqtt mqtt://127.0.0.1:1883/ga/reactor1
      -> test_monitor.py::test_plant_opcua_client_sees_every_frame_with_its_time_and_status, test_monitor.py::test_plant_mqtt_message_per_frame_through_a_broker_restart_and_offline_retained, test_monitor.py::test_plant_dashboard_json_follows_the_frames_and_no_row_is_lost
  $ python -m ga monitor serve data/monitor --address 8050
      -> test_plant.py::test_ga_monitor_serve_from_a_shell_until_sigterm
  $ python scripts/monitor_figure.py --model deliverables/<run>
      -> test_monitor.py::test_monitor_figure_script
  $ python bench/monitor.py
      -> test_monitor.py::test_monitor_bench_command (with --quick)
  $ python main.py --config configs/resnet101.yaml
      -> test_study_config_offline_is_one_line
  $ python inference.py folder/
      -> test_inference_flat_folder_newest_run
  $ python main.py --config configs/resnet50.yaml --set training.epochs=3 --set model.weights=none
      -> test_resnet50_command (in-process: the same argv with smaller sizes)
  $ python inference.py folder/ [--recursive] [--model deliverables/<run> | model.onnx | model.keras] [--engine onnx|onnx-int8|openvino|openvino-int8|keras] [--batch-size 64] [--output results.csv|.json] [--print-format ga|study] [--cluster [K]] [--cluster-features pooled|map] [--cluster-space full|pca2]
      -> test_inference_keras_engine_json, test_inference_cluster (in-process: the same argv), test_inference_model_files_given_directly (--long), test_make_demo_chain, test_inference_study_print_format (in-process: the same argv), test_cluster_the_study_way (in-process: the same argv), test_precision.py::test_engine_openvino_and_the_automatic_choice (--engine openvino-int8 from a shell)
  $ python inference.py data/split/test --evaluate --model deliverables/<run> --out-dir eval
      -> test_evaluate_reproduces_the_runs_test_report, test_evaluate_multilabel
  $ python -m ga.georgia import GAweights_<ts>.h5 --out deliverables/<name>
      -> test_import_the_studys_h5 (--long), test_chains.py::test_study_weights_land_in_the_ga_model
  $ python -m ga.synthetic crystals --out data/archive_multiclass --per-class 800 --classes cex,pg,plate --seed 0
      -> test_chains.py::test_multiclass_chain
  $ python split_data.py --config configs/demo_multiclass.yaml
      -> test_chains.py::test_multiclass_chain
  $ python main.py --config configs/demo_multiclass.yaml
      -> test_chains.py::test_multiclass_chain
  $ python inference.py data/split_multiclass/test --recursive --output data/multiclass_predictions.csv
      -> test_chains.py::test_multiclass_chain
  $ python -m ga.synthetic crystals --out data/archive_imbalanced --per-class 800 --classes cex,pg:80 --seed 0
      -> test_chains.py::test_imbalanced_chain (in-process: the same argv)
  $ python split_data.py --source data/archive_imbalanced/cropped/cropped --dest data/split_imbalanced
      -> test_chains.py::test_imbalanced_chain (in-process: the same argv)
  $ python main.py --config configs/demo.yaml --set data.split_root=data/split_imbalanced --set training.class_weight=balanced
      -> test_chains.py::test_imbalanced_chain (in-process: the same argv)
  $ python -m ga.synthetic graphene --out data/graphene --count 1200 --seed 0
      -> test_graphene_chain
  $ python split_data.py --config configs/graphene_cnn4.yaml
      -> test_graphene_chain
  $ python main.py --config configs/graphene_cnn4.yaml --set data.image_size=[160,160] --set data.augment.crop=[120,120] --set data.batch_size=16 --set training.learning_rate=2e-3 --set training.epochs=30
      -> test_graphene_chain
  $ python inference.py frame.png --scan --tile 300
      -> test_scan_command
  $ python split_data.py --source path/to/dataset --dest data/graphene_split --ratios 0.6 0.2 0.2
      -> test_split_the_graphene_studys_dataset_folder
  $ python inference.py frame.png --scan --tile 96 64 --rule any --model deliverables/<run>
      -> test_scan_a_binary_model_with_the_any_rule
  $ python -m ga.synthetic graphene --out data/graphene_unlabelled --count 4000 --seed 1
      -> test_contrastive_then_fine_tune
  $ python main.py --config configs/graphene_simclr.yaml
      -> test_contrastive_then_fine_tune
  $ python main.py --config configs/graphene_finetune.yaml --set model.backbone_weights=deliverables/GS_<time>/GSbackbone.weights.h5
      -> test_contrastive_then_fine_tune
  $ python bench/split_bench.py
      -> test_chains.py::test_split_bench_command
  $ python scripts/synthetic_figure.py
      -> test_chains.py::test_figure_scripts
  $ python scripts/compare_real.py --real path/to/real/crops
      -> test_chains.py::test_figure_scripts
  $ make bench
      -> test_make_bench_runs_bench_run_py
  $ .venv/bin/python bench/run.py --quick --json bench.json
      -> test_chains.py::test_bench_quick_json_in_process (one figure), test_chains.py::test_bench_only_command (--long; with --quick and --json)
  $ .venv/bin/python bench/run.py --only eval inference
      -> test_chains.py::test_bench_quick_json_in_process (one figure), test_chains.py::test_bench_only_command (--long)
  $ python scripts/data_efficiency.py --workdir /tmp/ga_data_efficiency
      -> test_bench.py::test_data_efficiency_script_from_scratch_and_redrawn (in-process: one method), test_bench.py::test_data_efficiency_script_runs_every_method (--long)
  $ python scripts/data_efficiency.py --workdir /tmp/ga_de_nocolor --methods linear_eval fine_tune --pretrain-set contrastive.color_prob=0
      -> test_bench.py::test_data_efficiency_script_from_scratch_and_redrawn (in-process: one method), test_bench.py::test_data_efficiency_script_runs_every_method (--long), test_bench.py::test_data_efficiency_variants (--long)
  $ python scripts/data_efficiency.py --workdir /tmp/ga_de_seed7 --seed 7 --fractions 0.02 0.1 --backbone /tmp/ga_data_efficiency/runs/GS_<time>/GSbackbone.weights.h5
      -> test_bench.py::test_data_efficiency_script_from_scratch_and_redrawn (in-process: one method), test_bench.py::test_data_efficiency_variants (--long)
  $ python scripts/data_efficiency.py --workdir /tmp/ga_data_efficiency --plot-only --also /tmp/ga_de_nocolor/results.json
      -> test_bench.py::test_data_efficiency_script_from_scratch_and_redrawn (in-process: one method), test_bench.py::test_data_efficiency_script_runs_every_method (--long)
  $ python main.py --config configs/demo.yaml --set training.distribution=multi_worker
      -> test_distributed.py::test_two_workers_binary_read_distinct_shards_and_end_with_the_same_weights
  $ python main.py --resume deliverables/<run>
      -> test_distributed.py::test_a_killed_worker_stops_the_run_clearly_and_resume_completes_it (--long), test_faults.py::test_sigkill_during_training_then_resume
  $ python bench/multi_worker.py
      -> test_chains.py::test_multi_worker_bench_on_one_way_in_process (one way), test_chains.py::test_multi_worker_bench_command (--long)
  $ python bench/precision.py
      -> test_chains.py::test_precision_bench_command (with --quick)
  $ python bench/backbones.py
      -> test_backbones.py::test_backbones_bench_on_one_small_family_in_process (CNN-4 alone), test_backbones.py::test_backbones_bench_command (--long; with --quick)

The ```python blocks of docs/api.md (the Python API) run in a fresh interpreter, in order, on
fewer and smaller images (test_chains.py::test_the_api_page_python_blocks_run). Commands named in the
pages' prose are tested too: `python main.py --resume
deliverables/<run>` after a SIGKILL (test_faults.py::test_sigkill_during_training_then_resume),
`python -m ga.synthetic crystals|graphene|wafer` (here), loading a run's model with
`import ga; keras.models.load_model(...)` in a fresh interpreter in either import order
(test_models_load_in_a_fresh_interpreter).
"""

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import CPUS, ROOT
from helpers import error_lines, makefile_recipe, read_csv, run_here

DOCS = ["README.md", *sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "**", "*.md"),
                                                                         recursive=True))]
SCRIPTS = ("main.py", "inference.py", "split_data.py")


# ---------------------------------------------------------------------------- running commands


def _env(home):
    env = dict(os.environ)
    env.update({
        "KERAS_HOME": str(home / "keras_home"),  # no cached ImageNet weights
        "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",  # downloads fail at once
        "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
        "MPLBACKEND": "Agg",
        "PYTHONPATH": ROOT + os.pathsep + env.get("PYTHONPATH", ""),
    })
    env.pop("GA_LOGICAL_CPUS", None)
    return env


def argv_of(command):
    """A documented command line -> argv for this interpreter (scripts resolved in the repo)."""
    words = shlex.split(command)
    if words[0] in ("python", ".venv/bin/python"):
        words = words[1:]
    if words and (words[0] in SCRIPTS or words[0].startswith(("bench/", "scripts/"))):
        words[0] = os.path.join(ROOT, words[0])
    return [sys.executable, *words]


class Workspace:
    """A scratch folder laid out like a clone: configs/ linked in, commands run inside it."""

    def __init__(self, path):
        self.path = path
        os.makedirs(path / "keras_home", exist_ok=True)
        os.symlink(os.path.join(ROOT, "configs"), path / "configs")
        self.env = _env(path)

    def __truediv__(self, other):
        return self.path / other

    def run(self, command, *extra, timeout=600, expect=0, subs=None, here=False):
        """Run a documented command (its placeholders replaced by `subs`, then `extra`
        arguments appended); assert its exit status. With `here`, in this interpreter
        through the command's entry function (helpers.run_here): for set-up steps and option
        checks of commands whose fresh-interpreter test is elsewhere."""
        for placeholder, value in (subs or {}).items():
            assert placeholder in command, placeholder
            command = command.replace(placeholder, shlex.quote(str(value)))
        argv = argv_of(command) + [str(e) for e in extra]
        if here:
            changed = {k: v for k, v in self.env.items() if os.environ.get(k) != v}
            return run_here(*argv[1:], cwd=self.path, expect=expect, env=changed)
        proc = subprocess.run(argv, cwd=self.path, env=self.env, capture_output=True, text=True, timeout=timeout)
        if expect is not None:
            assert proc.returncode == expect, (
                f"{command} {' '.join(map(str, extra))}\nexit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}"
                f"\n--- stderr\n{proc.stderr[-3000:]}")
        return proc

    def link(self, name, target):
        os.makedirs(os.path.dirname(self.path / name), exist_ok=True)
        os.symlink(target, self.path / name)

    def printed(self, proc):
        """The path a command printed last, as an absolute path."""
        return os.path.normpath(os.path.join(self.path, proc.stdout.strip().splitlines()[-1]))

    def runs(self, prefix=""):
        root = self.path / "deliverables"
        return sorted(str(root / d) for d in os.listdir(root) if d.startswith(prefix)) if root.is_dir() else []


def images_under(folder):
    return sorted(os.path.join(d, f) for d, _, files in os.walk(folder) for f in files if f.endswith(".png"))


# Appended to the training commands so each trains for seconds on 2 cores.
TINY_CRYSTALS = ["--set", "data.image_size=[32,32]", "--set", "data.batch_size=8", "--set", "training.epochs=3"]
TINY_GRAPHENE = ["--set", "data.image_size=[48,48]", "--set", "data.augment.crop=[36,36]", "--set", "data.batch_size=8",
                 "--set", "training.epochs=2"]


# ---------------------------------------------------------------------------- the make demo chain


def _makefile_recipe(target):
    """The command lines of a Makefile target, `$(PY)` written as `python`."""
    return [line.replace("$(PY)", "python") for line in makefile_recipe(target)]


def _doc_block_after(marker, doc="docs/get-started.md"):
    text = open(os.path.join(ROOT, doc), encoding="utf-8").read()
    after = text[text.index(marker):]
    block = re.search(r"```\n(.*?)```", after, re.S).group(1)
    return [l.split("  #")[0].strip() for l in block.strip().splitlines()]


DEMO_EXTRA = {  # what the test appends to each step of make demo's chain
    "-m ga.synthetic crystals": ["--per-class", "30"],
    "main.py": TINY_CRYSTALS,
    "-m ga.synthetic process": ["--frames", "5"],
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """make demo's chain, command by command as the Makefile has it, in a scratch clone."""
    ws = Workspace(tmp_path_factory.mktemp("demo"))
    steps = {}
    for command in _makefile_recipe("demo"):
        extra = next((v for k, v in DEMO_EXTRA.items() if k in command), [])
        steps[command] = ws.run(command, *extra)
    (run,) = ws.runs("GA_")
    return ws, run, steps


def test_the_make_demo_block_is_the_makefile_chain():
    assert _doc_block_after("`make demo` runs") == _makefile_recipe("demo")


def test_make_demo_chain(demo):
    ws, run, steps = demo
    generate, split, train, infer, process, monitoring = steps.values()
    # Generator: the Kaggle layout, 30 crops per class.
    src = ws / "data/archive/cropped/cropped"
    assert len(os.listdir(src / "cex")) == 30 and len(os.listdir(src / "pg")) == 30
    # Split with every default: data/split and a manifest accounting for all 60 files.
    manifest = read_csv(ws / "data/split/manifest.csv")
    assert len(manifest) == 60 and {r["status"] for r in manifest} == {"ok"}
    assert sorted(os.listdir(ws / "data/split")) == ["manifest.csv", "split.json", "test", "train", "valid"]
    assert "split (done)" in split.stdout
    # Training: the printed run folder is complete and self-describing.
    assert ws.printed(train) == run
    have = set(os.listdir(run))
    assert {"GAmodel.keras", "GAweights.h5", "GAweights.onnx", "labels.json", "config.yaml", "history.csv",
            "metrics.json", "GAFinalTestResults.txt", "predictions.csv", "run.json", "model_card.md", "train.log",
            "GAmetrics_plot.png", "GAfinal_confusion_matrix.png", "GAfinal_roc_auc.png", "GAtrain_batch.png"} <= have
    assert "RUNNING" not in have
    labels = json.load(open(os.path.join(run, "labels.json")))
    assert labels["classes"] == ["cex", "pg"] and labels["input_size"] == [32, 32]
    assert len(read_csv(os.path.join(run, "history.csv"))) == 3
    # The study's report rows: the epoch table's averages, the test loss.
    log = open(os.path.join(run, "train.log"), encoding="utf-8").read()
    assert "macro avg" in log and "weighted avg" in log and "macro F1" in log and "delivered epoch" in log
    # The run's shareable page, heat maps, SavedModel and TensorBoard scalars (each checked in
    # depth by test_ecosystem.py); the error gallery, or the line saying there were no errors.
    from test_ecosystem import scalars

    assert {"report.html", "GAgradcam.png", "GAsaved_model", "tensorboard"} <= have
    assert "GAmisclassified.png" in have or "no misclassified test images" in log
    events = scalars(os.path.join(run, "tensorboard", "validation"))["epoch_loss"]
    assert [events[e] for e in sorted(events)] == pytest.approx(
        [float(r["val_loss"]) for r in read_csv(os.path.join(run, "history.csv"))], rel=1e-5)
    results = open(os.path.join(run, "GAFinalTestResults.txt"), encoding="utf-8").read()
    loss = json.load(open(os.path.join(run, "metrics.json")))["loss"]
    assert f"test loss (binary cross-entropy): {loss:.4f}" in results
    # Inference on the test split with the newest run: a row per image, names from the data.
    test_images = images_under(ws / "data/split/test")
    rows = read_csv(ws / "data/demo_predictions.csv")
    assert sorted(r["path"] for r in rows) == sorted(os.path.relpath(p, ws.path) for p in test_images)
    assert all(r["predicted"] in ("cex", "pg") and not r["error"] for r in rows)
    # The run's INT8 model, checked against float32 on the test split. The labelling above ran on
    # the suite's plain CPU (conftest.CPUS), so with the float32 ONNX; each row names its engine
    # (the INT8 engine's automatic choice: test_evaluate_on_either_cpu).
    int8 = json.load(open(os.path.join(run, "metrics.json")))["int8"]
    assert int8["kept"] and os.path.isfile(os.path.join(run, int8["file"])) and int8["agreement"] >= 0.99
    assert {r["engine"] for r in rows} == {"onnx"}
    assert len([l for l in infer.stdout.splitlines() if l.startswith("File ")]) == len(test_images)
    # A short simulated process watched with the new model (the newest run): a row per frame,
    # the page with the three figures (tests/test_monitor.py checks what the rows say).
    frames = read_csv(ws / "data/monitor/frames.csv")
    assert [r["frame"] for r in frames] == sorted(f for f in os.listdir(ws / "data/process") if f.endswith(".png"))
    assert {r["model_file"] for r in read_csv(ws / "data/monitor/particles.csv")} <= {
        os.path.join(run, f) for f in ("GAweights.onnx", "GAweights_int8.onnx")}
    assert open(ws / "data/monitor/monitor.html").read().count("data:image/png;base64,") == 3
    assert "-> data/monitor/monitor.html" in monitoring.stdout


def test_split_again_does_nothing_and_other_modes(demo, tmp_path):
    ws, _, _ = demo
    again = ws.run("python split_data.py")
    assert "nothing to do" in again.stdout
    src = str(ws / "data/archive/cropped/cropped")
    base = {r["source"]: r["split"] for r in read_csv(ws / "data/split/manifest.csv")}
    for mode in ("link", "copy"):
        dest = tmp_path / mode
        ws.run("python split_data.py", "--mode", mode, "--dest", dest)
        assert {r["source"]: r["split"] for r in read_csv(dest / "manifest.csv")} == base  # same seed, same split
    moved_src = tmp_path / "moved_src"
    shutil.copytree(src, moved_src)
    ws.run("python split_data.py", "--mode", "move", "--source", moved_src, "--dest", tmp_path / "moved")
    assert images_under(moved_src) == [] and len(images_under(tmp_path / "moved")) == 60
    ws.run("python split_data.py", "--order", "sorted", "--dest", tmp_path / "sorted")
    rows = read_csv(tmp_path / "sorted" / "manifest.csv")
    cex = [r["split"] for r in rows if r["class"] == "cex"]
    assert cex == sorted(cex, key=["train", "valid", "test"].index)  # the original's sequential cut
    dry = ws.run("python split_data.py", "--dry-run", "--dest", tmp_path / "dry")
    assert "dry run: nothing written" in dry.stdout and not (tmp_path / "dry").exists()
    bad = ws.run("python split_data.py", "--ratios", "0.5", "0.5", "0.5", "--dest", tmp_path / "bad", expect=2)
    assert len(error_lines(bad)) == 1


def test_inference_keras_engine_json(demo):
    """The shipped bug: a .keras model loaded from the shell after TensorFlow's start-up."""
    ws, run, _ = demo
    proc = ws.run("python inference.py data/split/test --recursive", "--model", run, "--engine", "keras",
                  "--output", "keras.json")
    doc = json.load(open(ws / "keras.json"))
    assert doc["classes"] == ["cex", "pg"]
    ws.run("python inference.py data/split/test --recursive", "--model", run, "--engine", "onnx", "--output",
           "onnx32.csv", here=True)
    onnx = {r["path"]: float(r["p_pg"]) for r in read_csv(ws / "onnx32.csv")}
    keras_p = {r["path"]: r["p_pg"] for r in doc["results"]}
    assert keras_p.keys() == onnx.keys()
    assert max(abs(keras_p[k] - onnx[k]) for k in onnx) <= 1e-4  # the two engines agree
    assert "keras engine" in proc.stderr


def test_inference_cluster(demo):
    ws, run, _ = demo
    ws.run("python inference.py data/split/test --recursive", "--model", run, "--cluster", "2", "--out-dir", "clusters",
           here=True)
    rows = read_csv(ws / "clusters/clusters.csv")
    assert len(rows) == len(images_under(ws / "data/split/test"))
    assert {r["cluster"] for r in rows} == {"0", "1"}
    assert Image.open(ws / "clusters/clusters.png").size[0] > 100


def test_cluster_the_study_way(demo):
    """--cluster-features map --cluster-space pca2 gives the labels of the study's own steps
    (GAkmeans.py: flattened last feature map, PCA to 2-D, k-means with its parameters)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    from ga.loading import load_model
    from ga.predict import predict_files

    ws, run, _ = demo
    ws.run("python inference.py data/split/test --recursive", "--model", run, "--cluster", "--cluster-features", "map",
           "--cluster-space", "pca2", "--out-dir", "study_clusters", here=True)
    got = {r["path"]: int(r["cluster"]) for r in read_csv(ws / "study_clusters/clusters.csv")}
    files = images_under(ws / "data/split/test")
    pred = predict_files(load_model(run, engine="keras"), files, features="map")
    features = np.array([r.features for r in pred.results])
    assert features.shape[1] > 256  # the flattened map, not the pooled vector
    reduced = PCA(n_components=2).fit_transform(features)
    labels = KMeans(n_clusters=4, random_state=42, n_init=10, max_iter=10000).fit(reduced).labels_
    assert len(set(labels)) == 4  # --cluster alone means k = 4
    assert [got[os.path.relpath(f, ws.path)] for f in files] == [int(v) for v in labels]


def test_inference_study_print_format(demo):
    ws, run, _ = demo
    proc = ws.run("python inference.py data/split/test --recursive", "--model", run, "--print-format", "study", here=True)
    p_pg = {os.path.basename(r["path"]): float(r["p_pg"]) for r in read_csv(ws / "data/demo_predictions.csv")}
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(p_pg)
    for line in lines:
        m = re.fullmatch(r"File (.+) prediction: (CEX|PG) with confidence (\d+\.\d\d)%", line)
        assert m, line
        assert abs(float(m.group(3)) - 100 * p_pg[m.group(1)]) <= 0.006
        assert m.group(2) == ("PG" if p_pg[m.group(1)] > 0.5 else "CEX")


def _report_block(path):
    """The classification report of a FinalTestResults.txt (the lines between the header and
    the accuracy line)."""
    text = open(path, encoding="utf-8").read()
    return text[text.index("precision"):text.index("accuracy:")]


def test_evaluate_reproduces_the_runs_test_report(demo, tmp_path):
    ws, run, _ = demo
    # The run's figures are the float32 model's: the float32 engine, named (INT8: the test below).
    proc = ws.run("python inference.py data/split/test --evaluate --model deliverables/<run> --out-dir eval",
                  "--model", run, "--engine", "onnx")
    want = json.load(open(os.path.join(run, "metrics.json")))
    got = json.load(open(ws / "eval/metrics.json"))
    for key in ("classes", "thresholds", "test_images", "accuracy", "per_class", "confusion_matrix"):
        assert got[key] == want[key], key
    assert abs(got["roc_auc"] - want["roc_auc"]) < 1e-3 and abs(got["loss"] - want["loss"]) < 1e-3
    assert _report_block(ws / "eval/GAFinalTestResults.txt") == _report_block(os.path.join(run, "GAFinalTestResults.txt"))
    assert {"predictions.csv", "GAfinal_confusion_matrix.png", "GAfinal_roc_auc.png"} <= set(os.listdir(ws / "eval"))
    assert f"accuracy {want['accuracy']:.4f}" in proc.stdout
    # The study's folder names: 0 is the model's first class, 1 its second.
    numbered = tmp_path / "numbered"
    for i, c in enumerate(["cex", "pg"]):
        shutil.copytree(ws / f"data/split/test/{c}", numbered / str(i))
    ws.run("python inference.py", numbered, "--evaluate", "--model", run, "--out-dir", "eval01", here=True)
    again = json.load(open(ws / "eval01/metrics.json"))

    def figures(per_class):  # outside the split the copies are not known: other intervals, same figures
        return {c: {k: x for k, x in v.items() if not k.endswith("_ci")} for c, v in per_class.items()}

    assert figures(again["per_class"]) == figures(got["per_class"]) and again["confusion_matrix"] == got["confusion_matrix"]
    assert got["uncertainty"]["grouped"] and again["uncertainty"]["groups_from"] is None
    # A class folder the model does not know: one line, exit 2.
    odd = tmp_path / "odd"
    shutil.copytree(ws / "data/split/test/cex", odd / "cex")
    (odd / "needles").mkdir()
    bad = ws.run("python inference.py", odd, "--evaluate", "--model", run, expect=2, here=True)
    (line,) = error_lines(bad)
    assert "needles" in line and "['cex', 'pg']" in line


@pytest.mark.parametrize("cpu", sorted(CPUS))
def test_evaluate_on_either_cpu(demo, tmp_path, cpu):
    """--evaluate without --engine: the float32 ONNX on a plain CPU reproduces the run's figures
    exactly; on a CPU with AMX the INT8 model evaluates (through OpenVINO when the run checked it),
    within what its agreement with float32 on this same test split (metrics.json's int8 or
    openvino block) allows."""
    ws, run, _ = demo
    run_here("inference.py", "data/split/test", "--evaluate", "--model", run, "--out-dir", tmp_path / "ev", cwd=ws.path,
             env={"GA_CPU_FLAGS": CPUS[cpu]})
    want = json.load(open(os.path.join(run, "metrics.json")))
    got = json.load(open(tmp_path / "ev" / "metrics.json"))
    if cpu == "avx2":
        assert got["engine"] == "onnx"
        assert (got["accuracy"], got["confusion_matrix"], got["loss"]) == (want["accuracy"], want["confusion_matrix"],
                                                                         pytest.approx(want["loss"], abs=1e-6))
        return
    check = want.get("openvino", {}).get("openvino-int8") or want["int8"]
    assert got["engine"] == ("openvino-int8" if check is not want["int8"] else "onnx-int8")
    flips = round((1 - check["agreement"]) * want["test_images"])
    assert abs(got["accuracy"] - want["accuracy"]) * want["test_images"] <= flips + 1e-9
    assert sum(abs(a - b) for ra, rb in zip(got["confusion_matrix"], want["confusion_matrix"]) for a, b in zip(ra, rb)) <= 2 * flips
    # The loss of a sure model is small and INT8 moves its log-probabilities most (0.013 -> 0.043 seen)
    assert got["loss"] == pytest.approx(want["loss"], abs=0.1) and got["roc_auc"] == pytest.approx(want["roc_auc"], abs=0.02)


@pytest.mark.long  # about 45 s (four inference runs); the engines' agreement in-process: test_predict.py, test_backbones.py
def test_inference_model_files_given_directly(demo, tmp_path):
    ws, run, _ = demo
    ws.run("python inference.py data/split/test --recursive", "--model", run, "--engine", "onnx", "--output", "f32.csv")
    want = {r["path"]: float(r["p_pg"]) for r in read_csv(ws / "f32.csv")}
    # (an .onnx file alone, its labels read from its metadata: test_predict.py)
    for name, model in (("onnx", os.path.join(run, "GAweights.onnx")), ("keras", os.path.join(run, "GAmodel.keras")),
                        ("h5", os.path.join(run, "GAweights.h5"))):
        ws.run("python inference.py data/split/test --recursive", "--model", model, "--output", f"{name}.csv")
        got = {r["path"]: float(r["p_pg"]) for r in read_csv(ws / f"{name}.csv")}
        assert got.keys() == want.keys()
        assert max(abs(got[k] - want[k]) for k in want) <= 1e-4, name


def test_inference_flat_folder_newest_run(demo):
    ws, _, _ = demo
    folder = ws / "folder"
    folder.mkdir()
    picked = images_under(ws / "data/split/test")[:3]
    for p in picked:
        shutil.copy(p, folder / os.path.basename(p))
    (folder / "notes.txt").write_text("not an image\n")
    proc = ws.run("python inference.py folder/", expect=1)  # one file skipped
    lines = [l for l in proc.stdout.splitlines() if l.startswith("File ")]
    assert sorted(l.split(" prediction ")[0][len("File "):] for l in lines) == sorted(map(os.path.basename, picked))
    errors = error_lines(proc)
    assert len(errors) == 1 and "notes.txt" in errors[0] and "not an image" in errors[0]


def test_models_load_in_a_fresh_interpreter(demo, graphene, contrastive):
    """`import ga; keras.models.load_model(...)` in safe mode, whatever the import order."""
    _, run, _ = demo
    files = {os.path.join(run, "GAmodel.keras"): 1, os.path.join(run, "GAweights.h5"): 1,
             os.path.join(graphene[1], "GCmodel.keras"): 4,
             os.path.join(contrastive[1], "GSmodel.keras"): 256}  # the study's linear 256-d head
    imports = {"ga first": "import ga\nimport keras", "keras first": "import keras\nimport ga",
               "ga, TensorFlow's probe, keras": "import ga\nimport importlib.util\nimport tensorflow\n"
                                                "importlib.util.find_spec('keras')\nimport keras"}
    for order, head in imports.items():
        code = head + "\nimport sys\nfor p in sys.argv[1:]:\n" \
                      "    m = keras.models.load_model(p, compile=False)\n    print(m.output_shape[-1])\n" \
                      "import keras.src.wrappers.fixes as f\nprint(f.sklearn is not None)\n"  # Keras whole
        proc = subprocess.run([sys.executable, "-c", code, *files], capture_output=True, text=True, timeout=300,
                              cwd=str(demo[0].path), env=demo[0].env)
        assert proc.returncode == 0, f"{order}: {proc.stderr[-2000:]}"
        assert proc.stdout.split() == [*map(str, files.values()), "True"], order


def test_workbench_commands(demo, tmp_path):
    """The README's learning-rate finder, inputs, label review and runs table, as typed, in a
    workspace holding the demo's split and run."""
    ws0, run, _ = demo
    name = os.path.basename(run)
    ws = Workspace(tmp_path / "wb")
    shutil.copytree(ws0 / "data/split", ws / "data/split")
    ws.link(f"deliverables/{name}", run)
    # a mislabelled image planted in the demo's test split: a cex crystal filed under pg
    planted = sorted(os.listdir(ws / "data/split/test/cex"))[0]
    shutil.move(ws / "data/split/test/cex" / planted, ws / "data/split/test/pg" / f"planted_{planted}")
    found = ws.printed(ws.run("python main.py --config configs/demo.yaml --lr-find", "--lr-steps", "20",
                              *TINY_CRYSTALS[:4]))
    assert found.endswith("_lr_find") and os.path.isfile(os.path.join(found, "lr_find.png"))
    os.makedirs(ws / "frames")
    for p in images_under(ws / "data/split/test")[:3]:
        shutil.copy(p, ws / "frames")
    (ws / "frames.txt").write_text("# three crops\n" + "".join(f"frames/{n}\n" for n in sorted(os.listdir(ws / "frames"))))
    subs = {"<run>": name}
    assert len(ws.run('python inference.py "frames/*.png" --model deliverables/<run>', subs=subs).stdout.splitlines()) == 3
    ws.run("python inference.py @frames.txt --model deliverables/<run> --output frames.csv", subs=subs)
    assert len(read_csv(ws / "frames.csv")) == 3
    ws.run("python -m ga review data/split/test --model deliverables/<run> --out-dir review", subs=subs)
    assert {"review.csv", "review.html", "labels.csv"} <= set(os.listdir(ws / "review"))
    ranked = read_csv(ws / "review" / "review.csv")
    assert f"planted_{planted}" in [os.path.basename(r["path"]) for r in ranked[:3]]
    # The demo's tiny model gives its cex test crop 0.89-0.93, around the default --min-confidence
    # 0.9; below any confidence it has, the suggestion must be made (test_review checks the default
    # on a model sure of its crops).
    row = next(r for r in ranked if "planted_" in r["path"])
    assert row["predicted"] == "cex"
    run_here("-m", "ga", "review", "data/split/test", "--model", run, "--out-dir", "review_low", "--min-confidence",
             "0.5", cwd=ws.path)
    low = next(r for r in read_csv(ws / "review_low" / "review.csv") if "planted_" in r["path"])
    assert low["suggested_label"] == "cex"
    applied = {r["filename"]: r["label"] for r in read_csv(ws / "review_low" / "labels.csv")}
    assert applied[f"pg/planted_{planted}"] == "cex"
    ws.run("python inference.py data/split --review --model deliverables/<run>", "--out-dir", "review_all", subs=subs)
    assert sorted(os.listdir(ws / "review_all")) == ["review.csv", "review.html", "test", "train", "valid"]
    table = ws.run("python -m ga runs").stdout
    assert name in table and os.path.basename(found) in table and "finished" in table
    rows = ws.run("python -m ga runs deliverables --csv").stdout.splitlines()
    assert rows[0].startswith("name,date,state") and len(rows) == 3
    diff = ws.run("python -m ga runs --diff <A> <B>", subs={"<A>": name, "<B>": os.path.basename(found)}).stdout
    assert "training.epochs" in diff  # the run trained 3 epochs; the test kept the config's


def test_study_config_offline_is_one_line(demo, tmp_path):
    """The README's training command offline: one line naming the weights file, no run folder."""
    ws = Workspace(tmp_path / "study")
    ws.link("data/split", str(demo[0] / "data/split"))
    proc = ws.run("python main.py --config configs/resnet101.yaml", expect=2)
    (line,) = error_lines(proc)
    assert "ImageNet weights for resnet101" in line and "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5" in line
    assert ws.runs() == []


def test_resnet50_command(demo, tmp_path):
    """In-process (main.py runs from a shell in the demo chain): the same argv, shrunk."""
    ws = Workspace(tmp_path / "r50")
    ws.link("data/split", str(demo[0] / "data/split"))
    proc = ws.run("python main.py --config configs/resnet50.yaml --set training.epochs=3 --set model.weights=none",
                  "--set", "data.image_size=[32,32]", "--set", "training.epochs=1", "--set", "training.steps_per_epoch=2",
                  "--set", "data.batch_size=8", "--set", "output.onnx=false", "--set", "output.saved_model=false",
                  "--set", "output.explain=false", here=True)
    (run,) = ws.runs()
    assert ws.printed(proc) == run
    labels = json.load(open(os.path.join(run, "labels.json")))
    assert labels["backbone"] == "resnet50" and labels["preprocessing"] == "resnet_caffe"
    assert json.load(open(os.path.join(run, "metrics.json")))["test_images"] == len(images_under(ws / "data/split/test"))


def study_model_h5(path):
    """A whole-model .h5 made by the study's own model-building code (GAmodel.create_model)
    under tf-keras, random weights, with BatchNorm statistics moved off their defaults so the
    outputs are not all 0 or 1."""
    import tf_keras as tfk
    from tf_keras.layers import BatchNormalization, Dense, Dropout, GlobalAveragePooling2D

    tfk.utils.set_random_seed(3)
    base = tfk.applications.ResNet101(weights=None, include_top=False, input_shape=(224, 224, 3))
    x = GlobalAveragePooling2D()(base.output)
    x = Dense(512, activation="relu")(x)
    x = BatchNormalization()(x)
    x = Dropout(0.4)(x)
    x = Dense(256, activation="relu")(x)
    x = Dropout(0.3)(x)
    x = Dense(1, activation="sigmoid")(x)
    total = len(base.layers)
    for layer in base.layers[:total - total // 10]:
        layer.trainable = False
    model = tfk.Model(inputs=base.input, outputs=x)
    model.compile(optimizer=tfk.optimizers.SGD(learning_rate=0.1, momentum=0.9), loss="binary_crossentropy",
                  metrics=["accuracy"])
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if isinstance(layer, BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma, beta, rng.normal(0, 0.5, mean.shape), rng.uniform(0.5, 4, var.shape)])
    model.save(path)
    return model


@pytest.mark.long
def test_import_the_studys_h5(demo, tmp_path):
    """The study's GAweights_<timestamp>.h5 becomes a ga run folder that predicts what the
    study's pipeline (preprocess_input + predict) predicts, through both engines."""
    from tf_keras.applications.resnet50 import preprocess_input

    ws, _, _ = demo
    h5 = ws / "GAweights_2025-05-01_12-00-00.h5"
    study = study_model_h5(str(h5))
    folder = ws / "crops224"
    folder.mkdir()
    for i, p in enumerate(images_under(ws / "data/split/test")[:4]):
        Image.open(p).convert("RGB").resize((224, 224)).save(folder / f"crop{i}.png")
    files = sorted(str(p) for p in folder.iterdir())
    batch = np.stack([np.asarray(Image.open(f).convert("RGB"), np.float32) for f in files])
    want = study.predict(preprocess_input(batch), verbose=0)[:, 0]
    assert want.std() > 1e-3  # not saturated: the comparison below means something
    out = ws.run("python -m ga.georgia import GAweights_<ts>.h5 --out deliverables/<name>",
                 subs={"GAweights_<ts>.h5": h5, "<name>": "GA_study_import"})
    run = ws.printed(out)
    labels = json.load(open(os.path.join(run, "labels.json")))
    assert labels["classes"] == ["cex", "pg"] and labels["positive_class"] == "pg"
    assert labels["preprocessing"] == "resnet_caffe" and labels["input_size"] == [224, 224]
    assert json.load(open(os.path.join(run, "metrics.json")))["onnx"]["max_abs_diff"] <= 1e-4
    for engine in ("onnx", "keras"):
        ws.run("python inference.py", folder, "--model", run, "--engine", engine, "--output", f"study_{engine}.csv")
        got = {r["path"]: float(r["p_pg"]) for r in read_csv(ws / f"study_{engine}.csv")}
        assert np.abs(np.array([got[f] for f in files]) - want).max() <= 1e-4, engine
    # The imported run works with the rest of inference.py: clustering, evaluation.
    ws.run("python inference.py", folder, "--model", run, "--cluster", "2", "--cluster-features", "map",
           "--cluster-space", "pca2", "--out-dir", "study_clusters")
    assert len(read_csv(ws / "study_clusters/clusters.csv")) == 4
    labelled = tmp_path / "labelled"
    for i, f in enumerate(files):
        os.makedirs(labelled / ["cex", "pg"][i % 2], exist_ok=True)
        shutil.copy(f, labelled / ["cex", "pg"][i % 2])
    ws.run("python inference.py", labelled, "--evaluate", "--model", run, "--out-dir", "study_eval")
    assert json.load(open(ws / "study_eval/metrics.json"))["test_images"] == 4
    again = ws.run("python -m ga.georgia import", h5, "--out", "deliverables/GA_study_import", expect=2)
    assert "not empty" in error_lines(again)[0]
    # `ga import` is the same command: the same weights, the same labels.
    out = ws.run("python -m ga import GAweights_<ts>.h5 --out deliverables/<name>",
                 subs={"GAweights_<ts>.h5": h5, "<name>": "GA_study_import_ga"})
    twin = ws.printed(out)
    assert json.load(open(os.path.join(twin, "labels.json"))) == labels
    ws.run("python inference.py", folder, "--model", twin, "--output", "study_twin.csv")
    assert [r["p_pg"] for r in read_csv(ws / "study_twin.csv")] == [r["p_pg"] for r in read_csv(ws / "study_onnx.csv")]


# ---------------------------------------------------------------------------- the ga command, the Python API


def test_ga_help_lists_the_subcommands(demo):
    ws = demo[0]
    proc = ws.run("python -m ga --help")
    for name in ("split", "train", "infer", "evaluate", "scan", "monitor", "synth", "import", "report"):
        assert re.search(rf"^  {name} +\S", proc.stdout, re.M), name
    bad = ws.run("python -m ga", "frobnicate", expect=2)
    assert "unknown command 'frobnicate'" in bad.stderr and "Traceback" not in bad.stderr


def _same_folder_files(a, b, skip=()):
    """Two output folders hold the same files, and the same bytes in every text file."""
    names = sorted(os.listdir(a))
    assert names == sorted(os.listdir(b))
    for n in names:
        if n.endswith((".csv", ".txt")) and n not in skip:
            assert open(os.path.join(a, n), encoding="utf-8").read() == open(os.path.join(b, n), encoding="utf-8").read(), n


# In-process (the `python -m ga` entry runs from a shell in test_chains.py::test_ga_command_chain, and
# inference.py in the demo chain): the same argv through the same entry functions.
def test_ga_infer_evaluate_scan_give_the_files_of_inference_py(demo):
    ws, run, _ = demo
    ws.run("python -m ga infer data/split/test --recursive --output predictions.csv", "--model", run, here=True)
    ws.run("python inference.py data/split/test --recursive", "--model", run, "--output", "old_predictions.csv", here=True)
    assert read_csv(ws / "predictions.csv") == read_csv(ws / "old_predictions.csv")
    ws.run("python -m ga evaluate data/split/test --model deliverables/<run> --out-dir eval", "--out-dir", "ga_eval",
           subs={"deliverables/<run>": run}, here=True)
    ws.run("python inference.py data/split/test --evaluate", "--model", run, "--out-dir", "old_eval", here=True)
    _same_folder_files(ws / "ga_eval", ws / "old_eval")
    drop = lambda m: {k: v for k, v in m.items() if k != "evaluation_seconds"}  # noqa: E731
    assert drop(json.load(open(ws / "ga_eval/metrics.json"))) == drop(json.load(open(ws / "old_eval/metrics.json")))
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(ws / "frame.png")
    ws.run("python -m ga scan frame.png --tile 300 --model deliverables/<run>", "--tile", "96", "64", "--out-dir",
           "ga_scan", subs={"deliverables/<run>": run}, here=True)
    ws.run("python inference.py frame.png --scan --tile 96 64", "--model", run, "--out-dir", "old_scan", here=True)
    _same_folder_files(ws / "ga_scan", ws / "old_scan")
    assert sorted(os.listdir(ws / "ga_scan/frame_tiles")) == sorted(os.listdir(ws / "old_scan/frame_tiles"))
    # A flag's error names the flag of the command that was typed.
    bad = ws.run("python -m ga evaluate", ws / "nowhere", "--model", run, expect=2, here=True)
    assert error_lines(bad) == [f"error: evaluate: not a folder: {ws / 'nowhere'}"]
    bad = ws.run("python inference.py", ws / "nowhere", "--evaluate", "--model", run, expect=2, here=True)
    assert error_lines(bad) == [f"error: --evaluate: not a folder: {ws / 'nowhere'}"]


# ---------------------------------------------------------------------------- more than two classes


# ---------------------------------------------------------------------------- graphene


@pytest.fixture(scope="module")
def graphene(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("graphene"))
    steps = [
        ws.run("python -m ga.synthetic graphene --out data/graphene --count 1200 --seed 0", "--count", "60",
               "--size", "96"),
        ws.run("python split_data.py --config configs/graphene_cnn4.yaml"),
        ws.run("python main.py --config configs/graphene_cnn4.yaml --set data.image_size=[160,160] "
               "--set data.augment.crop=[120,120] --set data.batch_size=16 --set training.learning_rate=2e-3 "
               "--set training.epochs=30", *TINY_GRAPHENE),
    ]
    (run,) = ws.runs("GC_")
    return ws, run, steps


def test_graphene_chain(graphene):
    ws, run, (gen, split, train) = graphene
    assert len(read_csv(ws / "data/graphene/labels.csv")) == 60
    for s in ("train", "valid", "test"):
        assert read_csv(ws / f"data/graphene_split/{s}/labels.csv")
    labels = json.load(open(os.path.join(run, "labels.json")))
    assert labels["task"] == "multilabel" and labels["classes"] == ["class1", "class2", "class3", "any"]
    assert labels["input_size"] == [36, 36] and labels["resize"] == [48, 48]
    assert set(labels["thresholds"]) == set(labels["classes"])
    assert os.path.isfile(os.path.join(run, "GCthreshold_sweep.png"))
    assert "harmonic_mean_f1" in json.load(open(os.path.join(run, "metrics.json")))


def test_evaluate_multilabel(graphene):
    ws, run, _ = graphene
    ws.run("python inference.py data/graphene_split/test --evaluate", "--model", run, "--out-dir", "eval",
           "--engine", "onnx")  # the run's figures are the float32 model's
    want = json.load(open(os.path.join(run, "metrics.json")))
    got = json.load(open(ws / "eval/metrics.json"))
    for key in ("classes", "test_images", "per_class", "confusion_matrix", "accuracy"):
        assert got[key] == want[key], key
    assert abs(got["harmonic_mean_f1"] - want["harmonic_mean_f1"]) < 1e-9
    assert os.path.isfile(ws / "eval/GCthreshold_sweep.png")


def test_scan_command(graphene):
    ws, run, _ = graphene
    ws.run("python -m ga.synthetic wafer --out data/wafer.png --width 1000 --height 700 --seed 0")
    shutil.copy(ws / "data/wafer.png", ws / "frame.png")
    proc = ws.run("python inference.py frame.png --scan --tile 300")
    tiles = read_csv(ws / "inference_out/frame_tiles.csv")
    # 1000 x 700 with 300 px tiles overlapping by at least 60 px: 4 x 3 tiles.
    assert len(tiles) == 12 and {int(t["x1"]) - int(t["x0"]) for t in tiles} == {300}
    fired = sum(int(t["fired"]) for t in tiles)
    assert f"Frame frame.png: {fired} of 12 tiles marked" in proc.stdout
    assert len(os.listdir(ws / "inference_out/frame_tiles")) == fired
    assert Image.open(ws / "inference_out/frame_scan.jpg").size == (1000, 700)


def test_split_the_graphene_studys_dataset_folder(tmp_path):
    from test_graphene_fidelity import write_graphene_layout

    ws = Workspace(tmp_path / "ws")
    os.makedirs(ws / "path/to")
    dataset, labels, tiffs = write_graphene_layout(ws / "path/to", count=20)
    ws.run("python split_data.py --source path/to/dataset --dest data/graphene_split --ratios 0.6 0.2 0.2",
           "--no-progress")
    names = [r["filename"] for s in ("train", "valid", "test")
             for r in read_csv(ws / f"data/graphene_split/{s}/labels.csv")]
    assert sorted(n.split(".")[0] for n in names) == sorted(n.split(".")[0] for n in labels)
    assert set(tiffs) <= set(names)


def test_scan_a_binary_model_with_the_any_rule(demo):
    ws, run, _ = demo
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(ws / "frame.png")
    proc = ws.run("python inference.py frame.png --scan --tile 96 64 --rule any --model deliverables/<run>",
                  "--out-dir", "scan_any", subs={"deliverables/<run>": run})
    tiles = read_csv(ws / "scan_any/frame_tiles.csv")
    # 300 x 200 with 96 x 64 tiles overlapping by at least 12 px: 4 x 4 tiles
    assert len(tiles) == 16 and {(int(t["x1"]) - int(t["x0"]), int(t["y1"]) - int(t["y0"])) for t in tiles} == {(96, 64)}
    assert [t["fired"] == "1" for t in tiles] == [float(t["p_pg"]) > 0.5 for t in tiles]
    assert f"Frame frame.png: {sum(t['fired'] == '1' for t in tiles)} of 16 tiles marked" in proc.stdout


@pytest.fixture(scope="module")
def contrastive(tmp_path_factory, graphene):
    ws = Workspace(tmp_path_factory.mktemp("contrastive"))
    ws.link("data/graphene_split", str(graphene[0] / "data/graphene_split"))
    tiny_cnn = ["--set", "model.backbone=cnn4", "--set", "model.head.pooling=max"]
    # The study's image and view sizes (200 px, 100 px views) on few images, CNN-4, two epochs.
    ws.run("python -m ga.synthetic graphene --out data/graphene_unlabelled --count 4000 --seed 1", "--count", "30",
           "--size", "200")
    pre = ws.run("python main.py --config configs/graphene_simclr.yaml", *tiny_cnn, "--set", "data.batch_size=8",
                 "--set", "training.epochs=2")
    (gs,) = ws.runs("GS_")
    fine = ws.run("python main.py --config configs/graphene_finetune.yaml "
                  f"--set model.backbone_weights=deliverables/{os.path.basename(gs)}/GSbackbone.weights.h5",
                  *tiny_cnn, *TINY_GRAPHENE, "--set", "training.fine_tune.epochs=1")
    (gc,) = ws.runs("GC_")
    return ws, gs, gc, pre, fine


def test_contrastive_then_fine_tune(contrastive):
    ws, gs, gc, pre, fine = contrastive
    assert ws.printed(pre) == gs
    assert {"GSmodel.keras", "GSbackbone.weights.h5", "GSloss_curve.png", "metrics.json"} <= set(os.listdir(gs))
    m = json.load(open(os.path.join(gs, "metrics.json")))
    assert m["task"] == "contrastive" and m["images"] == 24 and m["validation_images"] == 6  # 20% held out
    # the study's objective: one-way loss at T 0.1, a linear 256-d head, 100 px views of 200 px images
    import yaml

    saved = yaml.safe_load(open(os.path.join(gs, "config.yaml")))
    c = saved["contrastive"]
    assert (c["loss"], c["temperature"], c["head"], c["projection"], c["view_size"]) == ("one_way", 0.1, "linear",
                                                                                         [256], 100)
    assert saved["data"]["image_size"] == [200, 200] and m["loss"] == "one_way"
    shapes = subprocess.run([sys.executable, "-c", "import ga, keras, sys; m = keras.models.load_model(sys.argv[1]); "
                             "print(m.input_shape, m.output_shape, [type(l).__name__ for l in m.layers[-2:]])",
                             os.path.join(gs, "GSmodel.keras")], capture_output=True, text=True, env=ws.env, timeout=300)
    assert shapes.stdout.split("\n")[-2] == "(None, 100, 100, 3) (None, 256) ['Dropout', 'Dense']", shapes.stderr[-2000:]
    history = read_csv(os.path.join(gs, "history.csv"))
    assert len(history) == 2 and all(np.isfinite(float(r["val_loss"])) for r in history)
    assert ws.printed(fine) == gc
    stages = [r["stage"] for r in read_csv(os.path.join(gc, "history.csv"))]
    assert stages == ["1", "1", "2"]
    # The fine-tuned classifier labels images from the shell; the pretraining run is refused.
    test_dir = str(graphene_test_dir(ws))
    proc = ws.run("python inference.py", test_dir, "--model", gc, "--output", "ft.csv", expect=1)
    rows = read_csv(ws / "ft.csv")
    assert [r["path"] for r in rows if not r["error"]] == images_under(test_dir)
    assert [r["path"] for r in rows if r["error"]] == [os.path.join(test_dir, "labels.csv")]  # reported, not hidden
    assert "labels.csv: not an image" in error_lines(proc)[0]
    refused = ws.run("python inference.py", test_dir, "--model", gs, expect=2)
    assert "contrastive pretraining run" in error_lines(refused)[0]


def graphene_test_dir(ws):
    return ws / "data/graphene_split/test"


# ---------------------------------------------------------------------------- scripts and make


def test_make_test_is_what_ci_runs():
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert re.search(r"^make test$", ci, re.M)
    recipe = _makefile_recipe("test")
    assert recipe == ["python -m pytest -q -n auto --dist loadfile"]
    # The venv is made and the package with its test extras installed before the suite.
    stamp = _makefile_recipe("$(STAMP)")
    assert any("-m venv" in l for l in stamp)
    assert any('pip install' in l and "-c $(LOCK)" in l and '".[test]"' in l for l in stamp)  # from the lock


def test_the_lock_pins_every_dependency_inside_its_range():
    """requirements.lock pins each dependency (and test extra) of pyproject.toml once, at a
    version its range admits; the LICENSE pyproject names exists."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))["project"]
    pins = {}
    for line in open(os.path.join(ROOT, "requirements.lock"), encoding="utf-8"):
        if line.strip() and not line.startswith("#"):
            name, version = line.strip().split("==")
            assert name.lower() not in pins, name
            pins[name.lower().replace("_", "-")] = version
    for text in project["dependencies"] + project["optional-dependencies"]["test"]:
        req = Requirement(text)
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not in requirements.lock"
        assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {req.specifier}"
        assert not any(spec.operator == "==" for spec in req.specifier), f"{name} is pinned in pyproject.toml"
    assert project["license"] == "MIT"
    assert "MIT License" in open(os.path.join(ROOT, "LICENSE"), encoding="utf-8").read()


@pytest.mark.long  # about 1-2 min: resolves every dependency against the package index
def test_pip_install_resolves_in_a_fresh_venv_without_the_lock(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    report = tmp_path / "report.json"
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--dry-run", "--quiet", "--report",
                           str(report), ROOT], capture_output=True, text=True, timeout=1200, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = {i["metadata"]["name"].lower() for i in json.load(open(report))["install"]}
    assert {"ga-crystals", "tensorflow", "keras", "onnxruntime"} <= names


def test_make_bench_runs_bench_run_py():
    recipe = _makefile_recipe("bench")
    assert recipe[-1] == "python bench/run.py"
    assert any('".[test,bench]"' in l for l in recipe)  # tf-keras, for the original's ImageDataGenerator


# ---------------------------------------------------------------------------- the list above is complete


def documented_commands():
    """Every command line in the fenced blocks of README.md and docs/**/*.md (continuations
    joined, comments dropped); blocks marked with another language (```text for diagrams and
    file listings, ```json, ```yaml) hold none."""
    found = []
    for doc in DOCS:
        text = open(os.path.join(ROOT, doc), encoding="utf-8").read()
        for lang, block in re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
            if lang not in ("", "sh", "bash", "console"):  # ```text, ```json, ```yaml: no commands
                continue
            for line in block.splitlines():
                body = line.split("  #")[0].rstrip()
                if not body.strip():
                    continue
                if line[:1].isspace() and found:  # continuation of the previous command
                    found[-1] = (found[-1][0], found[-1][1].rstrip("\\").rstrip() + " " + body.strip())
                else:
                    found.append((doc, body.strip()))
    return [(doc, " ".join(cmd.replace("\\", " ").split())) for doc, cmd in found]


def listed_commands():
    """{command: [test names]} from this module's docstring."""
    listed, current = {}, None
    for line in __doc__.splitlines():
        if line.startswith("  $ "):
            current = line[4:].strip()
            listed[current] = []
        elif line.strip().startswith("-> ") and current:
            listed[current] += [t.split(" (")[0].strip() for t in line.strip()[3:].split(",")]
    return listed


def test_every_documented_command_is_tested():
    listed = listed_commands()
    missing = [f"{doc}: {cmd}" for doc, cmd in documented_commands() if cmd not in listed]
    assert not missing, "documented commands with no command test (add them to this module's docstring):\n" + \
        "\n".join(missing)
    only_long = []
    for cmd, tests in listed.items():
        assert tests, cmd
        kinds = [_test_kind(t) for t in tests]
        assert None not in kinds, f"{cmd} -> {tests[kinds.index(None)]}: no such test"
        if "default" not in kinds:
            only_long.append(cmd)
    assert not only_long, "documented commands run only with --long (give each a default-suite test):\n" + \
        "\n".join(only_long)


def _test_kind(test):
    """"default" or "long" for a test named `file::name` (or a name in this module), read from
    its decorators (a parametrised test with a default case is "default"); None if there is no
    such test."""
    module, _, name = test.rpartition("::")
    lines = open(os.path.join(ROOT, "tests", module or "test_commands.py"), encoding="utf-8").read().splitlines()
    at = next((i for i, line in enumerate(lines) if line.startswith(f"def {name}(")), None)
    if at is None:
        return None
    start = at
    while start > 0 and lines[start - 1].strip() and not lines[start - 1].startswith(("def ", "class ", "    ")):
        start -= 1
    decorators = "\n".join(lines[start:at])
    return "long" if re.search(r"^@pytest\.mark\.long\b", decorators, re.M) else "default"


def test_the_documented_command_check_tells_long_tests_apart():
    assert _test_kind("test_import_the_studys_h5") == "long"
    assert _test_kind("test_make_demo_chain") == "default"
    assert _test_kind("test_backbones.py::test_every_family_trains_exports_and_explains") == "default"  # FAST cases
    assert _test_kind("test_backbones.py::test_backbones_bench_command") == "long"
    assert _test_kind("test_no_such_test") is None
