"""Every custom Keras layer of fra_keras through `run_layer_test` (tests/harness.py): output shapes,
`get_config` round trip, `.keras` reload, mixed precision; and a check that no registered layer of the
package is missing from the list. The layers' maths is checked against NumPy in
tests/test_heads_decoder.py and tests/test_downstream.py.
"""

from __future__ import annotations

import importlib

import keras
import pytest
from harness import run_layer_test

from fra_keras.downstream.heads import SoftArgmax2D
from fra_keras.models.backbone import CircularPadding2D
from fra_keras.models.heads import MLPHead
from fra_keras.models.mask_decoder import DecoderLayer, MaskDecoder, TokenAttention
from fra_keras.models.neck import FRANeck
from fra_keras.models.normalization import BatchNormalization

B = 2
NECK = dict(hidden_dim=10, proj_dim=8, num_regions=3, decoder_dim=8, decoder_heads=2, decoder_layers=1,
            decoder_ffn_dim=6, decoder_dropout=0.2, heatmap_scale=0.5, bn_momentum=0.8, bn_epsilon=1e-4,
            decoder_query_content=True)
# Under mixed precision the neck's projections compute in float16; the heatmap maths (the batch-mean mask
# embeddings, logits and attention) is float32 (tests/test_precision_xla.py checks it in a training step).
NECK_MIXED = dict(z="float16", pixel="float16", masks="float16", mask_mean="float32", logits="float32",
                  attention="float32", regions="float16")

# (id, layer class, constructor kwargs, input shape(s), expected output shape(s), mixed_float16 dtypes)
CASES = [
    ("mlp_vectors", MLPHead, dict(hidden_dim=6, output_dim=5, bn_momentum=0.8, bn_epsilon=1e-3),
     (B, 7), (B, 5), None),
    ("mlp_pixels", MLPHead, dict(hidden_dim=6, output_dim=5, synchronized=True), (B, 3, 4, 7), (B, 3, 4, 5), None),
    ("token_attention", TokenAttention, dict(num_heads=2, key_dim=3, dropout=0.2, seed=5),
     [(B, 3, 5), (B, 4, 7), (B, 4, 6)], (B, 3, 5), None),
    ("decoder_layer", DecoderLayer, dict(dim=8, num_heads=4, ffn_dim=5, dropout=0.2),
     [(B, 3, 8), (B, 6, 8), (B, 6, 8), (B, 3, 8)], (B, 3, 8), None),
    ("mask_decoder", MaskDecoder, dict(num_queries=3, dim=8, num_heads=2, num_layers=2, ffn_dim=6, dropout=0.3,
                                       query_content=True), (B, 3, 4, 12), (B, 3, 8), None),
    ("neck", FRANeck, NECK, (B, 3, 4, 12),
     dict(z=(B, 8), pixel=(B, 3, 4, 8), masks=(B, 3, 8), mask_mean=(3, 8), logits=(B, 3, 4, 3),
          attention=(B, 3, 4, 3), regions=(B, 3, 8)), NECK_MIXED),
    ("neck_byol", FRANeck, dict(NECK, region_branch=False, synchronized=True), (B, 3, 4, 12), dict(z=(B, 8)), None),
    ("batchnorm_fused", BatchNormalization, dict(momentum=0.8, epsilon=1e-3), (B, 3, 4, 5), (B, 3, 4, 5), None),
    ("batchnorm_unfused", BatchNormalization, dict(fused=False, synchronized=True, center=False), (B, 5),
     (B, 5), None),
    ("circular_padding", CircularPadding2D, dict(padding=2), (B, 3, 4, 5), (B, 7, 8, 5), None),
    # SoftArgmax2D computes in float32 whatever the policy (its docstring).
    ("soft_argmax", SoftArgmax2D, dict(), (B, 4, 5, 3), ((B, 3, 2), (B, 4, 5, 3)), ("float32", "float32")),
    ("soft_argmax_offsets", SoftArgmax2D, dict(offsets=True), (B, 4, 5, 9), ((B, 3, 2), (B, 4, 5, 3)),
     ("float32", "float32")),
]

# Registered keras.Model subclasses are whole models, not layers: each has its own save / load test.
MODELS_TESTED_ELSEWHERE = {
    "FRA": "tests/test_fra_model.py::test_keras_save_and_load",
    "ExpressionClassifier": "tests/test_downstream.py::test_keras_round_trip",
    "AttributeClassifier": "tests/test_downstream.py::test_keras_round_trip",
    "LandmarkRegressor": "tests/test_downstream.py::test_keras_round_trip",
}


@pytest.mark.parametrize("layer_cls, kwargs, input_shapes, expected, mixed_dtypes",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_layer(layer_cls, kwargs, input_shapes, expected, mixed_dtypes):
    run_layer_test(layer_cls, kwargs, input_shapes, expected, mixed_output_dtypes=mixed_dtypes)


def _registered_layers():
    """{class name: class} of every layer class registered under the `fra_keras` package."""
    import keras

    import fra_keras

    for module in fra_keras.SERIALIZABLE_MODULES:
        importlib.import_module(module)
    registered = keras.saving.get_custom_objects()
    return {key.split(">", 1)[1]: cls for key, cls in registered.items()
            if key.startswith("fra_keras>") and isinstance(cls, type) and issubclass(cls, keras.layers.Layer)}


def test_every_registered_layer_is_tested():
    import keras

    layers = _registered_layers()
    models = {n for n, cls in layers.items() if issubclass(cls, keras.Model)}
    tested = {c[1].__name__ for c in CASES}
    assert {"MLPHead", "FRANeck", "SoftArgmax2D", "FRA"} <= set(layers)   # the walk does find them
    assert set(layers) - models - tested == set(), "registered layers without a run_layer_test case"
    assert models - set(MODELS_TESTED_ELSEWHERE) == set(), "registered models not listed in MODELS_TESTED_ELSEWHERE"


# The harness itself: layers with the faults it exists to catch ---------------------------------------
class _ForgetfulScale(keras.layers.Layer):
    """get_config drops `factor`."""

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = float(factor)

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {k: v for k, v in super().get_config().items() if k != "factor"}


@keras.saving.register_keras_serializable(package="fra_keras_tests")
class _Float32Inside(keras.layers.Layer):
    """Its Dense sub-layer ignores the layer's dtype policy."""

    def __init__(self, units=3, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.dense = keras.layers.Dense(self.units)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        return self.dense(x)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@pytest.mark.parametrize("layer_cls, kwargs, expected, message", [
    (_ForgetfulScale, dict(factor=2.0), (B, 3), "lacks __init__ arguments \\['factor'\\]"),
    (_Float32Inside, dict(units=2), (B, 2), 'dense.*DTypePolicy "float32"'),
    (_Float32Inside, dict(units=2), (B, 3), "\\(2, 2\\), \\(2, 3\\)"),      # a wrong expected shape
])
def test_harness_catches_broken_layers(layer_cls, kwargs, expected, message):
    with pytest.raises(AssertionError, match=message):
        run_layer_test(layer_cls, kwargs, (B, 3), expected)
