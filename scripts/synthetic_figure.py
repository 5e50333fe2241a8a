"""Draw docs/synthetic_samples.png: examples of each synthetic class, crystals and graphene.

    python scripts/synthetic_figure.py [--out docs/synthetic_samples.png] [--seed 0]
"""

import argparse
import os
import sys


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ga import synthetic as syn  # noqa: E402
from ga.figures import pyplot  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/synthetic_samples.png")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    plt = pyplot()
    rngs = syn.rngs(args.seed, 64)
    cex = [syn.make_cex(r, hard=i == 5) for i, r in enumerate(rngs[:6])]
    pg = [syn.make_pg(r, hard=i == 5) for i, r in enumerate(rngs[6:12])]
    flakes = {1: [], 2: [], 3: [], 0: []}
    for r in rngs[12:]:
        img, fl, labels = syn.make_flake_image(r, 400)
        key = next((k for k in (1, 2, 3) if labels[k - 1]), 0)
        if len(flakes[key]) < 3:
            flakes[key].append((img, fl))
    fig, axes = plt.subplots(4, 6, figsize=(13, 9))
    for i in range(6):
        axes[0, i].imshow(cex[i], cmap="gray", vmin=0, vmax=255)
        axes[0, i].set_title("CEX" + (" (hard: clump)" if i == 5 else ""), fontsize=8)
        axes[1, i].imshow(pg[i], cmap="gray", vmin=0, vmax=255)
        axes[1, i].set_title("PG" + (" (hard: faint)" if i == 5 else ""), fontsize=8)
    slots = [(2, 0), (2, 1), (2, 2), (2, 3), (2, 4), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4), (3, 5)]
    items = [(k, im, fl) for k in (1, 2, 3, 0) for im, fl in flakes[k]]
    for (r, c), (k, im, fl) in zip(slots, items):
        ax = axes[r, c]
        ax.imshow(im)
        for f in fl:
            xs, ys = zip(*(f.points + f.points[:1]))
            ax.plot(xs, ys, lw=0.6, color="yellow" if f.cls else "white")
        names = sorted({f"class{f.cls} C={100 * f.contrast:.0f}%" for f in fl if f.cls}) or ["no class"]
        ax.set_title(", ".join(names), fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle("Synthetic data: CEX crops (row 1), PG crops (row 2), graphene flakes outlined (rows 3-4; "
                 "white = unlabelled thick flake)", fontsize=10)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=80, bbox_inches="tight")
    print(args.out)


if __name__ == "__main__":
    main()
