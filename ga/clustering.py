"""k-means on backbone features (`ga infer --cluster`): clusters.csv and clusters.png."""

from __future__ import annotations

import os

import numpy as np

from ga.errors import GAError
from ga.files import atomic_write_csv
from ga.predict import Prediction, decide


def cluster(pred: Prediction, k: int, out_dir: str, space: str = "full") -> tuple[str, str]:
    """k-means on the images' backbone features: clusters.png and clusters.csv.

    space "full": k-means on the features themselves, PCA to 2-D for the figure only;
    "pca2": PCA to 2-D first, then k-means on the 2-D points (the study's GAkmeans.py).
    k-means as the study ran it: random_state 42, n_init 10, max_iter 10000.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    ok = [r for r in pred.results if not r.error]
    if len(ok) < max(k, 2):
        raise GAError(f"{k}: needs at least {max(k, 2)} readable images, got {len(ok)}", arg="cluster")
    x = np.stack([r.features for r in ok])
    pca = PCA(n_components=2)
    xy = pca.fit_transform(x)
    km = KMeans(n_clusters=k, random_state=42, n_init=10, max_iter=10000).fit(xy if space == "pca2" else x)
    centres = km.cluster_centers_ if space == "pca2" else pca.transform(km.cluster_centers_)
    os.makedirs(out_dir, exist_ok=True)
    png, table = os.path.join(out_dir, "clusters.png"), os.path.join(out_dir, "clusters.csv")
    _plot_clusters(xy, km.labels_, centres, pca.explained_variance_ratio_,
                   [os.path.basename(r.path) for r in ok], k, png)
    atomic_write_csv(table, ["path", "cluster", "pc1", "pc2", "predicted"],
                     ([r.path, int(c), f"{px:.6f}", f"{py:.6f}", ";".join(decide(pred.labels, pred.thresholds, r.probs)[0])]
                      for r, c, (px, py) in zip(ok, km.labels_, xy)))
    return png, table


def _plot_clusters(xy, labels, centres, explained, names, k, out):
    from ga.figures import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(7, 6))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=18)
    ax.scatter(centres[:, 0], centres[:, 1], marker="X", s=160, c="black", label="centroids")
    if len(names) < 60:
        for (px, py), name in zip(xy, names):
            ax.annotate(name, (px, py), fontsize=6, alpha=0.8)
    ax.set(xlabel=f"PC1 ({100 * explained[0]:.1f}% of variance)", ylabel=f"PC2 ({100 * explained[1]:.1f}% of variance)",
           title=f"k-means on backbone features, k={k}")
    ax.legend(*sc.legend_elements(), title="cluster", loc="best", fontsize=7)
    save_figure(fig, out)
