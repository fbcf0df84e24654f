"""TFDS builder ``fra_wflw`` over `fra_keras.data.layouts.wflw.read_wflw`."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from fra_keras.data.labels import WFLW_ATTRIBUTES
from fra_keras.data.layouts.tfds_base import ManualBuilder, landmark_features
from fra_keras.data.layouts.wflw import read_wflw
from fra_keras.data.records import MissingFileError


@dataclasses.dataclass(eq=False)
class FraWflwConfig(tfds.core.BuilderConfig):
    num_points: int = 98


WFLW_LIST = "WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_{split}.txt"


class FraWflw(ManualBuilder):
    """WFLW, via `read_wflw` (98 points, or 68 in the 300W order)."""

    BUILDER_CONFIGS = [
        FraWflwConfig(name="98", num_points=98, description="The 98 WFLW points."),
        FraWflwConfig(name="68", num_points=68, description="Mapped to the 300W-68 order (WFLW98_TO_68)."),
    ]
    DESCRIPTION = ("WFLW landmarks; face_rect (x_min, y_min, x_max, y_max) and the 6 flags pose, expression, "
                   "illumination, make-up, occlusion, blur in wflw_attributes.")
    PROBES = ("WFLW_annotations",)
    ROOT_NAMES = ("wflw", "WFLW")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
WFLW (https://wywu.github.io/projects/LAB/WFLW.html). Put in manual_dir (or manual_dir/wflw):
  WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_{train,test}.txt
  WFLW_images/<event folders>/*.jpg
"""

    def _label_features(self):
        return {**landmark_features(self.builder_config.num_points),
                "face_rect": tfds.features.Tensor(shape=(4,), dtype=np.float32),
                "wflw_attributes": tfds.features.Tensor(shape=(6,), dtype=np.int8,
                                                        doc=", ".join(WFLW_ATTRIBUTES))}

    def _split_generators(self, dl_manager):
        root = self._root(dl_manager)
        out = {}
        for split in ("train", "test"):
            path = os.path.join(root, *WFLW_LIST.format(split=split).split("/"))
            if os.path.isfile(path):
                records = read_wflw(path, image_root=os.path.join(root, "WFLW_images"),
                                            num_points=self.builder_config.num_points)
                out[split] = self._generate_examples(records, root, extras=("face_rect", "wflw_attributes"))
        if not out:
            raise MissingFileError(f"no WFLW list file under {root} ({WFLW_LIST})", file=root)
        return out

