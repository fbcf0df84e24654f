"""Image folders as a `tf.data` source (VGGFace2 `train/<identity>/*.jpg`, or any folder of faces).

* `list_images(data_dir)`: every .jpg / .jpeg / .png below `data_dir` (any nesting, case-insensitive,
  sorted). Local paths use `os.walk`; URLs such as `gs://...` go through `tf.io.gfile`.
* `image_folder_dataset(data_dir, ...)`: decoded uint8 (H, W, 3) images; grey or RGBA files become RGB.
  Unreadable or corrupt files are skipped (`Dataset.ignore_errors(log_warning=True)`; the warning is a
  TF C++ log line, hidden when TF_CPP_MIN_LOG_LEVEL >= 2). Pass `check=True`, or run
  `python -m fra_keras.data.folders DATA_DIR`, to scan first and report how many files are skipped.
* `check_images(paths) -> (good, bad)`: decodes every file once (parallel) and splits the list.

Labels are unused by pre-training (docs/method.md, "Augmentations"), so none are read here.

TensorFlow is imported inside the functions that need it, so that `list_images` on a local folder
(and the command line's argument checks) work without waiting for it.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import List, Optional, Sequence, Tuple

AUTOTUNE = -1   # tf.data.AUTOTUNE, without importing TensorFlow
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_EXPECTED = ("a folder of .jpg/.jpeg/.png images (any nesting, e.g. VGGFace2 "
             "train/<identity>/*.jpg)")


def _is_url(path: str) -> bool:
    return "://" in path


def _gfile():
    """tf.io.gfile, for URLs such as gs://... (imported only when one is given)."""
    import tensorflow as tf

    return tf.io.gfile


def _check_folder(data_dir) -> str:
    if data_dir is None or not isinstance(data_dir, (str, os.PathLike)):
        raise ValueError(f"data_dir={data_dir!r} is not a path; expected {_EXPECTED}")
    data_dir = os.fspath(data_dir)
    exists = _gfile().exists if _is_url(data_dir) else os.path.exists
    isdir = _gfile().isdir if _is_url(data_dir) else os.path.isdir
    if not exists(data_dir):
        raise ValueError(f"data_dir={data_dir!r} does not exist; expected {_EXPECTED}")
    if not isdir(data_dir):
        raise ValueError(f"data_dir={data_dir!r} is a file, not a folder; expected {_EXPECTED}")
    return data_dir


def list_images(data_dir) -> List[str]:
    """Sorted paths of all .jpg/.jpeg/.png files below `data_dir` (any depth, case-insensitive).

    Raises `ValueError` naming `data_dir` if it is missing, a file, or holds no images.
    """
    data_dir = _check_folder(data_dir)
    paths = []
    if _is_url(data_dir):
        for root, _, files in _gfile().walk(data_dir):
            paths.extend(os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS))
    else:
        for root, _, files in os.walk(data_dir, followlinks=True):
            paths.extend(os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise ValueError(f"data_dir={data_dir!r} contains no .jpg/.jpeg/.png files; expected {_EXPECTED}")
    return sorted(paths)


def decode_image(contents, image_size: Optional[int] = None) -> "tf.Tensor":
    """Encoded JPEG/PNG bytes -> uint8 (H, W, 3); resized to (image_size, image_size) if given."""
    import tensorflow as tf

    image = tf.io.decode_image(contents, channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, 3])
    if image_size:
        image = tf.image.resize(image, [image_size, image_size], method="bilinear", antialias=True)
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        image.set_shape([image_size, image_size, 3])
    return image


def read_image(path, image_size: Optional[int] = None) -> "tf.Tensor":
    """The file at `path` (a string tensor inside tf.data) decoded as `decode_image` does."""
    import tensorflow as tf

    return decode_image(tf.io.read_file(path), image_size)


def image_folder_dataset(data_dir, image_size: Optional[int] = None, shuffle: bool = True, seed: int = 0,
                         skip_unreadable: bool = True, *, paths: Optional[Sequence[str]] = None,
                         check: bool = False, num_shards: int = 1, shard_index: int = 0,
                         num_parallel_calls=AUTOTUNE,
                         deterministic: Optional[bool] = None) -> "tf.data.Dataset":
    """uint8 (H, W, 3) images of a folder (one pass; `.repeat()` it for more).

    Args:
      data_dir: the folder (see `list_images`).
      image_size: resize every image to (image_size, image_size) (bilinear, antialiased, aspect not
        kept); None keeps the original size (shapes then differ: do not batch before cropping).
      shuffle: shuffle the file list (full permutation, reshuffled each pass, seeded by `seed`).
      skip_unreadable: drop files that cannot be read or decoded instead of failing the pipeline.
      paths: an already computed `list_images(data_dir)` (saves a second walk).
      check: decode every file once first (`check_images`), warn with the number of bad files and
        leave them out.
      num_shards, shard_index: keep every `num_shards`-th file starting at `shard_index` (one input
        pipeline of several, e.g. from `tf.distribute.InputContext`).
    """
    import tensorflow as tf

    if paths is None:
        paths = list_images(data_dir)
    paths = list(paths)
    if check:
        paths, bad = check_images(paths, num_parallel_calls=num_parallel_calls)
        if bad:
            warnings.warn(f"data_dir={data_dir!r}: {len(bad)} of {len(paths) + len(bad)} image files "
                          f"cannot be decoded and are skipped (first: {bad[0]!r})", stacklevel=2)
        if not paths:
            raise ValueError(f"data_dir={data_dir!r} has no decodable image among {len(bad)} files; "
                             f"expected {_EXPECTED}")
    if num_shards > 1:
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"shard_index={shard_index} must be in [0, num_shards={num_shards})")
        paths = paths[shard_index::num_shards]
        if not paths:
            raise ValueError(f"data_dir={data_dir!r} has fewer images than num_shards={num_shards}")
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string))
    if shuffle:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda p: read_image(p, image_size), num_parallel_calls=num_parallel_calls,
                deterministic=deterministic)
    if skip_unreadable:
        ds = ds.ignore_errors(log_warning=True)
    return ds


def check_images(paths: Sequence[str], num_parallel_calls=AUTOTUNE) -> Tuple[List[str], List[str]]:
    """Decode every file once (in parallel): returns (good, bad) lists, order preserved."""
    import tensorflow as tf

    paths = list(paths)
    if not paths:
        return [], []
    ds = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64),
                                             tf.constant(paths, tf.string)))

    def decodes(index, path):
        # Return the decoded shape so that the decode cannot be pruned from the graph.
        return index, tf.shape(read_image(path))

    ds = ds.map(decodes, num_parallel_calls=num_parallel_calls, deterministic=False).ignore_errors()
    ok = set(int(i) for i, _ in ds.as_numpy_iterator())
    good = [p for i, p in enumerate(paths) if i in ok]
    bad = [p for i, p in enumerate(paths) if i not in ok]
    return good, bad


def check_decodable(data_dir, paths: Sequence[str], sample: int = 256, num_parallel_calls=AUTOTUNE):
    """Raise ValueError naming `data_dir` when none of up to `sample` files (evenly spread over the
    sorted `paths`; all of them when there are fewer) decodes: training would have no input at all.

    Cheap (at most `sample` decodes); a folder where only some files are bad passes, and those files
    are skipped by the pipeline."""
    paths = list(paths)
    if not paths:
        raise ValueError(f"data_dir={data_dir!r} contains no .jpg/.jpeg/.png files; expected {_EXPECTED}")
    stride = max(len(paths) // max(int(sample), 1), 1)
    chosen = paths[::stride][:sample]
    good, bad = check_images(chosen, num_parallel_calls=num_parallel_calls)
    if good:
        return
    what = (f"all {len(bad)} image files failed to decode" if len(chosen) == len(paths)
            else f"all {len(bad)} image files checked (a sample of the {len(paths)}) failed to decode")
    raise ValueError(f"data_dir={data_dir!r}: {what} (first: {bad[0]!r}); nothing to train on. List them "
                     f"with: python -m fra_keras.data.folders {data_dir} --list-bad")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fra_keras.data.folders",
        description="Scan an image folder: count the images and the files that cannot be decoded "
                    "(those are skipped by the training pipeline).")
    parser.add_argument("data_dir", help=f"{_EXPECTED}")
    parser.add_argument("--list-bad", action="store_true", help="print every undecodable path")
    args = parser.parse_args(argv)
    try:
        paths = list_images(args.data_dir)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from fra_keras.cli_utils import quiet_tensorflow

    quiet_tensorflow()   # only now: the checks above need no TensorFlow
    good, bad = check_images(paths)
    print(f"{args.data_dir}: {len(paths)} image files, {len(good)} decodable, {len(bad)} skipped")
    for p in bad if args.list_bad else bad[:5]:
        print(f"  cannot decode: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
