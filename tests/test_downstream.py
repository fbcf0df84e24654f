"""Downstream pieces: metrics against hand computations, heads that learn, .keras round trips, region
metrics, the fine-tune schedule and model loading errors."""

import math
import os

import numpy as np
import pytest

from fra_keras.downstream import metrics as m
from fra_keras.downstream import regions as r


# Metrics against hand computations -------------------------------------------------------------------
def test_top1_and_mean_class_accuracy():
    labels = [0, 1, 2, 1]
    logits = np.array([[3, 1, 0], [0, 1, 2], [0, 0, 1], [0, 5, 1]], float)   # argmax 0, 2, 2, 1
    assert m.top1_accuracy(labels, logits) == pytest.approx(3 / 4)
    assert m.top1_accuracy(labels, [0, 2, 2, 1]) == pytest.approx(3 / 4)
    # per class: class 0 1/1, class 1 1/2, class 2 1/1
    np.testing.assert_allclose(m.per_class_accuracy(labels, logits), [1.0, 0.5, 1.0])
    assert m.mean_class_accuracy(labels, logits) == pytest.approx((1 + 0.5 + 1) / 3)
    # a class absent from the labels does not count in the mean
    assert m.mean_class_accuracy([0, 0], [0, 1], num_classes=3) == pytest.approx(0.5)


def test_attribute_accuracy_masks_unknown_labels():
    labels = np.array([[1, 0, -1], [0, -1, 1]])
    logits = np.array([[2.0, -1.0, 5.0], [0.5, 3.0, -2.0]])      # predicted 1 0 (1) / 1 (1) 0
    # known entries: (0,0) right, (0,1) right, (1,0) wrong, (1,2) wrong -> 2 / 4
    assert m.attribute_accuracy(labels, logits) == pytest.approx(0.5)
    probs = 1.0 / (1.0 + np.exp(-logits))
    assert m.attribute_accuracy(labels, probs, from_logits=False) == pytest.approx(0.5)
    np.testing.assert_allclose(m.per_attribute_accuracy(labels, logits), [0.5, 1.0, 0.0])
    # flipping an unknown entry's score changes nothing
    logits2 = logits.copy()
    logits2[0, 2] = -5.0
    assert m.attribute_accuracy(labels, logits2) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        m.attribute_accuracy(np.full((2, 3), -1), logits)


def test_landmark_nme_and_failure_rate():
    rng = np.random.default_rng(0)
    target = rng.uniform(20, 80, size=(2, 68, 2))
    target[:, 36] = (10.0, 10.0)
    target[:, 45] = (30.0, 10.0)                                 # inter-ocular distance 20
    pred = target.copy()
    pred[0] += (3.0, 4.0)                                        # every point 5 px off -> 5 / 20
    pred[1, :34] += (0.6, 0.8)                                   # half the points 1 px off -> 0.5 / 20
    nme = m.landmark_nme(pred, target)
    np.testing.assert_allclose(nme, [0.25, 0.025])
    assert m.failure_rate(nme, 0.10) == pytest.approx(0.5)
    assert m.failure_rate(nme, 0.30) == pytest.approx(0.0)
    # 98 points (WFLW): outer corners 60 and 72
    t98 = np.zeros((1, 98, 2))
    t98[0, 72] = (10.0, 0.0)
    p98 = t98 + (1.0, 0.0)
    np.testing.assert_allclose(m.landmark_nme(p98, t98), [0.1])
    assert m.eye_corner_indices(68) == (36, 45) and m.eye_corner_indices(98) == (60, 72)
    with pytest.raises(ValueError):
        m.landmark_nme(np.zeros((1, 7, 2)), np.ones((1, 7, 2)))


def test_knn_uniform_and_weighted_votes():
    train = np.array([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8], [-1.0, 0.0]])
    labels = np.array([0, 1, 1, 2])
    query = np.array([[1.0, 0.0]])
    # k=3 neighbours: class 0 (cos 1), class 1 (cos 0.6) twice
    assert m.knn_predict(train, labels, query, k=3, temperature=None)[0] == 1          # 2 votes vs 1
    w0, w1 = math.exp(1 / 0.07), 2 * math.exp(0.6 / 0.07)
    assert w0 > w1
    assert m.knn_predict(train, labels, query, k=3, temperature=0.07)[0] == 0          # weighted
    # cosine: scaling embeddings changes nothing; k=1 takes the nearest neighbour
    assert m.knn_predict(5 * train, labels, np.array([[-2.0, 0.1]]), k=1)[0] == 2
    assert m.knn_accuracy(train, labels, np.array([[1.0, 0.0], [0.0, 1.0]]), [0, 1], k=1) == pytest.approx(1.0)


# Region metrics ----------------------------------------------------------------------------------
def _toy_regions():
    masks = np.array([[[0, 1], [1, 2]]])
    hm0 = np.array([[1.0, 0.0], [0.0, 0.0]])
    hm1 = np.array([[0.0, 0.5], [0.5, 1.0]])
    return np.stack([hm0, hm1], axis=-1)[None], masks


def test_region_metrics_by_hand():
    heatmaps, masks = _toy_regions()
    mass = r.part_mass(heatmaps, masks, 3)
    np.testing.assert_allclose(mass, [[1, 0, 0], [0, 1, 1]])
    area = r.part_area(masks, 3)
    np.testing.assert_allclose(area, [1, 2, 1])
    dens = r.density_share(mass, area)                          # heatmap 1: densities 0, 0.5, 1
    np.testing.assert_allclose(dens, [[1, 0, 0], [0, 1 / 3, 2 / 3]])
    assert r.purity(dens) == pytest.approx((1 + 2 / 3) / 2)
    assert r.coverage(dens) == 2
    raw = r.mass_share(mass)
    assert r.purity(raw) == pytest.approx((1 + 0.5) / 2)
    np.testing.assert_allclose(r.usage(heatmaps), [0.25, 0.75])
    # view B = flipped face with flipped masks: same dominant parts; swapped heatmaps: none agree
    flipped_hm, flipped_m = heatmaps[:, :, ::-1], masks[:, :, ::-1]
    assert r.consistency(heatmaps, masks, flipped_hm, flipped_m, 3, min_pixels=1) == pytest.approx(1.0)
    assert r.consistency(heatmaps, masks, heatmaps[..., ::-1], masks, 3, min_pixels=1) == pytest.approx(0.0)


def test_render_views_maps_masks_with_the_images():
    views = r.render_views(2, 64, seed=0, crop_scale=(1.0, 1.0))    # no crop: a pure horizontal flip
    np.testing.assert_array_equal(views["mask_b"], views["mask_a"][:, :, ::-1])
    np.testing.assert_array_equal(views["image_b"], views["image_a"][:, :, ::-1])
    cropped = r.render_views(2, 64, seed=0, crop_scale=(0.7, 0.7))
    y0, x0, y1, x1 = cropped["boxes"][0]
    assert y1 - y0 == round(64 * 0.7)
    # nearest-neighbour mapping of the flipped mask's crop
    from PIL import Image

    expected = np.asarray(Image.fromarray(np.ascontiguousarray(cropped["mask_a"][0][:, ::-1][y0:y1, x0:x1]))
                          .resize((64, 64), Image.NEAREST))
    np.testing.assert_array_equal(cropped["mask_b"][0], expected)


# Heads and task models -----------------------------------------------------------------------------
def _toy_backbone(channels=16):
    import keras

    from fra_keras.models.backbone import conv_initializer

    keras.utils.set_random_seed(1)
    images = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(channels, 3, strides=2, padding="same", kernel_initializer=conv_initializer())(images)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    return keras.Model(images, x, name="toy_backbone")


def _colour_images(n, rng, size=16):
    """Class c -> channel c bright: linearly separable after a random conv + ReLU + pooling."""
    labels = rng.integers(0, 3, n)
    images = rng.normal(0.0, 0.3, (n, size, size, 3)).astype("float32") - 1.0
    images[np.arange(n), :, :, labels] += 2.0
    return images, labels


def _fit(model, x, y, epochs, batch_size=16, learning_rate=1e-2):
    from fra_keras.downstream.models import downstream_optimizer

    model.compile(optimizer=downstream_optimizer(model.protocol, math.ceil(len(x) / batch_size), epochs,
                                                 learning_rate=learning_rate, weight_decay=0.0))
    before = model.evaluate(x, y, verbose=0, return_dict=True)
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
    return before, model.evaluate(x, y, verbose=0, return_dict=True)


@pytest.mark.parametrize("protocol", ["linear", "finetune"])
def test_expression_head_learns_and_respects_protocol(protocol):
    from fra_keras.downstream.models import ExpressionClassifier

    rng = np.random.default_rng(0)
    x, y = _colour_images(96, rng)
    backbone = _toy_backbone()
    frozen = [w.copy() for w in backbone.get_weights()]
    model = ExpressionClassifier(backbone, num_classes=3, protocol=protocol)
    before, after = _fit(model, x, y, epochs=8)
    assert after["loss"] < 0.7 * before["loss"]
    assert after["accuracy"] >= 0.9
    changed = any(not np.array_equal(a, b) for a, b in zip(frozen, backbone.get_weights()))
    # linear: the backbone is frozen AND in inference mode (BatchNorm statistics unchanged)
    assert changed == (protocol == "finetune")


def test_attribute_head_learns_with_unknown_labels():
    from fra_keras.downstream.models import AttributeClassifier

    rng = np.random.default_rng(1)
    x, cls = _colour_images(96, rng)
    labels = np.stack([(cls == j % 3).astype(np.int64) for j in range(40)], axis=1)
    labels[rng.uniform(size=labels.shape) < 0.3] = -1          # unknown entries are masked
    model = AttributeClassifier(_toy_backbone(), protocol="linear")
    before, after = _fit(model, x, labels, epochs=8)
    assert after["loss"] < 0.7 * before["loss"]
    assert after["accuracy"] >= 0.9


def test_landmark_head_learns_bright_spots():
    from fra_keras.downstream.models import LandmarkRegressor, to_normalized

    rng = np.random.default_rng(2)
    n, size = 128, 16
    points = rng.integers(1, 14, size=(n, 3, 2))                # point j: a 2x2 spot in channel j
    images = np.full((n, size, size, 3), -1.0, np.float32)
    for i in range(n):
        for j, (px, py) in enumerate(points[i]):
            images[i, py:py + 2, px:px + 2, j] = 3.0
    target = to_normalized(points.astype(np.float32) + 0.5, size, size)
    model = LandmarkRegressor(_toy_backbone(), num_points=3, protocol="linear")
    # Adam moves each logit by about lr * sum|features| per step: with 16 channels the soft-argmax
    # needs a larger rate than the default to sharpen within a few steps.
    before, after = _fit(model, images, target, epochs=15, learning_rate=0.1)
    assert after["loss"] < 0.5 * before["loss"]
    assert after["nme"] < 0.5 * before["nme"]


def test_soft_argmax_with_and_without_offsets():
    from fra_keras.downstream.heads import SoftArgmax2D

    logits = np.full((1, 2, 4, 1), -30.0, np.float32)
    logits[0, 1, 3, 0] = 30.0                                  # row 1, column 3 of a 2 x 4 grid
    coords, prob = SoftArgmax2D()(logits)
    np.testing.assert_allclose(np.asarray(coords)[0, 0], [3.5 / 4, 1.5 / 2], atol=1e-6)
    assert prob.shape == (1, 2, 4, 1)
    offsets = np.concatenate([logits, np.full((1, 2, 4, 2), 0.5, np.float32)], axis=-1)
    coords, _ = SoftArgmax2D(offsets=True)(offsets)            # half a cell right and down
    np.testing.assert_allclose(np.asarray(coords)[0, 0], [4.0 / 4, 2.0 / 2], atol=1e-6)


@pytest.mark.parametrize("task", ["expression", "attributes", "landmarks"])
def test_keras_round_trip(task, tmp_path):
    import keras

    from fra_keras.downstream.models import TASK_MODELS

    kwargs = {"expression": {"num_classes": 4}, "attributes": {}, "landmarks": {"num_points": 68}}[task]
    model = TASK_MODELS[task](_toy_backbone(), protocol="finetune", mean=(0.1, 0.2, 0.3), std=(1, 2, 3), **kwargs)
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    assert loaded.protocol == "finetune" and loaded.backbone.trainable
    assert loaded.mean == (0.1, 0.2, 0.3) and loaded.std == (1.0, 2.0, 3.0)
    out, out2 = model(x), loaded(x)
    assert sorted(out) == sorted(out2)
    for k in out:
        np.testing.assert_allclose(np.asarray(out[k]), np.asarray(out2[k]), atol=1e-5)
    # get_config round trip without weights builds the same structure
    clone = type(model).from_config(model.get_config())
    assert clone.get_config()["protocol"] == "finetune"
    assert sorted(clone(x)) == sorted(out)
    # the head alone: feature map in, dict of named tensors out
    head_path = str(tmp_path / "head.keras")
    model.head.save(head_path)
    head = keras.saving.load_model(head_path)
    features = model.backbone(x)
    primary = model.primary_output
    np.testing.assert_allclose(np.asarray(head(features)[primary]), np.asarray(out[primary]), atol=1e-5)
    assert head.input_shape == (None, None, None, 16)


def test_attribute_head_has_the_reference_widths():
    from fra_keras.downstream.heads import build_attribute_head

    head = build_attribute_head(2048)
    dense = [l for l in head.layers if l.__class__.__name__ == "Dense"]
    assert [(l.kernel.shape[0], l.kernel.shape[1]) for l in dense] == [(2048, 512), (512, 256), (256, 40)]
    kinds = [l.__class__.__name__ for l in head.layers]
    first = kinds.index("Dense")
    assert kinds[first:first + 4] == ["Dense", "BatchNormalization", "Dropout", "ReLU"]


def test_finetune_schedule_and_optimizer():
    from fra_keras.downstream.models import WarmupHalfCosine, downstream_optimizer

    s = WarmupHalfCosine(2e-4, total_steps=100, warmup_steps=10, min_lr=1e-6)
    assert float(s(0)) == pytest.approx(2e-5)
    assert float(s(9)) == pytest.approx(2e-4)
    assert float(s(10)) == pytest.approx(2e-4)
    assert float(s(55)) == pytest.approx(1e-6 + (2e-4 - 1e-6) * 0.5)
    assert float(s(100)) == pytest.approx(1e-6)
    opt = downstream_optimizer("finetune", steps_per_epoch=10, epochs=100)
    assert opt.weight_decay == pytest.approx(0.05)
    assert opt.learning_rate is not None


# Loading -----------------------------------------------------------------------------------------
def test_load_errors_are_clear(tmp_path):
    from fra_keras.downstream.loading import ModelLoadError, load_feature_extractor

    with pytest.raises(ModelLoadError, match="does not exist"):
        load_feature_extractor(str(tmp_path / "missing.keras"))
    with pytest.raises(ModelLoadError, match="saved_model.pb, model.keras or"):
        load_feature_extractor(str(tmp_path))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelLoadError, match="not a .keras file"):
        load_feature_extractor(str(tmp_path / "notes.txt"))
    (tmp_path / "bad.keras").write_text("not a zip")
    with pytest.raises(ModelLoadError, match="could not be loaded"):
        load_feature_extractor(str(tmp_path / "bad.keras"))
    os.makedirs(tmp_path / "run")
    (tmp_path / "run" / "backbone.weights.h5").write_text("x")
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_feature_extractor(str(tmp_path / "run"))


def test_saved_model_extractor(tmp_path):
    import tensorflow as tf

    from fra_keras.downstream.loading import load_feature_extractor

    backbone = _toy_backbone(8)

    class Serving(tf.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone

        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.uint8, name="images")])
        def serve(self, images):
            fmap = self.backbone(tf.cast(images, tf.float32) / 255.0, training=False)
            return {"embedding": tf.reduce_mean(fmap, axis=[1, 2]), "feature_map": fmap}

    module = Serving()
    folder = str(tmp_path / "export")
    tf.saved_model.save(module, folder, signatures={"serving_default": module.serve})
    extractor = load_feature_extractor(folder)
    assert extractor.kind == "saved_model" and extractor.image_size == 32 and extractor.channels == 8
    assert not extractor.can_finetune
    images = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3)).astype(np.uint8)
    np.testing.assert_allclose(np.asarray(extractor.feature_map(images)),
                               np.asarray(backbone(images.astype("float32") / 255.0)), atol=1e-5)
