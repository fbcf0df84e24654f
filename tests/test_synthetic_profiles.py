"""Framing profiles of the synthetic faces (pre-training "crop", evaluation "aligned" / "box") and the
synthetic evaluation split built from them (docs/datasets.md)."""

from __future__ import annotations

import numpy as np
import pytest

from fra_keras.data import synthetic as s
from fra_keras.data._face_model import EXPRESSION_PROTOTYPES, sample_expression
from fra_keras.downstream.data import DataSpecError, load_task_data, parse_spec

SIZE = 96
N = 24


@pytest.fixture(scope="module")
def profiles():
    return {p: [s.render_sample(i, image_size=SIZE, split="test", profile=p) for i in range(N)]
            for p in ("wide", "crop", "aligned", "box")}


def _box_height(sample):
    x0, y0, x1, y1 = sample["bbox"]
    return (y1 - y0) / SIZE


def _box_centre(sample):
    x0, y0, x1, y1 = sample["bbox"]
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2]) / SIZE


def test_profiles_keep_identity_and_expression(profiles):
    """Framing changes the scene only: the same index shows the same person with the same expression."""
    for p in ("crop", "aligned", "box"):
        for a, b in zip(profiles["wide"], profiles[p]):
            assert a["identity"] == b["identity"] and a["expression"] == b["expression"]


def test_aligned_faces_are_aligned(profiles):
    """RAF-DB-like: no roll (eye line level), face box about 0.85 of the frame (0.85 before the head's
    pitch / yaw foreshorten it), centred, eyes at a fixed height."""
    faces = profiles["aligned"]
    for f in faces:
        assert f["pose"][2] == 0.0
        assert 0.77 <= _box_height(f) <= 0.93
        np.testing.assert_allclose(_box_centre(f), [0.5, 0.5], atol=0.01)
        lm = f["landmarks68"]
        assert np.all((lm >= 0) & (lm <= SIZE - 1))              # every landmark inside the crop
        left, right = lm[36:42].mean(0), lm[42:48].mean(0)
        assert abs(left[1] - right[1]) < 0.03 * SIZE               # level eyes
    eye_y = [f["landmarks68"][36:48, 1].mean() / SIZE for f in faces]
    wide_eye_y = [f["landmarks68"][36:48, 1].mean() / SIZE for f in profiles["wide"]]
    assert np.std(eye_y) < 0.03 < np.std(wide_eye_y)             # aligned: eyes at a fixed height
    assert all(f["nuisance"]["occluders"] == "" for f in faces)


def test_box_crops_hold_the_landmarks(profiles):
    """300W / WFLW-like face-box crops: box 0.75-0.85 of the frame, near the centre, landmarks inside."""
    for f in profiles["box"]:
        assert 0.70 <= _box_height(f) <= 0.90
        np.testing.assert_allclose(_box_centre(f), [0.5, 0.5], atol=0.05)
        lm = f["landmarks68"]
        assert np.all((lm >= -0.5) & (lm <= SIZE - 0.5))


def test_crop_profile_fills_the_frame(profiles):
    heights = [_box_height(f) for f in profiles["crop"]]
    wide = [_box_height(f) for f in profiles["wide"]]
    assert min(heights) >= 0.6 and max(heights) <= 0.95
    assert np.mean(heights) > np.mean(wide) + 0.1
    assert max(abs(float(f["pose"][0])) for f in profiles["crop"]) <= 45


def test_strong_expressions_are_posed():
    """The evaluation profile maps the same draws to stronger prototype AUs, fewer drop-outs and leaks."""
    from fra_keras.data._face_model import AU_NAMES, EXPRESSION_NAMES

    proto_mean = {False: [], True: []}
    for i in range(300):
        for strong in (False, True):
            cls, au = sample_expression(np.random.default_rng([5, i]), strong=strong)
            proto = [AU_NAMES.index(a) for a in EXPRESSION_PROTOTYPES[EXPRESSION_NAMES[cls]]]
            if proto:
                proto_mean[strong].append(au[proto].mean())
    assert np.mean(proto_mean[True]) > np.mean(proto_mean[False]) + 0.2
    # same class for the same random stream
    for i in range(50):
        assert sample_expression(np.random.default_rng([6, i]))[0] == \
            sample_expression(np.random.default_rng([6, i]), strong=True)[0]


def test_profile_is_validated():
    with pytest.raises(ValueError, match="profile must be one of"):
        s.render_sample(0, image_size=64, profile="tight")
    with pytest.raises(DataSpecError, match="synthetic profile must be one of"):
        parse_spec("synthetic:tight")
    assert parse_spec("synthetic:wide") == ("synthetic", "wide")


def test_evaluation_split_profiles_and_identity_disjoint():
    """`--data synthetic`: aligned faces for expression, box crops for landmarks; train and test hold
    different people; the report says which framing it used."""
    expr = load_task_data("synthetic", "expression", 64, num_train=12, num_test=6)
    assert expr.describe()["profile"] == "aligned"
    lm = load_task_data("synthetic", "landmarks", 64, num_train=4, num_test=2)
    assert lm.describe()["profile"] == "box"
    wide = load_task_data("synthetic:wide", "expression", 64, num_train=4, num_test=2)
    assert wide.describe()["profile"] == "wide"
    first = next(iter(expr.train.batch(12)))["image"].numpy()
    expected = np.stack([s.render_sample(i, image_size=64, split="train", profile="aligned")["image"]
                         for i in range(12)])
    np.testing.assert_array_equal(first, expected)
    train_ids = {s.identity_of(i, "train") for i in range(12)}
    test_ids = {s.identity_of(i, "test") for i in range(6)}
    assert not train_ids & test_ids
