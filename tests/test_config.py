"""Tests for `fra_keras.config` (FRAConfig, presets, JSON round trip, validation, feature grid).

Expected values come from docs/method.md ("Formulas (the reference recipe)") and from PyTorch's
documented output-size formula for Conv2d / MaxPool2d, written out independently below.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from harness import tiny_config, tiny_overrides

from fra_keras.config import PRESETS, ConfigError, FRAConfig, feature_grid

SCHEDULE = dict(steps_per_epoch=5, epochs=2, warmup_epochs=1)


def torch_out(n, kernel, stride, padding, dilation=1):
    """torch.nn.Conv2d / MaxPool2d output size: floor((n + 2p - d(k-1) - 1) / s) + 1."""
    return math.floor((n + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1


def torchvision_grid(n, output_stride):
    n = torch_out(n, 7, 2, 3)          # conv1 7x7/2 pad 3
    n = torch_out(n, 3, 2, 1)          # maxpool 3x3/2 pad 1
    strided_stages = {32: 3, 16: 2, 8: 1}[output_stride]   # layer2..4; dilation replaces the rest
    for _ in range(strided_stages):
        n = torch_out(n, 3, 2, 1)      # v1.5: 3x3/2 pad 1 conv of the first block
    return n


# ---------------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------------


def test_paper_preset_is_the_method_recipe():
    c = FRAConfig.from_preset("paper")
    assert c == FRAConfig()  # the dataclass defaults are the paper recipe
    expected = dict(
        backbone="resnet50", backbone_width=64, output_stride=32, bn_momentum=0.9, bn_epsilon=1e-5,
        proj_dim=256, hidden_dim=4096, num_regions=8, decoder_dim=256, decoder_heads=8, decoder_layers=2,
        decoder_ffn_dim=256, decoder_dropout=0.1, heatmap_scale=1.0, proto_momentum=0.9,
        region_losses=True, global_loss_weight=0.5, decorrelation_weight=0.02, cluster_loss_weight=0.1,
        student_temperature=0.1, teacher_temperature=0.04, sinkhorn_iterations=3, me_max_weight=1.0,
        ema_momentum=0.996, optimizer="lars", learning_rate=0.9, momentum=0.9, weight_decay=1e-6,
        lars_eta=0.001, lars_eps=1e-8, epochs=50, warmup_epochs=10, batch_size=512, image_size=224,
        crop_scale=(0.2, 1.0), flip_probability=0.5, jitter_probability=0.8, brightness=0.4,
        contrast=0.4, saturation=0.2, hue=0.1, grayscale_probability=0.2, blur_probability=(1.0, 0.1),
        blur_sigma=(0.1, 2.0), solarize_probability=(0.0, 0.2),
        mean=(0.5231, 0.4044, 0.3489), std=(0.2536, 0.2194, 0.2070))
    for name, value in expected.items():
        assert getattr(c, name) == value, name
    assert c.crop_ratio == pytest.approx((3 / 4, 4 / 3))
    assert c.feature_grid == 7
    assert c.feature_channels == 2048


def test_tiny_preset_and_test_config_validate():
    tiny = FRAConfig.from_preset("tiny")
    assert tiny.preset == "tiny" and tiny.backbone == "resnet18"
    assert tiny.feature_grid == torchvision_grid(tiny.image_size, tiny.output_stride)
    assert tiny.feature_channels == tiny.backbone_width * 8
    assert tiny.decoder_dim == tiny.proj_dim
    small = tiny_config(**SCHEDULE)   # the tests' tiny model (tests/harness.py)
    assert small.feature_grid == 4 and small.feature_channels == 64
    assert small.total_steps() == 10
    for name, value in tiny_overrides(**SCHEDULE).items():
        assert getattr(small, name) == value
    assert set(PRESETS) >= {"paper", "tiny"}


def test_unknown_preset_and_unknown_override_are_named():
    with pytest.raises(ConfigError, match="resnet"):
        FRAConfig.from_preset("resnet")
    with pytest.raises(ConfigError, match="learning_rat"):
        FRAConfig.from_preset("tiny", learning_rat=0.1)


def test_total_steps_needs_steps_per_epoch():
    c = FRAConfig(steps_per_epoch=None, epochs=3, warmup_epochs=1)
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        c.total_steps()
    assert c.total_steps(7) == 21
    assert c.replace(steps_per_epoch=4).total_steps() == 12


# ---------------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------------


def test_json_round_trip_through_a_file(tmp_path):
    c = tiny_config(**SCHEDULE, crop_scale=(0.3, 0.9), data_dir="/data/x", seed=7)
    path = tmp_path / "config.json"
    text = c.to_json(str(path))
    assert path.read_text().strip() == text
    raw = json.loads(text)
    assert raw["crop_scale"] == [0.3, 0.9] and raw["backbone_width"] == 8
    assert set(raw) == {f.name for f in dataclasses.fields(FRAConfig)}
    back = FRAConfig.from_json(str(path))
    assert back == c
    assert isinstance(back.crop_scale, tuple) and isinstance(back.mean, tuple)
    assert FRAConfig.from_json(text) == c
    assert FRAConfig.from_dict(c.to_dict()) == c
    # no temporary files left behind by the atomic write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_from_json_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        FRAConfig.from_json(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="parsed"):
        FRAConfig.from_json(str(bad))
    with pytest.raises(ConfigError, match="batch_size=0"):
        FRAConfig.from_json('{"batch_size": 0}')
    with pytest.raises(ConfigError, match="colour"):
        FRAConfig.from_json('{"colour": 1}')


def test_replace_copies_and_validates():
    c = FRAConfig.from_preset("tiny")
    d = c.replace(batch_size=8, num_regions=4)
    assert (d.batch_size, d.num_regions) == (8, 4)
    assert (c.batch_size, c.num_regions) == (32, 8)  # original untouched
    assert d.replace(batch_size=32, num_regions=8) == c
    with pytest.raises(ConfigError, match="batch_size=-1"):
        c.replace(batch_size=-1)
    with pytest.raises(ConfigError, match="nonsense"):
        c.replace(nonsense=1)


def test_lists_become_tuples():
    c = FRAConfig(crop_scale=[0.3, 1.0], mean=[0.5, 0.5, 0.5])
    assert c.crop_scale == (0.3, 1.0) and c.mean == (0.5, 0.5, 0.5)


# ---------------------------------------------------------------------------------------------------
# Validation: the error names the field and the value
# ---------------------------------------------------------------------------------------------------

BAD = [
    (dict(backbone="resnet9"), ["backbone", "resnet9"]),
    (dict(batch_size=0), ["batch_size", "0"]),
    (dict(batch_size=2.5), ["batch_size", "2.5"]),
    (dict(batch_size=True), ["batch_size", "True"]),
    (dict(decoder_dropout=1.5), ["decoder_dropout", "1.5"]),
    (dict(crop_scale=(0.5, 0.2)), ["crop_scale", "0.5", "0.2"]),
    (dict(crop_scale=(0.0, 1.0)), ["crop_scale"]),
    (dict(decoder_dim=128), ["decoder_dim", "128", "proj_dim", "256"]),
    (dict(decoder_heads=7), ["decoder_dim", "decoder_heads", "7"]),
    (dict(output_stride=4), ["output_stride", "4"]),
    (dict(precision="float16"), ["precision", "float16"]),
    (dict(optimizer="adam"), ["optimizer", "adam"]),
    (dict(num_regions=1), ["num_regions", "1"]),
    (dict(warmup_epochs=60), ["warmup_epochs", "60"]),
    (dict(ema_momentum=1.0), ["ema_momentum", "1.0"]),
    (dict(learning_rate=0.0), ["learning_rate", "0.0"]),
    (dict(learning_rate=float("nan")), ["learning_rate", "nan"]),
    (dict(teacher_temperature=-0.04), ["teacher_temperature", "-0.04"]),
    (dict(image_size=16), ["image_size", "16"]),
    (dict(std=(0.2, 0.0, 0.2)), ["std"]),
    (dict(mean=(0.5, 0.5)), ["mean"]),
    (dict(blur_probability=(1.0, 1.2)), ["blur_probability", "1.2"]),
    (dict(hue=0.7), ["hue", "0.7"]),
    (dict(steps_per_epoch=0), ["steps_per_epoch", "0"]),
    (dict(unknown_field=3), ["unknown_field"]),
]


@pytest.mark.parametrize("overrides,needles", BAD, ids=[next(iter(o)) + "=" + repr(next(iter(o.values())))
                                                        for o, _ in BAD])
def test_validation_errors_name_field_and_value(overrides, needles):
    with pytest.raises(ConfigError) as info:
        FRAConfig.from_preset("paper", **overrides)
    message = str(info.value)
    for needle in needles:
        assert needle in message, (needle, message)
    assert isinstance(info.value, ValueError)


def test_validate_catches_mutation_after_construction():
    c = FRAConfig()
    c.batch_size = 0
    with pytest.raises(ConfigError, match="batch_size"):
        c.validate()


# ---------------------------------------------------------------------------------------------------
# Feature grid
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_feature_grid_matches_pytorch_formula(output_stride):
    for n in list(range(32, 260)) + [448, 512]:
        assert feature_grid(n, output_stride) == torchvision_grid(n, output_stride), n
        c = FRAConfig(image_size=n, output_stride=output_stride)
        assert c.feature_grid == torchvision_grid(n, output_stride)


def test_feature_grid_known_values():
    assert feature_grid(224, 32) == 7
    assert feature_grid(96, 32) == 3
    assert feature_grid(96, 16) == 6
    assert feature_grid(96, 8) == 12
    assert feature_grid(32, 32) == 1
    assert feature_grid(225, 32) == 8   # odd sizes round up like PyTorch (pad then floor)


def test_feature_channels():
    for backbone, width, channels in [("resnet18", 64, 512), ("resnet34", 64, 512), ("resnet50", 64, 2048),
                                      ("resnet101", 64, 2048), ("resnet50", 8, 256), ("resnet18", 32, 256)]:
        assert FRAConfig(backbone=backbone, backbone_width=width).feature_channels == channels
