"""ResNet-18/34/50/101 feature extractors in the torchvision layout.

Formulas: docs/method.md, "Backbone"; library facts: docs/stack.md, "Backbones".

Why not `keras.applications.ResNet50`: it is ResNet v1 (stride in the first 1x1 conv of a bottleneck),
has conv biases and BN epsilon 1.001e-5. FRA uses torchvision's v1.5 (stride in the 3x3 conv), no conv
biases, BN eps 1e-5 and PyTorch momentum 0.1 (= Keras 0.9), no final pooling / fc: the output is the
(B, h, w, C) feature map. The ResNet-50 trunk has 23,508,032 parameters, like torchvision's without fc.

PyTorch pads stride-2 convolutions symmetrically (pad 3 for the 7x7/2 stem, 1 for 3x3/2), which differs
from Keras "same" padding; explicit `ZeroPadding2D` layers reproduce it. The max-pool pads with zeros,
which equals PyTorch's -inf padding because its input is post-ReLU (>= 0).

`output_stride` 16 / 8 replaces the stride of the last one / two stages by dilation, like torchvision's
`replace_stride_with_dilation`. torchvision refuses dilation in BasicBlock (ResNet-18/34); we allow it
(dilated 3x3 convs) so that small CPU models can have a finer heatmap grid -- a documented extension.

`padding="circular"` (opt-in, `FRAConfig.backbone_padding`) pads every convolution and the max-pool
with the opposite border of the map instead of zeros. Zero padding lets a CNN read absolute position
from the borders (Islam et al., "How much position information do convolutional neural networks
encode?", ICLR 2020, https://arxiv.org/abs/2001.08248); with circular padding, and sides divisible by
the output stride, the trunk is exactly equivariant to circular shifts by multiples of the output
stride, so its features cannot depend on where a pixel is, only on the content around it. Why the region
recipe wants that: docs/method.md, "Region recipes".

Layer names follow torchvision (`layer2_0_conv2`, `layer2_0_downsample_bn`, ...) with `_` for `.`, so
BatchNorm layers contain "bn" as in the reference, which LARS uses to exclude them (optimizers.py).
"""

from __future__ import annotations

import keras
from keras import layers

from fra_keras.config import FRAConfig
from fra_keras.models.normalization import BatchNormalization

_DEPTHS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}


def conv_initializer():
    """torchvision ResNet init: kaiming_normal_(mode="fan_out", nonlinearity="relu")."""
    return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


PADDINGS = ("zeros", "circular")


@keras.saving.register_keras_serializable(package="fra_keras")
class CircularPadding2D(layers.Layer):
    """Pad (B, H, W, C) maps by `padding` pixels on each side with the opposite border (wrap-around).

    The same as `numpy.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="wrap")` for p <= min(H, W):
    (B, H, W, C) -> (B, H + 2p, W + 2p, C).
    """

    def __init__(self, padding: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.padding = int(padding)
        if self.padding < 1:
            raise ValueError(f"padding={padding!r} must be a positive number of pixels")

    def call(self, x):
        p = self.padding
        x = keras.ops.concatenate([x[:, -p:], x, x[:, :p]], axis=1)
        return keras.ops.concatenate([x[:, :, -p:], x, x[:, :, :p]], axis=2)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        grow = lambda n: None if n is None else n + 2 * self.padding  # noqa: E731
        return (b, grow(h), grow(w), c)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


class _Builder:
    """Holds the normalisation and padding settings while the functional graph is built."""

    def __init__(self, bn_momentum, bn_epsilon, synchronized, padding="zeros", fused_batchnorm=True):
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self.synchronized = synchronized
        self.padding = padding
        self.fused_batchnorm = fused_batchnorm

    def pad(self, x, pad, name):
        """Explicit padding of `pad` pixels: zeros (PyTorch's) or wrap-around (`padding="circular"`)."""
        if self.padding == "circular":
            return CircularPadding2D(pad, name=name)(x)
        return layers.ZeroPadding2D(pad, name=name)(x)

    def conv(self, x, filters, kernel, stride, dilation, name):
        pad = dilation * (kernel - 1) // 2
        if pad and (stride > 1 or self.padding == "circular"):
            x = self.pad(x, pad, f"{name}_pad")
            padding = "valid"
        else:
            padding = "same" if pad else "valid"   # stride 1: "same" == symmetric PyTorch padding
        return layers.Conv2D(filters, kernel, strides=stride, padding=padding, dilation_rate=dilation,
                             use_bias=False, kernel_initializer=conv_initializer(), name=name)(x)

    def bn(self, x, name):
        return BatchNormalization(axis=-1, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                                  synchronized=self.synchronized, fused=self.fused_batchnorm, name=name)(x)

    def basic_block(self, x, planes, stride, dilation, prev_dilation, downsample, name):
        identity = x
        out = self.conv(x, planes, 3, stride, prev_dilation, f"{name}_conv1")
        out = layers.ReLU(name=f"{name}_relu1")(self.bn(out, f"{name}_bn1"))
        out = self.conv(out, planes, 3, 1, dilation, f"{name}_conv2")
        out = self.bn(out, f"{name}_bn2")
        if downsample:
            identity = self.conv(x, planes, 1, stride, 1, f"{name}_downsample_conv")
            identity = self.bn(identity, f"{name}_downsample_bn")
        out = layers.Add(name=f"{name}_add")([out, identity])
        return layers.ReLU(name=f"{name}_out")(out)

    def bottleneck(self, x, planes, stride, dilation, prev_dilation, downsample, name):
        identity = x
        out = self.conv(x, planes, 1, 1, 1, f"{name}_conv1")
        out = layers.ReLU(name=f"{name}_relu1")(self.bn(out, f"{name}_bn1"))
        # v1.5: the stride sits on the 3x3 conv; the first block of a dilated stage keeps the
        # previous dilation (torchvision's `previous_dilation`).
        out = self.conv(out, planes, 3, stride, prev_dilation, f"{name}_conv2")
        out = layers.ReLU(name=f"{name}_relu2")(self.bn(out, f"{name}_bn2"))
        out = self.conv(out, planes * 4, 1, 1, 1, f"{name}_conv3")
        out = self.bn(out, f"{name}_bn3")
        if downsample:
            identity = self.conv(x, planes * 4, 1, stride, 1, f"{name}_downsample_conv")
            identity = self.bn(identity, f"{name}_downsample_bn")
        out = layers.Add(name=f"{name}_add")([out, identity])
        return layers.ReLU(name=f"{name}_out")(out)


def resnet(depth="resnet50", width=64, output_stride=32, bn_momentum=0.9, bn_epsilon=1e-5,
           synchronized=False, input_shape=(None, None, 3), name="backbone", padding="zeros",
           fused_batchnorm=True):
    """Build a torchvision-layout ResNet trunk as a functional `keras.Model`.

    Args:
      depth: "resnet18" | "resnet34" | "resnet50" | "resnet101".
      width: channels of the stem and first stage (64 in torchvision); stages use width * (1, 2, 4, 8).
      output_stride: 32, 16 or 8 (dilation replaces the stride of the last stages).
      synchronized: SyncBN across replicas (`--norm SyncBN` of the reference) when distributed.
      padding: "zeros" (torchvision) or "circular" (wrap-around; see the module docstring).
      fused_batchnorm: training-mode BatchNorm through TF's fused kernel (models/normalization.py).
    Returns: Model mapping normalised images (B, H, W, 3) to the feature map (B, H/s, W/s, C), with
      C = 8 * width * (4 for bottleneck nets, 1 otherwise).
    """
    if depth not in _DEPTHS:
        raise ValueError(f"depth={depth!r} is not a known ResNet; choose one of {sorted(_DEPTHS)}")
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride={output_stride!r} must be 8, 16 or 32")
    if padding not in PADDINGS:
        raise ValueError(f"padding={padding!r} must be one of {PADDINGS}")
    block_type, counts = _DEPTHS[depth]
    builder = _Builder(bn_momentum, bn_epsilon, synchronized, padding, fused_batchnorm)
    block = builder.basic_block if block_type == "basic" else builder.bottleneck
    expansion = 1 if block_type == "basic" else 4
    dilate = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}[output_stride]

    images = keras.Input(shape=input_shape, name="images")
    x = builder.pad(images, 3, "conv1_pad")
    x = layers.Conv2D(width, 7, strides=2, use_bias=False, kernel_initializer=conv_initializer(),
                      name="conv1")(x)
    x = layers.ReLU(name="relu")(builder.bn(x, "bn1"))
    x = builder.pad(x, 1, "maxpool_pad")   # zeros == PyTorch's -inf here: the input is post-ReLU
    x = layers.MaxPooling2D(3, strides=2, name="maxpool")(x)

    in_channels = width
    dilation = 1
    for stage, count in enumerate(counts):
        planes = width * 2 ** stage
        stride = 1 if stage == 0 else 2
        prev_dilation = dilation
        if stage > 0 and dilate[stage - 1]:
            dilation *= stride
            stride = 1
        for i in range(count):
            s = stride if i == 0 else 1
            pd = prev_dilation if i == 0 else dilation
            downsample = i == 0 and (s != 1 or in_channels != planes * expansion)
            x = block(x, planes, s, dilation, pd, downsample, f"layer{stage + 1}_{i}")
            in_channels = planes * expansion
    return keras.Model(images, x, name=name)


def build_backbone(config: FRAConfig, name="backbone", synchronized=None):
    """The backbone described by a `FRAConfig` (depth, width, output stride, BN settings)."""
    sync = config.sync_batchnorm if synchronized is None else synchronized
    return resnet(config.backbone, width=config.backbone_width, output_stride=config.output_stride,
                  bn_momentum=config.bn_momentum, bn_epsilon=config.bn_epsilon, synchronized=sync,
                  name=name, padding=config.backbone_padding, fused_batchnorm=config.fused_batchnorm)


def load_backbone(path: str, config: FRAConfig | None = None):
    """Load a pre-trained backbone.

    `path` may be a `backbone.weights.h5` written by pre-training (the run's `config.json` next to it
    gives the architecture unless `config` is passed) or a full `model.keras` (the online backbone is
    returned).
    """
    import os

    if not os.path.exists(path):
        raise FileNotFoundError(f"path={path!r} does not exist; expected a model.keras or backbone.weights.h5")
    if path.endswith(".keras"):
        import fra_keras.models.fra  # noqa: F401  (registers FRA and its layers for deserialisation)

        model = keras.saving.load_model(path)
        if not hasattr(model, "backbone"):
            raise ValueError(f"path={path!r} is a Keras model without a `backbone` attribute")
        return model.backbone
    if path.endswith(".weights.h5"):
        if config is None:
            cfg_path = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
            if not os.path.isfile(cfg_path):
                raise ValueError(f"path={path!r}: no config.json beside it; pass config=FRAConfig(...)")
            config = FRAConfig.from_json(cfg_path)
        backbone = build_backbone(config, synchronized=False)
        backbone.load_weights(path)
        return backbone
    raise ValueError(f"path={path!r} must end in .keras or .weights.h5")
