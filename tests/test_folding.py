"""ga.folding: Conv2D + BatchNorm run as one convolution give the model's own outputs,
gradients and BatchNorm updates, and leave nothing behind on the model."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from ga.folding import _conv_bn_pairs, can_fold, folded, folded_call, folded_forward  # noqa: E402


def _model(dtype_policy="float32"):
    L = keras.layers
    keras.utils.set_random_seed(0)  # the same weights on every build
    keras.mixed_precision.set_global_policy(dtype_policy)
    try:
        inner_in = keras.Input((8, 8, 8))
        y = L.Conv2D(8, 3, padding="same", name="b_conv")(inner_in)
        y = L.BatchNormalization(name="b_bn")(y)
        y = L.Activation("relu")(y)
        act = L.Conv2D(8, 1, activation="relu", name="act_conv")(y)  # an activation between: not folded
        act = L.BatchNormalization(name="act_bn")(act)
        twice = L.Conv2D(8, 1, use_bias=False, name="twice_conv")(act)  # a second consumer: not folded
        side = L.BatchNormalization(name="twice_bn")(twice)
        y = L.Add()([side, twice])
        y = L.Conv2D(8, 3, strides=2, padding="valid", use_bias=False, name="last_conv")(y)
        y = L.BatchNormalization(center=False, scale=False, name="last_bn")(y)
        inner = keras.Model(inner_in, L.Activation("relu")(y), name="backbone")
        inputs = keras.Input((16, 16, 3))
        x = L.Conv2D(8, 3, strides=2, padding="same", name="stem_conv")(inputs)
        x = L.BatchNormalization(epsilon=1e-3, name="stem_bn")(x)
        x = inner(L.Activation("relu")(x))
        x = L.GlobalAveragePooling2D()(x)
        outputs = L.Dense(2, dtype="float32", name="out")(x)
        model = keras.Model(inputs, outputs)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    rng = np.random.default_rng(0)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.5, n))
            layer.moving_variance.assign(rng.uniform(0.3, 3, n))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, n))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.3, n))
    return model, rng.uniform(0, 1, (4, 16, 16, 3)).astype(np.float32)


def _pair_names(model):
    return sorted({layer.name for pair in _conv_bn_pairs(model).values() for layer in pair})


def test_only_a_convolution_feeding_only_its_batchnorm_is_folded():
    model, _ = _model()
    assert _pair_names(model) == ["stem_bn", "stem_conv"]
    assert _pair_names(model.get_layer("backbone")) == ["b_bn", "b_conv", "last_bn", "last_conv"]
    assert can_fold(model)
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert not can_fold(plain)


def test_the_folded_forward_pass_gives_the_model_outputs():
    model, x = _model()
    want = model(x, training=False).numpy()
    got = tf.function(folded_forward(model))(x).numpy()
    assert np.abs(want).max() > 0.1  # the BatchNorm statistics are not an identity
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_training_with_frozen_batchnorm_gives_the_same_loss_gradients_and_updates():
    results = []
    for fold in (False, True):
        model, x = _model()
        for name in ("stem_conv", "stem_bn"):
            model.get_layer(name).trainable = False
        backbone = model.get_layer("backbone")
        backbone.get_layer("b_bn").trainable = False  # a trainable conv before a frozen BatchNorm: folded
        with tf.GradientTape() as tape:
            out = folded_call(model, x, training=True) if fold else model(x, training=True)
            loss = tf.reduce_sum(out ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        stats = backbone.get_layer("last_bn").moving_mean.numpy()  # trainable: training mode, updated
        results.append((loss.numpy(), [g.numpy() for g in grads], stats))
    (loss0, grads0, stats0), (loss1, grads1, stats1) = results
    np.testing.assert_allclose(loss1, loss0, rtol=1e-5)
    assert len(grads1) == len(grads0) > 0
    for g0, g1 in zip(grads0, grads1):
        np.testing.assert_allclose(g1, g0, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats1, stats0, rtol=1e-6)


def test_bfloat16_folded_forward_stays_close_to_the_model():
    model, x = _model("mixed_bfloat16")
    want = model(x, training=False).numpy()
    got = tf.function(folded_forward(model))(x).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0.05, atol=0.05 * np.abs(want).max())


def test_the_folded_block_leaves_the_model_as_it_was(tmp_path):
    model, x = _model()
    with folded(model):  # every BatchNorm trains: nothing would fold in a training step
        assert "call" not in vars(model)
    model.get_layer("stem_bn").trainable = False
    config = model.get_config()
    with folded(model):
        assert "call" in vars(model)
        inside = model.predict(x, verbose=0)
        assert model.get_config() == config
        model.save(tmp_path / "inside.keras")
    assert "call" not in vars(model)
    np.testing.assert_allclose(inside, model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    reread = keras.models.load_model(tmp_path / "inside.keras")
    np.testing.assert_allclose(reread.predict(x, verbose=0), inside, rtol=1e-5, atol=1e-5)
    assert _pair_names(reread) == ["stem_bn", "stem_conv"]
