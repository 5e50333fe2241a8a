"""Bad input and untrusted content: fuzzed images and configurations, and a scan of the
package for ways to run code from data."""

import io
import os
import re

import numpy as np
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import ROOT
from ga.config import ConfigError, load_config
from ga.data import prescan
from ga.inputs import read_image

LABELS = {"task": "binary", "classes": ["cex", "pg"], "thresholds": {"pg": 0.5}, "input_size": [16, 16],
          "preprocessing": "scale_01"}
EXAMPLES = int(os.environ.get("GA_FUZZ_EXAMPLES", "60"))
# The quick default replays the same cases every run (stable CI); a long run explores.
DERANDOMIZE = "GA_FUZZ_EXAMPLES" not in os.environ


def _seed_images():
    rng = np.random.default_rng(0)
    arr = (rng.random((12, 10, 3)) * 255).astype(np.uint8)
    out = []
    for fmt in ("PNG", "JPEG", "BMP", "GIF"):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, fmt)
        out.append(buf.getvalue())
    return out


SEEDS = _seed_images()


@st.composite
def damaged_images(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            data = data[:pos]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZE, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(damaged_images(), st.binary(max_size=256)))
def test_fuzzed_image_bytes_give_a_per_file_error_or_an_image(tmp_path, data):
    path = tmp_path / "fuzz.png"
    path.write_bytes(data)
    try:
        arr = read_image(str(path), LABELS)
    except ValueError as exc:  # the per-file error inference reports
        assert str(exc)
    else:
        assert arr.shape == (16, 16, 3) and arr.dtype == np.uint8
    keep, problems = prescan([str(path)])  # the training pre-scan never raises
    assert keep[0] == (not problems)


_keys = st.sampled_from(["data", "model", "training", "output", "split", "extends", "x", "batch_size", "epochs",
                         "backbone", "image_size", "learning_rate", "augment", "head", "units", "dropout"])
_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                                 st.text(max_size=12)),
                       lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=3)),
                       max_leaves=8)


@settings(max_examples=EXAMPLES * 3, deadline=None, derandomize=DERANDOMIZE, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.dictionaries(_keys, _values, max_size=4),
       sets=st.lists(st.tuples(st.sampled_from(["training.epochs", "model.backbone", "data.image_size",
                                                "model.head.dropout", "training.learning_rate", "data.augment.zoom",
                                                "nope.key", "training"]),
                               st.text(max_size=10)), max_size=3))
def test_fuzzed_configs_load_or_fail_with_one_line(tmp_path, doc, sets):
    path = tmp_path / "fuzz.yaml"
    doc.pop("extends", None)
    path.write_text(yaml.safe_dump(doc))
    try:
        cfg = load_config(str(path), [f"{k}={v}" for k, v in sets])
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        cfg.validate()


def test_yaml_only_safe_load_and_no_code_from_data():
    pattern = re.compile(r"\byaml\.(load|unsafe_load|full_load)\(|\beval\(|\bexec\(|\bpickle\b|\bmarshal\b|"
                         r"\bshelve\b|safe_mode=False|allow_pickle=True")
    hits = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, "ga")):
        for f in files:
            if f.endswith(".py"):
                for n, line in enumerate(open(os.path.join(dirpath, f), encoding="utf-8"), 1):
                    if pattern.search(line):
                        hits.append(f"{f}:{n}: {line.strip()}")
    assert hits == []
    assert "yaml.SafeLoader" in open(os.path.join(ROOT, "ga", "typed_yaml.py")).read()
