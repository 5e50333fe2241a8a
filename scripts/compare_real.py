"""Put real crops and synthetic crops side by side, with the statistics used to calibrate
the generator: mean grey level, share of pixels above 200, edge density, orientation
coherence, and the size of the largest bright blob.

    python scripts/compare_real.py --real ../shared/real-samples --out /tmp/real_vs_synthetic.png

Real file names starting with CEX/PG give the class. Nothing from --real is copied.
"""

import argparse
import glob
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ga import synthetic as syn  # noqa: E402
from ga.figures import pyplot  # noqa: E402


def stats(gray):
    g = gray.astype(np.float32)
    gy, gx = np.gradient(g)
    mag = np.hypot(gx, gy)
    edges = float((mag > 20).mean())
    # Orientation coherence of the structure tensor: 1 = all edges share one direction.
    jxx, jyy, jxy = (gx * gx).mean(), (gy * gy).mean(), (gx * gy).mean()
    coherence = float(np.sqrt((jxx - jyy) ** 2 + 4 * jxy ** 2) / (jxx + jyy + 1e-9))
    from scipy import ndimage

    lab, n = ndimage.label(g > 200)
    blob = float(np.bincount(lab.ravel())[1:].max() / g.size) if n else 0.0
    return {"mean": float(g.mean()), "above200": float((g > 200).mean()), "edges": edges,
            "coherence": coherence, "largest_bright_blob": blob}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--real", default="../shared/real-samples")
    p.add_argument("--out", default="real_vs_synthetic.png", help="figure path (it shows the real crops: keep it out of the repository)")
    p.add_argument("--n", type=int, default=100, help="synthetic crops per class for the statistics")
    args = p.parse_args()
    real = {"cex": [], "pg": []}
    for f in sorted(glob.glob(os.path.join(args.real, "*.png"))):
        name = os.path.basename(f).lower()
        for c in real:
            if name.startswith(c):
                real[c].append(np.asarray(Image.open(f).convert("L")))
    rngs = syn.rngs(123, 2 * args.n)
    synth = {"cex": [syn.make_cex(r, hard=i % 10 == 0) for i, r in enumerate(rngs[: args.n])],
             "pg": [syn.make_pg(r, hard=i % 10 == 0) for i, r in enumerate(rngs[args.n:])]}
    keys = ["mean", "above200", "edges", "coherence", "largest_bright_blob"]
    print(f"{'set':<14}{'n':>4}" + "".join(f"{k:>21}" for k in keys))
    for c in ("cex", "pg"):
        for label, imgs in (("real " + c, real[c]), ("synthetic " + c, synth[c])):
            if not imgs:
                continue
            s = [stats(i) for i in imgs]
            cells = "".join(f"{np.mean([x[k] for x in s]):>12.3f} ±{np.std([x[k] for x in s]):<7.3f}" for k in keys)
            print(f"{label:<14}{len(imgs):>4}{cells}")
    plt = pyplot()
    cols = 4
    fig, axes = plt.subplots(4, cols, figsize=(10, 10))
    rows = [("real CEX", real["cex"]), ("synthetic CEX", synth["cex"]), ("real PG", real["pg"]), ("synthetic PG", synth["pg"])]
    for r, (label, imgs) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(imgs):
                ax.imshow(imgs[c], cmap="gray", vmin=0, vmax=255)
                s = stats(imgs[c])
                ax.set_title(f"{label}\nmean {s['mean']:.0f}, >200 {100 * s['above200']:.0f}%", fontsize=8)
    fig.savefig(args.out, dpi=70, bbox_inches="tight")
    print(args.out)


if __name__ == "__main__":
    main()
