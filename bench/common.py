"""Helpers shared by the benchmark scripts: synthetic data on demand, machine facts."""

import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def crystal_split(workdir, per_class=300, seed=0):
    """A split of synthetic crystal crops under workdir (made once, then reused)."""
    from ga.splitting import split_dataset
    from ga.synthetic import generate_crystals

    split = os.path.join(workdir, "split")
    if not os.path.isfile(os.path.join(split, "manifest.csv")):
        src = generate_crystals(os.path.join(workdir, "archive"), per_class=per_class, seed=seed)
        split_dataset(src, split, progress=False)
    return split


def crystal_folder(folder, count=1000, seed=0):
    """A flat folder of `count` synthetic crystal crops (half CEX, half PG)."""
    import numpy as np
    from PIL import Image

    from ga import synthetic as syn

    os.makedirs(folder, exist_ok=True)
    have = [f for f in os.listdir(folder) if f.endswith(".png")]
    if len(have) >= count:
        return folder
    for i, rng in enumerate(syn.rngs(seed, count)):
        arr = syn.make_cex(rng) if i % 2 == 0 else syn.make_pg(rng)
        Image.fromarray(np.repeat(arr[:, :, None], 3, axis=2)).save(os.path.join(folder, f"crop_{i:05d}.png"))
    return folder


def machine():
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}


def forward_flops(fn, x):
    """FLOPs of one call of the tf.function `fn` on `x` (TensorFlow's own count of the frozen graph)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    from tensorflow.python.profiler import model_analyzer, option_builder

    frozen = convert_variables_to_constants_v2(fn.get_concrete_function(x))
    opts = option_builder.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return float(model_analyzer.profile(graph=frozen.graph, options=opts).total_float_ops)
