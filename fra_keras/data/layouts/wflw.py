"""WFLW (98 landmarks, face rectangle, 6 attribute flags): reader, writer (and, in `wflw_tfds`, the TFDS builder).  The shared schema, errors and
`Records` are in `fra_keras.data.records`; the folder tree in ``docs/datasets.md``.
"""

from __future__ import annotations

import os
from typing import Iterable, List

import numpy as np

from fra_keras.data.labels import RAFDB_CLASSES, WFLW98_TO_68
from fra_keras.data.layouts.writing import (WriteReport, atomic_write, sample_landmarks68, sample_visible68,
                                            write_image)
from fra_keras.data.records import (DirListing, Issues, MissingFileError, Records, check_choice,
                                    finish_records, parse_float, parse_int, read_lines, require_dir,
                                    require_file, stack_rows)


# --------------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------------


def wflw98_to_68(landmarks98):
    """(..., 98, 2) WFLW landmarks -> (..., 68, 2) in the 300W order (see ``WFLW98_TO_68``)."""
    lm = np.asarray(landmarks98)
    if lm.shape[-2] != 98:
        raise ValueError(f"expected 98 landmarks on axis -2, got shape {lm.shape}")
    return np.take(lm, WFLW98_TO_68, axis=-2)



def read_wflw(annotation_file, image_root=None, num_points: int = 98, image_size=None,
              on_error: str = "raise") -> Records:
    """WFLW list file (e.g. ``WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_test.txt``):
    each line holds 196 coordinates (98 points x, y), the face rectangle (x_min y_min x_max y_max),
    6 attribute flags (:data:`WFLW_ATTRIBUTES`) and the image path relative to ``image_root``
    (default: the ``WFLW_images`` folder beside ``WFLW_annotations``).  ``num_points=68`` maps the
    points to the 300W order with :data:`WFLW98_TO_68` so that 68-point NME code runs on WFLW.
    Extras in ``labels``: ``face_rect`` (N, 4), ``wflw_attributes`` (N, 6)."""
    check_choice("num_points", num_points, (98, 68))
    annotation_file = os.fspath(annotation_file)
    require_file(annotation_file, "WFLW annotation file")
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
    require_dir(image_root, "WFLW image folder")
    issues = Issues(on_error)
    listing = DirListing()
    paths, lines, lms, rects, flags = [], [], [], [], []
    for n, raw in enumerate(read_lines(annotation_file), start=1):
        tokens = raw.split()
        if not tokens:
            continue
        if len(tokens) != 207:
            issues.bad(f"malformed line: {len(tokens)} fields, expected 207 (196 coordinates, 4 box "
                       f"values, 6 attribute flags, image path)", annotation_file, n)
            continue
        coords = [parse_float(t) for t in tokens[:196]]
        rect = [parse_float(t) for t in tokens[196:200]]
        attr = [parse_int(t) for t in tokens[200:206]]
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
        "landmarks": stack_rows(lms, (num_points, 2), np.float32),
        "visible": np.ones((len(lms), num_points), bool),
        "face_rect": stack_rows(rects, (4,), np.float32),
        "wflw_attributes": stack_rows(flags, (6,), np.int8),
    }
    records = Records(layout=f"wflw{num_points}", split=os.path.splitext(os.path.basename(annotation_file))[0],
                      source=annotation_file, paths=paths, lines=lines, labels=labels, image_size=image_size,
                      on_error=on_error)
    return finish_records(records, issues)


# --------------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------------


def landmarks68_to_98(landmarks68, visible68=None):
    """Extend 300W-68 landmarks to the WFLW-98 layout so that ``wflw98_to_68`` returns the
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
        write_image(os.path.join(root, "WFLW_images", *rel.split("/")), sample["image"], image_format,
                     jpeg_quality)
        lm98, vis98 = landmarks68_to_98(sample_landmarks68(sample), sample_visible68(sample))
        x0, y0 = np.floor(lm98.min(axis=0)).astype(int)
        x1, y1 = np.ceil(lm98.max(axis=0)).astype(int)
        coords = " ".join(f"{c:.6f}" for c in lm98.reshape(-1))
        flags = " ".join(str(f) for f in _wflw_flags(sample, vis98))
        lines.append(f"{coords} {x0} {y0} {x1} {y1} {flags} {rel}\n")
    path = os.path.join(root, "WFLW_annotations", "list_98pt_rect_attr_train_test",
                        f"list_98pt_rect_attr_{split}.txt")
    atomic_write(path, "".join(lines))
    return WriteReport("wflw", root, [path], {split: len(lines)})

