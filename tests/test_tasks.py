"""Every task's behaviour through its task object (ga.tasks), in-process, on tiny arrays."""

import numpy as np
import pytest

from ga.config import load_config
from ga.errors import ConfigError, DataError, GAError, ModelError
from ga.task_text import text_of
from ga.tasks import TASK_NAMES, TASKS, get_task

BIN = ["cex", "pg"]
MC = ["cex", "pg", "plate"]
ML = ["class1", "class2", "any"]


def test_one_object_per_task_chosen_from_a_name_a_document_or_a_config():
    assert set(TASKS) == set(TASK_NAMES)
    for name in TASK_NAMES:
        assert get_task(name).name == name
        assert get_task({"task": name}) is TASKS[name]
    assert get_task(load_config(None, ["model.task=multiclass"])) is TASKS["multiclass"]
    with pytest.raises(ModelError, match="unknown task 'regression'"):
        get_task("regression")


@pytest.mark.parametrize("name, classes, units, activation", [
    ("binary", BIN, 1, "sigmoid"), ("multiclass", MC, 3, "softmax"), ("multilabel", ML, 3, "sigmoid")])
def test_outputs_and_activation(name, classes, units, activation):
    task = get_task(name)
    assert task.units(classes) == units and task.activation == activation


def test_label_encoding_and_counts():
    b, m = get_task("binary"), get_task("multiclass")
    assert b.encode([0, 1, 1], 2).tolist() == [[0.0], [1.0], [1.0]]
    assert m.encode([2, 0], 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    assert b.true_index(b.encode([1, 0], 2)).tolist() == [1, 0]
    assert m.true_index(m.encode([2, 1], 3)).tolist() == [2, 1]
    assert b.class_counts(b.encode([0, 1, 1], 2), BIN) == {"cex": 1, "pg": 2}
    assert m.class_counts(m.encode([0, 2, 2], 3), MC) == {"cex": 1, "pg": 0, "plate": 2}
    ml = get_task("multilabel")
    assert ml.class_counts(np.array([[1, 0, 1], [1, 1, 1], [0, 0, 0]]), ML) == {"class1": 2, "class2": 1, "any": 2}
    with pytest.raises(DataError, match="labels.csv"):
        ml.encode([0], 3)
    # Class weights become per-image loss weights (multi-label: none).
    w = {"cex": 0.5, "pg": 2.0}
    assert b.sample_weights(b.encode([1, 0], 2), BIN, w).tolist() == [2.0, 0.5]
    assert ml.sample_weights(np.zeros((2, 3)), ML, w).tolist() == [1.0, 1.0]


def test_class_count_rules():
    get_task("binary").check_classes(BIN, "x")
    with pytest.raises(DataError, match="set model.task: multiclass"):
        get_task("binary").check_classes(MC, "split/train")
    with pytest.raises(DataError, match="at least 2"):
        get_task("multiclass").check_classes(["cex"], "split/train")
    with pytest.raises(ModelError, match="exactly 2"):
        get_task("binary").check_labels_document(MC, "labels.json")
    with pytest.raises(ModelError, match="contrastive pretraining run"):
        get_task("contrastive").check_labels_document([], "labels.json")


def test_decision_rules():
    probs = np.array([[0.2], [0.7], [0.95]], np.float32)
    b = get_task("binary")
    assert b.decide(probs, BIN, {"pg": 0.5}).tolist() == [[True, False], [False, True], [False, True]]
    assert b.decide(probs, BIN, {"pg": 0.9}).tolist() == [[True, False], [True, False], [False, True]]
    assert b.predicted(probs, BIN, {"pg": 0.5}).tolist() == [0, 1, 1]
    assert b.default_thresholds(BIN, 0.6) == {"pg": 0.6} and b.positive_class(BIN) == "pg"
    m = get_task("multiclass")
    p3 = np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]], np.float32)
    assert m.predicted(p3, MC, {}).tolist() == [1, 0] and m.default_thresholds(MC, 0.5) == {}
    assert m.decide(np.zeros((0, 3)), MC, {}).shape == (0, 3)
    with pytest.raises(GAError, match="most probable class"):
        m.check_threshold_override()
    ml = get_task("multilabel")
    thr = {"class1": 0.5, "class2": 0.3, "any": 0.5}
    assert ml.predicted(p3, ML, thr).tolist() == [[0, 1, 0], [1, 0, 0]]
    assert ml.default_thresholds(ML, 0.4) == {c: 0.4 for c in ML}


def test_confidence_and_printed_lines():
    b, ml = get_task("binary"), get_task("multilabel")
    assert b.confidence(np.array([0.2]), np.array([True, False]), BIN) == pytest.approx(0.8)
    assert b.confidence(np.array([0.9]), np.array([False, True]), BIN) == pytest.approx(0.9)
    assert ml.confidence(np.array([0.9, 0.6, 0.7]), np.array([True, True, False]), ML) == pytest.approx(0.6)
    assert ml.confidence(np.array([0.1, 0.3, 0.2]), np.array([False] * 3), ML) == pytest.approx(0.7)
    assert text_of(b).result_line("a.png", BIN, np.array([0.9]), ["pg"], 0.9) == "File a.png prediction pg confidence 0.9000"
    assert text_of(ml).result_line("a.png", ML, np.array([0.9, 0.1, 0.9]), ["class1", "any"], 0.9) == \
        "File a.png prediction class1 0.9000, any 0.9000"
    assert text_of(ml).result_line("a.png", ML, np.array([0.1, 0.1, 0.1]), [], 0.9) == "File a.png prediction none"
    assert b.class_probabilities(np.array([[0.25]])).tolist() == [[0.75, 0.25]]
    assert text_of(b).study_line and not text_of("multiclass").study_line


@pytest.mark.parametrize("name, classes, smoothing", [("binary", BIN, 0.0), ("multiclass", MC, 0.1),
                                                      ("multilabel", ML, 0.0)])
def test_loss_and_compile_metrics(name, classes, smoothing):
    import keras

    task = get_task(name)
    loss = task.loss(smoothing)
    assert isinstance(loss, keras.losses.CategoricalCrossentropy if name == "multiclass"
                      else keras.losses.BinaryCrossentropy)
    assert loss.get_config()["label_smoothing"] == smoothing
    names = [m.name for m in task.compile_metrics(classes, 0.5)]
    assert names[:2] == ["accuracy", "auc"]
    assert names[2:] == [f"{k}_{c}" for c in classes for k in ("precision", "recall", "f1")]


def test_the_loss_numbers_match_keras():
    import keras

    rng = np.random.default_rng(0)
    for name, classes in (("binary", BIN), ("multiclass", MC), ("multilabel", ML)):
        task = get_task(name)
        k = task.units(classes)
        logits = rng.normal(size=(7, k)).astype(np.float32)
        probs = keras.ops.convert_to_numpy(keras.ops.softmax(logits) if task.activation == "softmax"
                                           else keras.ops.sigmoid(logits))
        y = task.encode(rng.integers(0, len(classes), 7), len(classes)) if task.exclusive else \
            (rng.random((7, k)) > 0.5).astype(np.float32)
        want = float(task.loss()(y, probs))
        assert task.cross_entropy(y, probs) == pytest.approx(want, rel=1e-4), name
    assert get_task("binary").cross_entropy(np.zeros((0, 1)), np.zeros((0, 1))) is None


def test_metrics_and_report_lines_per_task():
    b = get_task("binary")
    y = b.encode([0, 0, 1, 1], 2)
    p = np.array([[0.1], [0.6], [0.8], [0.9]], np.float32)
    m, text = b.metrics(BIN, y, p, {"pg": 0.5})
    assert m["accuracy"] == 0.75 and m["confusion_matrix"] == [[1, 1], [0, 2]] and m["roc_auc"] == 1.0
    assert m["per_class"]["pg"]["support"] == 2 and "macro avg" in text
    m.update({"classes": BIN, "thresholds": {"pg": 0.5}})
    assert text_of(b).decision_line(m) == "positive class: pg; decision: p(pg) > 0.5"
    assert text_of(b).report_lines(m)[0] == "ROC AUC (pg): 1.0000" and "pred pg" in text_of(b).report_lines(m)[3]
    ml = get_task("multilabel")
    yl = np.array([[1, 0, 1], [0, 1, 1], [0, 0, 0]], np.float32)
    pl = np.array([[0.9, 0.2, 0.8], [0.2, 0.7, 0.9], [0.1, 0.1, 0.2]], np.float32)
    ml_m, _ = ml.metrics(ML, yl, pl, {c: 0.5 for c in ML})
    assert ml_m["accuracy"] == 1.0 and ml_m["harmonic_mean_f1"] == 1.0
    assert ml_m["confusion_matrix"]["class1"] == [[2, 0], [0, 1]]
    ml_m.update({"classes": ML})
    assert text_of(ml).report_lines(ml_m)[0] == "harmonic mean of per-class F1: 1.0000"
    header, rows = ml.prediction_rows(["a", "b", "c"], ML, yl, pl, {c: 0.5 for c in ML})
    assert header == ["path", "true", "predicted", "p_class1", "p_class2", "p_any"]
    assert rows[0][:3] == ["a", "class1;any", "class1;any"] and rows[2][1:3] == ["", ""]
    mc = get_task("multiclass")
    mm, _ = mc.metrics(MC, mc.encode([0, 1, 2], 3), np.eye(3, dtype=np.float32), {})
    assert mm["roc_auc_macro"] == 1.0 and mm["confusion_matrix"] == np.eye(3, dtype=int).tolist()


def test_gradcam_targets_and_gallery_titles():
    b, ml, mc = get_task("binary"), get_task("multilabel"), get_task("multiclass")
    assert b.gradcam_columns(np.array([[True, False], [False, True]]), np.array([[0.2], [0.9]])).tolist() == [-1, 0]
    named = np.array([[False, True, True], [False, False, False]])
    probs = np.array([[0.9, 0.6, 0.7], [0.2, 0.4, 0.1]])
    assert ml.gradcam_columns(named, probs).tolist() == [2, 1]
    assert mc.gradcam_columns(np.array([[False, False, True]]), probs[:1]).tolist() == [2]
    assert ml.gradcam_panels(ML) == [0, 1, 2] and b.gradcam_panels(BIN) == [None]
    assert text_of(b).example_title(BIN, np.array([1.0]), np.array([0.8])) == ("pg", "p(pg)=0.800")
    assert text_of(ml).example_title(ML, np.array([1, 0, 1]), np.array([0.9, 0.1, 0.9])) == ("class1+any", "0.90 0.10 0.90")
    right = ml.right(np.array([[1, 0, 1]]), np.array([[True, False, True]]))
    assert right.tolist() == [True]


def test_scan_rules_each_task_allows():
    b, ml, mc = get_task("binary"), get_task("multilabel"), get_task("multiclass")
    probs = np.array([[0.3], [0.7]])
    assert b.scan_marker(BIN, {"pg": 0.5}, "classes")(probs).tolist() == [False, True]
    assert b.scan_marker(BIN, {"pg": 0.5}, "any", threshold=0.2)(probs).tolist() == [True, True]
    assert b.scan_columns(BIN) == ["pg"] and ml.scan_columns(ML) == ML
    p3 = np.array([[0.1, 0.2, 0.9], [0.8, 0.1, 0.3]])
    thr = {c: 0.5 for c in ML}
    assert ml.scan_marker(ML, thr, "classes")(p3).tolist() == [False, True]  # "any" alone marks nothing
    assert ml.scan_marker(ML, thr, "any")(p3).tolist() == [True, False]
    with pytest.raises(GAError, match="no"):
        ml.scan_marker(["a", "b"], {"a": 0.5, "b": 0.5}, "any")
    with pytest.raises(GAError, match="multi-label or binary"):
        mc.scan_marker(MC, {}, "classes")


@pytest.mark.parametrize("sets, message", [
    (["model.task=multilabel", "training.class_weight=balanced"], "use data.balance"),
    (["data.balance=true"], "data.balance applies to model.task: multilabel only"),
    (["data.any_class=true"], "data.any_class applies"),
    (["model.task=contrastive", "training.early_stopping.monitor=loss", "training.schedule=fine_tune"],
     "training.schedule applies to classifiers"),
    (["model.task=contrastive", "training.early_stopping.monitor=loss", "training.class_weight=balanced"],
     "not contrastive"),
])
def test_config_keys_each_task_refuses(sets, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, sets)


def test_imbalance_hints_name_a_key_the_task_accepts():
    cfg = load_config(None)
    assert text_of("binary").imbalance_hint(cfg, False) == "; consider training.class_weight: balanced"
    assert text_of("binary").imbalance_hint(cfg, True) == ""
    assert text_of("multilabel").imbalance_hint(cfg, False) == "; consider data.balance: true"
    assert get_task("multilabel").tunes_thresholds and not get_task("binary").tunes_thresholds
    assert not get_task("contrastive").classifier


def test_tasks_hold_no_prose():
    """A task is model concerns only (outputs, loss, metrics, decisions); its words for
    reports and printed lines are ga.task_text's, one class per task."""
    import inspect

    from ga.task_text import TEXTS
    from ga.tasks import TASKS

    words = {"decision_line", "report_lines", "auc_lines", "intended_use", "card_lines", "result_line",
             "example_title", "label_texts", "imbalance_hint", "study_line", "roc_title"}
    assert not [(n, w) for n, t in TASKS.items() for w in words if hasattr(t, w)]
    assert set(TEXTS) == set(TASKS) and all(w in dir(TEXTS["binary"]) for w in words)
    assert "print(" not in inspect.getsource(inspect.getmodule(get_task))
    assert text_of("multiclass").decision_line({}) == "decision: the most probable class (softmax)"
