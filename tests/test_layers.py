"""Every custom Keras object of ga.layers survives get_config/from_config and a save/load
of a model holding it, and computes the same after the round trip."""

import numpy as np
import pytest

import ga  # noqa: F401  (registers the project's objects)
import keras

from ga.layers import (
    ClassF1,
    ClassPrecision,
    ClassRecall,
    Preprocess,
    RandomChannelScale,
    RandomResizedCrop,
    RandomRot90,
    RandomSometimes,
)

LAYERS = [
    Preprocess("resnet_caffe"),
    Preprocess("scale_01"),
    RandomRot90(seed=3),
    RandomSometimes(keras.layers.RandomFlip("horizontal", seed=1), rate=0.5, seed=2),
    RandomChannelScale(0.2, seed=4),
    RandomResizedCrop(16, 16, area=(0.5, 1.0), seed=5),
]


@pytest.mark.parametrize("layer", LAYERS, ids=lambda l: f"{type(l).__name__}")
def test_layer_round_trip(layer, tmp_path):
    config = layer.get_config()
    again = type(layer).from_config(config)
    assert again.get_config() == config
    x = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    inp = keras.Input((16, 16, 3))
    model = keras.Model(inp, layer(inp, training=False))
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded(x, training=False), model(x, training=False), atol=1e-5)
    assert type(loaded.layers[1]) is type(layer) and loaded.layers[1].get_config() == config


@pytest.mark.parametrize("cls", [ClassF1, ClassPrecision, ClassRecall])
def test_metric_round_trip(cls):
    kw = {"threshold": 0.4} if cls is ClassF1 else {"thresholds": 0.4}
    metric = cls(column=1, negate=True, argmax=False, name="m_pg", **kw)
    again = cls.from_config(metric.get_config())
    assert again.get_config() == metric.get_config()
    y = np.array([[0, 1], [1, 0], [0, 0]], np.float32)
    p = np.array([[0.2, 0.9], [0.7, 0.1], [0.3, 0.6]], np.float32)
    for m in (metric, again):
        m.update_state(y, p)
    assert float(again.result()) == pytest.approx(float(metric.result()))
