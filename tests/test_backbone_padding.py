"""Circular padding of the backbone (opt-in `backbone_padding="circular"`) against NumPy."""

import numpy as np
import pytest

from fra_keras.config import ConfigError, FRAConfig
from fra_keras.models.backbone import CircularPadding2D, resnet


def test_circular_padding_equals_numpy_wrap():
    x = np.random.default_rng(0).standard_normal((2, 5, 7, 3)).astype("float32")
    for p in (1, 3):
        out = np.asarray(CircularPadding2D(p)(x))
        np.testing.assert_array_equal(out, np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="wrap"))
    with pytest.raises(ValueError, match="padding=0"):
        CircularPadding2D(0)


@pytest.mark.parametrize("padding, equivariant", [("circular", True), ("zeros", False)])
def test_circular_trunk_is_equivariant_to_shifts_by_the_output_stride(padding, equivariant):
    """Shifting the image circularly by 16 px shifts a stride-16 feature map by one cell -- exactly with
    circular padding; zero padding breaks it at the borders (absolute position leaks in)."""
    import keras

    keras.utils.set_random_seed(0)
    net = resnet("resnet18", width=8, output_stride=16, padding=padding)
    x = np.random.default_rng(1).standard_normal((1, 64, 64, 3)).astype("float32")
    shifted = np.roll(x, (16, 32), axis=(1, 2))
    f = np.asarray(net(x, training=False))
    f_shifted = np.asarray(net(shifted, training=False))
    assert f.shape == (1, 4, 4, 64)
    expected = np.roll(f, (1, 2), axis=(1, 2))
    err = np.abs(f_shifted - expected).max() / np.abs(f).max()
    if equivariant:
        assert err < 1e-5
    else:
        assert err > 1e-2


def test_config_rejects_unknown_padding():
    with pytest.raises(ConfigError, match="backbone_padding='reflect'"):
        FRAConfig.from_preset("tiny", backbone_padding="reflect").validate()
    assert FRAConfig.from_preset("paper").backbone_padding == "zeros"
