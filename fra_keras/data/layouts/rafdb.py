"""RAF-DB basic: reader, writer (and, in `rafdb_tfds`, the TFDS builder).  The shared schema, errors and
`Records` are in `fra_keras.data.records`; the folder tree in ``docs/datasets.md``.
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping, Optional

import numpy as np

from fra_keras.data.labels import RAFDB_CLASSES
from fra_keras.data.layouts.writing import (WriteReport, atomic_write, check_splits, sample_expression,
                                            write_image)
from fra_keras.data.records import (DirListing, Issues, Records, check_choice, finish_records, parse_int,
                                    read_lines, require_dir, require_file, stack_rows)


# --------------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------------


def read_rafdb(root, split: str = "train", image_size=None, on_error: str = "raise",
               label_file: Optional[str] = None) -> Records:
    """RAF-DB basic: ``root/EmoLabel/list_patition_label.txt`` (``train_00001.jpg 5``) and
    ``root/Image/aligned/train_00001_aligned.jpg``.  Labels 1..7 -> 0..6 in RAF-DB order
    (:data:`RAFDB_CLASSES`).  ``split``: "train", "test" or "all"."""
    check_choice("split", split, ("train", "test", "all"))
    root = os.fspath(root)
    require_dir(root, "RAF-DB root")
    label_file = label_file or os.path.join(root, "EmoLabel", "list_patition_label.txt")
    require_file(label_file, "RAF-DB label file")
    image_dir = os.path.join(root, "Image", "aligned")
    require_dir(image_dir, "RAF-DB aligned image folder")
    issues = Issues(on_error)
    listing = DirListing()
    paths, lines, labels = [], [], []
    for n, raw in enumerate(read_lines(label_file), start=1):
        text = raw.strip()
        if not text:
            continue
        tokens = text.split()
        if len(tokens) != 2:
            issues.bad(f"malformed line {raw!r}: expected '<image name> <label 1..7>'", label_file, n)
            continue
        name, label_text = tokens
        label = parse_int(label_text)
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
                      labels={"expression": stack_rows(labels, (), np.int64)}, class_names=RAFDB_CLASSES,
                      label_order="rafdb", image_size=image_size, on_error=on_error)
    return finish_records(records, issues)


# --------------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------------


def write_rafdb(samples_by_split: Mapping[str, Iterable[dict]], root, jpeg_quality: int = 95) -> WriteReport:
    """RAF-DB basic: ``root/EmoLabel/list_patition_label.txt`` (``train_00001.jpg 5``, labels 1..7 =
    RAF-DB index + 1) and ``root/Image/aligned/train_00001_aligned.jpg``.  Splits: train, test (test
    names have 4 digits, as in the real set).  Images are stored at their own size (the real aligned
    images are 100x100)."""
    check_splits(samples_by_split, ("train", "test"), "rafdb")
    root = os.fspath(root)
    lines, counts = [], {}
    for split in ("train", "test"):
        if split not in samples_by_split:
            continue
        digits = 5 if split == "train" else 4
        n = 0
        for n, sample in enumerate(samples_by_split[split], start=1):
            name = f"{split}_{n:0{digits}d}"
            write_image(os.path.join(root, "Image", "aligned", f"{name}_aligned.jpg"), sample["image"],
                         "jpg", jpeg_quality)
            lines.append(f"{name}.jpg {sample_expression(sample) + 1}\n")
        counts[split] = n
    label_file = os.path.join(root, "EmoLabel", "list_patition_label.txt")
    atomic_write(label_file, "".join(lines))
    return WriteReport("rafdb", root, [label_file], counts)

