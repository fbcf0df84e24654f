"""The one serving contract (issue 12, item 2): `fra_keras.preprocessing.normalize_images` and
`losses.region_heatmaps`, each against NumPy, and its users: every caller gives the same numbers."""

import numpy as np
import pytest

from fra_keras.config import FRAConfig

MEAN = np.array([0.5231, 0.4044, 0.3489])    # VGGFace2, as in the official code (docs/method.md)
STD = np.array([0.2536, 0.2194, 0.2070])


def _images(seed=0, shape=(2, 5, 7, 3)):
    return np.random.RandomState(seed).randint(0, 256, shape).astype(np.uint8)


def test_defaults_are_the_vggface2_statistics_of_the_config():
    from fra_keras import preprocessing

    np.testing.assert_array_equal(preprocessing.VGGFACE2_MEAN, MEAN)
    np.testing.assert_array_equal(preprocessing.VGGFACE2_STD, STD)
    config = FRAConfig()
    assert tuple(config.mean) == preprocessing.VGGFACE2_MEAN and tuple(config.std) == preprocessing.VGGFACE2_STD


@pytest.mark.parametrize("kind", ["uint8", "float32 0-255", "float64 0-1"])
def test_normalize_images_matches_numpy(kind):
    from fra_keras.preprocessing import normalize_images

    images = _images()
    ref = (images / 255.0 - MEAN) / STD                         # float64 NumPy
    if kind == "uint8":
        out = normalize_images(images)
    elif kind == "float32 0-255":
        out = normalize_images(images.astype(np.float32))
    else:
        out = normalize_images(images / 255.0, max_value=1.0)
    assert out.dtype.name == "float32" and out.shape == images.shape
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=2e-6)


def test_normalize_images_takes_other_statistics():
    from fra_keras.preprocessing import normalize_images

    images = _images(1)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    ref = (images / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(normalize_images(images, mean, std).numpy(), ref, atol=2e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(std=(0.2, 0.2)), "one number per channel"),
    (dict(std=(0.2, 0.0, 0.2)), "std > 0"),
    (dict(mean="abc"), "mean='abc'"),
    (dict(max_value=0), "max_value=0"),
    (dict(max_value="x"), "max_value='x'"),
])
def test_normalize_images_bad_arguments_give_one_line(kwargs, message):
    from fra_keras.preprocessing import normalize_images

    with pytest.raises(ValueError, match=message) as info:
        normalize_images(_images(), **kwargs)
    assert "\n" not in str(info.value)


def test_resize_images_is_bilinear_half_pixel_on_the_input_scale():
    import tensorflow as tf

    from fra_keras.preprocessing import resize_images

    images = _images(2, (1, 4, 4, 3))
    out = resize_images(images, 2).numpy()
    # Halving with half-pixel centres samples at pixel corners 1 and 3 (0.5-based): the mean of 2x2 blocks.
    blocks = images.astype(np.float64).reshape(1, 2, 2, 2, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(out, blocks, atol=1e-4)
    assert out.dtype == np.float32 and resize_images(tf.zeros([2, 3, 5, 3], tf.uint8), 6).shape == (2, 6, 6, 3)
    with pytest.raises(ValueError, match="size=0"):
        resize_images(images, 0)


def test_augment_normalize_is_the_contract_on_0_1_floats():
    """`fra_keras.data.normalize` (the pipeline's name) = normalize_images with max_value=1."""
    from fra_keras.data import augment
    from fra_keras.preprocessing import normalize_images

    config = FRAConfig.from_preset("tiny")
    images = _images(3)
    np.testing.assert_array_equal(augment.normalize(images, config).numpy(), normalize_images(images).numpy())
    np.testing.assert_array_equal(augment.normalize(images / 255.0, config).numpy(),
                                  normalize_images(images / 255.0, max_value=1.0).numpy())


def _np_heatmaps(pixel, masks, scale):
    p = pixel / np.maximum(np.linalg.norm(pixel, axis=-1, keepdims=True), 1e-12)
    m = masks / np.maximum(np.linalg.norm(masks, axis=-1, keepdims=True), 1e-12)
    logits = np.einsum("bhwd,kd->bhwk", p, m) if m.ndim == 2 else np.einsum("bhwd,bkd->bhwk", p, m)
    z = logits / scale
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True) + 1e-7, logits


@pytest.mark.parametrize("shared_masks", [True, False])
def test_region_heatmaps_match_numpy(shared_masks):
    from fra_keras import losses

    rng = np.random.RandomState(4)
    pixel = rng.normal(size=(2, 3, 4, 6))
    masks = rng.normal(size=(5, 6) if shared_masks else (2, 5, 6))
    ref, ref_logits = _np_heatmaps(pixel, masks, 0.5)
    heatmaps, logits = losses.region_heatmaps(pixel, masks, 0.5, return_logits=True)
    np.testing.assert_allclose(heatmaps.numpy(), ref, atol=1e-6)
    np.testing.assert_allclose(logits.numpy(), ref_logits, atol=1e-6)
    np.testing.assert_array_equal(losses.region_heatmaps(pixel, masks, 0.5).numpy(), heatmaps.numpy())


def test_model_heatmaps_and_downstream_use_the_contract():
    """FRA.heatmaps, the downstream preprocessing and the region evaluation give the contract's numbers."""
    import keras
    import tensorflow as tf

    from fra_keras import losses
    from fra_keras.downstream import models as dm
    from fra_keras.downstream.regions import model_heatmaps
    from fra_keras.models.fra import FRA
    from fra_keras.preprocessing import normalize_images

    keras.utils.set_random_seed(0)
    model = FRA.from_preset("tiny", image_size=32, backbone_width=8, hidden_dim=16, proj_dim=8, decoder_dim=8,
                            decoder_ffn_dim=8, decoder_heads=2, num_regions=4)
    images = _images(5, (2, 32, 32, 3))
    x = normalize_images(images, model.config.mean, model.config.std)
    np.testing.assert_allclose(x.numpy(), (images / 255.0 - MEAN) / STD, atol=2e-6)
    heatmaps = model.heatmaps(x).numpy()
    pixel = model.neck.pixel_proj(model.backbone(x, training=False), training=False)
    expected = losses.region_heatmaps(pixel, model.prototypes, model.config.heatmap_scale).numpy()
    np.testing.assert_allclose(heatmaps, expected, atol=1e-6)
    upsampled = tf.image.resize(expected, (32, 32), method="bilinear").numpy()    # image resolution
    np.testing.assert_allclose(model_heatmaps(model, images), upsampled, atol=1e-5)
    head = dm.ExpressionClassifier(backbone=None, channels=8, num_classes=3)
    np.testing.assert_allclose(head.preprocess(images).numpy(), (images / 255.0 - MEAN) / STD, atol=2e-6)
