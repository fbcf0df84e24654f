"""Input pipelines for FRA: augmentation views, image folders, TFRecord shards, synthetic faces.

    ds = fra_keras.data.pretraining_dataset(config)                      # synthetic faces
    ds = fra_keras.data.pretraining_dataset(config, "/data/vggface2/train")  # image folder or shards

Names are resolved lazily, so `import fra_keras.data` works (and stays light) even where an optional
module such as `synthetic` is missing.
"""

import importlib

_LAZY = {
    "pretraining_dataset": "fra_keras.data.pipeline",
    "num_examples": "fra_keras.data.pipeline",
    "two_views": "fra_keras.data.augment",
    "make_view": "fra_keras.data.augment",
    "normalize": "fra_keras.data.augment",
    "denormalize": "fra_keras.data.augment",
    "image_folder_dataset": "fra_keras.data.folders",
    "list_images": "fra_keras.data.folders",
    "check_images": "fra_keras.data.folders",
    "tfrecord_dataset": "fra_keras.data.shard",
    "write_shards": "fra_keras.data.shard",
    "synthetic_dataset": "fra_keras.data.synthetic",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'fra_keras.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
