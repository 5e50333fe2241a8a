"""<run>/report.html: one self-contained page per run to share (no network, no JavaScript).

It holds the configuration summary, the test results (accuracy, per-class table, the report
text), the delivered epoch and why, the export checks (ONNX, SavedModel), every figure of the
run embedded as a PNG data URI, and the model card's text. Built from the run folder's own
files (metrics.json, config.yaml, *.png, *FinalTestResults.txt, model_card.md), so it can be
rebuilt for any complete run: `python -m ga.report <run>`.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import sys
from typing import Sequence

import yaml

log = logging.getLogger(__name__)

from ga.errors import GAError, first_line
from ga.files import atomic_write_text
from ga.stats import shown, with_ci
from ga.tasks import TASKS
from ga.uncertainty import level_text

STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}pre{background:#f6f6f6;padding:.8em;overflow-x:auto}
img{max-width:100%;border:1px solid #ddd;margin:.3em 0}figure{margin:1em 0}figcaption{color:#555}"""


def _read(path):
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def html_table(rows: Sequence[Sequence], header: Sequence[str]) -> str:
    """An HTML table (numbers to 4 decimals, None empty)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v):
    return f"{v:.4f}" if isinstance(v, float) else "" if v is None else str(v)


def _config_rows(cfg):
    d, m, t = cfg.get("data", {}), cfg.get("model", {}), cfg.get("training", {})
    return [("task", m.get("task")), ("backbone", f"{m.get('backbone')} (weights {m.get('weights')})"),
            ("image size", d.get("image_size")), ("batch size", d.get("batch_size")),
            ("optimizer", f"{t.get('optimizer')}, lr {t.get('learning_rate')}, weight decay {t.get('weight_decay')}"),
            ("learning-rate schedule", (t.get("lr_schedule") or {}).get("kind")), ("epochs (at most)", t.get("epochs")),
            ("data", d.get("split_root") if _classifier(m) else d.get("train_dir"))]


def _classifier(doc):
    """Whether a config's model section or a metrics.json belongs to a classifier run."""
    task = TASKS.get(doc.get("task"))
    return task is None or task.classifier


def _results(m):
    """The test section: accuracy, AUC, the per-class table (classifiers) or the losses."""
    if not _classifier(m):
        keys = ("loss", "images", "validation_images", "first_loss", "final_loss", "best_loss", "final_val_loss")
        return html_table([(k, m.get(k)) for k in keys if k in m], ("pretraining", "value"))
    auc = m.get("roc_auc")
    if isinstance(auc, dict):  # per class; None where the test split has one kind of label only
        cis = m.get("roc_auc_ci") if isinstance(m.get("roc_auc_ci"), dict) else {}
        auc = ", ".join(f"{c} {'n/a' if v is None else with_ci(v, cis.get(c))}" for c, v in auc.items())
    elif auc is not None:
        auc = shown(m, "roc_auc")
    lines = [("test images", m.get("test_images")), ("accuracy", shown(m, "accuracy"))]
    if "balanced_accuracy" in m:
        lines.append(("balanced accuracy", shown(m, "balanced_accuracy")))
    if "macro_avg" in m:
        lines.append(("macro F1", shown(m["macro_avg"], "f1")))
    lines += [("ROC AUC", auc), ("test loss", m.get("loss"))]
    if "harmonic_mean_f1" in m:
        lines.append(("harmonic-mean F1", shown(m, "harmonic_mean_f1")))
    per_class = [(c, shown(v, "precision"), shown(v, "recall"), shown(v, "f1"), v["support"])
                 for c, v in m.get("per_class", {}).items()]
    note = f"<p>{html.escape(level_text(m))}</p>" if "uncertainty" in m else ""
    return (html_table(lines, ("test", "value")) +
            html_table(per_class, ("class", "precision", "recall", "F1", "support")) + note)


def _exports(m):
    rows = []
    for key, name in (("onnx", "ONNX"), ("saved_model", "SavedModel")):
        info = m.get(key)
        if info:
            rows.append((name, info.get("file") or info.get("folder"), f"{info['max_abs_diff']:.2e}",
                         f"{info['tolerance']:g}", info["parity_images"]))
    out = html_table(rows, ("export", "file", "max |Keras - export|", "tolerance", "images")) if rows else \
        "<p>No exports checked in this run.</p>"
    return out + _int8(m.get("int8"))


def _int8(info):
    """The INT8 model's check against float32 ONNX on the test split."""
    if not info:
        return ""
    f32, i8 = info.get("test_float32", {}), info.get("test_int8", {})
    rows = [("file", info.get("file") or f"not kept: {info.get('why', '')}"),
            ("decisions equal to float32", f"{_fmt(info.get('agreement'))} of {info.get('test_images')} test images "
                                           f"(kept from {info.get('min_agreement')})"),
            ("largest probability difference", _fmt(info.get("max_prob_diff"))),
            ("test accuracy float32 / INT8", f"{_fmt(f32.get('accuracy'))} / {_fmt(i8.get('accuracy'))}"),
            ("calibration", f"{info.get('calibration_images')} training images")]
    return "<h3>INT8 (ONNX Runtime, static QDQ)</h3>" + html_table(rows, ("INT8", "value"))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _figure_bytes(folder, name):
    """A figure's bytes, or None (logged) when it is not a real PNG file of the folder itself: a
    link (it could point anywhere, /etc/passwd say), a folder, a file outside `folder`, or a file
    whose content is not PNG. A page that is shared must carry only the run's own figures."""
    path = os.path.join(folder, name)
    inside = os.path.dirname(os.path.realpath(path)) == os.path.realpath(folder)
    if os.path.islink(path) or not os.path.isfile(path) or not inside:
        log.warning("figure %s left out of the page: not a regular file of %s", name, folder)
        return None
    with open(path, "rb") as fh:
        data = fh.read()
    if not data.startswith(PNG_SIGNATURE):
        log.warning("figure %s left out of the page: not a PNG image", name)
        return None
    return data


def embedded_figures(folder: str, names: Sequence[str] | None = None) -> str:
    """Figures of a folder as <figure>s with PNG data URIs: `names`, or every .png there; only
    regular files inside the folder whose content is PNG (others are logged and left out)."""
    out = []
    if names is None:
        names = sorted(f for f in os.listdir(folder) if f.lower().endswith(".png") and not f.startswith("."))
    for name in names:
        raw = _figure_bytes(folder, name)
        if raw is None:
            continue
        data = base64.b64encode(raw).decode("ascii")
        out.append(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
                   f"<figcaption>{html.escape(name)}</figcaption></figure>")
    return "".join(out)


def _run_documents(run_dir):
    """(metrics.json, config.yaml) of a run folder as mappings.

    Raises:
        GAError: either is missing, does not parse (a YAML tag included: safe loading refuses
            it), or is not a mapping.
    """
    docs = []
    for name, parse in (("metrics.json", json.loads), ("config.yaml", yaml.safe_load)):
        path = os.path.join(run_dir, name)
        try:
            doc = parse(_read(path))
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
            raise GAError(f"{path}: cannot be read as a run's {name} ({first_line(exc, 120)})") from None
        if not isinstance(doc, dict):
            raise GAError(f"{path}: a run's {name} is a mapping, this is a {type(doc).__name__}")
        docs.append(doc)
    return docs


def build_report(run_dir: str) -> str:
    """The report page of a run folder, as text.

    Raises:
        GAError: metrics.json or config.yaml is not what a run writes.
    """
    m, cfg = _run_documents(run_dir)
    try:
        return _page(run_dir, m, cfg)
    except (AttributeError, TypeError, KeyError, ValueError) as exc:  # a value of an unexpected type
        raise GAError(f"{run_dir}: metrics.json or config.yaml holds values of unexpected types "
                      f"({type(exc).__name__}: {first_line(exc, 120)})") from None


def _page(run_dir, m, cfg):
    fit = m.get("training") or {}
    name = os.path.basename(os.path.normpath(run_dir))
    texts = [f for f in sorted(os.listdir(run_dir)) if f.endswith("FinalTestResults.txt")]
    card = os.path.join(run_dir, "model_card.md")
    delivered = (f"epoch {fit.get('delivered_epoch')} of {fit.get('epochs')} ({fit.get('delivered_because', '')}); "
                 f"training stopped because: {str(fit.get('stop_reason', '')).replace('_', ' ')}")
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(name)}</title>"
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Run {html.escape(name)}</h1>",
        "<h2>Configuration</h2>", html_table(_config_rows(cfg), ("setting", "value")),
        "<h2>Test results</h2>", _results(m),
        f"<h2>Delivered weights</h2><p id='delivered'>{html.escape(delivered)}</p>",
        "<h2>Export checks</h2>", _exports(m),
        *(["<h2>Test report</h2>", f"<pre>{html.escape(_read(os.path.join(run_dir, texts[0])))}</pre>"] if texts else []),
        "<h2>Figures</h2>", embedded_figures(run_dir),
        *(["<h2>Model card</h2>", f"<pre>{html.escape(_read(card))}</pre>"] if os.path.isfile(card) else []),
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(run_dir: str) -> str:
    """Write <run>/report.html atomically; returns its path."""
    path = os.path.join(run_dir, "report.html")
    atomic_write_text(path, build_report(run_dir))
    return path


if __name__ == "__main__":
    # `python -m ga.report ...` is `python -m ga report ...`, run in a process of its own: the
    # command line (ga.cli) sits above every library module, and none imports it
    import subprocess

    sys.exit(subprocess.call([sys.executable, "-m", "ga", "report", *sys.argv[1:]]))
