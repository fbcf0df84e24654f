"""Projector / predictor MLPs (the reference's "MLP1D"; docs/method.md, "Neck and heatmaps").

The reference's MLP1D is Conv1d(k=1, no bias) -> BN -> ReLU -> Conv1d(k=1, no bias), run on (B, C, L)
tensors. Channel-last Dense layers on (..., C) tensors are the same map; BatchNormalization with
axis=-1 then pools its statistics over every leading axis (batch x pixels, batch x regions), as the
reference's BN1d does over batch x L.
"""

from __future__ import annotations

import keras
from keras import layers

from fra_keras.models.backbone import conv_initializer
from fra_keras.models.normalization import BatchNormalization


@keras.saving.register_keras_serializable(package="fra_keras")
class MLPHead(layers.Layer):
    """Dense(hidden, no bias) -> BatchNorm -> ReLU -> Dense(output, no bias); no BN after the last layer.

    Input (..., C_in) -> output (..., output_dim). Used for the global, pixel and region projectors
    (C -> hidden -> D) and both predictors (D -> hidden -> D).
    Init: kaiming_normal(fan_out, relu) on both kernels, like the reference's Conv1d init.
    The BN sub-layer is named "norm" (no "bn"), so LARS adapts and decays its gamma as the reference
    does for `mlp.1.weight` (optimizers.py).
    """

    def __init__(self, hidden_dim, output_dim, bn_momentum=0.9, bn_epsilon=1e-5, synchronized=False,
                 fused_batchnorm=True, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = int(hidden_dim)
        self.output_dim = int(output_dim)
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        self.synchronized = bool(synchronized)
        self.fused_batchnorm = bool(fused_batchnorm)
        self.dense1 = layers.Dense(self.hidden_dim, use_bias=False, kernel_initializer=conv_initializer(),
                                   dtype=self.dtype_policy, name="dense1")
        self.norm = BatchNormalization(axis=-1, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                                       synchronized=self.synchronized, fused=self.fused_batchnorm,
                                       dtype=self.dtype_policy, name="norm")
        self.dense2 = layers.Dense(self.output_dim, use_bias=False, kernel_initializer=conv_initializer(),
                                   dtype=self.dtype_policy, name="dense2")

    def build(self, input_shape):
        self.dense1.build(input_shape)
        hidden_shape = tuple(input_shape[:-1]) + (self.hidden_dim,)
        self.norm.build(hidden_shape)
        self.dense2.build(hidden_shape)
        self.built = True

    def call(self, x, training=None):
        x = self.dense1(x)
        x = self.norm(x, training=training)
        x = keras.ops.relu(x)
        return self.dense2(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim, output_dim=self.output_dim, bn_momentum=self.bn_momentum,
                      bn_epsilon=self.bn_epsilon, synchronized=self.synchronized,
                      fused_batchnorm=self.fused_batchnorm)
        return config
