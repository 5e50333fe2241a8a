"""Time split_data.py's copy mode on a folder of small PNGs (default 14,000, the dataset's size).

    python bench/split_bench.py [--count 14000] [--workdir /tmp/ga_split_bench]

Prints the wall time of the split (scan, hash, group, copy) and images/s. The images are
151x151 grey crops like the real CEX class, with every fifth PG crop saved as five
rotated/flipped copies, as in the real data.
"""

import argparse
import os
import shutil
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ga.splitting import split_dataset  # noqa: E402


def make(root, count, seed=0):
    rng = np.random.default_rng(seed)
    per = count // 2
    for cls in ("cex", "pg"):
        os.makedirs(os.path.join(root, cls), exist_ok=True)
    for i in range(per):
        small = rng.integers(0, 255, (20, 20), dtype=np.uint8)
        Image.fromarray(small).resize((151, 151), Image.BICUBIC).convert("RGB").save(
            os.path.join(root, "cex", f"CEX ({i + 1}).png"), compress_level=1)
    n = 1
    while n <= per:
        small = rng.integers(0, 255, (20, 24), dtype=np.uint8)
        base = np.asarray(Image.fromarray(small).resize((180, 210), Image.BICUBIC))
        for k in range(5):
            if n > per:
                break
            arr = np.rot90(base, k % 4)
            arr = np.fliplr(arr) if k == 4 else arr
            Image.fromarray(np.ascontiguousarray(arr)).convert("RGB").save(
                os.path.join(root, "pg", f"PG ({n}).png"), compress_level=1)
            n += 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=14000)
    p.add_argument("--workdir", default="/tmp/ga_split_bench")
    args = p.parse_args()
    src = os.path.join(args.workdir, "src")
    dest = os.path.join(args.workdir, "split")
    if not os.path.isdir(src) or sum(len(f) for _, _, f in os.walk(src)) != args.count:
        shutil.rmtree(args.workdir, ignore_errors=True)
        t = time.perf_counter()
        make(src, args.count)
        print(f"made {args.count} PNGs in {time.perf_counter() - t:.1f} s")
    shutil.rmtree(dest, ignore_errors=True)
    t = time.perf_counter()
    res = split_dataset(src, dest, mode="copy", progress=False)
    dt = time.perf_counter() - t
    print(f"split {len(res.files)} files in {dt:.1f} s ({len(res.files) / dt:.0f} files/s) on {os.cpu_count()} cores; "
          f"groups: {res.groups}")


if __name__ == "__main__":
    main()
