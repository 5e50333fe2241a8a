"""Data-efficiency curve: harmonic-mean F1 against the number of labelled training images for
CNN-4 trained from scratch, linear evaluation and fine-tuning of a SimCLR-pretrained CNN-4
(the graphene study's figure 3, right), on synthetic graphene data sized for a small CPU.

    python scripts/data_efficiency.py [--workdir /tmp/ga_data_efficiency] [--fractions 0.02 0.1 1] [--repeats 3]

Makes (once, in the workdir) labelled flake crops split 60/20/20 and a separate set of
unlabelled crops, pretrains with configs/graphene_simclr.yaml (`--objective ntxent`, the
default and the documented figure: SimCLR's NT-Xent at temperature 0.5 with a 256-128 MLP
head on views of the model input size; `--objective study`: the config as shipped, the
graphene study's one-way loss at 0.1 with a linear 256 head on 100 px views and a validation
loss), then trains each method at
each `data.fraction` of the training split, every run with the same number of optimiser
steps. Prints a Markdown table and writes results.json and the table in the workdir and
the figure (default docs/data_efficiency.png; docs/data_efficiency.md reports a run). Every
run is an ordinary run folder under <workdir>/runs.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = {
    "scratch": "CNN-4 from scratch",
    "linear_eval": "SimCLR + linear evaluation",
    "fine_tune": "SimCLR + fine-tuning",
}


# The pretraining --set of each objective on top of configs/graphene_simclr.yaml (the study's).
OBJECTIVES = {
    "ntxent": ["contrastive.loss=ntxent", "contrastive.temperature=0.5", "contrastive.head=mlp",
               "contrastive.projection=[256,128]", "contrastive.view_size=null", "contrastive.val_fraction=0",
               "contrastive.rotation_prob=1", "training.early_stopping.monitor=loss", "training.betas=[0.9,0.999]",
               "training.no_decay=[]"],
    "study": [],
}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="/tmp/ga_data_efficiency")
    p.add_argument("--labelled", type=int, default=1200, help="labelled crops to generate (split 60/20/20)")
    p.add_argument("--unlabelled", type=int, default=1536, help="unlabelled crops for pretraining")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.02, 0.1, 1.0])
    p.add_argument("--size", type=int, default=128, help="images are read at this size ...")
    p.add_argument("--crop", type=int, default=96, help="... and cropped to this (the model input)")
    p.add_argument("--pretrain-epochs", type=int, default=20)
    p.add_argument("--epochs", type=int, default=40, help="epochs of every labelled run (fine-tune: both stages)")
    p.add_argument("--steps", type=int, default=20, help="optimiser steps per epoch, the same for every run")
    p.add_argument("--lr", type=float, default=2e-3, help="learning rate: scratch and linear stages")
    p.add_argument("--fine-tune-lr", type=float, default=1e-4, help="learning rate of the all-layers stage")
    p.add_argument("--seed", type=int, default=42, help="training.seed of the labelled runs (also picks the fraction)")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs of each method and fraction, with seeds seed, seed + 1, ... (each also draws its own "
                        "subset of the training split); the figure's bars are then the t interval of the mean over "
                        "the repeats, else each run's bootstrap interval on the test split")
    p.add_argument("--backbone", help="skip pretraining: use these backbone weights (.weights.h5)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--objective", choices=list(OBJECTIVES), default="ntxent",
                   help="pretraining objective: ntxent (SimCLR's; the documented figure) or study (clr.py's); "
                        "default: %(default)s")
    p.add_argument("--pretrain-set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra --set for the pretraining run (e.g. contrastive.color_prob=0); repeatable")
    p.add_argument("--figure", default=os.path.join(ROOT, "docs", "data_efficiency.png"))
    p.add_argument("--also", metavar="RESULTS_JSON", action="append", default=[],
                   help="draw another run's results.json too (dashed; labelled by its --pretrain-set)")
    p.add_argument("--plot-only", action="store_true", help="redraw from <workdir>/results.json and exit")
    p.add_argument("--table", help="Markdown table file; default: <workdir>/table.md")
    args = p.parse_args()

    sys.path.insert(0, ROOT)
    from ga.splitting import split_dataset
    from ga.synthetic import generate_graphene

    work = args.workdir
    if args.plot_only:
        with open(os.path.join(work, "results.json"), encoding="utf-8") as fh:
            _figure(json.load(fh), args.figure, args.also)
        print(f"figure: {args.figure}")
        return
    labelled, split, unlabelled = (os.path.join(work, d) for d in ("labelled", "split", "unlabelled"))
    runs = os.path.join(work, "runs")
    if not os.path.isfile(os.path.join(labelled, "labels.csv")):
        generate_graphene(labelled, args.labelled, seed=0, progress=True)
    if not os.path.isfile(os.path.join(split, "split.json")):
        split_dataset(labelled, split, ratios=(0.6, 0.2, 0.2), progress=False)
    pretrain = args.backbone is None and set(args.methods) != {"scratch"}
    if pretrain and not os.path.isfile(os.path.join(unlabelled, "labels.csv")):  # only pretraining reads them
        generate_graphene(unlabelled, args.unlabelled, seed=1, progress=True)

    size = f"[{args.size},{args.size}]"
    crop = f"[{args.crop},{args.crop}]"
    common = [f"output.root={runs}", "output.onnx=false", f"data.image_size={size}", f"data.augment.crop={crop}",
              "model.backbone=cnn4", "model.head.pooling=max"]
    results = {"settings": vars(args), "runs": []}
    backbone = args.backbone
    if pretrain:
        run, secs = _main("configs/graphene_simclr.yaml", common + [
            f"data.train_dir={unlabelled}", "data.batch_size=64", "data.augment.enabled=false",
            *OBJECTIVES[args.objective], f"training.epochs={args.pretrain_epochs}", *args.pretrain_set])
        backbone = os.path.join(run, "GSbackbone.weights.h5")
        m = _json(run, "metrics.json")
        results["pretraining"] = {"run": run, "seconds": secs, "images": m["images"], "objective": args.objective,
                                  "loss": m["loss"], "first_loss": m["first_loss"], "final_loss": m["final_loss"],
                                  "final_val_loss": m.get("final_val_loss")}
        print(f"pretrained in {secs:.0f} s: {m['loss']} {m['first_loss']:.3f} -> {m['final_loss']:.3f}", flush=True)
    labelled_common = common + [f"data.split_root={split}", "data.batch_size=16",
                                f"training.steps_per_epoch={args.steps}", f"training.learning_rate={args.lr}"]
    half = args.epochs // 2
    runs_to_do = [(f, r, m) for f in args.fractions for r in range(args.repeats) for m in args.methods]
    for fraction, repeat, method in runs_to_do:
        seed = args.seed + repeat
        sets = labelled_common + [f"data.fraction={fraction}", f"training.seed={seed}"]
        if method == "scratch":
            config = "configs/graphene_cnn4.yaml"
            sets += [f"training.epochs={args.epochs}"]
        else:
            config = "configs/graphene_finetune.yaml"
            sets += [f"model.backbone_weights={backbone}", f"training.schedule={method}",
                     f"training.epochs={args.epochs if method == 'linear_eval' else half}",
                     f"training.fine_tune.epochs={args.epochs - half}",
                     f"training.fine_tune.learning_rate={args.fine_tune_lr}"]
        run, secs = _main(config, sets)
        m, r = _json(run, "metrics.json"), _json(run, "run.json")
        row = {"method": method, "fraction": fraction, "repeat": repeat, "seed": seed,
               "train_images": r["data"]["images"]["train"], "harmonic_mean_f1": m["harmonic_mean_f1"],
               "harmonic_mean_f1_ci": m.get("harmonic_mean_f1_ci"),
               "f1": {c: m["per_class"][c]["f1"] for c in m["classes"]}, "seconds": secs, "run": run}
        results["runs"].append(row)
        print(f"{METHODS[method]:<28} {row['train_images']:>5} images  harmonic-mean F1 "
              f"{row['harmonic_mean_f1']:.3f}  ({secs:.0f} s)", flush=True)
        with open(os.path.join(work, "results.json"), "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)
    table = _table(results)
    print(table)
    args.table = args.table or os.path.join(work, "table.md")
    with open(args.table, "w", encoding="utf-8") as fh:
        fh.write(table)
    _figure(results, args.figure, args.also)
    print(f"figure: {args.figure}; table: {args.table}; results: {os.path.join(work, 'results.json')}")


def _main(config, sets):
    """Run main.py; return (run folder, wall seconds). Stops the script on a failed run."""
    cmd = [sys.executable, os.path.join(ROOT, "main.py"), "--config", os.path.join(ROOT, config), "-q"]
    for s in sets:
        cmd += ["--set", s]
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    secs = time.perf_counter() - t
    if out.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return out.stdout.strip().splitlines()[-1], secs


def _json(run, name):
    with open(os.path.join(run, name), encoding="utf-8") as fh:
        return json.load(fh)


def aggregate(rows, level=0.95):
    """{(method, training images): (mean harmonic-mean F1, [low, high], runs)}: over several
    repeats the t interval of their mean; one run, its own bootstrap interval on the test
    split (None in results written before intervals existed)."""
    import numpy as np
    from scipy import stats

    groups = {}
    for r in rows:
        groups.setdefault((r["method"], r["train_images"]), []).append(r)
    out = {}
    for key, runs in groups.items():
        v = np.array([r["harmonic_mean_f1"] for r in runs], float)
        if len(v) > 1:
            half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
            ci = [float(max(0.0, v.mean() - half)), float(min(1.0, v.mean() + half))]  # F1 lies in [0, 1]
        else:
            ci = runs[0].get("harmonic_mean_f1_ci")
        out[key] = (float(v.mean()), ci, len(v))
    return out


def _table(results):
    rows = results["runs"]
    agg = aggregate(rows)
    sizes = sorted({r["train_images"] for r in rows})
    lines = ["| training images | " + " | ".join(METHODS.values()) + " |",
             "|---|" + "---|" * len(METHODS)]
    for n in sizes:
        cells = []
        for method in METHODS:
            hit = agg.get((method, n))
            cells.append("" if hit is None else f"{hit[0]:.3f}" + (f" ({hit[1][0]:.3f}–{hit[1][1]:.3f})" if hit[1] else "")
                         + (f", {hit[2]} runs" if hit[2] > 1 else ""))
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    note = ("Brackets: 95% t interval of the mean over the repeats." if any(h[2] > 1 for h in agg.values()) else
            "Brackets: each run's 95% bootstrap interval on the test split.")
    return "\n".join(lines) + "\n\n" + note + "\n"


def _figure(results, out, also=()):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    sets = [(results, "", "-")]
    for path in also:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        named = doc["settings"].get("pretrain_set") or [f"{doc['settings'].get('objective', 'ntxent')} objective"]
        sets.append((doc, " (" + ", ".join(named) + ")", "--"))
    fig, ax = plt.subplots(figsize=(7, 5.2))
    sizes = set()
    for doc, suffix, line in sets:
        for (method, label), marker, colour in zip(METHODS.items(), "os^", ("C0", "C1", "C2")):
            agg = aggregate(doc["runs"])
            pts = sorted((n, *v) for (m, n), v in agg.items() if m == method)
            if pts:
                x, y = [p[0] for p in pts], [p[1] for p in pts]
                err = [[p[1] - p[2][0] if p[2] else 0 for p in pts], [p[2][1] - p[1] if p[2] else 0 for p in pts]]
                ax.errorbar(x, y, yerr=err, fmt=line + marker, color=colour, capsize=3, label=label + suffix)
                sizes.update(x)
    ax.set_xscale("log")
    ax.set_xticks(sorted(sizes))
    ax.set_xticklabels([str(n) for n in sorted(sizes)])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("labelled training images")
    ax.set_ylabel("test harmonic-mean F1 (classes 1-3, any)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    ax.set_title("Data efficiency on synthetic graphene crops\nbars: 95% t interval of the mean over the repeats "
                 "(one run: its bootstrap interval on the test split)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
