"""Tests for the projector/predictor MLP, the DETR-style mask decoder and the FRA neck.

Shapes, config round trips, `.keras` reloads and mixed precision of these layers: tests/test_layers.py.

NumPy references are written from docs/method.md, "Neck and heatmaps" (MLP1D, sine positions, post-norm decoder layer,
heatmaps, WAP) using the layers' own weights; Keras' MultiHeadAttention weight layout is
query/key/value kernels (D, heads, head_dim) with biases (heads, head_dim) and an output kernel
(heads, head_dim, D).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from harness import randomize_weights

from fra_keras.models.heads import MLPHead
from fra_keras.models.mask_decoder import DecoderLayer, MaskDecoder, TokenAttention, sine_position_encoding
from fra_keras.models.neck import FRANeck

EPS = 1e-5
ATTN_FLOOR = 1e-7

# ---------------------------------------------------------------------------------------------------
# NumPy references
# ---------------------------------------------------------------------------------------------------


def np_mlp_train(x, w1, gamma, beta, w2, eps=EPS):
    """MLP1D in training mode: BN statistics over every leading axis (biased variance)."""
    h = x.astype(np.float64) @ w1
    flat = h.reshape(-1, h.shape[-1])
    mu, var = flat.mean(0), flat.var(0)
    h = (h - mu) / np.sqrt(var + eps) * gamma + beta
    return np.maximum(h, 0) @ w2, mu, var


def np_mlp_infer(x, w1, gamma, beta, mean, var, w2, eps=EPS):
    h = x.astype(np.float64) @ w1
    h = (h - mean) / np.sqrt(var + eps) * gamma + beta
    return np.maximum(h, 0) @ w2


def np_sine(h, w, dim, temperature=10000.0):
    """DETR sine encoding (docs/method.md, "Neck and heatmaps"): rows/cols 1..n / (n + 1e-6) * 2 pi; dim_t[i] =
    T^(2 floor(i/2) / (dim/2)); sin on even, cos on odd channels; concat(pos_y, pos_x)."""
    npf = dim // 2
    scale = 2 * math.pi
    y_embed = np.arange(1, h + 1, dtype=np.float64) / (h + 1e-6) * scale
    x_embed = np.arange(1, w + 1, dtype=np.float64) / (w + 1e-6) * scale
    out = np.zeros((h, w, dim))
    for r in range(h):
        for c in range(w):
            for i in range(npf):
                dim_t = temperature ** (2 * (i // 2) / npf)
                f = math.sin if i % 2 == 0 else math.cos
                out[r, c, i] = f(y_embed[r] / dim_t)
                out[r, c, npf + i] = f(x_embed[c] / dim_t)
    return out


def np_layer_norm(x, gamma, beta, eps=EPS):
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def np_mha(q_in, k_in, v_in, p):
    """One image: q_in (T, D), k_in / v_in (S, D); p holds the Keras MHA weights."""
    q = np.einsum("td,dhe->the", q_in, p["query/kernel"]) + p["query/bias"]
    k = np.einsum("sd,dhe->she", k_in, p["key/kernel"]) + p["key/bias"]
    v = np.einsum("sd,dhe->she", v_in, p["value/kernel"]) + p["value/bias"]
    scores = np.einsum("the,she->hts", q, k) / math.sqrt(q.shape[-1])
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    attn = scores / scores.sum(-1, keepdims=True)
    o = np.einsum("hts,she->the", attn, v)
    return np.einsum("the,hed->td", o, p["attention_output/kernel"]) + p["attention_output/bias"]


def _weights_by_suffix(layer, prefix):
    """{path relative to `prefix`: float64 array}."""
    out = {}
    for v in layer.weights:
        path = v.path
        assert prefix in path, (prefix, path)
        out[path.split(prefix, 1)[1]] = np.array(v.numpy(), dtype=np.float64)
    return out


def np_decoder_layer(tgt, memory, pos, query_pos, w, pos_on_values=False):
    """Post-norm DETR decoder layer (docs/method.md, "Neck and heatmaps"), one image, inference."""
    sub = lambda name: {k.split(name + "/", 1)[1]: v for k, v in w.items() if k.startswith(name + "/")}
    q = tgt + query_pos
    sa = np_mha(q, q, q if pos_on_values else tgt, sub("self_attn"))
    tgt = np_layer_norm(tgt + sa, w["norm1/gamma"], w["norm1/beta"])
    ca = np_mha(tgt + query_pos, memory + pos, memory + pos if pos_on_values else memory, sub("cross_attn"))
    tgt = np_layer_norm(tgt + ca, w["norm2/gamma"], w["norm2/beta"])
    ffn = np.maximum(tgt @ w["linear1/kernel"] + w["linear1/bias"], 0) @ w["linear2/kernel"] + w["linear2/bias"]
    return np_layer_norm(tgt + ffn, w["norm3/gamma"], w["norm3/beta"])


def np_mask_decoder(features, decoder, prefix, pos_on_values=False):
    """features (B, h, w, C) -> (B, K, D) from the MaskDecoder's weights.

    The decoder's first target is zeros (the reference), or the learnable `query_content` rows when
    the decoder has them (the opt-in content queries)."""
    w = _weights_by_suffix(decoder, prefix)
    b, h, wd, c = features.shape
    d = decoder.dim
    pos = np_sine(h, wd, d).reshape(h * wd, d)
    out = []
    for img in features.astype(np.float64):
        memory = img.reshape(h * wd, c) @ w["input_proj/kernel"] + w["input_proj/bias"]
        tgt = w["query_content"].copy() if "query_content" in w else np.zeros((decoder.num_queries, d))
        for i in range(decoder.num_layers):
            lw = {k.split(f"decoder_layer{i}/", 1)[1]: v for k, v in w.items()
                  if k.startswith(f"decoder_layer{i}/")}
            tgt = np_decoder_layer(tgt, memory, pos, w["query_embed"], lw, pos_on_values)
        x = np_layer_norm(tgt, w["decoder_norm/gamma"], w["decoder_norm/beta"])
        for j in range(3):
            x = x @ w[f"mask_embed{j}/kernel"] + w[f"mask_embed{j}/bias"]
            if j < 2:
                x = np.maximum(x, 0)
        out.append(x)
    return np.stack(out)


def _trainable(layer):
    return sum(int(np.prod(v.shape)) for v in layer.trainable_variables)


def _l2n(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


# ---------------------------------------------------------------------------------------------------
# MLPHead
# ---------------------------------------------------------------------------------------------------


def test_mlp_head_structure():
    head = MLPHead(32, 16, name="proj")
    head.build((None, 64))
    names = sorted(v.path for v in head.trainable_variables)
    assert names == ["proj/dense1/kernel", "proj/dense2/kernel", "proj/norm/beta", "proj/norm/gamma"]
    assert head.dense1.use_bias is False and head.dense2.use_bias is False
    assert head.norm.epsilon == pytest.approx(1e-5) and head.norm.momentum == pytest.approx(0.9)
    assert _trainable(head) == 64 * 32 + 2 * 32 + 32 * 16
    assert head.count_params() == _trainable(head) + 2 * 32   # + BN moving mean / variance
    # paper sizes (docs/method.md, "Neck and heatmaps"): 2048 -> 4096 -> 256 and 256 -> 4096 -> 256
    big = MLPHead(4096, 256)
    big.build((None, 2048))
    assert _trainable(big) == 9_445_376
    pred = MLPHead(4096, 256)
    pred.build((None, 256))
    assert _trainable(pred) == 2_105_344


def test_mlp_head_training_mode_matches_numpy_on_sequences():
    rng = np.random.default_rng(0)
    head = MLPHead(6, 5)
    x = rng.normal(size=(3, 4, 7)).astype("float32")   # (B, L, C): BN pools over B x L
    head.build(x.shape)
    randomize_weights(head, rng)
    w1, w2 = head.dense1.kernel.numpy(), head.dense2.kernel.numpy()
    gamma, beta = head.norm.gamma.numpy(), head.norm.beta.numpy()
    got = head(x, training=True).numpy()
    expected, mu, var = np_mlp_train(x, w1, gamma, beta, w2)
    assert got.shape == (3, 4, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # Per-position statistics (over B only) would be a different map: the test can tell.
    per_pos = np.stack([np_mlp_train(x[:, l], w1, gamma, beta, w2)[0] for l in range(4)], axis=1)
    assert not np.allclose(per_pos, expected, atol=1e-3)
    # moving mean with PyTorch momentum 0.1 (Keras 0.9), starting from 0
    np.testing.assert_allclose(head.norm.moving_mean.numpy(), 0.1 * mu, rtol=1e-4, atol=1e-6)
    # inference uses the moving statistics
    mean, mvar = head.norm.moving_mean.numpy(), head.norm.moving_variance.numpy()
    np.testing.assert_allclose(head(x, training=False).numpy(),
                               np_mlp_infer(x, w1, gamma, beta, mean, mvar, w2), rtol=1e-4, atol=1e-5)


def test_mlp_head_on_vectors_and_pixels():
    rng = np.random.default_rng(1)
    for shape in ((6, 5), (2, 3, 4, 5)):
        head = MLPHead(8, 3)
        head.build((None,) * (len(shape) - 1) + (5,))
        randomize_weights(head, rng)
        w = [head.dense1.kernel.numpy(), head.norm.gamma.numpy(), head.norm.beta.numpy(),
             head.dense2.kernel.numpy()]
        x = rng.normal(size=shape).astype("float32")
        got = head(x, training=True).numpy()
        assert got.shape == shape[:-1] + (3,)
        np.testing.assert_allclose(got, np_mlp_train(x, *w)[0], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# Sine position encoding
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("h,w,dim", [(7, 7, 256), (3, 5, 16), (6, 4, 8), (1, 2, 4)])
def test_sine_position_encoding_matches_numpy(h, w, dim):
    got = np.asarray(sine_position_encoding(h, w, dim))
    assert got.shape == (h, w, dim)
    np.testing.assert_allclose(got, np_sine(h, w, dim), rtol=1e-5, atol=2e-6)


def test_sine_position_encoding_layout():
    pe = np.asarray(sine_position_encoding(3, 5, 8))
    # first half depends on the row only, second half on the column only
    assert np.allclose(pe[:, :1, :4], pe[:, :, :4]) and not np.allclose(pe[:1, :, :4], pe[:, :, :4])
    assert np.allclose(pe[:1, :, 4:], pe[:, :, 4:]) and not np.allclose(pe[:, :1, 4:], pe[:, :, 4:])
    # channel 0 is sin(2 pi r / (h + 1e-6)), channel 1 is its cos with the same frequency
    r = np.arange(1, 4) / (3 + 1e-6) * 2 * np.pi
    np.testing.assert_allclose(pe[:, 0, 0], np.sin(r), atol=1e-6)
    np.testing.assert_allclose(pe[:, 0, 1], np.cos(r), atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# Mask decoder
# ---------------------------------------------------------------------------------------------------


def test_mask_decoder_paper_parameter_count():
    dec = MaskDecoder(num_queries=8, dim=256, num_heads=8, num_layers=2, ffn_dim=256, dropout=0.1)
    dec.build((None, None, None, 2048))
    assert dec.count_params() == _trainable(dec) == 2_043_392   # docs/method.md, "Neck and heatmaps"
    assert tuple(dec.query_embed.shape) == (8, 256)
    assert dec.input_proj.count_params() == 524_544
    assert [l.count_params() for l in dec.decoder_layers] == [659_456, 659_456]
    assert sum(l.count_params() for l in dec.mask_mlp) == 197_376


def test_mask_decoder_layer_norm_eps_and_heads():
    dec = MaskDecoder(num_queries=4, dim=16, num_heads=2, num_layers=2, ffn_dim=8)
    dec.build((None, None, None, 12))
    norms = [dec.decoder_norm] + [n for l in dec.decoder_layers for n in (l.norm1, l.norm2, l.norm3)]
    assert len(norms) == 7
    for norm in norms:
        assert norm.epsilon == pytest.approx(1e-5)
    for layer in dec.decoder_layers:
        for mha in (layer.self_attn, layer.cross_attn):
            assert mha.num_heads == 2 and mha.key_dim == 8 and mha.dropout == pytest.approx(0.1)


@pytest.fixture(scope="module")
def small_decoder():
    rng = np.random.default_rng(3)
    dec = MaskDecoder(num_queries=3, dim=8, num_heads=2, num_layers=2, ffn_dim=6, dropout=0.3, name="mask_decoder")
    dec.build((None, None, None, 12))
    randomize_weights(dec, rng)
    features = rng.normal(size=(2, 3, 4, 12)).astype("float32")
    return dec, features


def test_mask_decoder_matches_numpy(small_decoder):
    dec, features = small_decoder
    got = dec(features, training=False).numpy()
    assert got.shape == (2, 3, 8)
    expected = np_mask_decoder(features, dec, "mask_decoder/")
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # Control: adding the positions to the values as well gives a clearly different answer, so the
    # comparison above does check that positions go to queries / keys only.
    wrong = np_mask_decoder(features, dec, "mask_decoder/", pos_on_values=True)
    assert np.abs(wrong - expected).max() > 1e-2


def test_mask_decoder_content_queries_match_numpy():
    """`query_content=True`: learnable content queries replace the zero target (checked in NumPy)."""
    rng = np.random.default_rng(4)
    features = np.abs(rng.normal(size=(4, 3, 3, 12))).astype("float32") + 1.0   # ReLU-like, shared mean
    dec = MaskDecoder(num_queries=4, dim=8, num_heads=2, num_layers=2, ffn_dim=6, dropout=0.0, query_content=True,
                      name="mask_decoder")
    dec.build((None, None, None, 12))
    assert dec.query_content_embed.shape == (4, 8)
    got = dec(features, training=False).numpy()
    np.testing.assert_allclose(got, np_mask_decoder(features, dec, "mask_decoder/"), rtol=1e-4, atol=1e-4)
    assert MaskDecoder.from_config(dec.get_config()).query_content is True
    # Control: the same weights with a zero target (the reference) give another answer.
    dec.query_content_embed.assign(np.zeros((4, 8), "float32"))
    assert np.abs(dec(features, training=False).numpy() - got).max() > 1e-3


def test_mask_decoder_queries_are_per_image_and_attend_to_memory(small_decoder):
    dec, features = small_decoder
    out = dec(features, training=False).numpy()
    assert not np.allclose(out[0], out[1], atol=1e-4)       # images differ -> embeddings differ
    shuffled = features[:, ::-1]                            # same content, other positions
    assert not np.allclose(dec(shuffled, training=False).numpy(), out, atol=1e-4)


def test_mask_decoder_dropout_only_in_training(small_decoder):
    dec, features = small_decoder
    a = dec(features, training=True).numpy()
    b = dec(features, training=True).numpy()
    assert not np.allclose(a, b)
    c = dec(features, training=False).numpy()
    d = dec(features, training=False).numpy()
    np.testing.assert_array_equal(c, d)
    plain = MaskDecoder(num_queries=3, dim=8, num_heads=2, num_layers=2, ffn_dim=6, dropout=0.0)
    plain.build((None, None, None, 12))
    plain.set_weights(dec.get_weights())
    np.testing.assert_allclose(plain(features, training=True), c, rtol=1e-5, atol=1e-6)


def test_decoder_layer_matches_numpy():
    rng = np.random.default_rng(4)
    layer = DecoderLayer(dim=8, num_heads=4, ffn_dim=5, dropout=0.2, name="decoder_layer0")
    layer.build((None, 3, 8))
    randomize_weights(layer, rng)
    tgt = rng.normal(size=(2, 3, 8)).astype("float32")
    memory = rng.normal(size=(2, 6, 8)).astype("float32")
    pos = rng.normal(size=(1, 6, 8)).astype("float32")
    qpos = rng.normal(size=(1, 3, 8)).astype("float32")
    got = layer(tgt, memory, pos, qpos, training=False).numpy()
    w = _weights_by_suffix(layer, "decoder_layer0/")
    for b in range(2):
        expected = np_decoder_layer(tgt[b].astype(np.float64), memory[b].astype(np.float64), pos[0], qpos[0], w)
        np.testing.assert_allclose(got[b], expected, rtol=1e-4, atol=1e-4)


def _attention_pair(dropout, seed=11):
    """A TokenAttention and a Keras MultiHeadAttention with the same (random) weights and dropout seed,
    on query / key / value widths 7 / 8 / 9 (so a swapped projection fails), 4 heads of 3."""
    import keras

    rng = np.random.default_rng(6)
    kwargs = dict(num_heads=4, key_dim=3, dropout=dropout, seed=seed)
    ours, keras_mha = TokenAttention(**kwargs), keras.layers.MultiHeadAttention(**kwargs)
    for layer in (ours, keras_mha):
        layer.build((2, 5, 7), (2, 6, 9), (2, 6, 8))
    weights = [rng.normal(0, 0.5, w.shape).astype("float32") for w in keras_mha.get_weights()]
    ours.set_weights(weights)
    keras_mha.set_weights(weights)
    q, v, k = (rng.normal(size=s).astype("float32") for s in ((2, 5, 7), (2, 6, 9), (2, 6, 8)))
    return ours, keras_mha, q, v, k


def test_token_attention_keeps_keras_weight_layout():
    """Same variable names, shapes and order as Keras' MultiHeadAttention (what `.keras` files, the LARS
    q/k/v grouping and the layout comment of this module rely on)."""
    from fra_keras.optimizers import lars_group_key

    ours, keras_mha, *_ = _attention_pair(0.0)
    strip = lambda layer: [(w.path.split("/", 1)[1], tuple(w.shape)) for w in layer.weights]
    assert strip(ours) == strip(keras_mha)
    assert [p for p, _ in strip(ours) if p.endswith("kernel")] == [
        "query/kernel", "key/kernel", "value/kernel", "attention_output/kernel"]
    groups = {lars_group_key(f"neck/dec/self_attn/{p}") for p, _ in strip(ours)}
    assert groups == {"neck/dec/self_attn", None}


@pytest.mark.parametrize("dropout, training", [(0.0, True), (0.3, False), (0.3, True)])
def test_token_attention_equals_keras_multi_head_attention(dropout, training):
    """Outputs and gradients (weights and all three inputs) equal Keras' MultiHeadAttention with the same
    weights; with dropout in training mode too, since both draw the (B, heads, T, S) attention-weight mask
    from the same seeded generator — so the dropout sits where Keras (and PyTorch) put it."""
    import tensorflow as tf

    ours, keras_mha, q, v, k = _attention_pair(dropout)
    results = []
    for layer in (ours, keras_mha):
        inputs = [tf.constant(x) for x in (q, v, k)]
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = layer(*inputs, training=training)
            s = tf.reduce_sum(tf.sin(3.0 * y))            # a non-linear loss: gradients depend on y
        results.append([y.numpy()] + [g.numpy() for g in tape.gradient(s, layer.trainable_variables + inputs)])
    names = ["output"] + [w.path for w in ours.trainable_variables] + ["d_query", "d_value", "d_key"]
    for name, got, want in zip(names, *results):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(want).max()), err_msg=name)
    # The NumPy reference too (inference), and the check can fail: without the 1/sqrt(head_dim) scale
    # the outputs differ.
    if not training or dropout == 0.0:
        w = {p.split("/", 1)[1]: np.array(x.numpy(), np.float64) for p, x in ((x.path, x) for x in ours.weights)}
        for b in range(2):
            np.testing.assert_allclose(results[0][0][b], np_mha(q[b], k[b], v[b], w), rtol=1e-4, atol=1e-5)
        unscaled = dict(w, **{name: w[name] * math.sqrt(3) for name in ("query/kernel", "query/bias")})
        assert np.abs(np_mha(q[0], k[0], v[0], unscaled) - results[0][0][0]).max() > 1e-2
    if training and dropout > 0.0:
        assert np.abs(results[0][0] - ours(q, v, k, training=False).numpy()).max() > 1e-3   # dropout acted


def test_token_attention_rejects_what_it_does_not_compute():
    with pytest.raises(ValueError, match="use_gate=True"):
        TokenAttention(num_heads=2, key_dim=3, use_gate=True)
    with pytest.raises(ValueError, match="attention_axes=.2, 3."):
        TokenAttention(num_heads=2, key_dim=3, attention_axes=(2, 3))
    layer = TokenAttention(num_heads=2, key_dim=3)
    with pytest.raises(ValueError, match="query has shape"):
        layer(np.zeros((2, 3, 4, 5), "float32"), np.zeros((2, 3, 4, 5), "float32"))


def test_decoder_weights_saved_with_keras_attention_load_unchanged(tmp_path):
    """A DecoderLayer whose attention is Keras' MultiHeadAttention (as saved before TokenAttention) and
    one with TokenAttention share one weights file: loading it gives the same outputs."""
    import keras

    from fra_keras.models import mask_decoder

    rng = np.random.default_rng(7)
    tgt, memory = rng.normal(size=(2, 3, 8)).astype("float32"), rng.normal(size=(2, 6, 8)).astype("float32")
    pos, qpos = rng.normal(size=(1, 6, 8)).astype("float32"), rng.normal(size=(1, 3, 8)).astype("float32")

    def model(layer):
        inputs = [keras.Input(x.shape[1:], batch_size=x.shape[0]) for x in (tgt, memory, pos, qpos)]
        return keras.Model(inputs, layer(*inputs))

    original = mask_decoder.TokenAttention
    mask_decoder.TokenAttention = keras.layers.MultiHeadAttention
    try:
        old = model(DecoderLayer(dim=8, num_heads=2, ffn_dim=5, dropout=0.1))
    finally:
        mask_decoder.TokenAttention = original
    assert type(old.layers[-1].self_attn) is keras.layers.MultiHeadAttention
    randomize_weights(old, rng)
    old.save_weights(tmp_path / "old.weights.h5")
    new = model(DecoderLayer(dim=8, num_heads=2, ffn_dim=5, dropout=0.1))
    assert type(new.layers[-1].self_attn) is TokenAttention
    new.load_weights(tmp_path / "old.weights.h5")
    np.testing.assert_allclose(new.predict_on_batch([tgt, memory, pos, qpos]),
                               old.predict_on_batch([tgt, memory, pos, qpos]), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# Neck
# ---------------------------------------------------------------------------------------------------

NECK = dict(hidden_dim=10, proj_dim=8, num_regions=3, decoder_dim=8, decoder_heads=2, decoder_layers=1,
            decoder_ffn_dim=6, decoder_dropout=0.0, heatmap_scale=0.5)


def test_neck_training_forward_matches_numpy():
    rng = np.random.default_rng(5)
    neck = FRANeck(name="neck", **NECK)
    neck.build((None, None, None, 12))
    randomize_weights(neck, rng)
    f = rng.normal(size=(2, 3, 4, 12)).astype("float32")
    out = {k: v.numpy() for k, v in neck(f, training=True).items()}
    assert set(out) == {"z", "pixel", "masks", "mask_mean", "logits", "attention", "regions"}

    def mlp(name, x):
        head = getattr(neck, name)
        return np_mlp_train(x, head.dense1.kernel.numpy(), head.norm.gamma.numpy(), head.norm.beta.numpy(),
                            head.dense2.kernel.numpy())[0]

    f64 = f.astype(np.float64)
    z = mlp("proj", f64.mean(axis=(1, 2)))
    pixel = mlp("pixel_proj", f64)
    masks = np_mask_decoder(f, neck.mask_decoder, "neck/mask_decoder/")
    e = masks.mean(0)
    logits = np.einsum("bhwd,kd->bhwk", _l2n(pixel), _l2n(e))
    s = logits / NECK["heatmap_scale"]
    att = np.exp(s - s.max(-1, keepdims=True))
    att = att / att.sum(-1, keepdims=True) + ATTN_FLOOR
    a = att / att.sum(axis=(1, 2), keepdims=True)
    pooled = np.einsum("bhwk,bhwc->bkc", a, f64)   # WAP pools the raw features F, not the projection
    regions = mlp("region_proj", pooled)
    for name, ref in dict(z=z, pixel=pixel, masks=masks, mask_mean=e, logits=logits, attention=att,
                          regions=regions).items():
        np.testing.assert_allclose(out[name], ref, rtol=2e-4, atol=2e-4, err_msg=name)
    assert out["z"].shape == (2, 8) and out["regions"].shape == (2, 3, 8) and out["logits"].shape == (2, 3, 4, 3)


def test_neck_without_region_branch():
    neck = FRANeck(region_branch=False, **NECK)
    neck.build((None, None, None, 12))
    assert {v.path.split("/")[1] for v in neck.trainable_variables} == {"proj"}
    out = neck(np.ones((2, 3, 3, 12), "float32"), training=True)
    assert set(out) == {"z"}

