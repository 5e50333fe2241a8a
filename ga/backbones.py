"""The backbone families: what each needs to be built, fed and fine-tuned (no Keras import).

Each pretrained family comes from `keras.applications` without its own preprocessing layer
(`include_preprocessing=False`): the model's `ga.layers.Preprocess` layer does that job in
the family's mode, so every exported file (Keras, ONNX, SavedModel) takes RGB pixels 0-255.

The study's rule "the last 10% of backbone layers train" (`model.trainable_fraction`) is
kept as a count of layers for ResNet and CNN-4 (the study's exact cut). For the families
built of repeated blocks (EfficientNetV2's MBConv blocks, MobileNetV3's inverted residuals,
ConvNeXt's blocks) the cut is moved back to the start of the block it falls in, so no block
is left half frozen. BatchNorm layers of EfficientNetV2 and MobileNetV3 stay frozen (in
inference mode) when the weights are pretrained, as keras-io's EfficientNet fine-tuning
guide prescribes for small batches; ConvNeXt normalises with LayerNorm, which has no
running statistics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """One backbone: its keras.applications builder, the Preprocess mode its weights expect,
    its default input size, its ImageNet weights file (no top), and its fine-tuning rules."""

    builder: str  # attribute of keras.applications (None: built here)
    preprocessing: str  # ga.layers.Preprocess mode
    size: int  # the family's default input size (square)
    weights_file: str  # Keras's cache name of the ImageNet weights without the top
    family: str  # the family a weights file is recognised as
    block: str | None = None  # regex of a layer name's block prefix: the cut snaps to whole blocks
    freeze_bn_pretrained: bool = False  # BatchNorm stays frozen when the weights are pretrained
    options: tuple = ()  # extra keyword arguments of the builder
    # training.mixed_precision auto may train it in bfloat16 on a CPU with bfloat16 units;
    # False where that was measured slower than float32 (docs/benchmarks.md, Backbones)
    bf16_on_cpu: bool = True

    @property
    def pretrained(self) -> bool:
        return bool(self.weights_file)


_EFF = dict(preprocessing="torch", family="efficientnetv2", block=r"^(block\d+[a-z])_", freeze_bn_pretrained=True,
            options=(("include_preprocessing", False),))
# MobileNetV3 in mixed_bfloat16 on a CPU (AMX-BF16): training 0.64x and inference 0.64-0.73x
# float32, its depthwise convolutions and hard-swish gaining nothing from the matrix units
_MOB = dict(preprocessing="tf", family="mobilenetv3", block=r"^(expanded_conv(?:_\d+)?)_", freeze_bn_pretrained=True,
            options=(("include_preprocessing", False),), bf16_on_cpu=False)

BACKBONES: dict[str, Family] = {
    "resnet50": Family("ResNet50", "resnet_caffe", 224, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                       "resnet"),
    "resnet101": Family("ResNet101", "resnet_caffe", 224, "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
                        "resnet"),
    "resnet152": Family("ResNet152", "resnet_caffe", 224, "resnet152_weights_tf_dim_ordering_tf_kernels_notop.h5",
                        "resnet"),
    "efficientnetv2_b0": Family("EfficientNetV2B0", size=224, weights_file="efficientnetv2-b0_notop.h5", **_EFF),
    "efficientnetv2_b1": Family("EfficientNetV2B1", size=240, weights_file="efficientnetv2-b1_notop.h5", **_EFF),
    "efficientnetv2_b2": Family("EfficientNetV2B2", size=260, weights_file="efficientnetv2-b2_notop.h5", **_EFF),
    "efficientnetv2_b3": Family("EfficientNetV2B3", size=300, weights_file="efficientnetv2-b3_notop.h5", **_EFF),
    # EfficientNetV2-S/M/L scale to [-1, 1] (x / 128 - 1), the B variants normalise like torchvision.
    "efficientnetv2_s": Family("EfficientNetV2S", size=384, weights_file="efficientnetv2-s_notop.h5",
                               **{**_EFF, "preprocessing": "tf128"}),
    "convnext_tiny": Family("ConvNeXtTiny", "torch", 224, "convnext_tiny_notop.h5", "convnext",
                            block=r"^(convnext_tiny_stage_\d+_block_\d+)_", options=(("include_preprocessing", False),)),
    "mobilenetv3_small": Family("MobileNetV3Small", size=224,
                                weights_file="weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5", **_MOB),
    "mobilenetv3_large": Family("MobileNetV3Large", size=224,
                                weights_file="weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5", **_MOB),
    "cnn4": Family("", "scale_01", 224, "", "cnn4"),
}


def family_of(backbone: str) -> Family:
    """The Family of a `model.backbone` name."""
    return BACKBONES[backbone]


def snapped_cut(layers: list[tuple[str, bool]], cut: int, block: str | None) -> int:
    """Move the index of the first trainable layer back to the first layer of its block, so
    a block trains whole.

    Args:
        layers: (name, has weights) of each backbone layer, in order.
        cut: the index of the first trainable layer by count.
        block: the regex of a layer name's block prefix; None leaves `cut` as it is.
    """
    if block is None or not 0 < cut < len(layers):
        return cut
    pattern = re.compile(block)

    def block_of(i):
        m = pattern.match(layers[i][0])
        return m.group(1) if m else None

    # A weightless layer outside any named block (an add, multiply or activation Keras names
    # generically) belongs to the block before it; a layer with weights outside blocks (a stem
    # or top convolution) stands alone.
    i = cut
    while i > 0 and block_of(i) is None and not layers[i][1]:
        i -= 1
    current = block_of(i)
    if current is None:
        return cut
    while cut > 0:
        prev = block_of(cut - 1)
        if prev is not None and prev != current:
            break
        if prev is None and layers[cut - 1][1]:
            break
        cut -= 1
    return cut


# The first convolution of each family, (kernel size, filters), on its 3 input channels: what a
# weights file of the family holds whatever its format (layer names or, in Keras 3's
# .weights.h5, generic object paths).
_STEMS = {(7, 64): "resnet", (3, 32): "efficientnetv2", (3, 40): "efficientnetv2", (3, 24): "efficientnetv2",
          (3, 16): "mobilenetv3", (4, 96): "convnext", (5, 32): "cnn4"}


def weights_family(kernel_shapes: list[tuple[int, ...]]) -> str | None:
    """The family a weights file belongs to, from the shapes of the 4-D kernels it holds
    (the one convolution reading 3 channels is the stem), or None when none fits."""
    for shape in kernel_shapes:
        if len(shape) == 4 and shape[2] == 3 and shape[0] == shape[1]:
            found = _STEMS.get((int(shape[0]), int(shape[3])))
            if found:
                return found
    return None
