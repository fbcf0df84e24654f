"""The record machinery shared by the readers of the real data-set layouts (`fra_keras.data.layouts`).

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

The readers themselves live one module per data set in `fra_keras.data.layouts` and are gathered in
`fra_keras.data.readers`; the label vocabularies in `fra_keras.data.labels`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from fra_keras.data.labels import RAFDB_ORDER_WITH_CONTEMPT

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
# Errors and parsing helpers
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


def check_on_error(on_error):
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r}; expected one of {ON_ERROR}")


def check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}={value!r}; expected one of {tuple(allowed)}")


class Issues:
    """Raise or record per-record problems while an index is built."""

    def __init__(self, on_error: str):
        check_on_error(on_error)
        self.on_error = on_error
        self.skipped: List[SkippedRecord] = []

    def bad(self, reason, file, line=None, image=None, missing=False):
        if self.on_error == "raise":
            cls = MissingFileError if missing else DataFormatError
            raise cls(reason, file=file, line=line, image=image)
        self.skipped.append(SkippedRecord(str(file), line, reason))


def require_dir(path, what):
    if not os.path.isdir(path):
        raise MissingFileError(f"{what} not found (no such directory)", file=path)


def require_file(path, what):
    if not os.path.isfile(path):
        raise MissingFileError(f"{what} not found (no such file)", file=path)


class DirListing:
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


def read_lines(path) -> List[str]:
    with open(path, "r", encoding="utf-8-sig", newline=None) as f:
        return f.read().splitlines()


def parse_int(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(value) or value != int(value):
        return None
    return int(value)


def parse_float(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value


def label_mapping(native_names: Sequence[str], label_order: str) -> Tuple[np.ndarray, Tuple[str, ...]]:
    """Index map native -> output order, and the output class names."""
    check_choice("label_order", label_order, LABEL_ORDERS)
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


def as_hw(image_size) -> Optional[Tuple[int, int]]:
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
        check_on_error(self.on_error)
        self.image_size = as_hw(self.image_size)
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
        size = as_hw(image_size) or self.image_size
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

        size = as_hw(image_size) or self.image_size
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


def finish_records(records: Records, issues: Issues) -> Records:
    records.skipped.extend(issues.skipped)
    if issues.skipped:
        first = issues.skipped[0]
        where = first.file + (f", line {first.line}" if first.line is not None else "")
        warnings.warn(f"{records.layout} ({records.split}): skipped {len(issues.skipped)} bad record(s); "
                      f"first: {where}: {first.reason}", SkippedRecordsWarning, stacklevel=3)
    return records


def stack_rows(rows, shape, dtype):
    if rows:
        return np.asarray(rows, dtype=dtype).reshape((len(rows),) + tuple(shape))
    return np.zeros((0,) + tuple(shape), dtype=dtype)

