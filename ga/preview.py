"""<prefix>train_batch.png: a grid of one augmented training batch, as the model sees it.

Written when a classifier run starts (before the first epoch), so a wrong crop, zoom or
colour setting shows at once. The images are drawn with the run's seed and passed through
the same decoding, resize and augmentation layers as training (`ga.data.preview_batch`),
each tile titled with its label; `output.preview: false` (`main.py --no-preview`) skips it.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ga.config import Config
from ga.figures import pyplot, save_figure
from ga.task_text import text_of
from ga.tasks import get_task

MAX_TILES = 32


def train_batch_path(run_dir: str, prefix: str) -> str:
    return os.path.join(run_dir, f"{prefix}train_batch.png")


def write_train_batch(cfg: Config, data: Any, run_dir: str) -> str | None:
    """The figure of one augmented batch of `data.train` (a ga.data.Datasets); None when the
    split has no image that decodes."""
    from ga.data import preview_batch

    train = data.train
    if train is None or not train.paths:
        return None
    x, y = preview_batch(cfg, train.paths, train.labels, min(MAX_TILES, max(cfg.data.batch_size, 16)))
    if not len(x):
        return None
    task, classes = get_task(cfg), data.classes
    cols = min(8, math.ceil(math.sqrt(len(x) * 1.5)))
    rows = math.ceil(len(x) / cols)
    plt = pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.75 * rows + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, label in zip(axes.ravel(), x, y):
        ax.imshow(np.clip(img, 0, 255).astype(np.uint8))
        ax.set_title(text_of(task).example_title(classes, label, label)[0], fontsize=8)
    aug = cfg.data.augment
    h, w = x.shape[1:3]
    fig.suptitle(f"one training batch as the model sees it: {len(x)} images, {w}x{h} px, augmentation "
                 f"{'on (' + aug.placement + ')' if aug.enabled else 'off'}", fontsize=9)
    return save_figure(fig, train_batch_path(run_dir, cfg.output.prefix), dpi=100)
