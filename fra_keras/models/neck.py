"""The FRA neck (the reference's `ObjectNeck`, mask_type="attn"; docs/method.md, "Neck and heatmaps").

From the backbone map F (B, h, w, C) it computes, for one network (online or target) and one view:
  z   = proj(GAP(F))                                   global embedding        (B, D)
  P   = pixel_proj(F)                                  per-pixel embeddings    (B, h, w, D)
  E   = mask_decoder(F)                                mask embeddings         (B, K, D)
  e   = mean of E over the global batch                shared embeddings       (K, D)
  S   = cos(P, e)                                      region logits           (B, h, w, K)
  M   = softmax_K(S / scale) + 1e-7                    heatmaps                (B, h, w, K)
  r   = region_proj(WAP(F, M))                         region embeddings       (B, K, D)
The math lives in `fra_keras.losses`; this layer only wires the sub-layers.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from fra_keras import distributed, losses
from fra_keras.models.heads import MLPHead
from fra_keras.models.mask_decoder import MaskDecoder


@keras.saving.register_keras_serializable(package="fra_keras")
class FRANeck(layers.Layer):
    """Global / pixel / region projectors and the mask decoder of one network.

    With `region_branch=False` (plain BYOL) only the global projector exists.
    """

    def __init__(self, hidden_dim=4096, proj_dim=256, num_regions=8, decoder_dim=256, decoder_heads=8,
                 decoder_layers=2, decoder_ffn_dim=256, decoder_dropout=0.1, heatmap_scale=1.0,
                 region_branch=True, bn_momentum=0.9, bn_epsilon=1e-5, synchronized=False,
                 decoder_query_content=False, fused_batchnorm=True, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim, self.proj_dim, self.num_regions = int(hidden_dim), int(proj_dim), int(num_regions)
        self.decoder_dim, self.decoder_heads = int(decoder_dim), int(decoder_heads)
        self.decoder_layers, self.decoder_ffn_dim = int(decoder_layers), int(decoder_ffn_dim)
        self.decoder_dropout, self.heatmap_scale = float(decoder_dropout), float(heatmap_scale)
        self.region_branch = bool(region_branch)
        self.decoder_query_content = bool(decoder_query_content)
        self.bn_momentum, self.bn_epsilon, self.synchronized = float(bn_momentum), float(bn_epsilon), bool(synchronized)
        self.fused_batchnorm = bool(fused_batchnorm)
        mlp = dict(bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon, synchronized=self.synchronized,
                   fused_batchnorm=self.fused_batchnorm, dtype=self.dtype_policy)
        self.proj = MLPHead(self.hidden_dim, self.proj_dim, name="proj", **mlp)
        if self.region_branch:
            self.pixel_proj = MLPHead(self.hidden_dim, self.proj_dim, name="pixel_proj", **mlp)
            self.region_proj = MLPHead(self.hidden_dim, self.proj_dim, name="region_proj", **mlp)
            self.mask_decoder = MaskDecoder(self.num_regions, self.decoder_dim, self.decoder_heads,
                                            self.decoder_layers, self.decoder_ffn_dim, self.decoder_dropout,
                                            query_content=self.decoder_query_content,
                                            dtype=self.dtype_policy, name="mask_decoder")

    def build(self, feature_shape):
        channels = feature_shape[-1]
        self.proj.build((None, channels))
        if self.region_branch:
            self.pixel_proj.build((None, None, None, channels))
            self.region_proj.build((None, None, channels))
            self.mask_decoder.build((None, None, None, channels))
        self.built = True

    def call(self, features, training=None):
        """features (B, h, w, C) -> dict of z (B, D) and, with the region branch, pixel (B, h, w, D),
        masks (B, K, D), mask_mean (K, D), logits (B, h, w, K), attention (B, h, w, K),
        regions (B, K, D)."""
        pooled = tf.reduce_mean(features, axis=[1, 2])
        out = {"z": self.proj(pooled, training=training)}
        if not self.region_branch:
            return out
        pixel = self.pixel_proj(features, training=training)
        masks = self.mask_decoder(features, training=training)
        # Global-batch mean of the mask embeddings (all-reduced across replicas; docs/method.md, "Neck and heatmaps").
        mask_mean = distributed.cross_replica_mean(tf.reduce_mean(tf.cast(masks, tf.float32), axis=0))
        attention, logits = losses.region_heatmaps(pixel, mask_mean, self.heatmap_scale, return_logits=True)
        pooled_regions = losses.region_features(features, attention)
        regions = self.region_proj(tf.cast(pooled_regions, self.compute_dtype), training=training)
        out.update(pixel=pixel, masks=masks, mask_mean=mask_mean, logits=logits, attention=attention,
                   regions=regions)
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim, proj_dim=self.proj_dim, num_regions=self.num_regions,
            decoder_dim=self.decoder_dim, decoder_heads=self.decoder_heads, decoder_layers=self.decoder_layers,
            decoder_ffn_dim=self.decoder_ffn_dim, decoder_dropout=self.decoder_dropout,
            heatmap_scale=self.heatmap_scale, region_branch=self.region_branch, bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon, synchronized=self.synchronized,
            decoder_query_content=self.decoder_query_content, fused_batchnorm=self.fused_batchnorm)
        return config
