"""LARS, the warm-up + cosine learning-rate schedule and the EMA momentum schedule.

Formulas: docs/method.md, "Optimiser and schedules" and "EMA target".

LARS (the reference's `utils/LARS.py`), per variable w with gradient g:
  adapted:  trust = eta * ||w|| / (||g|| + wd * ||w|| + eps);  u = lr * trust * (g + wd * w)
  excluded: u = lr * g
  buf <- momentum * buf + u;  w <- w - buf      (momentum on the lr-scaled update; no dampening/Nesterov)

Exclusion follows the reference's name rule (`main.py::collect_params`: names containing "bn",
"downsample.1" or "bias"). In Keras names that means: every bias and every BatchNorm / LayerNorm beta
(PyTorch calls both `.bias`), and every variable of a layer whose name contains "bn" (the backbone's
BatchNorm layers, including `*_downsample_bn`). The downsample 1x1 conv kernels are adapted and decayed,
as `downsample.0.weight` is in the reference. Not excluded, as in the reference: the projector /
predictor BatchNorm gammas (layer "norm"), LayerNorm gammas, the query embeddings, all kernels.

Stacked attention projections: PyTorch's `nn.MultiheadAttention` keeps the query, key and value
projections of one attention layer as a single `in_proj_weight` (3D, D), so the reference computes ONE
trust ratio for the three. Keras' `MultiHeadAttention` keeps three kernels; LARS groups them
(`lars_group_key`) and computes the norms of w and g over the group, so each attention layer moves as
in the reference (docs/method.md, "LARS").
"""

from __future__ import annotations

import math
import re

import keras
import tensorflow as tf

from fra_keras.config import FRAConfig

_EXCLUDED_VARIABLE = re.compile(r"(^|/)(bias|beta)$")
_EXCLUDED_LAYER = re.compile(r"bn")  # includes "*_downsample_bn" (the reference's downsample.1)


_STACKED_PROJECTION = re.compile(r"^(.*)/(query|key|value)/kernel$")


def lars_group_key(path: str):
    """The attention layer whose stacked q/k/v projection holds the variable at `path`, or None.

    ".../self_attn/query/kernel", ".../self_attn/key/kernel" and ".../self_attn/value/kernel" share
    the key ".../self_attn" (PyTorch's one `in_proj_weight`); every other variable has its own trust
    ratio. Biases are excluded from LARS anyway, so only kernels are grouped.
    """
    match = _STACKED_PROJECTION.match(path)
    return match.group(1) if match else None


def lars_excluded(path: str) -> bool:
    """True when the variable at `path` ("layer/.../name") skips LARS adaptation and weight decay."""
    if _EXCLUDED_VARIABLE.search(path):
        return True
    layer_part = path.rsplit("/", 1)[0] if "/" in path else ""
    return bool(_EXCLUDED_LAYER.search(layer_part))


@keras.saving.register_keras_serializable(package="fra_keras")
class LARS(keras.optimizers.Optimizer):
    """Layer-wise Adaptive Rate Scaling with FRA's exclusion rule (see module docstring).

    Args:
      learning_rate: float or schedule (0.9 in the paper recipe, no batch-size scaling).
      momentum: 0.9. lars_weight_decay: 1e-6 (applied inside the update, not by the Keras base class).
      eta: trust coefficient 0.001. epsilon: 1e-8.
    """

    def __init__(self, learning_rate=0.9, momentum=0.9, lars_weight_decay=1e-6, eta=0.001, epsilon=1e-8,
                 name="lars", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum={momentum!r} must be in [0, 1)")
        self.momentum = float(momentum)
        self.lars_weight_decay = float(lars_weight_decay)
        self.eta = float(eta)
        self.epsilon = float(epsilon)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums = self.add_optimizer_variables(var_list, "momentum")
        self._excluded = [lars_excluded(v.path) for v in var_list]
        # Groups of variables that share one trust ratio (stacked q/k/v kernels): member indices per
        # variable, and per member a pair (||w||^2, ||g||^2) taken before any member of the step moves.
        keys = [None if ex else lars_group_key(v.path) for v, ex in zip(var_list, self._excluded)]
        members = {}
        for i, key in enumerate(keys):
            if key is not None:
                members.setdefault(key, []).append(i)
        self._group = [members[k] if k is not None and len(members[k]) > 1 else None for k in keys]
        self._sq_norms = {i: self.add_variable((2,), initializer="zeros", dtype="float32",
                                               name=f"lars_sq_norms_{i}")
                          for i, group in enumerate(self._group) if group is not None}

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        # Grouped variables need the weight and gradient norms of the whole group before any member
        # moves: a first pass stores each member's squared norms (per device, from the all-reduced
        # gradient), then the ordinary per-variable updates run.
        def store_sq_norms(var, grad, index):
            self._sq_norms[index].assign(tf.stack([2.0 * tf.nn.l2_loss(tf.cast(var, tf.float32)),
                                                   2.0 * tf.nn.l2_loss(tf.cast(grad, tf.float32))]))

        for grad, var in grads_and_vars:
            index = self._get_variable_index(var)
            if index in self._sq_norms:
                distribution.extended.update(var, store_sq_norms, args=(grad, index), group=False)
        super()._distributed_tf_update_step(distribution, grads_and_vars, learning_rate)

    def _norms(self, index, w, g):
        """(||w||, ||g||) of the variable, or of its q/k/v group (float32-accumulated for groups)."""
        group = self._group[index]
        if group is None:
            # ||x|| = sqrt(2 * l2_loss(x)): one fused reduction, no squared copy of the tensor.
            return tf.sqrt(2.0 * tf.nn.l2_loss(w)), tf.sqrt(2.0 * tf.nn.l2_loss(g))
        sq = tf.sqrt(tf.add_n([tf.convert_to_tensor(self._sq_norms[i]) for i in group]))
        return tf.cast(sq[0], w.dtype), tf.cast(sq[1], w.dtype)

    def update_step(self, gradient, variable, learning_rate):
        lr = tf.cast(learning_rate, variable.dtype)
        g = tf.cast(gradient, variable.dtype)
        index = self._get_variable_index(variable)
        buf = self._momentums[index]
        if self._excluded[index]:
            update = lr * g
        else:
            w = tf.convert_to_tensor(variable)
            w_norm, g_norm = self._norms(index, w, g)
            wd = tf.cast(self.lars_weight_decay, variable.dtype)
            trust = self.eta * w_norm / (g_norm + wd * w_norm + self.epsilon)
            coef = lr * trust  # scalar first: one pass over the tensor below instead of two
            update = coef * g + (coef * wd) * w
        self._momentum_step(variable, buf, update)

    def _momentum_step(self, variable, buf, update):
        """buf <- momentum * buf + update; w <- w - buf.

        TensorFlow's fused `ResourceApplyMomentum` kernel (accum = accum * momentum + grad;
        var -= lr * accum, with lr = 1) does exactly this in one pass instead of four; it has CPU, GPU
        and XLA kernels and runs inside `Strategy.extended.update` like the Keras 2 optimisers did.
        Falls back to plain assignments for variables without a resource handle.
        """
        tf_var = variable.value if isinstance(variable, keras.Variable) else variable
        tf_buf = buf.value if isinstance(buf, keras.Variable) else buf
        try:
            var_handle, buf_handle = tf_var.handle, tf_buf.handle
        except (AttributeError, ValueError):
            self.assign(buf, self.momentum * buf + update)
            self.assign_sub(variable, buf)
            return
        dtype = tf_var.dtype
        tf.raw_ops.ResourceApplyMomentum(
            var=var_handle, accum=buf_handle, lr=tf.constant(1.0, dtype), grad=tf.cast(update, dtype),
            momentum=tf.constant(self.momentum, dtype), use_locking=False, use_nesterov=False)

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, lars_weight_decay=self.lars_weight_decay, eta=self.eta,
                      epsilon=self.epsilon)
        return config


@keras.saving.register_keras_serializable(package="fra_keras")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """The reference's schedule (docs/method.md, "Optimiser and schedules"): per-step linear warm-up,
    then a cosine per epoch.

    step t < W*S: lr = base * (t + 1) / (W * S)
    otherwise:    lr = base * 0.5 * (1 + cos(pi * (e - W) / (E - W))), e = floor(t / S), constant in an
                  epoch, no floor (the last epoch is about base * 0.0015 for E=50, W=10).
    S = steps per epoch, W = warm-up epochs, E = epochs.
    """

    def __init__(self, base_lr, steps_per_epoch, epochs, warmup_epochs):
        self.base_lr = float(base_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)
        self.warmup_epochs = int(warmup_epochs)

    def __call__(self, step):
        t = tf.cast(step, tf.float32)
        s = float(self.steps_per_epoch)
        warmup_steps = float(self.warmup_epochs * self.steps_per_epoch)
        warm = self.base_lr * (t + 1.0) / max(warmup_steps, 1.0)
        epoch = tf.minimum(tf.floor(t / s), float(self.epochs - 1))
        span = float(max(self.epochs - self.warmup_epochs, 1))
        cosine = self.base_lr * 0.5 * (1.0 + tf.cos(math.pi * (epoch - self.warmup_epochs) / span))
        return tf.where(t < warmup_steps, warm, cosine)

    def get_config(self):
        return dict(base_lr=self.base_lr, steps_per_epoch=self.steps_per_epoch, epochs=self.epochs,
                    warmup_epochs=self.warmup_epochs)


def ema_momentum(step, total_steps, base=0.996):
    """Cosine EMA momentum m_t = 1 - (1 - base) * (cos(pi t / T) + 1) / 2 (docs/method.md, "EMA target"): base -> 1."""
    t = tf.cast(step, tf.float32)
    return 1.0 - (1.0 - base) * (tf.cos(math.pi * t / float(max(total_steps, 1))) + 1.0) / 2.0


def build_optimizer(config: FRAConfig, steps_per_epoch: int):
    """The optimiser named by the config, with the warm-up + cosine schedule over the planned steps."""
    schedule = WarmupCosine(config.learning_rate, steps_per_epoch, config.epochs, config.warmup_epochs)
    name = config.optimizer
    if name == "lars":
        opt = LARS(schedule, momentum=config.momentum, lars_weight_decay=config.weight_decay,
                   eta=config.lars_eta, epsilon=config.lars_eps)
    elif name == "sgd":
        opt = keras.optimizers.SGD(schedule, momentum=config.momentum, weight_decay=config.weight_decay or None)
    elif name == "adamw":
        opt = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
    elif name == "lion":
        opt = keras.optimizers.Lion(schedule, weight_decay=config.weight_decay or None)
    elif name == "lamb":
        opt = keras.optimizers.Lamb(schedule, weight_decay=config.weight_decay or None)
    else:  # validated by FRAConfig; kept for direct callers
        raise ValueError(f"optimizer={name!r} is not supported")
    if name != "lars" and config.weight_decay:
        # Same exclusion as LARS: no decay on biases / norms (the reference's rule).
        opt.exclude_from_weight_decay(var_names=["bias", "beta", "bn"])
    if config.precision == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt
