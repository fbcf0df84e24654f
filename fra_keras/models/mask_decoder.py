"""The facial-mask-embedding decoder (docs/method.md, "Neck and heatmaps"; the reference's `TransformerPredictor`).

K learnable query embeddings act as *query positional embeddings* over a zero target; two post-norm
DETR decoder layers (self-attention, cross-attention to the 1x1-projected backbone map with 2-D sine
positions, FFN) and a final LayerNorm refine them; a 3-layer MLP gives the K mask embeddings E (B, K, D).
The decoder attends to the raw backbone map F, not to the pixel projection.

Initialisers follow the PyTorch reference:
* input projection: kaiming_uniform(a=1) -> VarianceScaling(1, fan_in, uniform), bias 0;
* everything inside the transformer with rank > 1: xavier_uniform (on PyTorch's stacked q/k/v matrix,
  reproduced by `_torch_attention_init`; GlorotUniform for the FFN); MHA biases 0;
  the FFN biases keep PyTorch's Linear default U(+-1/sqrt(fan_in));
* the mask-embedding MLP: PyTorch Linear default -> VarianceScaling(1/3, fan_in, uniform), same bias;
* the query embeddings: nn.Embedding default N(0, 1).
LayerNorm epsilon is PyTorch's 1e-5 (Keras' default is 1e-3).

The attention layers are `TokenAttention`: Keras' `MultiHeadAttention` with the same weights, computed
with plain matmuls on the flattened tokens (docs/scaling.md, section 5, "The FRA step against its backbone
floor").
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import layers


def torch_linear_bias(fan_in):
    """PyTorch's default Linear bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def torch_linear_kernel():
    """PyTorch's default Linear weight init (kaiming_uniform with a=sqrt(5)) == U(+-1/sqrt(fan_in))."""
    return keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_in", distribution="uniform")


def sine_position_encoding(height, width, dim, temperature=10000.0, scale=2.0 * math.pi):
    """DETR 2-D sine positional encoding, normalised (docs/method.md, "Neck and heatmaps").

    Row / column indices 1..h / 1..w are divided by (h + 1e-6) / (w + 1e-6) and multiplied by 2 pi;
    for i in 0..dim/2-1, dim_t[i] = temperature ** (2 * floor(i / 2) / (dim / 2)); channels interleave
    sin (even i) and cos (odd i); the output is concat(pos_y, pos_x).
    Returns: (h, w, dim) float32.
    """
    npf = dim // 2
    y = (tf.range(1, height + 1, dtype=tf.float32) / (tf.cast(height, tf.float32) + 1e-6)) * scale
    x = (tf.range(1, width + 1, dtype=tf.float32) / (tf.cast(width, tf.float32) + 1e-6)) * scale
    i = tf.range(npf, dtype=tf.float32)
    dim_t = tf.pow(float(temperature), 2.0 * tf.floor(i / 2.0) / float(npf))
    even = tf.cast(tf.range(npf) % 2 == 0, tf.float32)

    def encode(p):  # (n,) -> (n, npf)
        a = p[:, None] / dim_t[None, :]
        return even * tf.sin(a) + (1.0 - even) * tf.cos(a)

    pos_y = tf.broadcast_to(encode(y)[:, None, :], [height, width, npf])
    pos_x = tf.broadcast_to(encode(x)[None, :, :], [height, width, npf])
    return tf.concat([pos_y, pos_x], axis=-1)


@keras.saving.register_keras_serializable(package="fra_keras")
class TokenAttention(layers.MultiHeadAttention):
    """`keras.layers.MultiHeadAttention` on sequences, computed as matmuls on flattened tokens.

    query (B, T, Dq), value (B, S, Dv), key (B, S, Dk; default: value) -> (B, T, Dq).
    The same function and the same weights as the parent class: the sub-layers `query`, `key`, `value`
    (EinsumDense kernels (D, heads, head_dim), biases (heads, head_dim)) and `attention_output` (kernel
    (heads, head_dim, D), bias (D,)) are built, named, ordered, initialised and saved by the parent, so
    `.keras` files, weight paths (LARS' `lars_group_key`) and `set_weights` are unchanged. Only `call`
    differs: each projection is ONE (B*T, D) x (D, heads*head_dim) matmul (plus bias) on the flattened
    tokens instead of the parent's EinsumDense, whose kernel gradient TensorFlow computes as a batch of
    per-sample outer products followed by a sum over the batch (docs/scaling.md, section 5); the
    attention itself is two batched matmuls over (B, heads). The scaling of the projected query by
    1/sqrt(head_dim), the softmax over the keys and the dropout on the attention weights (the parent's own
    `_softmax` and `_dropout_layer` sub-layers, so the same seeded masks) follow the parent's path.

    Supported: the parent's arguments except `use_gate`, `sliding_window` and `attention_axes` other
    than the sequence axis; no attention masks (the decoder uses none).
    """

    def __init__(self, num_heads, key_dim, dropout=0.0, attention_axes=None, use_gate=False,
                 sliding_window=None, **kwargs):
        if attention_axes not in (None, 1, (1,), [1]):
            raise ValueError(f"TokenAttention: attention_axes={attention_axes!r} is not supported; allowed: "
                             "None or 1 (the sequence axis of (B, T, D) inputs)")
        if use_gate:
            raise ValueError(f"TokenAttention: use_gate={use_gate!r} is not supported; allowed: False")
        if sliding_window is not None:
            raise ValueError(f"TokenAttention: sliding_window={sliding_window!r} is not supported; "
                             "allowed: None")
        super().__init__(num_heads, key_dim, dropout=dropout, attention_axes=attention_axes, **kwargs)

    def _dense_on_tokens(self, dense, x, contracted):
        """x (B, T, *in) through the EinsumDense `dense` (kernel (*in, *out), bias (*out) or None) ->
        (B, T, *out), as ONE (B*T, prod(in)) x (prod(in), prod(out)) matmul; `contracted` = len(in)."""
        kernel = tf.cast(dense.kernel, self.compute_dtype)
        fan_in, out_shape = math.prod(kernel.shape[:contracted]), list(kernel.shape[contracted:])
        fan_out = math.prod(out_shape)
        y = tf.matmul(tf.reshape(x, [-1, fan_in]), tf.reshape(kernel, [fan_in, fan_out]))
        if dense.bias is not None:
            y = tf.nn.bias_add(y, tf.reshape(tf.cast(dense.bias, self.compute_dtype), [fan_out]))
        return tf.reshape(y, tf.concat([tf.shape(x)[:2], out_shape], axis=0))

    def call(self, query, value, key=None, training=None):
        if key is None:
            key = value
        for name, x in (("query", query), ("value", value), ("key", key)):
            if len(x.shape) != 3:
                raise ValueError(f"TokenAttention: {name} has shape {tuple(x.shape)}; allowed: (B, T, D)")
        heads_first = [0, 2, 1, 3]
        q = tf.transpose(self._dense_on_tokens(self._query_dense, query, 1), heads_first)   # (B, N, T, H)
        k = tf.transpose(self._dense_on_tokens(self._key_dense, key, 1), heads_first)       # (B, N, S, H)
        v = tf.transpose(self._dense_on_tokens(self._value_dense, value, 1), heads_first)   # (B, N, S, Hv)
        q = q * tf.cast(self._inverse_sqrt_key_dim, q.dtype)
        weights = self._softmax(tf.matmul(q, k, transpose_b=True))                           # (B, N, T, S)
        if self._dropout > 0.0:
            weights = self._dropout_layer(weights, training=training)
        heads = tf.transpose(tf.matmul(weights, v), heads_first)                             # (B, T, N, Hv)
        return self._dense_on_tokens(self._output_dense, heads, 2)                           # (B, T, D)

    def get_config(self):
        config = super().get_config()
        config["attention_axes"] = None   # the only supported value (build() stores it as (1,))
        return config


def _torch_attention_init(mha, dim):
    """Re-draw MHA kernels as PyTorch's Transformer does (xavier_uniform on the stacked weights).

    PyTorch stores q/k/v as one (3D, D) matrix, so xavier gives U(+-sqrt(6 / 4D)) to each of them, and
    the (D, D) output projection U(+-sqrt(6 / 2D)). Keras' GlorotUniform on its per-head kernel shapes
    (D, heads, D/heads) would compute other fans, so the kernels are set explicitly here.
    """
    qkv_bound = math.sqrt(6.0 / (4.0 * dim))
    out_bound = math.sqrt(6.0 / (2.0 * dim))
    for dense, bound in ((mha.query_dense, qkv_bound), (mha.key_dense, qkv_bound),
                         (mha.value_dense, qkv_bound), (mha.output_dense, out_bound)):
        kernel = dense.kernel
        kernel.assign(keras.random.uniform(kernel.shape, -bound, bound, dtype=kernel.dtype))


@keras.saving.register_keras_serializable(package="fra_keras")
class DecoderLayer(layers.Layer):
    """One post-norm DETR decoder layer: self-attention, cross-attention, FFN, each with residual + LN.

    tgt (B, K, D), memory (B, L, D), pos (1 or B, L, D), query_pos (1 or B, K, D) -> (B, K, D).
    Positions are added to queries and keys only, never to values.
    """

    def __init__(self, dim=256, num_heads=8, ffn_dim=256, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.num_heads, self.ffn_dim, self.dropout = int(dim), int(num_heads), int(ffn_dim), float(dropout)
        key_dim = self.dim // self.num_heads
        mha = dict(num_heads=self.num_heads, key_dim=key_dim, dropout=self.dropout,
                   kernel_initializer="glorot_uniform", bias_initializer="zeros", dtype=self.dtype_policy)
        self.self_attn = TokenAttention(name="self_attn", **mha)
        self.cross_attn = TokenAttention(name="cross_attn", **mha)
        self.linear1 = layers.Dense(self.ffn_dim, kernel_initializer="glorot_uniform",
                                    bias_initializer=torch_linear_bias(self.dim), dtype=self.dtype_policy,
                                    name="linear1")
        self.linear2 = layers.Dense(self.dim, kernel_initializer="glorot_uniform",
                                    bias_initializer=torch_linear_bias(self.ffn_dim), dtype=self.dtype_policy,
                                    name="linear2")
        self.norm1, self.norm2, self.norm3 = (
            layers.LayerNormalization(epsilon=1e-5, dtype=self.dtype_policy, name=f"norm{i}") for i in (1, 2, 3))
        self.drop1, self.drop2, self.drop3, self.drop_ffn = (
            layers.Dropout(self.dropout, dtype=self.dtype_policy) for _ in range(4))

    def build(self, tgt_shape, memory_shape=None):
        d = self.dim
        self.self_attn.build((None, None, d), (None, None, d), (None, None, d))
        self.cross_attn.build((None, None, d), (None, None, d), (None, None, d))
        for mha in (self.self_attn, self.cross_attn):
            _torch_attention_init(mha, d)
        self.linear1.build((None, None, d))
        self.linear2.build((None, None, self.ffn_dim))
        for norm in (self.norm1, self.norm2, self.norm3):
            norm.build((None, None, d))
        self.built = True

    def call(self, tgt, memory, pos, query_pos, training=None):
        q = tgt + query_pos
        sa = self.self_attn(query=q, value=tgt, key=q, training=training)
        tgt = self.norm1(tgt + self.drop1(sa, training=training))
        ca = self.cross_attn(query=tgt + query_pos, value=memory, key=memory + pos, training=training)
        tgt = self.norm2(tgt + self.drop2(ca, training=training))
        ffn = self.linear2(self.drop_ffn(keras.ops.relu(self.linear1(tgt)), training=training))
        return self.norm3(tgt + self.drop3(ffn, training=training))

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim, num_heads=self.num_heads, ffn_dim=self.ffn_dim, dropout=self.dropout)
        return config


@keras.saving.register_keras_serializable(package="fra_keras")
class MaskDecoder(layers.Layer):
    """Backbone map F (B, h, w, C) -> K facial mask embeddings E (B, K, D).

    Args:
      num_queries: K (8 in the paper recipe).
      dim: transformer width D (256), also the mask-embedding size.
      num_heads: 8 (head size 32). num_layers: 2 decoder layers. ffn_dim: 256. dropout: 0.1 (also on
      the attention weights, like nn.MultiheadAttention(dropout=0.1)).
      query_content: False (the reference): the decoder input is a zero target and the K learnable
        embeddings are only query *positions*, so all K outputs start as nearly the same average of
        the memory. True (opt-in, docs/method.md "Region recipes"): a second set of K learnable
        embeddings ``query_content`` (N(0, 1)) is the initial target, as in Mask2Former's
        ``query_feat``, so the K mask embeddings differ from the first step.
    """

    def __init__(self, num_queries=8, dim=256, num_heads=8, num_layers=2, ffn_dim=256, dropout=0.1,
                 query_content=False, **kwargs):
        super().__init__(**kwargs)
        self.num_queries, self.dim, self.num_heads = int(num_queries), int(dim), int(num_heads)
        self.num_layers, self.ffn_dim, self.dropout = int(num_layers), int(ffn_dim), float(dropout)
        self.query_content = bool(query_content)
        self.input_proj = layers.Dense(
            self.dim, kernel_initializer=keras.initializers.VarianceScaling(1.0, "fan_in", "uniform"),
            bias_initializer="zeros", dtype=self.dtype_policy, name="input_proj")
        self.decoder_layers = [
            DecoderLayer(self.dim, self.num_heads, self.ffn_dim, self.dropout, dtype=self.dtype_policy,
                         name=f"decoder_layer{i}") for i in range(self.num_layers)]
        self.decoder_norm = layers.LayerNormalization(epsilon=1e-5, dtype=self.dtype_policy, name="decoder_norm")
        self.mask_mlp = [
            layers.Dense(self.dim, activation="relu" if i < 2 else None, kernel_initializer=torch_linear_kernel(),
                         bias_initializer=torch_linear_bias(self.dim), dtype=self.dtype_policy,
                         name=f"mask_embed{i}") for i in range(3)]

    def build(self, input_shape):
        channels = input_shape[-1]
        self.query_embed = self.add_weight(shape=(self.num_queries, self.dim),
                                           initializer=keras.initializers.RandomNormal(0.0, 1.0),
                                           name="query_embed")
        if self.query_content:
            self.query_content_embed = self.add_weight(
                shape=(self.num_queries, self.dim), initializer=keras.initializers.RandomNormal(0.0, 1.0),
                name="query_content")
        self.input_proj.build((None, channels))
        for layer in self.decoder_layers:
            layer.build((None, self.num_queries, self.dim))
        self.decoder_norm.build((None, None, self.dim))
        for dense in self.mask_mlp:
            dense.build((None, None, self.dim))
        self.built = True

    def call(self, features, training=None):
        shape = tf.shape(features)
        batch, height, width = shape[0], shape[1], shape[2]
        memory = self.input_proj(features)                               # (B, h, w, D)
        memory = tf.reshape(memory, [batch, height * width, self.dim])   # (B, L, D)
        pos = sine_position_encoding(height, width, self.dim)
        pos = tf.cast(tf.reshape(pos, [1, height * width, self.dim]), memory.dtype)
        query_pos = tf.cast(self.query_embed[None], memory.dtype)       # (1, K, D)
        if self.query_content:
            tgt = tf.broadcast_to(tf.cast(self.query_content_embed[None], memory.dtype),
                                  [batch, self.num_queries, self.dim])
        else:
            tgt = tf.zeros([batch, self.num_queries, self.dim], dtype=memory.dtype)
        for layer in self.decoder_layers:
            tgt = layer(tgt, memory, pos, query_pos, training=training)
        out = self.decoder_norm(tgt)
        for dense in self.mask_mlp:
            out = dense(out)
        return out

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_queries, self.dim)

    def get_config(self):
        config = super().get_config()
        config.update(num_queries=self.num_queries, dim=self.dim, num_heads=self.num_heads,
                      num_layers=self.num_layers, ffn_dim=self.ffn_dim, dropout=self.dropout,
                      query_content=self.query_content)
        return config
