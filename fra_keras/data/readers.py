"""Readers for the real on-disk layouts of the FRA evaluation data sets.

Every reader builds a Python-level index (:class:`Records`) eagerly: it parses the label files, checks
that every image file exists, applies the data set's label rules and counts what it drops.  The images
themselves are decoded lazily inside ``tf.data`` (:meth:`Records.to_dataset`).  All readers emit ONE
schema, a ``tf.data.Dataset`` of dicts:

=============  ===========  =============================================================================
key            dtype        meaning
=============  ===========  =============================================================================
``image``      uint8        (H, W, 3) RGB; (S, S, 3) when ``image_size=S`` is given
``expression`` int64        class index; the order is the data set's own (``Records.class_names``)
                            unless ``label_order="rafdb"`` is asked for
``attributes`` int8         (40,) CelebA attributes, 0 / 1, -1 = unknown (masked)
``landmarks``  float32      (N, 2) pixel (x, y); rescaled with the image when ``image_size`` is given
``visible``    bool         (N,) per-landmark visibility (all True where the layout has none)
``identity``   int64        0-based identity (CelebA)
=============  ===========  =============================================================================

Only the keys a layout has are present.  Extra per-record data (AffectNet valence / arousal and face
box, FERPlus vote counts, WFLW attribute flags ...) stays in ``Records.labels``.

Landmark convention: pixel-index coordinates, (0, 0) is the centre of the top-left pixel.  Resizing an
image from (H, W) to (H', W') maps ``x -> (x + 0.5) * W' / W - 0.5`` (and likewise y), which is exact
for ``tf.image.resize`` (half-pixel centres).  Values are otherwise returned as stored in the files.

Errors: a missing root, label file or image file, a malformed label line or a corrupt image raise
:class:`DataFormatError` (a ``ValueError``; :class:`MissingFileError` is also a ``FileNotFoundError``)
naming the file and the line.  With ``on_error="skip"`` bad records (a malformed line, a missing or
corrupt image) are skipped instead, counted in ``Records.num_skipped`` / ``Records.skipped``, and a
:class:`SkippedRecordsWarning` is issued once.  Missing roots / label files are always errors.  Corrupt
images are only found when decoded: inside ``tf.data`` the error surfaces as a
``tf.errors.InvalidArgumentError`` whose message carries the ``DataFormatError`` text;
:meth:`Records.load` and :meth:`Records.validate` raise ``DataFormatError`` directly.

Nothing here downloads anything.  See ``docs/datasets.md`` for the folder trees.
"""

from __future__ import annotations

import csv as _csv
import dataclasses
import functools
import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

# --------------------------------------------------------------------------------------------------
# Label orders and constants
# --------------------------------------------------------------------------------------------------

#: RAF-DB basic order (labels 1..7 in the file -> 0..6).  The synthetic faces use this order too.
RAFDB_CLASSES = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
#: AffectNet's expression codes 0..7 (8 none, 9 uncertain, 10 non-face are dropped).
AFFECTNET_CLASSES = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt")
AFFECTNET_DROPPED_CODES = {8: "none", 9: "uncertain", 10: "non_face"}
#: FERPlus emotion classes (the first 8 vote columns of label.csv).
FERPLUS_CLASSES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
#: All 10 FERPlus vote columns.
FERPLUS_VOTE_COLUMNS = FERPLUS_CLASSES + ("unknown", "not_face")
FERPLUS_FOLDERS = {"train": "FER2013Train", "validation": "FER2013Valid", "test": "FER2013Test"}
#: FER2013 ``emotion`` column 0..6.
FER2013_CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
FER2013_USAGE = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}
#: Class order used with ``label_order="rafdb"``: RAF-DB's 7 classes, then contempt as 7.
RAFDB_ORDER_WITH_CONTEMPT = RAFDB_CLASSES + ("contempt",)

#: The 40 CelebA attributes in ``list_attr_celeba.txt`` column order.
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones",
    "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin",
    "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair",
    "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace",
    "Wearing_Necktie", "Young",
)
CELEBA_PARTITIONS = {"train": 0, "validation": 1, "test": 2}
CELEBA_LANDMARK_NAMES = ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")

#: WFLW attribute flags, in list-file order.
WFLW_ATTRIBUTES = ("pose", "expression", "illumination", "make_up", "occlusion", "blur")

#: Standard WFLW-98 -> iBUG/300W-68 mapping: ``lm68 = lm98[WFLW98_TO_68]``.  Contour: every second of
#: WFLW's 33 points; brows: the 5 upper-edge points of each brow; nose: all 9; eyes: the 2 corners and
#: the 2 lid points nearest the 300W positions (WFLW 60,61,63,64,65,67 / 68,69,71,72,73,75); mouth: all
#: 20.  WFLW's extra points (odd contour points, lower brow edges, lid midpoints, pupils 96/97) are
#: dropped.  This lets the 68-point NME code (inter-ocular 36/45) run on WFLW.
WFLW98_TO_68 = np.array(
    list(range(0, 33, 2))                     # 0-16 jaw
    + [33, 34, 35, 36, 37]                    # 17-21 right brow (image left)
    + [42, 43, 44, 45, 46]                    # 22-26 left brow
    + list(range(51, 60))                     # 27-35 nose
    + [60, 61, 63, 64, 65, 67]                # 36-41 right eye
    + [68, 69, 71, 72, 73, 75]                # 42-47 left eye
    + list(range(76, 96)),                    # 48-67 mouth
    dtype=np.int64,
)

#: Common 300W evaluation subsets, as folders under the 300W root (ibug distribution layout).
W300_SUBSETS = {
    "train": ("afw", "helen/trainset", "lfpw/trainset"),
    "common": ("helen/testset", "lfpw/testset"),
    "challenging": ("ibug",),
    "full": ("helen/testset", "lfpw/testset", "ibug"),
    "private": ("01_Indoor", "02_Outdoor"),
}

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".gif", ".tif", ".tiff")

#: Keys emitted in the tf.data elements, with their dtypes.
SCHEMA = {
    "expression": np.int64,
    "attributes": np.int8,
    "landmarks": np.float32,
    "visible": np.bool_,
    "identity": np.int64,
    "mask": np.uint8,
}

ON_ERROR = ("raise", "skip")
LABEL_ORDERS = ("native", "rafdb")


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


class DataFormatError(ValueError):
    """A data-set file is missing, malformed or corrupt.  ``file`` / ``line`` say where (``line`` is
    1-based, None when the problem is not tied to a line); ``image`` is the image path involved, if any."""

    def __init__(self, reason: str, file: Optional[str] = None, line: Optional[int] = None,
                 image: Optional[str] = None):
        self.reason = reason
        self.file = None if file is None else str(file)
        self.line = line
        self.image = None if image is None else str(image)
        where = ""
        if self.file is not None:
            where = self.file + (f", line {line}" if line is not None else "") + ": "
        super().__init__(where + reason)


class MissingFileError(DataFormatError, FileNotFoundError):
    """A root folder, label file or image file does not exist."""


class SkippedRecordsWarning(UserWarning):
    """Issued once per index (and once more if decoding skips images) when ``on_error="skip"`` dropped
    bad records."""


@dataclasses.dataclass
class SkippedRecord:
    file: str
    line: Optional[int]
    reason: str


def _check_on_error(on_error):
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r}; expected one of {ON_ERROR}")


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}={value!r}; expected one of {tuple(allowed)}")


class _Issues:
    """Raise or record per-record problems while an index is built."""

    def __init__(self, on_error: str):
        _check_on_error(on_error)
        self.on_error = on_error
        self.skipped: List[SkippedRecord] = []

    def bad(self, reason, file, line=None, image=None, missing=False):
        if self.on_error == "raise":
            cls = MissingFileError if missing else DataFormatError
            raise cls(reason, file=file, line=line, image=image)
        self.skipped.append(SkippedRecord(str(file), line, reason))


def _require_dir(path, what):
    if not os.path.isdir(path):
        raise MissingFileError(f"{what} not found (no such directory)", file=path)


def _require_file(path, what):
    if not os.path.isfile(path):
        raise MissingFileError(f"{what} not found (no such file)", file=path)


class _DirListing:
    """File existence checks through one ``os.listdir`` per directory (fast for 200k images)."""

    def __init__(self):
        self._cache: Dict[str, frozenset] = {}

    def exists(self, path: str) -> bool:
        folder, name = os.path.split(path)
        names = self._cache.get(folder)
        if names is None:
            try:
                names = frozenset(os.listdir(folder or "."))
            except OSError:
                names = frozenset()
            self._cache[folder] = names
        return name in names


def _read_lines(path) -> List[str]:
    with open(path, "r", encoding="utf-8-sig", newline=None) as f:
        return f.read().splitlines()


def _parse_int(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(value) or value != int(value):
        return None
    return int(value)


def _parse_float(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value


def _label_mapping(native_names: Sequence[str], label_order: str) -> Tuple[np.ndarray, Tuple[str, ...]]:
    """Index map native -> output order, and the output class names."""
    _check_choice("label_order", label_order, LABEL_ORDERS)
    if label_order == "native":
        return np.arange(len(native_names), dtype=np.int64), tuple(native_names)
    order = RAFDB_ORDER_WITH_CONTEMPT
    mapping = np.array([order.index(n) for n in native_names], dtype=np.int64)
    used = sorted(set(mapping.tolist()))
    if used != list(range(len(used))):  # e.g. 8 classes -> 0..7 (contempt last)
        raise AssertionError("label mapping is not dense")
    return mapping, order[: len(used)]


# --------------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------------


def _as_hw(image_size) -> Optional[Tuple[int, int]]:
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)):
        size = (int(image_size), int(image_size))
    else:
        size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"image_size={image_size!r}; expected a positive int or (height, width)")
    return size


def rescale_landmarks(landmarks, from_hw, to_hw):
    """Map pixel-index landmarks (x, y) from an image of size ``from_hw`` to one of ``to_hw``."""
    lm = np.asarray(landmarks, dtype=np.float32)
    sy = to_hw[0] / float(from_hw[0])
    sx = to_hw[1] / float(from_hw[1])
    scale = np.array([sx, sy], dtype=np.float32)
    return ((lm + 0.5) * scale - 0.5).astype(np.float32)


def wflw98_to_68(landmarks98):
    """(..., 98, 2) WFLW landmarks -> (..., 68, 2) in the 300W order (see ``WFLW98_TO_68``)."""
    lm = np.asarray(landmarks98)
    if lm.shape[-2] != 98:
        raise ValueError(f"expected 98 landmarks on axis -2, got shape {lm.shape}")
    return np.take(lm, WFLW98_TO_68, axis=-2)


# --------------------------------------------------------------------------------------------------
# The index
# --------------------------------------------------------------------------------------------------


def _decode_file(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        rgb = im.convert("RGB")
    arr = np.asarray(rgb, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"decoded to an empty image of shape {arr.shape}")
    return arr


def _crop(image: np.ndarray, box) -> np.ndarray:
    """Crop (x, y, w, h) with zero padding outside the image (so landmark offsets are exactly -x, -y)."""
    x, y, w, h = (int(round(v)) for v in box)
    w, h = max(w, 1), max(h, 1)
    out = np.zeros((h, w, 3), dtype=np.uint8)
    H, W = image.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x1 > x0 and y1 > y0:
        out[y0 - y:y1 - y, x0 - x:x1 - x] = image[y0:y1, x0:x1]
    return out


@dataclasses.dataclass(eq=False)
class Records:
    """The eager index of one split of one layout.

    ``paths[i]`` is the image file of record ``i`` (for FER2013, the csv; its pixels are in ``images``),
    ``lines[i]`` the 1-based line of the label file that described it, ``labels[key][i]`` its labels
    (schema keys plus layout extras).  ``skipped`` lists records dropped because they were bad (with
    ``on_error="skip"``), ``dropped`` counts records removed by the data set's own rules (FERPlus votes,
    AffectNet codes 7-10, ...), by reason.
    """

    layout: str
    split: Optional[str]
    source: str
    paths: List[str]
    lines: List[Optional[int]]
    labels: Dict[str, np.ndarray]
    class_names: Optional[Tuple[str, ...]] = None
    label_order: Optional[str] = None
    images: Optional[np.ndarray] = None
    crop_boxes: Optional[np.ndarray] = None
    image_size: Optional[Tuple[int, int]] = None
    on_error: str = "raise"
    skipped: List[SkippedRecord] = dataclasses.field(default_factory=list)
    dropped: Dict[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        _check_on_error(self.on_error)
        self.image_size = _as_hw(self.image_size)
        n = len(self.paths)
        if len(self.lines) != n:
            raise AssertionError("paths and lines differ in length")
        for key, value in self.labels.items():
            if len(value) != n:
                raise AssertionError(f"labels[{key!r}] has {len(value)} rows, expected {n}")
        self._decode_skipped: Dict[int, SkippedRecord] = {}
        self._warned_decode = False

    # ---- counting ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_skipped(self) -> int:
        """Bad records skipped so far: while indexing, plus corrupt images found while decoding."""
        return len(self.skipped) + len(self._decode_skipped)

    @property
    def num_dropped(self) -> int:
        return int(sum(self.dropped.values()))

    @property
    def all_skipped(self) -> List[SkippedRecord]:
        return list(self.skipped) + [self._decode_skipped[k] for k in sorted(self._decode_skipped)]

    @property
    def num_classes(self) -> Optional[int]:
        return None if self.class_names is None else len(self.class_names)

    def class_counts(self, key: str = "expression") -> np.ndarray:
        """Number of records per class index (length ``num_classes``)."""
        values = np.asarray(self.labels[key], dtype=np.int64)
        return np.bincount(values, minlength=self.num_classes or 0)

    def keys(self) -> Tuple[str, ...]:
        """The keys of the dataset elements."""
        return ("image",) + tuple(k for k in SCHEMA if k in self.labels)

    def __repr__(self):
        return (f"Records(layout={self.layout!r}, split={self.split!r}, n={len(self)}, "
                f"keys={self.keys()}, skipped={self.num_skipped}, dropped={self.dropped})")

    # ---- decoding ------------------------------------------------------------------------------
    def _where(self, i: int) -> str:
        line = self.lines[i]
        return f"{self.source}, line {line}" if line is not None else self.source

    def _raw_image(self, i: int) -> np.ndarray:
        """Decoded RGB image of record i (cropped if the layout crops); raises DataFormatError."""
        if self.images is not None:
            img = self.images[i]
            if img.ndim == 2:
                img = np.repeat(img[:, :, None], 3, axis=2)
            return img
        path = self.paths[i]
        try:
            img = _decode_file(path)
        except FileNotFoundError as exc:
            raise MissingFileError(f"image file disappeared: {path} (listed in {self._where(i)})",
                                   file=path, line=None, image=path) from exc
        except Exception as exc:  # PIL raises many types for corrupt data
            raise DataFormatError(
                f"corrupt or unreadable image {path} (listed in {self._where(i)}): "
                f"{type(exc).__name__}: {exc}", file=self.source, line=self.lines[i], image=path) from exc
        if self.crop_boxes is not None:
            img = _crop(img, self.crop_boxes[i])
        return img

    def _decode_for_tf(self, index):
        i = int(index)
        try:
            return self._raw_image(i), True
        except DataFormatError as exc:
            if self.on_error == "raise":
                raise
            self._note_decode_skip(i, exc)
            return np.zeros((1, 1, 3), np.uint8), False

    def _note_decode_skip(self, i, exc):
        if i not in self._decode_skipped:
            self._decode_skipped[i] = SkippedRecord(self.source, self.lines[i], str(exc))
        if not self._warned_decode:
            self._warned_decode = True
            warnings.warn(f"{self.layout}: skipping unreadable images (first: {exc}); the count is in "
                          f"Records.num_skipped", SkippedRecordsWarning, stacklevel=2)

    def load(self, i: int, image_size=None) -> Dict[str, np.ndarray]:
        """Record ``i`` as a dict of numpy arrays in the dataset schema (for inspection / tests).

        Resizing here uses PIL bilinear, so pixels can differ slightly from :meth:`to_dataset`."""
        from PIL import Image

        img = self._raw_image(i)
        out = {k: np.asarray(self.labels[k][i], dtype=SCHEMA[k]) for k in SCHEMA if k in self.labels}
        size = _as_hw(image_size) or self.image_size
        if size is not None and img.shape[:2] != size:
            if "landmarks" in out:
                out["landmarks"] = rescale_landmarks(out["landmarks"], img.shape[:2], size)
            img = np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.BILINEAR))
        out["image"] = img
        return out

    def validate(self) -> int:
        """Decode every image once (no resizing).  Raises DataFormatError on the first bad one, or with
        ``on_error="skip"`` records it; returns the number of readable images."""
        good = 0
        for i in range(len(self)):
            try:
                self._raw_image(i)
                good += 1
            except DataFormatError as exc:
                if self.on_error == "raise":
                    raise
                self._note_decode_skip(i, exc)
        return good

    # ---- tf.data -------------------------------------------------------------------------------
    @functools.cached_property
    def dataset(self):
        """``to_dataset()`` with the reader's ``image_size`` (built once)."""
        return self.to_dataset()

    def to_dataset(self, image_size=None, num_parallel_calls=None, deterministic: bool = True):
        """A ``tf.data.Dataset`` of schema dicts, in index order (shuffle / batch it yourself).

        ``image_size``: int or (height, width); default: the reader's.  Images are resized with
        ``tf.image.resize`` (bilinear, antialiased) and landmarks rescaled.  Without resizing, images
        keep their own sizes (batch them after resizing or with ``ragged_batch``)."""
        import tensorflow as tf

        size = _as_hw(image_size) or self.image_size
        if num_parallel_calls is None:
            num_parallel_calls = tf.data.AUTOTUNE
        columns = {"_index": np.arange(len(self), dtype=np.int64)}
        for key, dtype in SCHEMA.items():
            if key in self.labels:
                columns[key] = np.asarray(self.labels[key], dtype=dtype)
        if self.images is not None:
            columns["_pixels"] = self.images
        ds = tf.data.Dataset.from_tensor_slices(columns)

        def decode(element):
            element = dict(element)
            index = element.pop("_index")
            if "_pixels" in element:
                image = element.pop("_pixels")
                if image.shape.rank == 2:
                    image = tf.repeat(image[:, :, None], 3, axis=2)
                ok = tf.constant(True)
            else:
                image, ok = tf.numpy_function(self._decode_for_tf, [index], [tf.uint8, tf.bool],
                                              stateful=False)
                image = tf.ensure_shape(image, [None, None, 3])
            element["_ok"] = tf.ensure_shape(ok, [])
            element["image"] = image
            return element

        def resize(element):
            image = element["image"]
            if size is not None:
                hw = tf.cast(tf.shape(image)[:2], tf.float32)
                out = tf.image.resize(image, size, method="bilinear", antialias=True)
                image = tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)
                image = tf.ensure_shape(image, [size[0], size[1], 3])
                if "landmarks" in element:
                    scale = tf.stack([size[1] / hw[1], size[0] / hw[0]])
                    element["landmarks"] = (element["landmarks"] + 0.5) * scale - 0.5
            element["image"] = image
            return element

        ds = ds.map(decode, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
        if self.on_error == "skip" and self.images is None:
            ds = ds.filter(lambda e: e["_ok"])
        ds = ds.map(lambda e: {k: v for k, v in e.items() if k != "_ok"})
        ds = ds.map(resize, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
        return ds


def _finish(records: Records, issues: _Issues) -> Records:
    records.skipped.extend(issues.skipped)
    if issues.skipped:
        first = issues.skipped[0]
        where = first.file + (f", line {first.line}" if first.line is not None else "")
        warnings.warn(f"{records.layout} ({records.split}): skipped {len(issues.skipped)} bad record(s); "
                      f"first: {where}: {first.reason}", SkippedRecordsWarning, stacklevel=3)
    return records


def _stack(rows, shape, dtype):
    if rows:
        return np.asarray(rows, dtype=dtype).reshape((len(rows),) + tuple(shape))
    return np.zeros((0,) + tuple(shape), dtype=dtype)


# --------------------------------------------------------------------------------------------------
# RAF-DB
# --------------------------------------------------------------------------------------------------


def read_rafdb(root, split: str = "train", image_size=None, on_error: str = "raise",
               label_file: Optional[str] = None) -> Records:
    """RAF-DB basic: ``root/EmoLabel/list_patition_label.txt`` (``train_00001.jpg 5``) and
    ``root/Image/aligned/train_00001_aligned.jpg``.  Labels 1..7 -> 0..6 in RAF-DB order
    (:data:`RAFDB_CLASSES`).  ``split``: "train", "test" or "all"."""
    _check_choice("split", split, ("train", "test", "all"))
    root = os.fspath(root)
    _require_dir(root, "RAF-DB root")
    label_file = label_file or os.path.join(root, "EmoLabel", "list_patition_label.txt")
    _require_file(label_file, "RAF-DB label file")
    image_dir = os.path.join(root, "Image", "aligned")
    _require_dir(image_dir, "RAF-DB aligned image folder")
    issues = _Issues(on_error)
    listing = _DirListing()
    paths, lines, labels = [], [], []
    for n, raw in enumerate(_read_lines(label_file), start=1):
        text = raw.strip()
        if not text:
            continue
        tokens = text.split()
        if len(tokens) != 2:
            issues.bad(f"malformed line {raw!r}: expected '<image name> <label 1..7>'", label_file, n)
            continue
        name, label_text = tokens
        label = _parse_int(label_text)
        prefix = name.split("_", 1)[0]
        if label is None or not 1 <= label <= 7 or prefix not in ("train", "test"):
            issues.bad(f"malformed line {raw!r}: expected 'train_*|test_* <label 1..7>'", label_file, n)
            continue
        if split != "all" and prefix != split:
            continue
        stem, ext = os.path.splitext(name)
        path = os.path.join(image_dir, f"{stem}_aligned{ext}")
        if not listing.exists(path):
            alternative = os.path.join(image_dir, name)
            if not listing.exists(alternative):
                issues.bad(f"image file not found: {path}", label_file, n, image=path, missing=True)
                continue
            path = alternative
        paths.append(path)
        lines.append(n)
        labels.append(label - 1)
    records = Records(layout="rafdb", split=split, source=label_file, paths=paths, lines=lines,
                      labels={"expression": _stack(labels, (), np.int64)}, class_names=RAFDB_CLASSES,
                      label_order="rafdb", image_size=image_size, on_error=on_error)
    return _finish(records, issues)


# --------------------------------------------------------------------------------------------------
# AffectNet
# --------------------------------------------------------------------------------------------------

AFFECTNET_COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
                     "facial_landmarks", "expression", "valence", "arousal")


def _resolve_affectnet_csv(root, csv_name):
    candidates = [csv_name] if os.path.isabs(csv_name) else [
        csv_name, os.path.join(root, csv_name), os.path.join(root, "Manually_Annotated_file_lists", csv_name)]
    for c in candidates:
        if os.path.isfile(c):
            return c
    raise MissingFileError(f"AffectNet csv not found (looked at {candidates})", file=csv_name)


def read_affectnet(root, csv: str = "training.csv", num_classes: int = 7, label_order: str = "native",
                   crop_face: bool = False, image_root: Optional[str] = None, image_size=None,
                   on_error: str = "raise") -> Records:
    """AffectNet (manually annotated): a csv with columns ``subDirectory_filePath, face_x, face_y,
    face_width, face_height, facial_landmarks, expression, valence, arousal``.

    ``csv`` is a path, or a name looked up in ``root`` and ``root/Manually_Annotated_file_lists``.
    Images: ``image_root`` or ``root/Manually_Annotated_Images`` (if it exists) or ``root``, joined
    with ``subDirectory_filePath``.  Expression codes 8-10 (none / uncertain / non-face) are dropped;
    with ``num_classes=7`` contempt (7) is dropped too.  Output order with ``label_order="native"``:
    AffectNet's own 0 neutral, 1 happiness, 2 sadness, 3 surprise, 4 fear, 5 disgust, 6 anger
    (7 contempt) - the order of the FRA ``affectnet7`` folders.  ``label_order="rafdb"`` maps to the
    RAF-DB order (contempt -> 7).  ``crop_face=True`` crops the face box (zero padding outside the
    image) and shifts the 68 landmarks.  Extras in ``labels``: ``valence``, ``arousal``, ``face_box``
    (x, y, w, h)."""
    _check_choice("num_classes", num_classes, (7, 8))
    root = os.fspath(root)
    _require_dir(root, "AffectNet root")
    csv_path = _resolve_affectnet_csv(root, os.fspath(csv))
    if image_root is None:
        managed = os.path.join(root, "Manually_Annotated_Images")
        image_root = managed if os.path.isdir(managed) else root
    _require_dir(image_root, "AffectNet image folder")
    mapping, class_names = _label_mapping(AFFECTNET_CLASSES[:num_classes], label_order)
    issues = _Issues(on_error)
    listing = _DirListing()
    dropped: Dict[str, int] = {}
    paths, lines, expr, lms, vis, boxes, val, aro = [], [], [], [], [], [], [], []
    with open(csv_path, "r", encoding="utf-8-sig", newline="") as f:
        reader = _csv.reader(f)
        first = next(reader, None)
        if first is None:
            raise DataFormatError(f"empty file; expected a header with columns {AFFECTNET_COLUMNS}",
                                  file=csv_path, line=1)
        pending = []
        if {"subDirectory_filePath", "expression"} <= {h.strip() for h in first}:
            header = [h.strip() for h in first]
        elif len(first) == len(AFFECTNET_COLUMNS) and _parse_int(first[6]) is not None:
            # The official validation.csv has no header row: the columns are in the standard order.
            header = list(AFFECTNET_COLUMNS)
            pending = [(reader.line_num, first)]
        else:
            raise DataFormatError(f"expected a header with columns {AFFECTNET_COLUMNS}, got {first}",
                                  file=csv_path, line=1)
        col = {h: j for j, h in enumerate(header)}

        def numbered_rows():
            yield from pending
            for r in reader:
                yield reader.line_num, r

        for n, row in numbered_rows():
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                issues.bad(f"malformed row: {len(row)} columns, expected {len(header)}", csv_path, n)
                continue

            def get(name, _row=row):
                return _row[col[name]].strip() if name in col else ""

            code = _parse_int(get("expression"))
            if code is None or not 0 <= code <= 10:
                issues.bad(f"malformed row: expression {get('expression')!r} is not an integer 0..10",
                           csv_path, n)
                continue
            if code in AFFECTNET_DROPPED_CODES or code >= num_classes:
                reason = AFFECTNET_DROPPED_CODES.get(code, "contempt")
                dropped[reason] = dropped.get(reason, 0) + 1
                continue
            box = [_parse_float(get(k)) if k in col else 0.0
                   for k in ("face_x", "face_y", "face_width", "face_height")]
            if any(b is None for b in box):
                issues.bad("malformed row: face_x/face_y/face_width/face_height must be numbers", csv_path, n)
                continue
            lm_text = get("facial_landmarks")
            if lm_text:
                values = [_parse_float(t) for t in lm_text.split(";") if t.strip()]
                if len(values) != 136 or any(v is None for v in values):
                    issues.bad(f"malformed row: facial_landmarks must hold 136 numbers separated by ';' "
                               f"(got {len(values)})", csv_path, n)
                    continue
                lm = np.asarray(values, np.float32).reshape(68, 2)
                visible = np.ones(68, bool)
            else:
                lm = np.full((68, 2), np.nan, np.float32)
                visible = np.zeros(68, bool)
            rel = get("subDirectory_filePath")
            path = os.path.join(image_root, *rel.replace("\\", "/").split("/"))
            if not rel or not listing.exists(path):
                issues.bad(f"image file not found: {path}", csv_path, n, image=path, missing=True)
                continue
            if crop_face:
                lm = lm - np.asarray([round(box[0]), round(box[1])], np.float32)
            v = _parse_float(get("valence"))
            a = _parse_float(get("arousal"))
            paths.append(path)
            lines.append(n)
            expr.append(mapping[code])
            lms.append(lm)
            vis.append(visible)
            boxes.append(box)
            val.append(np.nan if v is None else v)
            aro.append(np.nan if a is None else a)
    labels = {
        "expression": _stack(expr, (), np.int64),
        "landmarks": _stack(lms, (68, 2), np.float32),
        "visible": _stack(vis, (68,), np.bool_),
        "valence": _stack(val, (), np.float32),
        "arousal": _stack(aro, (), np.float32),
        "face_box": _stack(boxes, (4,), np.float32),
    }
    records = Records(layout=f"affectnet{num_classes}", split=os.path.splitext(os.path.basename(csv_path))[0],
                      source=csv_path, paths=paths, lines=lines, labels=labels, class_names=class_names,
                      label_order=label_order, crop_boxes=labels["face_box"] if crop_face else None,
                      image_size=image_size, on_error=on_error, dropped=dropped)
    return _finish(records, issues)


# --------------------------------------------------------------------------------------------------
# FERPlus
# --------------------------------------------------------------------------------------------------

FERPLUS_VOTE_RULES = ("majority", "plurality")


def ferplus_label(votes, rule: str = "majority") -> Tuple[Optional[int], str]:
    """FERPlus majority-vote label from the 10 vote counts (FERPLUS_VOTE_COLUMNS order).

    1. Single votes are removed (counts <= 1 are set to 0: outlier removal).
    2. Ties between the top classes -> dropped (``"tie"``).
    3. ``rule="majority"`` (FERPlus reference "majority" mode): the top class must hold MORE than half of
       the remaining votes, else dropped (``"no_majority"``).  ``rule="plurality"``: the top class wins.
    4. A winning ``unknown`` or ``not_face`` -> dropped (``"unknown"`` / ``"not_face"``); no votes left
       -> ``"no_votes"``.

    Returns ``(class index 0..7 in FERPLUS_CLASSES order, "ok")`` or ``(None, reason)``.
    """
    _check_choice("rule", rule, FERPLUS_VOTE_RULES)
    v = np.asarray(votes, dtype=np.float64).copy()
    if v.shape != (10,):
        raise ValueError(f"expected 10 vote counts, got shape {v.shape}")
    v[v <= 1] = 0.0
    total = v.sum()
    if total <= 0:
        return None, "no_votes"
    top = v.max()
    winners = np.flatnonzero(v == top)
    if len(winners) > 1:
        return None, "tie"
    if rule == "majority" and not top > 0.5 * total:
        return None, "no_majority"
    idx = int(winners[0])
    if idx == 8:
        return None, "unknown"
    if idx == 9:
        return None, "not_face"
    return idx, "ok"


def _ferplus_folder(split):
    if split in FERPLUS_FOLDERS:
        return FERPLUS_FOLDERS[split]
    aliases = {"val": "validation", "valid": "validation", "public_test": "validation",
               "private_test": "test"}
    if split in aliases:
        return FERPLUS_FOLDERS[aliases[split]]
    if split in FERPLUS_FOLDERS.values():
        return split
    raise ValueError(f"split={split!r}; expected one of {tuple(FERPLUS_FOLDERS)} "
                     f"or a folder name {tuple(FERPLUS_FOLDERS.values())}")


def read_ferplus(root, split: str = "train", vote_rule: str = "majority", label_order: str = "native",
                 image_size=None, on_error: str = "raise") -> Records:
    """FERPlus: ``root/Labels/FER2013Train/label.csv`` (rows ``fer0000000.png,"(0, 0, 48, 48)",<10
    vote counts>``) with images ``root/Images/FER2013Train/fer0000000.png``; the FERPlus repo layout
    ``root/FER2013Train/{label.csv,*.png}`` also works.  Splits: train (FER2013Train), validation
    (FER2013Valid = PublicTest), test (FER2013Test = PrivateTest).  Labels by :func:`ferplus_label`
    (8 classes, :data:`FERPLUS_CLASSES` order, or RAF-DB order + contempt 7 with
    ``label_order="rafdb"``); dropped rows are counted by reason in ``Records.dropped``.  Extra:
    ``labels["votes"]`` (N, 10) raw counts."""
    _check_choice("vote_rule", vote_rule, FERPLUS_VOTE_RULES)
    root = os.fspath(root)
    _require_dir(root, "FERPlus root")
    folder = _ferplus_folder(split)
    label_file = os.path.join(root, "Labels", folder, "label.csv")
    image_dir = os.path.join(root, "Images", folder)
    if not os.path.isfile(label_file) and os.path.isfile(os.path.join(root, folder, "label.csv")):
        label_file = os.path.join(root, folder, "label.csv")
        image_dir = os.path.join(root, folder)
    _require_file(label_file, "FERPlus label file")
    _require_dir(image_dir, "FERPlus image folder")
    mapping, class_names = _label_mapping(FERPLUS_CLASSES, label_order)
    issues = _Issues(on_error)
    listing = _DirListing()
    dropped: Dict[str, int] = {}
    paths, lines, expr, votes_out = [], [], [], []
    with open(label_file, "r", encoding="utf-8-sig", newline="") as f:
        reader = _csv.reader(f)
        for row in reader:
            n = reader.line_num
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != 12:
                issues.bad(f"malformed row: {len(row)} columns, expected 12 (image name, face box, "
                           f"10 vote counts)", label_file, n)
                continue
            counts = [_parse_int(c) for c in row[2:]]
            if any(c is None or c < 0 for c in counts):
                if n == 1:  # tolerate a header line
                    continue
                issues.bad(f"malformed row: vote counts {row[2:]} must be non-negative integers",
                           label_file, n)
                continue
            name = row[0].strip()
            if not name:
                dropped["no_image"] = dropped.get("no_image", 0) + 1
                continue
            label, reason = ferplus_label(counts, vote_rule)
            if label is None:
                dropped[reason] = dropped.get(reason, 0) + 1
                continue
            path = os.path.join(image_dir, name)
            if not listing.exists(path):
                issues.bad(f"image file not found: {path}", label_file, n, image=path, missing=True)
                continue
            paths.append(path)
            lines.append(n)
            expr.append(mapping[label])
            votes_out.append(counts)
    labels = {"expression": _stack(expr, (), np.int64), "votes": _stack(votes_out, (10,), np.int64)}
    records = Records(layout="ferplus", split=split, source=label_file, paths=paths, lines=lines,
                      labels=labels, class_names=class_names, label_order=label_order,
                      image_size=image_size, on_error=on_error, dropped=dropped)
    return _finish(records, issues)


# --------------------------------------------------------------------------------------------------
# FER2013
# --------------------------------------------------------------------------------------------------


def read_fer2013(csv_path, split: str = "train", label_order: str = "native", image_size=None,
                 on_error: str = "raise") -> Records:
    """FER2013 ``fer2013.csv`` (columns ``emotion,pixels,Usage``; 48x48 grey pixels, space separated).
    ``Usage``: Training -> "train", PublicTest -> "validation", PrivateTest -> "test" (FRA evaluates on
    PrivateTest); "all" keeps every row.  Grey images are emitted as RGB.  Label order ``native``:
    :data:`FER2013_CLASSES` (0 anger, 1 disgust, 2 fear, 3 happiness, 4 sadness, 5 surprise, 6 neutral);
    ``rafdb`` maps to the RAF-DB order.  Pixels are parsed eagerly (in memory, ~2.3 KB per image)."""
    splits = ("train", "validation", "test", "all")
    split = FER2013_USAGE.get(split, split)
    _check_choice("split", split, splits)
    csv_path = os.fspath(csv_path)
    _require_file(csv_path, "FER2013 csv")
    mapping, class_names = _label_mapping(FER2013_CLASSES, label_order)
    issues = _Issues(on_error)
    lines, expr, pixels = [], [], []
    with open(csv_path, "r", encoding="utf-8-sig", newline="") as f:
        reader = _csv.reader(f)
        header = next(reader, None)
        cols = {h.strip(): j for j, h in enumerate(header or [])}
        if not {"emotion", "pixels", "Usage"} <= set(cols):
            raise DataFormatError(f"expected a header 'emotion,pixels,Usage', got {header}", file=csv_path,
                                  line=1)
        for row in reader:
            n = reader.line_num
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                issues.bad(f"malformed row: {len(row)} columns, expected {len(header)}", csv_path, n)
                continue
            usage = row[cols["Usage"]].strip()
            if usage not in FER2013_USAGE:
                issues.bad(f"malformed row: Usage {usage!r} is not one of {tuple(FER2013_USAGE)}", csv_path, n)
                continue
            if split != "all" and FER2013_USAGE[usage] != split:
                continue
            code = _parse_int(row[cols["emotion"]])
            if code is None or not 0 <= code <= 6:
                issues.bad(f"malformed row: emotion {row[cols['emotion']]!r} is not an integer 0..6",
                           csv_path, n)
                continue
            tokens = row[cols["pixels"]].split()
            try:
                values = np.array(tokens, dtype=np.int64)
            except ValueError:
                values = None
            if values is None or values.size != 48 * 48 or values.min() < 0 or values.max() > 255:
                issues.bad(f"malformed row: pixels must be 2304 integers 0..255 (got {len(tokens)} values)",
                           csv_path, n)
                continue
            lines.append(n)
            expr.append(mapping[code])
            pixels.append(values.astype(np.uint8).reshape(48, 48))
    images = _stack(pixels, (48, 48), np.uint8)
    records = Records(layout="fer2013", split=split, source=csv_path, paths=[csv_path] * len(lines),
                      lines=lines, labels={"expression": _stack(expr, (), np.int64)},
                      class_names=class_names, label_order=label_order, images=images,
                      image_size=image_size, on_error=on_error)
    return _finish(records, issues)


# --------------------------------------------------------------------------------------------------
# CelebA
# --------------------------------------------------------------------------------------------------


def _celeba_locate(root):
    """(list-file lookup function, image folder) for the flat (torchvision) layout, the ``root/celeba``
    layout, the Google-Drive layout (Anno/, Eval/, Img/) and the Kaggle layout (.csv list files,
    ``img_align_celeba/img_align_celeba/``)."""
    bases = [root, os.path.join(root, "celeba")]

    def candidates(base, name):
        return [os.path.join(folder, name) for folder in (base, os.path.join(base, "Anno"),
                                                          os.path.join(base, "Eval"))]

    base = next((b for b in bases if any(os.path.isfile(p) for ext in (".txt", ".csv")
                                         for p in candidates(b, "list_attr_celeba" + ext))), None)
    if base is None:
        raise MissingFileError("CelebA list_attr_celeba.txt (or .csv) not found (looked in <root>, "
                               "<root>/celeba and their Anno/ folders)",
                               file=os.path.join(root, "list_attr_celeba.txt"))

    def find(stem, required=True):
        for ext in (".txt", ".csv"):
            for p in candidates(base, stem + ext):
                if os.path.isfile(p):
                    return p
        if required:
            raise MissingFileError(f"CelebA {stem}.txt (or .csv) not found", file=os.path.join(base, stem + ".txt"))
        return None

    image_dir = next((d for d in (os.path.join(base, "img_align_celeba", "img_align_celeba"),
                                  os.path.join(base, "img_align_celeba"),
                                  os.path.join(base, "Img", "img_align_celeba")) if os.path.isdir(d)), None)
    if image_dir is None:
        raise MissingFileError("CelebA image folder img_align_celeba not found",
                               file=os.path.join(base, "img_align_celeba"))
    return find, image_dir


def _csv_rows(path):
    """(line number, cells) of a csv file."""
    with open(path, "r", encoding="utf-8-sig", newline="") as f:
        reader = _csv.reader(f)
        for row in reader:
            yield reader.line_num, [c.strip() for c in row]


def _read_celeba_table(path, issues, width, header_check=None):
    """Parse a CelebA table: ``.txt`` (a count line, a header line, rows ``name v1 .. v_width``) or the
    Kaggle ``.csv`` (a header ``image_id,<names>``, rows ``name,v1,..``).  Returns (header names,
    {name: (values, line)})."""
    if path.endswith(".csv"):
        rows_iter = _csv_rows(path)
        first = next(rows_iter, None)
        if first is None or len(first[1]) != width + 1:
            raise DataFormatError(f"expected a header 'image_id' + {width} names", file=path, line=1)
        header, header_line, declared, body = first[1][1:], 1, None, rows_iter
    else:
        lines = _read_lines(path)
        if len(lines) < 2:
            raise DataFormatError("expected a count line and a header line", file=path, line=len(lines) + 1)
        declared = _parse_int(lines[0].strip())
        if declared is None:
            raise DataFormatError(f"first line must be the number of images, got {lines[0]!r}", file=path,
                                  line=1)
        header, header_line = lines[1].split(), 2
        body = ((n, raw.split()) for n, raw in enumerate(lines[2:], start=3))
    if header_check is not None:
        header_check(header, path, header_line)
    rows: Dict[str, Tuple[List[int], int]] = {}
    count = 0
    for n, tokens in body:
        if not tokens or not any(tokens):
            continue
        count += 1
        values = [_parse_int(t) for t in tokens[1:]]
        if len(values) != width or any(v is None for v in values):
            issues.bad(f"malformed line: expected an image name and {width} integers, got {len(tokens) - 1} "
                       f"values", path, n)
            continue
        rows[tokens[0]] = (values, n)
    if declared is not None and count != declared:
        raise DataFormatError(f"the first line declares {declared} images but the file lists {count} "
                              f"(truncated file?)", file=path, line=1)
    return header, rows


def _read_celeba_pairs(path, issues, what, allowed=None) -> Dict[str, int]:
    """``name value`` lines (.txt) or ``image_id,<what>`` rows after a header (.csv)."""
    if path.endswith(".csv"):
        body = list(_csv_rows(path))[1:]
    else:
        body = [(n, raw.split()) for n, raw in enumerate(_read_lines(path), start=1)]
    out: Dict[str, int] = {}
    for n, tokens in body:
        if not tokens or not any(tokens):
            continue
        value = _parse_int(tokens[1]) if len(tokens) == 2 else None
        if value is None or (allowed is not None and value not in allowed):
            issues.bad(f"malformed line {tokens}: expected '<image name> <{what}>'", path, n)
            continue
        out[tokens[0]] = value
    return out


def read_celeba(root, split: str = "train", image_size=None, on_error: str = "raise",
                attribute_mask=None) -> Records:
    """CelebA aligned: ``list_attr_celeba.txt`` (count, 40 names, rows ``000001.jpg -1  1 ...``),
    ``list_eval_partition.txt`` (``000001.jpg 0``; 0 train, 1 validation, 2 test), ``img_align_celeba/``.
    Found in ``root``, ``root/celeba`` (the FRA / torchvision layout), their ``Anno``/``Eval``/``Img``
    sub-folders (the Google-Drive layout) or as the Kaggle ``.csv`` versions of the list files with
    ``img_align_celeba/img_align_celeba/``.  Attributes {-1, 1} -> {0, 1} as int8 (40,), in
    :data:`CELEBA_ATTRIBUTES` order whatever the header order.  ``attribute_mask``: optional bool (40,);
    False columns are emitted as -1 (unknown; e.g. the columns ``write_celeba`` reports invalid).
    Optional files, read when present: ``identity_CelebA.txt`` -> ``identity`` (CelebA id - 1) and
    ``list_landmarks_align_celeba.txt`` -> 5 ``landmarks`` (lefteye, righteye, nose, leftmouth,
    rightmouth).  ``split``: train / validation / test / all."""
    _check_choice("split", split, tuple(CELEBA_PARTITIONS) + ("all",))
    root = os.fspath(root)
    _require_dir(root, "CelebA root")
    find, image_dir = _celeba_locate(root)
    attr_file = find("list_attr_celeba")
    part_file = find("list_eval_partition")
    issues = _Issues(on_error)

    order: List[int] = []

    def check_header(header, path, line):
        if sorted(header) != sorted(CELEBA_ATTRIBUTES):
            unknown = sorted(set(header) - set(CELEBA_ATTRIBUTES))
            missing = sorted(set(CELEBA_ATTRIBUTES) - set(header))
            raise DataFormatError(f"header must name the 40 CelebA attributes (unknown: {unknown}, "
                                  f"missing: {missing})", file=path, line=line)
        order.extend(header.index(name) for name in CELEBA_ATTRIBUTES)

    _, attr_rows = _read_celeba_table(attr_file, issues, 40, check_header)
    partition = _read_celeba_pairs(part_file, issues, "0|1|2", allowed=(0, 1, 2))
    identity_rows = landmark_rows = None
    id_file = find("identity_CelebA", required=False)
    if id_file is not None:
        identity_rows = _read_celeba_pairs(id_file, issues, "identity")
    lm_file = find("list_landmarks_align_celeba", required=False)
    if lm_file is not None:
        _, landmark_rows = _read_celeba_table(lm_file, issues, 10)
    if attribute_mask is not None:
        attribute_mask = np.asarray(attribute_mask, dtype=bool)
        if attribute_mask.shape != (40,):
            raise ValueError(f"attribute_mask must have shape (40,), got {attribute_mask.shape}")

    wanted = None if split == "all" else CELEBA_PARTITIONS[split]
    listing = _DirListing()
    paths, lines, attrs, idents, lms = [], [], [], [], []
    for name, (values, n) in attr_rows.items():
        if name not in partition:
            issues.bad(f"{name} has no entry in {part_file}", attr_file, n)
            continue
        if wanted is not None and partition[name] != wanted:
            continue
        raw = np.asarray(values, np.int64)[order]
        if not np.all((raw == 1) | (raw == -1)):
            issues.bad("malformed line: attribute values must be -1 or 1", attr_file, n)
            continue
        extra_ok = True
        if identity_rows is not None and name not in identity_rows:
            issues.bad(f"{name} has no entry in {id_file}", attr_file, n)
            extra_ok = False
        elif landmark_rows is not None and name not in landmark_rows:
            issues.bad(f"{name} has no entry in {lm_file}", attr_file, n)
            extra_ok = False
        if not extra_ok:
            continue
        path = os.path.join(image_dir, name)
        if not listing.exists(path):
            issues.bad(f"image file not found: {path}", attr_file, n, image=path, missing=True)
            continue
        a = (raw == 1).astype(np.int8)
        if attribute_mask is not None:
            a[~attribute_mask] = -1
        paths.append(path)
        lines.append(n)
        attrs.append(a)
        if identity_rows is not None:
            idents.append(identity_rows[name] - 1)
        if landmark_rows is not None:
            lms.append(np.asarray(landmark_rows[name][0], np.float32).reshape(5, 2))
    labels = {"attributes": _stack(attrs, (40,), np.int8)}
    if identity_rows is not None:
        labels["identity"] = _stack(idents, (), np.int64)
    if landmark_rows is not None:
        labels["landmarks"] = _stack(lms, (5, 2), np.float32)
        labels["visible"] = np.ones((len(lms), 5), bool)
    records = Records(layout="celeba", split=split, source=attr_file, paths=paths, lines=lines,
                      labels=labels, class_names=CELEBA_ATTRIBUTES, image_size=image_size, on_error=on_error)
    return _finish(records, issues)


# --------------------------------------------------------------------------------------------------
# 300W (.pts) and WFLW
# --------------------------------------------------------------------------------------------------


def read_pts(path) -> np.ndarray:
    """Parse an iBUG ``.pts`` file (``version: 1``, ``n_points: 68``, ``{``, ``x y`` lines, ``}``) into a
    float32 (n_points, 2) array.  Raises DataFormatError naming the file and line."""
    path = os.fspath(path)
    _require_file(path, "landmark file")
    lines = _read_lines(path)
    n_points = None
    start = None
    for n, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        if text == "{":
            start = n
            break
        key, _, value = text.partition(":")
        if key.strip() == "n_points":
            n_points = _parse_int(value.strip())
            if n_points is None or n_points <= 0:
                raise DataFormatError(f"bad n_points {value.strip()!r}", file=path, line=n)
        elif key.strip() != "version":
            raise DataFormatError(f"unexpected header line {raw!r}", file=path, line=n)
    if start is None:
        raise DataFormatError("no '{' line opening the point list", file=path, line=len(lines))
    points = []
    for n in range(start + 1, len(lines) + 1):
        text = lines[n - 1].strip()
        if not text:
            continue
        if text == "}":
            break
        tokens = text.split()
        xy = [_parse_float(t) for t in tokens]
        if len(xy) != 2 or any(v is None or not np.isfinite(v) for v in xy):
            raise DataFormatError(f"malformed point line {lines[n - 1]!r}: expected 'x y'", file=path, line=n)
        points.append(xy)
    else:
        raise DataFormatError("no '}' line closing the point list", file=path, line=len(lines))
    if n_points is not None and len(points) != n_points:
        raise DataFormatError(f"n_points says {n_points} but {len(points)} points are listed", file=path,
                              line=start)
    return np.asarray(points, np.float32).reshape(-1, 2)


def _find_image_beside(pts_path, listing):
    stem = os.path.splitext(pts_path)[0]
    for ext in (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG", ".bmp"):
        if listing.exists(stem + ext):
            return stem + ext
    return None


def read_300w(root, subset: Union[None, str, Sequence[str]] = None, num_points: int = 68,
              coordinate_offset: float = 0.0, image_size=None, on_error: str = "raise") -> Records:
    """300W-style folders: every ``*.pts`` under ``root`` (recursively, sorted) with its image beside it
    (same stem; .jpg / .png / .jpeg).  ``subset``: None (everything), a key of :data:`W300_SUBSETS`
    ("train", "common", "challenging", "full", "private") or a list of folders relative to ``root``.
    Coordinates are returned as stored plus ``coordinate_offset`` (iBUG files use 1-based Matlab pixel
    coordinates: pass -1.0 for 0-based).  Every point is ``visible``.  Each file must have
    ``num_points`` points (None accepts any count, but then all files must agree)."""
    root = os.fspath(root)
    _require_dir(root, "300W root")
    if subset is None:
        folders = [root]
    else:
        names = W300_SUBSETS[subset] if isinstance(subset, str) and subset in W300_SUBSETS else (
            [subset] if isinstance(subset, str) else list(subset))
        folders = [os.path.join(root, *name.split("/")) for name in names]
        for folder in folders:
            _require_dir(folder, "300W subset folder")
    issues = _Issues(on_error)
    listing = _DirListing()
    pts_files = []
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            pts_files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.lower().endswith(".pts"))
    paths, lines, lms = [], [], []
    for pts in pts_files:
        try:
            lm = read_pts(pts)
        except DataFormatError as exc:
            issues.bad(exc.reason, exc.file, exc.line)
            continue
        expected = num_points if num_points is not None else (lms[0].shape[0] if lms else lm.shape[0])
        if lm.shape[0] != expected:
            issues.bad(f"{lm.shape[0]} points, expected {expected}", pts, None)
            continue
        image = _find_image_beside(pts, listing)
        if image is None:
            issues.bad("no image beside it (same name, .jpg/.png/.jpeg)", pts, None,
                       image=os.path.splitext(pts)[0] + ".jpg", missing=True)
            continue
        paths.append(image)
        lines.append(None)
        lms.append(lm + np.float32(coordinate_offset))
    k = num_points if num_points is not None else (lms[0].shape[0] if lms else 0)
    labels = {"landmarks": _stack(lms, (k, 2), np.float32), "visible": np.ones((len(lms), k), bool)}
    records = Records(layout="300w", split=subset if isinstance(subset, str) or subset is None else "custom",
                      source=root, paths=paths, lines=lines, labels=labels, image_size=image_size,
                      on_error=on_error)
    return _finish(records, issues)


def read_wflw(annotation_file, image_root=None, num_points: int = 98, image_size=None,
              on_error: str = "raise") -> Records:
    """WFLW list file (e.g. ``WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_test.txt``):
    each line holds 196 coordinates (98 points x, y), the face rectangle (x_min y_min x_max y_max),
    6 attribute flags (:data:`WFLW_ATTRIBUTES`) and the image path relative to ``image_root``
    (default: the ``WFLW_images`` folder beside ``WFLW_annotations``).  ``num_points=68`` maps the
    points to the 300W order with :data:`WFLW98_TO_68` so that 68-point NME code runs on WFLW.
    Extras in ``labels``: ``face_rect`` (N, 4), ``wflw_attributes`` (N, 6)."""
    _check_choice("num_points", num_points, (98, 68))
    annotation_file = os.fspath(annotation_file)
    _require_file(annotation_file, "WFLW annotation file")
    if image_root is None:
        folder = os.path.dirname(os.path.abspath(annotation_file))
        while True:
            candidate = os.path.join(folder, "WFLW_images")
            if os.path.isdir(candidate):
                image_root = candidate
                break
            parent = os.path.dirname(folder)
            if parent == folder:
                raise MissingFileError("WFLW_images folder not found above the annotation file; pass "
                                       "image_root", file=annotation_file)
            folder = parent
    image_root = os.fspath(image_root)
    _require_dir(image_root, "WFLW image folder")
    issues = _Issues(on_error)
    listing = _DirListing()
    paths, lines, lms, rects, flags = [], [], [], [], []
    for n, raw in enumerate(_read_lines(annotation_file), start=1):
        tokens = raw.split()
        if not tokens:
            continue
        if len(tokens) != 207:
            issues.bad(f"malformed line: {len(tokens)} fields, expected 207 (196 coordinates, 4 box "
                       f"values, 6 attribute flags, image path)", annotation_file, n)
            continue
        coords = [_parse_float(t) for t in tokens[:196]]
        rect = [_parse_float(t) for t in tokens[196:200]]
        attr = [_parse_int(t) for t in tokens[200:206]]
        if any(v is None for v in coords + rect) or any(a is None or a not in (0, 1) for a in attr):
            issues.bad("malformed line: coordinates / box must be numbers and attribute flags 0 or 1",
                       annotation_file, n)
            continue
        path = os.path.join(image_root, *tokens[206].replace("\\", "/").split("/"))
        if not listing.exists(path):
            issues.bad(f"image file not found: {path}", annotation_file, n, image=path, missing=True)
            continue
        lm = np.asarray(coords, np.float32).reshape(98, 2)
        if num_points == 68:
            lm = wflw98_to_68(lm)
        paths.append(path)
        lines.append(n)
        lms.append(lm)
        rects.append(rect)
        flags.append(attr)
    labels = {
        "landmarks": _stack(lms, (num_points, 2), np.float32),
        "visible": np.ones((len(lms), num_points), bool),
        "face_rect": _stack(rects, (4,), np.float32),
        "wflw_attributes": _stack(flags, (6,), np.int8),
    }
    records = Records(layout=f"wflw{num_points}", split=os.path.splitext(os.path.basename(annotation_file))[0],
                      source=annotation_file, paths=paths, lines=lines, labels=labels, image_size=image_size,
                      on_error=on_error)
    return _finish(records, issues)


# --------------------------------------------------------------------------------------------------
# ImageFolder
# --------------------------------------------------------------------------------------------------


def read_image_folder_labels(root, class_names: Optional[Sequence[str]] = None, label_key: str = "expression",
                             image_size=None, on_error: str = "raise") -> Records:
    """ImageFolder layout ``root/<class>/<image>`` (AffectNet converted by FRA's ``generate_affectnet``,
    or any class-per-folder set).  Classes are the sorted sub-folder names, or ``class_names`` in the
    given order (then every listed folder must exist; other folders are ignored).  Files with image
    extensions only, sorted; the label goes to ``label_key`` (default ``expression``).  Images are
    checked lazily (a corrupt file raises / is skipped when decoded)."""
    if label_key not in ("expression", "identity"):
        raise ValueError(f"label_key={label_key!r}; expected 'expression' or 'identity'")
    root = os.fspath(root)
    _require_dir(root, "image folder root")
    if class_names is None:
        class_names = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        if not class_names:
            raise DataFormatError("no class sub-folders", file=root)
    else:
        class_names = [str(c) for c in class_names]
        for c in class_names:
            _require_dir(os.path.join(root, c), f"class folder {c!r}")
    paths, labels = [], []
    for k, name in enumerate(class_names):
        folder = os.path.join(root, name)
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for f in sorted(filenames):
                if f.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(os.path.join(dirpath, f))
                    labels.append(k)
    records = Records(layout="image_folder", split=os.path.basename(os.path.normpath(root)), source=root,
                      paths=paths, lines=[None] * len(paths), labels={label_key: _stack(labels, (), np.int64)},
                      class_names=tuple(class_names), image_size=image_size, on_error=on_error)
    return records


READERS = {
    "rafdb": read_rafdb,
    "affectnet": read_affectnet,
    "ferplus": read_ferplus,
    "fer2013": read_fer2013,
    "celeba": read_celeba,
    "300w": read_300w,
    "wflw": read_wflw,
    "image_folder": read_image_folder_labels,
}

__all__ = [
    "AFFECTNET_CLASSES", "CELEBA_ATTRIBUTES", "DataFormatError", "FER2013_CLASSES", "FERPLUS_CLASSES",
    "FERPLUS_VOTE_COLUMNS", "MissingFileError", "RAFDB_CLASSES", "READERS", "Records", "SCHEMA",
    "SkippedRecord", "SkippedRecordsWarning", "W300_SUBSETS", "WFLW98_TO_68", "WFLW_ATTRIBUTES",
    "ferplus_label", "read_300w", "read_affectnet", "read_celeba", "read_fer2013", "read_ferplus",
    "read_image_folder_labels", "read_pts", "read_rafdb", "read_wflw", "rescale_landmarks", "wflw98_to_68",
]
