"""A model's forward pass with each convolution and the BatchNorm after it run as one convolution.

A BatchNormalization in inference mode (always at prediction, and while training for a frozen
one) is a per-channel scale and shift, so the convolution before it can take it in:
``kernel * s`` and ``(bias - mean) * s + beta`` with ``s = gamma / sqrt(variance + epsilon)``.
The convolution, its bias and the ReLU after it then run as one oneDNN primitive (TensorFlow's
remapper fuses them) instead of a convolution followed by casts, a multiply, an add and a
ReLU over the whole activation: on a CPU with AMX those elementwise passes took most of a
bfloat16 ResNet-101 forward pass (docs/benchmarks.md, "Where the time goes").

Nothing about the model changes: the same layers and variables, run through the functional
graph with the folded pairs substituted (the folded weights are computed from the variables
in each call, so training and loaded weights are always seen). The files a run writes are
made from the model itself. Models that are not functional, and pairs that cannot be folded
(a convolution with an activation or a second consumer, a shared layer, a BatchNorm running
in training mode), run as they are.

Example:
    >>> forward = folded_forward(model)                      # doctest: +SKIP
    >>> probs = forward(images)                              # == model(images, training=False)
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import keras


def _conv_bn_pairs(model: Any) -> dict[int, tuple[Any, Any]]:
    """{id(layer): (conv, bn)} for the Conv2D -> BatchNormalization pairs of a functional
    model that can be folded (both keys: the conv's and the BatchNorm's id)."""
    consumers: dict[int, int] = {}
    nodes = [n for depth in model._nodes_by_depth.values() for n in depth]
    for node in nodes:
        for t in node.input_tensors:
            consumers[id(t)] = consumers.get(id(t), 0) + 1
    pairs: dict[int, tuple[Any, Any]] = {}
    for node in nodes:
        bn = node.operation
        if type(bn) is not keras.layers.BatchNormalization or len(node.input_tensors) != 1:
            continue
        x = node.input_tensors[0]
        conv = x._keras_history.operation
        if (type(conv) is keras.layers.Conv2D and conv.activation is keras.activations.linear
                and conv.data_format == "channels_last" and conv.groups == 1 and bn.axis in (-1, 3)
                and len(conv._inbound_nodes) == 1 and len(bn._inbound_nodes) == 1 and consumers[id(x)] == 1):
            pairs[id(conv)] = pairs[id(bn)] = (conv, bn)
    return pairs


def _folded_conv(conv: Any, bn: Any) -> Callable[[Any], Any]:
    """The convolution with the BatchNorm's inference-mode scale and shift in its weights."""
    import tensorflow as tf
    from keras.src.backend.common.variables import AutocastScope

    def call(x: Any) -> Any:
        with AutocastScope(None):  # the variables as stored (float32), not cast to the compute dtype
            scale = tf.math.rsqrt(tf.convert_to_tensor(bn.moving_variance) + bn.epsilon)
            if bn.scale:
                scale = scale * tf.convert_to_tensor(bn.gamma)
            shift = -tf.convert_to_tensor(bn.moving_mean)
            if conv.use_bias:
                shift = shift + tf.convert_to_tensor(conv.bias)
            shift = shift * scale
            if bn.center:
                shift = shift + tf.convert_to_tensor(bn.beta)
            kernel = tf.convert_to_tensor(conv.kernel) * scale
        dtype = conv.compute_dtype
        kernel = tf.cast(kernel, dtype)
        y = tf.nn.conv2d(tf.cast(x, dtype), kernel, strides=(1, *conv.strides, 1), padding=conv.padding.upper(),
                         dilations=(1, *conv.dilation_rate, 1))
        return tf.nn.bias_add(y, tf.cast(shift, dtype))

    return call


def _run(model: Any, inputs: Any, training: bool, plans: dict) -> Any:
    """`model(inputs, training=training)` through its graph, folded pairs substituted, nested
    functional models (the backbone) likewise."""
    from keras.src.models.functional import operation_fn

    if id(model) not in plans:
        plans[id(model)] = _conv_bn_pairs(model)
    pairs = plans[id(model)]

    def op_for(op: Any) -> Callable[..., Any]:
        if isinstance(op, keras.Model) and hasattr(op, "_nodes_by_depth"):
            return lambda x, **_: _run(op, x, training, plans)
        pair = pairs.get(id(op))
        if pair is not None and not (training and pair[1].trainable):
            conv, bn = pair
            return _folded_conv(conv, bn) if op is conv else (lambda x, **_: x)
        return operation_fn(op, training=training)

    outputs = model._run_through_graph(model._standardize_inputs(inputs), operation_fn=op_for)
    return outputs[0] if isinstance(outputs, (list, tuple)) and len(outputs) == 1 else outputs


def can_fold(model: Any, training: bool = False) -> bool:
    """Whether `model` (or a functional model inside it) has a pair that folds in a call with
    `training` (while training, only pairs whose BatchNorm is frozen)."""
    if not hasattr(model, "_nodes_by_depth"):
        return False
    if any(not (training and bn.trainable) for _, bn in _conv_bn_pairs(model).values()):
        return True
    return any(can_fold(layer, training) for layer in model.layers if isinstance(layer, keras.Model))


def folded_call(model: Any, inputs: Any, training: bool = False, _plans: dict | None = None) -> Any:
    """`model(inputs, training=training)` with the foldable pairs folded (a plain call for a
    model that has none)."""
    if not can_fold(model, training):
        return model(inputs, training=training)
    return _run(model, inputs, training, {} if _plans is None else _plans)


@contextlib.contextmanager
def folded(model: Any) -> Iterator[Any]:
    """Within the block, every call of `model` (fit's training step, predict, evaluate, and a
    model wrapping it) runs folded; afterwards it is the plain model again. What the model
    saves (its config and weights) is the same inside and outside. A model whose BatchNorm
    layers all train is left as it is (nothing would fold in its training step)."""
    if not can_fold(model, training=True):
        yield model
        return
    plans: dict = {}

    def call(inputs: Any, training: Any = None, mask: Any = None, **_: Any) -> Any:
        return _run(model, inputs, bool(training), plans)

    model.call = call
    try:
        yield model
    finally:
        del model.call  # the class's own call again


def folded_forward(model: Any) -> Callable[[Any], Any]:
    """A function of a batch computing `model(batch, training=False)` with the pairs folded
    (to trace inside a tf.function)."""
    plans: dict = {}

    def forward(x: Any) -> Any:
        return _run(model, x, False, plans)

    def plain(x: Any) -> Any:
        return model(x, training=False)

    return forward if can_fold(model) else plain
