"""Scan a whole synthetic frame with a trained multi-label model and score the marks.

    python bench/scan_eval.py --model deliverables/<graphene run> [--tile 300] [--seed 0]

Makes the 4908x3264 synthetic wafer frame (python -m ga.synthetic wafer) if missing, scans
it as `inference.py frame --scan` does, and prints: the time, the share of labelled flakes
whose centre lies in a marked tile, and the share of marked tiles that hold no labelled
flake (false marks), also as a share of all tiles.
"""

import argparse
import csv
import os
import time

from common import machine


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--tile", type=int, default=300)
    p.add_argument("--overlap", type=int, default=None, help="least tile overlap in pixels (default: tile // 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="/tmp/ga_scan_eval")
    p.add_argument("--engine", default=None)
    p.add_argument("--figure", help="also write a reduced view of the frame: marked tiles red, labelled flakes green")
    p.add_argument("--threshold", type=float, help="one threshold for every class (default: the model's)")
    args = p.parse_args()

    from ga.loading import load_model
    from ga.scan import scan_frame
    from ga.synthetic import generate_wafer

    frame = os.path.join(args.workdir, f"wafer_{args.seed}.png")
    boxes_csv = os.path.splitext(frame)[0] + "_boxes.csv"
    if not os.path.isfile(boxes_csv):
        generate_wafer(frame, seed=args.seed)
    model = load_model(args.model, args.engine)
    t = time.perf_counter()
    r = scan_frame(model, frame, args.tile, os.path.join(args.workdir, "scan"), threshold=args.threshold,
                   overlap=args.overlap)
    seconds = time.perf_counter() - t
    flakes = [tuple(int(row[k]) for k in ("x0", "y0", "x1", "y1")) for row in csv.DictReader(open(boxes_csv))]
    tiles = [(int(row["x0"]), int(row["y0"]), int(row["x1"]), int(row["y1"]), row["fired"] == "1")
             for row in csv.DictReader(open(r["csv"]))]
    fired = [t_ for t_ in tiles if t_[4]]

    def inside(box, tile):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        return tile[0] <= cx < tile[2] and tile[1] <= cy < tile[3]

    def overlaps(box, tile):
        return box[0] < tile[2] and tile[0] < box[2] and box[1] < tile[3] and tile[1] < box[3]

    covered = sum(any(inside(b, t_) for t_ in fired) for b in flakes)
    false = sum(not any(overlaps(b, t_) for b in flakes) for t_ in fired)
    print(f"machine: {machine()}; model {args.model} ({model.engine}); frame {frame}")
    print(f"scan: {seconds:.1f} s for {len(tiles)} tiles of {args.tile} px (overlap >= {r['overlap']} px); "
          f"marked {len(fired)}")
    print(f"labelled flakes covered by a marked tile: {covered}/{len(flakes)} = {100 * covered / max(1, len(flakes)):.0f}%")
    print(f"false marks: {false}/{len(fired)} marked tiles = {100 * false / max(1, len(fired)):.0f}% "
          f"({100 * false / len(tiles):.1f}% of all tiles)")
    if args.figure:
        figure(frame, fired, flakes, args.figure)
        print(f"figure: {args.figure}")


def figure(frame, fired, flakes, out, width=800):
    """The frame reduced to `width` px: marked tiles in red, labelled flakes ringed in green."""
    from PIL import Image, ImageDraw

    with Image.open(frame) as im:
        scale = width / im.width
        view = im.convert("RGB").resize((width, round(im.height * scale)), Image.LANCZOS)
    # a few flat colours keep the file small; the marks are drawn afterwards in exact colours
    view = view.quantize(6, dither=Image.Dither.NONE).convert("RGB")
    draw = ImageDraw.Draw(view)
    for x0, y0, x1, y1, _ in fired:
        draw.rectangle([x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1], outline=(255, 0, 0), width=2)
    for x0, y0, x1, y1 in flakes:
        cx, cy, r = (x0 + x1) / 2 * scale, (y0 + y1) / 2 * scale, 9
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=(0, 160, 0), width=2)
    view.quantize(16, dither=Image.Dither.NONE).save(out, optimize=True)


if __name__ == "__main__":
    main()
