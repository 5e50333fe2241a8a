"""Which part of a crop made the model decide: Grad-CAM heat maps, and galleries of test images.

Grad-CAM (Selvaraju et al. 2017, arXiv 1610.02391) on the backbone's last feature map (ResNet:
the last block's output; CNN-4: its fourth conv block), which is the backbone sub-model's
output in every model `ga` builds: the gradient of the explained class's probability with
respect to that map, averaged over the map, weights its channels; the positive part of the
weighted sum, scaled to [0, 1] and resized to the input, is the heat map.

- `<run>/<prefix>gradcam.png`: the most confident right test image of each class and every
  wrong one (up to 16 images), each with its heat map for the class the model named.
- `<run>/<prefix>misclassified.png`: the test split's errors with their probabilities (none:
  no figure, and a log line saying so).
- `inference.py FOLDER --explain`: `<stem>_gradcam.png` per image in --out-dir.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import tensorflow as tf

from ga.figures import pyplot, save_figure
from ga.model import backbone_of

if TYPE_CHECKING:
    from ga.tasks import Task

log = logging.getLogger(__name__)

MAX_IMAGES = 16


def grad_cam(model: Any, images: np.ndarray, column: int | np.ndarray, features: Any = None) -> np.ndarray:
    """Heat maps (n, h, w) in [0, 1] for output `column` of `model` (its score before the
    sigmoid or softmax), or for the negative class of a binary model when `column` is -1.
    `column` may be an int or one per image; `features`: `feature_map_fn(model)`, when the
    caller explains several batches with one model (traced once, not per call).

    The model must be a chain Input -> ... -> backbone sub-model -> ... -> Dense output, as
    every `ga` model is."""
    return grad_cams(model, images, [column], features)[0]


def grad_cams(model: Any, images: np.ndarray, columns: Sequence[int | np.ndarray],
              features: Any = None) -> list[np.ndarray]:
    """`grad_cam` for several outputs of the same images: the backbone runs once, only the
    head runs again for each entry of `columns`."""
    images = tf.convert_to_tensor(np.asarray(images, np.float32))
    head = model.layers[1:-1][_cut(model):]
    fmap = (features or feature_map_fn(model))(images)
    return [_heat(model, head, fmap, column, images.shape[1:3]) for column in columns]


def _cut(model: Any) -> int:
    """How many layers after the input lead up to the backbone's output."""
    return model.layers[1:-1].index(backbone_of(model)) + 1


def feature_map_fn(model: Any) -> Any:
    """The layers up to the backbone's output as one traced function. Not on the gradient tape
    (no gradient is needed there, and the tape would keep every activation) and not eager:
    run op by op, ResNet-101 kept 3.6 GB resident after 16 images (TensorFlow's eager kernels
    and their oneDNN caches), traced 0.3 GB."""
    layers = model.layers[1:1 + _cut(model)]

    def run(x: Any) -> Any:
        for layer in layers:
            x = layer(x, training=False)
        return x

    return tf.function(run, reduce_retracing=True)


def _heat(model: Any, head: Sequence[Any], fmap: Any, column: int | np.ndarray, size: Sequence[int]) -> np.ndarray:
    cols = np.broadcast_to(np.asarray(column), (fmap.shape[0],))
    last = model.layers[-1]
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(fmap)
        x = fmap
        for layer in head:
            x = layer(x, training=False)
        # The class score before the output's sigmoid/softmax, as Grad-CAM prescribes: a
        # saturated probability (p = 1.000) has no gradient left to show.
        logits = tf.cast(tf.matmul(tf.cast(x, last.kernel.dtype), last.kernel) + last.bias, tf.float32)
        picked = tf.reduce_sum(logits * tf.one_hot(np.maximum(cols, 0), logits.shape[1]), axis=1)
        score = tf.where(cols < 0, -picked, picked)
    grads = tf.cast(tape.gradient(score, fmap), tf.float32)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * tf.cast(fmap, tf.float32), axis=-1))
    cam = cam / (tf.reduce_max(cam, axis=(1, 2), keepdims=True) + 1e-12)
    cam = tf.image.resize(cam[..., None], size, method="bilinear")[..., 0]
    return np.clip(cam.numpy(), 0.0, 1.0)


def overlay(ax: Any, image: np.ndarray, heat: np.ndarray, title: str) -> None:
    ax.imshow(np.clip(image, 0, 255).astype(np.uint8))
    ax.imshow(heat, cmap="jet", alpha=0.4, vmin=0, vmax=1)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def _grid(n):
    cols = min(4, max(1, n))
    return (n + cols - 1) // cols, cols


def pick_examples(right: np.ndarray, confidence: np.ndarray, true_index: np.ndarray, limit: int = MAX_IMAGES) -> list[int]:
    """Indices for the Grad-CAM figure: every wrong image (up to `limit`), then the most
    confident right image of each class while room is left."""
    wrong = [int(i) for i in np.flatnonzero(~right)][:limit]
    best = []
    for c in np.unique(true_index):
        ok = np.flatnonzero(right & (true_index == c))
        if len(ok):
            best.append(int(ok[np.argmax(confidence[ok])]))
    return best[: max(0, limit - len(wrong))] + wrong


def write_run_figures(run_dir: str, prefix: str, model: Any, split: Any, classes: Sequence[str], task: Task,
                      y_true: np.ndarray, y_prob: np.ndarray, decided: np.ndarray) -> list[str]:
    """<prefix>gradcam.png and <prefix>misclassified.png for the test split (see the module
    docstring). `task`: a ga.tasks.Task; `decided`: bool (n, classes) of the classes named.
    Returns the files written."""
    right = task.right(y_true, decided)
    idx = pick_examples(right, task.confidence_of_rows(y_prob), task.strata(y_true))
    wrong = np.flatnonzero(~right)[:MAX_IMAGES * 2]
    pictures = _collect(split.dataset, set(idx) | set(int(i) for i in wrong))
    images = np.stack([pictures[i] for i in idx]) if idx else None
    written = []
    if idx:
        heat = grad_cam(model, images, task.gradcam_columns(decided[idx], y_prob[idx]))
        path = os.path.join(run_dir, f"{prefix}gradcam.png")
        titles = [_title(classes, task, y_true[i], y_prob[i], decided[i], "right" if right[i] else "WRONG")
                  for i in idx]
        _figure(images, heat, titles, path, "Grad-CAM: where the model looked for the class it named")
        written.append(path)
    if len(wrong):
        path = os.path.join(run_dir, f"{prefix}misclassified.png")
        pics = np.stack([pictures[int(i)] for i in wrong])
        titles = [_title(classes, task, y_true[i], y_prob[i], decided[i], os.path.basename(split.paths[i]))
                  for i in wrong]
        _figure(pics, None, titles, path, f"Misclassified test images ({int((~right).sum())} of {len(right)})")
        written.append(path)
    else:
        log.info("no misclassified test images (%d of %d right): no %smisclassified.png", len(right), len(right),
                 prefix)
    return written


def _collect(dataset, wanted):
    """{index: float32 image} of the images at `wanted` positions of an (images, labels)
    dataset, as evaluation sees them (model input size, centre crop)."""
    out, start = {}, 0
    for x, _ in dataset:
        x = np.asarray(x)
        for i in range(start, start + len(x)):
            if i in wanted:
                out[i] = x[i - start]
        start += len(x)
    return out


def _names(classes, flags):
    return "+".join(c for c, f in zip(classes, flags) if f) or "none"


def _title(classes, task, y_true, y_prob, decided, tag):
    from ga.task_text import text_of

    truth, probs = text_of(task).example_title(classes, y_true, y_prob)
    return f"{tag}\ntrue {truth} / said {_names(classes, decided)}\n{probs}"


def _figure(images, heat, titles, path, title):
    plt = pyplot()
    rows, cols = _grid(len(images))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, ax in enumerate(axes.flat[:len(images)]):
        if heat is None:
            ax.imshow(np.clip(images[k], 0, 255).astype(np.uint8))
            ax.set_title(titles[k], fontsize=7)
        else:
            overlay(ax, images[k], heat[k], titles[k])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    save_figure(fig, path)


def explain_images(model: Any, labels: dict, images: np.ndarray, names: Sequence[str], out_dir: str,
                   thresholds: Mapping[str, float], stems: Sequence[str] | None = None,
                   features: Any = None) -> list[str]:
    """inference.py --explain: <stem>_gradcam.png per image in `out_dir` (binary and
    multiclass: the class named; multi-label: one panel per class). `stems`: each image's
    output stem (ga.images.output_stems; default its file name's); `features`: see `grad_cam`.
    Returns the paths."""
    from ga.tasks import get_task

    os.makedirs(out_dir, exist_ok=True)
    task, classes = get_task(labels), labels["classes"]
    probs = np.asarray(model(np.asarray(images, np.float32), training=False), np.float32)
    decided = task.decide(probs, classes, thresholds)
    panels = task.gradcam_panels(classes)
    columns = [p if p is not None else task.gradcam_columns(decided, probs) for p in panels]
    heats = dict(zip(panels, grad_cams(model, images, columns, features)))
    paths = []
    plt = pyplot()
    for k, name in enumerate(names):
        fig, axes = plt.subplots(1, len(heats), figsize=(3.2 * len(heats), 3.4), squeeze=False)
        for ax, (p, heat) in zip(axes[0], heats.items()):
            label = classes[p] if p is not None else _names(classes, decided[k])
            value = probs[k, p] if p is not None else task.panel_value(probs[k])
            overlay(ax, images[k], heat[k], f"{label} (p={value:.3f})")
        stem = stems[k] if stems is not None else os.path.splitext(os.path.basename(name))[0]
        path = os.path.join(out_dir, f"{stem}_gradcam.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save_figure(fig, path)
        paths.append(path)
    return paths


def explain_files(model: Any, paths: Sequence[str], out_dir: str, thresholds: Mapping[str, float], *,
                  batch_size: int = 64, max_pixels: int = 100_000_000, unsafe: bool = False) -> int:
    """`ga infer --explain`: a Grad-CAM figure per image file (`model`: a loaded model,
    ga.loading.LoadedModel; its Keras form is used), read and explained in batches;
    a/x.png and b/x.png become a/x_gradcam.png and b/x_gradcam.png. Returns how many."""
    from ga.images import output_stems
    from ga.inputs import read_image

    keras_model = model.keras(unsafe)
    features = feature_map_fn(keras_model)
    stems = output_stems(paths)
    for start in range(0, len(paths), batch_size):
        chunk = list(paths[start:start + batch_size])
        images = np.stack([read_image(p, model.labels, max_pixels) for p in chunk]).astype(np.float32)
        explain_images(keras_model, model.labels, images, chunk, out_dir, thresholds, [stems[p] for p in chunk],
                       features)
    return len(paths)
