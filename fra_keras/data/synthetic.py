"""Synthetic faces (``synthetic_faces_v1``): the embedded default data set (docs/datasets.md).

A procedural, label-complete face generator in pure NumPy + Pillow. Sample ``i`` of a split is a
pure function of ``(seed, split, i)`` (its own ``np.random.default_rng([seed, split_id, i])``);
nothing is stored, so any shard of any split can be rendered anywhere, at any size in [64, 224].

What a sample contains (`render_sample`):

=============== ============ =====================================================================
key             dtype/shape  meaning
=============== ============ =====================================================================
image           uint8 HxWx3  RGB
mask            uint8 HxW    fine part labels, `PART_NAMES` (CelebAMask-HQ-like)
region_mask     uint8 HxW    coarse 8 regions, `REGION_NAMES` (= ``PART_TO_REGION[mask]``)
landmarks68     float32 68x2 (x, y) pixels, 300W / iBUG order, origin at the centre of the
                             top-left pixel; 3-D consistent (self-occluded points keep their
                             projected 3-D position and get ``visible68 = False``)
visible68       bool 68      faces the camera, not covered (nose, hair, hat, eyeglasses,
                             occluder), its part shows in ``mask`` within 1 pixel, inside the frame
landmarks5      float32 5x2  CelebA order: image-left eye centre, image-right eye centre, nose tip
                             (30), mouth corners (48, 54)
bbox            float32 4    (x0, y0, x1, y1): box of the 68 landmarks and the forehead line
expression      int64        RAF-DB order, `EXPRESSION_NAMES`
au              float32 13   action-unit intensities in [0, 1], `AU_NAMES`
attributes      int8 40      CelebA order `CELEBA_ATTRIBUTES`; 1 / 0, or -1 = unknown (not rendered)
identity        int64        global identity id (split = `split_of_identity`)
pose            float32 3    yaw, pitch, roll in degrees (`_face_model.rotation` conventions)
nuisance        dict         Python API only: scale, shift, light, background, occluders, blur ...
=============== ============ =====================================================================

Identity-disjoint splits: global identity ``g`` is in "train" iff ``g % 10 < 8``, in "validation" iff
``g % 10 == 8``, in "test" iff ``g % 10 == 9``. Sample ``i`` of a split shows identity number
``i % IDENTITIES_PER_SPLIT[split]`` of that split (1600 / 200 / 200 identities), so a batch of
consecutive samples has no repeated identity and every identity recurs every ``pool`` samples with a
new expression, pose, lighting, accessories and background. The identity latent (face shape, part
sizes and spacing, skin / hair colour, hair style, facial hair, brows) depends on ``(seed, g)`` only.

Expressions are drawn uniformly over the 7 classes from FACS prototypes with intensity jitter,
drop-outs and leaks: a linear classifier on the true AUs reaches ~0.91, on aligned landmarks ~0.75
(400 samples) to ~0.83 (3000), while global colour statistics and a 4x4 thumbnail stay at chance
(the shortcut audit in ``tests/test_synthetic.py``). Attributes are drawn independently of expression
and pose, except Smiling (AU12 >= 0.35) and Mouth_Slightly_Open (lip gap), which are derived from
the AUs on purpose; they describe the rendered person and accessories even where a hat or an
occluder hides the region.

These are synthetic images with a large domain gap: report their metrics under "synthetic" keys only,
never as benchmark numbers.

Command line: ``python -m fra_keras.data.synthetic --output docs/synthetic_faces.png --num 16
--size 128`` writes a grid of faces with their coarse masks and landmarks.
"""

from __future__ import annotations

import argparse
import numbers
import sys

import numpy as np

from . import _face_model as fm
from . import _face_render as fr
from ._face_model import (  # noqa: F401  (re-exported public names)
    AU_NAMES, ATTRIBUTE_REGIONS, CELEBA_ATTRIBUTES, EXPRESSION_NAMES, EXPRESSION_PROTOTYPES,
    IDENTITIES_PER_SPLIT, KNOWN_ATTRIBUTES, LANDMARK68_FLIP, PART_FLIP, PART_NAMES, PART_TO_REGION,
    REGION_NAMES, SPLITS, identity_of, split_of_identity,
)

GENERATOR_VERSION = "synthetic_faces_v1"
#: Framing profiles (`render_sample`); "wide" is synthetic_faces_v1 as first published.
PROFILES = fr.PROFILES
#: Profiles whose expressions are posed (strong), as in expression-recognition data sets.
STRONG_EXPRESSION_PROFILES = ("aligned",)
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 64, 224
AUTOTUNE = -1  # == tf.data.AUTOTUNE
#: Keys available to `synthetic_dataset` (everything but the Python-only ``nuisance`` dict).
SAMPLE_KEYS = ("image", "mask", "region_mask", "landmarks68", "visible68", "landmarks5", "bbox",
               "expression", "au", "attributes", "identity", "pose")
#: CelebA 5-point order derived from the 68 points.
LANDMARK5_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")


def sample_spec(image_size: int = 112) -> dict:
    """``{key: (shape, numpy dtype)}`` of every `SAMPLE_KEYS` entry at ``image_size``."""
    image_size = _check_size(image_size)
    s = image_size
    return {
        "image": ((s, s, 3), np.uint8), "mask": ((s, s), np.uint8), "region_mask": ((s, s), np.uint8),
        "landmarks68": ((68, 2), np.float32), "visible68": ((68,), np.bool_),
        "landmarks5": ((5, 2), np.float32), "bbox": ((4,), np.float32), "expression": ((), np.int64),
        "au": ((len(AU_NAMES),), np.float32), "attributes": ((len(CELEBA_ATTRIBUTES),), np.int8),
        "identity": ((), np.int64), "pose": ((3,), np.float32),
    }


# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------

def _is_int(x):
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_size(image_size):
    if not _is_int(image_size) or not MIN_IMAGE_SIZE <= int(image_size) <= MAX_IMAGE_SIZE:
        raise ValueError(f"image_size must be an integer in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], "
                         f"got {image_size!r}")
    return int(image_size)


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def _check_seed(seed):
    if not _is_int(seed) or int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_index(index):
    if not _is_int(index) or int(index) < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    return int(index)


def _check_profile(profile):
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    return profile


def _check_keys(keys):
    if isinstance(keys, str):
        keys = (keys,)
    keys = tuple(keys)
    if not keys:
        raise ValueError(f"keys must name at least one of {SAMPLE_KEYS}, got {keys!r}")
    for k in keys:
        if k not in SAMPLE_KEYS:
            raise ValueError(f"keys: unknown key {k!r}; allowed keys are {SAMPLE_KEYS}")
    return keys


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

def render_sample(index: int, seed: int = 0, image_size: int = 112, split: str = "train",
                  profile: str = "wide") -> dict:
    """Render sample ``index`` of ``split``; a pure function of its arguments (see module doc).

    ``profile`` frames the face (`PROFILES`; docs/datasets.md): "wide" (synthetic_faces_v1 as
    published, the default here), "crop" (VGGFace2-like loose crops: the pre-training default),
    "aligned" (RAF-DB-like aligned faces with posed expressions: expression / attribute evaluation),
    "box" (300W / WFLW-like face-box crops: landmark evaluation). Identity, expression class and
    every other nuisance of sample ``index`` are the same in every profile.
    """
    index, seed = _check_index(index), _check_seed(seed)
    image_size, split = _check_size(image_size), _check_split(split)
    profile = _check_profile(profile)
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    identity = identity_of(index, split)
    idl = fm.identity_latent(seed, identity)
    expression, au = fm.sample_expression(rng, strong=profile in STRONG_EXPRESSION_PROFILES)
    scene = fr.apply_profile(rng, fr.sample_scene(rng), profile)
    attributes = fm.sample_attributes(idl, au, scene)
    image, mask, lm, visible, bbox, info = fr.render(rng, idl, au, scene, image_size)
    lm5 = np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]]).astype(np.float32)
    nuisance = {
        "face_height": scene["face_height"], "shift": np.asarray(scene["shift"], np.float32),
        "light": np.asarray(scene["light"], np.float32), "ambient": scene["ambient"],
        "background": fr.BACKGROUNDS[scene["background"]], "glasses": scene["glasses"],
        "sunglasses": scene["glasses"] and scene["sunglasses"], "hat": scene["hat"],
        "lipstick": scene["lipstick"], "rosy": scene["rosy"],
        "occluders": ",".join(info["occluder_kinds"]), "blur_sigma": scene["blur_sigma"],
        "noise_sigma": scene["noise_sigma"], "jpeg_quality": scene["jpeg_quality"],
        "gaze": np.asarray(scene["gaze"], np.float32), "hair_style": idl["hair_style"],
        "hair_colour": idl["hair_colour"], "skin_tone": idl["skin_tone"],
        "facial_hair": idl["facial_hair"],
    }
    return {
        "image": image,
        "mask": mask,
        "region_mask": PART_TO_REGION[mask],
        "landmarks68": lm,
        "visible68": visible.astype(np.bool_),
        "landmarks5": lm5,
        "bbox": bbox,
        "expression": np.int64(expression),
        "au": au.astype(np.float32),
        "attributes": attributes,
        "identity": np.int64(identity),
        "pose": np.array([scene["yaw"], scene["pitch"], scene["roll"]], np.float32),
        "nuisance": nuisance,
    }


def render_batch(indices, seed: int = 0, image_size: int = 112, split: str = "train",
                 profile: str = "wide") -> dict:
    """Render several samples and stack them (``nuisance`` becomes a dict of arrays)."""
    if _is_int(indices):
        indices = [indices]
    indices = [_check_index(i) for i in np.asarray(list(indices)).reshape(-1).tolist()]
    samples = [render_sample(i, seed, image_size, split, profile) for i in indices]
    if not samples:
        raise ValueError("indices must contain at least one index, got an empty sequence")
    out = {k: np.stack([s[k] for s in samples]) for k in SAMPLE_KEYS}
    out["nuisance"] = {k: np.stack([np.asarray(s["nuisance"][k]) for s in samples])
                       for k in samples[0]["nuisance"]}
    return out


def synthetic_dataset(image_size: int = 112, seed: int = 0, split: str = "train",
                      num_samples=None, keys=("image",), num_parallel_calls=AUTOTUNE,
                      deterministic: bool = True, profile: str = "wide"):
    """``tf.data.Dataset`` of ``{key: tensor}`` with static shapes (see `sample_spec`).

    Elements ``0, 1, 2, ...`` of ``split`` (infinite when ``num_samples`` is None), rendered in parallel
    with ``tf.numpy_function`` inside ``Dataset.map``. Element ``i`` equals `render_sample`
    ``(i, seed, image_size, split, profile)``.
    """
    image_size, seed, split = _check_size(image_size), _check_seed(seed), _check_split(split)
    profile = _check_profile(profile)
    keys = _check_keys(keys)
    if num_samples is not None and (not _is_int(num_samples) or int(num_samples) < 0):
        raise ValueError(f"num_samples must be None (infinite) or a non-negative integer, "
                         f"got {num_samples!r}")
    if num_parallel_calls is not None and not _is_int(num_parallel_calls):
        raise ValueError(f"num_parallel_calls must be an integer or tf.data.AUTOTUNE (-1), "
                         f"got {num_parallel_calls!r}")
    import tensorflow as tf

    spec = sample_spec(image_size)
    tout = [tf.as_dtype(spec[k][1]) for k in keys]

    def _render(i):
        sample = render_sample(int(i), seed, image_size, split, profile)
        return [np.asarray(sample[k], dtype=spec[k][1]) for k in keys]

    def _map(i):
        outs = tf.numpy_function(_render, [i], tout, stateful=False)
        result = {}
        for k, t in zip(keys, outs):
            t.set_shape(spec[k][0])
            result[k] = t
        return result

    if num_samples is None:
        ds = tf.data.Dataset.counter(start=0, step=1, dtype=tf.int64)
    else:
        ds = tf.data.Dataset.range(int(num_samples))
    return ds.map(_map, num_parallel_calls=num_parallel_calls, deterministic=bool(deterministic))


# ---------------------------------------------------------------------------------------------
# Preview grid (command line)
# ---------------------------------------------------------------------------------------------

REGION_COLOURS = np.array([(0, 0, 0), (140, 80, 30), (240, 200, 160), (60, 200, 60), (40, 120, 255),
                           (255, 230, 0), (230, 30, 60), (190, 60, 230)], np.float32)


def preview_tile(sample: dict, alpha: float = 0.5):
    """(image, overlay) Pillow images: the overlay shows the coarse regions and the landmarks
    (visible: filled green, not visible: hollow white)."""
    from PIL import Image, ImageDraw

    img = sample["image"].astype(np.float32)
    reg = REGION_COLOURS[sample["region_mask"]]
    over = np.where(sample["region_mask"][..., None] > 0, (1 - alpha) * img + alpha * reg, img * 0.6)
    over = Image.fromarray(np.clip(over, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(over)
    r = max(1.0, sample["image"].shape[0] / 110.0)
    for (x, y), v in zip(sample["landmarks68"], sample["visible68"]):
        if v:
            d.ellipse([x - r, y - r, x + r, y + r], fill=(0, 255, 0))
        else:
            d.ellipse([x - r, y - r, x + r, y + r], outline=(255, 255, 255))
    x0, y0, x1, y1 = sample["bbox"].tolist()
    d.rectangle([x0, y0, x1, y1], outline=(255, 255, 255))
    return Image.fromarray(sample["image"]), over


def preview_grid(num: int = 16, image_size: int = 128, seed: int = 0, split: str = "train",
                 columns: int = 4, profile: str = "wide"):
    from PIL import Image

    num = int(num)
    if num < 1:
        raise ValueError(f"num must be a positive integer, got {num!r}")
    rows = (num + columns - 1) // columns
    s = _check_size(image_size)
    grid = Image.new("RGB", (columns * 2 * s + (columns - 1) * 4, rows * s), (255, 255, 255))
    for i in range(num):
        a, b = preview_tile(render_sample(i, seed, s, split, profile))
        r, c = divmod(i, columns)
        x = c * (2 * s + 4)
        grid.paste(a, (x, r * s))
        grid.paste(b, (x + s, r * s))
    return grid


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fra_keras.data.synthetic",
                                description="Write a preview grid of synthetic faces "
                                            "(image | coarse regions + landmarks).")
    p.add_argument("--output", required=True, help="PNG path")
    p.add_argument("--num", type=int, default=16)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train", choices=SPLITS)
    p.add_argument("--columns", type=int, default=4)
    p.add_argument("--profile", default="wide", choices=PROFILES,
                   help="framing: wide (v1), crop (pre-training), aligned / box (evaluation)")
    p.add_argument("--colors", type=int, default=0,
                   help="quantise the PNG to this many colours (0 = full colour) to keep it small")
    args = p.parse_args(argv)
    grid = preview_grid(args.num, args.size, args.seed, args.split, args.columns, args.profile)
    if args.colors:
        from PIL import Image

        palette = grid.quantize(colors=args.colors, method=Image.Quantize.FASTOCTREE)
        grid = grid.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
    grid.save(args.output, optimize=True)
    print(f"{GENERATOR_VERSION}: wrote {args.num} samples ({args.split}, {args.profile}, seed {args.seed}, "
          f"{args.size} px) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
