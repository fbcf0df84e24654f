"""TFDS builder ``fra_ferplus`` over `fra_keras.data.layouts.ferplus.read_ferplus`."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from fra_keras.data.labels import FERPLUS_CLASSES
from fra_keras.data.layouts.ferplus import FERPLUS_FOLDERS, read_ferplus
from fra_keras.data.layouts.tfds_base import ManualBuilder, expression_feature
from fra_keras.data.records import MissingFileError


@dataclasses.dataclass(eq=False)
class FraFerplusConfig(tfds.core.BuilderConfig):
    vote_rule: str = "majority"


class FraFerplus(ManualBuilder):
    """FERPlus, via `read_ferplus` (single votes removed, ties / unknown / not-face dropped)."""

    BUILDER_CONFIGS = [
        FraFerplusConfig(name="majority", vote_rule="majority",
                         description="The top class must hold more than half of the votes (FERPlus 'majority')."),
        FraFerplusConfig(name="plurality", vote_rule="plurality", description="The top class wins."),
    ]
    DESCRIPTION = ("FERPlus (FER2013 images relabelled by 10 taggers); 8 classes in FERPlus order (neutral, "
                   "happiness, surprise, sadness, anger, disgust, fear, contempt); raw votes in `votes`.")
    PROBES = tuple(f"{top}{folder}/label.csv" for top in ("Labels/", "")
                   for folder in FERPLUS_FOLDERS.values())
    ROOT_NAMES = ("ferplus", "FERPlus")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
FERPlus labels: https://github.com/microsoft/FERPlus; images: generate them from fer2013.csv with the
repository's script. Put in manual_dir (or manual_dir/ferplus):
  Labels/FER2013Train/label.csv    Images/FER2013Train/fer0000000.png   (split "train")
  Labels/FER2013Valid/label.csv    Images/FER2013Valid/...               ("validation")
  Labels/FER2013Test/label.csv     Images/FER2013Test/...                ("test")
The repository layout FER2013Train/{label.csv,*.png} works too.
"""

    def _label_features(self):
        return {"expression": expression_feature(FERPLUS_CLASSES),
                "votes": tfds.features.Tensor(shape=(10,), dtype=np.int64,
                                              doc="raw counts: 8 classes, unknown, not a face")}

    def _split_generators(self, dl_manager):
        root = self._root(dl_manager)
        out = {}
        for split, folder in FERPLUS_FOLDERS.items():
            if not any(os.path.isfile(os.path.join(root, *p, folder, "label.csv")) for p in (("Labels",), ())):
                continue
            records = read_ferplus(root, split, vote_rule=self.builder_config.vote_rule)
            out[split] = self._generate_examples(records, root, extras=("votes",))
        if not out:
            raise MissingFileError(f"no FERPlus label.csv under {root}", file=root)
        return out

