"""FER2013 (``fer2013.csv``): reader, writer (and, in `fer2013_tfds`, the TFDS builder).  The shared schema, errors and
`Records` are in `fra_keras.data.records`; the folder tree in ``docs/datasets.md``.
"""

from __future__ import annotations

import csv as _csv
import os
from typing import Iterable, Mapping

import numpy as np

from fra_keras.data.labels import FER2013_CLASSES, RAFDB_TO_FER2013
from fra_keras.data.layouts.writing import (WriteReport, atomic_write, check_splits, fer_grey48,
                                            sample_expression)
from fra_keras.data.records import (DataFormatError, Issues, Records, check_choice, finish_records,
                                    label_mapping, parse_int, require_file, stack_rows)

FER2013_USAGE = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}

# --------------------------------------------------------------------------------------------------
# Reader
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
    check_choice("split", split, splits)
    csv_path = os.fspath(csv_path)
    require_file(csv_path, "FER2013 csv")
    mapping, class_names = label_mapping(FER2013_CLASSES, label_order)
    issues = Issues(on_error)
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
            code = parse_int(row[cols["emotion"]])
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
    images = stack_rows(pixels, (48, 48), np.uint8)
    records = Records(layout="fer2013", split=split, source=csv_path, paths=[csv_path] * len(lines),
                      lines=lines, labels={"expression": stack_rows(expr, (), np.int64)},
                      class_names=class_names, label_order=label_order, images=images,
                      image_size=image_size, on_error=on_error)
    return finish_records(records, issues)


# --------------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------------


_FER2013_USAGE_OUT = {"train": "Training", "validation": "PublicTest", "test": "PrivateTest"}


def write_fer2013(samples_by_split: Mapping[str, Iterable[dict]], csv_path) -> WriteReport:
    """FER2013 ``fer2013.csv``: header ``emotion,pixels,Usage``, FER2013 emotion codes (0 anger ...
    6 neutral, RAF-DB index mapped by name), 2304 space-separated grey values (:func:`fer_grey48`),
    Usage Training / PublicTest / PrivateTest for train / validation / test, in that order."""
    check_splits(samples_by_split, tuple(_FER2013_USAGE_OUT), "fer2013")
    csv_path = os.fspath(csv_path)
    rows, counts = ["emotion,pixels,Usage\n"], {}
    for split, usage in _FER2013_USAGE_OUT.items():
        if split not in samples_by_split:
            continue
        n = 0
        for sample in samples_by_split[split]:
            grey = fer_grey48(sample["image"])
            code = int(RAFDB_TO_FER2013[sample_expression(sample)])
            rows.append(f"{code},{' '.join(str(int(p)) for p in grey.reshape(-1))},{usage}\n")
            n += 1
        counts[split] = n
    atomic_write(csv_path, "".join(rows))
    return WriteReport("fer2013", os.path.dirname(os.path.abspath(csv_path)), [csv_path], counts)

