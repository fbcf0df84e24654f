"""Readers for the real on-disk layouts of the FRA evaluation data sets, gathered in one namespace.

Each reader lives with its data set in `fra_keras.data.layouts` (``read_rafdb`` in ``layouts.rafdb``
...); the index they return (`Records`), its schema and its errors in `fra_keras.data.records`; the
class and attribute names in `fra_keras.data.labels`.  ``docs/datasets.md`` describes every layout::

    from fra_keras.data import readers
    train = readers.read_rafdb("/data/RAF-DB/basic", "train", image_size=224)
"""

from fra_keras.data.labels import (AFFECTNET_CLASSES, CELEBA_ATTRIBUTES, FER2013_CLASSES, FERPLUS_CLASSES,
                                   FERPLUS_VOTE_COLUMNS, RAFDB_CLASSES, WFLW98_TO_68, WFLW_ATTRIBUTES)
from fra_keras.data.layouts.affectnet import AFFECTNET_COLUMNS, read_affectnet
from fra_keras.data.layouts.celeba import read_celeba
from fra_keras.data.layouts.fer2013 import read_fer2013
from fra_keras.data.layouts.ferplus import ferplus_label, read_ferplus
from fra_keras.data.layouts.image_folder import read_image_folder_labels
from fra_keras.data.layouts.rafdb import read_rafdb
from fra_keras.data.layouts.w300 import W300_SUBSETS, read_300w, read_pts
from fra_keras.data.layouts.wflw import read_wflw, wflw98_to_68
from fra_keras.data.records import (SCHEMA, DataFormatError, MissingFileError, Records, SkippedRecord,
                                    SkippedRecordsWarning, rescale_landmarks)

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
    "AFFECTNET_CLASSES", "AFFECTNET_COLUMNS", "CELEBA_ATTRIBUTES", "DataFormatError", "FER2013_CLASSES",
    "FERPLUS_CLASSES", "FERPLUS_VOTE_COLUMNS", "MissingFileError", "RAFDB_CLASSES", "READERS", "Records",
    "SCHEMA", "SkippedRecord", "SkippedRecordsWarning", "W300_SUBSETS", "WFLW98_TO_68", "WFLW_ATTRIBUTES",
    "ferplus_label", "read_300w", "read_affectnet", "read_celeba", "read_fer2013", "read_ferplus",
    "read_image_folder_labels", "read_pts", "read_rafdb", "read_wflw", "rescale_landmarks", "wflw98_to_68",
]
