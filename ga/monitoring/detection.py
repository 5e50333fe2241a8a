"""Particles in a whole frame: detection, geometry and one crop per particle for the model.

The steps (scikit-image and SciPy do each), every parameter in the config's `monitor`
section (`ga.config.MonitorConfig`). The size-like ones default to `auto`: chosen for each
frame by `resolve` (from the frame's size relative to the 1024 x 768 reference frame the
defaults were chosen on, and from its grey levels), by `thresholded` and by `focus_cut`
(from the frame's own objects); `ga monitor --calibrate` (ga.monitoring.calibration) chooses them once
over a sample of the frames instead. A value given in the configuration is used as given.

1. grey levels 0-255 (RGB averaged; 16-bit scaled), turned so that particles are bright
   (`polarity`: bright, dark, or auto: the side of the frame's heavier tail);
2. background correction: the frame minus a median-filtered copy of it taken at reduced
   scale (`background_size` px window; auto: a fifth of the shorter side, widened while an
   object found reaches half the window), which removes uneven illumination and vignetting
   but keeps anything much smaller than the window;
3. a threshold on the corrected frame: Otsu's (default), Li's, the triangle method, or a
   number of grey levels; an automatic one never below the background's median plus
   `threshold_floor` robust standard deviations (a frame with few particles has no second
   mode, and Otsu's method would split its background);
4. morphology: an opening of `open_radius` px (removes noise and hairlines), a closing of
   `close_radius` px (joins a granular aggregate's beads; auto: 2 px at the reference
   frame, in proportion), holes filled;
5. connected components (8-connected), particles in contact cut apart at a narrow neck of
   their distance map (`split_touching`, ga.monitoring.touching), each measured;
6. filters: area between `min_area` (auto: 40 px at the reference frame, in proportion to
   the area) and `max_area` px; sharpness at least `min_sharpness` (out-of-focus particles
   dropped). Sharpness is the mean gradient magnitude on a particle's outline divided by its
   contrast at its rim (its mean level above the corrected background within a few pixels
   of the outline): about one over the edge's width in pixels. auto: the split between the
   frame's sharp and blurred objects when they form two groups, else 0.15 (the reference
   frame's cut) scaled to the frame (`scaled_sharpness`);
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
frame), resized later with the model's own resize (`ga.inputs.prepare_arrays`).
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
    if a.ndim == 3 and a.shape[2] >= 3 and a.dtype == np.uint8:  # summed in 16 bits: 5x faster than a float mean
        return (a[..., 0].astype(np.uint16) + a[..., 1] + a[..., 2]).astype(np.float32) * np.float32(1 / 3)
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
    from skimage import filters, measure, morphology, segmentation
    from sklearn import mixture  # noqa: F401

    import ga.monitoring.touching  # noqa: F401

    for module, names in ((filters, ("threshold_otsu", "threshold_li", "threshold_triangle")),
                          (measure, ("label", "regionprops")), (morphology, ("disk", "local_maxima")),
                          (segmentation, ("watershed",))):
        for name in names:
            getattr(module, name)  # resolves the lazy attribute, importing its submodule


# The frame the pixel defaults were chosen on (`ga synth process`: 1024 x 768): "auto" scales
# them by the frame's shorter side over this one's.
REFERENCE_SIDE = 768
DEFAULTS_AT_REFERENCE = {"background_size": 151, "close_radius": 2, "min_area": 40, "min_sharpness": 0.15}


def frame_scale(shape: Sequence[int]) -> float:
    """The frame's shorter side over the reference frame's."""
    return min(shape[:2]) / REFERENCE_SIDE


def polarity_of(g: np.ndarray) -> str:
    """"bright" or "dark": the side of the background the frame's objects lie on. Objects
    are the pixels far (more than 4 robust standard deviations) from the frame's median;
    the side whose far pixels weigh more (their summed distance beyond that) wins. Ties and
    frames without any such pixel: bright."""
    sample = g[::2, ::2]
    median = float(np.median(sample))
    spread = max(1e-3, 1.4826 * float(np.median(np.abs(sample - median))))
    d = (sample - median) / spread
    up, down = float(np.clip(d - 4, 0, None).sum()), float(np.clip(-d - 4, 0, None).sum())
    return "dark" if down > up else "bright"


def resolve(frame: np.ndarray, cfg: MonitorConfig) -> MonitorConfig:
    """A copy of `cfg` with every "auto" pixel setting chosen for this frame: polarity from
    the frame's tails (`polarity_of`), the background window, closing radius and smallest
    area scaled from their reference values by the frame's size (`frame_scale`; an area by
    its square). min_sharpness stays "auto" here: `detect` judges focus against the
    frame's own objects (`focus_cut`)."""
    import dataclasses

    k = frame_scale(np.shape(frame))
    chosen = {}
    if cfg.polarity == "auto":
        chosen["polarity"] = polarity_of(grey(frame))
    if cfg.background_size == "auto":
        chosen["background_size"] = max(15, int(round(DEFAULTS_AT_REFERENCE["background_size"] * k)) | 1)
    if cfg.close_radius == "auto":
        chosen["close_radius"] = max(1, int(round(DEFAULTS_AT_REFERENCE["close_radius"] * k)))
    if cfg.min_area == "auto":
        chosen["min_area"] = max(4, int(round(DEFAULTS_AT_REFERENCE["min_area"] * k * k)))
    if cfg.detection_scale == "auto":
        chosen["detection_scale"] = 1.0 / working_factor(dataclasses.replace(cfg, **chosen), np.shape(frame))
    return dataclasses.replace(cfg, **chosen) if chosen else cfg


# Objects at least this many pixels in area at the detection scale (4 x 4): coarser, their
# shape and edge are no longer measured.
_LEAST_WORKING_AREA = 16


def working_factor(cfg: MonitorConfig, shape: Sequence[int]) -> int:
    """f: objects are found on the frame with every f x f pixels averaged (detection_scale 1 / f).
    Given: 1 / detection_scale rounded. auto: the whole number of reference frames that fit
    the frame's shorter side, limited so that the smallest area keeps `_LEAST_WORKING_AREA`
    pixels and a closing or opening radius at least one; 1 when min_sharpness is given (a
    cut measured at every pixel) or a size setting is still auto."""
    if cfg.detection_scale != "auto":
        return max(1, int(round(1.0 / cfg.detection_scale)))
    sizes = (cfg.close_radius, cfg.open_radius, cfg.min_area)
    if cfg.min_sharpness != "auto" or "auto" in sizes:
        return 1
    f = int(frame_scale(shape))
    for radius in (cfg.close_radius, cfg.open_radius):
        f = min(f, radius) if radius else f
    return max(1, min(f, int(math.sqrt(cfg.min_area / _LEAST_WORKING_AREA))))


def at_scale(cfg: MonitorConfig, f: int) -> MonitorConfig:
    """The settings (resolved, in the frame's pixels) for the frame reduced f times."""
    import dataclasses

    if f == 1:
        return cfg

    def radius(r):
        return max(1, int(round(r / f))) if r else 0

    return dataclasses.replace(cfg, background_size=max(3, int(round(cfg.background_size / f)) | 1),
                               close_radius=radius(cfg.close_radius), open_radius=radius(cfg.open_radius),
                               min_area=max(1, int(round(cfg.min_area / f ** 2))),
                               max_area=int(round(cfg.max_area / f ** 2)) if cfg.max_area else 0)


def reduced(g: np.ndarray, f: int) -> np.ndarray:
    """Grey levels with every f x f block averaged (the last row and column of blocks filled
    by repeating the frame's edge)."""
    if f == 1:
        return g
    h, w = g.shape
    g = np.pad(g, ((0, -h % f), (0, -w % f)), mode="edge")
    return g.reshape(g.shape[0] // f, f, g.shape[1] // f, f).mean(axis=(1, 3), dtype=np.float32)


# The edge width (px) that the sharpness measure itself gives a perfect step: the Gaussian
# gradient (sigma 0.8 px, `_gradient`) read on the outline, half a pixel inside the step,
# measures sqrt(2 pi) 0.8 exp((0.5 / 0.8)^2 / 2) = 2.44 px (a perfect step measures 0.41-0.43).
_OWN_EDGE = 0.8 * math.sqrt(2 * math.pi) * math.exp((0.5 / 0.8) ** 2 / 2)
# Defocus narrower than this (px) is not told apart from the pixel grid at any scale.
_LEAST_BLUR = 2.0


def scaled_sharpness(value: float, scale: float) -> float:
    """A sharpness cut chosen at the reference frame, for a frame with `scale` times its
    pixels across. Sharpness is about one over the measured edge width, and the measured
    width is the edge's own width (which scales with the frame; at least `_LEAST_BLUR`) and
    the measure's own (`_OWN_EDGE`, which does not) added in quadrature."""
    own = math.sqrt(max(1.0 / value ** 2 - _OWN_EDGE ** 2, 0.0)) * scale
    return 1.0 / math.sqrt(max(own, _LEAST_BLUR) ** 2 + _OWN_EDGE ** 2)


def focus_cut(sharpness: Sequence[float], scale: float) -> float:
    """The sharpness below which an object is out of focus, from one frame's objects.

    In-focus and blurred objects form two groups of log-sharpness when both are present. A
    mixture of two normal distributions is fitted to the log values (scikit-learn) and taken
    when it explains them clearly better than one (BIC lower by 10 or more) and its two
    modes are well apart (Ashman's D of at least 2, where a dip opens between them; a
    single group split in two scores lower), at least 5% of the objects in each and a dip
    between them: the cut is then Otsu's threshold of the log values. Otherwise (one group, or under 8 objects) the
    reference cut scaled to the frame (`scaled_sharpness`)."""
    prior = scaled_sharpness(DEFAULTS_AT_REFERENCE["min_sharpness"], scale)
    v = np.log(np.asarray([s for s in sharpness if s > 0], np.float64)).reshape(-1, 1)
    if len(v) < 8 or float(np.ptp(v)) < 1e-6:
        return prior
    from sklearn.mixture import GaussianMixture

    one = GaussianMixture(1, random_state=0).fit(v)
    two = GaussianMixture(2, random_state=0, n_init=2).fit(v)
    if two.bic(v) > one.bic(v) - 10 or float(two.weights_.min()) < 0.05:
        return prior
    (m1, m2), (s1, s2) = two.means_.ravel(), np.sqrt(two.covariances_.ravel())
    if math.sqrt(2) * abs(m2 - m1) / math.sqrt(s1 * s1 + s2 * s2) < 2:
        return prior
    grid = np.linspace(min(m1, m2), max(m1, m2), 200).reshape(-1, 1)
    density = two.score_samples(grid)
    dip = int(np.argmin(density))
    if dip in (0, len(grid) - 1):  # no dip between the modes: one skewed group
        return prior
    from skimage.filters import threshold_otsu

    return float(math.exp(threshold_otsu(v.ravel(), nbins=64)))


def corrected(frame: np.ndarray, cfg: MonitorConfig) -> np.ndarray:
    """The frame's grey levels, particles bright, with the slowly varying background taken
    away (steps 1-2 of the module docstring), at the frame's own scale."""
    return _corrected(grey(frame), resolve(frame, cfg))


def _corrected(g, cfg):
    """`corrected` of grey levels, with `cfg` resolved for them."""
    from PIL import Image
    from scipy import ndimage

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


def thresholded(frame: np.ndarray, cfg: MonitorConfig) -> tuple[MonitorConfig, np.ndarray, np.ndarray]:
    """(the settings resolved for this frame, in its own pixels, the corrected frame and the
    thresholded mask at the detection scale): steps 1-3 of the module docstring, with an
    `auto` background window widened while an object found reaches half of it (else the
    object's interior is taken for background and it is found as fragments), to three times
    its longer side, at most the frame's."""
    import dataclasses

    from scipy import ndimage
    from skimage import measure

    auto_window = cfg.background_size == "auto"
    cfg = resolve(frame, cfg)
    f = working_factor(cfg, np.shape(frame))
    g = reduced(grey(frame), f)
    image = _corrected(g, at_scale(cfg, f))
    mask = image > threshold_of(image, cfg)
    if not auto_window or cfg.background == "none":
        return cfg, image, mask
    limit = min(4095, max(np.shape(frame)[:2]) | 1)
    for _ in range(3):
        side = f * max((max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start)
                        for sl in ndimage.find_objects(measure.label(mask, connectivity=2)) if sl), default=0)
        if side <= cfg.background_size / 2 or cfg.background_size >= limit:
            break
        cfg = dataclasses.replace(cfg, background_size=min(limit, max(3 * side, 2 * cfg.background_size) | 1))
        image = _corrected(g, at_scale(cfg, f))
        mask = image > threshold_of(image, cfg)
    return cfg, image, mask


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with its holes filled: the background regions (4-connected) that do not reach
    the frame's border. The same as scipy's binary_fill_holes, by one labelling instead of an
    iterated dilation."""
    from scipy import ndimage

    background, n = ndimage.label(~mask)
    hole = np.ones(n + 1, bool)  # a lookup table by label: 0.03 s where np.isin took 0.4 s
    hole[0] = False
    hole[np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])] = False
    return mask | hole[background]


def detect(frame: np.ndarray, cfg: MonitorConfig, keep_dropped: bool = False) -> list[Particle]:
    """The particles of one frame (module docstring), kept ones only unless `keep_dropped`.

    Args:
        frame: (h, w) or (h, w, c) pixels.
        cfg: the `monitor` section of the config.
        keep_dropped: also return the objects the filters dropped (with `dropped` set), for
            the detection figure.
    """
    cfg, image, mask = thresholded(frame, cfg)
    return objects(image, mask, cfg, keep_dropped, np.shape(frame))


def objects(image: np.ndarray, mask: np.ndarray, cfg: MonitorConfig, keep_dropped: bool = False,
            shape: Sequence[int] | None = None) -> list[Particle]:
    """Steps 4-7 of the module docstring on a frame `thresholded` gave: `cfg` is the settings
    it resolved (min_sharpness may still be "auto"), `shape` the frame's (h, w) when the
    detection scale is below 1: the particles are returned in the frame's own pixels."""
    shape = (shape or np.shape(mask))[:2]
    f = working_factor(cfg, shape)
    small = at_scale(cfg, f)
    found = _objects(image, _morphology(mask, small), small, keep_dropped)
    if f > 1:
        for p in found:
            _enlarge(p, f, shape)
    return found


def _morphology(mask, cfg):
    """Step 4: opening, closing, holes filled."""
    if cfg.open_radius:
        mask = _disk_pass(_disk_pass(mask, cfg.open_radius, "erosion"), cfg.open_radius, "dilation")
    if cfg.close_radius:
        # padded so that a closing does not treat the frame's border as a particle's
        r = cfg.close_radius
        mask = _disk_pass(_disk_pass(np.pad(mask, r), r, "dilation"), r, "erosion")[r:-r, r:-r]
    return fill_holes(mask)


def _disk_pass(mask, r, how):
    """A binary dilation or erosion by a disk of radius r, as scikit-image's sequence of
    small crosses whose sum is that disk: the same pixels, at a third of the cost."""
    from scipy import ndimage
    from skimage import morphology

    step = ndimage.binary_dilation if how == "dilation" else ndimage.binary_erosion
    for footprint, times in morphology.disk(r, decomposition="crosses"):
        for _ in range(times):
            mask = step(mask, footprint)
    return mask


def _objects(image, mask, cfg, keep_dropped):
    """Steps 5-7 at the detection scale."""
    from skimage import measure

    from ga.monitoring.touching import labelled

    labels = labelled(mask, cfg)
    grad = _gradient(image)
    h, w = mask.shape
    found = [_measure(region, image, grad, labels, (h, w), cfg) for region in measure.regionprops(labels)]
    cut = cfg.min_sharpness
    if cut == "auto":
        cut = focus_cut([p.geometry["sharpness"] for p in found if not p.dropped], frame_scale((h, w)))
    for p in found:
        if not p.dropped and p.geometry["sharpness"] < cut:
            p.dropped = "out of focus"
    return [p for p in found if keep_dropped or not p.dropped]


def _enlarge(p, f, shape):
    """A particle found at the detection scale 1 / f, in the frame's own pixels."""
    g = p.geometry
    h, w = shape
    x0, y0, x1, y1 = p.box
    p.box = (x0 * f, y0 * f, min(w, x1 * f), min(h, y1 * f))
    g.update(zip(("x0", "y0", "x1", "y1"), p.box))
    g["centroid_x"], g["centroid_y"] = (g["centroid_x"] + 0.5) * f - 0.5, (g["centroid_y"] + 0.5) * f - 0.5
    g["area_px"] = int(g["area_px"] * f * f)
    for key in ("eq_diameter_px", "feret_max_px", "feret_min_px", "perimeter_px"):
        if key in g:
            g[key] *= f
    if p.outline is not None:
        p.outline = (p.outline * f + (f - 1) / 2).astype(np.float32)


def _gradient(image):
    """Gradient magnitude per pixel (grey levels per pixel) of the slightly smoothed frame."""
    from scipy import ndimage

    return ndimage.gaussian_gradient_magnitude(image, 0.8)


def _outline(own):
    """The pixels of a mask with a 4-neighbour outside it (the mask's own border counts)."""
    p = np.pad(own, 1)
    inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return own & ~inner


def _open_edge(outline, own, win):
    """The outline's pixels that face the background, not a touching particle (a cut
    through one object has no edge to be sharp or soft)."""
    other = (win != 0) & ~own
    if not other.any():
        return outline
    from scipy import ndimage

    facing = outline & ~ndimage.binary_dilation(other)
    return facing if facing.any() else outline


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
    win = labels[wy0:wy1, wx0:wx1]
    own = win == region.label
    outline = _outline(own)
    # The contrast at the rim (the object's pixels within `rim` px of its outline), so that a
    # large object's bright interior does not make its sharp edge look soft.
    from scipy import ndimage

    rim = max(1, int(round(2 * frame_scale(shape))))
    band = own & ~ndimage.binary_erosion(own, iterations=rim) if min(own.shape) > 2 * rim + 2 else own
    contrast = float(image[wy0:wy1, wx0:wx1][band if band.any() else own].mean())
    sharp = float(grad[wy0:wy1, wx0:wx1][_open_edge(outline, own, win)].mean() / contrast) if contrast > 0 else 0.0
    fmax, fmin, hull_area = feret_diameters(outline)
    perimeter = float(region.perimeter_crofton) if area > 2 else float(4 * math.sqrt(area))
    perimeter = perimeter if perimeter > 0 else float(region.perimeter)
    geometry.update({
        "eq_diameter_px": float(math.sqrt(4 * area / math.pi)), "feret_max_px": fmax, "feret_min_px": fmin,
        "perimeter_px": perimeter, "aspect_ratio": fmin / fmax if fmax else 1.0,
        "circularity": float(min(1.0, 4 * math.pi * area / perimeter ** 2)) if perimeter else 1.0,
        "solidity": float(min(1.0, area / hull_area)) if hull_area else 1.0, "sharpness": sharp,
    })
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
