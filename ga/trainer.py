"""One entry, `train(cfg) -> run_dir`, read as its table of contents:

1. build: TensorFlow set-up, distribution strategy, precision, the model (and, for
   contrastive pretraining, its SimCLR wrapper), the datasets; all before a run folder
   exists, so a configuration or weights problem leaves nothing behind;
2. fit each stage of the schedule (`stages`): one stage, or a linear stage then every layer
   (`fine_tune`), each with its own checkpoint folder so `--resume` continues either;
3. deliver: weights, reports, figures, the ONNX export, the model card (`ga.analysis`,
   `ga.export`), then provenance (`ga.runs.write_run_json`); the RUNNING marker goes last.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

from ga import runs, tracking
from ga.config import (
    Config,
    TrainingConfig,
    check_paths,
    dump_config,
    load_config,
    model_input_size,
)
from ga.distributed import (
    collective_errors,
    is_chief,
    lost_worker,
    make_strategy,
    seed_scratch,
    sharded_inputs,
    shard_log,
    synchronize_batchnorm,
    weights_digest,
    worker_count,
)
from ga.errors import ConfigError, DataError, TrainingError, one_line
from ga.files import remove_temporaries
from ga.task_text import text_of
from ga.tasks import get_task

log = logging.getLogger(__name__)


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
        return make_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy()
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=cpus)


def _precision_policy(cfg):
    """Set Keras's global precision policy for training.mixed_precision; returns (policy, why)."""
    import keras
    import tensorflow as tf

    from ga.hardware import choose_precision

    gpus = [tf.config.experimental.get_device_details(g).get("compute_capability", (0, 0))
            for g in tf.config.list_physical_devices("GPU")]
    policy, why = choose_precision(cfg.training.mixed_precision, gpus, backbone=cfg.model.backbone)
    keras.mixed_precision.set_global_policy(policy)
    return policy, why


def _optimizer(t, output_layer=None):
    """The optimizer of training config `t`; weight decay skips the variables `t.no_decay`
    names (`output_bias` needs `output_layer`, the delivered model's last layer)."""
    import keras

    wd = t.weight_decay or None
    b1, b2 = t.betas
    if t.optimizer == "sgd":
        opt = keras.optimizers.SGD(t.learning_rate, momentum=t.momentum, nesterov=t.nesterov, weight_decay=wd)
    elif t.optimizer == "adamw":
        opt = keras.optimizers.AdamW(t.learning_rate, weight_decay=t.weight_decay, beta_1=b1, beta_2=b2)
    else:
        opt = keras.optimizers.Adam(t.learning_rate, weight_decay=wd, beta_1=b1, beta_2=b2)
    if wd:
        names = (["bias"] if "bias" in t.no_decay else []) + (["gamma", "beta"] if "batchnorm" in t.no_decay else [])
        bias = getattr(output_layer, "bias", None)
        exact = [bias] if "output_bias" in t.no_decay and bias is not None else []
        opt.exclude_from_weight_decay(var_list=exact, var_names=names)
    return opt


def compile_model(model: Any, cfg: Config, classes: Sequence[str], target: Any = None) -> Any:
    """Compile `model` (`target`: the delivered model inside it, default itself) with the
    task's cross-entropy (binary or categorical), accuracy, AUC (one-vs-rest macro average
    over classes for multiclass and multi-label) and the per-class precision/recall/F1
    metrics; the optimizer's output_bias rule reads `target`'s last layer."""
    task = get_task(cfg)
    loss = task.loss(cfg.training.label_smoothing)
    metrics = task.compile_metrics(classes, cfg.model.threshold)
    jit = {"auto": "auto", "true": True, "false": False}[cfg.training.jit_compile]
    optimizer = _optimizer(cfg.training, (target or model).layers[-1])
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit)
    prebuild(model, metrics, task.units(classes))
    return model


def prebuild(model: Any, metrics: Sequence[Any] = (), units: int = 1) -> None:
    """Create the optimizer's slots and the metrics' variables now, eagerly. Without a
    distribution strategy Keras creates them inside the first trace of the train step, and
    TensorFlow then traces that step a second time (a function that created variables is
    traced again without): that second trace is a few seconds on CNN-4 and tens of seconds
    on ResNet-101. The metrics see one zero row of the output's width and are reset."""
    import numpy as np

    if model.optimizer is not None and model.built and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    zeros = np.zeros((1, units), dtype="float32")
    for metric in metrics:
        metric.update_state(zeros, zeros)
        metric.reset_state()


def _labels_with_polarity(cfg, classes, data):
    """labels.json, with the polarity of the training crops (`ga.monitoring.crops.crop_polarity`): the
    monitor turns a frame's crops over when its particles are the other way round."""
    from ga.monitoring.crops import crop_polarity

    doc = runs.labels_document(cfg, classes)
    paths = list(getattr(data.train, "paths", None) or []) if classes else []
    if paths:
        doc["crop_polarity"], share = crop_polarity(paths)
        log.info("training crops: particles %s (%.0f%% of a sample of %d agree)", doc["crop_polarity"]
                 if doc["crop_polarity"] != "mixed" else "bright in some, dark in others", 100 * share, min(200, len(paths)))
    return doc


def train(cfg: Config | str | None = None, resume: str | None = None, overrides: Sequence[str] = (),
          device: str = "auto") -> str | None:
    """Train (or resume an interrupted run) and write every deliverable.

    Args:
        cfg: a Config, or the path of a YAML configuration (ignored when resuming).
        resume: an interrupted run folder to continue (its own config.yaml is used).
        overrides: `--set` strings applied to the configuration read from a file.
        device: "auto" or "cpu" (hide GPUs).

    Returns:
        The run folder path (None on a non-chief worker of a multi-worker run).
    """
    _configure_devices(device)
    classes = None
    if resume:
        cfg, classes = _resumed(resume, overrides)
    elif not isinstance(cfg, Config):
        cfg = load_config(cfg, overrides)
    check_paths(cfg)
    from ga.data import release_iterators

    try:
        return _run(cfg, classes, resume)
    finally:
        release_iterators()


def _resumed(run_dir, overrides):
    """The configuration and class list of an interrupted run."""
    if not os.path.isdir(run_dir) or not os.path.isfile(os.path.join(run_dir, "config.yaml")):
        raise ConfigError(f"{run_dir} is not a run folder (no config.yaml)", arg="resume")
    if runs.is_complete(run_dir):
        raise ConfigError(f"{run_dir} is already complete; start a new run instead", arg="resume")
    cfg = load_config(os.path.join(run_dir, "config.yaml"), overrides)
    classes = runs.read_labels(run_dir)["classes"] if get_task(cfg).classifier else []
    _check_backup(run_dir)
    return cfg, classes


def _check_backup(run_dir):
    """A damaged checkpoint is a one-line error, not a traceback from inside fit."""
    import h5py

    path = os.path.join(run_dir, "backup", "latest.weights.h5")
    if os.path.isfile(path):
        try:
            with h5py.File(path, "r"):
                pass
        except OSError as exc:
            raise ConfigError(f"the checkpoint {path} is damaged ({exc}); delete the backup folder to "
                              f"restart this run from epoch 1, or start a new run", arg="resume") from None


def _run(cfg, classes, resume):
    from ga.log import add_file_log

    tracking.check_available(cfg)
    _set_up_tensorflow(cfg)
    strategy = _strategy(cfg)
    precision, precision_why = _precision_policy(cfg)
    contrastive = not get_task(cfg).classifier
    classes = [] if contrastive else (classes or _read_classes(cfg))
    built = _build(cfg, classes, strategy)
    data = _datasets(cfg, classes)
    weights = None if contrastive else class_weights(cfg, data)

    chief = is_chief(strategy)
    # A non-chief worker of a multi-worker run writes to a temporary folder, removed at the end;
    # resuming, it starts from a copy of the run folder's checkpoints (never written to here).
    scratch = None if chief else tempfile.mkdtemp(prefix="ga_worker_")
    if scratch and resume:
        seed_scratch(resume, scratch)
    run_dir = scratch or resume or runs.new_run_dir(cfg.output)
    handler = add_file_log(os.path.join(run_dir, "train.log"))
    try:
        if resume and not scratch:
            for name in remove_temporaries(run_dir):  # an atomic write the kill interrupted
                log.info("removed %s, left by the interrupted run", name)
        if not resume:
            dump_config(cfg, os.path.join(run_dir, "config.yaml"))
            runs.write_labels(run_dir, _labels_with_polarity(cfg, classes, data))
        for p, reason in data.skipped():
            log.warning("skipped image %s: %s", p, reason)
        log.info("run folder %s; %s; %s; %d replica(s); precision %s (%s)", run_dir,
                 f"classes {classes} (index order)" if classes else "contrastive pretraining",
                 cfg.model.backbone, strategy.num_replicas_in_sync, precision, precision_why)
        if built.init_from:
            log.info("model weights initialised from %s", built.init_from)
        _log_class_counts(cfg, data, weights)
        if chief and cfg.output.preview and not contrastive:
            _preview(cfg, run_dir, data)
        try:
            fit_info = _fit_stages(cfg, run_dir, built, data, classes, strategy, weights)
        except collective_errors(strategy) as exc:
            raise lost_worker(exc, resume if scratch else run_dir) from None
        if cfg.training.distribution == "multi_worker":
            synchronize_batchnorm(built.model, False)
            log.info("final weights sha256 %s; trainable weights sha256 %s", weights_digest(built.model),
                     weights_digest(built.model, trainable=True))
        if not chief:
            log.info("this worker is done; the chief writes the run folder")
            return None
        _deliver_run(cfg, run_dir, built, data, fit_info, classes, strategy, (precision, precision_why))
        return run_dir
    except BaseException as exc:  # the marker says why, for `ga runs`; the error goes on up
        if not scratch:
            runs.mark_failed(run_dir, "interrupted" if isinstance(exc, KeyboardInterrupt) else one_line(exc))
        raise
    finally:
        logging.getLogger("ga").removeHandler(handler)
        handler.close()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def prepare(cfg: Config, device: str = "auto") -> tuple[Built, Any, list[str]]:
    """What a fit starts from, as `train` builds it: TensorFlow set up (seed, precision
    policy), the model compiled with the config's optimizer (its first stage: fine_tune's
    linear stage) and the datasets. Returns (Built, Datasets, classes); the learning-rate
    finder (`ga.lrfind`) fits this."""
    _configure_devices(device)
    check_paths(cfg)
    _set_up_tensorflow(cfg)
    strategy = _strategy(cfg)
    _precision_policy(cfg)
    classes = _read_classes(cfg) if get_task(cfg).classifier else []
    return _build(cfg, classes, strategy), _datasets(cfg, classes), classes


def _deliver_run(cfg, run_dir, built, data, fit_info, classes, strategy, precision):
    """Every deliverable of a finished run, from a float32 copy of the trained model; then
    run.json, and the RUNNING marker goes."""
    from ga.export import release_memory

    t = time.perf_counter()
    for name in ("train_function", "test_function", "predict_function"):  # the fit's traced graphs
        setattr(built.fit_model, name, None)
    release_memory()
    model = _float32_model(cfg, built.model, classes)
    paths = (_deliver if get_task(cfg).classifier else _deliver_contrastive)(cfg, run_dir, model, data, fit_info)
    runs.write_run_json(run_dir, cfg, data, precision[0], strategy, fit_info, worker_count(strategy), precision[1])
    log.info("deliverables written in %.1f s: %s", time.perf_counter() - t, ", ".join(os.path.basename(p) for p in paths))
    runs.mark_complete(run_dir)
    log.info("run complete: %s", run_dir)
    tracking.log_run(cfg, run_dir)


def _float32_model(cfg, model, classes):
    """`model` itself when it computes in float32, else a float32 copy with its weights (a
    mixed-precision run's variables are float32 already): what is saved, exported and
    evaluated does not depend on the training precision."""
    import keras

    from ga.model import build_encoder, build_model

    if all(layer.dtype_policy.compute_dtype == "float32" for layer in model._flatten_layers()):
        return model
    keras.mixed_precision.set_global_policy("float32")
    task = get_task(cfg)
    copy = build_model(cfg, task.units(classes)) if task.classifier else build_encoder(cfg)
    copy.set_weights(model.get_weights())
    log.info("delivered in float32 (trained in %s)", model.dtype_policy.name)
    return copy


# ---------------------------------------------------------------------------- 1. build


def _set_up_tensorflow(cfg):
    import keras
    import tensorflow as tf

    # Keras warns when a dataset of unknown length ends an epoch (ignore_errors hides the
    # length); that end is the intended one here.
    warnings.filterwarnings("ignore", message="Your input ran out of data")
    warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed")
    # Grappler's arithmetic optimizer rewrites large gradient sums into AccumulateNV2 with
    # temporary variables, which collide between steps on deep ResNets ("AlreadyExistsError:
    # Resource __per_step_0/.../AddOpsRewrite.../tmp_var", seen on ResNet-101, TF 2.21, CPU).
    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})
    keras.utils.set_random_seed(cfg.training.seed)
    _op_determinism(cfg.training.deterministic)


def _op_determinism(on):
    """TensorFlow's op determinism as training.deterministic says. It is process-wide, so a
    run without it turns off what an earlier run in the same process turned on (TensorFlow
    exports only the switch on; the switch off is its framework's own)."""
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    if on:
        tf.config.experimental.enable_op_determinism()
    elif getattr(tf_config, "is_op_determinism_enabled", lambda: False)():
        tf_config.disable_op_determinism()


def _read_classes(cfg):
    from ga.data import read_classes

    return read_classes(cfg)


@dataclass
class Built:
    """The model that is saved and the one `fit` trains (the same, or a wrapper around it:
    SimCLR, or augmentation layers placed in the model)."""

    model: object
    fit_model: object
    init_from: str = None  # the file model.init_weights named, when given


def _build(cfg, classes, strategy):
    import keras

    from ga.data import augmentation
    from ga.model import backbone_of, build_encoder, build_model, load_init_weights, set_trainable_fraction

    with strategy.scope():
        if not get_task(cfg).classifier:
            from ga.contrastive import SimCLR

            model = build_encoder(cfg)
            init = load_init_weights(model, cfg.model.init_weights) if cfg.model.init_weights else None
            synchronize_batchnorm(model, _sync_batchnorm(cfg))
            fit_model = SimCLR(model, cfg.contrastive.temperature, cfg.contrastive.loss)
            fit_model.compile(optimizer=_optimizer(cfg.training, model.layers[-1]))
            prebuild(fit_model)
            return Built(model, fit_model, init)
        model = build_model(cfg, get_task(cfg).units(classes))
        init = load_init_weights(model, cfg.model.init_weights) if cfg.model.init_weights else None
        synchronize_batchnorm(model, _sync_batchnorm(cfg))
        if cfg.training.schedule != "standard":
            # Linear stage: the backbone is frozen and its BatchNorm runs in inference mode.
            set_trainable_fraction(backbone_of(model), 0.0)
        fit_model = model
        layer = augmentation(cfg.data.augment, cfg.training.seed) if cfg.data.augment.placement == "model" else None
        if layer is not None:
            # Augmentation runs on the accelerator; the saved model stays the plain one.
            # Built on the model's input, as fit's BackupAndRestore needs a built model.
            fit_model = keras.Sequential([keras.Input(model.input_shape[1:]), layer, model],
                                         name="train_with_augmentation")
        compile_model(fit_model, cfg, classes, target=model)
    return Built(model, fit_model, init)


def _sync_batchnorm(cfg):
    return cfg.training.distribution == "multi_worker" and cfg.training.sync_batchnorm


def _datasets(cfg, classes):
    from ga.data import Datasets, build_datasets

    if get_task(cfg).classifier:
        return build_datasets(cfg, classes)
    from ga.contrastive import build_pairs

    return Datasets(*build_pairs(cfg), None, [], get_task(cfg), model_input_size(cfg))


# ---------------------------------------------------------------------------- 2. fit each stage


@dataclass
class Stage:
    """One `fit` call of a schedule."""

    number: int  # 0: the only stage; 1, 2: the stages of fine_tune (history.csv `stage`)
    backup: str  # its checkpoint folder inside the run folder
    epochs: int  # epochs it may run
    training: TrainingConfig  # learning rate and weight decay it compiles with
    unfreeze: bool = False  # every backbone layer trains (BatchNorm stays in inference mode)


def stages(cfg: Config) -> list[Stage]:
    """The stages of `training.schedule`: standard and linear_eval have one; fine_tune has a
    linear stage, then every layer at `training.fine_tune`'s rate and weight decay."""
    t = cfg.training
    if t.schedule != "fine_tune":
        return [Stage(0, "backup", t.epochs, t)]
    ft = t.fine_tune
    second = dataclasses.replace(t, learning_rate=ft.learning_rate, weight_decay=ft.weight_decay)
    return [Stage(1, "backup", t.epochs, t), Stage(2, "backup_fine_tune", ft.epochs, second, unfreeze=True)]


@dataclass
class StageResult:
    watch: object  # ga.callbacks.Watchers of the stage's fit
    resumed_at: int  # the epoch a resumed stage restarted at, or 0


def _fit_stages(cfg, run_dir, built, data, classes, strategy, weights=None):
    """Fit every stage in turn. A stage already finished by an interrupted run (fine_tune's
    linear stage, recorded in stage1.json) is restored instead of fitted again.

    Returns:
        The fit summary for metrics.json and run.json.
    """
    plan = stages(cfg)
    first, seconds, result = 0, 0.0, None
    inputs = _fit_inputs(cfg, strategy, data, weights)
    for stage in plan:
        if stage.number == 1 and os.path.isfile(_stage1_doc(run_dir)):
            built.model.load_weights(os.path.join(run_dir, "stage1.weights.h5"))  # resumed after it finished
            done = _read_json(_stage1_doc(run_dir))
            first, seconds = done["epochs"], done.get("seconds", 0.0)
            continue
        if stage.unfreeze:
            _unfreeze(cfg, built, classes, strategy, stage, first)
        result = _fit_stage(cfg, run_dir, built, data, classes, stage, first, inputs)
        seconds += result.watch.clock.seconds
        if result.watch.nan.seen:
            break
        if stage.number == 1:
            first = _record_linear_stage(run_dir, built.model, seconds)
    info = _fit_summary(cfg, result, run_dir, data)
    info["class_weight"] = weights
    if len(plan) > 1:
        info["fit_seconds"] = round(seconds, 2)
        info["linear_stage_epochs"] = None if result.watch.nan.seen else first  # first epoch of stage 2
    if result.watch.nan.seen:
        raise TrainingError(
            f"training stopped at epoch {(result.watch.clock.last_epoch or 0) + 1}: the loss became NaN "
            f"(training.learning_rate {cfg.training.learning_rate:g} is probably too high); run folder {run_dir}")
    return info


@dataclass
class FitInputs:
    """What `fit` reads: a single process's datasets, or each worker's shard of them."""

    train: object
    valid: object
    class_weight: dict = None  # {class index: weight} for `fit` (multi-worker: inside the batches)
    callbacks: tuple = ()
    bn: object = None  # the training input that training.precise_bn_batches reads


def _fit_inputs(cfg, strategy, data, weights):
    """`fit`'s inputs; `weights`: {class: loss weight} (training.class_weight), or None."""
    if cfg.training.distribution == "multi_worker":
        train, valid, ledger, bn = sharded_inputs(strategy, cfg, data, weights)
        return FitInputs(train, valid, None, (shard_log(ledger),), bn)
    return FitInputs(data.train.dataset, data.valid.dataset if data.valid is not None else None,
                     {i: weights[c] for i, c in enumerate(data.classes)} if weights else None, (), data.train.dataset)


def _fit_stage(cfg, run_dir, built, data, classes, stage, first_epoch, inputs):
    """One `fit` call with the run's callbacks on `inputs` (FitInputs); resumes from the
    stage's checkpoint."""
    from ga.callbacks import build_callbacks, resume_epoch
    from ga.folding import folded
    from ga.model import backbone_of
    from ga.schedules import EpochSchedule

    fit_model = built.fit_model
    initial = max(first_epoch, resume_epoch(run_dir, stage.backup))
    runs.trim_history(os.path.join(run_dir, "history.csv"), initial)
    if initial:
        log.info("%s at epoch %d", "resuming" if initial > first_epoch else "continuing", initial + 1)
    contrastive = not get_task(cfg).classifier
    callbacks, watch = build_callbacks(cfg, run_dir, classes, backup=stage.backup, stage=stage.number or None,
                                       supports=_supports(data, classes), target=built.model,
                                       first_epoch=first_epoch, resumed_at=initial,
                                       schedule=EpochSchedule(stage.training, first_epoch, stage.epochs),
                                       backbone=backbone_of(built.model) if contrastive else None,
                                       train_data=None if contrastive else inputs.bn,
                                       epochs=first_epoch + stage.epochs, bar=sys.stderr.isatty())
    # BackupAndRestore records a restored epoch on the model (`_initial_epoch`, Keras 3.15)
    # and `fit` prefers it to its own argument, also in a later `fit` of the same model.
    if getattr(fit_model, "_initial_epoch", None) is not None:
        fit_model._initial_epoch = None
    # Frozen BatchNorm folded into the convolution before it (ga.folding): the same step, faster.
    with folded(built.model):
        fit_model.fit(
            inputs.train,
            validation_data=inputs.valid,
            initial_epoch=first_epoch,
            epochs=first_epoch + stage.epochs,
            steps_per_epoch=cfg.training.steps_per_epoch,
            callbacks=callbacks + list(inputs.callbacks),
            verbose=0,  # ga.callbacks.EpochLine: a compact line per epoch (and a bar on a terminal)
            shuffle=False,  # the tf.data pipeline shuffles
            class_weight=inputs.class_weight,
        )
    return StageResult(watch, initial if initial > first_epoch else 0)


def _supports(data, classes):
    """Validation images per class (binary: per label; multi-label: positives per column)."""
    if data.valid is None or not classes:
        return {}
    return data.class_counts()["valid"]


def class_weights(cfg: Config, data: Any) -> dict[str, float] | None:
    """training.class_weight as {class: weight} (None for `none`); `balanced` is
    n_images / (n_classes * n_images of the class) over the training split."""
    want, classes = cfg.training.class_weight, data.classes
    if want == "none":
        return None
    if isinstance(want, dict):
        unknown = sorted(set(want) - set(classes))
        if unknown:
            raise ConfigError(f"training.class_weight names {unknown}, which are not classes of this run {classes}")
        return {c: float(want.get(c, 1.0)) for c in classes}
    counts = data.class_counts()["train"]
    empty = [c for c in classes if not counts[c]]
    if empty:
        raise DataError(f"training.class_weight: balanced: the training split has no image of {empty}")
    total = sum(counts.values())
    return {c: total / (len(classes) * counts[c]) for c in classes}


def _preview(cfg, run_dir, data):
    """<prefix>train_batch.png (kept from the first start of a resumed run); a figure that
    cannot be made is a warning, never the end of the run."""
    import tensorflow as tf

    from ga.preview import train_batch_path, write_train_batch

    if os.path.isfile(train_batch_path(run_dir, cfg.output.prefix)):
        return
    try:
        path = write_train_batch(cfg, data, run_dir)
    except (OSError, ValueError, tf.errors.OpError) as exc:
        log.warning("no training batch preview: %s", one_line(exc))
        return
    if path:
        log.info("one augmented training batch: %s", path)


def _log_class_counts(cfg, data, weights):
    """Images per class and split in the log; a warning when the training split is imbalanced."""
    counts = data.class_counts()
    for split, per in counts.items():
        log.info("%s images per class: %s", split, ", ".join(f"{c} {n}" for c, n in per.items()))
    train = counts.get("train") or {}
    if train and min(train.values()) > 0 and max(train.values()) / min(train.values()) > cfg.data.imbalance_warning:
        big, small = max(train, key=train.get), min(train, key=train.get)
        log.warning("imbalanced training split: %s has %d images, %s only %d (more than %g:1)%s", big, train[big],
                    small, train[small], cfg.data.imbalance_warning,
                    text_of(data.task).imbalance_hint(cfg, bool(weights)))
    if weights:
        log.info("class weights: %s", ", ".join(f"{c} {w:.4g}" for c, w in weights.items()))


def _stage1_doc(run_dir):
    return os.path.join(run_dir, "stage1.json")


def _record_linear_stage(run_dir, model, seconds):
    """Keep the linear stage's end (its epochs and weights), so `--resume` of an interrupted
    second stage starts from it. Returns the number of epochs it ran."""
    from ga.files import atomic_path, atomic_write_json

    done = len(runs.read_history(os.path.join(run_dir, "history.csv")))
    with atomic_path(os.path.join(run_dir, "stage1.weights.h5")) as tmp:
        model.save_weights(tmp)
    atomic_write_json(_stage1_doc(run_dir), {"epochs": done, "seconds": round(seconds, 2)})
    return done


def _unfreeze(cfg, built, classes, strategy, stage, done):
    from ga.model import backbone_of, set_trainable_fraction

    log.info("linear stage done after %d epoch(s); all layers train for up to %d more at lr %g", done, stage.epochs,
             stage.training.learning_rate)
    with strategy.scope():
        # BatchNorm stays in inference mode with its pretrained statistics: switching it to
        # batch statistics of small fine-tuning batches undoes what the linear stage learnt.
        set_trainable_fraction(backbone_of(built.model), 1.0, freeze_batchnorm=True)
        compile_model(built.fit_model, dataclasses.replace(cfg, training=stage.training), classes, target=built.model)


def _read_json(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _fit_summary(cfg, result, run_dir, data):
    """Why and when training stopped, the best epoch, timing; logged as a short table."""
    watch, initial = result.watch, result.resumed_at
    rows = runs.read_history(os.path.join(run_dir, "history.csv"))
    if watch.nan.seen:
        reason = "nan_loss"
    elif watch.f1.stopped_epoch is not None:
        reason = "f1_threshold"
    elif watch.early.stopped_epoch > 0:
        reason = "early_stopping"
    else:
        reason = "max_epochs"
    monitor = cfg.training.early_stopping.monitor
    # EarlyStopping's best (min_delta applies; kept across a resume by best.weights.h5).
    best_epoch = watch.early.best_epoch + 1 if watch.early.has_best else _best_epoch(rows, monitor)
    delivered, because = watch.early.delivered or (None, "")
    delivered_row = next((r for r in rows if delivered is not None and str(r.get("epoch")) == str(delivered)), {})
    delivered_f1 = {c: float(delivered_row[f"val_f1_{c}"]) for c in data.classes
                    if delivered_row.get(f"val_f1_{c}") not in (None, "")}
    best_f1 = {c: max((float(r.get(f"val_f1_{c}", "nan") or "nan") for r in rows), default=float("nan"))
               for c in data.classes}
    clock = watch.clock
    steps = cfg.training.steps_per_epoch
    seen = clock.epochs * (steps * cfg.data.batch_size if steps else data.train.size)
    info = {
        "epochs": len(rows),
        "epochs_this_process": clock.epochs,
        "resumed_at_epoch": initial + 1 if initial else None,
        "stop_reason": reason,
        "best_epoch": best_epoch,
        "best_val_f1": best_f1,
        "delivered_epoch": delivered + 1 if delivered is not None else None,
        "delivered_because": because,
        "delivered_val_f1": delivered_f1,
        "fit_seconds": round(clock.seconds, 2),
        "train_images_per_second": round(seen / clock.seconds, 2) if clock.seconds else None,
    }
    lines = [
        "training summary",
        f"  epochs run       {len(rows)} ({clock.epochs} in this process)"
        + (f" resumed at epoch {initial + 1}" if initial else ""),
        f"  stopped because  {reason.replace('_', ' ')}",
        f"  best epoch       {best_epoch} by {monitor}",
        *(["  best val F1      " + ", ".join(f"{c} {v:.4f}" for c, v in best_f1.items())] if best_f1 else []),
        f"  delivered epoch  {info['delivered_epoch']} ({because})"
        + ("; val F1 " + ", ".join(f"{c} {v:.4f}" for c, v in delivered_f1.items()) if delivered_f1 else ""),
        f"  wall time        {clock.seconds:.1f} s, {info['train_images_per_second']} training images/s "
        f"(validation included)",
    ]
    log.info("\n".join(lines))
    return info


def _best_epoch(rows, monitor):
    """The best epoch (1-based) by `monitor` among the last stage's history rows."""
    last_stage = rows[-1].get("stage") if rows else None
    vals = [(float(r[monitor]), i) for i, r in enumerate(rows)
            if r.get(monitor) not in (None, "", "nan") and r.get("stage") == last_stage]
    if not vals:
        return None
    return (min(vals) if "loss" in monitor else max(vals))[1] + 1


# ---------------------------------------------------------------------------- 3. deliver


def _deliver(cfg, run_dir, model, data, fit_info):
    """A classifier run's deliverables; returns the weight files written."""
    from ga import analysis, export
    from ga.report import write_report

    paths = export.save_keras(model, run_dir, cfg.output.prefix)
    if get_task(cfg).tunes_thresholds:
        analysis.tune_thresholds(cfg, run_dir, model, data)
    y_true, y_prob = analysis.predict_split(model, data.test)
    report = analysis.write_reports(run_dir, cfg, data.classes, y_true, y_prob, fit_info, paths=data.test.paths)
    if cfg.output.explain:
        _explain(cfg, run_dir, model, data, y_true, y_prob)
    sample = next(iter(data.test.dataset))[0][:32]
    if cfg.output.onnx:
        report = analysis.update_metrics(run_dir, {"onnx": export.export_onnx(model, run_dir, cfg, sample)})
    if cfg.output.saved_model:
        export.release_memory()
        report = analysis.update_metrics(run_dir, {"saved_model": export.export_saved_model(model, run_dir, cfg,
                                                                                             sample)})
    if cfg.output.onnx and cfg.output.int8:
        export.release_memory()
        int8 = export.export_int8(run_dir, cfg, _calibration_images(cfg, run_dir, data),
                                  (x for x, *_ in data.test.dataset), y_true)
        openvino = int8.pop("openvino", None)  # the OpenVINO engine's agreement, when the package is installed
        report = analysis.update_metrics(run_dir, {"int8": int8, **({"openvino": openvino} if openvino else {})})
    analysis.write_model_card(run_dir, cfg, data, report)
    write_report(run_dir)
    return paths


def _calibration_images(cfg, run_dir, data):
    """A seeded sample of output.int8_calibration training images, read as inference reads
    them (resized and centre-cropped as labels.json says; no augmentation)."""
    import numpy as np

    from ga.inputs import read_image

    labels = runs.read_labels(run_dir)
    paths = data.train.paths
    pick = np.random.default_rng(cfg.training.seed).permutation(len(paths))[:cfg.output.int8_calibration]
    return np.stack([read_image(paths[i], labels) for i in sorted(pick)]).astype(np.float32)


def _explain(cfg, run_dir, model, data, y_true, y_prob):
    """Grad-CAM and misclassified-image figures of the test split (ga.explain)."""
    from ga.explain import write_run_figures

    task = get_task(cfg)
    decided = task.decide(y_prob, data.classes, runs.read_labels(run_dir)["thresholds"])
    write_run_figures(run_dir, cfg.output.prefix, model, data.test, data.classes, task, y_true, y_prob, decided)


def _deliver_contrastive(cfg, run_dir, model, data, fit_info):
    """A pretraining run's deliverables: the encoder (backbone and projection head) as
    <prefix>model.keras and <prefix>weights.h5, the backbone's weights alone as
    <prefix>backbone.weights.h5 (for model.backbone_weights), the loss curve, metrics.json."""
    from ga import analysis, export
    from ga.files import atomic_path
    from ga.model import backbone_of
    from ga.report import write_report

    prefix = cfg.output.prefix
    paths = export.save_keras(model, run_dir, prefix)
    backbone = os.path.join(run_dir, f"{prefix}backbone.weights.h5")
    with atomic_path(backbone) as tmp:
        backbone_of(model).save_weights(tmp)
    analysis.write_contrastive_report(run_dir, cfg, data, fit_info, os.path.basename(backbone))
    write_report(run_dir)
    log.info("backbone weights for fine-tuning: %s", backbone)
    return paths + [backbone]
