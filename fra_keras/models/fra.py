"""`FRA(keras.Model)`: online + EMA target networks, predictors, prototypes and the training step.

Data flow of one step (docs/method.md, "Data flow of one training step" and "Formulas"), global batch B, K regions:
  view1, view2 --online--> z_a (B,D), r_a (B,K,D), S^o_a (B,h,w,K)   (a = 1, 2)
               --target--> z'_a, r'_a, S^t_a                         (EMA weights, no gradient)
  L = sum over (a,b) in {(1,2),(2,1)} of [ lam * L_g(q(z_a), z'_b) + (1-lam) * L_r(q_o(r_a), r'_b) ]
      + w_clu * 0.5 * sum_a clustering(S^o_a, S^t_a)
  (opt-in `cluster_targets="cross_view"`: clustering(S^o_a, S^t_b carried onto view a's grid), b != a)
then one optimiser step on the online network and predictors, then the EMA update of the target with
the cosine momentum, and the prototype EMA of both networks.

The target runs in training mode (batch-statistics BatchNorm, active dropout), as the reference's
`FRAB` does; it starts as a copy of the online weights, its BN statistics and prototypes are its own.
"""

from __future__ import annotations

import contextlib
import math

import keras
import tensorflow as tf

from fra_keras import distributed, losses
from fra_keras.config import ConfigError, FRAConfig
from fra_keras.data.augment import needs_geometry
from fra_keras.data.device_augment import GEOMETRY_SUFFIX, VIEWS, augment_views
from fra_keras.models.backbone import build_backbone
from fra_keras.models.heads import MLPHead
from fra_keras.models.neck import FRANeck
from fra_keras.optimizers import build_optimizer, ema_momentum

METRIC_NAMES = ("loss", "loss_global", "loss_region", "loss_cluster", "z_std", "region_entropy",
                "mask_cosine", "ema_momentum", "lr")


@contextlib.contextmanager
def dtype_policy(name):
    """Build layers under a Keras dtype policy, restoring the previous global policy afterwards."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def resolve_jit_compile(mode, strategy=None) -> bool:
    """Whether to XLA-compile the train step. `true` / `false` are obeyed.

    `auto`: on with a TPU; on with a GPU when the step runs as one replica; off on CPU (measured slower
    there, docs/stack.md) and off with several replicas (MirroredStrategy / MultiWorkerMirroredStrategy):
    Keras compiles `strategy.run` as a whole, and the step's cross-replica all-reduces (SyncBN, the
    global mask-embedding mean, Sinkhorn sums) cannot be compiled across devices -- Keras' own "auto"
    turns XLA off under tf.distribute for the same reason. `strategy`: default, the current one.
    """
    mode = str(mode).lower()
    if mode in ("true", "1"):
        return True
    if mode in ("false", "0"):
        return False
    strategy = strategy or tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.TPUStrategy) or tf.config.list_physical_devices("TPU"):
        return True
    if strategy.num_replicas_in_sync > 1:
        return False
    return bool(tf.config.list_physical_devices("GPU"))


def _views(data):
    x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    if isinstance(x, dict):
        if "view1" not in x or "view2" not in x:
            raise ValueError(f"FRA expects batches {{'view1': images, 'view2': images}}; got keys {sorted(x)}")
        return x["view1"], x["view2"]
    if isinstance(x, (tuple, list)) and len(x) == 2:
        return x[0], x[1]
    raise ValueError("FRA expects batches {'view1': (B,H,W,3), 'view2': (B,H,W,3)} or a pair of image "
                     f"tensors; got {type(x).__name__}")


def _geometries(data, config):
    """The views' crop geometries (B, 5) each (`augment.crop_geometry`) for the cross-view clustering
    loss, or None when the config does not use them."""
    if not needs_geometry(config):
        return None
    x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    keys = [view + GEOMETRY_SUFFIX for view in VIEWS]
    if not isinstance(x, dict) or any(key not in x for key in keys):
        raise ValueError(f"cluster_targets='cross_view' needs batches with {keys} (each view's crop box and "
                         "flip, as `pretraining_dataset` makes them for this config; for view pairs without "
                         "one, `fra_keras.data.augment.whole_image_geometry(batch_size)`, or --cluster-targets "
                         "same_view); got "
                         f"{sorted(x) if isinstance(x, dict) else type(x).__name__}")
    return [x[key] for key in keys]


def _sum_terms(terms):
    """(loss, parts) of the step from the two views' `FRA._view_loss` results: each summed over views."""
    (loss_a, parts_a), (loss_b, parts_b) = terms
    return loss_a + loss_b, {k: parts_a[k] + parts_b[k] for k in parts_a}


@keras.saving.register_keras_serializable(package="fra_keras")
class FRA(keras.Model):
    """FRA self-supervised pre-training model.

    Args:
      config: a `FRAConfig`, a dict of its fields, or None for the paper preset.
    Attributes:
      backbone: online ResNet, a plain functional `keras.Model` images (B,H,W,3) -> (B,h,w,C).
      neck / predictor / region_predictor: online heads. target_backbone / target_neck: EMA copies.
      prototypes: (K, D) EMA of the batch-mean mask embeddings, used for inference heatmaps.
    """

    def __init__(self, config=None, **kwargs):
        super().__init__(**kwargs)
        if config is None:
            config = FRAConfig()
        elif isinstance(config, dict):
            config = FRAConfig.from_dict(config)
        elif not isinstance(config, FRAConfig):
            raise ConfigError(f"config={config!r} must be a FRAConfig, a dict of its fields or None")
        self.config = config
        c = config
        with dtype_policy(c.precision):
            self.backbone = build_backbone(c, name="backbone")
            self.target_backbone = build_backbone(c, name="target_backbone")
            neck = dict(hidden_dim=c.hidden_dim, proj_dim=c.proj_dim, num_regions=c.num_regions,
                        decoder_dim=c.decoder_dim, decoder_heads=c.decoder_heads, decoder_layers=c.decoder_layers,
                        decoder_ffn_dim=c.decoder_ffn_dim, decoder_dropout=c.decoder_dropout,
                        heatmap_scale=c.heatmap_scale, region_branch=c.region_losses,
                        bn_momentum=c.bn_momentum, bn_epsilon=c.bn_epsilon, synchronized=c.sync_batchnorm,
                        decoder_query_content=c.decoder_query_content, fused_batchnorm=c.fused_batchnorm)
            self.neck = FRANeck(name="neck", **neck)
            self.target_neck = FRANeck(name="target_neck", **neck)
            mlp = dict(bn_momentum=c.bn_momentum, bn_epsilon=c.bn_epsilon, synchronized=c.sync_batchnorm,
                       fused_batchnorm=c.fused_batchnorm)
            self.predictor = MLPHead(c.hidden_dim, c.proj_dim, name="predictor", **mlp)
            self.region_predictor = (MLPHead(c.hidden_dim, c.proj_dim, name="region_predictor", **mlp)
                                     if c.region_losses else None)
        feature_shape = (None, None, None, c.feature_channels)
        for neck_layer in (self.neck, self.target_neck):
            neck_layer.build(feature_shape)
        self.predictor.build((None, c.proj_dim))
        if self.region_predictor is not None:
            self.region_predictor.build((None, None, c.proj_dim))
        # `proto` buffers (docs/method.md, "Neck and heatmaps"): randn init, EMA 0.9, no gradient; one per network.
        # Under a strategy they are mirrored with aggregation "none": each replica assigns its own copy
        # from the all-reduced batch mean, so every copy gets the same value without an extra broadcast
        # (the same holds for the target EMA and the SyncBN moving statistics; tests/test_distributed.py
        # checks that the per-replica copies stay identical).
        # Two initializer instances: an unseeded Keras initializer fixes its seed when created, so one
        # shared instance would give both networks the same draw.
        self.prototypes = self.add_weight(shape=(c.num_regions, c.proj_dim),
                                          initializer=keras.initializers.RandomNormal(0.0, 1.0),
                                          trainable=False, dtype="float32", name="prototypes")
        self.target_prototypes = self.add_weight(shape=(c.num_regions, c.proj_dim),
                                                 initializer=keras.initializers.RandomNormal(0.0, 1.0),
                                                 trainable=False, dtype="float32", name="target_prototypes")
        self._fra_trackers = {name: keras.metrics.Mean(name=name) for name in METRIC_NAMES}
        self.total_steps = c.total_steps() if c.steps_per_epoch else None
        self.copy_online_to_target()
        self.built = True

    # ----------------------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name="tiny", **overrides):
        """`FRA.from_preset("tiny" | "paper", **FRAConfig field overrides)`."""
        return cls(FRAConfig.from_preset(name, **overrides))

    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # Variable groups --------------------------------------------------------------------------
    @property
    def online_variables(self):
        """Trainable variables of the online network (backbone + neck): the EMA sources."""
        return self.backbone.trainable_variables + self.neck.trainable_variables

    @property
    def target_variables(self):
        """The target variables that mirror `online_variables`, in the same order."""
        return self.target_backbone.trainable_variables + self.target_neck.trainable_variables

    @property
    def optimized_variables(self):
        """What the optimiser updates: online network + predictors (never the target)."""
        out = self.online_variables + self.predictor.trainable_variables
        if self.region_predictor is not None:
            out += self.region_predictor.trainable_variables
        return out

    def copy_online_to_target(self):
        """target <- online for every mirrored variable (BN statistics and prototypes stay separate)."""
        for t, o in zip(self.target_variables, self.online_variables):
            t.assign(o)

    @property
    def metrics(self):
        return list(self._fra_trackers.values())

    # Compile ----------------------------------------------------------------------------------
    def compile(self, optimizer=None, steps_per_epoch=None, jit_compile=None, **kwargs):
        """Compile with the config's optimiser and schedules unless `optimizer` is given.

        Args:
          steps_per_epoch: overrides `config.steps_per_epoch` for planning the learning-rate and EMA
            schedules (total steps = epochs * steps_per_epoch).
          jit_compile: None -> the config's `jit_compile` ("auto": see `resolve_jit_compile`).
        """
        spe = steps_per_epoch or self.config.steps_per_epoch
        if spe is None:
            raise ConfigError("steps_per_epoch=None: FRA plans its learning-rate warm-up / cosine and EMA "
                              "schedules over epochs * steps_per_epoch; pass compile(steps_per_epoch=...) or "
                              "set FRAConfig.steps_per_epoch")
        self.total_steps = int(self.config.epochs * spe)
        if optimizer is None:
            optimizer = build_optimizer(self.config, spe)
        if jit_compile is None:
            jit_compile = resolve_jit_compile(self.config.jit_compile, self.distribute_strategy)
        kwargs.pop("loss", None)
        super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)
        if not self.optimizer.built:
            self.optimizer.build(self.optimized_variables)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Every FRA variable exists after __init__ and compile() builds the optimiser, so there is
        # nothing to build symbolically. Keras' version (TF backend, model made under a strategy)
        # pulls the first distributed batch and `strategy.reduce`s it, which fails for dict batches
        # under MultiWorkerMirroredStrategy ("Attempt to convert a value ({'view1': PerReplica...")
        # and costs a cross-worker collective.
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.optimized_variables)

    def compile_from_config(self, config):
        # A reloaded .keras model: rebuild the optimiser with our variable list (not the whole model's).
        config = dict(config)
        optimizer = keras.optimizers.deserialize(config.pop("optimizer")) if config.get("optimizer") else None
        self.compile(optimizer=optimizer, jit_compile=config.get("jit_compile", "auto") is True or None)

    # Forward passes ---------------------------------------------------------------------------
    def _run_network(self, backbone, neck, images, training):
        features = backbone(images, training=training)
        out = neck(features, training=training)
        out["features"] = features
        return out

    def call(self, images, training=False):
        """Pooled online backbone features (B, C): the representation used downstream."""
        return self.embed(images, training=training)

    def embed(self, images, training=False):
        """(B, H, W, 3) normalised images -> (B, C) global-average-pooled backbone features."""
        return tf.reduce_mean(self.backbone(images, training=training), axis=[1, 2])

    def heatmaps(self, images, training=False):
        """Inference heatmaps (B, h, w, K): pixel projections against the prototype embeddings."""
        if not self.config.region_losses:
            raise ValueError("heatmaps() needs the region branch; this model has region_losses=False")
        features = self.backbone(images, training=training)
        pixel = self.neck.pixel_proj(features, training=training)
        return losses.region_heatmaps(pixel, self.prototypes, self.config.heatmap_scale)

    # Losses -----------------------------------------------------------------------------------
    def cluster_weight(self, step):
        """The clustering-loss weight at optimizer step `step`: `cluster_loss_weight`, ramped linearly
        from 0 over `cluster_warmup_epochs` when that is set (0 in the reference: constant)."""
        c = self.config
        if not c.cluster_warmup_epochs or not self.total_steps:
            return tf.constant(c.cluster_loss_weight, tf.float32)
        ramp_steps = float(c.cluster_warmup_epochs * self.total_steps // c.epochs)
        ramp = tf.minimum(1.0, (tf.cast(step, tf.float32) + 1.0) / max(ramp_steps, 1.0))
        return c.cluster_loss_weight * ramp

    def _compute_losses(self, online, target, training=True, step=None, geometry=None):
        """Total loss and its logged parts from the per-view outputs of both networks: the sum of
        `_view_loss` over the two online views.

        `step`: the optimizer step (for the clustering-weight ramp); None = the full weight.
        `geometry`: the two views' (B, 5) crop geometries (`_geometries`), for cross-view targets."""
        return _sum_terms([self._view_loss(a, online[a], target, training, step, geometry) for a in (0, 1)])

    def _view_loss(self, a, online_a, target, training=True, step=None, geometry=None):
        """(loss, parts) of online view `a` (0 or 1): every term of the FRA loss that reads that view's
        online outputs, against target outputs only (which carry no gradient), so the loss of the step
        is the sum of the two views' (docs/method.md, "Losses"):
          lam * L_g(q(z_a), z'_b) + (1 - lam) * L_r(q_o(r_a), r'_b) + w_clu * 0.5 * clustering_a,  b != a
        (plain BYOL: L_g only). The logged parts are the halves of the two-view means."""
        c = self.config
        b = 1 - a
        z = tf.cast(self.predictor(online_a["z"], training=training), tf.float32)
        global_term = losses.cosine_regression_loss(z, target[b]["z"])
        parts = {"loss_global": 0.5 * global_term}
        if not c.region_losses:
            parts["loss_region"] = tf.constant(0.0)
            parts["loss_cluster"] = tf.constant(0.0)
            return global_term, parts
        r = self.region_predictor(online_a["regions"], training=training)
        region_term = losses.region_loss(r, target[b]["regions"], c.decorrelation_weight)
        clu = dict(student_temperature=c.student_temperature, teacher_temperature=c.teacher_temperature,
                   sinkhorn_iterations=c.sinkhorn_iterations, me_max_weight=c.me_max_weight,
                   sinkhorn_epsilon=c.sinkhorn_epsilon)
        if geometry is not None:  # opt-in: student view a, teacher view b = the other one
            cluster_term = losses.cross_view_clustering_loss(
                online_a["logits"], target[b]["logits"], geometry[a], geometry[b], **clu)
        else:  # same view, online (student) vs target (teacher)
            k = c.num_regions
            cluster_term = losses.clustering_loss(
                tf.reshape(online_a["logits"], [-1, k]), tf.reshape(target[a]["logits"], [-1, k]), **clu)
        lam = c.global_loss_weight
        # The two directions are summed, not averaged (docs/method.md, "Losses").
        total = (lam * global_term + (1.0 - lam) * region_term
                 + (c.cluster_loss_weight if step is None else self.cluster_weight(step)) * 0.5 * cluster_term)
        parts["loss_region"] = 0.5 * region_term
        parts["loss_cluster"] = 0.5 * cluster_term
        return total, parts

    def _online_gradients(self, views, target, step, geometry, variables):
        """(online outputs per view, loss, parts, gradients of `variables`) of one training step.

        Default: one tape over both online views. With `backward_per_view` each view's forward and
        backward pass runs in turn, the second view's forward waiting for the first view's gradients, so
        the activations of the first view are freed before the second's are made: the loss is a sum of
        one term per online view (`_view_loss`), so the gradients are the same, summed in another
        order (float rounding only). Only one view's activations are held at a time: measured -650 MiB on
        a 3.5 GB step at ResNet-50, 224 px, batch 8 (docs/scaling.md, "Memory")."""
        def scaled(loss):  # gradients are summed over replicas: each contributes 1/num_replicas
            return self.optimizer.scale_loss(loss / distributed.num_replicas())

        if not self.config.backward_per_view:
            with tf.GradientTape() as tape:
                online = [self._run_network(self.backbone, self.neck, v, True) for v in views]
                loss, parts = self._compute_losses(online, target, step=step, geometry=geometry)
                scaled_loss = scaled(loss)
            return online, loss, parts, tape.gradient(scaled_loss, variables)
        online, terms, grads = [], [], None
        for a, images in enumerate(views):
            if grads is not None:
                with tf.control_dependencies(tf.nest.flatten(grads, expand_composites=True)):
                    images = tf.identity(images)
            with tf.GradientTape() as tape:
                online.append(self._run_network(self.backbone, self.neck, images, True))
                terms.append(self._view_loss(a, online[a], target, step=step, geometry=geometry))
                scaled_loss = scaled(terms[a][0])
            view_grads = tape.gradient(scaled_loss, variables)
            grads = view_grads if grads is None else [
                g if v is None else v if g is None else g + v for g, v in zip(grads, view_grads)]
        return (online, *_sum_terms(terms), grads)

    def _health(self, online):
        """Collapse and region-usage signals (no gradient): z_std, region_entropy and mask_cosine, the
        mean pairwise cosine of the K batch-mean mask embeddings (near 1: the region branch is asleep,
        all heatmaps equal; docs/method.md "Region recipes")."""
        z = tf.math.l2_normalize(tf.cast(online[0]["z"], tf.float32), axis=-1)
        # Per-dimension std of the normalised embeddings over the batch; ~1/sqrt(D) when healthy, 0 when
        # collapsed (BYOL / SimSiam collapse monitor). Mean and variance are global-batch moments, so
        # two replicas on B images report what one device on 2B reports.
        mean = distributed.cross_replica_mean(tf.reduce_mean(z, axis=0))
        variance = distributed.cross_replica_mean(tf.reduce_mean(tf.square(z - mean), axis=0))
        z_std = tf.reduce_mean(tf.sqrt(variance))
        if not self.config.region_losses:
            return z_std, tf.constant(0.0), tf.constant(0.0)
        # Fraction of pixels whose heatmap argmax is region k (hard usage: the soft heatmaps at scale 1
        # are always nearly uniform, so their mean would say little).
        k = self.config.num_regions
        winners = tf.one_hot(tf.argmax(online[0]["attention"], axis=-1), k, dtype=tf.float32)
        usage = distributed.cross_replica_mean(tf.reduce_mean(tf.reshape(winners, [-1, k]), axis=0))
        entropy = -tf.reduce_sum(usage * tf.math.log(tf.maximum(usage, 1e-30)))
        return z_std, entropy / math.log(self.config.num_regions), losses.mean_pairwise_cosine(
            online[0]["mask_mean"])

    def _update_trackers(self, values):
        for name, value in values.items():
            self._fra_trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self._fra_trackers.items()}

    # Training ---------------------------------------------------------------------------------
    def train_step(self, data):
        if self.total_steps is None:
            raise ConfigError("FRA.compile(steps_per_epoch=...) must run before training")
        data = augment_views(data, self.config)   # on-device augmentation path (docs/data_pipeline.md)
        view1, view2 = _views(data)
        geometry = _geometries(data, self.config)
        step = tf.convert_to_tensor(self.optimizer.iterations)
        target = [self._run_network(self.target_backbone, self.target_neck, v, True) for v in (view1, view2)]
        target = [{k: tf.stop_gradient(v) for k, v in t.items()} for t in target]
        variables = self.optimized_variables
        online, loss, parts, grads = self._online_gradients((view1, view2), target, step, geometry, variables)
        lr = self.optimizer.learning_rate  # the rate this step uses (read before `iterations` moves)
        self.optimizer.apply_gradients(zip(grads, variables))

        momentum = ema_momentum(step, self.total_steps, self.config.ema_momentum)
        # One variable at a time (each update waits for the previous one): without the chain the graph
        # executor may compute the products for all variables before any assign, holding 1-2 extra
        # copies of the target weights (about 90 MB at ResNet-18 with the paper heads; docs/scaling.md,
        # "Memory"). Same ops, same values.
        previous = []
        for t_var, o_var in zip(self.target_variables, self.online_variables):
            with tf.control_dependencies(previous):
                previous = [t_var.assign(momentum * t_var + (1.0 - momentum) * tf.cast(o_var, t_var.dtype))]
        if self.config.region_losses:
            p = self.config.proto_momentum  # one update per view (docs/method.md, "Neck and heatmaps")
            for proto, outs in ((self.prototypes, online), (self.target_prototypes, target)):
                value = proto
                for out in outs:
                    value = p * value + (1.0 - p) * tf.stop_gradient(out["mask_mean"])
                proto.assign(value)

        z_std, entropy, mask_cosine = self._health(online)
        return distributed.step_outputs(self._update_trackers(dict(
            loss=distributed.cross_replica_mean(loss), z_std=z_std, region_entropy=entropy,
            mask_cosine=mask_cosine,
            ema_momentum=momentum, lr=tf.cast(lr, tf.float32),
            **{k: distributed.cross_replica_mean(v) for k, v in parts.items()})))

    def test_step(self, data):
        data = augment_views(data, self.config)
        view1, view2 = _views(data)
        geometry = _geometries(data, self.config)
        target = [self._run_network(self.target_backbone, self.target_neck, v, False) for v in (view1, view2)]
        online = [self._run_network(self.backbone, self.neck, v, False) for v in (view1, view2)]
        loss, parts = self._compute_losses(online, target, training=False, geometry=geometry)
        z_std, entropy, mask_cosine = self._health(online)
        values = dict(loss=distributed.cross_replica_mean(loss), z_std=z_std, region_entropy=entropy,
                      mask_cosine=mask_cosine,
                      **{k: distributed.cross_replica_mean(v) for k, v in parts.items()})
        for name, value in values.items():
            self._fra_trackers[name].update_state(value)
        return distributed.step_outputs({name: self._fra_trackers[name].result() for name in values})
