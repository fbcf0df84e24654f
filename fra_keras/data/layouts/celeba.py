"""CelebA aligned faces: reader, writer (and, in `celeba_tfds`, the TFDS builder).  The shared schema, errors and
`Records` are in `fra_keras.data.records`; the folder tree in ``docs/datasets.md``.
"""

from __future__ import annotations

import csv as _csv
import os
from typing import Dict, Iterable, List, Mapping, Tuple

import numpy as np

from fra_keras.data.labels import CELEBA_ATTRIBUTES, CELEBA_LANDMARK_NAMES
from fra_keras.data.layouts.writing import WriteReport, atomic_write, check_splits, write_image
from fra_keras.data.records import (DataFormatError, DirListing, Issues, MissingFileError, Records,
                                    check_choice, finish_records, parse_int, read_lines, require_dir,
                                    stack_rows)

CELEBA_PARTITIONS = {"train": 0, "validation": 1, "test": 2}

# --------------------------------------------------------------------------------------------------
# Reader
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
        lines = read_lines(path)
        if len(lines) < 2:
            raise DataFormatError("expected a count line and a header line", file=path, line=len(lines) + 1)
        declared = parse_int(lines[0].strip())
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
        values = [parse_int(t) for t in tokens[1:]]
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
        body = [(n, raw.split()) for n, raw in enumerate(read_lines(path), start=1)]
    out: Dict[str, int] = {}
    for n, tokens in body:
        if not tokens or not any(tokens):
            continue
        value = parse_int(tokens[1]) if len(tokens) == 2 else None
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
    check_choice("split", split, tuple(CELEBA_PARTITIONS) + ("all",))
    root = os.fspath(root)
    require_dir(root, "CelebA root")
    find, image_dir = _celeba_locate(root)
    attr_file = find("list_attr_celeba")
    part_file = find("list_eval_partition")
    issues = Issues(on_error)

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
    listing = DirListing()
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
    labels = {"attributes": stack_rows(attrs, (40,), np.int8)}
    if identity_rows is not None:
        labels["identity"] = stack_rows(idents, (), np.int64)
    if landmark_rows is not None:
        labels["landmarks"] = stack_rows(lms, (5, 2), np.float32)
        labels["visible"] = np.ones((len(lms), 5), bool)
    records = Records(layout="celeba", split=split, source=attr_file, paths=paths, lines=lines,
                      labels=labels, class_names=CELEBA_ATTRIBUTES, image_size=image_size, on_error=on_error)
    return finish_records(records, issues)


# --------------------------------------------------------------------------------------------------
# Writer
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
    check_splits(samples_by_split, ("train", "validation", "test"), "celeba")
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
            write_image(os.path.join(root, "img_align_celeba", name), sample["image"], "jpg", jpeg_quality)
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
        atomic_write(path, text)
        files.append(path)

    write("list_attr_celeba.txt", f"{k}\n" + " ".join(CELEBA_ATTRIBUTES) + " \n" + "".join(attr_rows))
    write("list_eval_partition.txt", "".join(part_rows))
    if have_id:
        write("identity_CelebA.txt", "".join(id_rows))
    if have_lm:
        header = " ".join(f"{p}_{c}" for p in CELEBA_LANDMARK_NAMES for c in ("x", "y"))
        write("list_landmarks_align_celeba.txt", f"{k}\n{header}\n" + "".join(lm_rows))
    return WriteReport("celeba", root, files, counts, valid_attributes=valid)

