"""TFDS builder ``fra_rafdb`` over `fra_keras.data.layouts.rafdb.read_rafdb`."""

from __future__ import annotations

from fra_keras.data.labels import RAFDB_CLASSES
from fra_keras.data.layouts.rafdb import read_rafdb
from fra_keras.data.layouts.tfds_base import ManualBuilder, expression_feature


class FraRafdb(ManualBuilder):
    """RAF-DB basic emotion (aligned 100x100 faces), via `read_rafdb`."""

    DESCRIPTION = ("RAF-DB basic expressions, 7 classes in RAF-DB order (surprise, fear, disgust, happiness, "
                   "sadness, anger, neutral), read from manual_dir by fra_keras.data.readers.read_rafdb.")
    PROBES = ("EmoLabel/list_patition_label.txt",)
    ROOT_NAMES = ("rafdb", "RAF-DB", "basic")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
RAF-DB (basic) is distributed on request (http://www.whdeng.cn/RAF/model1.html). Put in manual_dir
(or manual_dir/rafdb):
  EmoLabel/list_patition_label.txt         train_00001.jpg 5   (labels 1..7)
  Image/aligned/train_00001_aligned.jpg    (and test_0001_aligned.jpg ...)
"""

    def _label_features(self):
        return {"expression": expression_feature(RAFDB_CLASSES)}

    def _split_generators(self, dl_manager):
        root = self._root(dl_manager)
        return {split: self._generate_examples(read_rafdb(root, split), root)
                for split in ("train", "test")}

