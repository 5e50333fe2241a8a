"""Particles in a whole frame: detection, geometry and one crop per particle for the model.

The steps (scikit-image and SciPy do each), every parameter in the config's `monitor`
section (`ga.config.MonitorConfig`):

1. grey levels 0-255 (RGB averaged; 16-bit scaled), turned so that particles are bright
   (`polarity: dark` for a bright-field frame whose particles are dark);
2. background correction: the frame minus a median-filtered copy of it taken at reduced
   scale (`background_size` px window), which removes uneven illumination and vignetting
   but keeps anything much smaller than the window;
3. a threshold on the corrected frame: Otsu's (default), Li's, the triangle method, or a
   number of grey levels; an automatic one never below the background's median plus
   `threshold_floor` robust standard deviations (a frame with few particles has no second
   mode, and Otsu's method would split its background);
4. morphology: an opening of `open_radius` px (removes noise and hairlines), a closing of
   `close_radius` px (joins a granular aggregate's beads), holes filled;
5. connected components (8-connected), each measured;
6. filters: area between `min_area` and `max_area` px; sharpness at least `min_sharpness`
   (out-of-focus particles dropped). Sharpness is the mean gradient magnitude on a
   particle's outline divided by its contrast (its mean level above the corrected
   background): about one over the edge's width in pixels (in-focus particles of the
   synthetic process 0.16-0.5, blurred ones below 0.15);
7. a particle touching the frame's edge is kept and classified, but flagged `edge`: it is
   cut, so its size is wrong, and the size statistics leave it out.

Geometry per particle, in pixels (and micrometres with `pixel_size_um`): area, equivalent
diameter (of the circle of that area), Feret diameters (the largest and smallest calliper
width over 180 directions of the convex outline of the pixel squares), perimeter
(Crofton), aspect ratio (min / max Feret, 1 for a disc, small for a needle), circularity
(4 pi area / perimeter^2), solidity (area over the area of the convex hull of the pixel
squares), bounding box, centroid.

The crop for the model is the square window around the box, `crop_margin` of the box's
longer side on each side, taken from the frame itself (reflected where it leaves the
frame), resized later with the model's own resize (`ga.predict.prepare_arrays`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    from ga.config import MonitorConfig

# The columns of one particle's geometry, in the order particles.csv has them.
GEOMETRY = ("x0", "y0", "x1", "y1", "centroid_x", "centroid_y", "area_px", "eq_diameter_px", "feret_max_px",
            "feret_min_px", "perimeter_px", "aspect_ratio", "circularity", "solidity", "sharpness", "edge")
LENGTHS = ("eq_diameter", "feret_max", "feret_min", "perimeter")  # the columns also given in micrometres


@dataclass
class Particle:
    """One detected object: its box (x0, y0, x1, y1: x1, y1 exclusive), its measures, and
    why it was dropped ("" when kept)."""

    box: tuple[int, int, int, int]
    geometry: dict
    outline: Any = None  # (n, 2) row, col points of the outline (for the detection figure)
    dropped: str = ""
    crop: Any = field(default=None, repr=False)

    @property
    def edge(self) -> bool:
        return bool(self.geometry["edge"])


def grey(frame: np.ndarray) -> np.ndarray:
    """float32 grey levels 0-255 of a frame: (h, w) or (h, w, c) of any integer or float type
    (16-bit and other integer types scaled from their range, floats taken as 0-1 when their
    maximum is at most 1)."""
    a = np.asarray(frame)
    if a.ndim == 3:
        a = a[..., :3].astype(np.float32).mean(axis=2) if a.shape[2] >= 3 else a[..., 0]
    if a.dtype == np.uint8:
        return a.astype(np.float32)
    if a.dtype.kind in "ui":
        return a.astype(np.float32) * (255.0 / np.iinfo(a.dtype).max)
    a = a.astype(np.float32)
    return a * 255.0 if a.size and float(np.nanmax(a)) <= 1.0 else a


def preload() -> None:
    """Import every module detection uses, on the calling thread. `ga monitor` detects on
    worker threads; scikit-image loads its submodules lazily, and two threads importing
    different ones at once can meet in a circular import that Python then resolves by
    handing one thread a half-initialised module ("partially initialized module
    'skimage.morphology' has no attribute 'disk'"). Called before the threads start."""
    from scipy import ndimage, spatial  # noqa: F401
    from skimage import filters, measure, morphology

    for module, names in ((filters, ("threshold_otsu", "threshold_li", "threshold_triangle")),
                          (measure, ("label", "regionprops")), (morphology, ("disk",))):
        for name in names:
            getattr(module, name)  # resolves the lazy attribute, importing its submodule


def corrected(frame: np.ndarray, cfg: MonitorConfig) -> np.ndarray:
    """The frame's grey levels, particles bright, with the slowly varying background taken
    away (steps 1-2 of the module docstring)."""
    from PIL import Image
    from scipy import ndimage

    g = grey(frame)
    if cfg.polarity == "dark":
        g = 255.0 - g
    if cfg.background == "none":
        return g - float(np.median(g))
    # The median of a window much larger than a particle is the background under it; at 1/f
    # scale with a 9-sample window it costs a few milliseconds instead of seconds.
    f = max(1, cfg.background_size // 9)
    small = g[: g.shape[0] // f * f, : g.shape[1] // f * f]
    small = small.reshape(small.shape[0] // f, f, small.shape[1] // f, f).mean(axis=(1, 3)) if f > 1 else small
    size = max(3, int(round(cfg.background_size / f)) | 1)
    bg = ndimage.median_filter(small, size=size, mode="reflect").astype(np.float32)
    bg = np.asarray(Image.fromarray(bg, mode="F").resize((g.shape[1], g.shape[0]), Image.BILINEAR))
    return g - bg


def threshold_of(image: np.ndarray, cfg: MonitorConfig) -> float:
    """The grey level (of the corrected frame) above which a pixel is a particle's."""
    from skimage import filters

    how = cfg.threshold_value()
    if not isinstance(how, str):
        return how
    method = {"otsu": filters.threshold_otsu, "li": filters.threshold_li, "triangle": filters.threshold_triangle}
    # On every other pixel of every other row (the same threshold, a quarter of the work);
    # the rare extreme values clipped so the histogram's bins resolve the background's spread.
    sample = image[::2, ::2]
    lo, hi = np.percentile(sample, [0.1, 99.9])
    value = float(method[how](np.clip(sample, lo, hi)))
    median = float(np.median(sample))
    spread = 1.4826 * float(np.median(np.abs(sample - median)))
    return max(value, median + cfg.threshold_floor * spread)


def detect(frame: np.ndarray, cfg: MonitorConfig, keep_dropped: bool = False) -> list[Particle]:
    """The particles of one frame (module docstring), kept ones only unless `keep_dropped`.

    Args:
        frame: (h, w) or (h, w, c) pixels.
        cfg: the `monitor` section of the config.
        keep_dropped: also return the objects the filters dropped (with `dropped` set), for
            the detection figure.
    """
    from scipy import ndimage
    from skimage import measure, morphology

    image = corrected(frame, cfg)
    mask = image > threshold_of(image, cfg)
    if cfg.open_radius:
        mask = ndimage.binary_opening(mask, morphology.disk(cfg.open_radius))
    if cfg.close_radius:
        # padded so that a closing does not treat the frame's border as a particle's
        r = cfg.close_radius
        mask = ndimage.binary_closing(np.pad(mask, r), morphology.disk(r))[r:-r, r:-r]
    mask = ndimage.binary_fill_holes(mask)
    labels = measure.label(mask, connectivity=2)
    grad = _gradient(image)
    h, w = mask.shape
    out = []
    for region in measure.regionprops(labels):
        p = _measure(region, image, grad, labels, (h, w), cfg)
        if p.dropped and not keep_dropped:
            continue
        out.append(p)
    return out


def _gradient(image):
    """Gradient magnitude per pixel (grey levels per pixel) of the slightly smoothed frame."""
    from scipy import ndimage

    return ndimage.gaussian_gradient_magnitude(image, 0.8)


def _outline(own):
    """The pixels of a mask with a 4-neighbour outside it (the mask's own border counts)."""
    p = np.pad(own, 1)
    inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return own & ~inner


def _measure(region, image, grad, labels, shape, cfg):
    """A Particle from one labelled region: geometry, sharpness and the filter's verdict."""
    h, w = shape
    y0, x0, y1, x1 = region.bbox
    area = int(region.area)
    geometry = {"x0": x0, "y0": y0, "x1": x1, "y1": y1, "centroid_x": float(region.centroid[1]),
                "centroid_y": float(region.centroid[0]), "area_px": area,
                "edge": int(x0 == 0 or y0 == 0 or x1 == w or y1 == h)}
    p = Particle((x0, y0, x1, y1), geometry)
    if area < cfg.min_area:
        p.dropped = "small"
        return p
    if cfg.max_area and area > cfg.max_area:
        p.dropped = "large"
    # The outline, and the contrast: the particle's mean level above the corrected frame's
    # background (about 0 by construction).
    wy0, wx0, wy1, wx1 = max(0, y0 - 1), max(0, x0 - 1), min(h, y1 + 1), min(w, x1 + 1)
    own = labels[wy0:wy1, wx0:wx1] == region.label
    outline = _outline(own)
    contrast = float(image[wy0:wy1, wx0:wx1][own].mean())
    sharp = float(grad[wy0:wy1, wx0:wx1][outline].mean() / contrast) if contrast > 0 else 0.0
    fmax, fmin, hull_area = feret_diameters(outline)
    perimeter = float(region.perimeter_crofton) if area > 2 else float(4 * math.sqrt(area))
    perimeter = perimeter if perimeter > 0 else float(region.perimeter)
    geometry.update({
        "eq_diameter_px": float(math.sqrt(4 * area / math.pi)), "feret_max_px": fmax, "feret_min_px": fmin,
        "perimeter_px": perimeter, "aspect_ratio": fmin / fmax if fmax else 1.0,
        "circularity": float(min(1.0, 4 * math.pi * area / perimeter ** 2)) if perimeter else 1.0,
        "solidity": float(min(1.0, area / hull_area)) if hull_area else 1.0, "sharpness": sharp,
    })
    if not p.dropped and sharp < cfg.min_sharpness:
        p.dropped = "out of focus"
    ys, xs = np.nonzero(outline)
    p.outline = np.stack([ys + wy0, xs + wx0], axis=1)
    return p


_DIRECTIONS = np.stack([np.cos(np.radians(np.arange(180))), np.sin(np.radians(np.arange(180)))])


def feret_diameters(mask: np.ndarray) -> tuple[float, float, float]:
    """(largest, smallest calliper width, area of the convex hull) in pixels of a binary mask
    (or of its outline: the hull is the same), over 180 directions of the convex outline of
    its pixel squares (one pixel: sqrt 2, 1 and 1)."""
    from scipy.spatial import ConvexHull, QhullError

    ys, xs = np.nonzero(mask)
    corners = np.concatenate([np.stack([xs + dx, ys + dy], axis=1) for dx in (0, 1) for dy in (0, 1)]).astype(float)
    try:
        hull = ConvexHull(corners)
        corners, area = corners[hull.vertices], float(hull.volume)
    except (QhullError, ValueError):  # a line of pixels: every corner is on the hull anyway
        area = float(len(xs))
    proj = corners @ _DIRECTIONS
    widths = proj.max(axis=0) - proj.min(axis=0)
    return float(widths.max()), float(widths.min()), area


def crop_window(box: Sequence[int], shape: Sequence[int], margin: float) -> tuple[int, int, int]:
    """(x0, y0, side) of the square window around a box: the box's longer side plus `margin`
    of it on each side, centred on the box (it may reach outside the frame)."""
    x0, y0, x1, y1 = box
    side = max(8, int(math.ceil(max(x1 - x0, y1 - y0) * (1 + 2 * margin))))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return int(round(cx - side / 2)), int(round(cy - side / 2)), side


def crop(frame: np.ndarray, box: Sequence[int], margin: float) -> np.ndarray:
    """The square crop around a box from the frame, reflected where it leaves the frame."""
    h, w = frame.shape[:2]
    x0, y0, side = crop_window(box, (h, w), margin)
    pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
    if pad:
        widths = ((pad, pad), (pad, pad)) + ((0, 0),) * (frame.ndim - 2)
        frame = np.pad(frame, widths, mode="reflect" if pad < min(h, w) else "edge")
        x0, y0 = x0 + pad, y0 + pad
    return frame[y0:y0 + side, x0:x0 + side]


def with_micrometres(geometry: dict, pixel_size_um: float | None) -> dict:
    """The geometry with its lengths (and area) also in micrometres when the pixel size is known."""
    if not pixel_size_um:
        return geometry
    out = dict(geometry)
    for k in LENGTHS:
        out[f"{k}_um"] = geometry[f"{k}_px"] * pixel_size_um
    out["area_um2"] = geometry["area_px"] * pixel_size_um ** 2
    return out
