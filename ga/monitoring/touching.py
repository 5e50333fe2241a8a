"""Particles in contact, told apart: one connected object cut into the particles it joins.

Two particles that touch are one connected object after thresholding. Their distance map
(each pixel's distance to the background) has a peak in each particle and a saddle where
they meet: the half-width of the neck. A watershed of the distance map from its regional
maxima cuts the object at every saddle, far too often: a needle bundle's crossing needles
and an aggregate's beads have saddles too. The cuts are then undone, the widest joint
first, wherever the neck is not clearly narrower than the thinner of the two parts it joins:

    saddle >= NECK x min(peak of part a, peak of part b)   ->   the parts are one particle.

A ratio of two widths, so the rule reads the same at any magnification. The parts that
remain separate must each be a particle in their own right (`min_area`): a smaller one is
joined to the neighbour it meets across its widest joint. One distance map, one watershed
and one pass over the joints serve the whole frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ga.config import MonitorConfig

# A joint narrower than this fraction of the thinner part's width separates two particles
# (split_touching auto; on: NECK_ON, for compact particles that meet along a wide contact).
NECK = 0.5
NECK_ON = 0.7


def labelled(mask: np.ndarray, cfg: MonitorConfig) -> np.ndarray:
    """The mask's 8-connected objects as labels 1..n in raster order, touching particles split
    (`cfg.split_touching` not "off"; `cfg.min_area` resolved, at the mask's scale)."""
    from scipy import ndimage
    from skimage import measure, morphology, segmentation

    labels = measure.label(mask, connectivity=2)
    if cfg.split_touching == "off" or not labels.any():
        return labels
    d = _distances(labels)
    top = morphology.local_maxima(d, connectivity=2) & mask
    markers, n = ndimage.label(top, structure=np.ones((3, 3)))
    if n <= labels.max():
        return labels  # one maximum per object: nothing to cut
    parts = segmentation.watershed(-d, markers, mask=mask, connectivity=2)
    peak = np.zeros(n + 1)
    peak[markers[top]] = d[top]  # flooded downhill from its maximum, a part's peak is there
    inside = np.flatnonzero(mask)
    area = np.bincount(parts.ravel()[inside], minlength=n + 1)
    neck = NECK if cfg.split_touching == "auto" else NECK_ON
    root = _merged(*_joints(parts, d), peak, area, int(cfg.min_area), neck)
    # numbered in the order their first pixel comes, as measure.label numbers objects
    merged = root[parts.ravel()[inside]]
    ids, first = np.unique(merged, return_index=True)
    order = np.zeros(int(ids.max()) + 1, np.int32)
    order[ids[np.argsort(first)]] = np.arange(1, len(ids) + 1)
    out = np.zeros(labels.size, np.int32)
    out[inside] = order[merged]
    return out.reshape(labels.shape)


def _distances(labels):
    """Each object's distance map (a pixel's distance to the background; the frame's edge is
    not background: a particle cut by it goes on beyond it), object by object: cheaper than
    over the frame's background."""
    from scipy import ndimage

    h, w = labels.shape
    d = np.zeros(labels.shape)
    for i, (ys, xs) in enumerate(ndimage.find_objects(labels), start=1):
        sl = slice(max(0, ys.start - 1), min(h, ys.stop + 1)), slice(max(0, xs.start - 1), min(w, xs.stop + 1))
        own = labels[sl] == i
        if own.all():  # the whole frame: measured from beyond its edge
            d[sl] = ndimage.distance_transform_edt(np.pad(own, 1))[1:-1, 1:-1]
            continue
        d[sl][own] = ndimage.distance_transform_edt(own)[own]
    return d


def _joints(parts, d):
    """Each pair of touching parts (a < b) and its widest joint: the largest, over their
    neighbouring pixel pairs, of the smaller distance of the two. Widest first."""
    pairs = []
    for da, db, a, b in ((d[:, :-1], d[:, 1:], parts[:, :-1], parts[:, 1:]),
                         (d[:-1], d[1:], parts[:-1], parts[1:]),
                         (d[:-1, :-1], d[1:, 1:], parts[:-1, :-1], parts[1:, 1:]),
                         (d[:-1, 1:], d[1:, :-1], parts[:-1, 1:], parts[1:, :-1])):
        m = (a != b) & (a > 0) & (b > 0)
        pairs.append((np.minimum(a[m], b[m]), np.maximum(a[m], b[m]), np.minimum(da[m], db[m])))
    lo, hi, width = (np.concatenate(x) for x in zip(*pairs))
    if not len(lo):
        return lo, hi, width
    code = lo.astype(np.int64) * (int(parts.max()) + 1) + hi
    order = np.lexsort((-width, code))  # by pair, widest first within each
    code, width = code[order], width[order]
    first = np.flatnonzero(np.r_[True, code[1:] != code[:-1]])
    code, width = code[first], width[first]
    widest = np.argsort(-width, kind="stable")
    n1 = int(parts.max()) + 1
    return code[widest] // n1, code[widest] % n1, width[widest]


def _merged(lo, hi, width, peak, area, min_area, neck):
    """Joins parts across each joint, widest first, where it is wide (at least `neck` of the
    thinner part's peak) or a part is under min_area. Returns each part's root part."""
    root = np.arange(len(peak))
    peak, area = peak.copy(), area.copy()

    def find(i):
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    for a, b, s in zip(lo.tolist(), hi.tolist(), width.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb and (s >= neck * min(peak[ra], peak[rb]) or min(area[ra], area[rb]) < min_area):
            root[rb] = ra
            peak[ra], area[ra] = max(peak[ra], peak[rb]), area[ra] + area[rb]
    return np.array([find(i) for i in range(len(root))])
