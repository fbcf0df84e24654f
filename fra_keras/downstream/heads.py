"""Task heads on a backbone feature map (docs/method.md, "Downstream protocols").

Every head is a functional `keras.Model` whose input is the backbone FEATURE MAP (B, h, w, C) (any h, w)
and whose output is a dict of named tensors, so that a head can be saved alone (`head.keras`) and
composed with any backbone of the same width (`python -m fra_keras.export --head head.keras`):

==================  ===============================================================================
head                outputs
==================  ===============================================================================
expression          ``expression_logits`` (B, classes), ``expression_probabilities`` (softmax)
attributes          ``attribute_logits`` (B, 40), ``attribute_probabilities`` (sigmoid)
landmarks           ``landmarks`` (B, P, 2) normalised (u, v) in [0, 1]: pixel x = u * W - 0.5,
                    y = v * H - 0.5 (u = 0 is the left edge of the image, u = 1 the right edge);
                    ``landmark_heatmaps`` (B, h', w', P) spatial softmax
==================  ===============================================================================

* expression: global average pooling -> BatchNorm without scale / offset (feature standardisation, a
  fixed affine map at inference, so the probe stays linear; MAE's linear-probe trick that makes
  backbones of very different feature scales comparable) -> optional dropout -> Dense(classes).
* attributes: global average pooling -> the reference's `AttNeck` (docs/method.md, "Downstream
  protocols"): Dense 512, BN, Dropout 0.2, ReLU, Dense 256, BN, Dropout 0.2, ReLU, Dense 40 (input
  width = backbone channels, 2048 for ResNet-50).
* landmarks: integral (soft-argmax) regression, chosen for a stride-16/32 map: standardising BN ->
  optional 3x3 conv + ReLU (`hidden`, 0 = linear) -> bilinear upsampling by `upsample` -> 1x1 conv to one
  logit map per point -> spatial softmax -> expected position of each point (`SoftArgmax2D`). The
  expectation over a coarse grid still gives sub-cell positions, and unlike flatten + Dense it keeps
  translation equivariance, has few parameters and works at any input size.

The only custom layer, `SoftArgmax2D`, is registered (`fra_keras>SoftArgmax2D`): loading a landmark
head needs `import fra_keras.downstream` first (Keras only imports its own modules on load).
"""

from __future__ import annotations

import keras
from keras import layers, ops

EXPRESSION_OUTPUT = "expression_logits"
ATTRIBUTE_OUTPUT = "attribute_logits"
LANDMARK_OUTPUT = "landmarks"
NUM_ATTRIBUTES = 40


@keras.saving.register_keras_serializable(package="fra_keras")
class SoftArgmax2D(layers.Layer):
    """(B, h, w, P) logits [and (B, h, w, 2P) offsets] -> expected normalised position of each point.

    Without offsets: (u, v) = sum over cells of softmax(logits) * cell centre ((i + 0.5) / w, ...).
    With offsets (`offsets=True`, input = concat(logits, offsets) with 3P channels): each cell also
    votes for a position relative to its centre, in cell units: (u, v) = sum p * (centre + offset /
    (w, h)). Offsets give sub-cell precision while the output stays linear in the features per cell.
    Returns (coordinates (B, P, 2) as (u, v), probabilities (B, h, w, P)). Computed in float32.
    """

    def __init__(self, offsets=False, **kwargs):
        super().__init__(**kwargs)
        self.offsets = bool(offsets)

    def call(self, inputs):
        inputs = ops.cast(inputs, "float32")
        shape = ops.shape(inputs)
        b, h, w = shape[0], shape[1], shape[2]
        p = shape[3] // 3 if self.offsets else shape[3]
        logits = inputs[..., :p]
        prob = ops.softmax(ops.reshape(logits, (b, h * w, p)), axis=1)             # (B, hw, P)
        hf, wf = ops.cast(h, "float32"), ops.cast(w, "float32")
        ys = (ops.cast(ops.arange(h), "float32") + 0.5) / hf
        xs = (ops.cast(ops.arange(w), "float32") + 0.5) / wf
        grid_y = ops.reshape(ops.repeat(ys[:, None], w, axis=1), (1, h * w, 1))
        grid_x = ops.reshape(ops.repeat(xs[None, :], h, axis=0), (1, h * w, 1))
        if self.offsets:
            off = ops.reshape(inputs[..., p:], (b, h * w, p, 2))
            grid_x = grid_x + off[..., 0] / wf
            grid_y = grid_y + off[..., 1] / hf
        u = ops.sum(prob * grid_x, axis=1)
        v = ops.sum(prob * grid_y, axis=1)
        return ops.stack([u, v], axis=-1), ops.reshape(prob, (b, h, w, p))

    def compute_output_shape(self, input_shape):
        p = input_shape[3] // 3 if self.offsets and input_shape[3] is not None else input_shape[3]
        return (input_shape[0], p, 2), (input_shape[0], input_shape[1], input_shape[2], p)

    def get_config(self):
        config = super().get_config()
        config["offsets"] = self.offsets
        return config


def _check_channels(channels):
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels={channels!r} must be the backbone's positive channel count")


def _standardize(name):
    # Non-affine BN: (x - mean) / std with statistics of the training features.
    return layers.BatchNormalization(center=False, scale=False, epsilon=1e-5, name=name)


def build_expression_head(channels: int, num_classes: int = 7, dropout: float = 0.0,
                          name: str = "expression_head") -> keras.Model:
    """Feature map (B, h, w, C) -> {expression_logits, expression_probabilities}."""
    _check_channels(channels)
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r} must be >= 2")
    features = keras.Input((None, None, channels), name="feature_map")
    x = layers.GlobalAveragePooling2D(name="pool")(features)
    x = _standardize("standardize")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    # The reference re-initialises the classifier N(0, 0.01) with bias 0 (main_fer.py).
    logits = layers.Dense(num_classes, kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01),
                          name="classifier")(x)
    probs = layers.Softmax(name="probabilities")(logits)
    return keras.Model(features, {EXPRESSION_OUTPUT: logits, "expression_probabilities": probs}, name=name)


def build_attribute_head(channels: int, num_attributes: int = NUM_ATTRIBUTES, dropout: float = 0.2,
                         name: str = "attribute_head") -> keras.Model:
    """Feature map -> {attribute_logits, attribute_probabilities}: the C-512-256-40 `AttNeck`."""
    _check_channels(channels)
    features = keras.Input((None, None, channels), name="feature_map")
    x = layers.GlobalAveragePooling2D(name="pool")(features)
    for i, width in enumerate((512, 256), start=1):
        x = layers.Dense(width, name=f"fc{i}")(x)
        x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"bn{i}")(x)
        x = layers.Dropout(dropout, name=f"dropout{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
    logits = layers.Dense(num_attributes, name="classifier")(x)
    probs = layers.Activation("sigmoid", name="probabilities")(logits)
    return keras.Model(features, {ATTRIBUTE_OUTPUT: logits, "attribute_probabilities": probs}, name=name)


def build_landmark_head(channels: int, num_points: int = 68, hidden: int = 0, upsample: int = 1,
                        offsets: bool = True, name: str = "landmark_head") -> keras.Model:
    """Feature map -> {landmarks (B, P, 2) normalised, landmark_heatmaps (B, h*upsample, w*upsample, P)}."""
    _check_channels(channels)
    if num_points < 1:
        raise ValueError(f"num_points={num_points!r} must be >= 1")
    if upsample < 1:
        raise ValueError(f"upsample={upsample!r} must be >= 1")
    features = keras.Input((None, None, channels), name="feature_map")
    x = _standardize("standardize")(features)
    if hidden:
        x = layers.Conv2D(hidden, 3, padding="same", activation="relu", name="hidden")(x)
    if upsample > 1:
        x = layers.UpSampling2D(upsample, interpolation="bilinear", name="upsample")(x)
    outputs = num_points * (3 if offsets else 1)
    logits = layers.Conv2D(outputs, 1, kernel_initializer="zeros", name="point_logits")(x)
    coords, heatmaps = SoftArgmax2D(offsets=offsets, name="soft_argmax")(logits)
    return keras.Model(features, {LANDMARK_OUTPUT: coords, "landmark_heatmaps": heatmaps}, name=name)
