"""Face model of the synthetic faces generator: label vocabularies, identity latents, expressions
(AU intensities) and the parametric canonical geometry.

Everything here is pure NumPy and independent of the image size. The rasteriser lives in
`_face_render.py`; the public API in `synthetic.py`.

Canonical head frame (units: roughly "half a face"): ``u`` to the image right of a frontal face,
``v`` down, ``w`` towards the camera. The head is the ellipsoid ``(u/A)^2 + (v/B)^2 + (w/C)^2 = 1``
(`HEAD_RADII`). Face parts are 2-D curves in the ``(u, v)`` plane, lifted onto the front of the
ellipsoid (``w = surface_w(u, v)``); the nose additionally protrudes. The 68 landmarks are points of
exactly these curves (the dense curves contain the landmark parameters as vertices), so the rasterised
parts and the landmarks agree by construction.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from fra_keras.data.labels import CELEBA_ATTRIBUTES, RAFDB_CLASSES  # noqa: F401  (CELEBA_ATTRIBUTES re-exported)

# ---------------------------------------------------------------------------------------------
# Vocabularies
# ---------------------------------------------------------------------------------------------

#: Fine part labels (CelebAMask-HQ-like; ``r_*`` = the subject's right = the image left of an
#: unflipped face = landmarks 17-21 / 36-41; ``l_*`` = landmarks 22-26 / 42-47).
#: ``neck`` and ``occluder`` (hands / patches in front of the face) are extras appended at the end.
PART_NAMES = (
    "background", "skin", "hair", "l_brow", "r_brow", "l_eye", "r_eye", "nose",
    "u_lip", "l_lip", "mouth", "eye_g", "hat", "neck", "occluder",
)
P = {name: i for i, name in enumerate(PART_NAMES)}

#: Coarse regions (FRA's K=8).
REGION_NAMES = ("background", "hair", "skin", "brows", "eyes", "nose", "mouth", "accessories")

_FINE_TO_COARSE = {
    "background": "background", "skin": "skin", "hair": "hair", "l_brow": "brows",
    "r_brow": "brows", "l_eye": "eyes", "r_eye": "eyes", "nose": "nose", "u_lip": "mouth",
    "l_lip": "mouth", "mouth": "mouth", "eye_g": "accessories", "hat": "accessories",
    "neck": "skin", "occluder": "background",
}
#: ``PART_TO_REGION[fine_label] -> coarse label`` (uint8 lookup table).
PART_TO_REGION = np.array([REGION_NAMES.index(_FINE_TO_COARSE[n]) for n in PART_NAMES], np.uint8)

#: Fine-label permutation for a horizontal flip (left and right parts swap).
PART_FLIP = np.arange(len(PART_NAMES), dtype=np.uint8)
for _a, _b in (("l_brow", "r_brow"), ("l_eye", "r_eye")):
    PART_FLIP[P[_a]], PART_FLIP[P[_b]] = P[_b], P[_a]

#: RAF-DB basic label order (label file value - 1; the list is owned by `fra_keras.data.labels`).
EXPRESSION_NAMES = RAFDB_CLASSES

#: Continuous action-unit intensities in [0, 1], emitted per sample.
AU_NAMES = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU12", "AU15", "AU16",
            "AU20", "AU23", "AU26")
_AU = {name: i for i, name in enumerate(AU_NAMES)}

#: FACS prototypes of the basic emotions (RAF-DB order).
EXPRESSION_PROTOTYPES = {
    "surprise": ("AU01", "AU02", "AU05", "AU26"),
    "fear": ("AU01", "AU02", "AU04", "AU05", "AU20", "AU26"),
    "disgust": ("AU09", "AU15", "AU16"),
    "happiness": ("AU06", "AU12"),
    "sadness": ("AU01", "AU04", "AU15"),
    "anger": ("AU04", "AU05", "AU07", "AU23"),
    "neutral": (),
}

#: The attributes the generator renders, with the region that carries each of them; every other
#: CelebA attribute is -1 ("unknown", to be masked in a loss).
ATTRIBUTE_REGIONS = {
    "Eyeglasses": "eyes", "Wearing_Hat": "hair", "Bangs": "hair", "Bald": "hair",
    "Mustache": "mouth", "Goatee": "mouth", "No_Beard": "mouth", "Wearing_Lipstick": "mouth",
    "Big_Lips": "mouth", "Big_Nose": "nose", "Bushy_Eyebrows": "brows",
    "Arched_Eyebrows": "brows", "Narrow_Eyes": "eyes", "Black_Hair": "hair", "Blond_Hair": "hair",
    "Brown_Hair": "hair", "Gray_Hair": "hair", "Pale_Skin": "skin", "Rosy_Cheeks": "skin",
    "Smiling": "mouth", "Mouth_Slightly_Open": "mouth",
}
KNOWN_ATTRIBUTES = tuple(a for a in CELEBA_ATTRIBUTES if a in ATTRIBUTE_REGIONS)
_ATTR = {name: i for i, name in enumerate(CELEBA_ATTRIBUTES)}

#: 68-point index permutation for a horizontal flip (300W convention).
LANDMARK68_FLIP = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30]
    + list(range(35, 30, -1)) + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
    + list(range(54, 47, -1)) + list(range(59, 54, -1)) + list(range(64, 59, -1))
    + list(range(67, 64, -1)), dtype=np.int64)

# ---------------------------------------------------------------------------------------------
# Identities and splits
# ---------------------------------------------------------------------------------------------

#: Fine label of the part each of the 68 landmarks lies on (mouth points: any lip / inner mouth).
LANDMARK68_PART = np.array(
    [P["skin"]] * 17 + [P["r_brow"]] * 5 + [P["l_brow"]] * 5 + [P["nose"]] * 9 + [P["r_eye"]] * 6
    + [P["l_eye"]] * 6 + [P["u_lip"]] * 20, np.uint8)

SPLITS = ("train", "validation", "test")
#: Identity pool of each split. Global identity ``g`` belongs to "train" when ``g % 10 < 8``, to
#: "validation" when ``g % 10 == 8`` and to "test" when ``g % 10 == 9``; sample ``i`` of a split shows
#: the ``(i % pool)``-th identity of that split, so consecutive samples have distinct identities and
#: sample ``i`` and ``i + pool`` show the same person.
IDENTITIES_PER_SPLIT = {"train": 1600, "validation": 200, "test": 200}
_SPLIT_RESIDUES = {"train": tuple(range(8)), "validation": (8,), "test": (9,)}
_IDENTITY_TAG = 0x1D  # separates identity streams from sample streams


def identity_of(index: int, split: str) -> int:
    """Global identity id shown by sample ``index`` of ``split``."""
    residues = _SPLIT_RESIDUES[split]
    k = int(index) % IDENTITIES_PER_SPLIT[split]
    return 10 * (k // len(residues)) + residues[k % len(residues)]


def split_of_identity(identity: int) -> str:
    r = int(identity) % 10
    return "train" if r < 8 else ("validation" if r == 8 else "test")


HEAD_RADII = np.array([0.80, 1.15, 0.92])  # A (half-width), B (half-height), C (depth)
A_, B_, C_ = (float(x) for x in HEAD_RADII)

_SKIN_PALETTE = np.array([
    (255, 231, 214), (242, 207, 182), (230, 187, 152), (206, 155, 114), (172, 120, 84),
    (130, 86, 58), (94, 60, 42), (62, 41, 31)], np.float64)
HAIR_COLOURS = ("black", "brown", "blond", "gray", "red")
_HAIR_RGB = {"black": (28, 23, 21), "brown": (96, 62, 38), "blond": (214, 180, 118),
             "gray": (160, 158, 156), "red": (140, 62, 32)}
_HAIR_P = (0.32, 0.3, 0.18, 0.1, 0.1)
HAIR_STYLES = ("bald", "short", "long")
FACIAL_HAIR = ("none", "mustache", "goatee", "mustache_goatee", "full")
_IRIS_RGB = np.array([(88, 54, 30), (45, 30, 22), (68, 106, 150), (78, 104, 66), (118, 88, 50)],
                     np.float64)

# attribute thresholds on the identity latent (see identity_latent)
_NARROW_EYES_MAX = 0.062
_BUSHY_MIN = 0.055
_ARCHED_MIN = 0.042
_BIG_SCORE_MIN = 1.3
_PALE_MAX = 0.15


def skin_colour(tone: float) -> np.ndarray:
    x = float(np.clip(tone, 0.0, 1.0)) * (len(_SKIN_PALETTE) - 1)
    i = min(int(x), len(_SKIN_PALETTE) - 2)
    f = x - i
    return (1 - f) * _SKIN_PALETTE[i] + f * _SKIN_PALETTE[i + 1]


def identity_latent(seed: int, identity: int) -> dict:
    """Per-identity latent: face shape, part sizes / spacing, colours, hair and facial hair.
    A pure function of ``(seed, identity)`` (cached; treat the returned dict as read-only)."""
    return _identity_latent(int(seed), int(identity))


@functools.lru_cache(maxsize=8192)
def _identity_latent(seed: int, identity: int) -> dict:
    r = np.random.default_rng([seed, _IDENTITY_TAG, identity])
    u = r.uniform
    d = {}
    # jaw / face shape
    d["jaw_top"] = u(-0.05, 0.02)  # the jaw starts on the head outline at this height
    d["chin"] = u(0.84, 0.94)
    d["jaw_q"] = u(0.75, 1.35)
    # eyes
    d["eye_x"] = u(0.27, 0.34)
    d["eye_v"] = u(-0.12, -0.05)
    d["eye_w"] = u(0.19, 0.24)
    d["eye_up"] = u(0.03, 0.055)
    d["eye_lo"] = u(0.018, 0.032)
    d["eye_tilt"] = u(-0.015, 0.025)
    # brows
    d["brow_gap"] = u(0.13, 0.17)
    d["brow_thick"] = u(0.022, 0.07)
    d["brow_arch"] = u(0.0, 0.06)
    d["brow_out"] = u(0.02, 0.05)
    d["brow_in"] = u(-0.01, 0.03)
    # nose
    d["nose_tip"] = u(0.2, 0.3)
    d["nose_w"] = u(0.07, 0.11)
    d["nose_proj"] = u(0.15, 0.26)
    d["nose_bridge"] = u(0.03, 0.05)
    # mouth
    d["mouth_v"] = u(max(d["nose_tip"] + 0.2, 0.47), 0.58)
    d["mouth_w"] = u(0.17, 0.23)
    d["lip_up"] = u(0.03, 0.065)
    d["lip_lo"] = u(0.04, 0.085)
    d["lip_bow"] = u(0.2, 0.6)
    d["mouth_curve"] = u(-0.005, 0.01)
    # colours
    d["skin_tone"] = u(0.0, 1.0)
    d["skin_rgb"] = np.clip(skin_colour(d["skin_tone"]) * np.exp(r.normal(0, 0.04, 3)), 0, 255)
    d["hair_colour"] = HAIR_COLOURS[int(r.choice(len(HAIR_COLOURS), p=_HAIR_P))]
    d["hair_rgb"] = np.clip(np.array(_HAIR_RGB[d["hair_colour"]], np.float64)
                            * np.exp(r.normal(0, 0.08, 3)) * u(0.85, 1.15), 0, 255)
    d["iris_rgb"] = _IRIS_RGB[int(r.integers(len(_IRIS_RGB)))] * u(0.8, 1.2)
    # hair
    d["hair_style"] = HAIR_STYLES[int(r.choice(3, p=(0.1, 0.42, 0.48)))]
    d["bangs"] = bool(d["hair_style"] != "bald" and r.random() < 0.25)
    d["hairline"] = u(-0.78, -0.6)
    d["hairline_curve"] = u(0.15, 0.45)
    d["recession"] = u(0.0, 0.15) if r.random() < 0.3 else 0.0
    d["sideburn"] = u(-0.15, 0.05)
    d["hair_volume"] = u(0.03, 0.12)
    d["hair_length"] = u(0.7, 2.2)
    d["bang_level"] = u(-0.06, 0.01)
    d["facial_hair"] = FACIAL_HAIR[int(r.choice(5, p=(0.6, 0.1, 0.1, 0.1, 0.1)))]
    d["neck_r"] = u(0.34, 0.44)
    brow_rgb = d["hair_rgb"] * 0.75
    if d["hair_colour"] in ("blond", "gray") or d["hair_style"] == "bald":
        brow_rgb = 0.5 * brow_rgb + 0.5 * np.array((70, 50, 38)) * u(0.6, 1.3)
    d["brow_rgb"] = brow_rgb
    return d


# ---------------------------------------------------------------------------------------------
# Expressions
# ---------------------------------------------------------------------------------------------

def sample_expression(rng: np.random.Generator, strong: bool = False):
    """Class (uniform over the 7 RAF-DB classes) and jittered AU intensities.

    Prototype AUs get ``global * U(0.65, 1.3)`` (clipped to 1) with ``global ~ U(0.25, 1)``; each may
    drop out (p=0.15); every other AU leaks in with p=0.2 at ``U(0, 0.4)``. Weak prototypes and leaks
    make classes overlap: a linear classifier on the true AUs reaches ~0.91 (quadratic ~0.94), not
    1.0. Fear vs surprise differ only in AU4 + AU20; sadness and disgust share AU15.

    ``strong=True`` (the evaluation profiles): the same random draws mapped to posed expressions, as
    in expression data sets: ``global ~ U(0.7, 1)``, drop-out p=0.05, leaks p=0.1 at ``U(0, 0.25)``.
    """
    expression = int(rng.integers(len(EXPRESSION_NAMES)))
    proto = EXPRESSION_PROTOTYPES[EXPRESSION_NAMES[expression]]
    g = rng.uniform(0.25, 1.0)
    jit = rng.uniform(0.65, 1.3, len(AU_NAMES))
    u_drop, u_leak = rng.random(len(AU_NAMES)), rng.random(len(AU_NAMES))
    leak_val = rng.uniform(0.0, 0.4, len(AU_NAMES))
    if strong:  # the same draws, re-mapped: the random stream of every other field is unchanged
        g = 0.7 + (g - 0.25) * 0.3 / 0.75
        drop, leak, leak_val = u_drop < 0.05, u_leak < 0.1, leak_val * 0.625
    else:
        drop, leak = u_drop < 0.15, u_leak < 0.2
    au = np.zeros(len(AU_NAMES), np.float64)
    for i, name in enumerate(AU_NAMES):
        if name in proto and not drop[i]:
            au[i] = min(1.0, g * jit[i])
        elif leak[i]:
            au[i] = leak_val[i]
    return expression, au.astype(np.float32)


def mouth_gap(au) -> float:
    a = {n: float(au[i]) for i, n in enumerate(AU_NAMES)}
    return 0.13 * a["AU26"] + 0.045 * a["AU16"] + 0.05 * max(0.0, a["AU12"] - 0.6)


SMILING_AU12_MIN = 0.35
MOUTH_OPEN_GAP_MIN = 0.02


def sample_attributes(idl: dict, au, accessories: dict) -> np.ndarray:
    """CelebA 40-vector (int8: 1, 0 or -1 = unknown)."""
    att = np.full(len(CELEBA_ATTRIBUTES), -1, np.int8)

    def put(name, value):
        att[_ATTR[name]] = 1 if value else 0

    put("Arched_Eyebrows", idl["brow_arch"] > _ARCHED_MIN)
    put("Bushy_Eyebrows", idl["brow_thick"] > _BUSHY_MIN)
    put("Narrow_Eyes", idl["eye_up"] + idl["eye_lo"] < _NARROW_EYES_MAX)
    put("Big_Nose", (idl["nose_w"] - 0.07) / 0.04 + (idl["nose_proj"] - 0.15) / 0.11 > _BIG_SCORE_MIN)
    put("Big_Lips", (idl["lip_up"] - 0.03) / 0.035 + (idl["lip_lo"] - 0.04) / 0.045 > _BIG_SCORE_MIN)
    bald = idl["hair_style"] == "bald"
    put("Bald", bald)
    put("Bangs", idl["bangs"])
    for colour, name in (("black", "Black_Hair"), ("blond", "Blond_Hair"), ("brown", "Brown_Hair"),
                         ("gray", "Gray_Hair")):
        put(name, (not bald) and idl["hair_colour"] == colour)
    fh = idl["facial_hair"]
    put("Mustache", fh in ("mustache", "mustache_goatee", "full"))
    put("Goatee", fh in ("goatee", "mustache_goatee", "full"))
    put("No_Beard", fh == "none")
    put("Pale_Skin", idl["skin_tone"] < _PALE_MAX)
    put("Eyeglasses", accessories["glasses"])
    put("Wearing_Hat", accessories["hat"])
    put("Wearing_Lipstick", accessories["lipstick"])
    put("Rosy_Cheeks", accessories["rosy"])
    put("Smiling", float(au[_AU["AU12"]]) >= SMILING_AU12_MIN)
    put("Mouth_Slightly_Open", mouth_gap(au) >= MOUTH_OPEN_GAP_MIN)
    return att


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------

def surface_w(u, v):
    """Depth of the front of the head ellipsoid at canonical ``(u, v)``."""
    q = 1.0 - (np.asarray(u) / A_) ** 2 - (np.asarray(v) / B_) ** 2
    return C_ * np.sqrt(np.maximum(q, 0.0))


def surface_normal(p):
    """Unit outward ellipsoid normal at canonical points ``p`` (..., 3)."""
    n = p / (HEAD_RADII ** 2)
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-9)


def lift(uv, protrude=0.0):
    """(n,2) canonical face-plane points -> (n,3) on the front of the head (+ protrusion)."""
    uv = np.asarray(uv, np.float64)
    return np.concatenate([uv, (surface_w(uv[:, 0], uv[:, 1]) + protrude)[:, None]], axis=1)


def rotation(yaw, pitch, roll):
    """Camera-from-canonical rotation. Degrees; positive yaw turns the nose to the image right,
    positive pitch turns it down, positive roll turns the face clockwise (image y points down)."""
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


_JAW_LIMIT = 0.985  # the jaw lies on or inside this fraction of the head ellipse


def _clamp_inside(uv, limit):
    r = np.sqrt((uv[:, 0] / A_) ** 2 + (uv[:, 1] / B_) ** 2)
    f = np.where(r > limit, limit / np.maximum(r, 1e-9), 1.0)
    return uv * f[:, None]


def _sinp(t, p):
    return np.sin(np.pi * np.clip(t, 0.0, 1.0)) ** p


def face_geometry(idl: dict, au) -> dict:
    """Canonical geometry of one face: dense 2-D part curves, 3-D nose, 68 landmarks (3-D) and
    per-landmark outward normals. ``au`` is the AU intensity vector (order `AU_NAMES`)."""
    a = {n: float(au[i]) for i, n in enumerate(AU_NAMES)}
    g = {}
    lm = np.zeros((68, 2))

    # --- jaw (0-16): lower part of a superellipse-like curve, clamped inside the head ellipse ---
    chin = idl["chin"] + 0.1 * a["AU26"] + 0.02 * a["AU16"]
    th = np.pi * np.arange(65) / 64.0
    jaw_w = _JAW_LIMIT * A_ * math.sqrt(1 - (idl["jaw_top"] / B_) ** 2)
    jaw = np.stack([-jaw_w * np.cos(th),
                    idl["jaw_top"] + (chin - idl["jaw_top"]) * np.sin(th) ** idl["jaw_q"]], 1)
    jaw = _clamp_inside(jaw, _JAW_LIMIT)
    g["jaw"] = jaw
    lm[0:17] = jaw[::4]

    # --- brows (17-21 right brow = image left, 22-26 left brow) ---
    ex, ev, ew = idl["eye_x"], idl["eye_v"], idl["eye_w"]
    t = np.arange(25) / 24.0  # 0 = outer end, 1 = inner end
    outer_u = ex + ew / 2 + idl["brow_out"]
    inner_u = ex - ew / 2 - idl["brow_in"]
    bu = outer_u + (inner_u - outer_u) * t
    bu = bu - 0.04 * a["AU04"] * t ** 1.5
    arch = np.exp(-((t - 0.35) / 0.35) ** 2)
    bv = (ev - idl["brow_gap"] - idl["brow_arch"] * arch
          - 0.1 * a["AU01"] * t ** 1.5 - 0.09 * a["AU02"] * (1 - t) ** 1.5 - 0.02 * a["AU02"]
          + 0.065 * a["AU04"] * (0.4 + 0.6 * t) + 0.02 * a["AU09"] * t)
    thick = idl["brow_thick"] * (0.55 + 0.45 * t)
    for side, key, idx in ((-1, "brow_r", [17, 18, 19, 20, 21]), (1, "brow_l", [26, 25, 24, 23, 22])):
        upper = np.stack([side * bu, bv - thick / 2], 1)
        lower = np.stack([side * bu, bv + thick / 2], 1)
        g[key] = np.concatenate([upper, lower[::-1]])
        lm[idx] = upper[::6]

    # --- eyes (36-41 right eye = image left, 42-47 left eye) ---
    h_up = idl["eye_up"] * (1 + 1.1 * a["AU05"]) * (1 - 0.45 * a["AU07"]) * (1 - 0.2 * a["AU06"])
    h_lo = idl["eye_lo"] * (1 - 0.7 * a["AU07"]) * (1 - 0.6 * a["AU06"]) + 0.004
    h_up = max(h_up, 0.012)
    t = np.arange(25) / 24.0  # 0 = image-left corner, 1 = image-right corner
    g["eyes"] = {}
    for side, key, idx in ((-1, "eye_r", [36, 37, 38, 39, 40, 41]), (1, "eye_l", [42, 43, 44, 45, 46, 47])):
        cu = side * ex
        x0, x1 = cu - ew / 2, cu + ew / 2
        # outer corner higher by `tilt`
        v_left = ev - idl["eye_tilt"] / 2 * (1 if side < 0 else -1)
        v_right = ev - idl["eye_tilt"] / 2 * (-1 if side < 0 else 1)
        base_u = x0 + (x1 - x0) * t
        base_v = v_left + (v_right - v_left) * t
        up = np.stack([base_u, base_v - h_up * _sinp(t, 0.85)], 1)
        lo = np.stack([base_u, base_v + h_lo * _sinp(t, 1.1)], 1)
        g[key] = np.concatenate([up, lo[-2:0:-1]])
        g[key + "_upper"] = up
        g[key + "_centre"] = np.array([cu, ev + (h_lo - h_up) * 0.3])
        lm[idx] = [up[0], up[8], up[16], up[24], lo[16], lo[8]]
    g["eye_open"] = h_up + h_lo

    # --- nose (27-35), 3-D: protrudes from the head surface ---
    v27 = ev - 0.01
    tip_v = idl["nose_tip"] - 0.01 * a["AU09"]
    base_v = tip_v + 0.05 - 0.04 * a["AU09"]
    nw = idl["nose_w"] + 0.015 * a["AU09"]
    pr = idl["nose_proj"]
    bw = idl["nose_bridge"]
    bridge_v = v27 + (tip_v - v27) * np.array([0.0, 1 / 3, 2 / 3, 1.0])
    bridge_p = np.array([0.03, 0.35 * pr, 0.65 * pr, pr])
    nose_uv = np.zeros((9, 2))
    nose_uv[0:4] = np.stack([np.zeros(4), bridge_v], 1)
    nose_uv[4:9] = np.stack([nw * np.array([-1, -0.5, 0, 0.5, 1]),
                             base_v - 0.012 * np.array([1, 0.3, 0, 0.3, 1])], 1)
    nose_prot = np.concatenate([bridge_p, pr * np.array([0.2, 0.32, 0.45, 0.32, 0.2])])
    lm[27:36] = nose_uv
    nose3d = lift(nose_uv, nose_prot)
    # side outline points (hull only): bridge sides and alar wings
    side_v = np.array([v27 + 0.02, v27 + 0.5 * (tip_v - v27), tip_v - 0.02])
    side_u = np.array([bw, bw * 1.15, nw + 0.03])
    side_p = np.array([0.01, 0.4 * pr, 0.25 * pr])
    facets = {}
    for side, key in ((-1, "nose_facet_r"), (1, "nose_facet_l")):
        pts_side = lift(np.stack([side * side_u, side_v], 1), side_p)
        base_pts = nose3d[[4, 5, 6]] if side < 0 else nose3d[[6, 7, 8]]
        facets[key] = np.concatenate([nose3d[0:4], pts_side, base_pts])
    g.update(facets)
    g["nostrils"] = lift(np.array([[-0.45 * nw, base_v - 0.014], [0.45 * nw, base_v - 0.014]]),
                         0.3 * pr)
    g["nostril_size"] = (0.022 + 0.12 * (nw - 0.07), 0.011)
    g["nose_base_v"] = base_v
    g["nose_w"] = nw
    g["nose_bridge_lines"] = [lift(np.array([[-bw * 0.9, v27 + f], [bw * 0.9, v27 + f]]),
                                   0.03 + f / max(tip_v - v27, 1e-3) * pr)
                              for f in (0.03, 0.06, 0.09)]

    # --- mouth (48-67) ---
    mw = idl["mouth_w"] + 0.04 * a["AU12"] + 0.08 * a["AU20"] - 0.05 * a["AU23"] - 0.01 * a["AU15"]
    mv = idl["mouth_v"]
    cv = mv + idl["mouth_curve"] - 0.09 * a["AU12"] + 0.075 * a["AU15"] + 0.015 * a["AU20"]
    lip_scale = (1 - 0.3 * a["AU20"]) * (1 - 0.55 * a["AU23"])
    ul = idl["lip_up"] * lip_scale
    ll = idl["lip_lo"] * lip_scale * (1 + 0.1 * a["AU16"])
    gap = mouth_gap(au)
    raise_up = 0.035 * a["AU09"]
    ti = 0.07
    t = np.arange(25) / 24.0

    def mline(t):
        return np.stack([-mw + 2 * mw * t, cv + (mv - cv) * _sinp(t, 0.8)], 1)

    def opening(t):
        tau = (t - ti) / (1 - 2 * ti)
        return _sinp(tau, 0.7) * ((tau >= 0) & (tau <= 1))

    def inner_up(t):
        p = mline(t)
        p[:, 1] -= 0.2 * gap * opening(t) + raise_up * _sinp(t, 1.0)
        return p

    def inner_lo(t):
        p = mline(t)
        p[:, 1] += 0.8 * gap * opening(t)
        return p

    bow = 1 - idl["lip_bow"] * np.exp(-((t - 0.5) / 0.09) ** 2)
    outer_up = inner_up(t)
    outer_up[:, 1] -= ul * _sinp(t, 0.45) * bow
    outer_lo = inner_lo(t)
    outer_lo[:, 1] += ll * _sinp(t, 0.55)
    tau = np.arange(17) / 16.0
    ti_t = ti + (1 - 2 * ti) * tau
    iu = inner_up(ti_t)
    il = inner_lo(ti_t)
    g["upper_lip"] = np.concatenate([outer_up, iu[::-1]])
    g["lower_lip"] = np.concatenate([outer_lo, il[::-1]])
    g["inner_mouth"] = np.concatenate([iu, il[-2:0:-1]])
    g["gap"] = gap
    teeth_h = min(0.35 * gap, 0.035) * opening(ti_t)
    teeth = iu.copy()
    teeth[:, 1] += teeth_h
    g["teeth"] = np.concatenate([iu[2:-2], teeth[2:-2][::-1]])
    lm[48:60] = np.concatenate([outer_up[0:25:4], outer_lo[20:0:-4]])
    lm[60:68] = np.concatenate([iu[0:17:4], il[12:0:-4]])
    g["mouth_corners"] = outer_up[[0, 24]]
    g["outer_up"] = outer_up
    g["outer_lo"] = outer_lo
    g["mouth_w"] = mw
    g["mouth_v"] = mv

    # --- facial hair polygons (colour only; labelled skin) ---
    fh = idl["facial_hair"]
    g["facial_hair"] = []
    if fh in ("mustache", "mustache_goatee", "full"):
        bottom = outer_up[1:24].copy()
        bottom[:, 1] -= 0.008
        top_v = base_v + 0.03
        g["facial_hair"].append(np.concatenate(
            [bottom, [[nw * 1.2, top_v], [-nw * 1.2, top_v]]]))
    if fh in ("goatee", "mustache_goatee", "full"):
        top = outer_lo[6:19].copy()
        top[:, 1] += 0.012
        chin_pts = jaw[(th >= 0.38 * np.pi) & (th <= 0.62 * np.pi)][::-1].copy()
        chin_pts[:, 1] -= 0.01
        g["facial_hair"].append(np.concatenate([top, chin_pts]))
    if fh == "full":
        ring = jaw[(th >= 0.05 * np.pi) & (th <= 0.95 * np.pi)].copy()
        inner = np.array([[0.6 * jaw_w, ev + 0.26], [mw + 0.05, mv - 0.01],
                          [mw * 0.6, mv + 0.12], [-mw * 0.6, mv + 0.12], [-mw - 0.05, mv - 0.01],
                          [-0.6 * jaw_w, ev + 0.26]])
        g["facial_hair"].insert(0, np.concatenate([ring, inner]))

    # --- expression lines (colour only) ---
    lines = []
    if a["AU04"] > 0.05:
        for s in (-1, 1):
            lines.append((np.array([[s * 0.03, ev - 0.12], [s * 0.045, ev - 0.03]]), a["AU04"]))
    nl = a["AU12"] + 0.5 * a["AU06"]
    if nl > 0.1:
        for s in (-1, 1):
            lines.append((np.array([[s * (nw + 0.05), tip_v - 0.01], [s * (mw + 0.04), cv - 0.04],
                                    [s * (mw + 0.06), cv + 0.05]]), min(1.0, nl)))
    g["lines"] = lines

    # --- hairline (scalp hair polygon in the face plane) ---
    if idl["hair_style"] != "bald":
        ut = 0.62
        uu = np.linspace(-ut, ut, 33)
        if idl["bangs"]:
            neutral_bv = ev - idl["brow_gap"] - idl["brow_arch"] * arch  # identity-fixed
            top_brow = min(neutral_bv.min() - idl["brow_thick"] * 0.5, ev - 0.14)
            vh = top_brow + idl["bang_level"] + 0.025 * np.abs(((uu / 0.055) % 2.0) - 1.0)
            vh = vh - 0.08 * (np.abs(uu) / ut) ** 3
        else:
            vh = (idl["hairline"] + idl["hairline_curve"] * uu ** 2
                  - idl["recession"] * np.exp(-((np.abs(uu) - 0.35) / 0.12) ** 2))
        sb = idl["sideburn"]
        pts = [[-A_ - 0.02, sb], [-0.7, sb], [-ut, vh[0] + 0.05]]
        pts += list(np.stack([uu, vh], 1))
        pts += [[ut, vh[-1] + 0.05], [0.7, sb], [A_ + 0.02, sb], [A_ + 0.02, -B_ - 0.02],
                [-A_ - 0.02, -B_ - 0.02]]
        g["scalp"] = np.array(pts)
    else:
        g["scalp"] = None

    # --- forehead points (bbox) ---
    fu = np.linspace(-0.45, 0.45, 7)
    g["forehead"] = lift(np.stack([fu, np.full(7, -0.72 + 0.2 * fu ** 2)], 1))

    # --- landmarks in 3-D, with normals ---
    lm3 = lift(lm)
    lm3[27:36, 2] += nose_prot
    normals = surface_normal(lift(lm))
    nose_normals = np.array([[0, -0.3, 1], [0, -0.1, 1], [0, 0.1, 1], [0, 0.4, 1],
                             [-0.75, 0.45, 0.5], [-0.35, 0.75, 0.55], [0, 0.8, 0.6],
                             [0.35, 0.75, 0.55], [0.75, 0.45, 0.5]], np.float64)
    normals[27:36] = nose_normals / np.linalg.norm(nose_normals, axis=1, keepdims=True)
    g["landmarks3d"] = lm3
    g["normals"] = normals
    return g
