"""Procedural datasets in the real data's layouts, for the demo, the tests and offline trials.

Crystals (the Georgia study's CEX vs PG crops)::

    python -m ga.synthetic crystals --out data/archive --per-class 300 --seed 0

writes ``data/archive/cropped/cropped/{cex,pg}/CEX (1).png ...`` like the Kaggle download.
CEX crops are 151x151 fields of bright straight needles and needle bundles, many out of
focus; PG crops (130-230 px a side) hold one bright granular aggregate over the same
needle background, and come in groups of rotated/flipped copies under consecutive numbers,
as in the real dataset.

A third kind for multiclass trials, ``--classes cex,pg,plate``: PLATE crops (151x151) hold
one to three flat, faceted tablets (hexagons and rhombi, as a plate-like polymorph grows)
with bright edges and a smooth, even face, over a sparse needle background: neither
needles (CEX) nor granular (PG). It is not in the Kaggle dataset.

Graphene flakes (the MIT GrapheneClassifier's multi-label task)::

    python -m ga.synthetic graphene --out data/graphene --count 400 --size 400 --seed 0
    python -m ga.synthetic wafer --out data/wafer.png --width 4908 --height 3264 --seed 0

Flakes are polygons darker than the SiO2/Si wafer; the label follows the red-channel
contrast C = (R_wafer - R_flake) / R_wafer: class1 C <= 12%, class2 12-19%, class3 19-30%;
thicker graphite (C > 30%), dust and residue are unlabelled distractors.

Every image has its own seed derived from the run seed, so output is byte-identical for
the same arguments on any machine.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ga.files import atomic_write_csv, atomic_write_json
from ga.images import dihedral
from ga.layouts import LABELS_CSV
from ga.log import bar_disabled

CRYSTAL_LAYOUT = os.path.join("cropped", "cropped")
CEX_SIZE = 151

# Contrast bands used for drawing, kept clear of the class boundaries so a label never
# depends on noise: (low, high) of C for class1, class2, class3 and thick graphite.
CONTRAST_BANDS = {"class1": (0.05, 0.11), "class2": (0.135, 0.18), "class3": (0.205, 0.29), "thick": (0.34, 0.60)}
CLASS_EDGES = (0.12, 0.19, 0.30)
# Per-class inclusion probabilities for an image that holds labelled flakes, and the share
# of such images: gives about 13%, 14%, 12% per class and 26% with any (the original data's).
_P_CLASS = (0.40, 0.44, 0.37)
_P_ANY = 0.26


def contrast_class(c: float) -> int:
    """The graphene class (1, 2, 3) of a red-channel contrast, or 0 when unlabelled."""
    lo1, lo2, lo3 = CLASS_EDGES
    if c <= lo1:
        return 1
    if c <= lo2:
        return 2
    if c <= lo3:
        return 3
    return 0


def rngs(seed: int, n: int) -> list[np.random.Generator]:
    """`n` independent generators spawned from `seed` (one per image: order-independent)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def _save_png(img, path, level=6):
    # PIL writes no timestamp into PNGs, so identical pixels give identical bytes. Noisy
    # flake images compress poorly; level 1 writes them four times faster for 10% more bytes.
    tmp = path + ".part"
    img.save(tmp, format="PNG", optimize=False, compress_level=level)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- crystals


def _smooth_field(rng, h, w, scale, amp):
    """Low-frequency illumination variation: upsampled random grid."""
    gh, gw = max(2, h // scale), max(2, w // scale)
    grid = Image.fromarray((rng.random((gh, gw)) * 255).astype(np.uint8))
    field = np.asarray(grid.resize((w, h), Image.BICUBIC), dtype=np.float32) / 255.0
    return (field - 0.5) * 2 * amp


def _needle_layer(rng, h, w, n, angle0, spread, width, bright, length, bundles=0.0):
    """One depth layer of straight needles drawn at a brightness, as a float array."""
    layer = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(layer)
    for _ in range(n):
        ang = angle0 + rng.normal(0, spread) if rng.random() > 0.15 else rng.uniform(0, math.pi)
        cx, cy = rng.uniform(-0.1 * w, 1.1 * w), rng.uniform(-0.1 * h, 1.1 * h)
        ln = rng.uniform(*length) * max(h, w)
        dx, dy = math.cos(ang) * ln / 2, math.sin(ang) * ln / 2
        b = int(rng.uniform(*bright))
        wd = int(rng.integers(width[0], width[1] + 1))
        strands = int(rng.integers(3, 12)) if rng.random() < bundles else 1
        nx, ny = -math.sin(ang), math.cos(ang)
        off = 0.0
        for _s in range(strands):
            sb = int(np.clip(b * rng.uniform(0.6, 1.1), 0, 255))
            ox, oy = nx * off, ny * off
            draw.line([(cx - dx + ox, cy - dy + oy), (cx + dx + ox, cy + dy + oy)], fill=sb, width=wd)
            off += rng.uniform(1.0, 3.5) * (1 if rng.random() < 0.8 else -1)
    return layer


def _blur(img, sigma):
    return img.filter(ImageFilter.GaussianBlur(sigma)) if sigma > 0.05 else img


def _needle_background(rng, h, w, density):
    """Grey in-situ background streaked with needles at several focus depths."""
    base = rng.uniform(25, 60)
    img = np.full((h, w), base, np.float32) + _smooth_field(rng, h, w, 30, rng.uniform(10, 30))
    angle0 = rng.uniform(0, math.pi)
    spread = rng.uniform(0.15, 0.9)
    area = h * w / CEX_SIZE**2
    # Far (very blurred, wide), middle, and near (sharp, thin) needles.
    layers = [
        (int(30 * density * area), (4, 12), (10, 45), rng.uniform(3.0, 6.0), (0.5, 1.4), 0.5),
        (int(30 * density * area), (2, 6), (15, 65), rng.uniform(1.5, 3.0), (0.3, 1.0), 0.4),
        (int(10 * density * area), (1, 3), (20, 80), rng.uniform(0.6, 1.4), (0.2, 0.8), 0.2),
    ]
    for n, width, bright, sigma, length, bundles in layers:
        layer = _needle_layer(rng, h, w, n, angle0, spread, width, bright, length, bundles)
        img += np.asarray(_blur(layer, sigma), np.float32)
    return img, angle0, spread


def _bright_bundle(rng, img, angle0, spread):
    """A wide, bright, streaky bundle of needles (the large crystals in CEX crops)."""
    h, w = img.shape
    layer = _needle_layer(rng, h, w, int(rng.integers(1, 3)), angle0, spread * 0.5, (3, 6), (85, 170),
                          (0.6, 1.4), bundles=1.0)
    img += np.asarray(_blur(layer, rng.uniform(0.6, 2.0)), np.float32)


def _finish(rng, img, noise, blur):
    img = np.asarray(_blur(Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)), blur), np.float32)
    img += rng.normal(0, noise, img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def make_cex(rng: np.random.Generator, hard: bool = False) -> Image.Image:
    """One synthetic cephalexin crop: 151x151, dense bright needles, grey to dark."""
    h = w = CEX_SIZE
    img, angle0, spread = _needle_background(rng, h, w, rng.uniform(0.8, 1.6))
    for _ in range(int(rng.integers(0, 4))):
        _bright_bundle(rng, img, angle0, spread)
    if hard:
        # A dense clump: many short needles crossing near one point, bright but not granular.
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        layer = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(layer)
        for _ in range(int(rng.integers(25, 60))):
            a = rng.uniform(0, math.pi)
            ln = rng.uniform(0.15, 0.45) * w
            px, py = cx + rng.normal(0, 10), cy + rng.normal(0, 10)
            dx, dy = math.cos(a) * ln / 2, math.sin(a) * ln / 2
            draw.line([(px - dx, py - dy), (px + dx, py + dy)], fill=int(rng.uniform(70, 150)),
                      width=int(rng.integers(1, 4)))
        img += np.asarray(_blur(layer, rng.uniform(0.5, 1.5)), np.float32)
    return _finish(rng, img, rng.uniform(2, 5), rng.uniform(0.6, 1.5))


def _blob_mask(rng, h, w, radius_frac):
    """Irregular, roughly round aggregate outline as a soft mask in 0..1, and its radius."""
    cy = h / 2 + rng.normal(0, 0.06) * h
    cx = w / 2 + rng.normal(0, 0.06) * w
    r0 = radius_frac * min(h, w)
    theta = np.linspace(0, 2 * math.pi, 180, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 7):
        r += rng.normal(0, 0.22 / k) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    r *= r0
    pts = [(cx + ri * math.cos(t) * (w / min(h, w)) ** 0.3, cy + ri * math.sin(t) * (h / min(h, w)) ** 0.3)
           for ri, t in zip(r, theta)]
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).polygon(pts, fill=255)
    return mask, (cy, cx), r0


def make_pg(rng: np.random.Generator, hard: bool = False) -> Image.Image:
    """One synthetic phenylglycine crop: a bright granular aggregate over needles."""
    h = int(rng.integers(130, 231))
    w = int(np.clip(h * rng.uniform(0.78, 1.28), 130, 230))
    img, angle0, spread = _needle_background(rng, h, w, rng.uniform(0.5, 1.0))
    img *= rng.uniform(0.9, 1.1)
    radius = rng.uniform(0.2, 0.3) if hard else rng.uniform(0.28, 0.42)
    mask, (cy, cx), r0 = _blob_mask(rng, h, w, radius)
    m = np.asarray(mask, np.float32) / 255.0

    # Granular texture: many small bright beads, denser towards the rim.
    beads = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(beads)
    n_beads = int(rng.integers(250, 700) * (r0 / 60) ** 2)
    ang = rng.uniform(0, 2 * math.pi, n_beads)
    rad = r0 * 1.05 * np.sqrt(rng.uniform(0, 1, n_beads)) ** rng.uniform(0.3, 0.8)
    for a, rr in zip(ang, rad):
        x, y = cx + rr * math.cos(a), cy + rr * math.sin(a)
        br = rng.uniform(1.0, 3.5)
        draw.ellipse([x - br, y - br, x + br, y + br], fill=int(rng.uniform(120, 255)))
    beads_f = np.asarray(_blur(beads, rng.uniform(0.4, 0.9)), np.float32)

    saturated = rng.random() < 0.55 and not hard
    yy, xx = np.mgrid[0:h, 0:w]
    dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / max(r0, 1)
    if saturated:
        # Near-white core fading into a beaded rim with dark gaps.
        core = np.clip(1.4 - dist, 0, 1) ** 0.6
        body = 215 + 40 * core
        body = body * (0.75 + 0.25 * core) + beads_f * (1 - core) * 0.35 - (1 - core) * rng.uniform(30, 70)
    else:
        body = rng.uniform(110, 160) + beads_f * rng.uniform(0.6, 0.9)
    if hard:
        body = body * rng.uniform(0.5, 0.7)
    soft = np.asarray(_blur(mask, rng.uniform(1.5, 3.5)), np.float32) / 255.0
    img = img * (1 - soft * 0.9) + body * soft
    # Loose beads around the rim and a few needles in front of the aggregate.
    img += beads_f * (1 - m) * (dist < 1.35) * 0.6
    front = _needle_layer(rng, h, w, int(rng.integers(3, 9) if hard else rng.integers(0, 4)), angle0, spread,
                          (1, 3), (40, 110), (0.3, 1.0))
    img += np.asarray(_blur(front, rng.uniform(0.4, 1.2)), np.float32)
    return _finish(rng, img, rng.uniform(2, 5), rng.uniform(0.4, 1.0))


def make_plate(rng: np.random.Generator, hard: bool = False) -> Image.Image:
    """One synthetic plate crop: 151x151, faceted tablets with bright edges over needles."""
    h = w = CEX_SIZE
    img, angle0, spread = _needle_background(rng, h, w, rng.uniform(0.3, 0.7) + (0.5 if hard else 0))
    face = Image.new("L", (w, h), 0)
    edges = Image.new("L", (w, h), 0)
    fd, ed = ImageDraw.Draw(face), ImageDraw.Draw(edges)
    for _ in range(int(rng.integers(1, 4))):
        sides = 6 if rng.random() < 0.6 else 4
        r = rng.uniform(14, 26) if hard else rng.uniform(22, 48)
        cx, cy = rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h
        turn, squash = rng.uniform(0, math.pi), rng.uniform(0.55, 1.0)
        pts = []
        for k in range(sides):
            a = 2 * math.pi * k / sides
            x, y = math.cos(a) * r, math.sin(a) * r * squash
            pts.append((cx + x * math.cos(turn) - y * math.sin(turn), cy + x * math.sin(turn) + y * math.cos(turn)))
        fd.polygon(pts, fill=int(rng.uniform(60, 110) * (0.6 if hard else 1)))
        ed.line(pts + pts[:1], fill=int(rng.uniform(140, 230) * (0.6 if hard else 1)), width=int(rng.integers(2, 4)))
        # A growth step: a smaller concentric outline on the face.
        inner = [(cx + (x - cx) * 0.55, cy + (y - cy) * 0.55) for x, y in pts]
        ed.line(inner + inner[:1], fill=int(rng.uniform(50, 110)), width=1)
    m = np.asarray(_blur(face, 0.8), np.float32)
    img = img * (1 - 0.7 * (m > 0)) + m + np.asarray(_blur(edges, rng.uniform(0.4, 1.0)), np.float32)
    return _finish(rng, img, rng.uniform(2, 5), rng.uniform(0.5, 1.2))


CRYSTAL_KINDS = {"cex": make_cex, "pg": make_pg, "plate": make_plate}


def _to_rgb(gray):
    return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), "RGB")


def generate_crystals(out: str, per_class: int = 300, seed: int = 0, pg_copies: int = 5, hard_fraction: float = 0.1,
                      progress: bool = False, classes: Sequence[str] = ("cex", "pg")) -> str:
    """Write the crystal dataset in the Kaggle layout.

    Args:
        out: root; images go to `<out>/cropped/cropped/<class>/`.
        per_class: images per class (PG copies count towards it).
        seed: run seed.
        pg_copies: each PG crop is saved this many times, rotated/flipped, under
            consecutive numbers (1 switches the copies off).
        hard_fraction: share of hard cases per class.
        progress: show a tqdm bar.
        classes: kinds to write, from cex, pg and plate; an int per class may follow a
            colon (`pg:80`) to give that class its own count (imbalanced sets).

    Returns:
        The folder holding the class folders.
    """
    counts = _class_counts(classes, per_class)
    if not 1 <= pg_copies <= 8:
        raise ValueError("pg_copies must be between 1 and 8")
    root = os.path.join(out, CRYSTAL_LAYOUT)
    for cls in counts:
        os.makedirs(os.path.join(root, cls), exist_ok=True)
    bar = _bar(progress, sum(counts.values()), "crystals")
    for cls, n in counts.items():
        if cls == "pg":
            _write_pg(root, n, seed, pg_copies, hard_fraction, bar)
            continue
        for i, rng in enumerate(rngs([seed, {"cex": 1, "plate": 3}[cls]], n), 1):
            img = CRYSTAL_KINDS[cls](rng, hard=rng.random() < hard_fraction)
            _save_png(_to_rgb(img), os.path.join(root, cls, f"{cls.upper()} ({i}).png"))
            bar.update(1)
    bar.close()
    return root


def _class_counts(classes, per_class):
    """{kind: images} from names like `pg` or `pg:80`; a one-line ValueError when wrong."""
    counts = {}
    for item in classes:
        name, _, n = str(item).partition(":")
        if name not in CRYSTAL_KINDS:
            raise ValueError(f"unknown crystal kind {name!r}; choose from {', '.join(CRYSTAL_KINDS)}")
        if name in counts:
            raise ValueError(f"crystal kind {name!r} is named twice")
        try:
            counts[name] = int(n) if n else per_class
        except ValueError:
            raise ValueError(f"{item!r}: the count after ':' must be an integer") from None
        if counts[name] < 1:
            raise ValueError(f"per_class (images of {name}) must be >= 1, got {counts[name]}")
    if not counts:
        raise ValueError("no crystal kinds given")
    return counts


def _write_pg(root, per_class, seed, pg_copies, hard_fraction, bar):
    """PG crops in groups of rotated/flipped copies under consecutive numbers."""
    number = 1
    n_groups = math.ceil(per_class / pg_copies)
    pg_rngs = rngs([seed, 2], n_groups)
    for rng in pg_rngs:
        base = make_pg(rng, hard=rng.random() < hard_fraction)
        ks = [0] + list(rng.choice(np.arange(1, 8), size=pg_copies - 1, replace=False))
        for k in ks:
            if number > per_class:
                break
            _save_png(_to_rgb(np.ascontiguousarray(dihedral(base, int(k)))), os.path.join(root, "pg", f"PG ({number}).png"))
            number += 1
            bar.update(1)


def _bar(enabled, total, desc):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=bar_disabled(enabled), file=sys.stderr)


# ---------------------------------------------------------------------------- graphene


@dataclass
class Flake:
    """A drawn flake: polygon, red-channel contrast and class (0 = unlabelled)."""

    points: list
    contrast: float
    cls: int

    def box(self) -> tuple[float, float, float, float]:
        xs, ys = [p[0] for p in self.points], [p[1] for p in self.points]
        return min(xs), min(ys), max(xs), max(ys)


_WAFER_RGB = np.array([186.0, 140.0, 196.0], np.float32)  # SiO2 (~90 nm) on Si under white light


def _wafer(rng, h, w):
    colour = _WAFER_RGB * rng.uniform(0.93, 1.07, 3).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gy, gx = rng.normal(0, 0.04, 2)
    illum = 1 + gy * (yy / h - 0.5) + gx * (xx / w - 0.5)
    img = colour[None, None, :] * illum[:, :, None]
    return img, colour


def _polygon(rng, cx, cy, size):
    n = int(rng.integers(5, 11))
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = size * rng.uniform(0.45, 1.0, n)
    stretch, rot = rng.uniform(0.5, 1.0), rng.uniform(0, math.pi)
    pts = []
    for a, r in zip(angles, radii):
        x, y = r * math.cos(a), r * math.sin(a) * stretch
        pts.append((cx + x * math.cos(rot) - y * math.sin(rot), cy + x * math.sin(rot) + y * math.cos(rot)))
    return pts


def _draw_flake(img, pts, contrast, rng):
    """Darken the wafer inside the polygon: red by exactly `contrast`, green/blue alike-ish."""
    h, w, _ = img.shape
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, y0 = max(0, int(min(xs)) - 2), max(0, int(min(ys)) - 2)
    x1, y1 = min(w, int(max(xs)) + 3), min(h, int(max(ys)) + 3)
    if x1 <= x0 or y1 <= y0:
        return
    mask = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(mask).polygon([(x - x0, y - y0) for x, y in pts], fill=255)
    m = np.asarray(mask, np.float32)[:, :, None] / 255.0
    # Graphene darkens red most; green and blue by related amounts (thin-film optics).
    factors = np.array([1 - contrast, 1 - contrast * rng.uniform(0.6, 0.9), 1 - contrast * rng.uniform(0.3, 0.7)],
                       np.float32)
    patch = img[y0:y1, x0:x1]
    img[y0:y1, x0:x1] = patch * (1 - m) + patch * factors[None, None, :] * m


def _distractor(rng, img, kind):
    h, w, _ = img.shape
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    if kind == "dust":
        r = rng.uniform(1.5, 5)
        yy, xx = np.ogrid[0:h, 0:w]
        d = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        img[d] = img[d] * rng.uniform(0.25, 0.5)
    else:  # residue: faint, large, blotchy, slightly brighter (tape glue)
        pts = _polygon(rng, cx, cy, rng.uniform(20, 60))
        tmp = img.copy()
        _draw_flake(tmp, pts, -rng.uniform(0.02, 0.05), rng)
        img[:] = tmp


def _place_flakes(rng, img, classes, size_range, central=None):
    """Draw flakes of the given contrast bands. Labelled ones are centred within the middle
    `central` fraction of the image when given, so a training crop keeps them."""
    h, w, _ = img.shape
    flakes = []
    for cls in classes:
        lo, hi = CONTRAST_BANDS[cls]
        c = float(rng.uniform(lo, hi))
        size = rng.uniform(*size_range)
        margin = size * 0.6
        if central and cls != "thick":
            lo_f, hi_f = 0.5 - central / 2, 0.5 + central / 2
            cx, cy = rng.uniform(lo_f * w, hi_f * w), rng.uniform(lo_f * h, hi_f * h)
        else:
            cx, cy = rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)
        pts = _polygon(rng, cx, cy, size)
        _draw_flake(img, pts, c, rng)
        flakes.append(Flake(pts, c, contrast_class(c)))
    return flakes


def make_flake_image(rng: np.random.Generator, size: int = 400) -> tuple[Image.Image, tuple]:
    """One graphene crop and the flakes drawn in it.

    Returns:
        (uint8 HxWx3 image, list of Flake, labels tuple (class1, class2, class3)).
    """
    img, _ = _wafer(rng, size, size)
    for _ in range(int(rng.poisson(2))):
        _distractor(rng, img, "dust" if rng.random() < 0.7 else "residue")
    # Thick graphite (no label) appears in many images, labelled or not.
    thick = ["thick"] * int(rng.integers(0, 3) if rng.random() < 0.5 else 0)
    wanted = []
    if rng.random() < _P_ANY:
        while not wanted:
            wanted = [f"class{i + 1}" for i, p in enumerate(_P_CLASS) if rng.random() < p]
    order = thick + wanted
    rng.shuffle(order)
    # Labelled flakes sit in the middle 40% (as crops are cut around a candidate flake), so
    # a random 300 px training crop of a 400 px image keeps them.
    flakes = _place_flakes(rng, img, order, (size * 0.04, size * 0.14), central=0.4)
    img += rng.normal(0, 2.0, img.shape).astype(np.float32)
    out = np.clip(np.round(img), 0, 255).astype(np.uint8)
    labels = tuple(int(any(f.cls == k for f in flakes)) for k in (1, 2, 3))
    return out, flakes, labels


def generate_graphene(out: str, count: int = 400, size: int = 400, seed: int = 0, progress: bool = False) -> str:
    """Write `count` flake images and `labels.csv` (filename,class1,class2,class3) to `out`."""
    os.makedirs(out, exist_ok=True)
    rows = []
    bar = _bar(progress, count, "graphene")
    for i, rng in enumerate(rngs([seed, 3], count)):
        arr, _, labels = make_flake_image(rng, size)
        name = f"flake_{i:05d}.png"
        _save_png(Image.fromarray(arr, "RGB"), os.path.join(out, name), level=1)
        rows.append((name, *labels))
        bar.update(1)
    bar.close()
    atomic_write_csv(os.path.join(out, LABELS_CSV), ["filename", "class1", "class2", "class3"], rows)
    return out


def generate_wafer(out: str, width: int = 4908, height: int = 3264, seed: int = 0, n_flakes: int = 8) -> tuple[str, str]:
    """Write one whole microscope frame with labelled flakes and `<stem>_boxes.csv`.

    The CSV has one row per labelled flake: x0,y0,x1,y1,class,contrast.
    """
    rng = np.random.default_rng([seed, 4])
    img, _ = _wafer(rng, height, width)
    for _ in range(int(width * height / 400_000)):
        _distractor(rng, img, "dust")
    classes = [f"class{1 + (i % 3)}" for i in range(n_flakes)] + ["thick"] * max(1, n_flakes // 3)
    rng.shuffle(classes)
    flakes = _place_flakes(rng, img, classes, (20, 60))
    img += rng.normal(0, 2.0, img.shape).astype(np.float32)
    arr = np.clip(np.round(img), 0, 255).astype(np.uint8)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    _save_png(Image.fromarray(arr, "RGB"), out, level=1)
    boxes = os.path.splitext(out)[0] + "_boxes.csv"
    atomic_write_csv(boxes, ["x0", "y0", "x1", "y1", "class", "contrast"],
                     ([*(int(round(v)) for v in f.box()), f.cls, f"{f.contrast:.4f}"] for f in flakes if f.cls))
    return out, boxes


# ---------------------------------------------------------------------------- a process over time


PROCESS_SIZE = (1024, 768)  # width, height of a frame
PROCESS_START = "20261201T100000"  # the first frame's time (names carry it: frame_00001_<time>.png)


def pg_fraction_curve(s: float, peak: float = 0.4, centre: float = 0.45, width: float = 0.16) -> float:
    """The simulated run's true share of PG among in-focus particles at run fraction s in
    [0, 1]: PG appears, peaks at `peak` near `centre` and dissolves again."""
    return float(peak * math.exp(-(((s - centre) / width) ** 2)))


def particle_count_curve(s: float, low: int = 20, high: int = 55) -> int:
    """In-focus particles in a frame at run fraction s: nucleation, then a plateau."""
    return int(round(low + (high - low) * (1 - math.exp(-4 * s))))


def _process_background(rng, h, w):
    """A dark probe frame: uneven illumination (a smooth field, a gradient, a vignette) and the
    slurry's out-of-focus needles at the density and depths of the crystal crops (their
    lengths relative to a crop's 151 px, not to the frame)."""
    base = rng.uniform(22, 34)
    img = np.full((h, w), base, np.float32) + _smooth_field(rng, h, w, 160, rng.uniform(10, 18))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gy, gx = rng.uniform(-12, 12, 2)
    img += gy * (yy / h - 0.5) + gx * (xx / w - 0.5)
    img -= 12 * (((yy / h - 0.5) ** 2 + (xx / w - 0.5) ** 2) * 2)
    area, scale = h * w / CEX_SIZE ** 2, CEX_SIZE / max(h, w)
    angle0, spread = rng.uniform(0, math.pi), rng.uniform(0.4, 1.2)
    density = rng.uniform(0.5, 0.9)
    for n, width, bright, sigma, length in (
            (int(30 * density * area), (4, 12), (8, 35), rng.uniform(3.5, 6.0), (0.5 * scale, 1.4 * scale)),
            (int(20 * density * area), (2, 6), (10, 40), rng.uniform(2.0, 3.0), (0.3 * scale, 1.0 * scale))):
        layer = _needle_layer(rng, h, w, n, angle0, spread, width, bright, length, 0.3)
        img += np.asarray(_blur(layer, sigma), np.float32)
    return img


def _cex_sprite(rng, length):
    """A cephalexin crystal as the probe sees it: a bright bundle of needles fused along their
    length, as the crops' bright bundles are. Returns (added brightness, mask) on a square canvas."""
    side = int(length * 1.3) + 12
    layer = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(layer)
    ang = rng.uniform(0, math.pi)
    nx, ny = -math.sin(ang), math.cos(ang)
    c = side / 2
    b = rng.uniform(110, 190)
    strands = int(rng.integers(3, 10))
    off = -strands * 0.9
    for _ in range(strands):
        ln = length * rng.uniform(0.6, 1.0)
        shift = rng.uniform(-0.15, 0.15) * length
        dx, dy = math.cos(ang) * ln / 2, math.sin(ang) * ln / 2
        x, y = c + nx * off + math.cos(ang) * shift, c + ny * off + math.sin(ang) * shift
        draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=int(np.clip(b * rng.uniform(0.6, 1.1), 0, 255)),
                  width=int(rng.integers(2, 5)))
        off += rng.uniform(1.0, 2.5)
    if rng.random() < 0.25:  # a needle grown across the bundle
        a2 = ang + rng.uniform(0.4, 1.2) * rng.choice([-1, 1])
        ln = length * rng.uniform(0.4, 0.8)
        dx, dy = math.cos(a2) * ln / 2, math.sin(a2) * ln / 2
        draw.line([(c - dx, c - dy), (c + dx, c + dy)], fill=int(b * rng.uniform(0.6, 1.0)), width=2)
    value = np.asarray(_blur(layer, rng.uniform(0.6, 1.1)), np.float32)
    return value, value > 40


def _pg_sprite(rng, radius):
    """A phenylglycine aggregate: a bright, granular, roughly round body with a beaded rim.
    Returns (brightness, opacity 0..1) on a square canvas."""
    side = int(radius * 2.8) + 8
    mask, (cy, cx), r0 = _blob_mask(rng, side, side, radius / side)
    beads = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(beads)
    # Beads as many and as large, relative to the body, as in a PG crop's aggregate (r0 ~ 60 px).
    n = int(rng.integers(250, 700)) + 20
    ang = rng.uniform(0, 2 * math.pi, n)
    rad = r0 * 1.05 * np.sqrt(rng.uniform(0, 1, n)) ** rng.uniform(0.3, 0.8)
    for a, rr in zip(ang, rad):
        x, y = cx + rr * math.cos(a), cy + rr * math.sin(a)
        br = max(0.6, rng.uniform(1.0, 3.5) * r0 / 60)
        draw.ellipse([x - br, y - br, x + br, y + br], fill=int(rng.uniform(120, 255)))
    beads_f = np.asarray(_blur(beads, rng.uniform(0.4, 0.8)), np.float32)
    yy, xx = np.mgrid[0:side, 0:side]
    dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / max(r0, 1)
    if rng.random() < 0.5:
        core = np.clip(1.4 - dist, 0, 1) ** 0.6
        body = (215 + 40 * core) * (0.75 + 0.25 * core) + beads_f * (1 - core) * 0.35 - (1 - core) * 40
    else:
        body = rng.uniform(110, 160) + beads_f * rng.uniform(0.6, 0.9)
    opacity = np.asarray(_blur(mask, rng.uniform(0.8, 1.5)), np.float32) / 255.0 * 0.92
    return np.clip(body, 0, 255), opacity


def _place(img, value, alpha, x, y, additive):
    """Blend a sprite whose canvas is centred on (x, y); returns the canvas box in the frame."""
    h, w = img.shape
    s = value.shape[0]
    x0, y0 = int(round(x - s / 2)), int(round(y - s / 2))
    fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(w, x0 + s), min(h, y0 + s)
    if fx1 <= fx0 or fy1 <= fy0:
        return x0, y0
    v = value[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
    a = alpha[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
    patch = img[fy0:fy1, fx0:fx1]
    img[fy0:fy1, fx0:fx1] = patch + v * a if additive else patch * (1 - a) + v * a
    return x0, y0


def _sprite_box(mask, x0, y0, w, h):
    """The box (x0, y0, x1, y1, touches_edge) of a sprite's mask in frame coordinates, clipped."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    bx0, by0, bx1, by1 = x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1
    edge = bx0 <= 0 or by0 <= 0 or bx1 >= w or by1 >= h
    cx0, cy0, cx1, cy1 = max(0, bx0), max(0, by0), min(w, bx1), min(h, by1)
    if cx1 - cx0 < 3 or cy1 - cy0 < 3:
        return None
    return int(cx0), int(cy0), int(cx1), int(cy1), bool(edge)


def make_process_frame(rng: np.random.Generator, s: float, size: Sequence[int] = PROCESS_SIZE,
                       n_particles: int | None = None, pg_fraction: float | None = None) -> tuple[np.ndarray, list]:
    """One frame of a simulated crystallization at run fraction s in [0, 1].

    In-focus CEX needle bundles and PG aggregates (sizes growing with s; PG's share following
    `pg_fraction_curve`), a fifth as many out-of-focus ones, a few pairs in contact, some cut
    by the frame's edge, over an uneven dark background.

    Returns:
        (uint8 (h, w) frame, particles: dicts with x0, y0, x1, y1, class, in_focus, edge, touching).
    """
    w, h = size
    img = _process_background(rng, h, w)
    n = particle_count_curve(s) if n_particles is None else n_particles
    frac = pg_fraction_curve(s) if pg_fraction is None else pg_fraction
    n_pg = int(round(n * frac))
    kinds = [("pg", True)] * n_pg + [("cex", True)] * (n - n_pg)
    n_blur = max(1, n // 5)
    kinds += [("pg" if rng.random() < frac else "cex", False) for _ in range(n_blur)]
    order = rng.permutation(len(kinds))
    out_of_focus = [kinds[i] for i in order if not kinds[i][1]]
    in_focus = [kinds[i] for i in order if kinds[i][1]]
    particles, taken = [], []
    # Out-of-focus particles first: the sharp ones are drawn over them.
    for cls, sharp in out_of_focus + in_focus:
        for attempt in range(60):
            if cls == "cex":
                value, mask = _cex_sprite(rng, float(np.clip(rng.lognormal(math.log(30 + 50 * s), 0.3), 14, 160)))
                alpha = np.ones_like(value)
            else:
                radius = float(np.clip(rng.lognormal(math.log(24 + 14 * s), 0.25), 12, 60))
                value, alpha = _pg_sprite(rng, radius)
                mask = alpha > 0.5
            side = value.shape[0]
            touching = sharp and taken and attempt == 0 and rng.random() < 0.05
            if touching:  # in contact with the last particle placed
                px0, py0, px1, py1 = taken[-1]
                x = px1 + side * 0.25 if rng.random() < 0.5 else px0 - side * 0.25
                y = (py0 + py1) / 2 + rng.uniform(-0.2, 0.2) * side
            else:
                x, y = rng.uniform(-0.15 * side, w + 0.15 * side), rng.uniform(-0.15 * side, h + 0.15 * side)
            box = (x - side * 0.4, y - side * 0.4, x + side * 0.4, y + side * 0.4)
            if not touching and any(box[0] < t[2] + 6 and t[0] < box[2] + 6 and box[1] < t[3] + 6 and t[1] < box[3] + 6
                                    for t in taken):
                continue
            if not sharp:
                sigma = rng.uniform(3.5, 6.0)
                value = np.asarray(Image.fromarray(np.clip(value * 0.75, 0, 255).astype(np.uint8)).filter(
                    ImageFilter.GaussianBlur(sigma)), np.float32)
                alpha = np.asarray(Image.fromarray((alpha * 255).astype(np.uint8)).filter(
                    ImageFilter.GaussianBlur(sigma)), np.float32) / 255.0
            x0, y0 = _place(img, value, alpha, x, y, additive=cls == "cex")
            found = _sprite_box(mask, x0, y0, w, h)
            if found is not None:
                taken.append(found[:4])
                particles.append({"x0": found[0], "y0": found[1], "x1": found[2], "y1": found[3], "class": cls,
                                  "in_focus": int(sharp), "edge": int(found[4]), "touching": int(bool(touching))})
            break
    img += rng.normal(0, rng.uniform(2.5, 4.0), img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), particles


def generate_process(out: str, frames: int = 120, seed: int = 0, interval: float = 2.0,
                     size: Sequence[int] = PROCESS_SIZE, progress: bool = False, scale: float = 1.0,
                     polarity: str = "bright") -> str:
    """Write the frames of a simulated crystallization and the truth beside them.

    `<out>/frame_00001_20261201T100000.png ...` (the time in each name, one frame every
    `interval` seconds), `<out>/truth/particles.csv` (frame, x0, y0, x1, y1, class,
    in_focus, edge, touching: every particle drawn), `<out>/truth/frames.csv` (frame,
    time, in-focus particle count, pg count, true pg fraction) and `<out>/truth/coco.json`
    (the in-focus particles as COCO boxes with categories cex and pg, the out-of-focus ones
    as regions to ignore: what `ga monitor --truth` reads). `scale` renders each frame at
    `size` and resizes it by that factor (a camera with more or fewer pixels across the same
    optics: edges `scale` times as wide in pixels); `polarity` "dark" inverts the grey levels
    (a bright-field look: dark particles on a light background). Returns `out`.
    """
    import datetime as dt

    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if not 0.1 <= scale <= 8:
        raise ValueError(f"scale must be between 0.1 and 8, got {scale}")
    if polarity not in ("bright", "dark"):
        raise ValueError(f"polarity must be bright or dark, got {polarity!r}")
    start = dt.datetime.strptime(PROCESS_START, "%Y%m%dT%H%M%S")
    truth_dir = os.path.join(out, "truth")
    os.makedirs(truth_dir, exist_ok=True)
    part_rows, frame_rows = [], []
    bar = _bar(progress, frames, "frames")
    for i, rng in enumerate(rngs([seed, 5], frames)):
        s = i / max(1, frames - 1)
        img, particles = make_process_frame(rng, s, size)
        if scale != 1.0:
            img, particles = _rescaled(img, particles, scale)
        if polarity == "dark":
            img = 255 - img
        t = start + dt.timedelta(seconds=i * interval)
        name = f"frame_{i + 1:05d}_{t.strftime('%Y%m%dT%H%M%S')}.png"
        _save_png(_to_rgb(img), os.path.join(out, name), level=1)
        focus = [p for p in particles if p["in_focus"]]
        n_pg = sum(p["class"] == "pg" for p in focus)
        frame_rows.append((name, t.isoformat(), len(focus), n_pg, f"{n_pg / len(focus):.6f}" if focus else ""))
        part_rows += [(name, p["x0"], p["y0"], p["x1"], p["y1"], p["class"], p["in_focus"], p["edge"], p["touching"])
                      for p in particles]
        bar.update(1)
    bar.close()
    atomic_write_csv(os.path.join(truth_dir, "particles.csv"),
                     ["frame", "x0", "y0", "x1", "y1", "class", "in_focus", "edge", "touching"], part_rows)
    atomic_write_csv(os.path.join(truth_dir, "frames.csv"), ["frame", "time", "particles", "pg_count", "pg_fraction"],
                     frame_rows)
    h, w = img.shape[:2]
    atomic_write_json(os.path.join(truth_dir, "coco.json"), process_coco(part_rows, [r[0] for r in frame_rows], (w, h)))
    return out


def _rescaled(img, particles, scale):
    """A frame resized by `scale` (bicubic) and its particles' boxes with it (outward)."""
    h, w = img.shape
    size = (max(8, int(round(w * scale))), max(8, int(round(h * scale))))
    out = np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC))
    fx, fy = size[0] / w, size[1] / h
    moved = [{**p, "x0": int(math.floor(p["x0"] * fx)), "y0": int(math.floor(p["y0"] * fy)),
              "x1": min(size[0], int(math.ceil(p["x1"] * fx))), "y1": min(size[1], int(math.ceil(p["y1"] * fy)))}
             for p in particles]
    return out, moved


def process_coco(part_rows: Sequence[Sequence], names: Sequence[str], size: Sequence[int]) -> dict:
    """The truth of a process as a COCO document: rows (frame, x0, y0, x1, y1, class,
    in_focus, edge, touching); in-focus particles are annotations, out-of-focus ones regions
    to ignore (`ignore: 1`, `iscrowd: 0`)."""
    ids = {n: i + 1 for i, n in enumerate(names)}
    cats = {"cex": 1, "pg": 2}
    anns = [{"id": k + 1, "image_id": ids[f], "category_id": cats[c], "bbox": [x0, y0, x1 - x0, y1 - y0],
             "area": (x1 - x0) * (y1 - y0), "iscrowd": 0, "ignore": 0 if focus else 1,
             "attributes": {"edge": int(edge), "touching": int(touch)}}
            for k, (f, x0, y0, x1, y1, c, focus, edge, touch) in enumerate(part_rows)]
    return {"info": {"description": "ga synth process: the particles drawn"},
            "images": [{"id": ids[n], "file_name": n, "width": int(size[0]), "height": int(size[1])} for n in names],
            "annotations": anns, "categories": [{"id": i, "name": n} for n, i in cats.items()]}


if __name__ == "__main__":
    # `python -m ga.synthetic ...` is `python -m ga synth ...`, run in a process of its own: the
    # command line (ga.cli) sits above every library module, and none imports it
    import subprocess

    sys.exit(subprocess.call([sys.executable, "-m", "ga", "synth", *sys.argv[1:]]))
