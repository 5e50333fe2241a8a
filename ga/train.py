"""One entry, `train(...) -> run_dir`: seeds, devices, strategy, data, model, fit, deliverables.

The run folder is created with a RUNNING marker, the resolved config and labels.json
first; history.csv and train.log grow while training; weights, reports, figures, the ONNX
export, run.json and the model card are written after `fit`; the marker goes last.
"""

import dataclasses
import logging
import os
import platform
import subprocess
import sys
import time
import warnings

from ga.errors import ConfigError, GAError

log = logging.getLogger(__name__)


class TrainingError(GAError):
    """Training could not produce a usable model (e.g. the loss became NaN)."""


def _configure_devices(device):
    """Must run before TensorFlow touches a device."""
    import tensorflow as tf

    if device == "cpu":
        # Really hide the GPUs (the original's "use CPU" switch only printed a message).
        tf.config.set_visible_devices([], "GPU")
    n = int(os.environ.get("GA_LOGICAL_CPUS", "0") or 0)
    if n > 1:
        # Split the CPU into logical devices: lets `distribution: mirrored` run without GPUs.
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)


def _strategy(cfg):
    import tensorflow as tf

    kind = cfg.training.distribution
    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("training.distribution: multi_worker needs the TF_CONFIG environment variable "
                              "describing the cluster (see the README)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy()
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=cpus)


def _precision_policy(cfg):
    import keras
    import tensorflow as tf

    want = cfg.training.mixed_precision
    if want == "auto":
        want = "float32"
        for gpu in tf.config.list_physical_devices("GPU"):
            cc = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
            if cc >= (8, 0):
                want = "mixed_bfloat16"
            elif cc >= (7, 0):
                want = "mixed_float16"
    keras.mixed_precision.set_global_policy(want)
    return want


def _optimizer(t):
    import keras

    wd = t.weight_decay or None
    if t.optimizer == "sgd":
        return keras.optimizers.SGD(t.learning_rate, momentum=t.momentum, nesterov=t.nesterov, weight_decay=wd)
    if t.optimizer == "adamw":
        return keras.optimizers.AdamW(t.learning_rate, weight_decay=t.weight_decay)
    return keras.optimizers.Adam(t.learning_rate, weight_decay=wd)


def compile_model(model, cfg, classes):
    """Compile with BCE, accuracy, AUC and the per-class precision/recall/F1 metrics."""
    import keras

    from ga.layers import class_metrics

    task = cfg.model.task
    thr = cfg.model.threshold
    metrics = [
        keras.metrics.BinaryAccuracy(name="accuracy", threshold=thr),
        keras.metrics.AUC(name="auc", multi_label=task == "multilabel", num_labels=len(classes) if task == "multilabel" else None),
        *class_metrics(classes, task, thr),
    ]
    jit = {"auto": "auto", "true": True, "false": False}[cfg.training.jit_compile]
    model.compile(optimizer=_optimizer(cfg.training), loss=keras.losses.BinaryCrossentropy(), metrics=metrics,
                  jit_compile=jit)
    return model


def train(config_path=None, overrides=(), resume=None, device="auto", unsafe=False):
    """Train from a config file (or resume a run folder) and write every deliverable.

    Args:
        config_path: YAML configuration (ignored when resuming).
        overrides: `--set` strings.
        resume: an interrupted run folder to continue.
        device: "auto" or "cpu" (hide GPUs).
        unsafe: accepted for symmetry with inference; resuming rebuilds the model from the
            run's config and restores weights, so no saved code is ever loaded.

    Returns:
        The run folder path.
    """
    from ga import runs
    from ga.config import check_paths, load_config

    _configure_devices(device)
    if resume:
        if not os.path.isdir(resume) or not os.path.isfile(os.path.join(resume, "config.yaml")):
            raise ConfigError(f"--resume: {resume} is not a run folder (no config.yaml)")
        if runs.is_complete(resume):
            raise ConfigError(f"--resume: {resume} is already complete; start a new run instead")
        cfg = load_config(os.path.join(resume, "config.yaml"), overrides)
        classes = [] if cfg.model.task == "contrastive" else runs.read_labels(resume)["classes"]
        _check_backup(resume)
    else:
        cfg = load_config(config_path, overrides)
        classes = None
    check_paths(cfg)
    return _train(cfg, classes, resume)


def _check_backup(run_dir):
    """A damaged checkpoint is a one-line error, not a traceback from inside fit."""
    import h5py

    path = os.path.join(run_dir, "backup", "latest.weights.h5")
    if os.path.isfile(path):
        try:
            with h5py.File(path, "r"):
                pass
        except OSError as exc:
            raise ConfigError(f"--resume: the checkpoint {path} is damaged ({exc}); delete the backup folder to "
                              f"restart this run from epoch 1, or start a new run") from None


def _train(cfg, classes, resume):
    import keras
    import tensorflow as tf

    from ga import runs
    from ga.config import dump_config
    from ga.data import Datasets, augmentation, build_datasets, model_input_size, read_classes
    from ga.log import add_file_log
    from ga.model import backbone_of, build_encoder, build_model, set_trainable_fraction

    # Keras warns when a dataset of unknown length ends an epoch (ignore_errors hides the
    # length); that end is the intended one here.
    warnings.filterwarnings("ignore", message="Your input ran out of data")
    warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed")
    # Grappler's arithmetic optimizer rewrites large gradient sums into AccumulateNV2 with
    # temporary variables, which collide between steps on deep ResNets ("AlreadyExistsError:
    # Resource __per_step_0/.../AddOpsRewrite.../tmp_var", seen on ResNet-101, TF 2.21, CPU).
    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})
    keras.utils.set_random_seed(cfg.training.seed)
    if cfg.training.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = _strategy(cfg)
    policy = _precision_policy(cfg)
    contrastive = cfg.model.task == "contrastive"
    schedule = cfg.training.schedule
    classes = [] if contrastive else (classes or read_classes(cfg))

    # The model is built (and its weights found) before a run folder exists, so a
    # configuration or weights problem leaves nothing behind.
    with strategy.scope():
        if contrastive:
            from ga.contrastive import SimCLR

            model = build_encoder(cfg)
            fit_model = SimCLR(model, cfg.contrastive.temperature)
            fit_model.compile(optimizer=_optimizer(cfg.training))
        else:
            model = build_model(cfg, len(classes) if cfg.model.task == "multilabel" else 1)
            if schedule != "standard":
                # Linear stage: the backbone is frozen and its BatchNorm runs in inference mode.
                set_trainable_fraction(backbone_of(model), 0.0)
            fit_model = model
            aug = cfg.data.augment
            if aug.placement == "model":
                layer = augmentation(aug, cfg.training.seed)
                if layer is not None:
                    # Augmentation runs on the accelerator; the saved model stays the plain one.
                    fit_model = keras.Sequential([layer, model], name="train_with_augmentation")
            compile_model(fit_model, cfg, classes)
    if contrastive:
        from ga.contrastive import build_pairs

        data = Datasets(build_pairs(cfg), None, None, [], "contrastive", model_input_size(cfg))
    else:
        data = build_datasets(cfg, classes)

    run_dir = resume or runs.new_run_dir(cfg.output)
    handler = add_file_log(os.path.join(run_dir, "train.log"))
    try:
        if not resume:
            dump_config(cfg, os.path.join(run_dir, "config.yaml"))
            runs.write_labels(run_dir, runs.labels_document(cfg, classes))
        for p, reason in data.skipped():
            log.warning("skipped image %s: %s", p, reason)
        log.info("run folder %s; %s; %s; %d replica(s); precision %s", run_dir,
                 f"classes {classes} (index order)" if classes else "contrastive pretraining",
                 cfg.model.backbone, strategy.num_replicas_in_sync, policy)

        history_path = os.path.join(run_dir, "history.csv")
        stage1_doc = os.path.join(run_dir, "stage1.json")
        two_stage = schedule == "fine_tune"
        seconds, handles = 0.0, None
        if not (two_stage and os.path.isfile(stage1_doc)):
            handles, initial = _fit_stage(cfg, run_dir, fit_model, data, classes, "backup",
                                          cfg.training.epochs, 0, 1 if two_stage else None)
            seconds = handles["clock"].seconds
        if two_stage:
            handles, initial, seconds = _fine_tune_stage(cfg, run_dir, model, fit_model, data, classes, strategy,
                                                         stage1_doc, handles, seconds)
        clock = handles["clock"]
        fit_info = _fit_summary(cfg, handles, history_path, data, initial)
        if two_stage:
            fit_info["fit_seconds"] = round(seconds, 2)
            fit_info["linear_stage_epochs"] = _read_json(stage1_doc)["epochs"]
        if clock.nan:
            raise TrainingError(
                f"training stopped at epoch {(clock.last_epoch or 0) + 1}: the loss became NaN "
                f"(training.learning_rate {cfg.training.learning_rate:g} is probably too high); run folder {run_dir}"
            )
        if contrastive:
            _deliver_contrastive(cfg, run_dir, model, data, fit_info, policy, strategy)
        else:
            _deliver(cfg, run_dir, model, data, fit_info, policy, strategy)
        runs.mark_complete(run_dir)
        log.info("run complete: %s", run_dir)
        return run_dir
    finally:
        logging.getLogger("ga").removeHandler(handler)
        handler.close()


def _fit_stage(cfg, run_dir, fit_model, data, classes, backup, epochs, first_epoch, stage):
    """One `fit` call with the run's callbacks; resumes from the stage's checkpoint.

    Returns:
        (callback handles, the epoch a resumed stage restarted at, or 0 when not resumed).
    """
    from ga.callbacks import build_callbacks, resume_epoch, trim_history

    history_path = os.path.join(run_dir, "history.csv")
    initial = max(first_epoch, resume_epoch(run_dir, backup))
    trim_history(history_path, initial)
    if initial:
        log.info("%s at epoch %d", "resuming" if initial > first_epoch else "continuing", initial + 1)
    callbacks, handles = build_callbacks(cfg, run_dir, classes, backup=backup, stage=stage)
    # BackupAndRestore records a restored epoch on the model (`_initial_epoch`, Keras 3.15)
    # and `fit` prefers it to its own argument, also in a later `fit` of the same model.
    if getattr(fit_model, "_initial_epoch", None) is not None:
        fit_model._initial_epoch = None
    fit_model.fit(
        data.train.dataset,
        validation_data=data.valid.dataset if data.valid is not None else None,
        initial_epoch=first_epoch,
        epochs=epochs,
        steps_per_epoch=cfg.training.steps_per_epoch,
        callbacks=callbacks,
        verbose=1 if sys.stdout.isatty() else 2,
        shuffle=False,  # the tf.data pipeline shuffles
    )
    return handles, initial if initial > first_epoch else 0


def _fine_tune_stage(cfg, run_dir, model, fit_model, data, classes, strategy, stage1_doc, stage1_handles, seconds):
    """The second stage of `schedule: fine_tune`: every layer trains at the second learning
    rate. The linear stage's end (epochs and weights) is recorded first, so `--resume` of an
    interrupted second stage starts from it. `stage1_handles` is None when this process
    resumed after the linear stage had finished.

    Returns:
        (callback handles, the epoch a resumed stage restarted at or 0, both stages' fit seconds).
    """
    from ga.io import atomic_path, atomic_write_json
    from ga.model import backbone_of, set_trainable_fraction

    ft = cfg.training.fine_tune
    weights = os.path.join(run_dir, "stage1.weights.h5")
    if stage1_handles is not None:
        if stage1_handles["clock"].nan:
            return stage1_handles, 0, seconds
        done = len(_history(os.path.join(run_dir, "history.csv")))
        with atomic_path(weights) as tmp:
            model.save_weights(tmp)
        atomic_write_json(stage1_doc, {"epochs": done, "seconds": round(seconds, 2)})
    else:
        model.load_weights(weights)  # resumed after the linear stage had finished
        seconds = _read_json(stage1_doc).get("seconds", 0.0)
    done = _read_json(stage1_doc)["epochs"]
    log.info("linear stage done after %d epoch(s); all layers train for up to %d more at lr %g", done, ft.epochs,
             ft.learning_rate)
    with strategy.scope():
        # BatchNorm stays in inference mode with its pretrained statistics: switching it to
        # batch statistics of small fine-tuning batches undoes what the linear stage learnt.
        set_trainable_fraction(backbone_of(model), 1.0, freeze_batchnorm=True)
        stage2 = dataclasses.replace(cfg, training=dataclasses.replace(
            cfg.training, learning_rate=ft.learning_rate, weight_decay=ft.weight_decay))
        compile_model(fit_model, stage2, classes)
    handles, initial = _fit_stage(cfg, run_dir, fit_model, data, classes, "backup_fine_tune", done + ft.epochs,
                                  done, 2)
    return handles, initial, seconds + handles["clock"].seconds


def _history(path):
    """The rows of a run's history.csv (none before the first epoch)."""
    import csv

    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _read_json(path):
    import json

    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _fit_summary(cfg, handles, history_path, data, initial):
    f1, early, clock = handles["f1"], handles["early"], handles["clock"]
    rows = _history(history_path)
    epochs = len(rows)
    if clock.nan:
        reason = "nan_loss"
    elif f1.stopped_epoch is not None:
        reason = "f1_threshold"
    elif early.stopped_epoch > 0:
        reason = "early_stopping"
    else:
        reason = "max_epochs"
    monitor = cfg.training.early_stopping.monitor
    best_epoch = None
    # A two-stage schedule restores the best epoch of its last stage.
    last_stage = rows[-1].get("stage") if rows else None
    vals = [(float(r[monitor]), i) for i, r in enumerate(rows)
            if r.get(monitor) not in (None, "", "nan") and r.get("stage") == last_stage]
    if vals:
        best_epoch = (min(vals) if "loss" in monitor else max(vals))[1] + 1
    best_f1 = {c: max((float(r.get(f"val_f1_{c}", "nan") or "nan") for r in rows), default=float("nan")) for c in data.classes}
    steps = cfg.training.steps_per_epoch
    seen = clock.epochs * (steps * cfg.data.batch_size if steps else data.train.size)
    info = {
        "epochs": epochs,
        "epochs_this_process": clock.epochs,
        "resumed_at_epoch": initial + 1 if initial else None,
        "stop_reason": reason,
        "best_epoch": best_epoch,
        "best_val_f1": best_f1,
        "fit_seconds": round(clock.seconds, 2),
        "train_images_per_second": round(seen / clock.seconds, 2) if clock.seconds else None,
    }
    lines = [
        "training summary",
        f"  epochs run       {epochs} ({clock.epochs} in this process){' resumed at epoch ' + str(initial + 1) if initial else ''}",
        f"  stopped because  {reason.replace('_', ' ')}",
        f"  best epoch       {best_epoch} by {monitor}" + (" (weights restored from it)" if cfg.training.early_stopping.restore_best_weights else ""),
        *(["  best val F1      " + ", ".join(f"{c} {v:.4f}" for c, v in best_f1.items())] if best_f1 else []),
        f"  wall time        {clock.seconds:.1f} s, {info['train_images_per_second']} training images/s (validation included)",
    ]
    log.info("\n".join(lines))
    return info


def _deliver(cfg, run_dir, model, data, fit_info, policy, strategy):
    from ga import analysis, export

    prefix = cfg.output.prefix
    t = time.perf_counter()
    paths = export.save_keras(model, run_dir, prefix)
    if cfg.model.task == "multilabel":
        _tune_thresholds(cfg, run_dir, model, data)
    y_true, y_prob = analysis.predict_split(model, data.test)
    report = analysis.write_reports(run_dir, cfg, data.classes, y_true, y_prob, fit_info, paths=data.test.paths)
    if cfg.output.onnx:
        onnx_info = export.export_onnx(model, run_dir, cfg, data)
        report = analysis.update_metrics(run_dir, {"onnx": onnx_info})
    export.write_model_card(run_dir, cfg, data, report)
    _write_run_json(run_dir, cfg, data, policy, strategy, fit_info)
    log.info("deliverables written in %.1f s: %s", time.perf_counter() - t, ", ".join(os.path.basename(p) for p in paths))


def _deliver_contrastive(cfg, run_dir, model, data, fit_info, policy, strategy):
    """A pretraining run's deliverables: the encoder (backbone and projection head) as
    <prefix>model.keras and <prefix>weights.h5, the backbone's weights alone as
    <prefix>backbone.weights.h5 (for model.backbone_weights), the loss curve, metrics.json."""
    from ga import analysis, export
    from ga.io import atomic_path, atomic_write_json
    from ga.model import backbone_of

    prefix = cfg.output.prefix
    t = time.perf_counter()
    paths = export.save_keras(model, run_dir, prefix)
    backbone = os.path.join(run_dir, f"{prefix}backbone.weights.h5")
    with atomic_path(backbone) as tmp:
        backbone_of(model).save_weights(tmp)
    paths.append(backbone)
    history = os.path.join(run_dir, "history.csv")
    analysis.plot_history(history, os.path.join(run_dir, f"{prefix}loss_curve.png"))
    losses = [float(r["loss"]) for r in _history(history)]
    atomic_write_json(os.path.join(run_dir, "metrics.json"), {
        "task": "contrastive",
        "images": data.train.size,
        "temperature": cfg.contrastive.temperature,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "best_loss": min(losses) if losses else None,
        "backbone_weights": os.path.basename(backbone),
        "training": fit_info,
    })
    _write_run_json(run_dir, cfg, data, policy, strategy, fit_info)
    log.info("pretraining loss %s -> %s; backbone weights for fine-tuning: %s", losses[0] if losses else None,
             losses[-1] if losses else None, backbone)
    log.info("deliverables written in %.1f s: %s", time.perf_counter() - t, ", ".join(os.path.basename(p) for p in paths))


def _tune_thresholds(cfg, run_dir, model, data):
    """Multi-label: per-class thresholds that maximise validation F1, into labels.json."""
    from ga import analysis, runs

    y_true, y_prob = analysis.predict_split(model, data.valid)
    grid, curves, best = analysis.threshold_sweep(data.classes, y_true, y_prob)
    analysis.plot_threshold_sweep(grid, curves, best, os.path.join(run_dir, f"{cfg.output.prefix}threshold_sweep.png"))
    runs.write_labels(run_dir, runs.labels_document(cfg, data.classes, thresholds=best))
    log.info("validation-tuned thresholds: %s", ", ".join(f"{c} {t:.2f}" for c, t in best.items()))


def _git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(os.path.abspath(__file__)))
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _sha256_file(path):
    import hashlib

    if not os.path.isfile(path):
        return None
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _list_hash(paths, labels, root):
    import hashlib

    h = hashlib.sha256()
    for p, y in zip(paths, labels):
        h.update(f"{os.path.relpath(p, root)}\t{list(map(float, y))}\n".encode("utf-8"))
    return h.hexdigest()


def _write_run_json(run_dir, cfg, data, policy, strategy, fit_info):
    import importlib.metadata as md

    import tensorflow as tf

    from ga import __version__
    from ga.io import atomic_write_json

    versions = {"python": platform.python_version(), "ga": __version__}
    for pkg in ("tensorflow", "keras", "numpy", "scikit-learn", "tf2onnx", "onnx", "onnxruntime", "pillow"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    dirs = dict(zip(("train", "valid", "test"), cfg.data.dirs()))
    splits = [s for s in ("train", "valid", "test") if getattr(data, s) is not None]
    doc = {
        "versions": versions,
        "seed": cfg.training.seed,
        "deterministic": cfg.training.deterministic,
        "git_commit": _git_commit(),
        "command": " ".join(sys.argv),
        "device": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
            "strategy": type(strategy).__name__,
            "replicas": strategy.num_replicas_in_sync,
            "precision_policy": policy,
        },
        "data": {
            "split_manifest_sha256": _sha256_file(os.path.join(cfg.data.split_root, "manifest.csv")),
            "file_list_sha256": {s: _list_hash(getattr(data, s).paths, getattr(data, s).labels, dirs[s])
                                 for s in splits},
            "images": {s: getattr(data, s).size for s in splits},
            "skipped": [{"path": p, "reason": r} for p, r in data.skipped()],
        },
        "fit": fit_info,
    }
    atomic_write_json(os.path.join(run_dir, "run.json"), doc)
