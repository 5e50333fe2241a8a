"""Crops for labelling: `ga monitor FRAMES --save-crops DIR [--cluster K]`.

Every kept particle of every frame is written as the square crop the model sees (the
particle's box plus `monitor.crop_margin`, reflected at the frame's edge: `ga.monitoring.detection.crop`)
to `DIR/<frame>_p<k>.png`, and listed in `DIR/crops.csv` (crop, frame, particle, box,
equivalent diameter, aspect ratio, circularity, solidity, sharpness, cluster). A folder that
already holds crops gains the new ones: a name already taken gets `-2`, `-3`, ... and the rows
are appended, so nothing is overwritten.

With `--cluster K` the new crops are grouped by k-means (scikit-learn, 10 starts, seeded) on
simple image features, standardised: the log area, aspect ratio, circularity, solidity and
sharpness of the particle, and the mean, spread and 8-bin histogram of its crop's grey
levels; with `--model RUN`, on the model's backbone features of each crop instead, as they
are (as inference's --cluster: its pooled last feature map, the crop prepared as the monitor prepares it, turned over too when
the model learned the other polarity: `turned_over`); each crop goes into `DIR/cluster_<k>/`, so that a person can rename or merge the
cluster folders into class folders that `split_data.py` reads (the original study sorted its
crops by clustering too).
"""

from __future__ import annotations

import csv
import os
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ga.errors import GAError

if TYPE_CHECKING:
    from ga.config import MonitorConfig

COLUMNS = ("crop", "frame", "particle", "x0", "y0", "x1", "y1", "eq_diameter_px", "aspect_ratio", "circularity",
           "solidity", "sharpness", "cluster")


def crop_polarity(paths: Sequence[str], sample: int = 200, agree: float = 0.9) -> tuple[str, float]:
    """Whether the particles of a set of crops are brighter ("bright") or darker ("dark")
    than their surroundings, or "mixed": each of up to `sample` crops (spread over the list)
    votes for the side its middle half reaches further from the typical level of its outer
    tenth (the middle's 95th against its 5th percentile: a thin needle across the middle
    counts as much as a filled disc), and a side needs `agree` of the votes. Returns (polarity, the winning side's share of the votes)."""
    from PIL import Image

    picked = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, min(sample, len(paths)))] if paths else []
    bright = votes = 0
    for path in picked:
        try:
            with Image.open(path) as im:
                g = np.asarray(im.convert("L"), np.float32)
        except (OSError, ValueError):
            continue
        h, w = g.shape
        b, c = max(1, h // 10), max(1, w // 10)
        if h < 4 or w < 4:
            continue
        ring = np.concatenate([g[:b].ravel(), g[-b:].ravel(), g[b:-b, :c].ravel(), g[b:-b, -c:].ravel()])
        centre = g[h // 4:h - h // 4, w // 4:w - w // 4]
        level = float(np.median(ring))
        low, high = np.percentile(centre, [5, 95])
        bright += high - level > level - low
        votes += 1
    if not votes:
        return "mixed", 0.0
    share = float(max(bright, votes - bright) / votes)
    return ("bright" if bright * 2 >= votes else "dark") if share >= agree else "mixed", share


def _free_name(out_dir, sub, stem, taken):
    name, k = f"{stem}.png", 2
    while os.path.join(sub, name) in taken or os.path.exists(os.path.join(out_dir, sub, name)):
        name, k = f"{stem}-{k}.png", k + 1
    taken.add(os.path.join(sub, name))
    return os.path.join(sub, name)


def _features(image: np.ndarray, geometry: dict) -> np.ndarray:
    g = image.astype(np.float32).mean(axis=2) if image.ndim == 3 else image.astype(np.float32)
    hist = np.histogram(g, bins=8, range=(0, 256))[0] / max(1, g.size)
    shape = [np.log(max(1.0, geometry["area_px"])), geometry["aspect_ratio"], geometry["circularity"],
             geometry["solidity"], geometry["sharpness"]]
    return np.concatenate([shape, [g.mean() / 255, g.std() / 255], hist]).astype(np.float64)


def turned_over(cfg: MonitorConfig, labels: dict, pixels: np.ndarray) -> bool:
    """Whether a frame's crops are turned over (255 - level) for a model with these labels
    (`monitor.invert_crops`; auto: when labels.json's crop_polarity is bright or dark and the
    frame's particles are the other way round)."""
    from ga.monitoring.detection import grey, polarity_of

    mode, learned = cfg.invert_crops, labels.get("crop_polarity")
    if mode != "auto":
        return mode == "on"
    if learned not in ("bright", "dark"):
        return False
    return (cfg.polarity if cfg.polarity != "auto" else polarity_of(grey(pixels))) != learned


def model_features(model: Any, crops: Sequence[np.ndarray], batch: int = 64) -> np.ndarray:
    """(n, d) the model's pooled backbone features of each crop (needs its Keras file)."""
    from ga.inputs import prepare_arrays
    from ga.predict import features_and_probs_fn

    run = features_and_probs_fn(model.keras())
    return np.concatenate([run(prepare_arrays(crops[i:i + batch], model.labels).astype(np.float32))[0]
                           for i in range(0, len(crops), batch)])


def clusters(features: np.ndarray, k: int, standardise: bool = True) -> np.ndarray:
    """k-means labels (0..k-1) of feature rows, standardised first (features of different
    units) or not (a model's features, as inference's --cluster); k at most the number of rows."""
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    k = min(k, len(features))
    if k < 2:
        return np.zeros(len(features), int)
    x = StandardScaler().fit_transform(features) if standardise else features
    return KMeans(k, n_init=10, random_state=0).fit_predict(np.nan_to_num(x))


def save_crops(inputs: Sequence[str], cfg: MonitorConfig, out_dir: str, cluster: int | None = None,
               max_pixels: int = 100_000_000, progress: bool = False, model: Any = None) -> dict:
    """Write every kept particle's crop (module docstring); `model` (a LoadedModel) gives the
    features --cluster groups by. Returns {"crops": n, "frames": n, "skipped": [(frame,
    reason)], "clusters": {k: n} or None}."""
    import sys

    from PIL import Image
    from tqdm import tqdm

    from ga.frames import frames_of, iter_sources, read_frame, rgb8
    from ga.images import ImageProblem
    from ga.log import bar_disabled
    from ga.monitoring.detection import crop, detect, preload

    if cluster is not None and cluster < 2:
        raise GAError(f"must be at least 2, got {cluster}", arg="cluster")
    preload()
    os.makedirs(out_dir, exist_ok=True)
    listing = os.path.join(out_dir, "crops.csv")
    taken = set()
    if os.path.isfile(listing):
        with open(listing, newline="", encoding="utf-8") as fh:
            taken = {r.get("crop", "") for r in csv.DictReader(fh)}
    items, skipped, frames = [], [], 0
    for path in tqdm(sorted(iter_sources(inputs)), unit="file", desc="crops", file=sys.stderr, disable=bar_disabled(progress)):
        try:
            for frame in frames_of(path, cfg.time_sources, cfg.time_pattern):
                pixels = read_frame(frame, max_pixels)
                frames += 1
                image = rgb8(pixels)
                over = model is not None and turned_over(cfg, model.labels, pixels)
                for k, p in enumerate(detect(pixels, cfg), 1):
                    items.append((frame.name, k, p, crop(image, p.box, cfg.crop_margin), over))
        except ImageProblem as exc:
            skipped.append((os.path.basename(path), str(exc)))
    labels = None
    if cluster and items:
        features = model_features(model, [255 - c if over else c for *_, c, over in items]) if model is not None \
            else np.stack([_features(c, p.geometry) for _, _, p, c, _ in items])
        labels = clusters(features, cluster, standardise=model is None)
    rows = []
    for i, (frame, k, p, image, _) in enumerate(items):
        sub = f"cluster_{labels[i]}" if labels is not None else ""
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
        stem = os.path.splitext(frame.replace("#", "_"))[0] + f"_p{k}"
        name = _free_name(out_dir, sub, stem, taken)
        Image.fromarray(image).save(os.path.join(out_dir, name))
        g = p.geometry
        rows.append([name.replace(os.sep, "/"), frame, k, *p.box, *(f"{g[c]:.4g}" for c in COLUMNS[7:12]),
                     "" if labels is None else int(labels[i])])
    fresh = not os.path.isfile(listing) or os.path.getsize(listing) == 0
    with open(listing, "a", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        if fresh:
            w.writerow(COLUMNS)
        w.writerows(rows)
    counts = None if labels is None else {int(c): int((labels == c).sum()) for c in np.unique(labels)}
    return {"crops": len(rows), "frames": frames, "skipped": skipped, "clusters": counts}
