"""Synthetic crystal and graphene generators: layout, determinism, separability, label rule."""

import csv
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from conftest import digest_tree
from helpers import read_csv
from ga import synthetic as syn


def test_crystal_layout_names_and_sizes(tmp_path):
    root = syn.generate_crystals(str(tmp_path), per_class=7, seed=1, pg_copies=3)
    assert root == os.path.join(str(tmp_path), "cropped", "cropped")
    assert sorted(os.listdir(os.path.join(root, "cex"))) == sorted(f"CEX ({i}).png" for i in range(1, 8))
    assert sorted(os.listdir(os.path.join(root, "pg"))) == sorted(f"PG ({i}).png" for i in range(1, 8))
    for i in range(1, 8):
        cex = Image.open(os.path.join(root, "cex", f"CEX ({i}).png"))
        assert cex.mode == "RGB" and cex.size == (151, 151)
        pg = Image.open(os.path.join(root, "pg", f"PG ({i}).png"))
        assert pg.mode == "RGB" and all(130 <= s <= 230 for s in pg.size)
        a = np.asarray(pg)
        assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()  # grey stored as RGB


def test_pg_copies_are_rotations_or_flips_of_one_crop(tmp_path):
    root = syn.generate_crystals(str(tmp_path), per_class=6, seed=3, pg_copies=3)
    load = lambda n: np.asarray(Image.open(os.path.join(root, "pg", f"PG ({n}).png")).convert("L"))
    for first in (1, 4):
        base = load(first)
        variants = [syn.dihedral(base, k) for k in range(8)]
        for n in (first + 1, first + 2):
            img = load(n)
            assert any(v.shape == img.shape and (v == img).all() for v in variants)
            assert not (img.shape == base.shape and (img == base).all())  # a real transform, not a duplicate
    # Different groups are different crops.
    assert load(1).shape != load(4).shape or not (load(1) == load(4)).all()


def test_crystals_are_deterministic(tmp_path):
    a = digest_tree(syn.generate_crystals(str(tmp_path / "a"), per_class=4, seed=5, pg_copies=2))
    b = digest_tree(syn.generate_crystals(str(tmp_path / "b"), per_class=4, seed=5, pg_copies=2))
    c = digest_tree(syn.generate_crystals(str(tmp_path / "c"), per_class=4, seed=6, pg_copies=2))
    assert a == b
    assert all(a[k] != c[k] for k in a)


def test_classes_differ_measurably_but_not_trivially():
    """Bright-area fraction separates CEX from PG well, yet no threshold separates them all."""
    rngs = syn.rngs(11, 160)
    cex = [(syn.make_cex(r, hard=i % 10 == 0) > 200).mean() for i, r in enumerate(rngs[:80])]
    pg = [(syn.make_pg(r, hard=i % 10 == 0) > 200).mean() for i, r in enumerate(rngs[80:])]
    values = np.array(cex + pg)
    labels = np.array([0] * len(cex) + [1] * len(pg))
    best = max(((values > t) == labels).mean() for t in np.unique(values))
    assert 0.75 <= best < 1.0, best
    # And the real data's brightness ranges, roughly.
    assert 60 < np.mean([syn.make_cex(r).mean() for r in rngs[:20]]) < 125


def _measured_contrast(img, flake, others):
    h, w, _ = img.shape
    inside = Image.new("L", (w, h), 0)
    ImageDraw.Draw(inside).polygon(flake.points, fill=1)
    inner = np.asarray(inside.filter(ImageFilter.MinFilter(5)), bool)
    x0, y0, x1, y1 = flake.box()
    ring = np.zeros((h, w), bool)
    pad = 12
    ring[max(0, int(y0) - pad): int(y1) + pad, max(0, int(x0) - pad): int(x1) + pad] = True
    ring[max(0, int(y0) - 3): int(y1) + 3, max(0, int(x0) - 3): int(x1) + 3] = False
    for o in others:
        m = Image.new("L", (w, h), 0)
        ImageDraw.Draw(m).polygon(o.points, fill=1)
        ring &= ~np.asarray(m.filter(ImageFilter.MaxFilter(7)), bool)
    if inner.sum() < 20 or ring.sum() < 50:
        return None
    red = img[..., 0].astype(float)
    return 1 - np.median(red[inner]) / np.median(red[ring])


def test_graphene_labels_follow_the_contrast_rule():
    checked = 0
    for rng in syn.rngs(21, 120):
        img, flakes, labels = syn.make_flake_image(rng, 400)
        assert labels == tuple(int(any(syn.contrast_class(f.contrast) == k for f in flakes)) for k in (1, 2, 3))
        for f in flakes:
            others = [o for o in flakes if o is not f]
            c = _measured_contrast(img, f, others)
            if c is None:
                continue
            # Measured from the pixels, the flake falls in the class its label says.
            assert syn.contrast_class(c) == f.cls, (c, f.contrast, f.cls)
            checked += 1
    assert checked > 40


def test_graphene_class_frequencies_match_the_original():
    labels = np.array([syn.make_flake_image(r, 128)[2] for r in syn.rngs(31, 1000)])
    freq = labels.mean(axis=0)
    for got, want in zip(freq, (0.13, 0.14, 0.12)):
        assert abs(got - want) <= 0.04, freq
    assert abs(labels.any(axis=1).mean() - 0.26) <= 0.04


def test_graphene_files_and_labels_csv(tmp_path):
    out = syn.generate_graphene(str(tmp_path / "g"), count=6, size=64, seed=2)
    rows = list(csv.reader(open(os.path.join(out, "labels.csv"))))
    assert rows[0] == ["filename", "class1", "class2", "class3"]
    assert len(rows) == 7
    for name, *flags in rows[1:]:
        im = Image.open(os.path.join(out, name))
        assert im.size == (64, 64) and im.mode == "RGB"
        assert set(flags) <= {"0", "1"}
    again = syn.generate_graphene(str(tmp_path / "h"), count=6, size=64, seed=2)
    assert digest_tree(out) == digest_tree(again)


def test_wafer_frame_and_boxes(tmp_path):
    img_path, boxes = syn.generate_wafer(str(tmp_path / "w.png"), width=900, height=700, seed=1, n_flakes=5)
    im = Image.open(img_path)
    assert im.size == (900, 700)
    rows = read_csv(boxes)
    assert len(rows) == 5 and {r["class"] for r in rows} <= {"1", "2", "3"}
    for r in rows:
        assert 0 <= int(r["x0"]) < int(r["x1"]) <= 900 and 0 <= int(r["y0"]) < int(r["y1"]) <= 700
        assert syn.contrast_class(float(r["contrast"])) == int(r["class"])


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    from ga.cli import synth_main

    assert synth_main(["crystals", "--out", str(tmp_path), "--per-class", "0"]) == 2
    assert "per_class" in capsys.readouterr().err
