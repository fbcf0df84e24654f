"""TFDS builder ``fra_affectnet`` over `fra_keras.data.layouts.affectnet.read_affectnet`."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from fra_keras.data.labels import AFFECTNET_CLASSES
from fra_keras.data.layouts.affectnet import read_affectnet
from fra_keras.data.layouts.tfds_base import ManualBuilder, expression_feature, landmark_features


@dataclasses.dataclass(eq=False)
class FraAffectnetConfig(tfds.core.BuilderConfig):
    num_classes: int = 7
    crop_face: bool = False


class FraAffectnet(ManualBuilder):
    """AffectNet (manually annotated), via `read_affectnet` (codes 8-10 dropped; contempt too
    in config "7")."""

    BUILDER_CONFIGS = [
        FraAffectnetConfig(name="7", num_classes=7, description="7 classes (contempt dropped), FRA's affectnet7."),
        FraAffectnetConfig(name="8", num_classes=8, description="8 classes (with contempt)."),
    ]
    DESCRIPTION = ("AffectNet manually annotated images; expression in AffectNet's order (neutral, happiness, "
                   "sadness, surprise, fear, disgust, anger[, contempt]); codes 8-10 dropped.")
    PROBES = ("Manually_Annotated_file_lists/training.csv", "training.csv")
    ROOT_NAMES = ("affectnet", "AffectNet")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
AffectNet is distributed on request (http://mohammadmahoor.com/affectnet/). Put in manual_dir
(or manual_dir/affectnet):
  Manually_Annotated_file_lists/training.csv     (split "train")
  Manually_Annotated_file_lists/validation.csv   (split "validation"; optional)
  Manually_Annotated_Images/<subDirectory_filePath from the csv>
The csv files may also lie directly in the root.
"""

    def _label_features(self):
        c = self.builder_config
        return {"expression": expression_feature(AFFECTNET_CLASSES[:c.num_classes]),
                **landmark_features(68),
                "valence": tfds.features.Scalar(dtype=np.float32),
                "arousal": tfds.features.Scalar(dtype=np.float32),
                "face_box": tfds.features.Tensor(shape=(4,), dtype=np.float32, doc="x, y, width, height")}

    def _split_generators(self, dl_manager):
        root = self._root(dl_manager)
        c = self.builder_config
        out = {}
        for split, csv_name in (("train", "training.csv"), ("validation", "validation.csv")):
            if split == "validation" and not any(os.path.isfile(os.path.join(root, *p)) for p in (
                    ("Manually_Annotated_file_lists", csv_name), (csv_name,))):
                continue
            records = read_affectnet(root, csv=csv_name, num_classes=c.num_classes, crop_face=c.crop_face)
            out[split] = self._generate_examples(records, root, extras=("valence", "arousal", "face_box"))
        return out

