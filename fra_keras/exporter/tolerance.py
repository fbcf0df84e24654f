"""How close two computations of the same export must be, and the comparison that applies it.

Verification compares the Keras model, the SavedModel and the ONNX file on the same images; a
comparison passes when max |a - b| <= atol + rtol * max |reference| for every output
(docs/export.md, "What the verification guarantees").
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from fra_keras.config import FRAConfig


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """A comparison passes when max |a - b| <= atol + rtol * max |reference|."""

    atol: float
    rtol: float

    def limit(self, ref_max: float) -> float:
        return self.atol + self.rtol * ref_max


#: Mixed-precision models are exported in float32 but their Keras reference runs in float16 /
#: bfloat16: `keras_mixed` bounds that difference. Float32 comparisons use `float32_tolerance(config)`
#: ("float32" is added below, for callers without a config).
TOLERANCES = {
    "keras_mixed": Tolerance(atol=2e-2, rtol=5e-2),
}

FLOAT32_EPS = 2.0 ** -23          # float32 unit roundoff x 2 (1.19e-7)
#: Weight layers on the longest path of each backbone (the number in its name), plus the pixel
#: projector and a head (4 more).
BACKBONE_DEPTH = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101}
EXTRA_DEPTH = 4
FLOAT32_SAFETY = 2.0
FLOAT32_ATOL = 1e-5               # for outputs whose max |reference| is about 0


def float32_tolerance(config: FRAConfig) -> Tolerance:
    """The tolerance between two float32 computations of the same export (Keras, SavedModel, ONNX).

    Different kernels (oneDNN / Eigen / onnxruntime) sum in different orders, so each layer adds a
    relative error of about eps * sqrt(K) (K: the longest accumulation, a 3x3 conv over the widest
    stage or a dense layer), and L layers add up to about L times that, relative to the scale of the
    output. The limit is therefore max|ref| * FLOAT32_SAFETY * eps * sqrt(K) * L (+ a tiny atol):
    2.5e-4 of max|ref| for the tiny preset, 8.7e-4 for the paper's ResNet-50. Real export faults
    (missing BatchNorm statistics, other weights, wrong normalisation or resize) change outputs by
    percents and stay far above it (docs/export.md, "What the verification guarantees").
    """
    depth = BACKBONE_DEPTH.get(config.backbone, 101) + EXTRA_DEPTH
    widest = 8 * int(config.backbone_width)                 # channels of the last stage's 3x3 convs
    accumulation = max(9 * widest, int(config.feature_channels), int(config.hidden_dim))
    rtol = FLOAT32_SAFETY * FLOAT32_EPS * math.sqrt(accumulation) * depth
    return Tolerance(atol=FLOAT32_ATOL, rtol=float(f"{rtol:.3g}"))


#: For callers without a config at hand: the bound of the `paper` preset (ResNet-50,
#: the deepest preset), 8.7e-4. With a config, `float32_tolerance(config)` gives the model's own bound.
TOLERANCES["float32"] = float32_tolerance(FRAConfig.from_preset("paper"))


def tolerance_for(key: str, config: FRAConfig) -> Tolerance:
    """The Keras-vs-export tolerance named in verification.npz ("float32" or "keras_mixed")."""
    return TOLERANCES["keras_mixed"] if key == "keras_mixed" else float32_tolerance(config)


def compare_outputs(a: dict, b: dict, names: Sequence[str], tol: Tolerance, label: str, report: dict,
                    problems: list):
    """Compare outputs `names` of `a` with the reference `b` (dicts of arrays) within `tol`.

    Records the largest difference per output in `report[label]` (kept over several calls) and
    appends one line per failure to `problems`.
    """
    entry = report.setdefault(label, {})
    for name in names:
        if name not in a or name not in b:
            problems.append(f"{label}: output {name!r} missing")
            continue
        x, y = np.asarray(a[name], np.float64), np.asarray(b[name], np.float64)
        if x.shape != y.shape:
            problems.append(f"{label}: {name} shapes differ {x.shape} vs {y.shape}")
            continue
        diff = float(np.max(np.abs(x - y))) if x.size else 0.0
        ref = float(np.max(np.abs(y))) if y.size else 0.0
        limit = tol.limit(ref)
        entry[name] = max(entry.get(name, 0.0), diff)
        if not np.isfinite(diff) or diff > limit:
            problems.append(f"{label}: {name} max abs difference {diff:.3g} exceeds {limit:.3g} "
                            f"(atol {tol.atol:.3g} + rtol {tol.rtol:.3g} * max|ref| {ref:.3g})")
