"""One configuration object for every FRA hyper-parameter.

`FRAConfig` flows from the command line (or a preset, or a notebook) to every constructor: the
backbone, the heads, the mask decoder, the losses, the optimiser, the data pipeline and the exports.
The resolved config is written as ``config.json`` next to every run, checkpoint and export.

Two presets:

* ``paper`` -- the official FRA pre-training recipe (docs/method.md, "Formulas (the reference recipe)"):
  ResNet-50, 224 px, global batch 512, LARS lr 0.9, wd 1e-6, 50 epochs with 10 warm-up, K=8 regions,
  EMA 0.996 -> 1.
  Command: ``python -m fra_keras.pretrain --preset paper --data-dir /data/vggface2/train``
  (about 307k steps; 8 GPUs in the reference).
* ``tiny`` -- a narrow ResNet-18 at 96 px with output stride 16 (a 6x6 heatmap grid) and small heads,
  with the opt-in region recipe (``decoder_query_content``, ``sinkhorn_epsilon=0.05``) and cross-view
  clustering targets at weight 2.0 (``cluster_targets="cross_view"``, ``cluster_loss_weight=2.0``).
  Command: ``python -m fra_keras.pretrain`` (the embedded default on synthetic faces; a few minutes on
  2 CPU cores).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Optional, Tuple

# VGGFace2 channel statistics used by the official code (`--data_norm vggface2`; docs/method.md, "Augmentations").
VGGFACE2_MEAN = (0.5231, 0.4044, 0.3489)
VGGFACE2_STD = (0.2536, 0.2194, 0.2070)

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
OPTIMIZERS = ("lars", "sgd", "adamw", "lion", "lamb")
STRATEGIES = ("auto", "default", "mirrored", "multi-worker", "tpu")
JIT_MODES = ("auto", "true", "false")
AUGMENT_MODES = ("auto", "true", "false")   # fra_keras.data.device_augment
BACKBONE_PADDINGS = ("zeros", "circular")   # fra_keras.models.backbone.PADDINGS
# Where the clustering loss takes a pixel's targets from (fra_keras.losses; docs/method.md "Region recipes").
CLUSTER_TARGETS = ("same_view", "cross_view")
# Framings of synthetic faces (fra_keras.data.synthetic.PROFILES, docs/datasets.md).
SYNTHETIC_PROFILES = ("wide", "crop", "aligned", "box")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field, the value and what is allowed."""


@dataclasses.dataclass
class FRAConfig:
    """Every hyper-parameter of FRA pre-training (defaults = the `paper` preset, docs/method.md).

    Field groups: backbone, heads, mask decoder, losses, EMA, optimisation, data / augmentation,
    runtime. Names used from outside (docs/design.md, "Python API and configuration names"): `backbone`,
    `image_size`, `batch_size` (global), `num_regions`, `decoder_dropout`, `precision`, `region_losses`.
    """

    preset: str = "paper"

    # --- backbone (docs/method.md, "Backbone") ----------------------------------------------------
    backbone: str = "resnet50"
    backbone_width: int = 64            # channels of the stem / first stage (torchvision: 64)
    output_stride: int = 32             # 32 (paper), 16 or 8 via dilation (torchvision's
                                        # replace_stride_with_dilation) for finer heatmaps at small sizes
    backbone_padding: str = "zeros"     # opt-in "circular": wrap-around padding, no absolute position in
                                        # the features (models/backbone.py; docs/method.md, "Region recipes")
    sync_batchnorm: bool = True         # `--norm SyncBN` in the reference; only matters when distributed
    fused_batchnorm: bool = True        # training-mode BN through TF's fused kernel: same mathematics,
                                        # faster (models/normalization.py; docs/scaling.md, "Fused BatchNorm")
    bn_momentum: float = 0.9            # PyTorch momentum 0.1 == Keras momentum 0.9
    bn_epsilon: float = 1e-5

    # --- projectors / predictors (docs/method.md, "Neck and heatmaps") ----------------------------
    proj_dim: int = 256
    hidden_dim: int = 4096

    # --- mask decoder (docs/method.md, "Neck and heatmaps") ---------------------------------------
    num_regions: int = 8                # K, `--num_proto 8`
    decoder_dim: int = 256
    decoder_heads: int = 8
    decoder_layers: int = 2
    decoder_ffn_dim: int = 256          # dim_feedforward = out_channels in the official code
    decoder_dropout: float = 0.1
    heatmap_scale: float = 1.0          # `--lewel-scale`: the heatmap softmax divides cosines by this
    proto_momentum: float = 0.9         # proto <- 0.9 proto + 0.1 mean(E)
    decoder_query_content: bool = False  # opt-in: learnable content queries as the decoder's initial
                                        # target (the reference: zeros); docs/method.md "Region recipes"

    # --- losses (docs/method.md, "Losses", "Clustering loss and Sinkhorn") ------------------------
    region_losses: bool = True          # False = plain BYOL (global loss only)
    global_loss_weight: float = 0.5     # lambda, `--lewel-loss-weight`
    decorrelation_weight: float = 0.02  # hard-coded `loss_w_obj` in the official code
    cluster_loss_weight: float = 0.1    # `--loss_w_cluster`
    student_temperature: float = 0.1    # hard-coded `student_temp`
    teacher_temperature: float = 0.04   # `--teacher_temp`
    sinkhorn_iterations: int = 3
    me_max_weight: float = 1.0
    sinkhorn_epsilon: float = 0.0       # 0 = the reference (Sinkhorn on teacher probabilities); > 0:
                                        # on exp(P / eps), the official code's commented-out line (0.05)
    cluster_warmup_epochs: int = 0      # opt-in: ramp the clustering weight linearly from 0 over these
                                        # epochs (0 = the reference: constant weight)
    cluster_targets: str = "same_view"  # "same_view" (the reference: teacher and student see one view);
                                        # opt-in "cross_view": targets from the other view, carried over
                                        # the crops' overlap (batches then carry each view's crop geometry)

    # --- EMA target (docs/method.md, "EMA target") ------------------------------------------------
    ema_momentum: float = 0.996         # `--enc-m`, cosine schedule to 1.0

    # --- optimisation (docs/method.md, "Optimiser and schedules") ---------------------------------
    optimizer: str = "lars"
    learning_rate: float = 0.9          # no batch-size scaling (commented out in the reference)
    momentum: float = 0.9
    weight_decay: float = 1e-6
    lars_eta: float = 0.001
    lars_eps: float = 1e-8
    epochs: int = 50
    warmup_epochs: int = 10
    steps_per_epoch: Optional[int] = None   # None: derived from the data set size (required for
                                            # infinite sources such as synthetic faces)
    batch_size: int = 512               # global batch, split across replicas

    # --- data and augmentation (docs/method.md, "Augmentations") ----------------------------------
    image_size: int = 224
    mean: Tuple[float, float, float] = VGGFACE2_MEAN
    std: Tuple[float, float, float] = VGGFACE2_STD
    crop_scale: Tuple[float, float] = (0.2, 1.0)
    crop_ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip_probability: float = 0.5
    jitter_probability: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_probability: float = 0.2
    blur_probability: Tuple[float, float] = (1.0, 0.1)       # view 1, view 2
    blur_sigma: Tuple[float, float] = (0.1, 2.0)
    solarize_probability: Tuple[float, float] = (0.0, 0.2)   # view 1, view 2
    data_dir: Optional[str] = None      # None: built-in synthetic faces
    synthetic_size: int = 224           # synthetic faces are rendered at this size, then augmented
    synthetic_samples: int = 4096       # distinct synthetic faces rendered once, cached, re-augmented
    synthetic_profile: str = "crop"     # framing of synthetic pre-training faces: "crop" (VGGFace2-like
                                        # loose crops) or "wide" (synthetic_faces_v1 scenes); docs/datasets.md
    augment_on_device: str = "auto"     # "auto": flip, jitter, grayscale, blur, solarize run batched in the
                                        # train step on a GPU / TPU, per image in tf.data on CPU;
                                        # "true" / "false" force it (docs/data_pipeline.md)
    seed: int = 0

    # --- runtime (issue: scale out) ------------------------------------------------------------
    precision: str = "float32"
    jit_compile: str = "auto"
    strategy: str = "auto"
    backward_per_view: bool = False     # opt-in: each online view's forward + backward in turn, freeing the
                                        # first view's activations before the second's (same mathematics,
                                        # another summation order; docs/scaling.md, "Memory")

    # ------------------------------------------------------------------------------------------
    def __post_init__(self):
        for name in ("mean", "std", "crop_scale", "crop_ratio", "blur_probability", "blur_sigma",
                     "solarize_probability"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        self.validate()

    # Validation --------------------------------------------------------------------------------
    def validate(self) -> "FRAConfig":
        """Check every field; raise `ConfigError` naming the field, the value and what is allowed."""
        _choice("backbone", self.backbone, BACKBONES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("jit_compile", str(self.jit_compile).lower(), JIT_MODES)
        _choice("output_stride", self.output_stride, (8, 16, 32))
        _choice("backbone_padding", self.backbone_padding, BACKBONE_PADDINGS)
        _choice("cluster_targets", self.cluster_targets, CLUSTER_TARGETS)
        _choice("synthetic_profile", self.synthetic_profile, SYNTHETIC_PROFILES)
        _choice("augment_on_device", str(self.augment_on_device).lower(), AUGMENT_MODES)
        for name in ("region_losses", "sync_batchnorm", "fused_batchnorm", "decoder_query_content"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be true or false")
        for name in ("backbone_width", "proj_dim", "hidden_dim", "num_regions", "decoder_dim",
                     "decoder_heads", "decoder_ffn_dim", "sinkhorn_iterations", "epochs",
                     "batch_size", "image_size", "synthetic_size", "synthetic_samples"):
            _positive_int(name, getattr(self, name))
        _nonneg_int("decoder_layers", self.decoder_layers)
        _nonneg_int("warmup_epochs", self.warmup_epochs)
        _nonneg_int("cluster_warmup_epochs", self.cluster_warmup_epochs)
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"warmup_epochs={self.warmup_epochs} must be <= epochs={self.epochs}")
        if self.steps_per_epoch is not None:
            _positive_int("steps_per_epoch", self.steps_per_epoch)
        if self.num_regions < 2:
            raise ConfigError(f"num_regions={self.num_regions!r} must be >= 2 (K facial regions)")
        if self.decoder_dim % self.decoder_heads:
            raise ConfigError(f"decoder_dim={self.decoder_dim} must be divisible by "
                              f"decoder_heads={self.decoder_heads}")
        if self.decoder_dim % 4:
            raise ConfigError(f"decoder_dim={self.decoder_dim} must be divisible by 4 (2-D sine "
                              "positional encoding uses decoder_dim/2 features per axis, in sin/cos pairs)")
        if self.decoder_dim != self.proj_dim:
            raise ConfigError(f"decoder_dim={self.decoder_dim} must equal proj_dim={self.proj_dim}: heatmaps are "
                              "cosines between mask embeddings and pixel projections (256 and 256 in the paper)")
        if self.image_size < 32:
            raise ConfigError(f"image_size={self.image_size} must be >= 32 (the ResNet stem and four "
                              "stages need at least a 1x1 output)")
        for name in ("learning_rate", "student_temperature", "teacher_temperature", "heatmap_scale",
                     "bn_epsilon", "lars_eps"):
            _positive_float(name, getattr(self, name))
        for name in ("weight_decay", "lars_eta", "global_loss_weight", "decorrelation_weight",
                     "cluster_loss_weight", "me_max_weight", "sinkhorn_epsilon"):
            _nonneg_float(name, getattr(self, name))
        for name in ("decoder_dropout", "flip_probability", "jitter_probability",
                     "grayscale_probability", "bn_momentum", "proto_momentum", "momentum",
                     "brightness", "contrast", "saturation"):
            _unit_float(name, getattr(self, name))
        _unit_float("global_loss_weight", self.global_loss_weight)
        if not 0.0 <= self.hue <= 0.5:
            raise ConfigError(f"hue={self.hue!r} must be in [0, 0.5]")
        if not 0.0 <= self.ema_momentum < 1.0:
            raise ConfigError(f"ema_momentum={self.ema_momentum!r} must be in [0, 1)")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if len(value) != 3 or not all(isinstance(v, (int, float)) for v in value):
                raise ConfigError(f"{name}={value!r} must be three numbers (R, G, B)")
        if min(self.std) <= 0:
            raise ConfigError(f"std={self.std!r} must be positive")
        _range_pair("crop_scale", self.crop_scale, 0.0, 1.0)
        _range_pair("crop_ratio", self.crop_ratio, 0.0, math.inf)
        _range_pair("blur_sigma", self.blur_sigma, 0.0, math.inf)
        for name in ("blur_probability", "solarize_probability"):
            value = getattr(self, name)
            if len(value) != 2 or not all(0.0 <= float(v) <= 1.0 for v in value):
                raise ConfigError(f"{name}={value!r} must be two probabilities (view 1, view 2) in [0, 1]")
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise ConfigError(f"data_dir={self.data_dir!r} must be a folder path or None")
        return self

    # Derived quantities ------------------------------------------------------------------------
    @property
    def feature_grid(self) -> int:
        """Side of the backbone feature map (heatmap grid) for `image_size` and `output_stride`."""
        return feature_grid(self.image_size, self.output_stride)

    @property
    def feature_channels(self) -> int:
        """Channels C of the backbone feature map."""
        expansion = 4 if self.backbone in ("resnet50", "resnet101") else 1
        return self.backbone_width * 8 * expansion

    def total_steps(self, steps_per_epoch: Optional[int] = None) -> int:
        spe = steps_per_epoch or self.steps_per_epoch
        if spe is None:
            raise ConfigError("steps_per_epoch=None: the number of steps per epoch is needed to plan the "
                              "learning-rate and EMA schedules; pass steps_per_epoch or use a finite data set")
        return int(self.epochs * spe)

    # Round trip --------------------------------------------------------------------------------
    def replace(self, **overrides: Any) -> "FRAConfig":
        """A copy with some fields changed (validated); unknown names raise `ConfigError`."""
        _check_names(overrides)
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = list(v)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "FRAConfig":
        _check_names(values)
        return cls(**values)

    def to_json(self, path: Optional[str] = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            atomic_write_text(path, text + "\n")
        return text

    @classmethod
    def from_json(cls, path_or_text: str) -> "FRAConfig":
        text = path_or_text
        if not path_or_text.lstrip().startswith("{"):
            if not os.path.isfile(path_or_text):
                raise ConfigError(f"config file {path_or_text!r} does not exist")
            with open(path_or_text) as f:
                text = f.read()
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config JSON could not be parsed: {e}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"config JSON must be an object, got {type(values).__name__}")
        return cls.from_dict(values)

    @classmethod
    def from_preset(cls, name: str = "tiny", **overrides: Any) -> "FRAConfig":
        if name not in PRESETS:
            raise ConfigError(f"preset={name!r} is not known; choose one of {sorted(PRESETS)}")
        values = dict(PRESETS[name])
        _check_names(overrides)
        values.update(overrides)
        return cls(**values)


# Presets --------------------------------------------------------------------------------------
PRESETS = {
    # The README command of the official repository (docs/method.md, "Formulas (the reference recipe)").
    "paper": dict(preset="paper"),
    # Runs on a laptop CPU: narrow ResNet-18 (width 32 = half torchvision's), output stride 16 at 96 px
    # gives a 6x6 heatmap grid (stride 32 would give 3x3). Heads are narrowed in proportion; the
    # learning rate is lower than the paper's because the batch is 16x smaller. It uses the opt-in
    # region recipe (content queries + SwAV-style Sinkhorn, docs/method.md "Region recipes"), without
    # which the region branch stays asleep at this scale, with cross-view clustering targets at weight
    # 2.0: the variant with the best region metrics and expression probe at 1,000 steps over three seeds
    # (docs/evaluation.md, "Cross-view clustering targets"); for 1,500 steps it meets four targets of the
    # region ablation with margin over eight seeds, purity at its threshold ("A longer schedule"). Its
    # batches carry each view's crop geometry.
    "tiny": dict(
        preset="tiny", backbone="resnet18", backbone_width=32, output_stride=16, image_size=96,
        synthetic_size=112, synthetic_samples=1024, proj_dim=128, hidden_dim=512, decoder_dim=128, decoder_ffn_dim=128,
        batch_size=32, epochs=6, warmup_epochs=1, steps_per_epoch=25, learning_rate=0.3,
        weight_decay=1e-6, ema_momentum=0.99, decoder_query_content=True, sinkhorn_epsilon=0.05,
        cluster_targets="cross_view", cluster_loss_weight=2.0,
    ),
}


def feature_grid(image_size: int, output_stride: int) -> int:
    """Spatial side of a torchvision-layout ResNet output for a square input.

    Each stride-2 op with PyTorch padding maps n -> floor((n - 1) / 2) + 1; the stem has two of them
    (conv 7x7/2, max-pool 3x3/2) and stages 2-4 one each unless replaced by dilation.
    """
    n = image_size
    n_down = 2 + {32: 3, 16: 2, 8: 1}[output_stride]
    for _ in range(n_down):
        n = (n - 1) // 2 + 1
    return n


def atomic_write_text(path: str, text: str) -> None:
    """Write a text file through a temporary name and `os.replace`, so readers never see half a file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# Validation helpers -------------------------------------------------------------------------
_FIELD_NAMES = {f.name for f in dataclasses.fields(FRAConfig)}


def _check_names(values: dict) -> None:
    unknown = sorted(set(values) - _FIELD_NAMES)
    if unknown:
        raise ConfigError(f"unknown FRAConfig field(s) {unknown}; known fields: {sorted(_FIELD_NAMES)}")


def _choice(name, value, allowed):
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed; choose one of {list(allowed)}")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(name, value):
    if not _is_int(value) or value <= 0:
        raise ConfigError(f"{name}={value!r} must be a positive integer")


def _nonneg_int(name, value):
    if not _is_int(value) or value < 0:
        raise ConfigError(f"{name}={value!r} must be a non-negative integer")


def _number(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} must be a finite number")


def _positive_float(name, value):
    _number(name, value)
    if value <= 0:
        raise ConfigError(f"{name}={value!r} must be > 0")


def _nonneg_float(name, value):
    _number(name, value)
    if value < 0:
        raise ConfigError(f"{name}={value!r} must be >= 0")


def _unit_float(name, value):
    _number(name, value)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name}={value!r} must be in [0, 1]")


def _range_pair(name, value, lo, hi):
    if (len(value) != 2 or not all(isinstance(v, (int, float)) for v in value)
            or not lo < value[0] <= value[1] <= hi):
        raise ConfigError(f"{name}={value!r} must be (low, high) with {lo} < low <= high <= {hi}")
