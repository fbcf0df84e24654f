"""What every format writer of `fra_keras.data.layouts` shares: the `WriteReport`, atomic file
writes, image encoding, the 48x48 grey conversion of FER2013 / FERPlus and the checks on sample dicts.

A sample dict (docs/datasets.md, "Writing synthetic data in the real layouts") has ``image`` uint8
(H, W, 3), ``expression`` (RAF-DB order), ``attributes`` int8 (40,), ``landmarks68`` (68, 2) pixels,
``visible68``, ``landmarks5``, ``identity`` and ``pose``.  Label files and images are written to a
temporary name and renamed into place.  Nothing here needs TensorFlow.
"""

from __future__ import annotations

import dataclasses
import io
import os
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from fra_keras.data.labels import RAFDB_CLASSES


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


def atomic_write(path: str, data) -> None:
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


def as_image(image) -> np.ndarray:
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
    pil = Image.fromarray(as_image(image))
    buf = io.BytesIO()
    if fmt in ("jpg", "jpeg"):
        pil.save(buf, format="JPEG", quality=int(quality))
    elif fmt == "png":
        pil.save(buf, format="PNG")
    else:
        raise ValueError(f"image format {fmt!r}; expected 'jpg' or 'png'")
    return buf.getvalue()


def write_image(path: str, image, fmt: str, quality: int) -> None:
    atomic_write(path, encode_image(image, fmt, quality))


def fer_grey48(image) -> np.ndarray:
    """The 48x48 grey version of an image that the FER2013 / FERPlus writers store (PIL "L" luma, then a
    bilinear resize when the size differs)."""
    from PIL import Image

    img = as_image(image)
    pil = Image.fromarray(img)
    if pil.mode != "L":
        pil = pil.convert("L")
    if pil.size != (48, 48):
        pil = pil.resize((48, 48), Image.BILINEAR)
    return np.asarray(pil, dtype=np.uint8)


def sample_expression(sample) -> int:
    if "expression" not in sample:
        raise ValueError("sample has no 'expression' (RAF-DB order 0..6)")
    e = int(np.asarray(sample["expression"]))
    if not 0 <= e < len(RAFDB_CLASSES):
        raise ValueError(f"sample expression {e} is not a RAF-DB class index 0..6")
    return e


def sample_landmarks68(sample) -> np.ndarray:
    lm = sample.get("landmarks68", sample.get("landmarks"))
    if lm is None:
        raise ValueError("sample has no 'landmarks68'")
    lm = np.asarray(lm, np.float32)
    if lm.shape != (68, 2):
        raise ValueError(f"sample landmarks68 must be (68, 2), got {lm.shape}")
    return lm


def sample_visible68(sample) -> np.ndarray:
    v = sample.get("visible68", sample.get("visible"))
    return np.ones(68, bool) if v is None else np.asarray(v, bool).reshape(68)



def check_splits(samples_by_split: Mapping, allowed: Sequence[str], layout: str):
    if not isinstance(samples_by_split, Mapping):
        raise TypeError(f"{layout}: expected a dict split -> samples, got {type(samples_by_split).__name__}")
    for split in samples_by_split:
        if split not in allowed:
            raise ValueError(f"{layout}: split {split!r} not in {tuple(allowed)}")

