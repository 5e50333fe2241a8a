"""What the reports and printed lines say about each kind of model, one class per task:
FinalTestResults.txt's decision, AUC and confusion lines, the model card's intended use and
AUC lines, inference's printed line, gallery titles and label texts, and the training log's
imbalance hint. The model concerns themselves (outputs, loss, metrics, decisions) are
`ga.tasks`'; this module only words them.

Example:
    >>> from ga.task_text import text_of
    >>> text_of("binary").decision_line({"positive_class": "pg", "thresholds": {"pg": 0.5}})
    'positive class: pg; decision: p(pg) > 0.5'
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

import numpy as np

from ga.stats import shown, with_ci
from ga.tasks import Task, get_task


class TaskText:
    """A task's words; the tasks below override what they say differently."""

    study_line = False  # inference.py --print-format study: the Georgia study's line (binary models)
    roc_title = "ROC (test)"

    def __init__(self, task: Task):
        self.task = task

    def decision_line(self, m: Mapping) -> str:
        """How the decision is taken, for FinalTestResults.txt."""
        return "decision thresholds: " + ", ".join(f"{c} {v}" for c, v in m["thresholds"].items())

    def report_lines(self, m: Mapping) -> list[str]:
        """FinalTestResults.txt's lines after the loss: AUC and the confusion matrix."""
        classes = m["classes"]
        lines = self.auc_lines(m)
        w = max(len(c) for c in classes) + 6
        lines += ["", "confusion matrix (rows: true class, columns: predicted class)",
                  " " * w + "".join(f"{'pred ' + c:>{w}}" for c in classes)]
        for c, row in zip(classes, m["confusion_matrix"]):
            lines.append(f"{'true ' + c:<{w}}" + "".join(f"{v:>{w}}" for v in row))
        return lines

    def auc_lines(self, m: Mapping) -> list[str]:
        return [f"ROC AUC ({c} vs rest): {_auc_text(m, c)}" for c in m["roc_auc"]] + \
            [f"ROC AUC macro {shown(m, 'roc_auc_macro')}, micro {shown(m, 'roc_auc_micro')}"]

    def intended_use(self, classes: Sequence[str]) -> str:
        """The model card's intended-use sentence."""
        raise NotImplementedError

    def card_lines(self, m: Mapping, classes: Sequence[str]) -> list[str]:
        """The model card's AUC lines."""
        return []

    def result_line(self, name: str, classes: Sequence[str], probs_row: np.ndarray, named: list[str],
                    confidence: float) -> str:
        """inference.py's printed line for one image."""
        return f"File {name} prediction {named[0]} confidence {confidence:.4f}"

    def example_title(self, classes: Sequence[str], y_true: np.ndarray, y_prob: np.ndarray) -> tuple[str, str]:
        """(true class text, probability text) of one image in a gallery figure."""
        return classes[int(self.task.true_index(y_true[None, :])[0])], f"p={float(np.max(y_prob)):.3f}"

    def label_texts(self, classes: Sequence[str], y: np.ndarray) -> list[str]:
        """Each label row as text: its class, or the classes it holds joined by "+"."""
        return [self.example_title(classes, row, row)[0] for row in np.asarray(y)]

    def imbalance_hint(self, cfg: Any, weighted: bool) -> str:
        """What the training log suggests after the class counts of an imbalanced split."""
        return "" if weighted else "; consider training.class_weight: balanced"


class BinaryText(TaskText):
    study_line = True

    def decision_line(self, m: Mapping) -> str:
        pos = m["positive_class"]
        return f"positive class: {pos}; decision: p({pos}) > {m['thresholds'][pos]}"

    def auc_lines(self, m: Mapping) -> list[str]:
        auc = m["roc_auc"]
        return [f"ROC AUC ({m['positive_class']}): " + (shown(m, "roc_auc") if auc is not None
                                                        else "undefined (one class in test)")]

    def intended_use(self, classes: Sequence[str]) -> str:
        return ("Classify in-situ microscope crops of a crystallization as " + " or ".join(classes)
                + f" (positive class: {classes[1]}), for process monitoring. Input: an image crop, RGB or grey, any "
                  "size (resized to the model's input).")

    def card_lines(self, m: Mapping, classes: Sequence[str]) -> list[str]:
        return [f"- ROC AUC ({classes[1]}) {shown(m, 'roc_auc')}"] if m.get("roc_auc") is not None else []

    def example_title(self, classes: Sequence[str], y_true: np.ndarray, y_prob: np.ndarray) -> tuple[str, str]:
        return classes[int(y_true[0] > 0.5)], f"p({classes[1]})={y_prob[0]:.3f}"


class MulticlassText(TaskText):
    roc_title = "ROC (test, one class vs the rest)"

    def decision_line(self, m: Mapping) -> str:
        return "decision: the most probable class (softmax)"

    def intended_use(self, classes: Sequence[str]) -> str:
        return ("Classify microscope crops as one of " + ", ".join(classes) + " (exclusive classes; the most "
                "probable is named).")

    def card_lines(self, m: Mapping, classes: Sequence[str]) -> list[str]:
        return [f"- ROC AUC one-vs-rest: macro {shown(m, 'roc_auc_macro')}, micro {shown(m, 'roc_auc_micro')}"]


class MultilabelText(TaskText):
    def imbalance_hint(self, cfg: Any, weighted: bool) -> str:
        return "" if weighted or cfg.data.balance else "; consider data.balance: true"

    def report_lines(self, m: Mapping) -> list[str]:
        classes = m["classes"]
        lines = [f"harmonic mean of per-class F1: {shown(m, 'harmonic_mean_f1')}"]
        lines += [f"ROC AUC ({c}): {_auc_text(m, c)}" for c in classes]
        lines += ["", "confusion matrices per class [[TN, FP], [FN, TP]]"]
        return lines + [f"  {c}: {m['confusion_matrix'][c]}" for c in classes]

    def intended_use(self, classes: Sequence[str]) -> str:
        return ("Flag microscope crops that hold flakes of each class (" + ", ".join(classes) + "); labels are not "
                "exclusive.")

    def result_line(self, name: str, classes: Sequence[str], probs_row: np.ndarray, named: list[str],
                    confidence: float) -> str:
        probs = dict(zip(classes, probs_row))
        return f"File {name} prediction " + (", ".join(f"{c} {probs[c]:.4f}" for c in named) or "none")

    def example_title(self, classes: Sequence[str], y_true: np.ndarray, y_prob: np.ndarray) -> tuple[str, str]:
        return "+".join(c for c, f in zip(classes, y_true > 0.5) if f) or "none", " ".join(f"{p:.2f}" for p in y_prob)


TEXTS: dict[str, type[TaskText]] = {"binary": BinaryText, "multiclass": MulticlassText, "multilabel": MultilabelText,
                                    "contrastive": TaskText}


def text_of(what: Union[str, Task, Mapping, Any]) -> TaskText:
    """The words of a task (a name, a Task, a labels.json / metrics.json document or a Config,
    as `ga.tasks.get_task` takes)."""
    task = get_task(what)
    return TEXTS[task.name](task)


def _auc_text(m: Mapping, c: str) -> str:
    """A per-class AUC with its interval (metrics.json's roc_auc_ci), or "undefined"."""
    return with_ci(m["roc_auc"][c], (m.get("roc_auc_ci") or {}).get(c))
