"""Region awareness of FRA's K heatmaps, measured on synthetic faces with part masks.

How to run it and read it: docs/evaluation.md, "Region awareness (`regions`)".

For each heatmap k (the inference heatmaps `FRA.heatmaps`, resized bilinearly to image resolution) and
each coarse part p (`REGION_NAMES`: background, hair, skin, brows, eyes, nose, mouth, accessories):

* ``mass[k, p]`` = sum over images and pixels of part p of heatmap k (the K x P matrix);
* ``mass_share`` = mass normalised per heatmap (rows sum to 1). It is dominated by part AREA: a
  constant heatmap already puts ~60 % of its mass on skin, so a large share there says little;
* ``density_share`` = mass / part area, normalised per heatmap: the mean heatmap value inside each
  part, relative. A constant heatmap gives 1/P everywhere; a heatmap that lights up the eyes gets a
  large eyes share whatever the eyes' size. This is the headline version.
* ``purity`` = mean over heatmaps of the largest share (1/P = 0.125 for uniform heatmaps in the density
  version); ``coverage`` = the distinct parts that are the largest share of at least one heatmap;
* ``usage`` = share of pixels where heatmap k is the arg-max (hard segmentation view);
* ``position_predictability`` / ``part_predictability``: how well the arg-max heatmap of a pixel is
  predicted by where the pixel is (the most frequent winner at that (y, x) over all faces) or by which
  part it belongs to (the most frequent winner in that part). Both are at least the largest usage
  (always guessing the most used heatmap). A segmentation into facial parts has part >> position; a
  partition of the image frame (heatmap k = "the top-left corner") has position >> part, and it
  cannot be consistent across views that crop and flip differently.
* ``consistency``: each face is seen twice -- as rendered (view A) and horizontally flipped plus
  cropped to a known box and resized back (view B; the part mask goes through the same flip and crop,
  nearest-neighbour). Per face and heatmap, the dominant part (largest density among the parts present
  with >= `min_pixels` pixels in both views) is compared between views; consistency is the fraction of
  (face, heatmap) pairs that agree. Coarse parts merge left / right, so the flip needs no relabelling.
* ``purity_hard`` / ``consistency_hard``: the same questions asked of the one-hot arg-max maps
  (`hard_heatmaps`), i.e. whether the *segmentation* follows the parts whatever the heatmap
  temperature. Soft purity cannot exceed `ideal_purity(heatmap_scale, K, P)` (0.31 at the reference's
  scale 1.0 with K = P = 8); hard purity reaches 1 for a perfect part segmentation. A heatmap that is
  rarely the arg-max has a share computed from a handful of pixels, so hard purity weights each heatmap
  by its usage (a single heatmap winning everywhere scores the chance 1/P), and hard consistency skips
  the (face, heatmap) pairs where the heatmap wins no pixel of a view.

Everything but `render_views` and `model_heatmaps` is NumPy.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

DEFAULT_CROP_SCALE = (0.65, 0.9)


def render_views(num: int, image_size: int, seed: int = 0, split: str = "test",
                 crop_scale=DEFAULT_CROP_SCALE, profile: str = "crop") -> Dict[str, np.ndarray]:
    """Synthetic faces and their flipped + cropped twins, with the matching coarse part masks.

    `profile`: the framing of the faces (default "crop", the synthetic pre-training distribution).

    Returns a dict of ``image_a`` / ``image_b`` uint8 (N, S, S, 3), ``mask_a`` / ``mask_b`` uint8 (N, S, S)
    and ``boxes`` (N, 4) = (y0, x0, y1, x1) of view B's crop in the flipped view-A frame, in pixels.
    """
    from PIL import Image

    from fra_keras.data.synthetic import render_sample

    rng = np.random.default_rng([int(seed), 7])
    s = int(image_size)
    out = {k: [] for k in ("image_a", "image_b", "mask_a", "mask_b", "boxes")}
    for i in range(int(num)):
        sample = render_sample(i, seed=seed, image_size=s, split=split, profile=profile)
        image, mask = sample["image"], sample["region_mask"]
        side = int(round(s * rng.uniform(*crop_scale)))
        y0 = int(rng.integers(0, s - side + 1))
        x0 = int(rng.integers(0, s - side + 1))
        flipped_image, flipped_mask = image[:, ::-1], mask[:, ::-1]
        crop_i = Image.fromarray(np.ascontiguousarray(flipped_image[y0:y0 + side, x0:x0 + side]))
        crop_m = Image.fromarray(np.ascontiguousarray(flipped_mask[y0:y0 + side, x0:x0 + side]))
        out["image_a"].append(image)
        out["mask_a"].append(mask)
        out["image_b"].append(np.asarray(crop_i.resize((s, s), Image.BILINEAR)))
        out["mask_b"].append(np.asarray(crop_m.resize((s, s), Image.NEAREST)))
        out["boxes"].append((y0, x0, y0 + side, x0 + side))
    return {k: np.stack(v) for k, v in out.items()}


def model_heatmaps(model, images_uint8, batch_size: int = 32) -> np.ndarray:
    """`model.heatmaps` of uint8 images, resized bilinearly to image resolution: float32 (N, H, W, K)."""
    import tensorflow as tf

    from fra_keras.preprocessing import normalize_images

    h, w = images_uint8.shape[1:3]
    mean = tf.constant(model.config.mean, tf.float32)
    std = tf.constant(model.config.std, tf.float32)

    def heatmaps(x):
        x = normalize_images(x, mean, std)
        return tf.image.resize(model.heatmaps(x, training=False), (h, w), method="bilinear")

    # autograph=False: no tensor-dependent Python control flow here, and AutoGraph's source lookup
    # breaks when a module's file changes on disk while the process runs.
    fn = tf.function(heatmaps, reduce_retracing=True, autograph=False)
    outs = [fn(tf.convert_to_tensor(images_uint8[i:i + batch_size]))
            for i in range(0, len(images_uint8), batch_size)]
    return np.concatenate([o.numpy() for o in outs]).astype(np.float32)


# Pure metrics ------------------------------------------------------------------------------------
def _check(heatmaps, masks):
    hm = np.asarray(heatmaps, dtype=np.float64)
    m = np.asarray(masks).astype(np.int64)
    if hm.ndim != 4 or m.shape != hm.shape[:3]:
        raise ValueError(f"heatmaps must be (N, H, W, K) and masks (N, H, W); got {hm.shape} and {m.shape}")
    return hm, m


def part_mass(heatmaps, masks, num_parts: int) -> np.ndarray:
    """(K, P): total mass of each heatmap over the pixels of each part (all images)."""
    hm, m = _check(heatmaps, masks)
    k = hm.shape[-1]
    labels = m.reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= num_parts):
        raise ValueError(f"mask values must be in [0, {num_parts})")
    flat = hm.reshape(-1, k)
    return np.stack([np.bincount(labels, weights=flat[:, j], minlength=num_parts) for j in range(k)])


def part_area(masks, num_parts: int) -> np.ndarray:
    """(P,): number of pixels of each part."""
    return np.bincount(np.asarray(masks).astype(np.int64).reshape(-1), minlength=num_parts)[:num_parts].astype(
        np.float64)


def mass_share(mass) -> np.ndarray:
    """Rows of the (K, P) mass matrix normalised to sum 1."""
    mass = np.asarray(mass, dtype=np.float64)
    return mass / np.maximum(mass.sum(axis=1, keepdims=True), 1e-30)


def density_share(mass, area) -> np.ndarray:
    """(K, P): mean heatmap value inside each part, normalised per heatmap; absent parts get 0."""
    mass = np.asarray(mass, dtype=np.float64)
    area = np.asarray(area, dtype=np.float64)
    density = np.where(area > 0, mass / np.maximum(area, 1.0), 0.0)
    return density / np.maximum(density.sum(axis=1, keepdims=True), 1e-30)


def purity(shares) -> float:
    """Mean over heatmaps of the largest part share."""
    return float(np.mean(np.max(np.asarray(shares), axis=1)))


def weighted_purity(shares, weights) -> float:
    """Sum over heatmaps of weight x largest part share, weights normalised to sum 1 (usage-weighted)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.sum() <= 0:
        raise ValueError("weighted_purity: weights must have a positive sum")
    return float(np.sum(w / w.sum() * np.max(np.asarray(shares), axis=1)))


def dominant_parts(shares) -> np.ndarray:
    """(K,) index of the largest part share of each heatmap."""
    return np.argmax(np.asarray(shares), axis=1)


def coverage(shares) -> int:
    """Number of distinct parts that are the dominant part of at least one heatmap."""
    return int(len(set(dominant_parts(shares).tolist())))


def hard_heatmaps(heatmaps) -> np.ndarray:
    """One-hot arg-max over K of (N, H, W, K) heatmaps, float32 of the same shape (ties: lowest k)."""
    hm = np.asarray(heatmaps)
    k = hm.shape[-1]
    return np.eye(k, dtype=np.float32)[np.argmax(hm, axis=-1)]


def ideal_purity(scale: float, num_regions: int, num_parts: int) -> float:
    """Density purity of the sharpest soft heatmaps a perfect K-part segmentation can give.

    Heatmaps are softmax_K(cos / scale) (docs/method.md, "Neck and heatmaps"). Take K unit mask
    embeddings spread as far apart as possible (pairwise cosine -1/(K-1), a regular simplex) and every
    pixel of part k projected exactly onto embedding k: heatmap k then has the value
    a = e^(1/s) / Z inside part k and b = e^(-1/((K-1) s)) / Z inside each of the other P - 1 parts, so
    its density share is a / (a + (P - 1) b). The metric's chance level is 1/P; with the reference's
    scale 1.0 and K = P = 8 this ideal is 0.309, and it passes 0.4 only below scale ~0.74.
    """
    s, k, p = float(scale), int(num_regions), int(num_parts)
    if s <= 0 or k < 2 or p < 1:
        raise ValueError(f"ideal_purity: need scale > 0, num_regions >= 2, num_parts >= 1; got {s}, {k}, {p}")
    off = -1.0 / (k - 1)
    # a / (a + (P-1) b) = 1 / (1 + (P-1) exp((off - 1) / s)), written without overflow
    return float(1.0 / (1.0 + (p - 1) * np.exp((off - 1.0) / s)))


def usage(heatmaps) -> np.ndarray:
    """(K,): share of pixels where each heatmap is the arg-max over K."""
    hm = np.asarray(heatmaps)
    k = hm.shape[-1]
    return np.bincount(np.argmax(hm, axis=-1).reshape(-1), minlength=k).astype(np.float64) / hm[..., 0].size


def position_predictability(labels) -> float:
    """Share of pixels whose label equals the most frequent label at their (y, x) over the N maps.

    `labels`: int (N, H, W) arg-max heatmap indices.
    """
    lab = np.asarray(labels).astype(np.int64)
    k = int(lab.max()) + 1
    counts = np.stack([(lab == j).sum(axis=0) for j in range(k)])          # (K, H, W)
    return float(counts.max(axis=0).sum() / lab.size)


def part_predictability(labels, masks, num_parts: int) -> float:
    """Share of pixels whose label equals the most frequent label of their part (over all N maps)."""
    lab = np.asarray(labels).astype(np.int64).reshape(-1)
    m = np.asarray(masks).astype(np.int64).reshape(-1)
    if lab.shape != m.shape:
        raise ValueError(f"labels and masks must have the same shape; got {np.shape(labels)} and {np.shape(masks)}")
    k = int(lab.max()) + 1
    joint = np.bincount(m * k + lab, minlength=num_parts * k).reshape(num_parts, k)
    return float(joint.max(axis=1).sum() / lab.size)


def per_image_dominant(heatmaps, masks, num_parts: int, allowed=None) -> np.ndarray:
    """(N, K): per image, the part with the largest mean heatmap value (density) among allowed parts.

    `allowed`: optional bool (N, P); parts not allowed (or absent) never win. Images with no allowed part,
    and heatmaps with no mass on the allowed parts (possible for arg-max maps), give -1.
    """
    hm, m = _check(heatmaps, masks)
    n, k = hm.shape[0], hm.shape[-1]
    out = np.full((n, k), -1, dtype=np.int64)
    for i in range(n):
        mass = part_mass(hm[i:i + 1], m[i:i + 1], num_parts)               # (K, P)
        area = part_area(m[i], num_parts)
        ok = area > 0 if allowed is None else (np.asarray(allowed[i], bool) & (area > 0))
        if not ok.any():
            continue
        density = np.where(ok, mass / np.maximum(area, 1.0), -np.inf)
        present = np.where(ok, mass, 0.0).sum(axis=1) > 0
        out[i] = np.where(present, np.argmax(density, axis=1), -1)
    return out


def consistency(heatmaps_a, masks_a, heatmaps_b, masks_b, num_parts: int, min_pixels: int = 4) -> float:
    """Fraction of (image, heatmap) pairs whose dominant part is the same in both views (see module doc)."""
    masks_a, masks_b = np.asarray(masks_a), np.asarray(masks_b)
    n = masks_a.shape[0]
    area_a = np.stack([part_area(masks_a[i], num_parts) for i in range(n)])
    area_b = np.stack([part_area(masks_b[i], num_parts) for i in range(n)])
    allowed = (area_a >= min_pixels) & (area_b >= min_pixels)
    dom_a = per_image_dominant(heatmaps_a, masks_a, num_parts, allowed)
    dom_b = per_image_dominant(heatmaps_b, masks_b, num_parts, allowed)
    valid = (dom_a >= 0) & (dom_b >= 0)
    if not valid.any():
        raise ValueError("consistency: no image has a part present in both views")
    return float(np.mean(dom_a[valid] == dom_b[valid]))


def partition_distance(shares_a, shares_b) -> float:
    """How different two models' partitions are: mean L1 distance between their heatmaps' part shares,
    after matching the heatmaps one to one so that the distance is smallest.

    `shares_a`, `shares_b`: (K, P) per-heatmap part shares of two models (e.g. `density_share_hard` of
    two region reports on the same test faces). Heatmap indices are arbitrary (a permutation of the K
    heatmaps is the same partition), hence the matching. 0 = the same partition up to the order of
    the heatmaps; 2 = every matched pair shares no part. The matching is exhaustive over the K!
    permutations, so K is limited to 9.
    """
    a = np.asarray(shares_a, dtype=np.float64)
    b = np.asarray(shares_b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"partition_distance: need two (K, P) arrays of one shape; got {a.shape} and {b.shape}")
    k = a.shape[0]
    if not 1 <= k <= 9:
        raise ValueError(f"partition_distance: K={k} heatmaps; allowed 1-9 (exhaustive matching)")
    import itertools

    cost = np.abs(a[:, None, :] - b[None, :, :]).sum(-1)                   # (K, K): a's i against b's j
    perms = np.array(list(itertools.permutations(range(k))))                # (K!, K)
    return float(cost[np.arange(k), perms].sum(axis=1).min() / k)


def region_report(heatmaps_a, masks_a, heatmaps_b, masks_b, part_names, min_pixels: int = 4) -> Dict:
    """Every region metric of one model as a JSON-ready dict (K x P matrices as nested lists)."""
    p = len(part_names)
    mass = part_mass(heatmaps_a, masks_a, p)
    area = part_area(masks_a, p)
    raw, dens = mass_share(mass), density_share(mass, area)
    hard_a, hard_b = hard_heatmaps(heatmaps_a), hard_heatmaps(heatmaps_b)
    labels_a = np.argmax(hard_a, axis=-1)          # the arg-max map, computed once for the two below
    hard = density_share(part_mass(hard_a, masks_a, p), area)
    return {
        "parts": list(part_names),
        "mass": mass.round(3).tolist(),
        "mass_share": raw.round(4).tolist(),
        "density_share": dens.round(4).tolist(),
        "purity": purity(dens),
        "coverage": coverage(dens),
        "dominant_parts": [part_names[j] for j in dominant_parts(dens)],
        "purity_mass": purity(raw),
        "coverage_mass": coverage(raw),
        "dominant_parts_mass": [part_names[j] for j in dominant_parts(raw)],
        "consistency": consistency(heatmaps_a, masks_a, heatmaps_b, masks_b, p, min_pixels),
        "density_share_hard": hard.round(4).tolist(),
        "purity_hard": weighted_purity(hard, usage(heatmaps_a)),
        "consistency_hard": consistency(hard_a, masks_a, hard_b, masks_b, p, min_pixels),
        "usage": usage(heatmaps_a).round(4).tolist(),
        "position_predictability": position_predictability(labels_a),
        "part_predictability": part_predictability(labels_a, masks_a, p),
        "part_area_share": (area / max(area.sum(), 1.0)).round(4).tolist(),
    }


def evaluate_regions(model, views: Dict[str, np.ndarray], part_names, batch_size: int = 32,
                     min_pixels: Optional[int] = None) -> Dict:
    """`region_report` of a FRA `model` on `render_views` output."""
    hm_a = model_heatmaps(model, views["image_a"], batch_size)
    hm_b = model_heatmaps(model, views["image_b"], batch_size)
    if min_pixels is None:
        min_pixels = max(4, (views["image_a"].shape[1] // 32) ** 2)
    report = region_report(hm_a, views["mask_a"], hm_b, views["mask_b"], part_names, min_pixels)
    report["min_pixels"] = int(min_pixels)
    report["heatmap_scale"] = float(model.config.heatmap_scale)
    report["purity_ideal"] = ideal_purity(model.config.heatmap_scale, hm_a.shape[-1], len(part_names))
    return report
