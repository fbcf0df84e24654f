"""AffectNet (manually annotated): reader, writer (and, in `affectnet_tfds`, the TFDS builder).  The shared schema, errors and
`Records` are in `fra_keras.data.records`; the folder tree in ``docs/datasets.md``.
"""

from __future__ import annotations

import csv as _csv
import hashlib
import os
from typing import Dict, Iterable, Optional

import numpy as np

from fra_keras.data.labels import AFFECTNET_CLASSES, AFFECTNET_DROPPED_CODES, RAFDB_TO_AFFECTNET
from fra_keras.data.layouts.writing import (WriteReport, as_image, atomic_write, sample_expression,
                                            sample_landmarks68, write_image)
from fra_keras.data.records import (DataFormatError, DirListing, Issues, MissingFileError, Records,
                                    check_choice, finish_records, label_mapping, parse_float, parse_int,
                                    require_dir, stack_rows)


# --------------------------------------------------------------------------------------------------
# Reader
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
    check_choice("num_classes", num_classes, (7, 8))
    root = os.fspath(root)
    require_dir(root, "AffectNet root")
    csv_path = _resolve_affectnet_csv(root, os.fspath(csv))
    if image_root is None:
        managed = os.path.join(root, "Manually_Annotated_Images")
        image_root = managed if os.path.isdir(managed) else root
    require_dir(image_root, "AffectNet image folder")
    mapping, class_names = label_mapping(AFFECTNET_CLASSES[:num_classes], label_order)
    issues = Issues(on_error)
    listing = DirListing()
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
        elif len(first) == len(AFFECTNET_COLUMNS) and parse_int(first[6]) is not None:
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

            code = parse_int(get("expression"))
            if code is None or not 0 <= code <= 10:
                issues.bad(f"malformed row: expression {get('expression')!r} is not an integer 0..10",
                           csv_path, n)
                continue
            if code in AFFECTNET_DROPPED_CODES or code >= num_classes:
                reason = AFFECTNET_DROPPED_CODES.get(code, "contempt")
                dropped[reason] = dropped.get(reason, 0) + 1
                continue
            box = [parse_float(get(k)) if k in col else 0.0
                   for k in ("face_x", "face_y", "face_width", "face_height")]
            if any(b is None for b in box):
                issues.bad("malformed row: face_x/face_y/face_width/face_height must be numbers", csv_path, n)
                continue
            lm_text = get("facial_landmarks")
            if lm_text:
                values = [parse_float(t) for t in lm_text.split(";") if t.strip()]
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
            v = parse_float(get("valence"))
            a = parse_float(get("arousal"))
            paths.append(path)
            lines.append(n)
            expr.append(mapping[code])
            lms.append(lm)
            vis.append(visible)
            boxes.append(box)
            val.append(np.nan if v is None else v)
            aro.append(np.nan if a is None else a)
    labels = {
        "expression": stack_rows(expr, (), np.int64),
        "landmarks": stack_rows(lms, (68, 2), np.float32),
        "visible": stack_rows(vis, (68,), np.bool_),
        "valence": stack_rows(val, (), np.float32),
        "arousal": stack_rows(aro, (), np.float32),
        "face_box": stack_rows(boxes, (4,), np.float32),
    }
    records = Records(layout=f"affectnet{num_classes}", split=os.path.splitext(os.path.basename(csv_path))[0],
                      source=csv_path, paths=paths, lines=lines, labels=labels, class_names=class_names,
                      label_order=label_order, crop_boxes=labels["face_box"] if crop_face else None,
                      image_size=image_size, on_error=on_error, dropped=dropped)
    return finish_records(records, issues)


# --------------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------------


def _face_box(sample, image_shape, margin: float = 0.1):
    """(x, y, w, h) integer face box: the sample's ``bbox`` (x0, y0, x1, y1; the synthetic faces' box of
    the landmarks and the forehead) rounded outwards, else the landmark extent grown by ``margin``."""
    if sample.get("bbox") is not None:
        x0, y0, x1, y1 = (float(v) for v in np.asarray(sample["bbox"], np.float64).reshape(4))
        mx = my = 0.0
    else:
        lm = sample_landmarks68(sample)
        x0, y0 = lm.min(axis=0)
        x1, y1 = lm.max(axis=0)
        mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    x0, y0 = int(np.floor(x0 - mx)), int(np.floor(y0 - my))
    x1, y1 = int(np.ceil(x1 + mx)), int(np.ceil(y1 + my))
    return x0, y0, max(x1 - x0, 1), max(y1 - y0, 1)



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
        image = as_image(sample["image"])
        folder = str(1 + i // per_folder)
        name = hashlib.sha224(f"{stem}:{i}".encode()).hexdigest() + ".jpg"
        write_image(os.path.join(root, "Manually_Annotated_Images", folder, name), image, "jpg", jpeg_quality)
        lm = sample_landmarks68(sample)
        x, y, w, h = _face_box(sample, image.shape)
        e = sample_expression(sample)
        default_v, default_a = _VALENCE_AROUSAL[e]
        v = float(sample.get("valence", default_v))
        a = float(sample.get("arousal", default_a))
        lm_text = ";".join(f"{c:.2f}" for c in lm.reshape(-1))
        rows.append(f"{folder}/{name},{x},{y},{w},{h},{lm_text},{int(RAFDB_TO_AFFECTNET[e])},{v:.6f},{a:.6f}\n")
        n += 1
    csv_path = os.path.join(root, "Manually_Annotated_file_lists", csv_name)
    atomic_write(csv_path, "".join(rows))
    return WriteReport("affectnet", root, [csv_path], {stem: n})

