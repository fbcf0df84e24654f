"""300W / iBUG ``.pts`` folders: reader, writer (and, in `w300_tfds`, the TFDS builder).  The shared schema, errors and
`Records` are in `fra_keras.data.records`; the folder tree in ``docs/datasets.md``.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence, Union

import numpy as np

from fra_keras.data.layouts.writing import WriteReport, atomic_write, sample_landmarks68, write_image
from fra_keras.data.records import (DataFormatError, DirListing, Issues, Records, finish_records,
                                    parse_float, parse_int, read_lines, require_dir, require_file,
                                    stack_rows)

#: Common 300W evaluation subsets, as folders under the 300W root (ibug distribution layout).
W300_SUBSETS = {
    "train": ("afw", "helen/trainset", "lfpw/trainset"),
    "common": ("helen/testset", "lfpw/testset"),
    "challenging": ("ibug",),
    "full": ("helen/testset", "lfpw/testset", "ibug"),
    "private": ("01_Indoor", "02_Outdoor"),
}

# --------------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------------


def read_pts(path) -> np.ndarray:
    """Parse an iBUG ``.pts`` file (``version: 1``, ``n_points: 68``, ``{``, ``x y`` lines, ``}``) into a
    float32 (n_points, 2) array.  Raises DataFormatError naming the file and line."""
    path = os.fspath(path)
    require_file(path, "landmark file")
    lines = read_lines(path)
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
            n_points = parse_int(value.strip())
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
        xy = [parse_float(t) for t in tokens]
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
    require_dir(root, "300W root")
    if subset is None:
        folders = [root]
    else:
        names = W300_SUBSETS[subset] if isinstance(subset, str) and subset in W300_SUBSETS else (
            [subset] if isinstance(subset, str) else list(subset))
        folders = [os.path.join(root, *name.split("/")) for name in names]
        for folder in folders:
            require_dir(folder, "300W subset folder")
    issues = Issues(on_error)
    listing = DirListing()
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
    labels = {"landmarks": stack_rows(lms, (k, 2), np.float32), "visible": np.ones((len(lms), k), bool)}
    records = Records(layout="300w", split=subset if isinstance(subset, str) or subset is None else "custom",
                      source=root, paths=paths, lines=lines, labels=labels, image_size=image_size,
                      on_error=on_error)
    return finish_records(records, issues)


# --------------------------------------------------------------------------------------------------
# Writer
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
    "helen/testset" (see ``W300_SUBSETS``); files are numbered from ``start``."""
    root = os.fspath(root)
    folder = os.path.join(root, *subset.split("/"))
    n = 0
    for n, sample in enumerate(samples, start=1):
        name = f"{prefix}_{start + n - 1:04d}"
        write_image(os.path.join(folder, f"{name}.{image_format}"), sample["image"], image_format, jpeg_quality)
        atomic_write(os.path.join(folder, f"{name}.pts"), format_pts(sample_landmarks68(sample)))
    return WriteReport("300w", root, [], {subset: n})

