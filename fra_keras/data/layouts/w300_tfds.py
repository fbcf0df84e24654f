"""TFDS builder ``fra_300w`` over `fra_keras.data.layouts.w300.read_300w`."""

from __future__ import annotations

import dataclasses
import os

import tensorflow_datasets as tfds

from fra_keras.data.layouts.tfds_base import ManualBuilder, landmark_features
from fra_keras.data.layouts.w300 import W300_SUBSETS, read_300w
from fra_keras.data.records import MissingFileError


@dataclasses.dataclass(eq=False)
class Fra300wConfig(tfds.core.BuilderConfig):
    coordinate_offset: float = 0.0


class Fra300w(ManualBuilder):
    """300W / iBUG ``.pts`` folders, via `read_300w`; one split per subset folder found."""

    name = "fra_300w"
    BUILDER_CONFIGS = [
        Fra300wConfig(name="raw", coordinate_offset=0.0,
                      description="Coordinates as stored in the .pts files (read_300w's default)."),
        Fra300wConfig(name="0based", coordinate_offset=-1.0,
                      description="Coordinates minus 1: the official 1-based iBUG files to 0-based pixels."),
    ]
    DESCRIPTION = ("300W 68-point landmarks. Splits: train (afw, helen/trainset, lfpw/trainset), common "
                   "(helen/testset, lfpw/testset), challenging (ibug), private (01_Indoor, 02_Outdoor); only "
                   "those whose folders exist. full = common + challenging: split='common+challenging'.")
    SPLIT_SUBSETS = ("train", "common", "challenging", "private")
    PROBES = tuple(sorted({f.split("/")[0] for s in SPLIT_SUBSETS for f in W300_SUBSETS[s]}))
    ROOT_NAMES = ("300w", "300W", "ibug_300W_large_face_landmark_dataset")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
300W (https://ibug.doc.ic.ac.uk/resources/300-W/). Put in manual_dir (or manual_dir/300w) the folders
afw/, helen/{trainset,testset}/, lfpw/{trainset,testset}/, ibug/ and/or 01_Indoor/, 02_Outdoor/, each
image beside its .pts file (same name). The official files are 1-based: use the config
fra_300w/0based for 0-based pixel coordinates (fra_300w/raw keeps the stored values).
"""

    def _label_features(self):
        return landmark_features(68)

    def _split_generators(self, dl_manager):
        root = self._root(dl_manager)
        offset = self.builder_config.coordinate_offset
        out = {}
        for subset in self.SPLIT_SUBSETS:
            folders = W300_SUBSETS[subset]
            if all(os.path.isdir(os.path.join(root, *f.split("/"))) for f in folders):
                records = read_300w(root, subset=subset, coordinate_offset=offset)
                out[subset] = self._generate_examples(records, root)
        if not out:
            raise MissingFileError(
                f"no complete 300W subset under {root}: expected the folders of one of "
                f"{ {s: W300_SUBSETS[s] for s in self.SPLIT_SUBSETS} }", file=root)
        return out

