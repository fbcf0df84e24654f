"""Format writers: dump sample dicts (e.g. synthetic faces) into the real data sets' on-disk layouts.

Each writer takes an iterable of sample dicts in the shared schema (docs/datasets.md, "Writing synthetic
data in the real layouts"; the keys it needs: ``image`` uint8 (H, W, 3), ``expression`` (RAF-DB order),
``attributes`` int8 (40,), ``landmarks68`` (68, 2) pixels, ``visible68``, ``landmarks5``, ``identity``,
``pose``) - a ``split -> samples`` dict for
the layouts that hold several splits - and writes the files exactly as the data set is distributed,
so that :mod:`fra_keras.data.readers` can be exercised end to end without real data.  Label files and
images are written to a temporary name and renamed into place.  Nothing here needs TensorFlow.

``write_synthetic(layout, root, num_per_split)`` renders synthetic faces and writes them in one go;
``python -m fra_keras.data.writers LAYOUT OUT_DIR --num 20`` does the same from the shell.

The layouts and the choices made where a real layout cannot hold a synthetic label are documented in
``docs/datasets.md`` (CelebA unknown attributes, FERPlus invented votes, WFLW 68 -> 98 points).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import os
import sys
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from fra_keras.data.readers import (AFFECTNET_CLASSES, CELEBA_ATTRIBUTES, FER2013_CLASSES, FERPLUS_CLASSES,
                                    FERPLUS_FOLDERS, RAFDB_CLASSES, W300_SUBSETS)

# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class WriteReport:
    """What a writer produced.  ``counts``: rows written per split; ``label_files``: the label / list
    files; ``valid_attributes`` (CelebA): bool (40,), the columns known for every written sample (the
    others were written as -1); ``expected`` (FERPlus): per split, for every written row in order, the
    label a reader must produce (native FERPlus index) or None where the vote rules drop the row,
    and ``vote_kinds`` the vote pattern used for each row."""

    layout: str
    root: str
    label_files: List[str]
    counts: Dict[str, int]
    valid_attributes: Optional[np.ndarray] = None
    expected: Dict[str, List[Optional[int]]] = dataclasses.field(default_factory=dict)
    vote_kinds: Dict[str, List[str]] = dataclasses.field(default_factory=dict)


def _atomic_write(path: str, data) -> None:
    """Write bytes / text to ``path`` through a temporary file in the same folder and a rename."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    mode = "wb" if isinstance(data, (bytes, bytearray)) else "w"
    kwargs = {} if mode == "wb" else {"encoding": "utf-8", "newline": "\n"}
    with open(tmp, mode, **kwargs) as f:
        f.write(data)
    os.replace(tmp, path)


def _as_image(image) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating) and img.size and float(np.nanmax(img)) <= 1.0:
            img = img * 255.0
        img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"sample image must be (H, W, 3) or (H, W) uint8, got shape {img.shape}")
    return img


def encode_image(image, fmt: str = "jpg", quality: int = 95) -> bytes:
    """PNG (lossless) or JPEG bytes of a uint8 image."""
    from PIL import Image

    fmt = fmt.lower().lstrip(".")
    pil = Image.fromarray(_as_image(image))
    buf = io.BytesIO()
    if fmt in ("jpg", "jpeg"):
        pil.save(buf, format="JPEG", quality=int(quality))
    elif fmt == "png":
        pil.save(buf, format="PNG")
    else:
        raise ValueError(f"image format {fmt!r}; expected 'jpg' or 'png'")
    return buf.getvalue()


def _write_image(path: str, image, fmt: str, quality: int) -> None:
    _atomic_write(path, encode_image(image, fmt, quality))


def fer_grey48(image) -> np.ndarray:
    """The 48x48 grey version of an image that the FER2013 / FERPlus writers store (PIL "L" luma, then a
    bilinear resize when the size differs)."""
    from PIL import Image

    img = _as_image(image)
    pil = Image.fromarray(img)
    if pil.mode != "L":
        pil = pil.convert("L")
    if pil.size != (48, 48):
        pil = pil.resize((48, 48), Image.BILINEAR)
    return np.asarray(pil, dtype=np.uint8)


def _expression(sample) -> int:
    if "expression" not in sample:
        raise ValueError("sample has no 'expression' (RAF-DB order 0..6)")
    e = int(np.asarray(sample["expression"]))
    if not 0 <= e < len(RAFDB_CLASSES):
        raise ValueError(f"sample expression {e} is not a RAF-DB class index 0..6")
    return e


def _landmarks68(sample) -> np.ndarray:
    lm = sample.get("landmarks68", sample.get("landmarks"))
    if lm is None:
        raise ValueError("sample has no 'landmarks68'")
    lm = np.asarray(lm, np.float32)
    if lm.shape != (68, 2):
        raise ValueError(f"sample landmarks68 must be (68, 2), got {lm.shape}")
    return lm


def _visible68(sample) -> np.ndarray:
    v = sample.get("visible68", sample.get("visible"))
    return np.ones(68, bool) if v is None else np.asarray(v, bool).reshape(68)


def _rafdb_to(native_names) -> np.ndarray:
    """RAF-DB index -> index in another data set's class list (by name)."""
    return np.array([list(native_names).index(n) for n in RAFDB_CLASSES], np.int64)


RAFDB_TO_AFFECTNET = _rafdb_to(AFFECTNET_CLASSES)
RAFDB_TO_FERPLUS = _rafdb_to(FERPLUS_CLASSES)
RAFDB_TO_FER2013 = _rafdb_to(FER2013_CLASSES)


def _face_box(sample, image_shape, margin: float = 0.1):
    """(x, y, w, h) integer face box: the sample's ``bbox`` (x0, y0, x1, y1; the synthetic faces' box of
    the landmarks and the forehead) rounded outwards, else the landmark extent grown by ``margin``."""
    if sample.get("bbox") is not None:
        x0, y0, x1, y1 = (float(v) for v in np.asarray(sample["bbox"], np.float64).reshape(4))
        mx = my = 0.0
    else:
        lm = _landmarks68(sample)
        x0, y0 = lm.min(axis=0)
        x1, y1 = lm.max(axis=0)
        mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    x0, y0 = int(np.floor(x0 - mx)), int(np.floor(y0 - my))
    x1, y1 = int(np.ceil(x1 + mx)), int(np.ceil(y1 + my))
    return x0, y0, max(x1 - x0, 1), max(y1 - y0, 1)


def _check_splits(samples_by_split: Mapping, allowed: Sequence[str], layout: str):
    if not isinstance(samples_by_split, Mapping):
        raise TypeError(f"{layout}: expected a dict split -> samples, got {type(samples_by_split).__name__}")
    for split in samples_by_split:
        if split not in allowed:
            raise ValueError(f"{layout}: split {split!r} not in {tuple(allowed)}")


# --------------------------------------------------------------------------------------------------
# RAF-DB
# --------------------------------------------------------------------------------------------------


def write_rafdb(samples_by_split: Mapping[str, Iterable[dict]], root, jpeg_quality: int = 95) -> WriteReport:
    """RAF-DB basic: ``root/EmoLabel/list_patition_label.txt`` (``train_00001.jpg 5``, labels 1..7 =
    RAF-DB index + 1) and ``root/Image/aligned/train_00001_aligned.jpg``.  Splits: train, test (test
    names have 4 digits, as in the real set).  Images are stored at their own size (the real aligned
    images are 100x100)."""
    _check_splits(samples_by_split, ("train", "test"), "rafdb")
    root = os.fspath(root)
    lines, counts = [], {}
    for split in ("train", "test"):
        if split not in samples_by_split:
            continue
        digits = 5 if split == "train" else 4
        n = 0
        for n, sample in enumerate(samples_by_split[split], start=1):
            name = f"{split}_{n:0{digits}d}"
            _write_image(os.path.join(root, "Image", "aligned", f"{name}_aligned.jpg"), sample["image"],
                         "jpg", jpeg_quality)
            lines.append(f"{name}.jpg {_expression(sample) + 1}\n")
        counts[split] = n
    label_file = os.path.join(root, "EmoLabel", "list_patition_label.txt")
    _atomic_write(label_file, "".join(lines))
    return WriteReport("rafdb", root, [label_file], counts)


# --------------------------------------------------------------------------------------------------
# AffectNet
# --------------------------------------------------------------------------------------------------

# Rough circumplex (valence, arousal) per RAF-DB class, used when a sample has none.
_VALENCE_AROUSAL = {0: (0.2, 0.8), 1: (-0.6, 0.7), 2: (-0.7, 0.4), 3: (0.8, 0.5), 4: (-0.7, -0.3),
                    5: (-0.6, 0.7), 6: (0.0, 0.0)}


def write_affectnet(samples: Iterable[dict], root, csv_name: str = "training.csv",
                    jpeg_quality: int = 95, per_folder: int = 500) -> WriteReport:
    """AffectNet (manually annotated): ``root/Manually_Annotated_file_lists/<csv_name>`` with the
    columns ``subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,
    valence,arousal`` and images ``root/Manually_Annotated_Images/<n>/<sha224>.jpg``.  Expressions are
    written in AffectNet's code order (RAF-DB index mapped by name); ``facial_landmarks`` is the 68
    points as ``x;y;x;y...`` (2 decimals); the face box is the sample's ``bbox`` (x0, y0, x1, y1) rounded
    outwards, or the landmark extent plus 10 % without one.  Valence /
    arousal come from the sample (``valence`` / ``arousal``) or a fixed per-class value."""
    root = os.fspath(root)
    stem = os.path.splitext(csv_name)[0]
    rows = ["subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,"
            "valence,arousal\n"]
    n = 0
    for i, sample in enumerate(samples):
        image = _as_image(sample["image"])
        folder = str(1 + i // per_folder)
        name = hashlib.sha224(f"{stem}:{i}".encode()).hexdigest() + ".jpg"
        _write_image(os.path.join(root, "Manually_Annotated_Images", folder, name), image, "jpg", jpeg_quality)
        lm = _landmarks68(sample)
        x, y, w, h = _face_box(sample, image.shape)
        e = _expression(sample)
        default_v, default_a = _VALENCE_AROUSAL[e]
        v = float(sample.get("valence", default_v))
        a = float(sample.get("arousal", default_a))
        lm_text = ";".join(f"{c:.2f}" for c in lm.reshape(-1))
        rows.append(f"{folder}/{name},{x},{y},{w},{h},{lm_text},{int(RAFDB_TO_AFFECTNET[e])},{v:.6f},{a:.6f}\n")
        n += 1
    csv_path = os.path.join(root, "Manually_Annotated_file_lists", csv_name)
    _atomic_write(csv_path, "".join(rows))
    return WriteReport("affectnet", root, [csv_path], {stem: n})


# --------------------------------------------------------------------------------------------------
# FERPlus
# --------------------------------------------------------------------------------------------------

FERPLUS_KEPT_KINDS = ("clear", "rescued")
FERPLUS_DROPPED_KINDS = ("unknown", "tie", "singles", "not_face")


def ferplus_votes(label: int, kind: str, rng: np.random.Generator) -> List[int]:
    """10 FERPlus vote counts (10 taggers) for native class ``label`` following pattern ``kind``:

    * ``clear``: the label gets 6-10 votes; the rest are single votes and at most one pair elsewhere.
    * ``rescued``: the label gets 5 votes and five other columns 1 vote each: 50 % of the raw votes,
      but a majority once single votes are removed (kept).
    * ``unknown``: ``unknown`` 6 votes, the label 2, two singles (dropped: unknown wins).
    * ``tie``: the label and another emotion 4 votes each, two singles (dropped: tie / no majority).
    * ``singles``: one vote in every column (dropped: nothing left after removing single votes).
    * ``not_face``: ``not_face`` 7, the label 2, ``unknown`` 1 (dropped: not a face).
    """
    votes = np.zeros(10, np.int64)
    others = [c for c in range(10) if c != label]
    if kind == "clear":
        m = int(rng.integers(6, 11))
        votes[label] = m
        rest = 10 - m
        pool = list(rng.permutation(others))
        if rest >= 2 and rng.random() < 0.5:
            votes[pool.pop()] = 2
            rest -= 2
        for _ in range(rest):
            votes[pool.pop()] = 1
    elif kind == "rescued":
        votes[label] = 5
        votes[rng.choice(others, size=5, replace=False)] = 1
    elif kind == "unknown":
        votes[8] = 6
        votes[label] = 2
        votes[rng.choice([c for c in others if c != 8], size=2, replace=False)] = 1
    elif kind == "tie":
        rival = int(rng.choice([c for c in range(8) if c != label]))
        votes[label] = 4
        votes[rival] = 4
        votes[rng.choice([c for c in others if c != rival], size=2, replace=False)] = 1
    elif kind == "singles":
        votes[:] = 1
    elif kind == "not_face":
        votes[9] = 7
        votes[label] = 2
        votes[8] = 1
    else:
        raise ValueError(f"kind={kind!r}; expected one of {FERPLUS_KEPT_KINDS + FERPLUS_DROPPED_KINDS}")
    assert votes.sum() == 10
    return votes.tolist()


def write_ferplus(samples_by_split: Mapping[str, Iterable[dict]], root, drop_every: int = 5,
                  seed: int = 0) -> WriteReport:
    """FERPlus: ``root/Images/FER2013{Train,Valid,Test}/fer0000000.png`` (48x48 grey, see
    :func:`fer_grey48`) and ``root/Labels/FER2013{Train,Valid,Test}/label.csv`` rows
    ``fer0000000.png,"(0, 0, 48, 48)",<10 vote counts>`` (neutral, happiness, surprise, sadness, anger,
    disgust, fear, contempt, unknown, NF).  Splits: train, validation, test; image numbers run on
    across the splits as in the real set.  Votes are invented to agree with the sample's expression
    (:func:`ferplus_votes`); every ``drop_every``-th row per split (0: none) instead gets a pattern
    the rules must drop, cycling unknown / tie / singles / not_face; one kept row in 7 is "rescued" by
    single-vote removal.  ``WriteReport.expected`` holds the label the reader must give each row."""
    _check_splits(samples_by_split, tuple(FERPLUS_FOLDERS), "ferplus")
    root = os.fspath(root)
    rng = np.random.default_rng(seed)
    report = WriteReport("ferplus", root, [], {})
    index = 0
    for split in FERPLUS_FOLDERS:
        if split not in samples_by_split:
            continue
        folder = FERPLUS_FOLDERS[split]
        rows, expected, kinds = [], [], []
        for j, sample in enumerate(samples_by_split[split]):
            name = f"fer{index:07d}.png"
            index += 1
            _write_image(os.path.join(root, "Images", folder, name), fer_grey48(sample["image"]), "png", 0)
            label = int(RAFDB_TO_FERPLUS[_expression(sample)])
            if drop_every and (j + 1) % drop_every == 0:
                kind = FERPLUS_DROPPED_KINDS[(j // drop_every) % len(FERPLUS_DROPPED_KINDS)]
            else:
                kind = "rescued" if j % 7 == 3 else "clear"
            votes = ferplus_votes(label, kind, rng)
            rows.append(f'{name},"(0, 0, 48, 48)",' + ",".join(str(v) for v in votes) + "\n")
            expected.append(label if kind in FERPLUS_KEPT_KINDS else None)
            kinds.append(kind)
        label_file = os.path.join(root, "Labels", folder, "label.csv")
        _atomic_write(label_file, "".join(rows))
        report.label_files.append(label_file)
        report.counts[split] = len(rows)
        report.expected[split] = expected
        report.vote_kinds[split] = kinds
    return report


# --------------------------------------------------------------------------------------------------
# FER2013
# --------------------------------------------------------------------------------------------------

_FER2013_USAGE_OUT = {"train": "Training", "validation": "PublicTest", "test": "PrivateTest"}


def write_fer2013(samples_by_split: Mapping[str, Iterable[dict]], csv_path) -> WriteReport:
    """FER2013 ``fer2013.csv``: header ``emotion,pixels,Usage``, FER2013 emotion codes (0 anger ...
    6 neutral, RAF-DB index mapped by name), 2304 space-separated grey values (:func:`fer_grey48`),
    Usage Training / PublicTest / PrivateTest for train / validation / test, in that order."""
    _check_splits(samples_by_split, tuple(_FER2013_USAGE_OUT), "fer2013")
    csv_path = os.fspath(csv_path)
    rows, counts = ["emotion,pixels,Usage\n"], {}
    for split, usage in _FER2013_USAGE_OUT.items():
        if split not in samples_by_split:
            continue
        n = 0
        for sample in samples_by_split[split]:
            grey = fer_grey48(sample["image"])
            code = int(RAFDB_TO_FER2013[_expression(sample)])
            rows.append(f"{code},{' '.join(str(int(p)) for p in grey.reshape(-1))},{usage}\n")
            n += 1
        counts[split] = n
    _atomic_write(csv_path, "".join(rows))
    return WriteReport("fer2013", os.path.dirname(os.path.abspath(csv_path)), [csv_path], counts)


# --------------------------------------------------------------------------------------------------
# CelebA
# --------------------------------------------------------------------------------------------------


def write_celeba(samples_by_split: Mapping[str, Iterable[dict]], root, jpeg_quality: int = 95) -> WriteReport:
    """CelebA, flat (torchvision / FRA ``root/celeba``) layout: ``root/list_attr_celeba.txt``,
    ``root/list_eval_partition.txt`` (0 train, 1 validation, 2 test), ``root/img_align_celeba/000001.jpg``,
    plus ``identity_CelebA.txt`` (identity + 1: CelebA ids start at 1) and
    ``list_landmarks_align_celeba.txt`` (5 points rounded to integers) when every sample has them.

    CelebA has no "unknown" value: attributes that are -1 (unknown) in a sample are written as -1
    (= absent), like a negative.  ``WriteReport.valid_attributes`` (bool (40,)) says which columns are
    known for every written sample; pass it to ``read_celeba(..., attribute_mask=...)`` to read the
    other columns back as unknown."""
    _check_splits(samples_by_split, ("train", "validation", "test"), "celeba")
    root = os.fspath(root)
    attr_rows, part_rows, id_rows, lm_rows = [], [], [], []
    have_id = have_lm = True
    valid = np.ones(40, bool)
    counts: Dict[str, int] = {}
    k = 0
    for part, split in enumerate(("train", "validation", "test")):
        if split not in samples_by_split:
            continue
        n = 0
        for sample in samples_by_split[split]:
            k += 1
            n += 1
            name = f"{k:06d}.jpg"
            _write_image(os.path.join(root, "img_align_celeba", name), sample["image"], "jpg", jpeg_quality)
            attrs = np.asarray(sample["attributes"], np.int64).reshape(40)
            valid &= attrs >= 0
            attr_rows.append(name + "".join(f" {1 if a == 1 else -1:2d}" for a in attrs) + "\n")
            part_rows.append(f"{name} {part}\n")
            if sample.get("identity") is None:
                have_id = False
            else:
                id_rows.append(f"{name} {int(np.asarray(sample['identity'])) + 1}\n")
            if sample.get("landmarks5") is None:
                have_lm = False
            else:
                pts = np.rint(np.asarray(sample["landmarks5"], np.float64).reshape(10)).astype(int)
                lm_rows.append(f"{name:<10s}" + "".join(f" {p:4d}" for p in pts) + "\n")
        counts[split] = n
    files = []

    def write(name, text):
        path = os.path.join(root, name)
        _atomic_write(path, text)
        files.append(path)

    write("list_attr_celeba.txt", f"{k}\n" + " ".join(CELEBA_ATTRIBUTES) + " \n" + "".join(attr_rows))
    write("list_eval_partition.txt", "".join(part_rows))
    if have_id:
        write("identity_CelebA.txt", "".join(id_rows))
    if have_lm:
        header = " ".join(f"{p}_{c}" for p in ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")
                          for c in ("x", "y"))
        write("list_landmarks_align_celeba.txt", f"{k}\n{header}\n" + "".join(lm_rows))
    return WriteReport("celeba", root, files, counts, valid_attributes=valid)


# --------------------------------------------------------------------------------------------------
# 300W and WFLW
# --------------------------------------------------------------------------------------------------


def format_pts(landmarks) -> str:
    """iBUG ``.pts`` text for an (N, 2) array (3 decimals, as the 300W files)."""
    lm = np.asarray(landmarks, np.float64).reshape(-1, 2)
    body = "".join(f"{x:.3f} {y:.3f}\n" for x, y in lm)
    return f"version: 1\nn_points:  {len(lm)}\n{{\n{body}}}\n"


def write_300w(samples: Iterable[dict], root, subset: str = "ibug", image_format: str = "png",
               jpeg_quality: int = 95, prefix: str = "image", start: int = 1) -> WriteReport:
    """300W / iBUG layout: ``root/<subset>/image_0001.png`` + ``image_0001.pts`` (68 points, the sample's
    ``landmarks68`` unchanged: 0-based pixel coordinates; read them back with the default
    ``coordinate_offset=0``).  ``subset`` is a folder such as "ibug", "lfpw/trainset" or
    "helen/testset" (see ``readers.W300_SUBSETS``); files are numbered from ``start``."""
    root = os.fspath(root)
    folder = os.path.join(root, *subset.split("/"))
    n = 0
    for n, sample in enumerate(samples, start=1):
        name = f"{prefix}_{start + n - 1:04d}"
        _write_image(os.path.join(folder, f"{name}.{image_format}"), sample["image"], image_format, jpeg_quality)
        _atomic_write(os.path.join(folder, f"{name}.pts"), format_pts(_landmarks68(sample)))
    return WriteReport("300w", root, [], {subset: n})


def landmarks68_to_98(landmarks68, visible68=None):
    """Extend 300W-68 landmarks to the WFLW-98 layout so that ``readers.wflw98_to_68`` returns the
    originals exactly.  The 68 points are copied to their WFLW slots; the 30 WFLW-only points are
    made up: odd contour points = midpoints of neighbouring jaw points; lower brow edges = midpoints
    of the upper-edge points moved towards the eye by 15 % of the brow width; the middle upper / lower
    lid points = midpoints of the two 300W lid points; pupils (96, 97) = eye centres.  Returns
    ``(landmarks98, visible98)``; a made-up point is visible when all the points it comes from are."""
    lm = np.asarray(landmarks68, np.float32)
    if lm.shape[-2:] != (68, 2):
        raise ValueError(f"expected (..., 68, 2) landmarks, got {lm.shape}")
    vis = np.ones(lm.shape[:-1], bool) if visible68 is None else np.asarray(visible68, bool)
    out = np.zeros(lm.shape[:-2] + (98, 2), np.float32)
    vout = np.zeros(lm.shape[:-2] + (98,), bool)

    def put(dst, src_a, src_b=None):
        if src_b is None:
            out[..., dst, :] = lm[..., src_a, :]
            vout[..., dst] = vis[..., src_a]
        else:
            out[..., dst, :] = 0.5 * (lm[..., src_a, :] + lm[..., src_b, :])
            vout[..., dst] = vis[..., src_a] & vis[..., src_b]

    for j in range(17):                                   # contour
        put(2 * j, j)
    for j in range(16):
        put(2 * j + 1, j, j + 1)
    for wflw_start, src_start, eye in ((33, 17, slice(36, 42)), (42, 22, slice(42, 48))):  # brows
        for j in range(5):
            put(wflw_start + j, src_start + j)
        upper = lm[..., src_start:src_start + 5, :]
        chord = upper[..., 4, :] - upper[..., 0, :]
        width = np.linalg.norm(chord, axis=-1, keepdims=True)
        normal = np.stack([-chord[..., 1], chord[..., 0]], axis=-1) / np.maximum(width, 1e-6)
        to_eye = lm[..., eye, :].mean(axis=-2) - upper.mean(axis=-2)
        sign = np.where((normal * to_eye).sum(axis=-1, keepdims=True) >= 0, 1.0, -1.0)
        for j in range(4):                                # lower edge runs back from the end
            a, b = 3 - j, 4 - j
            dst = wflw_start + 5 + j
            out[..., dst, :] = 0.5 * (upper[..., a, :] + upper[..., b, :]) + 0.15 * width * sign * normal
            vout[..., dst] = vis[..., src_start + a] & vis[..., src_start + b]
    for j in range(9):                                    # nose
        put(51 + j, 27 + j)
    for w0, s0 in ((60, 36), (68, 42)):                   # eyes
        put(w0 + 0, s0 + 0)
        put(w0 + 1, s0 + 1)
        put(w0 + 2, s0 + 1, s0 + 2)
        put(w0 + 3, s0 + 2)
        put(w0 + 4, s0 + 3)
        put(w0 + 5, s0 + 4)
        put(w0 + 6, s0 + 4, s0 + 5)
        put(w0 + 7, s0 + 5)
    for j in range(20):                                   # mouth
        put(76 + j, 48 + j)
    out[..., 96, :] = lm[..., 36:42, :].mean(axis=-2)
    out[..., 97, :] = lm[..., 42:48, :].mean(axis=-2)
    vout[..., 96] = vis[..., 36:42].any(axis=-1)
    vout[..., 97] = vis[..., 42:48].any(axis=-1)
    return out, vout


def _wflw_flags(sample, visible98) -> List[int]:
    pose = np.asarray(sample.get("pose", (0.0, 0.0, 0.0)), np.float64).reshape(-1)
    # Synthetic poses are (yaw, pitch, roll) in degrees; WFLW's "large pose" flag: any angle > 30.
    large_pose = int(np.max(np.abs(pose)) > 30.0) if pose.size else 0
    expr = sample.get("expression")
    expression = int(expr is not None and int(np.asarray(expr)) != RAFDB_CLASSES.index("neutral"))
    occlusion = int(not np.all(visible98))
    return [large_pose, expression, 0, 0, occlusion, 0]


def write_wflw(samples: Iterable[dict], root, split: str = "train", event: str = "0--Synthetic",
               image_format: str = "jpg", jpeg_quality: int = 95) -> WriteReport:
    """WFLW layout: ``root/WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_<split>.txt``
    and ``root/WFLW_images/<event>/<name>.jpg``.  Each line: 196 coordinates (98 points from
    :func:`landmarks68_to_98`, 6 decimals), the rectangle ``x_min y_min x_max y_max`` (integer extent of
    the 98 points), 6 flags (pose: |angle| > 30 degrees; expression: not neutral; illumination 0;
    make-up 0; occlusion: some point not visible; blur 0) and the image path relative to WFLW_images."""
    root = os.fspath(root)
    event_name = event.split("--", 1)[-1]
    lines = []
    for i, sample in enumerate(samples):
        rel = f"{event}/{event.split('--')[0]}_{event_name}_synthetic_{i}.{image_format}"
        _write_image(os.path.join(root, "WFLW_images", *rel.split("/")), sample["image"], image_format,
                     jpeg_quality)
        lm98, vis98 = landmarks68_to_98(_landmarks68(sample), _visible68(sample))
        x0, y0 = np.floor(lm98.min(axis=0)).astype(int)
        x1, y1 = np.ceil(lm98.max(axis=0)).astype(int)
        coords = " ".join(f"{c:.6f}" for c in lm98.reshape(-1))
        flags = " ".join(str(f) for f in _wflw_flags(sample, vis98))
        lines.append(f"{coords} {x0} {y0} {x1} {y1} {flags} {rel}\n")
    path = os.path.join(root, "WFLW_annotations", "list_98pt_rect_attr_train_test",
                        f"list_98pt_rect_attr_{split}.txt")
    _atomic_write(path, "".join(lines))
    return WriteReport("wflw", root, [path], {split: len(lines)})


# --------------------------------------------------------------------------------------------------
# ImageFolder
# --------------------------------------------------------------------------------------------------


def write_image_folder(samples: Iterable[dict], root, class_names: Sequence[str] = RAFDB_CLASSES,
                       key: str = "expression", image_format: str = "jpg", jpeg_quality: int = 95) -> WriteReport:
    """ImageFolder layout ``root/<class name>/<index>.jpg`` (the converted-AffectNet layout FRA trains
    on), class = ``class_names[sample[key]]``.  Read back with
    ``read_image_folder_labels(root, class_names=...)`` to keep this order (sorted folder names
    otherwise)."""
    root = os.fspath(root)
    counts: Dict[str, int] = {c: 0 for c in class_names}
    for i, sample in enumerate(samples):
        name = class_names[int(np.asarray(sample[key]))]
        _write_image(os.path.join(root, name, f"{i:06d}.{image_format}"), sample["image"], image_format,
                     jpeg_quality)
        counts[name] += 1
    for name in class_names:
        os.makedirs(os.path.join(root, name), exist_ok=True)
    return WriteReport("image_folder", root, [], counts)


# --------------------------------------------------------------------------------------------------
# Synthetic dumps
# --------------------------------------------------------------------------------------------------

LAYOUT_SPLITS = {
    "rafdb": ("train", "test"),
    "affectnet": ("train", "validation"),
    "ferplus": ("train", "validation", "test"),
    "fer2013": ("train", "validation", "test"),
    "celeba": ("train", "validation", "test"),
    "300w": ("train", "test"),
    "wflw": ("train", "test"),
    "image_folder": ("train", "validation"),
}


def write_synthetic(layout: str, root, num_per_split=20, seed: int = 0, image_size: int = 112) -> List[WriteReport]:
    """Render synthetic faces (``fra_keras.data.synthetic.render_sample``) and write them in ``layout``
    under ``root``.  ``num_per_split``: an int for every split of the layout (:data:`LAYOUT_SPLITS`) or a
    dict split -> count.  Where the files go (read them back with the matching reader):

    * rafdb: ``root`` (train, test);  celeba: ``root`` (train, validation, test);
    * ferplus: ``root`` (train, validation, test);  fer2013: ``root/fer2013.csv``;
    * affectnet: ``root`` with ``training.csv`` (train) and ``validation.csv`` (validation);
    * 300w: train split over ``root/{afw,helen/trainset,lfpw/trainset}`` (``subset="train"``), test in
      ``root/ibug`` (``subset="challenging"``);
    * wflw: ``root`` with the train / test list files;
    * image_folder: ``root/train`` and ``root/val`` with RAF-DB class folders.
    """
    from fra_keras.data.synthetic import render_sample

    if layout not in LAYOUT_SPLITS:
        raise ValueError(f"layout={layout!r}; expected one of {tuple(LAYOUT_SPLITS)}")
    splits = LAYOUT_SPLITS[layout]
    if isinstance(num_per_split, Mapping):
        counts = {s: int(num_per_split[s]) for s in splits if s in num_per_split}
    else:
        counts = {s: int(num_per_split) for s in splits}

    def gen(split):
        return (render_sample(i, seed=seed, image_size=image_size, split=split) for i in range(counts[split]))

    root = os.fspath(root)
    by_split = {s: gen(s) for s in counts}
    if layout == "rafdb":
        return [write_rafdb(by_split, root)]
    if layout == "ferplus":
        return [write_ferplus(by_split, root, seed=seed)]
    if layout == "fer2013":
        return [write_fer2013(by_split, os.path.join(root, "fer2013.csv"))]
    if layout == "celeba":
        return [write_celeba(by_split, root)]
    if layout == "affectnet":
        names = {"train": "training.csv", "validation": "validation.csv"}
        return [write_affectnet(by_split[s], root, names[s]) for s in counts]
    if layout == "300w":
        reports = []
        for s in counts:
            folders = W300_SUBSETS["train"] if s == "train" else W300_SUBSETS["challenging"]
            edges = np.linspace(0, counts[s], len(folders) + 1).round().astype(int)
            for folder, lo, hi in zip(folders, edges[:-1], edges[1:]):
                samples = (render_sample(i, seed=seed, image_size=image_size, split=s) for i in range(lo, hi))
                reports.append(write_300w(samples, root, subset=folder, start=int(lo) + 1))
        return reports
    if layout == "wflw":
        return [write_wflw(by_split[s], root, split=s) for s in counts]
    folders = {"train": "train", "validation": "val"}
    return [write_image_folder(by_split[s], os.path.join(root, folders[s])) for s in counts]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fra_keras.data.writers",
        description="Write synthetic faces in a real data set's on-disk layout (to exercise the readers "
                    "without real data). Example: python -m fra_keras.data.writers rafdb /tmp/rafdb --num 50")
    parser.add_argument("layout", choices=sorted(LAYOUT_SPLITS))
    parser.add_argument("out_dir")
    parser.add_argument("--num", type=int, default=20, help="samples per split (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=112)
    args = parser.parse_args(argv)
    for report in write_synthetic(args.layout, args.out_dir, args.num, args.seed, args.image_size):
        print(f"{report.layout}: wrote {report.counts} under {report.root}")
        for f in report.label_files:
            print(f"  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
