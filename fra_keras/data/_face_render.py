"""Rasteriser of the synthetic faces generator (pure NumPy + Pillow).

Pipeline of one sample (on a canvas supersampled ``ss`` = 3 (< 96 px) or 2 times, box-filtered down):

1. background (flat, gradient, stripes, value noise, clutter, face-like distractor blobs);
2. back layers drawn with Pillow: hair volume (convex hull of a projected, enlarged head cap plus a
   curtain for long hair) and the neck;
3. the head: every canvas pixel inside the projected ellipsoid is ray-cast onto it (orthographic
   camera, closed-form row spans and roots), mapped to the canonical frame and looked up in a label /
   colour texture drawn with Pillow (skin, facial hair, brows, scalp hair, eyes, lips, inner mouth;
   `tex_coords` gives its projection); Lambertian shading from the analytic normal; the back of the
   head is hair or skin, and the skin below the jaw line is cut away;
4. front layers drawn with Pillow from projected 3-D points: the nose (two shaded facets of the
   convex nose solid, nostrils), eyeglasses, hat, occluders (patches, bars, hands);
5. downsample, colour cast / contrast, blur, noise, JPEG.

Output labels come from the supersampled label canvas (`downsample_labels`). A landmark is visible
when its outward normal faces the camera, nothing is on top of it (nose over a non-nose point,
hair over a brow / eye / mouth point, hat, eyeglasses, occluder), its own part shows in the output
mask within one pixel (grazing or sub-pixel parts do not count) and it lies inside the frame.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from fra_keras.config import SYNTHETIC_PROFILES

from . import _face_model as fm
from ._face_model import A_, B_, C_, P

_SCLERA = np.array((232, 226, 218), np.float64)
_LIPSTICK = np.array([(190, 30, 45), (222, 92, 130), (118, 22, 42), (228, 100, 80), (128, 40, 92)],
                     np.float64)
_MOUTH_RGB = (62, 22, 28)
_TEETH_RGB = (226, 220, 204)

# Face height (forehead line to chin) in canonical units; the scale is set from it.
FACE_HEIGHT_UNITS = 1.62


def _rgb(c):
    return tuple(min(255, max(0, int(round(float(x))))) for x in c)


def _rgba(c, alpha):
    return _rgb(c) + (min(255, max(0, int(alpha))),)


_HULL_DIRS = np.stack([np.cos(np.linspace(0, 2 * np.pi, 96, endpoint=False)),
                       np.sin(np.linspace(0, 2 * np.pi, 96, endpoint=False))], 1)


def hull_polygon(pts: np.ndarray) -> list:
    """Convex polygon (list of tuples for ImageDraw) through the points extreme in 96 directions:
    the convex hull up to vertices that are extreme only within a < 4 degree range of directions."""
    pts = np.asarray(pts, np.float64)
    idx = np.argmax(pts @ _HULL_DIRS.T, axis=0)
    keep = np.concatenate([[True], idx[1:] != idx[:-1]])
    idx = idx[keep]
    if len(idx) > 1 and idx[0] == idx[-1]:
        idx = idx[:-1]
    return [tuple(q) for q in pts[idx].tolist()]


class Camera:
    """Weak-perspective camera: canonical 3-D -> final-image pixels (origin at the centre of the
    top-left pixel) and -> supersampled drawing coordinates."""

    def __init__(self, rot, scale, centre, ss):
        self.R = np.asarray(rot, np.float64)
        self.s = float(scale)  # final pixels per canonical unit
        self.c = np.asarray(centre, np.float64)
        self.ss = int(ss)

    def cam(self, p3):
        return np.asarray(p3, np.float64) @ self.R.T

    def pix(self, p3):
        return self.cam(p3)[:, :2] * self.s + self.c

    def sspix(self, p3):
        return (self.pix(p3) + 0.5) * self.ss - 0.5

    def ssd(self, p3):
        """Supersampled drawing coordinates as a list of tuples for ImageDraw."""
        return [tuple(q) for q in self.sspix(p3).tolist()]


# ---------------------------------------------------------------------------------------------
# Scene sampling (nuisance)
# ---------------------------------------------------------------------------------------------

BACKGROUNDS = ("flat", "gradient", "stripes", "noise", "clutter", "distractors")
OCCLUDERS = ("patch", "bar", "hand")


#: Scene profiles: how faces are framed (see `apply_profile` and docs/datasets.md); one list, in the
#: config module, which validates `FRAConfig.synthetic_profile` without importing the renderer.
PROFILES = SYNTHETIC_PROFILES


def apply_profile(rng: np.random.Generator, scene: dict, profile: str) -> dict:
    """Re-frame a `sample_scene` draw for `profile`, drawing after it (so "wide" is untouched).

    * ``wide`` -- synthetic_faces_v1 as it was: face height 0.35-0.9 of the frame anywhere in it, yaw
      up to +-60, pitch / roll up to +-30 degrees (a scene photo, not a face crop).
    * ``crop`` -- like the loose face crops of VGGFace2 (the paper's pre-training data): the face box
      fills 0.65-0.9 of the frame near its centre (+-5 %), yaw N(0, 20) clipped to +-45, pitch and
      roll N(0, 8) clipped to +-20 degrees.
    * ``aligned`` -- like RAF-DB's aligned faces (eyes and mouth brought to fixed points by a
      similarity transform): no roll, face box 0.85 of the frame at the centre, yaw N(0, 10) clipped
      to +-20, pitch N(0, 6) clipped to +-15 degrees, no hand / patch occluders.
    * ``box`` -- like 300W / WFLW face-box crops for landmarks: the box fills 0.75-0.85 of the frame,
      centre jitter +-4 %, yaw N(0, 18) clipped to +-40, pitch N(0, 8), roll N(0, 8) clipped to +-20.
    """
    if profile == "wide":
        return scene
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    s = dict(scene)
    if profile == "crop":
        s["face_height"] = float(rng.uniform(0.65, 0.9))
        s["shift"] = rng.uniform(-0.05, 0.05, 2)
        s["yaw"] = float(np.clip(rng.normal(0, 20), -45, 45))
        s["pitch"] = float(np.clip(rng.normal(0, 8), -20, 20))
        s["roll"] = float(np.clip(rng.normal(0, 8), -20, 20))
    elif profile == "aligned":
        s["face_height"] = 0.85
        s["shift"] = np.zeros(2)
        s["yaw"] = float(np.clip(rng.normal(0, 10), -20, 20))
        s["pitch"] = float(np.clip(rng.normal(0, 6), -15, 15))
        s["roll"] = 0.0
        s["num_occluders"] = 0
    else:  # box
        s["face_height"] = float(rng.uniform(0.75, 0.85))
        s["shift"] = rng.uniform(-0.04, 0.04, 2)
        s["yaw"] = float(np.clip(rng.normal(0, 18), -40, 40))
        s["pitch"] = float(np.clip(rng.normal(0, 8), -20, 20))
        s["roll"] = float(np.clip(rng.normal(0, 8), -20, 20))
    return s


def sample_scene(rng: np.random.Generator) -> dict:
    s = {}
    s["yaw"] = float(np.clip(rng.normal(0, 28), -60, 60))
    s["pitch"] = float(np.clip(rng.normal(0, 12), -30, 30))
    s["roll"] = float(np.clip(rng.normal(0, 12), -30, 30))
    s["face_height"] = float(rng.uniform(0.35, 0.9))
    s["shift"] = rng.uniform(-1, 1, 2) * ((1 - s["face_height"]) / 2 + 0.04)
    el = math.radians(rng.uniform(0, 65))
    az = rng.uniform(0, 2 * np.pi)
    s["light"] = np.array([math.sin(el) * math.cos(az), math.sin(el) * math.sin(az), math.cos(el)])
    s["ambient"] = float(rng.uniform(0.3, 0.65))
    s["light_rgb"] = rng.uniform(0.9, 1.2) * np.exp(rng.normal(0, 0.05, 3))
    s["gaze"] = rng.uniform(-1, 1, 2)
    s["glasses"] = bool(rng.random() < 0.2)
    s["sunglasses"] = bool(rng.random() < 0.25)
    s["frame_rgb"] = rng.uniform(0, 255, 3) * (rng.uniform(0.1, 1.0))
    s["frame_w"] = float(rng.uniform(0.012, 0.03))
    s["rim"] = (float(rng.uniform(0.04, 0.07)), float(rng.uniform(0.06, 0.1)), float(rng.uniform(2, 6)))
    s["hat"] = bool(rng.random() < 0.15)
    s["hat_type"] = int(rng.integers(2))  # 0 beanie, 1 cap
    s["hat_rgb"] = rng.uniform(0, 255, 3)
    s["hat_brim"] = float(rng.uniform(-0.66, -0.46))
    s["lipstick"] = bool(rng.random() < 0.25)
    s["lipstick_rgb"] = _LIPSTICK[int(rng.integers(len(_LIPSTICK)))] * rng.uniform(0.85, 1.1)
    s["rosy"] = bool(rng.random() < 0.2)
    s["background"] = int(rng.integers(len(BACKGROUNDS)))
    s["num_occluders"] = int(rng.choice(3, p=(0.72, 0.22, 0.06)))
    s["blur_sigma"] = float(rng.uniform(0.4, 1.6)) if rng.random() < 0.3 else 0.0
    s["noise_sigma"] = float(rng.uniform(1, 8)) if rng.random() < 0.4 else 0.0
    s["jpeg_quality"] = int(rng.integers(30, 96)) if rng.random() < 0.5 else 0
    s["gains"] = np.exp(rng.normal(0, 0.07, 3))
    s["contrast"] = float(rng.uniform(0.8, 1.2))
    s["brightness"] = float(rng.uniform(-20, 20))
    return s


# ---------------------------------------------------------------------------------------------
# Background
# ---------------------------------------------------------------------------------------------

def _grid(n):
    return np.arange(n, dtype=np.float32)


def _random_colour(rng):
    return rng.uniform(0, 255, 3)


def _gradient(rng, n):
    """Linear gradient between two random colours at a random angle (uint8 via a 256-entry LUT)."""
    ang = rng.uniform(0, 2 * np.pi)
    c0, c1 = _random_colour(rng), _random_colour(rng)
    ca, sa = math.cos(ang), math.sin(ang)
    lo = min(0.0, ca) + min(0.0, sa)
    span = abs(ca) + abs(sa)
    g = np.arange(n, dtype=np.float32) * np.float32(255.0 / ((n - 1) * span))
    t = (g[None, :] * np.float32(ca) + g[:, None] * np.float32(sa)) - np.float32(255.0 * lo / span)
    lut = _u8(c0[None, :] + np.linspace(0, 1, 256)[:, None] * (c1 - c0)[None, :])
    return lut[np.clip(t, 0, 255).astype(np.uint8)]


def _background(rng, kind, n, ss, skin_rgb):
    if kind == "flat":
        return Image.new("RGB", (n, n), _rgb(_random_colour(rng)))
    if kind == "gradient":
        return Image.fromarray(_gradient(rng, n))
    if kind == "stripes":
        ang = rng.uniform(0, np.pi)
        period = rng.uniform(4, 30) * ss
        g = _grid(n) * np.float32(1.0 / period)
        t = g[None, :] * np.float32(math.cos(ang)) + g[:, None] * np.float32(math.sin(ang))
        m = (t - np.floor(t)) < np.float32(rng.uniform(0.3, 0.7))
        table = _u8(np.stack([_random_colour(rng), _random_colour(rng)]))
        return Image.fromarray(table[m.view(np.uint8)])
    if kind == "noise":
        k = int(rng.integers(3, 12))
        small = rng.uniform(0, 255, (k, k, 3)).astype(np.uint8)
        return Image.fromarray(small).resize((n, n), Image.BICUBIC)
    base = Image.fromarray(_gradient(rng, n)) if rng.random() < 0.5 else \
        Image.new("RGB", (n, n), _rgb(_random_colour(rng)))
    d = ImageDraw.Draw(base)
    if kind == "clutter":
        for _ in range(int(rng.integers(8, 26))):
            c = _rgb(_random_colour(rng))
            x, y = rng.uniform(-0.1, 1.1, 2) * n
            w, h = rng.uniform(0.03, 0.35, 2) * n
            shape = int(rng.integers(4))
            if shape == 0:
                d.rectangle([x, y, x + w, y + h], fill=c)
            elif shape == 1:
                d.ellipse([x, y, x + w, y + h], fill=c)
            elif shape == 2:
                pts = rng.uniform(-0.5, 0.5, (int(rng.integers(3, 7)), 2)) * (w, h) + (x, y)
                d.polygon([tuple(p) for p in pts.tolist()], fill=c)
            else:
                d.line([x, y, x + w, y + h], fill=c, width=max(1, int(rng.uniform(0.005, 0.03) * n)))
        return base
    # face-like distractor blobs
    for _ in range(int(rng.integers(1, 4))):
        tone = skin_rgb if rng.random() < 0.5 else fm.skin_colour(rng.uniform())
        c = _rgb(tone * rng.uniform(0.7, 1.1))
        x, y = rng.uniform(0.0, 1.0, 2) * n
        w = rng.uniform(0.15, 0.45) * n
        h = w * rng.uniform(1.1, 1.45)
        d.ellipse([x - w / 2, y - h / 2, x + w / 2, y + h / 2], fill=c)
        dark = _rgb(np.array(c) * 0.3)
        er = w * 0.08
        for sx in (-0.22, 0.22):
            d.ellipse([x + sx * w - er, y - 0.08 * h - er * 0.6, x + sx * w + er, y - 0.08 * h + er * 0.6],
                      fill=dark)
        d.line([x - 0.18 * w, y + 0.25 * h, x + 0.18 * w, y + 0.25 * h], fill=dark,
               width=max(1, int(0.03 * w)))
    return base


# ---------------------------------------------------------------------------------------------
# Texture in the canonical face plane
# ---------------------------------------------------------------------------------------------

TEX_OVERSAMPLE = 1.25  # texels per supersampled pixel at the front of a frontal face


def tex_coords(uv, ppu):
    """Canonical face-plane points (n,2) -> texture pixel coordinates (n,2) (texel ``i`` spans
    ``[i, i+1)``).

    The texture is an "L1-angle" map of the head ellipsoid's front, with ``(x, y, z) = (u/A, v/B, w/C)``
    on the unit sphere: ``lam = x / (|x| + z)`` and ``mu = y / (|y| + sqrt(1 - y^2))``, both in
    [-1, 1]. Like longitude / latitude (and unlike the face plane itself) they keep a usable
    resolution up to the rim of the head, so turned faces stay sharp, and they cost a few arithmetic
    operations per pixel instead of trigonometric functions. Points outside the head ellipse map to
    its rim (``lam = +-1``); horizontal lines (constant v) stay horizontal.
    """
    uv = np.asarray(uv, np.float64)
    x, y = uv[:, 0] / A_, np.clip(uv[:, 1] / B_, -1.0, 1.0)
    c = np.sqrt(np.maximum(1.0 - y * y, 0.0))
    z = np.sqrt(np.maximum(c * c - x * x, 0.0))
    lam = x / np.maximum(np.abs(x) + z, 1e-12)
    mu = y / np.maximum(np.abs(y) + c, 1e-12)
    k = ppu * TEX_OVERSAMPLE
    return np.stack([(lam + 1.0) * (k * A_), (mu + 1.0) * (k * B_)], 1)


def _texture(g, idl, scene, ppu):
    k = ppu * TEX_OVERSAMPLE
    wt = int(math.ceil(2 * A_ * k)) + 1
    ht = int(math.ceil(2 * B_ * k)) + 1
    skin = idl["skin_rgb"]
    gx, gy = scene["gaze"]
    ir = 0.2 * idl["eye_w"]

    # every shape in face-plane coordinates, mapped to the texture in one call
    vjt = g["jaw"][-1, 1]
    top = np.array([[A_ + 0.05, vjt], [A_ + 0.05, -B_ - 0.05], [-A_ - 0.05, -B_ - 0.05],
                    [-A_ - 0.05, vjt]])
    shapes = {"head": np.concatenate([g["jaw"], top])}
    if scene["rosy"]:
        for j in range(3):
            f = 1.0 - 0.25 * j
            for sd in (-1, 1):
                cu, cv = sd * (idl["eye_x"] + 0.03), idl["eye_v"] + 0.24
                shapes[("rosy", j, sd)] = np.array([[cu - 0.13 * f, cv - 0.085 * f],
                                                    [cu + 0.13 * f, cv + 0.085 * f]])
    for j, poly in enumerate(g["facial_hair"]):
        shapes[("fh", j)] = poly
    for j, (line, _) in enumerate(g["lines"]):
        shapes[("line", j)] = line
    for key in ("brow_r", "brow_l", "eye_r", "eye_l", "eye_r_upper", "eye_l_upper", "upper_lip",
                "lower_lip", "inner_mouth", "teeth"):
        shapes[key] = g[key]
    if g["scalp"] is not None:
        shapes["scalp"] = g["scalp"]
    for key in ("eye_r", "eye_l"):
        cu, cv = g[key + "_centre"]
        cu, cv = cu + gx * 0.11 * idl["eye_w"], cv + gy * 0.01
        shapes[(key, "iris")] = np.array([[cu - ir, cv - ir], [cu + ir, cv + ir]])
        pr = ir * 0.45
        shapes[(key, "pupil")] = np.array([[cu - pr, cv - pr], [cu + pr, cv + pr]])
    names = list(shapes)
    sizes = [len(shapes[nm]) for nm in names]
    allxy = tex_coords(np.concatenate([shapes[nm] for nm in names]), ppu) - 0.5
    T = {}
    for nm, part in zip(names, np.split(allxy, np.cumsum(sizes)[:-1])):
        T[nm] = part

    def L(key, off=(0.0, 0.0)):
        return [tuple(q) for q in (T[key] - off).tolist()]

    lab = Image.new("L", (wt, ht), 255)
    col = Image.new("RGB", (wt, ht), _rgb(skin))
    dl = ImageDraw.Draw(lab)
    dc = ImageDraw.Draw(col, "RGBA")

    # head region: inside the jaw, and everything above the jaw's top line (only points of the
    # ellipsoid are ever looked up, so the rectangle needs no clipping to the head ellipse)
    dl.polygon(L("head"), fill=P["skin"])
    if scene["rosy"]:
        for j in range(3):
            for sd in (-1, 1):
                dc.ellipse(L(("rosy", j, sd)), fill=(225, 70, 85, 45))
    fh_rgb = idl["hair_rgb"] * 0.8
    for j in range(len(g["facial_hair"])):
        dc.polygon(L(("fh", j)), fill=_rgba(fh_rgb, 215))
    lw = max(1, int(round(0.009 * k)))
    for j, (_, strength) in enumerate(g["lines"]):
        dc.line(L(("line", j)), fill=_rgba(skin * 0.55, 40 + 110 * strength), width=lw)

    brow_rgb = _rgb(idl["brow_rgb"])
    for key, name in (("brow_r", "r_brow"), ("brow_l", "l_brow")):
        pts = L(key)
        dl.polygon(pts, fill=P[name])
        dc.polygon(pts, fill=brow_rgb)

    if g["scalp"] is not None:
        pts = L("scalp")
        dl.polygon(pts, fill=P["hair"])
        dc.polygon(pts, fill=_rgb(idl["hair_rgb"]))

    # eyes: sclera, iris / pupil clipped to the eye opening (masks on the eye crop only), lash line
    both = np.concatenate([T["eye_r"], T["eye_l"], T[("eye_r", "iris")], T[("eye_l", "iris")]])
    ox = max(0, int(math.floor(both[:, 0].min())) - 2)
    oy = max(0, int(math.floor(both[:, 1].min())) - 2)
    cw = min(wt, int(math.ceil(both[:, 0].max())) + 3) - ox
    ch = min(ht, int(math.ceil(both[:, 1].max())) + 3) - oy
    eye_mask = Image.new("L", (cw, ch), 0)
    iris_mask = Image.new("L", (cw, ch), 0)
    pupil_mask = Image.new("L", (cw, ch), 0)
    dm, di, dp = ImageDraw.Draw(eye_mask), ImageDraw.Draw(iris_mask), ImageDraw.Draw(pupil_mask)
    sclera = _rgb(_SCLERA * (0.85 + 0.15 * skin.mean() / 255))
    for key, name in (("eye_r", "r_eye"), ("eye_l", "l_eye")):
        pts = L(key)
        dl.polygon(pts, fill=P[name])
        dc.polygon(pts, fill=sclera)
        dm.polygon(L(key, (ox, oy)), fill=255)
        di.ellipse(L((key, "iris"), (ox, oy)), fill=255)
        dp.ellipse(L((key, "pupil"), (ox, oy)), fill=255)
    em = np.asarray(eye_mask)
    crop = col.crop((ox, oy, ox + cw, oy + ch))
    crop.paste(_rgb(idl["iris_rgb"]), (0, 0), Image.fromarray(np.minimum(em, np.asarray(iris_mask))))
    crop.paste((12, 10, 10), (0, 0), Image.fromarray(np.minimum(em, np.asarray(pupil_mask))))
    col.paste(crop, (ox, oy))
    lash = max(1, int(round(0.012 * k)))
    for key in ("eye_r_upper", "eye_l_upper"):
        dc.line(L(key), fill=(25, 18, 16, 230), width=lash)

    lip_rgb = skin * np.array((0.93, 0.66, 0.66)) + np.array((25, 0, 5))
    if scene["lipstick"]:
        lip_rgb = scene["lipstick_rgb"]
    for key, name, f in (("upper_lip", "u_lip", 0.9), ("lower_lip", "l_lip", 1.0)):
        pts = L(key)
        dl.polygon(pts, fill=P[name])
        dc.polygon(pts, fill=_rgb(lip_rgb * f))
    if g["gap"] * k > 0.5:
        pts = L("inner_mouth")
        dl.polygon(pts, fill=P["mouth"])
        dc.polygon(pts, fill=_MOUTH_RGB)
        if g["gap"] > 0.02:
            dc.polygon(L("teeth"), fill=_TEETH_RGB)
    rgba = np.array(col.convert("RGBA"))
    return np.asarray(lab), rgba.view(np.uint32)[:, :, 0]


# ---------------------------------------------------------------------------------------------
# Head (ray-cast ellipsoid + texture lookup)
# ---------------------------------------------------------------------------------------------

def _head(rgb, lab, camera, tex_lab, tex_rgb, ppu, idl, scene, vjt):
    """Ray-cast the head ellipsoid for every supersampled pixel inside its silhouette (row spans in
    closed form), look the canonical surface point up in the texture, shade, write into the canvas."""
    n = rgb.shape[0]
    ss, s = camera.ss, camera.s
    cx, cy = float(camera.c[0]), float(camera.c[1])
    R = camera.R
    D = 1.0 / fm.HEAD_RADII ** 2
    r0, r1, r2 = R[0], R[1], R[2]
    a_ = float((r2 * r2 * D).sum())
    b0, b1 = float((r0 * r2 * D).sum()), float((r1 * r2 * D).sum())
    c00, c01, c11 = float((r0 * r0 * D).sum()), float((r0 * r1 * D).sum()), float((r1 * r1 * D).sum())
    # disc(qx, qy) = al qx^2 + 2 be(qy) qx + ga(qy) > 0 inside the silhouette (al < 0)
    al = b0 * b0 - a_ * c00
    ext_y = math.sqrt(((R[1] * fm.HEAD_RADII) ** 2).sum()) * s
    ylo = max(0, int(math.floor((cy - ext_y + 0.5) * ss - 0.5)))
    yhi = min(n - 1, int(math.ceil((cy + ext_y + 0.5) * ss - 0.5)))
    if yhi < ylo:
        return
    rows = np.arange(ylo, yhi + 1)
    qy_r = ((rows + 0.5) / ss - 0.5 - cy) / s
    be = qy_r * (b0 * b1 - a_ * c01)
    ga = qy_r * qy_r * (b1 * b1 - a_ * c11) + a_
    root = be * be - al * ga
    ok = root > 0
    sq = np.sqrt(np.where(ok, root, 0.0))
    q_lo, q_hi = (-be + sq) / al, (-be - sq) / al  # al < 0: q_lo <= q_hi
    k_lo = np.ceil((q_lo * s + cx + 0.5) * ss - 0.5 + 1e-6).astype(np.int64)
    k_hi = np.floor((q_hi * s + cx + 0.5) * ss - 0.5 - 1e-6).astype(np.int64)
    k_lo, k_hi = np.maximum(k_lo, 0), np.minimum(k_hi, n - 1)
    lengths = np.where(ok, np.maximum(k_hi - k_lo + 1, 0), 0)
    total = int(lengths.sum())
    if total == 0:
        return
    starts = np.cumsum(lengths) - lengths
    ys = np.repeat(rows, lengths)
    xs = np.arange(total) - np.repeat(starts - k_lo, lengths)
    f32 = np.float32
    qx = ((xs.astype(f32) + f32(0.5)) * f32(1.0 / ss) - f32(0.5 + cx)) * f32(1.0 / s)
    qy = ((ys.astype(f32) + f32(0.5)) * f32(1.0 / ss) - f32(0.5 + cy)) * f32(1.0 / s)
    bq = qx * f32(b0) + qy * f32(b1)
    cq = qx * (qx * f32(c00) + qy * f32(2 * c01)) + qy * qy * f32(c11) - f32(1.0)
    disc = np.maximum(bq * bq - f32(a_) * cq, f32(0.0))
    t = (np.sqrt(disc) - bq) * f32(1.0 / a_)
    Rf = [[f32(x) for x in row] for row in R.tolist()]
    u = qx * Rf[0][0] + qy * Rf[1][0] + t * Rf[2][0]
    v = qx * Rf[0][1] + qy * Rf[1][1] + t * Rf[2][1]
    w = qx * Rf[0][2] + qy * Rf[1][2] + t * Rf[2][2]

    ht, wt = tex_lab.shape
    # texture coordinates (see tex_coords), from the unit-sphere point (x, y, zs)
    x = u * f32(1 / A_)
    y = v * f32(1 / B_)
    zs = w * f32(1 / C_)
    c = np.sqrt(np.maximum(f32(1) - y * y, f32(0)))
    lam = x / (np.abs(x) + np.maximum(zs, f32(0)) + f32(1e-12))
    mu = y / (np.abs(y) + c + f32(1e-12))
    kt = ppu * TEX_OVERSAMPLE
    tix = ((lam + f32(1)) * f32(kt * A_)).astype(np.int32)
    tiy = ((mu + f32(1)) * f32(kt * B_)).astype(np.int32)
    np.clip(tix, 0, wt - 1, out=tix)
    np.clip(tiy, 0, ht - 1, out=tiy)
    tiy *= wt
    tiy += tix
    plab = tex_lab.reshape(-1)[tiy]
    pcol32 = tex_rgb.reshape(-1)[tiy]  # packed RGBA (one uint32 gather is much faster than (N,3))
    back = w < 0
    if back.any():
        vb = v[back]
        blab = np.where(vb < vjt, P["skin"], 255).astype(np.uint8)
        if idl["hair_style"] != "bald":
            blab[vb < 0.3] = P["hair"]
        plab[back] = blab
        pcol32[back] = np.where(blab == P["hair"], _pack(idl["hair_rgb"]), _pack(idl["skin_rgb"]))
    keep = plab != 255
    # Lambertian shading; the ellipsoid normal is (x/A, y/B, zs/C) up to normalisation
    lc = R.T @ scene["light"]
    num = x * f32(lc[0] / A_) + y * f32(lc[1] / B_) + zs * f32(lc[2] / C_)
    den = np.sqrt((x * x) * f32(1 / A_ ** 2) + (y * y) * f32(1 / B_ ** 2) + (zs * zs) * f32(1 / C_ ** 2))
    amb = scene["ambient"]
    shade = np.maximum(num / den, f32(0))
    shade *= f32(1 - amb)
    shade += f32(amb)
    col = pcol32.view(np.uint8).reshape(-1, 4).astype(f32)
    col *= shade[:, None]
    col *= np.append(scene["light_rgb"], 0.0).astype(f32)[None, :]
    np.minimum(col, f32(255), out=col)
    out = col.astype(np.uint8).view(np.uint32).reshape(-1)
    out |= np.uint32(0xFF000000)
    flat_c = ys * n + xs
    flat_c = flat_c[keep]
    rgb.reshape(-1)[flat_c] = out[keep]
    lab.reshape(-1)[flat_c] = plab[keep]


def _u8(c):
    return np.clip(np.round(np.asarray(c)), 0, 255).astype(np.uint8)


def _pack(c):
    return np.array(list(_u8(c)) + [255], np.uint8).view(np.uint32)[0]


# ---------------------------------------------------------------------------------------------
# Front / back layers
# ---------------------------------------------------------------------------------------------

def _flat_shade(camera, normal, scene, camera_space=False):
    """Lambertian shade (times the light colour) of a flat facet with a canonical (or, with
    ``camera_space``, a camera-frame) normal."""
    n = np.asarray(normal, np.float64)
    n = n if camera_space else camera.cam(n[None])[0]
    n = n / np.linalg.norm(n)
    amb = scene["ambient"]
    return (amb + (1 - amb) * max(float(n @ scene["light"]), 0.0)) * scene["light_rgb"]


def _ellipsoid_rings(k, v_levels, n_phi=16, w_max=None):
    pts = []
    phi = np.linspace(0, 2 * np.pi, n_phi, endpoint=False)
    for v in v_levels:
        r = math.sqrt(max(0.0, 1 - (v / (B_ * k)) ** 2))
        uu, ww = A_ * k * r * np.cos(phi), C_ * k * r * np.sin(phi)
        sel = slice(None) if w_max is None else ww <= w_max
        pts.append(np.stack([uu[sel], np.full(uu[sel].shape, v), ww[sel]], 1))
    return np.concatenate(pts)


def _hair_back(dr, dl, camera, idl, scene):
    if idl["hair_style"] == "bald":
        return
    k = 1.0 + idl["hair_volume"]
    pts = [_ellipsoid_rings(k, np.linspace(-B_ * k * 0.98, -0.3, 5)),
           _ellipsoid_rings(k, [-0.1, 0.15], w_max=0.25)]
    if idl["hair_style"] == "long":
        L = idl["hair_length"]
        au = A_ * k
        pts.append(np.array([[s * au * f, v, w] for s in (-1, 1) for f in (0.95, 1.08)
                             for v in (0.3, L) for w in (-0.6 * C_, 0.15 * C_)]))
    poly = hull_polygon(camera.sspix(np.concatenate(pts)))
    shade = _flat_shade(camera, (0, -0.3, 1), scene) * 0.85
    dr.polygon(poly, fill=_rgb(idl["hair_rgb"] * shade))
    dl.polygon(poly, fill=P["hair"])


def _neck(dr, dl, camera_neck, idl, scene):
    r = idl["neck_r"]
    phi = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    ring = np.stack([r * np.cos(phi), np.zeros_like(phi), -0.15 + r * np.sin(phi)], 1)
    pts = np.concatenate([ring + (0, 0.0, 0), ring + (0, 3.5, 0)])
    poly = hull_polygon(camera_neck.sspix(pts))
    shade = _flat_shade(camera_neck, (0, 0.2, 1), scene) * 0.72
    dr.polygon(poly, fill=_rgb(idl["skin_rgb"] * shade))
    dl.polygon(poly, fill=P["neck"])


def _nose(dr, dl, camera, g, idl, scene):
    facets = []
    for key, normal in (("nose_facet_r", (-0.6, 0.15, 0.8)), ("nose_facet_l", (0.6, 0.15, 0.8))):
        nz = camera.cam(np.asarray(normal)[None])[0, 2]
        facets.append((nz, key, normal))
    facets.sort()
    skin = idl["skin_rgb"]
    # facet shading blended with the head's shading under the nose (smoother transition)
    under = fm.surface_normal(g["landmarks3d"][30:31] * (1, 1, 0) + (0, 0, float(fm.surface_w(0, g["landmarks3d"][30, 1]))))[0]
    base = _flat_shade(camera, under, scene)
    for _, key, normal in facets:
        poly = hull_polygon(camera.sspix(g[key]))
        dr.polygon(poly, fill=_rgb(skin * (0.5 * base + 0.5 * _flat_shade(camera, normal, scene))))
        dl.polygon(poly, fill=P["nose"])
    # nostrils (only when the bottom of the nose faces the camera)
    down = camera.cam(np.array([[0.0, 0.8, 0.6]]))[0, 2]
    if down > 0:
        rx, rz = g["nostril_size"]
        ang = np.linspace(0, 2 * np.pi, 10, endpoint=False)
        dark = _rgb(skin * 0.35 * _flat_shade(camera, (0, 0.8, 0.6), scene))
        for c in g["nostrils"]:
            ring = c + np.stack([rx * np.cos(ang), 0.004 * np.ones_like(ang), rz * np.sin(ang)], 1)
            dr.polygon(camera.ssd(ring), fill=dark)


def _glasses(img_rgb, dl, camera, g, idl, scene):
    rw_extra, rh, expo = scene["rim"]
    rw = idl["eye_w"] / 2 + rw_extra
    phi = np.linspace(0, 2 * np.pi, 28, endpoint=False)
    c, s = np.cos(phi), np.sin(phi)
    shape_u = np.sign(c) * np.abs(c) ** (2 / expo)
    shape_v = np.sign(s) * np.abs(s) ** (2 / expo)
    rims = []
    for side in (-1, 1):
        cu, cv = side * idl["eye_x"], idl["eye_v"] + 0.005
        wz = float(fm.surface_w(cu, cv)) + 0.08
        rim = np.stack([cu + rw * shape_u, cv + rh * shape_v, np.full(phi.shape, wz)], 1)
        rims.append(camera.ssd(rim))
    width = max(1, int(round(scene["frame_w"] * camera.s * camera.ss)))
    frame = _rgb(scene["frame_rgb"] * scene["light_rgb"])
    dr = ImageDraw.Draw(img_rgb, "RGBA")
    for rim in rims:
        if scene["sunglasses"]:
            dr.polygon(rim, fill=(18, 16, 18, 240))
            dl.polygon(rim, fill=P["eye_g"])
        else:
            dr.polygon(rim, fill=(200, 220, 240, 35))
    for rim in rims:
        dr.line(rim + [rim[0]], fill=frame, width=width, joint="curve")
        dl.line(rim + [rim[0]], fill=P["eye_g"], width=width, joint="curve")
    # bridge between the inner ends of the rims
    ev = idl["eye_v"]
    wz = float(fm.surface_w(0.0, ev)) + 0.1
    inner = idl["eye_x"] - rw
    bridge = np.array([[-inner, ev - 0.01, wz - 0.02], [0, ev - 0.035, wz], [inner, ev - 0.01, wz - 0.02]])
    pts = camera.ssd(bridge)
    dr.line(pts, fill=frame, width=width, joint="curve")
    dl.line(pts, fill=P["eye_g"], width=width, joint="curve")
    yaw = scene["yaw"]
    if abs(yaw) > 12:
        side = -1 if yaw > 0 else 1  # the side turned towards the camera
        cu = side * (idl["eye_x"] + rw)
        ear_u = side * A_ * 0.9
        temple = np.array([[cu, ev, float(fm.surface_w(idl["eye_x"], ev)) + 0.08],
                           [ear_u, ev + 0.02, float(fm.surface_w(A_ * 0.9, ev + 0.02)) + 0.02]])
        pts = camera.ssd(temple)
        dr.line(pts, fill=frame, width=width)
        dl.line(pts, fill=P["eye_g"], width=width)


def _hat(dr, dl, camera, scene):
    k = 1.06
    vb = scene["hat_brim"]
    crown = _ellipsoid_rings(k, np.linspace(-B_ * k * 0.995, vb, 6))
    poly = hull_polygon(camera.sspix(crown))
    colour = scene["hat_rgb"]
    shade = _flat_shade(camera, (0, -0.5, 0.8), scene)
    dr.polygon(poly, fill=_rgb(colour * shade))
    dl.polygon(poly, fill=P["hat"])
    if scene["hat_type"] == 1:  # cap visor
        r = math.sqrt(max(0.0, 1 - (vb / (B_ * k)) ** 2))
        wf = C_ * k * r
        ph = np.linspace(0, np.pi, 11)
        visor = np.stack([0.62 * np.cos(ph), np.full(ph.shape, vb + 0.02), wf * 0.7 + 0.42 * np.sin(ph)], 1)
        poly = hull_polygon(camera.sspix(visor))
        dr.polygon(poly, fill=_rgb(colour * 0.75 * _flat_shade(camera, (0, -1, 0.2), scene)))
        dl.polygon(poly, fill=P["hat"])
    else:  # beanie: a darker folded band
        band = _ellipsoid_rings(k * 1.01, [vb, vb - 0.1], n_phi=24, w_max=None)
        front = band[band[:, 2] > 0.2]
        if len(front) >= 3:
            dr.polygon(hull_polygon(camera.sspix(front)), fill=_rgb(colour * 0.8 * shade))


def _occluders(rng, dr, dl, camera, g, idl, scene, count):
    lm = camera.pix(g["landmarks3d"])
    targets = {
        "eye": lm[36:48].mean(0), "mouth": lm[48:68].mean(0), "nose": lm[30],
        "cheek": lm[int(rng.choice([3, 13]))], "chin": lm[8], "forehead": lm[17:27].mean(0),
    }
    ss, s = camera.ss, camera.s * camera.ss
    kinds = []
    for _ in range(count):
        kind = OCCLUDERS[int(rng.choice(3, p=(0.35, 0.2, 0.45)))]
        kinds.append(kind)
        tgt = targets[list(targets)[int(rng.integers(len(targets)))]]
        c = (tgt + rng.normal(0, 0.08, 2) * camera.s + 0.5) * ss - 0.5
        ang = rng.uniform(0, 2 * np.pi)
        d = np.array([math.cos(ang), math.sin(ang)])
        nrm = np.array([-d[1], d[0]])
        if kind == "patch":
            w, h = rng.uniform(0.15, 0.5, 2) * s
            col = _rgb(_random_colour(rng))
            if rng.random() < 0.5:
                corners = [c + d * w / 2 * a + nrm * h / 2 * b for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
                poly = [tuple(p) for p in np.array(corners).tolist()]
                dr.polygon(poly, fill=col)
                dl.polygon(poly, fill=P["occluder"])
            else:
                box = [c[0] - w / 2, c[1] - h / 2, c[0] + w / 2, c[1] + h / 2]
                dr.ellipse(box, fill=col)
                dl.ellipse(box, fill=P["occluder"])
        elif kind == "bar":
            length, width = rng.uniform(0.8, 2.0) * s, rng.uniform(0.05, 0.14) * s
            a, b = c - d * length / 2, c + d * length / 2
            col = _rgb(_random_colour(rng))
            dr.line([tuple(a), tuple(b)], fill=col, width=max(1, int(width)))
            dl.line([tuple(a), tuple(b)], fill=P["occluder"], width=max(1, int(width)))
        else:  # hand: palm + fingers pointing along d, covering the target
            tone = idl["skin_rgb"] * rng.uniform(0.85, 1.05)
            col = _rgb(tone * _flat_shade(camera, (0, 0, 1), scene, camera_space=True))
            pw, ph = rng.uniform(0.16, 0.22) * s, rng.uniform(0.2, 0.26) * s
            palm = c - d * (0.22 * s)
            fl, fw = rng.uniform(0.18, 0.26) * s, max(1, int(rng.uniform(0.05, 0.07) * s))
            ang_p = np.linspace(0, 2 * np.pi, 16, endpoint=False)
            ring = palm + np.cos(ang_p)[:, None] * d * ph + np.sin(ang_p)[:, None] * nrm * pw
            poly = [tuple(p) for p in ring.tolist()]
            dr.polygon(poly, fill=col)
            dl.polygon(poly, fill=P["occluder"])
            for j, off in enumerate((-0.75, -0.25, 0.25, 0.75)):
                base = palm + d * ph * 0.8 + nrm * pw * off * 0.9
                tip = base + d * fl * (0.85 if j in (0, 3) else 1.0) + nrm * off * 0.1 * s
                seg = [tuple(base), tuple(tip)]
                dr.line(seg, fill=col, width=fw)
                dl.line(seg, fill=P["occluder"], width=fw)
                r = fw / 2
                dr.ellipse([tip[0] - r, tip[1] - r, tip[0] + r, tip[1] + r], fill=col)
                dl.ellipse([tip[0] - r, tip[1] - r, tip[0] + r, tip[1] + r], fill=P["occluder"])
            base = palm + nrm * pw * 0.9
            tip = base + (nrm * 0.8 + d * 0.6) * fl * 0.8
            dr.line([tuple(base), tuple(tip)], fill=col, width=fw)
            dl.line([tuple(base), tuple(tip)], fill=P["occluder"], width=fw)
    return kinds


# ---------------------------------------------------------------------------------------------
# Full render
# ---------------------------------------------------------------------------------------------

def supersampling(image_size: int) -> int:
    return 3 if image_size < 96 else 2


def render(rng, idl, au, scene, image_size):
    """Render one sample; returns (image uint8, mask uint8, landmarks68, visible68, bbox, info)."""
    ss = supersampling(image_size)
    n = image_size * ss
    g = fm.face_geometry(idl, au)
    g["wrinkle"] = float(au[fm.AU_NAMES.index("AU09")])
    R = fm.rotation(scene["yaw"], scene["pitch"], scene["roll"])
    scale = scene["face_height"] * image_size / FACE_HEIGHT_UNITS
    # place the centre of the face box (landmarks + forehead line, see bbox) at the chosen point
    face_pts = np.concatenate([g["landmarks3d"], g["forehead"]]) @ R.T
    mid = 0.5 * (face_pts[:, :2].min(0) + face_pts[:, :2].max(0))
    centre = (0.5 + scene["shift"]) * image_size - 0.5 - mid * scale
    camera = Camera(R, scale, centre, ss)
    neck_R = fm.rotation(0.5 * scene["yaw"], 0.5 * scene["pitch"], 0.5 * scene["roll"])
    camera_neck = Camera(neck_R, scale, centre, ss)

    img = _background(rng, BACKGROUNDS[scene["background"]], n, ss, idl["skin_rgb"])
    lab = Image.new("L", (n, n), P["background"])
    dr, dl = ImageDraw.Draw(img), ImageDraw.Draw(lab)
    _hair_back(dr, dl, camera, idl, scene)
    _neck(dr, dl, camera_neck, idl, scene)

    ppu = float(np.clip(round(scale * ss), 40, 300))
    tex_lab, tex_rgb = _texture(g, idl, scene, ppu)
    rgba = np.array(img.convert("RGBA"))
    lab_arr = np.array(lab)
    _head(rgba.view(np.uint32)[:, :, 0], lab_arr, camera, tex_lab, tex_rgb, ppu, idl, scene,
          float(g["jaw"][-1, 1]))
    img, lab = Image.fromarray(rgba, "RGBA").convert("RGB"), Image.fromarray(lab_arr)
    dr, dl = ImageDraw.Draw(img), ImageDraw.Draw(lab)
    _nose(dr, dl, camera, g, idl, scene)
    if g["wrinkle"] > 0.05:
        da = ImageDraw.Draw(img, "RGBA")
        for line in g["nose_bridge_lines"]:
            da.line(camera.ssd(line), fill=_rgba(idl["skin_rgb"] * 0.45, 50 + 130 * g["wrinkle"]),
                    width=max(1, int(round(0.008 * scale * ss))))
    if scene["glasses"]:
        _glasses(img, dl, camera, g, idl, scene)
    if scene["hat"]:
        _hat(dr, dl, camera, scene)
    occ = _occluders(rng, dr, dl, camera, g, idl, scene, scene["num_occluders"])

    # ---- landmarks and visibility ----
    lm3 = g["landmarks3d"]
    lm = camera.pix(lm3)
    facing = camera.cam(g["normals"])[:, 2] > 0.0
    lab_arr = np.asarray(lab)
    sxy = np.clip(np.round((lm + 0.5) * ss - 0.5).astype(int), 0, n - 1)
    on_top = lab_arr[sxy[:, 1], sxy[:, 0]]
    blocked = np.isin(on_top, (P["occluder"], P["hat"], P["eye_g"]))
    idx = np.arange(68)
    blocked |= (on_top == P["nose"]) & ((idx < 27) | (idx > 35))
    blocked |= (on_top == P["hair"]) & (idx >= 17)
    mask = downsample_labels(lab_arr, ss)
    # the landmark's own part must show in the output mask within 1 pixel (grazing / sub-pixel parts)
    pxy = np.clip(np.round(lm).astype(int), 0, image_size - 1)
    oy, ox = np.mgrid[-1:2, -1:2]
    wy = np.clip(pxy[:, 1][:, None] + oy.reshape(1, -1), 0, image_size - 1)
    wx = np.clip(pxy[:, 0][:, None] + ox.reshape(1, -1), 0, image_size - 1)
    win = mask[wy, wx]
    mouth = np.isin(win, (P["u_lip"], P["l_lip"], P["mouth"]))
    present = np.where(idx[:, None] >= 48, mouth, win == fm.LANDMARK68_PART[:, None]).any(axis=1)
    inside = ((lm[:, 0] >= -0.5) & (lm[:, 0] <= image_size - 0.5)
              & (lm[:, 1] >= -0.5) & (lm[:, 1] <= image_size - 0.5))
    visible = facing & ~blocked & present & inside

    box_pts = np.concatenate([lm, camera.pix(g["forehead"])])
    bbox = np.concatenate([box_pts.min(0), box_pts.max(0)]).astype(np.float32)

    out = img.reduce(ss) if ss > 1 else img
    out = _postprocess(rng, out, scene, image_size)
    info = {"occluder_kinds": occ, "gap": g["gap"]}
    return out, mask, lm.astype(np.float32), visible, bbox, info


def downsample_labels(lab, ss):
    """Output-pixel labels from the supersampled label canvas: the centre sample for odd ``ss``; for
    ``ss = 2`` the majority of the 2x2 block (2-2 ties: the top-left sample's pair), which, unlike
    taking one fixed sample, does not shift the labels by a quarter pixel."""
    if ss % 2 == 1:
        return np.ascontiguousarray(lab[ss // 2::ss, ss // 2::ss])
    if ss != 2:
        raise ValueError(f"supersampling factor {ss} not supported")
    a, b, c, d = lab[0::2, 0::2], lab[0::2, 1::2], lab[1::2, 0::2], lab[1::2, 1::2]
    out = d.copy()
    for x, y in ((c, d), (b, d), (b, c), (a, d), (a, c), (a, b)):
        np.copyto(out, x, where=(x == y))
    return out


def _postprocess(rng, img, scene, image_size):
    if scene["blur_sigma"] > 0:
        img = img.filter(ImageFilter.GaussianBlur(scene["blur_sigma"] * image_size / 112.0))
    x = np.asarray(img)
    mean = float(x.mean())
    gain = scene["gains"] * scene["contrast"]
    offset = (mean * (1 - scene["contrast"]) + scene["brightness"]) * scene["gains"] + 0.5
    y = x * gain.astype(np.float32) + offset.astype(np.float32)
    if scene["noise_sigma"] > 0:
        y += rng.standard_normal(y.shape, dtype=np.float32) * np.float32(scene["noise_sigma"])
    x = np.clip(y, 0, 255).astype(np.uint8)
    if scene["jpeg_quality"] > 0:
        buf = io.BytesIO()
        Image.fromarray(x).save(buf, format="JPEG", quality=scene["jpeg_quality"])
        buf.seek(0)
        x = np.asarray(Image.open(buf).convert("RGB"))
    return x
