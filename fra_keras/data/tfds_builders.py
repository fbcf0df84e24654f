"""TensorFlow Datasets builders for the FRA data: generated synthetic faces and the real layouts.

Importing this module registers the builders with TFDS (class name -> snake_case name)::

    import fra_keras.data.tfds_builders  # noqa: F401  (registers the builders)
    import tensorflow_datasets as tfds

    ds = tfds.load("fra_synthetic_faces", split="train", data_dir="/data/tfds")          # 64 px, 800/100/100
    ds = tfds.load("fra_synthetic_faces/112", split="validation", data_dir="/data/tfds")
    ds = tfds.load("fra_synthetic_faces/64/num_train=5000,num_validation=500,num_test=500", split="train")

    builder = tfds.builder("fra_rafdb", data_dir="/data/tfds")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir="/data/raw/rafdb"))
    ds = builder.as_dataset(split="test")

=======================  ===========================  ===================================================
name                     splits                       features (besides ``image``, ``image/filename``)
=======================  ===========================  ===================================================
fra_synthetic_faces      train, validation, test      mask, region_mask, landmarks68, visible68,
  /64 (default) /112                                  landmarks5, bbox, expression (RAF-DB names), au,
  /224                                                attributes (int8 40), identity, pose, index
fra_rafdb                train, test                  expression (RAF-DB order)
fra_affectnet /7 /8      train, validation            expression (AffectNet order), landmarks (68),
                                                      visible, valence, arousal, face_box
fra_ferplus              train, validation, test      expression (FERPlus order), votes (10)
  /majority /plurality
fra_fer2013              train, validation, test      expression (FER2013 order)
fra_celeba               train, validation, test      attributes (int8 40), identity, landmarks (5)
fra_300w /raw /0based    train, common, challenging,  landmarks (68), visible
                         private (the folders found)
fra_wflw /98 /68         train, test                  landmarks (98 or 68), visible, face_rect,
                                                      wflw_attributes (6)
=======================  ===========================  ===================================================

Nothing is ever downloaded: the synthetic faces are rendered (`fra_keras.data.synthetic`), the real data
sets are read from ``manual_dir`` with the readers of `fra_keras.data.readers` (same label rules, same
errors naming the file and line). Use ``try_gcs=False`` (the default of ``tfds.load``) and, for
``download_and_prepare``, ``DownloadConfig(manual_dir=..., try_download_gcs=False)``. Each builder's
``MANUAL_DOWNLOAD_INSTRUCTIONS`` gives the folder tree it expects; ``manual_dir`` may be that tree's
root or a folder holding it under the builder's name (``<manual_dir>/fra_rafdb``) or the data set's
usual name (``<manual_dir>/rafdb``, ``RAF-DB``, ...), so one manual folder can serve every builder.

Images: JPEG / PNG files are stored as the bytes of the original file (decoded once at build time to
check them); other formats, crops and FER2013's pixel rows are stored as PNG. Keys are the image
paths relative to the layout root (FER2013: ``fer2013.csv:<line>``), also returned as
``image/filename``; TFDS shuffles the examples by key when it writes the files. Synthetic faces are
stored losslessly (PNG, zlib masks): ``tfds.load`` returns exactly `render_sample(index, seed, size, split)`.

Each builder lives beside its data set's reader and writer (`fra_keras.data.layouts.<name>_tfds`; the
synthetic faces in `fra_keras.data.synthetic_tfds`); this module imports them all, which registers them.
"""

from __future__ import annotations

from typing import Dict

from fra_keras.data.layouts.affectnet_tfds import FraAffectnet, FraAffectnetConfig
from fra_keras.data.layouts.celeba_tfds import FraCeleba
from fra_keras.data.layouts.fer2013_tfds import FraFer2013
from fra_keras.data.layouts.ferplus_tfds import FraFerplus, FraFerplusConfig
from fra_keras.data.layouts.rafdb_tfds import FraRafdb
from fra_keras.data.layouts.tfds_base import FRA_CITATION, HOMEPAGE, RELEASE_NOTES, VERSION
from fra_keras.data.layouts.w300_tfds import Fra300w, Fra300wConfig
from fra_keras.data.layouts.wflw_tfds import WFLW_LIST, FraWflw, FraWflwConfig
from fra_keras.data.synthetic_tfds import FraSyntheticFaces, FraSyntheticFacesConfig, synthetic_faces_config

__all__ = [
    "FraSyntheticFaces", "FraSyntheticFacesConfig", "FraRafdb", "FraAffectnet", "FraAffectnetConfig",
    "FraFerplus", "FraFerplusConfig", "FraFer2013", "FraCeleba", "Fra300w", "Fra300wConfig", "FraWflw",
    "FraWflwConfig", "BUILDER_NAMES", "synthetic_faces_config", "manual_builders", "WFLW_LIST", "VERSION",
    "RELEASE_NOTES", "HOMEPAGE", "FRA_CITATION",
]

#: Every name this module registers (``tfds.load`` names).
BUILDER_NAMES = tuple(cls.name for cls in (FraSyntheticFaces, FraRafdb, FraAffectnet, FraFerplus, FraFer2013,
                                           FraCeleba, Fra300w, FraWflw))


def manual_builders() -> Dict[str, type]:
    """``{tfds name: builder class}`` of the builders that read ``manual_dir``."""
    return {cls.name: cls for cls in (FraRafdb, FraAffectnet, FraFerplus, FraFer2013, FraCeleba, Fra300w, FraWflw)}
