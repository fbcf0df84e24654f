"""TFDS builder ``fra_fer2013`` over `fra_keras.data.layouts.fer2013.read_fer2013`."""

from __future__ import annotations

import os

from fra_keras.data.labels import FER2013_CLASSES
from fra_keras.data.layouts.fer2013 import read_fer2013
from fra_keras.data.layouts.tfds_base import ManualBuilder, expression_feature


class FraFer2013(ManualBuilder):
    """FER2013 (``fer2013.csv``), via `read_fer2013`; 48x48 grey faces emitted as RGB."""

    DESCRIPTION = ("FER2013; 7 classes in FER2013 order (anger, disgust, fear, happiness, sadness, surprise, "
                   "neutral); Training / PublicTest / PrivateTest = train / validation / test.")
    PROBES = ("fer2013.csv",)
    ROOT_NAMES = ("fer2013", "FER2013")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
FER2013 (Kaggle "challenges-in-representation-learning-facial-expression-recognition-challenge"). Put
fer2013.csv (columns emotion,pixels,Usage) in manual_dir (or manual_dir/fer2013).
"""

    def _label_features(self):
        return {"expression": expression_feature(FER2013_CLASSES)}

    def _split_generators(self, dl_manager):
        root = self._root(dl_manager)
        csv_path = os.path.join(root, "fer2013.csv")
        return {split: self._generate_examples(read_fer2013(csv_path, split), root)
                for split in ("train", "validation", "test")}

