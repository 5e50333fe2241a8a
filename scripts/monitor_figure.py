"""Draw docs/monitor_pg_fraction.png: what `ga monitor` measures on a simulated
crystallization against the truth the simulation knows.

    python scripts/monitor_figure.py --model deliverables/<run> [--frames 60] [--seed 11]

Writes the frames (`ga synth process`) and the monitor folder under --workdir, then draws
the per-frame PG fraction with its Wilson interval over the true fraction, and prints the
detection recall and precision (IoU >= 0.5), the class accuracy of matched particles and
the fraction's mean absolute error.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ga  # noqa: E402
from ga.config import load_config  # noqa: E402
from ga.figures import pyplot, save_figure  # noqa: E402
from ga.monitoring.loop import monitor  # noqa: E402
from ga.monitoring.outputs import score_against_truth  # noqa: E402
from ga.loading import load_model  # noqa: E402
from ga.synthetic import generate_process  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a run folder (a binary cex/pg model)")
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--workdir", default="/tmp/ga_monitor_figure")
    p.add_argument("--out", default="docs/monitor_pg_fraction.png")
    args = p.parse_args()
    ga.register()
    frames = generate_process(os.path.join(args.workdir, f"frames_seed{args.seed}"), args.frames, args.seed)
    out_dir = os.path.join(args.workdir, f"monitor_seed{args.seed}")
    cfg = load_config(None).monitor
    monitor(load_model(args.model), [frames], out_dir, cfg)
    score = score_against_truth(frames, out_dir)
    rows = {r["frame"]: r for r in _rows(os.path.join(out_dir, "frames.csv"))}
    names = [name for _, _, name in score["pairs"]]
    t = [float(rows[n]["elapsed_s"]) for n in names]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.fill_between(t, [float(rows[n]["pg_fraction_lo"]) for n in names], [float(rows[n]["pg_fraction_hi"]) for n in names],
                    alpha=0.25, lw=0, label="95% Wilson interval")
    ax.plot(t, [b for _, b, _ in score["pairs"]], ".-", lw=1, label="measured (ga monitor)")
    ax.plot(t, [a for a, _, _ in score["pairs"]], "k--", lw=1.2, label="truth")
    ax.set(xlabel="time since the first frame (s)", ylabel="PG fraction of particles", ylim=(0, 1),
           title=f"{args.frames} synthetic frames (seed {args.seed}): detection recall {score['recall']:.3f}, "
                 f"precision {score['precision']:.3f}; PG fraction MAE {score['fraction_mae']:.3f}")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, args.out)
    score.pop("pairs")
    print(json.dumps(score, indent=1))
    print(args.out)


def _rows(path):
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


if __name__ == "__main__":
    main()
