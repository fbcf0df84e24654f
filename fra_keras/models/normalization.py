"""BatchNormalization whose training-mode pass runs TensorFlow's fused kernel.

Keras 3 normalises a training batch with separate ops (moments, then `x * scale + shift`), and its
backward pass is the chain of those ops' gradients. TensorFlow's `FusedBatchNormV3` does the same
arithmetic in one kernel with a hand-written gradient kernel: on the 2-core CPU of docs/scaling.md
("Fused BatchNorm") it takes 11-15 % off the CPU time of the FRA step (ResNet-18 @112 and ResNet-50
@224) and about 60 MiB off its peak at ResNet-18. The mathematics is Keras's:

* output: (x - mean_B) / sqrt(var_B + eps) * gamma + beta over all axes but the last, with the biased
  batch variance var_B (what Keras and PyTorch normalise with);
* moving statistics: m <- momentum * m + (1 - momentum) * stat with Keras's *biased* variance. The
  fused kernel returns the unbiased one (var_B * n / (n - 1), n = values per channel), so it is scaled
  back by (n - 1) / n before the update.
* epsilon: cuDNN's kernel needs epsilon >= 1e-5, and TensorFlow's own wrapper
  (`tf.compat.v1.nn.fused_batch_norm`) raises it to 1.001e-5 so that float rounding stays above that;
  this layer does the same on every device (CPU and GPU compute one thing), so the project's 1e-5
  becomes 1.001e-5 on this path: a relative change of at most 5e-9 / (var_B + eps) in the output.

The fused path runs only where it is the same computation: training mode, channels last, no mask, no
renormalisation, and not synchronized across more than one replica (SyncBN needs the all-reduced
moments of the unfused path). Inference (`training=False`), and hence export, is Keras's path
unchanged. `fused=False` turns the fused path off (`FRAConfig.fused_batchnorm`).
"""

import keras
import tensorflow as tf

# tf.compat.v1.nn.fused_batch_norm raises epsilon to this (cuDNN's CUDNN_BN_MIN_EPSILON is 1e-5; the
# margin keeps float32 rounding above it): https://www.tensorflow.org/api_docs/python/tf/compat/v1/nn/fused_batch_norm
FUSED_MIN_EPSILON = 1.001e-5


def unbiased_to_biased(variance, count):
    """Keras's biased batch variance from the fused kernel's unbiased one.

    variance: (C,) unbiased variance; count: number of values per channel n (scalar tensor).
    The kernel divides by max(n - 1, 1), so n = 1 (variance 0) stays 0.
    """
    n = tf.cast(count, variance.dtype)
    return variance * tf.maximum(n - 1.0, 1.0) / n


@keras.saving.register_keras_serializable(package="fra_keras")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with a fused training pass (module docstring).

    Same weights, names, arguments and saved format as the Keras layer, plus `fused` (bool).
    Input (..., C) of any rank >= 2, normalised over every axis but the last.
    """

    def __init__(self, *args, fused=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.fused = bool(fused)

    def _fused_applies(self, inputs, training, mask):
        if not (self.fused and training and self.trainable) or mask is not None or self.renorm:
            return False
        rank = len(inputs.shape)
        if rank < 2 or self.axis not in (-1, rank - 1):
            return False
        if self.synchronized:
            context = tf.distribute.get_replica_context()
            if context is not None and context.num_replicas_in_sync > 1:
                return False
        return True

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)        # Keras also normalises in float32 (overflow in fp16)
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        shape = tf.shape(x)
        flat = tf.reshape(x, [1, -1, 1, channels])   # NHWC view of (..., C): same per-channel moments
        empty = tf.constant([], tf.float32)
        y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=flat, scale=gamma, offset=beta, mean=empty, variance=empty,
            epsilon=max(self.epsilon, FUSED_MIN_EPSILON), exponential_avg_factor=1.0,
            data_format="NHWC", is_training=True)
        count = tf.shape(flat)[1]
        variance = unbiased_to_biased(variance, count)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(tf.reshape(y, shape), self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "fused": self.fused}
