"""Pack an image folder or synthetic faces into TFRecord shards, and read them back.

Writing (CLI)::

    python -m fra_keras.data.shard --source folder --data-dir /data/vggface2/train \\
        --output /data/vggface2-shards --num-shards 1024
    python -m fra_keras.data.shard --source synthetic --output /tmp/synth --num-shards 8 \\
        --image-size 112 --num-samples 4096 --split train

Each shard is `NAME-00000-of-000NN.tfrecord` (NAME = `--name`, default the split), written under a
temporary name and renamed when complete; `NAME.features.json` beside them records the label features
and the counts. Records are `tf.train.Example`s with `image` (encoded JPEG bytes; JPEG files of a
folder are stored as they are unless `--image-size` asks for a resize) plus, for synthetic faces, the
labels (`identity`, `expression`, `attributes`, `landmarks68`, ... as int64 / float lists, flattened;
the shapes are in the JSON). Images are dealt round-robin, so every shard holds a mix of identities.

Reading: `tfrecord_dataset(pattern_or_dir)` lists the files with `Dataset.list_files` and reads them with
`interleave`, so `tf.data` auto-sharding by FILE (multi-worker training) gives each worker disjoint
files; `num_shards` / `shard_index` do the same explicitly. Have at least as many files as workers.
The FILE rewrite walks from the output back to the reader and stops at any op it does not know to
pass through (`enumerate`, `zip`, `scan`, `ignore_errors` all make it fail), so the readers here keep
to map / shuffle / repeat / batch / prefetch. Images are validated when the shards are written.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from fra_keras.data.folders import decode_image, list_images

DEFAULT_SYNTHETIC_LABELS = ("identity", "expression", "attributes", "landmarks68")
_SHARD_RE = re.compile(r"^(?P<name>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.tfrecord$")


# Names ---------------------------------------------------------------------------------------
def shard_filename(name: str, index: int, num_shards: int) -> str:
    return f"{name}-{index:05d}-of-{num_shards:05d}.tfrecord"


def features_filename(name: str) -> str:
    return f"{name}.features.json"


def find_shards(pattern_or_dir) -> List[str]:
    """Sorted TFRecord files of a folder or a glob pattern, or of a list of them; ValueError if none.

    A folder gives its files whose name contains `tfrecord` (the `NAME-*-of-*.tfrecord` shards written
    here, TFX ExampleGen's `data_tfrecord-*.gz`); a pattern gives what it matches. JSON files (the
    shards' `NAME.features.json`), hidden and `_*` files and unfinished `*.partial-*` files are skipped.
    """
    patterns = ([pattern_or_dir] if isinstance(pattern_or_dir, (str, os.PathLike))
                else list(pattern_or_dir) if isinstance(pattern_or_dir, (list, tuple)) else None)
    if not patterns or not all(isinstance(p, (str, os.PathLike)) for p in patterns):
        raise ValueError(f"pattern_or_dir={pattern_or_dir!r} must be a folder or a glob pattern of "
                         "TFRecord files, or a list of them")
    files = set()
    for pattern in map(os.fspath, patterns):
        glob = os.path.join(pattern, "*tfrecord*") if tf.io.gfile.isdir(pattern) else pattern
        files.update(f for f in tf.io.gfile.glob(glob) if _is_record_file(f))
    if not files:
        raise ValueError(f"pattern_or_dir={pattern_or_dir!r} matches no TFRecord file; expected a folder "
                         "of *.tfrecord shards (python -m fra_keras.data.shard) or a glob pattern")
    return sorted(files)


def _is_record_file(path: str) -> bool:
    name = os.path.basename(path.rstrip("/"))
    return not (name.startswith((".", "_")) or name.endswith(".json") or ".partial-" in name)


def has_shards(data_dir: str) -> bool:
    """True if `data_dir` is a folder holding TFRecord files (a name containing `tfrecord`, as in
    `find_shards`), or a glob pattern of such files."""
    if not data_dir:
        return False
    data_dir = os.fspath(data_dir)
    if tf.io.gfile.isdir(data_dir):
        return bool(tf.io.gfile.glob(os.path.join(data_dir, "*tfrecord*")))
    if any(c in data_dir for c in "*?["):
        return any("tfrecord" in os.path.basename(f) for f in tf.io.gfile.glob(data_dir))
    return False


# Examples ------------------------------------------------------------------------------------
def _feature(value: np.ndarray) -> tf.train.Feature:
    value = np.asarray(value)
    if value.dtype.kind in "biu":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=value.astype(np.int64).ravel()))
    if value.dtype.kind == "f":
        return tf.train.Feature(float_list=tf.train.FloatList(value=value.astype(np.float32).ravel()))
    if value.dtype.kind in "SO":
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[bytes(v) for v in value.ravel()]))
    raise ValueError(f"label of dtype {value.dtype} cannot be stored in a tf.train.Example")


def make_example(image_bytes: bytes, labels: Optional[Dict[str, np.ndarray]] = None) -> bytes:
    """A serialized `tf.train.Example` with `image` (encoded bytes) and flattened label features."""
    feats = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes]))}
    for key, value in (labels or {}).items():
        feats[key] = _feature(value)
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def _label_spec(labels: Dict[str, np.ndarray]) -> Dict[str, dict]:
    spec = {}
    for key, value in labels.items():
        value = np.asarray(value)
        kind = "int64" if value.dtype.kind in "biu" else "float32" if value.dtype.kind == "f" else "string"
        spec[key] = {"dtype": str(value.dtype), "kind": kind, "shape": list(value.shape)}
    return spec


# Writing -------------------------------------------------------------------------------------
def write_shards(examples: Iterable[Tuple[bytes, Dict[str, np.ndarray]]], output: str, num_shards: int,
                 name: str = "train", overwrite: bool = False, extra_info: Optional[dict] = None) -> dict:
    """Deal (image_bytes, labels) pairs round-robin into `num_shards` TFRecord files, atomically.

    Returns a summary dict (also written to `NAME.features.json`): files, num_examples, per-shard
    counts, label spec.
    """
    if not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards={num_shards!r} must be a positive integer")
    tf.io.gfile.makedirs(output)
    old = tf.io.gfile.glob(os.path.join(output, f"{name}-*-of-*.tfrecord"))
    if old and not overwrite:
        raise ValueError(f"output={output!r} already holds {len(old)} '{name}-*' shards; pass "
                         "overwrite=True (--overwrite) or choose another --output / --name")
    finals = [os.path.join(output, shard_filename(name, k, num_shards)) for k in range(num_shards)]
    temps = [os.path.join(output, f"{name}-{k:05d}-of-{num_shards:05d}.partial-{os.getpid()}")
             for k in range(num_shards)]
    writers = [tf.io.TFRecordWriter(t) for t in temps]
    counts = [0] * num_shards
    spec = None
    n = 0
    try:
        for image_bytes, labels in examples:
            if spec is None:
                spec = _label_spec(labels or {})
            writers[n % num_shards].write(make_example(image_bytes, labels))
            counts[n % num_shards] += 1
            n += 1
    except BaseException:
        for w, t in zip(writers, temps):
            w.close()
            if tf.io.gfile.exists(t):
                tf.io.gfile.remove(t)
        raise
    for w in writers:
        w.close()
    for f in old:
        if f not in finals:
            tf.io.gfile.remove(f)
    for t, f in zip(temps, finals):
        tf.io.gfile.rename(t, f, overwrite=True)
    summary = {"name": name, "num_shards": num_shards, "num_examples": n, "counts": counts,
               "files": [os.path.basename(f) for f in finals], "labels": spec or {}}
    summary.update(extra_info or {})
    info_path = os.path.join(output, features_filename(name))
    tmp = f"{info_path}.partial-{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(summary, indent=2) + "\n")
    tf.io.gfile.rename(tmp, info_path, overwrite=True)
    return summary


def _is_jpeg(contents):
    return tf.equal(tf.strings.substr(contents, 0, 2), b"\xff\xd8")


def folder_examples(data_dir: str, image_size: Optional[int] = None, num_samples: Optional[int] = None,
                    quality: int = 95, report: Optional[dict] = None):
    """(jpeg_bytes, {}) for every decodable image of a folder, in sorted path order.

    Each file is decoded once (to validate it); JPEG files are passed through unchanged when no resize
    is asked, others are re-encoded as JPEG. Undecodable files are skipped; their paths are put in
    `report["skipped"]` (and the total in `report["total"]`) once the iteration is over.
    """
    paths = list_images(data_dir)
    if num_samples:
        paths = paths[:num_samples]

    def encode(index, path):
        contents = tf.io.read_file(path)
        image = decode_image(contents, image_size)
        if image_size is None:
            out = tf.cond(_is_jpeg(contents), lambda: contents,
                          lambda: tf.io.encode_jpeg(image, quality=quality, chroma_downsampling=False))
        else:
            out = tf.io.encode_jpeg(image, quality=quality, chroma_downsampling=False)
        return index, out, tf.shape(image)   # the shape keeps the validating decode in the graph

    ds = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64),
                                             tf.constant(paths, tf.string)))
    ds = ds.map(encode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
    seen = set()
    for index, contents, _ in ds.as_numpy_iterator():
        seen.add(int(index))
        yield contents, {}
    if report is not None:
        report["total"] = len(paths)
        report["skipped"] = [p for i, p in enumerate(paths) if i not in seen]


def synthetic_examples(image_size: int = 112, num_samples: int = 1024, split: str = "train", seed: int = 0,
                       labels: Sequence[str] = DEFAULT_SYNTHETIC_LABELS, quality: int = 95):
    """(jpeg_bytes, labels) for `num_samples` synthetic faces (fra_keras.data.synthetic)."""
    from fra_keras.data.synthetic import synthetic_dataset

    ds = synthetic_dataset(image_size=image_size, seed=seed, split=split, num_samples=num_samples,
                           keys=("image",) + tuple(labels))

    def encode(element):
        element = dict(element)
        element["image"] = tf.io.encode_jpeg(element["image"], quality=quality, chroma_downsampling=False)
        return element

    ds = ds.map(encode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    for element in ds.as_numpy_iterator():
        yield element["image"], {k: np.asarray(element[k]) for k in labels}


# Reading -------------------------------------------------------------------------------------
def read_label_spec(files: Sequence[str]) -> Dict[str, dict]:
    """Label spec of shards: from `NAME.features.json` beside them, else from the first record."""
    m = _SHARD_RE.match(os.path.basename(files[0]))
    if m:
        info = os.path.join(os.path.dirname(files[0]), features_filename(m.group("name")))
        if tf.io.gfile.exists(info):
            with tf.io.gfile.GFile(info) as f:
                return json.load(f).get("labels", {})
    spec = {}
    for record in tf.data.TFRecordDataset(files[:1]).take(1):
        example = tf.train.Example.FromString(record.numpy())
        for key, feat in example.features.feature.items():
            if key == "image":
                continue
            kind = feat.WhichOneof("kind")
            values = getattr(feat, kind).value
            spec[key] = {"kind": {"int64_list": "int64", "float_list": "float32"}.get(kind, "string"),
                         "dtype": {"int64_list": "int64", "float_list": "float32"}.get(kind, "string"),
                         "shape": [len(values)]}
    return spec


def count_records(pattern_or_dir: str) -> int:
    """Number of records in shards: from `NAME.features.json` when it lists exactly these files,
    else by reading them (fast: records are not parsed)."""
    files = find_shards(pattern_or_dir)
    names = {}
    for f in files:
        m = _SHARD_RE.match(os.path.basename(f))
        if not m:
            names = None
            break
        names.setdefault((os.path.dirname(f), m.group("name")), []).append(os.path.basename(f))
    if names:
        total = 0
        for (folder, name), found in names.items():
            info = os.path.join(folder, features_filename(name))
            if not tf.io.gfile.exists(info):
                break
            with tf.io.gfile.GFile(info) as fh:
                summary = json.load(fh)
            if sorted(summary.get("files", [])) != sorted(found):
                break
            total += int(summary["num_examples"])
        else:
            return total
    return int(tf.data.TFRecordDataset(files).reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def tfrecord_dataset(pattern_or_dir: str, *, labels: Union[bool, Sequence[str]] = False,
                     image_size: Optional[int] = None, shuffle: bool = True, seed: int = 0,
                     shuffle_buffer: int = 1024, repeat: bool = False, cycle_length: Optional[int] = None,
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic: Optional[bool] = None,
                     num_shards: int = 1, shard_index: int = 0,
                     skip_unreadable: bool = False, image_key: str = "image") -> tf.data.Dataset:
    """Decoded uint8 (H, W, 3) images from TFRecord shards; with `labels`, dicts {"image", labels...}.

    Args:
      pattern_or_dir: a folder, a glob pattern, or a list of them (`find_shards`). Files named `*.gz`
        are read as GZIP (TFX ExampleGen's output).
      labels: False (images only), True (every label feature) or a list of label names.
      image_size: resize to (image_size, image_size) after decoding.
      shuffle: shuffle the file order (`list_files`, reshuffled each pass) and the records
        (`shuffle_buffer` serialized records, before decoding).
      repeat: repeat forever (before decoding).
      num_shards, shard_index: explicit per-worker split of the *files* (disjoint, complete). Under a
        multi-worker strategy the same happens automatically (auto-shard policy FILE).
      skip_unreadable: drop records whose image cannot be decoded (logged by TF) instead of failing.
        Off by default: `ignore_errors` blocks tf.data's FILE auto-sharding, and shards written by
        this module hold only images that decoded at write time.
      image_key: the feature holding the encoded image.
    """
    files = find_shards(pattern_or_dir)
    if num_shards > 1 and len(files) < num_shards:
        raise ValueError(f"{len(files)} TFRecord files in {pattern_or_dir!r} cannot be split across "
                         f"num_shards={num_shards} workers; write at least that many shards")
    spec = {}
    if labels:
        spec = read_label_spec(files)
        if labels is not True:
            missing = [k for k in labels if k not in spec]
            if missing:
                raise ValueError(f"labels={list(labels)!r}: {missing} not in the shards; "
                                 f"available: {sorted(spec)}")
            spec = {k: spec[k] for k in labels}
    features = {image_key: tf.io.FixedLenFeature([], tf.string)}
    for key, s in spec.items():
        size = int(np.prod(s["shape"])) if s["shape"] else 1
        dtype = {"int64": tf.int64, "float32": tf.float32}.get(s["kind"], tf.string)
        features[key] = tf.io.FixedLenFeature([size], dtype)

    # Shard the sorted file list BEFORE shuffling it: each worker then gets a disjoint set of files
    # whatever its seed (shuffle-then-shard needs the same order on every worker). tf.data's FILE
    # auto-sharding also cuts here, right after the file-name source.
    ds = tf.data.Dataset.from_tensor_slices(sorted(files))
    if num_shards > 1:
        ds = ds.shard(num_shards, shard_index)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    cycle = cycle_length or min(len(files), 16)
    reader = tf.data.TFRecordDataset
    if any(f.endswith(".gz") for f in files):
        def reader(path):
            gzip = tf.strings.regex_full_match(path, r".*\.gz")
            return tf.data.TFRecordDataset(path, compression_type=tf.where(gzip, "GZIP", ""))
    ds = ds.interleave(reader, cycle_length=cycle, block_length=1,
                       num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    if shuffle and shuffle_buffer and shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    def parse(record):
        ex = tf.io.parse_single_example(record, features)
        image = decode_image(ex[image_key], image_size)
        if not spec:
            return image
        out = {"image": image}
        for key, s in spec.items():
            value = tf.reshape(ex[key], s["shape"])
            if s["kind"] != "string" and s["dtype"] not in ("int64", "float32"):
                value = tf.cast(value, tf.as_dtype(s["dtype"]))
            out[key] = value
        return out

    ds = ds.map(parse, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    return ds.ignore_errors(log_warning=True) if skip_unreadable else ds


# CLI -----------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fra_keras.data.shard",
        description="Pack an image folder or synthetic faces into TFRecord shards "
                    "(NAME-00000-of-000NN.tfrecord) for fast multi-worker reading. Rule of thumb: "
                    "100-200 MB per shard, and at least as many shards as training hosts.")
    parser.add_argument("--source", choices=("folder", "synthetic"), required=True)
    parser.add_argument("--data-dir", help="image folder (--source folder)")
    parser.add_argument("--output", required=True, help="folder that receives the shards")
    parser.add_argument("--num-shards", type=int, required=True)
    parser.add_argument("--image-size", type=int, default=None,
                        help="resize to SxS before encoding (synthetic default 112; folder: keep size)")
    parser.add_argument("--num-samples", type=int, default=None,
                        help="synthetic: number of faces (default 1024); folder: first N images only")
    parser.add_argument("--split", default="train", help="synthetic split (train / val / test)")
    parser.add_argument("--name", default=None, help="shard name prefix (default: the split)")
    parser.add_argument("--labels", default=",".join(DEFAULT_SYNTHETIC_LABELS),
                        help="synthetic label keys to store, comma separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality of re-encoded images")
    parser.add_argument("--overwrite", action="store_true", help="replace existing NAME-* shards")
    args = parser.parse_args(argv)
    name = args.name or args.split
    try:
        if args.source == "folder":
            if not args.data_dir:
                parser.error("--source folder needs --data-dir")
            report = {}
            examples = folder_examples(args.data_dir, args.image_size, args.num_samples, args.quality,
                                       report=report)
            summary = write_shards(examples, args.output, args.num_shards, name, args.overwrite,
                                   extra_info={"source": os.path.abspath(args.data_dir)})
            skipped = report.get("skipped", [])
            print(f"{args.data_dir}: {report.get('total', 0)} image files, {summary['num_examples']} "
                  f"written, {len(skipped)} skipped (cannot be decoded)")
            for p in skipped[:10]:
                print(f"  skipped: {p}")
        else:
            labels = tuple(k for k in args.labels.split(",") if k)
            examples = synthetic_examples(args.image_size or 112, args.num_samples or 1024, args.split,
                                          args.seed, labels, args.quality)
            summary = write_shards(examples, args.output, args.num_shards, name, args.overwrite,
                                   extra_info={"source": "synthetic", "seed": args.seed,
                                               "split": args.split})
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {summary['num_examples']} examples into {args.num_shards} shards under "
          f"{args.output} ({shard_filename(name, 0, args.num_shards)} ...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
