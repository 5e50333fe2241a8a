"""The learning-rate range test (`main.py --config X --lr-find`).

The model and data of a config are built as `train` builds them (its first stage: fine_tune's
linear stage); then the learning rate rises exponentially from `low` to `high` over `steps`
training batches, one rate a batch, and each batch's loss is recorded. The test stops early
once the loss diverges: NaN, or the smoothed loss above `DIVERGED` times its lowest value
(the running average below).
Nothing of the model is kept.

- While it sweeps, the test watches an exponential moving average of the loss (weight
  `SMOOTHING` on the past, bias-corrected). Afterwards the loss is smoothed without lag (a
  centred Gaussian, `smooth`): a running average lags many steps behind, which moves its
  minimum to higher rates.
- The suggested rate is fastai's "valley": the longest stretch over which the smoothed loss
  keeps falling (its longest decreasing subsequence), and the rate halfway along it. It lies
  below the lowest loss (where the edge of divergence is near) and above the flat start, and
  it needs no divergence to exist: on data so easy that the loss falls to zero and stays
  there, "the minimum / 10" would be the top of the range. The rates of the lowest loss and
  of the steepest fall are reported beside it.
- Written to `<output.root>/<prefix>_<time>[_<name>]_lr_find/`: lr_find.csv (step, rate,
  loss, smoothed loss), lr_find.png, lr_find.json (the suggestion and the range) and
  config.yaml.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ga import runs
from ga.config import Config, dump_config, load_config
from ga.errors import ConfigError, TrainingError
from ga.files import atomic_write_csv, atomic_write_json
from ga.figures import pyplot, save_figure

log = logging.getLogger(__name__)

SMOOTHING = 0.9  # the sweep's running average: about the last 10 batches
DIVERGED = 4.0
CSV = "lr_find.csv"


@dataclass
class RangeTest:
    """A finished range test: what was swept and what it suggests."""

    folder: str
    rates: list[float]
    losses: list[float]
    smoothed: list[float]
    suggested: float
    minimum: float  # the rate at the lowest smoothed loss
    steepest: float  # the rate where the smoothed loss falls fastest
    stopped: str  # "diverged at step N" or "all N steps"
    low: float
    high: float


def rates(low: float, high: float, steps: int) -> np.ndarray:
    """`steps` rates from `low` to `high`, evenly spaced in log."""
    return np.geomspace(low, high, steps)


def ema(losses: Sequence[float], beta: float = SMOOTHING) -> np.ndarray:
    """The bias-corrected exponential moving average of `losses` (what the sweep watches)."""
    out, avg = [], 0.0
    for i, v in enumerate(losses, 1):
        avg = beta * avg + (1 - beta) * float(v)
        out.append(avg / (1 - beta ** i))
    return np.asarray(out)


def smooth(losses: Sequence[float]) -> np.ndarray:
    """The losses smoothed without lag (a Gaussian of sigma = steps / 50, at least 1 step,
    centred on each step): what the suggestion and the figure read."""
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(np.asarray(losses, float), max(1.0, len(losses) / 50), mode="nearest")


def valley(smoothed: Sequence[float]) -> int:
    """The step halfway along the longest valley of a loss curve: the longest decreasing
    subsequence of the smoothed losses, from its first step to its last (fastai's "valley")."""
    sm = np.asarray(smoothed, float)
    n = len(sm)
    length = np.ones(n, int)
    for i in range(1, n):
        lower = sm[:i] > sm[i]
        if lower.any():
            length[i] = length[:i][lower].max() + 1
    end = int(np.argmax(length))
    start = end - int(length[end]) + 1
    return min(n - 1, start + (end - start) // 2)


def suggest(lrs: Sequence[float], smoothed: Sequence[float]) -> tuple[float, float, float]:
    """(suggested, minimum, steepest) rates of a range test (module docstring)."""
    lrs, sm = np.asarray(lrs, float), np.asarray(smoothed, float)
    i_min = int(np.nanargmin(sm))
    if i_min >= 2:
        slope = np.gradient(sm[:i_min + 1], np.log10(lrs[:i_min + 1]))
        steepest = float(lrs[int(np.nanargmin(slope))])
    else:
        steepest = float(lrs[i_min])
    return float(lrs[valley(sm)]), float(lrs[i_min]), steepest


def find_learning_rate(cfg: Config | str | None = None, overrides: Sequence[str] = (), steps: int = 100,
                       low: float = 1e-7, high: float = 10.0, progress: bool = False, device: str = "auto"
                       ) -> RangeTest:
    """Run the range test of a config (module docstring).

    Raises:
        ConfigError: bad steps or range, a contrastive or multi-worker config.
        TrainingError: the loss was NaN from the first step.
    """
    import ga

    ga.register()
    from ga.data import release_iterators
    from ga.tasks import get_task
    from ga.trainer import prepare

    if steps < 5:
        raise ConfigError("the range test needs at least 5 steps", arg="lr_steps")
    if not 0 < low < high:
        raise ConfigError(f"the range must rise from a rate above 0: got {low:g} to {high:g}", arg="lr_range")
    cfg = load_config(cfg, overrides) if not isinstance(cfg, Config) else cfg
    if not get_task(cfg).classifier:
        raise ConfigError("the learning-rate finder trains classifiers; this config pretrains (contrastive)")
    if cfg.training.distribution == "multi_worker":
        raise ConfigError("the learning-rate finder runs in one process: --set training.distribution=none")
    built, data, _ = prepare(cfg, device)
    folder = runs.new_run_dir(dataclasses.replace(cfg.output, name=(cfg.output.name + "_lr_find").lstrip("_")))
    dump_config(cfg, os.path.join(folder, "config.yaml"))
    try:
        lrs, losses, stopped = _sweep(built.fit_model, data.train.dataset.repeat(), rates(low, high, steps), progress)
    except BaseException as exc:
        runs.mark_failed(folder, "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc))
        raise
    finally:
        release_iterators()
    if not lrs:
        runs.mark_failed(folder, "the loss was NaN from the first step")
        raise TrainingError(f"the loss was NaN from the first step at learning rate {low:g}; folder {folder}")
    smoothed = smooth(losses)
    suggested, minimum, steepest = suggest(lrs, smoothed)
    result = RangeTest(folder, lrs, losses, smoothed.tolist(), suggested, minimum, steepest, stopped, low, high)
    _write(result, cfg)
    runs.mark_complete(folder)
    return result


def _sweep(model, dataset, lr_plan, progress):
    """Fit one batch per rate; returns (rates, losses, how it stopped) up to divergence."""
    import keras
    from tqdm import tqdm

    class Sweep(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.lrs, self.losses, self.stopped, self.best = [], [], f"all {len(lr_plan)} steps", math.inf
            self.bar = tqdm(total=len(lr_plan), unit="step", desc="lr range test", disable=not progress)

        def on_train_batch_begin(self, batch, logs=None):
            self.model.reset_metrics()  # the logged loss is then this batch's alone
            self.model.optimizer.learning_rate.assign(float(lr_plan[batch]))

        def on_train_batch_end(self, batch, logs=None):
            loss = float((logs or {}).get("loss", math.nan))
            self.bar.update(1)
            if not math.isfinite(loss):
                self.stopped = f"loss not finite at step {batch + 1} of {len(lr_plan)}"
                self.model.stop_training = True
                return
            self.lrs.append(float(lr_plan[batch]))
            self.losses.append(loss)
            sm = ema(self.losses)[-1]
            self.best = min(self.best, sm)
            if batch >= 5 and sm > DIVERGED * self.best:
                self.stopped = f"diverged at step {batch + 1} of {len(lr_plan)}"
                self.model.stop_training = True

    sweep = Sweep()
    try:
        model.fit(dataset, epochs=1, steps_per_epoch=len(lr_plan), callbacks=[sweep], verbose=0)
    finally:
        sweep.bar.close()
    return sweep.lrs, sweep.losses, sweep.stopped


def _write(r: RangeTest, cfg: Config) -> None:
    atomic_write_csv(os.path.join(r.folder, CSV), ["step", "learning_rate", "loss", "smoothed_loss"],
                     ([i + 1, f"{lr:.6e}", f"{loss:.6f}", f"{sm:.6f}"]
                      for i, (lr, loss, sm) in enumerate(zip(r.rates, r.losses, r.smoothed))))
    atomic_write_json(os.path.join(r.folder, "lr_find.json"), {
        "suggested": r.suggested, "minimum": r.minimum, "steepest": r.steepest, "rule": "valley (halfway along the longest decreasing run of the smoothed loss)",
        "range": [r.low, r.high], "swept": [r.rates[0], r.rates[-1]], "steps": len(r.rates), "stopped": r.stopped,
        "optimizer": cfg.training.optimizer, "config_learning_rate": cfg.training.learning_rate,
        "batch_size": cfg.data.batch_size})
    plot(r, os.path.join(r.folder, "lr_find.png"), cfg.training.learning_rate)


def plot(r: RangeTest, out: str, current: float | None = None) -> Any:
    """Loss against learning rate (log scale): each batch, the smoothed curve, the suggestion."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(r.rates, r.losses, color="#bbbbbb", lw=0.8, label="batch loss")
    ax.plot(r.rates, r.smoothed, color="#1f5fa8", lw=2, label="smoothed loss")
    ax.axvline(r.suggested, color="#2a9d3a", ls="--", label=f"suggested {r.suggested:.2g} (valley)")
    ax.axvline(r.minimum, color="#d08a1e", ls=":", label=f"lowest smoothed loss at {r.minimum:.2g}")
    if current:
        ax.axvline(current, color="#999999", ls="-.", lw=1, label=f"the config's rate {current:.2g}")
    ax.set_xscale("log")
    top = min(max(r.smoothed), DIVERGED * min(r.smoothed) * 1.5)
    ax.set_ylim(min(min(r.losses), min(r.smoothed)) * 0.9, max(top, min(r.smoothed) * 1.1))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(f"learning-rate range test: {r.stopped}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return save_figure(fig, out)
