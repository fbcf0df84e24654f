"""TFDS builder ``fra_celeba`` over `fra_keras.data.layouts.celeba.read_celeba`."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from fra_keras.data.labels import CELEBA_ATTRIBUTES, CELEBA_LANDMARK_NAMES
from fra_keras.data.layouts.celeba import read_celeba
from fra_keras.data.layouts.tfds_base import ManualBuilder, record_examples


class FraCeleba(ManualBuilder):
    """CelebA aligned faces, via `read_celeba` (attributes 0 / 1; identity and 5 landmarks)."""

    DESCRIPTION = ("CelebA aligned faces: 40 attributes (int8 0 / 1, CelebA column order), identity (CelebA id "
                   "- 1; -1 when identity_CelebA.txt is absent), 5 landmarks (lefteye, righteye, nose, "
                   "leftmouth, rightmouth; NaN when list_landmarks_align_celeba.txt is absent).")
    # manual_dir/celeba (the FRA layout root/celeba) is found through ROOT_NAMES.
    PROBES = tuple(f"{d}list_attr_celeba.{ext}" for d in ("", "Anno/") for ext in ("txt", "csv"))
    ROOT_NAMES = ("celeba", "CelebA")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
CelebA (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html). Put in manual_dir (or manual_dir/celeba):
  list_attr_celeba.txt, list_eval_partition.txt, img_align_celeba/000001.jpg ...
  optional: identity_CelebA.txt, list_landmarks_align_celeba.txt
The Google-Drive layout (Anno/, Eval/, Img/img_align_celeba/) and the Kaggle layout (.csv list files,
img_align_celeba/img_align_celeba/) work too.
"""

    def _label_features(self):
        return {"attributes": tfds.features.Tensor(shape=(40,), dtype=np.int8, doc="CelebA order, 1 / 0"),
                "identity": tfds.features.Scalar(dtype=np.int64),
                "landmarks": tfds.features.Tensor(shape=(5, 2), dtype=np.float32)}

    def _metadata(self):
        return tfds.core.MetadataDict(attribute_names=list(CELEBA_ATTRIBUTES),
                                      landmark_names=list(CELEBA_LANDMARK_NAMES))

    def _split_generators(self, dl_manager):
        root = self._root(dl_manager)
        fill = {"identity": lambda: np.int64(-1),
                "landmarks": lambda: np.full((5, 2), np.nan, np.float32)}
        out = {}
        for split in ("train", "validation", "test"):
            records = read_celeba(root, split)
            out[split] = self._generate_examples(records, root, fill=fill)
        return out

    def _generate_examples(self, records, root, extras=(), fill=None):
        for key, example in record_examples(records, root, extras, fill):
            example.pop("visible", None)  # all True for CelebA's 5 points
            yield key, example

