"""Class-per-folder layout ``root/<class>/<image>``: reader and writer (no TFDS builder).  The shared
schema, errors and `Records` are in `fra_keras.data.records`.
"""

from __future__ import annotations

import os
from typing import Dict, Iterable, Optional, Sequence

import numpy as np

from fra_keras.data.labels import RAFDB_CLASSES
from fra_keras.data.layouts.writing import WriteReport, write_image
from fra_keras.data.records import DataFormatError, Records, require_dir, stack_rows

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".gif", ".tif", ".tiff")

# --------------------------------------------------------------------------------------------------
# Reader
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
    require_dir(root, "image folder root")
    if class_names is None:
        class_names = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        if not class_names:
            raise DataFormatError("no class sub-folders", file=root)
    else:
        class_names = [str(c) for c in class_names]
        for c in class_names:
            require_dir(os.path.join(root, c), f"class folder {c!r}")
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
                      paths=paths, lines=[None] * len(paths), labels={label_key: stack_rows(labels, (), np.int64)},
                      class_names=tuple(class_names), image_size=image_size, on_error=on_error)
    return records


# --------------------------------------------------------------------------------------------------
# Writer
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
        write_image(os.path.join(root, name, f"{i:06d}.{image_format}"), sample["image"], image_format,
                     jpeg_quality)
        counts[name] += 1
    for name in class_names:
        os.makedirs(os.path.join(root, name), exist_ok=True)
    return WriteReport("image_folder", root, [], counts)

