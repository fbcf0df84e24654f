"""Tests for `fra_keras.models.backbone` (torchvision-layout ResNet trunks, docs/method.md, "Backbone").

Parameter counts are torchvision's (resnetXX() total minus the fc layer). Convolutions are checked
against a plain NumPy cross-correlation with PyTorch's symmetric zero padding, written below.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from harness import tiny_config

from fra_keras.config import FRAConfig
from fra_keras.models.backbone import build_backbone, load_backbone, resnet

EPS = 1e-5

# ---------------------------------------------------------------------------------------------------
# NumPy references
# ---------------------------------------------------------------------------------------------------


def np_conv(x, kernel, stride=1, pad=0, dilation=1):
    """PyTorch Conv2d (no bias) on one channel-last image: x (H, W, Cin), kernel (kh, kw, Cin, Cout)."""
    x = np.pad(x.astype(np.float64), ((pad, pad), (pad, pad), (0, 0)))
    kh, kw, _, cout = kernel.shape
    out_h = (x.shape[0] - dilation * (kh - 1) - 1) // stride + 1
    out_w = (x.shape[1] - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((out_h, out_w, cout))
    for i in range(out_h):
        for j in range(out_w):
            patch = x[i * stride: i * stride + dilation * (kh - 1) + 1: dilation,
                      j * stride: j * stride + dilation * (kw - 1) + 1: dilation]
            out[i, j] = np.einsum("hwc,hwco->o", patch, kernel)
    return out


def np_maxpool(x, size=3, stride=2, pad=1):
    """PyTorch MaxPool2d: padding counts as -inf."""
    x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)), constant_values=-np.inf)
    out_h = (x.shape[0] - size) // stride + 1
    out_w = (x.shape[1] - size) // stride + 1
    out = np.zeros((out_h, out_w, x.shape[2]))
    for i in range(out_h):
        for j in range(out_w):
            out[i, j] = x[i * stride:i * stride + size, j * stride:j * stride + size].max(axis=(0, 1))
    return out


def np_bn_inference(x, gamma, beta, mean, var):
    return (x - mean) / np.sqrt(var + EPS) * gamma + beta


def torch_out(n, kernel, stride, padding, dilation=1):
    return (n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def torchvision_grid(n, output_stride):
    n = torch_out(torch_out(n, 7, 2, 3), 3, 2, 1)
    for _ in range({32: 3, 16: 2, 8: 1}[output_stride]):
        n = torch_out(n, 3, 2, 1)
    return n


def _count(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def _randomize_bn(layer, rng):
    c = layer.gamma.shape[0]
    layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.3, c), rng.normal(0, 0.3, c),
                       rng.uniform(0.5, 2.0, c)])
    return [np.array(w, dtype=np.float64) for w in layer.get_weights()]


# ---------------------------------------------------------------------------------------------------
# Fixtures: small models built once per module
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def r50_small():
    return {os_: resnet("resnet50", width=8, output_stride=os_) for os_ in (32, 16, 8)}


@pytest.fixture(scope="module")
def r18_small():
    return {os_: resnet("resnet18", width=8, output_stride=os_) for os_ in (32, 16, 8)}


# ---------------------------------------------------------------------------------------------------
# Parameter counts (torchvision, fc removed)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth,trainable", [
    ("resnet18", 11_176_512),   # 11,689,512 - fc 513,000
    ("resnet34", 21_284_672),   # 21,797,672 - fc 513,000
    ("resnet50", 23_508_032),   # 25,557,032 - fc 2,049,000 (docs/method.md, "Backbone")
    ("resnet101", 42_500_160),  # 44,549,160 - fc 2,049,000
])
def test_parameter_counts_match_torchvision(depth, trainable):
    model = build_backbone(FRAConfig(backbone=depth), synchronized=False)
    assert _count(model.trainable_variables) == trainable
    # moving mean / variance: one pair per BN channel, i.e. as many as the BN gammas + betas
    bn_trainable = _count(v for v in model.trainable_variables if "bn" in v.path)
    assert _count(model.non_trainable_variables) == bn_trainable
    assert model.output_shape[-1] == FRAConfig(backbone=depth).feature_channels


# ---------------------------------------------------------------------------------------------------
# Shapes and strides
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_output_shapes(r50_small, r18_small, output_stride):
    rng = np.random.default_rng(0)
    for size in (97, 65, 33):
        x = rng.normal(size=(1, size, size, 3)).astype("float32")
        grid = torchvision_grid(size, output_stride)
        assert grid == FRAConfig(image_size=size, output_stride=output_stride).feature_grid
        for model, channels in ((r50_small[output_stride], 256), (r18_small[output_stride], 64)):
            y = model(x, training=False)
            assert tuple(y.shape) == (1, grid, grid, channels), (size, output_stride)
    # non-square input keeps both sides independent
    y = r18_small[output_stride](rng.normal(size=(2, 96, 64, 3)).astype("float32"))
    assert tuple(y.shape) == (2, torchvision_grid(96, output_stride), torchvision_grid(64, output_stride), 64)


def test_known_grids(r50_small):
    x224 = np.zeros((1, 224, 224, 3), "float32")
    x96 = np.zeros((1, 96, 96, 3), "float32")
    assert r50_small[32](x224).shape[1:3] == (7, 7)
    assert r50_small[32](x96).shape[1:3] == (3, 3)
    assert r50_small[16](x96).shape[1:3] == (6, 6)
    assert r50_small[8](x96).shape[1:3] == (12, 12)


def _convs(model):
    return {l.name: l for l in model.layers if isinstance(l, keras.layers.Conv2D)}


def test_v15_layout_stride_on_3x3(r50_small):
    convs = _convs(r50_small[32])
    strided = {name for name, l in convs.items() if tuple(l.strides) != (1, 1)}
    expected = {"conv1"} | {f"layer{s}_0_{c}" for s in (2, 3, 4) for c in ("conv2", "downsample_conv")}
    assert strided == expected
    for s in (2, 3, 4):
        assert convs[f"layer{s}_0_conv2"].kernel_size == (3, 3)
        assert convs[f"layer{s}_0_conv1"].kernel_size == (1, 1)
        assert convs[f"layer{s}_0_downsample_conv"].kernel_size == (1, 1)
        pad = r50_small[32].get_layer(f"layer{s}_0_conv2_pad")
        assert isinstance(pad, keras.layers.ZeroPadding2D) and tuple(map(tuple, pad.padding)) == ((1, 1), (1, 1))
        assert convs[f"layer{s}_0_conv2"].padding == "valid"
    # layer1 has a (stride 1) downsample because of the channel expansion, like torchvision
    assert "layer1_0_downsample_conv" in convs and "layer2_1_downsample_conv" not in convs
    # block counts [3, 4, 6, 3]
    for stage, count in zip((1, 2, 3, 4), (3, 4, 6, 3)):
        assert f"layer{stage}_{count - 1}_conv3" in convs and f"layer{stage}_{count}_conv3" not in convs


def test_basic_block_layout(r18_small):
    convs = _convs(r18_small[32])
    strided = {name for name, l in convs.items() if tuple(l.strides) != (1, 1)}
    assert strided == {"conv1"} | {f"layer{s}_0_{c}" for s in (2, 3, 4) for c in ("conv1", "downsample_conv")}
    assert "layer1_0_downsample_conv" not in convs   # no expansion in BasicBlock


@pytest.mark.parametrize("output_stride,dilations", [
    # torchvision replace_stride_with_dilation: the first block of a dilated stage keeps the previous
    # dilation, later blocks use the new one.
    (32, {"layer3_0": 1, "layer3_1": 1, "layer4_0": 1, "layer4_1": 1}),
    (16, {"layer3_0": 1, "layer3_1": 1, "layer4_0": 1, "layer4_1": 2, "layer4_2": 2}),
    (8, {"layer3_0": 1, "layer3_1": 2, "layer3_5": 2, "layer4_0": 2, "layer4_1": 4, "layer4_2": 4}),
])
def test_dilation_layout(r50_small, output_stride, dilations):
    convs = _convs(r50_small[output_stride])
    for block, d in dilations.items():
        assert tuple(convs[f"{block}_conv2"].dilation_rate) == (d, d), block
    dilated_stages = {32: (), 16: (4,), 8: (3, 4)}[output_stride]
    for s in dilated_stages:
        assert tuple(convs[f"layer{s}_0_conv2"].strides) == (1, 1)
        assert tuple(convs[f"layer{s}_0_downsample_conv"].strides) == (1, 1)


def test_bn_settings_and_no_conv_bias(r50_small):
    model = build_backbone(FRAConfig(backbone="resnet50", backbone_width=8, bn_momentum=0.9, bn_epsilon=1e-5))
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert len(bns) == 1 + 3 * 16 + 4   # stem + 3 per bottleneck + 4 downsample
    for layer in bns:
        assert layer.epsilon == pytest.approx(1e-5) and layer.momentum == pytest.approx(0.9), layer.name
        assert "bn" in layer.name
        assert layer.synchronized is True   # config default sync_batchnorm=True
    for model_ in list(r50_small.values()) + [model]:
        for layer in model_.layers:
            if isinstance(layer, keras.layers.Conv2D):
                assert layer.use_bias is False and layer.bias is None, layer.name
    assert not build_backbone(FRAConfig(backbone="resnet18", backbone_width=8),
                              synchronized=False).get_layer("bn1").synchronized


def test_kernel_init_is_kaiming_fan_out():
    model = resnet("resnet18", width=64)
    k = model.get_layer("layer4_1_conv2").kernel.numpy()   # 3x3x512x512, fan_out = 9*512
    assert k.std() == pytest.approx(math.sqrt(2.0 / (9 * 512)), rel=0.02)
    assert abs(k.mean()) < 1e-3


def test_bad_arguments():
    with pytest.raises(ValueError, match="resnet9"):
        resnet("resnet9")
    with pytest.raises(ValueError, match="output_stride"):
        resnet("resnet18", output_stride=4)


# ---------------------------------------------------------------------------------------------------
# Numerics: PyTorch-style padding
# ---------------------------------------------------------------------------------------------------


def test_stem_conv_matches_numpy_symmetric_padding(r18_small):
    rng = np.random.default_rng(1)
    model = r18_small[32]
    conv = model.get_layer("conv1")
    kernel = rng.normal(size=conv.kernel.shape).astype("float32")
    conv.kernel.assign(kernel)
    sub = keras.Model(model.input, conv.output)
    for h, w in ((11, 13), (12, 12)):
        x = rng.normal(size=(1, h, w, 3)).astype("float32")
        got = sub(x).numpy()[0]
        expected = np_conv(x[0], kernel.astype(np.float64), stride=2, pad=3)
        assert got.shape == expected.shape == (torch_out(h, 7, 2, 3), torch_out(w, 7, 2, 3), 8)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # A "same"-padded Keras conv would pad (2, 3) on even sizes; make sure that is distinguishable.
    x = rng.normal(size=(1, 12, 12, 3)).astype("float32")
    same = keras.ops.conv(x, kernel, strides=2, padding="same").numpy()[0]
    assert not np.allclose(same, np_conv(x[0], kernel.astype(np.float64), stride=2, pad=3), atol=1e-3)


def test_stem_to_maxpool_matches_numpy(r18_small):
    """conv 7x7/2 pad 3 -> BN (inference) -> ReLU -> max-pool 3x3/2 pad 1 (-inf padding)."""
    rng = np.random.default_rng(2)
    model = r18_small[16]
    kernel = rng.normal(size=model.get_layer("conv1").kernel.shape).astype("float32")
    model.get_layer("conv1").kernel.assign(kernel)
    gamma, beta, mean, var = _randomize_bn(model.get_layer("bn1"), rng)
    sub = keras.Model(model.input, model.get_layer("maxpool").output)
    x = rng.normal(size=(1, 15, 14, 3)).astype("float32")
    y = np.maximum(np_bn_inference(np_conv(x[0], kernel.astype(np.float64), 2, 3), gamma, beta, mean, var), 0)
    expected = np_maxpool(y)
    got = sub(x, training=False).numpy()[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_strided_3x3_pad_conv_pair_matches_numpy(r50_small):
    rng = np.random.default_rng(3)
    model = r50_small[32]
    pad, conv = model.get_layer("layer3_0_conv2_pad"), model.get_layer("layer3_0_conv2")
    kernel = rng.normal(size=conv.kernel.shape).astype("float32")
    conv.kernel.assign(kernel)
    for size in (9, 8):
        x = rng.normal(size=(1, size, size, kernel.shape[2])).astype("float32")
        got = conv(pad(x)).numpy()[0]
        np.testing.assert_allclose(got, np_conv(x[0], kernel.astype(np.float64), 2, 1), rtol=1e-4, atol=1e-4)


def test_dilated_conv_matches_numpy(r50_small):
    rng = np.random.default_rng(4)
    model = r50_small[16]
    conv = model.get_layer("layer4_1_conv2")   # 3x3, dilation 2, stride 1 -> PyTorch padding 2
    kernel = rng.normal(size=conv.kernel.shape).astype("float32")
    conv.kernel.assign(kernel)
    x = rng.normal(size=(1, 6, 7, kernel.shape[2])).astype("float32")
    got = conv(x).numpy()[0]
    np.testing.assert_allclose(got, np_conv(x[0], kernel.astype(np.float64), 1, 2, 2), rtol=1e-4, atol=1e-4)


def test_first_bottleneck_of_stage2_matches_numpy(r50_small):
    """layer2.0 (v1.5, with downsample) in inference mode, every weight and BN statistic random."""
    rng = np.random.default_rng(5)
    model = r50_small[32]
    name = "layer2_0"
    kernels, bns = {}, {}
    for conv in ("conv1", "conv2", "conv3", "downsample_conv"):
        layer = model.get_layer(f"{name}_{conv}")
        kernels[conv] = rng.normal(0, 0.3, size=layer.kernel.shape)
        layer.kernel.assign(kernels[conv].astype("float32"))
    for bn in ("bn1", "bn2", "bn3", "downsample_bn"):
        bns[bn] = _randomize_bn(model.get_layer(f"{name}_{bn}"), rng)
    sub = keras.Model(model.get_layer("layer1_2_out").output, model.get_layer(f"{name}_out").output)
    x = rng.normal(size=(1, 9, 9, 32)).astype("float32")
    relu = lambda a: np.maximum(a, 0)
    out = relu(np_bn_inference(np_conv(x[0], kernels["conv1"]), *bns["bn1"]))
    out = relu(np_bn_inference(np_conv(out, kernels["conv2"], 2, 1), *bns["bn2"]))
    out = np_bn_inference(np_conv(out, kernels["conv3"]), *bns["bn3"])
    identity = np_bn_inference(np_conv(x[0], kernels["downsample_conv"], 2, 0), *bns["downsample_bn"])
    expected = relu(out + identity)
    got = sub(x, training=False).numpy()[0]
    assert got.shape == (5, 5, 64)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------
# load_backbone
# ---------------------------------------------------------------------------------------------------


def _random_backbone(config, seed):
    model = build_backbone(config, synchronized=False)
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.get_weights():
        weights.append((rng.uniform(0.5, 1.5, w.shape) if w.ndim == 1 else rng.normal(0, 0.05, w.shape))
                       .astype("float32"))
    model.set_weights(weights)
    return model, weights


def test_load_backbone_round_trip(tmp_path):
    config = tiny_config()
    model, weights = _random_backbone(config, 6)
    path = tmp_path / "backbone.weights.h5"
    model.save_weights(str(path))
    config.to_json(str(tmp_path / "config.json"))
    loaded = load_backbone(str(path))
    assert isinstance(loaded, keras.Model)
    for a, b in zip(weights, loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(7).normal(size=(2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(loaded(x, training=False), model(x, training=False), rtol=1e-6, atol=1e-6)
    assert loaded.output_shape[-1] == config.feature_channels


def test_load_backbone_with_explicit_config(tmp_path):
    config = tiny_config(backbone="resnet18", backbone_width=16)
    model, weights = _random_backbone(config, 8)
    path = tmp_path / "w.weights.h5"
    model.save_weights(str(path))
    with pytest.raises(ValueError, match="config.json"):
        load_backbone(str(path))
    loaded = load_backbone(str(path), config=config)
    for a, b in zip(weights, loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_load_backbone_errors(tmp_path):
    missing = str(tmp_path / "nothing.weights.h5")
    with pytest.raises(FileNotFoundError, match="nothing.weights.h5"):
        load_backbone(missing)
    wrong = tmp_path / "backbone.h5"
    wrong.write_bytes(b"\0")
    with pytest.raises(ValueError, match=r"\.keras or \.weights\.h5"):
        load_backbone(str(wrong))
