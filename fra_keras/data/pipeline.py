"""`pretraining_dataset`: batches of two augmented views for FRA pre-training.

Sources, in order of precedence:

1. `data_dir` (argument, else `config.data_dir`) holding `*tfrecord*` files, or a list of folders /
   glob patterns -> TFRecord shards (`fra_keras.data.shard`); auto-shard policy FILE (each worker reads
   its own files).
2. `data_dir` otherwise -> an image folder (`fra_keras.data.folders`); auto-shard policy DATA.
3. No `data_dir` -> built-in synthetic faces: `config.synthetic_samples` distinct faces rendered once at
   `config.synthetic_size`, cached in memory, reshuffled and re-augmented every epoch; policy DATA.

Then: shuffle -> repeat -> per-element seed -> two views (parallel map) -> batch(drop_remainder)
-> prefetch. Two paths (`config.augment_on_device`, `fra_keras.data.device_augment`):

* CPU path: every augmentation per image in the parallel map; the batches are normalised by one
  XLA-compiled map (one fused pass instead of two broadcasting ops per view). Elements are
  {"view1": (B, S, S, 3), "view2": (B, S, S, 3)} float32, normalised.
* both paths add {"view1_geometry": (B, 5), "view2_geometry": (B, 5)} float32 (`augment.crop_geometry`:
  each view's crop box in the source image and its flip) when `config.cluster_targets == "cross_view"`.
* on-device path: the map only crops and resizes (`device_augment.cropped_views`); elements are
  {"view1": uint8 (B, S, S, 3), "view2": uint8, "view1_params": {...}, "view2_params": {...}} and
  `FRA.train_step` applies the rest (`device_augment.augment_views`).

Reproducibility: element seeds are drawn by a sequential, op-seeded `tf.random.uniform` (seeded by
`config.seed`), and every view is a stateless function of its image and seed; shuffles are seeded too.
A freshly built pipeline therefore yields the same batches. (A counter from `enumerate` / `scan` would
do the same but blocks tf.data's FILE auto-sharding, which must find the file reader.)
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from fra_keras.data import device_augment
from fra_keras.data.augment import needs_geometry, normalize, two_views, two_views_with_geometry
from fra_keras.data.folders import image_folder_dataset, list_images
from fra_keras.data.shard import has_shards, tfrecord_dataset

AUTO = tf.data.AUTOTUNE
DEFAULT_RECORD_SHUFFLE = 8192     # serialized records (about 10-30 kB each at 224 px)
DEFAULT_IMAGE_SHUFFLE = 1024      # decoded synthetic images


def synthetic_source(config, num_shards: int = 1, shard_index: int = 0,
                     num_parallel_calls=AUTO) -> tf.data.Dataset:
    """`config.synthetic_samples` synthetic faces at `config.synthetic_size`, framed as
    `config.synthetic_profile`, uint8, cached in memory (rendered once, during the first pass)."""
    from fra_keras.data.synthetic import synthetic_dataset   # imported late: optional module

    ds = synthetic_dataset(image_size=config.synthetic_size, seed=config.seed, split="train",
                           num_samples=config.synthetic_samples, keys=("image",),
                           num_parallel_calls=num_parallel_calls, deterministic=True,
                           profile=config.synthetic_profile)
    ds = ds.map(lambda e: e["image"] if isinstance(e, dict) else e)
    if num_shards > 1:
        ds = ds.shard(num_shards, shard_index)
    return ds.cache()


def normalized_batch(config):
    """{"view1", "view2"} float32 batches in [0, 1] -> normalised (`augment.normalize`), as one
    XLA-compiled function: a single fused pass over the batch, about 5x cheaper on CPU than TF's
    broadcasting kernels (docs/data_pipeline.md, "Throughput")."""

    @tf.function(jit_compile=True, autograph=False)
    def fn(batch):
        return {key: normalize(value, config) if key in device_augment.VIEWS else value
                for key, value in batch.items()}

    return fn


def num_examples(data_dir: str) -> int:
    """Images in an image folder or records in TFRecord shards (for steps_per_epoch)."""
    from fra_keras.data.shard import count_records

    return count_records(data_dir) if has_shards(data_dir) else len(list_images(data_dir))


def pretraining_dataset(config, data_dir: Optional[str] = None, *, batch_size: Optional[int] = None,
                        shuffle_buffer: Optional[int] = None, repeat: bool = True,
                        deterministic: Optional[bool] = None, input_context=None,
                        num_parallel_calls=AUTO, shuffle: bool = True, image_key: str = "image",
                        augment_on_device=None, prefetch_to_device: Optional[str] = None) -> tf.data.Dataset:
    """Two-view batches for FRA pre-training (see the module docstring).

    Args:
      config: `FRAConfig` (image_size, batch_size, augmentation fields, mean/std, data_dir,
        synthetic_size, synthetic_samples, seed).
      data_dir: overrides `config.data_dir`: an image folder, a folder of TFRecord shards, or a list of
        folders / glob patterns of TFRecord files (`shard.find_shards`).
      batch_size: GLOBAL batch (default `config.batch_size`); batches drop the remainder. With
        `input_context` (`strategy.distribute_datasets_from_function`) the per-replica batch is used.
      shuffle_buffer: records (shards) or images (synthetic) in the shuffle buffer; folders always
        shuffle the full file list. None: 8192 records / min(1024, synthetic_samples) images.
      repeat: repeat forever (use `steps_per_epoch`); False gives one pass (synthetic: one pass over
        the cached faces).
      deterministic: order of parallel maps (None: tf.data default, deterministic).
      input_context: a `tf.distribute.InputContext`; the source is then split per input pipeline
        explicitly and auto-sharding is turned off.
      shuffle: False reads the source in a fixed order (evaluation batches: the same on every call).
      image_key: the tf.Example feature holding the encoded image (TFRecord files).
      augment_on_device: "auto" | "true" | "false" (or a bool); None: `config.augment_on_device`.
        Resolved by `device_augment.resolve_augment_on_device` ("auto": on a GPU / TPU host).
      prefetch_to_device: e.g. "/gpu:0": end with `tf.data.experimental.prefetch_to_device`, so that
        the copy of the next batch to the device overlaps the current step. Only for training on that
        one device without a `tf.distribute` strategy (strategies place batches themselves).
    """
    data_dir = data_dir or config.data_dir
    global_batch = int(batch_size or config.batch_size)
    if global_batch < 1:
        raise ValueError(f"batch_size={global_batch!r} must be a positive integer")
    num_shards, shard_index, batch = 1, 0, global_batch
    if input_context is not None:
        num_shards = input_context.num_input_pipelines
        shard_index = input_context.input_pipeline_id
        batch = input_context.get_per_replica_batch_size(global_batch)

    policy = tf.data.experimental.AutoShardPolicy
    if data_dir and (isinstance(data_dir, (list, tuple)) or has_shards(data_dir)):
        ds = tfrecord_dataset(data_dir, shuffle=shuffle, seed=config.seed, image_key=image_key,
                              shuffle_buffer=shuffle_buffer or DEFAULT_RECORD_SHUFFLE, repeat=repeat,
                              num_parallel_calls=num_parallel_calls, deterministic=deterministic,
                              num_shards=num_shards, shard_index=shard_index)
        shard_policy = policy.FILE
    elif data_dir:
        ds = image_folder_dataset(data_dir, shuffle=shuffle, seed=config.seed, skip_unreadable=True,
                                  paths=list_images(data_dir), num_shards=num_shards,
                                  shard_index=shard_index, num_parallel_calls=num_parallel_calls,
                                  deterministic=deterministic)
        if repeat:
            ds = ds.repeat()
        shard_policy = policy.DATA
    else:
        ds = synthetic_source(config, num_shards, shard_index, num_parallel_calls)
        buffer = min(int(shuffle_buffer or DEFAULT_IMAGE_SHUFFLE), int(config.synthetic_samples))
        if shuffle:
            ds = ds.shuffle(max(buffer, 1), seed=config.seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        shard_policy = policy.DATA

    # Per-element seeds: a sequential stateful draw (deterministic order), pass-through for auto-shard.
    op_seed = int(config.seed) * 1009 + shard_index + 1

    def attach_seed(image):
        return image, tf.random.uniform([2], maxval=tf.int64.max, dtype=tf.int64, seed=op_seed)

    ds = ds.map(attach_seed)
    if device_augment.resolve_augment_on_device(
            config.augment_on_device if augment_on_device is None else augment_on_device):
        ds = ds.map(lambda image, seed: device_augment.cropped_views(image, config, seed),
                    num_parallel_calls=num_parallel_calls, deterministic=deterministic)
        ds = ds.batch(batch, drop_remainder=True)
    else:
        def views(image, seed):
            if not needs_geometry(config):
                view1, view2 = two_views(image, config, seed=seed, normalise=False)
                return {"view1": view1, "view2": view2}
            out = {}
            for view, (pixels, geometry) in zip(device_augment.VIEWS,
                                                two_views_with_geometry(image, config, seed, normalise=False)):
                out[view] = pixels
                out[view + device_augment.GEOMETRY_SUFFIX] = geometry
            return out

        ds = ds.map(views, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
        ds = ds.batch(batch, drop_remainder=True)
        ds = ds.map(normalized_batch(config), num_parallel_calls=num_parallel_calls,
                    deterministic=deterministic)
    ds = ds.prefetch(AUTO)

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (policy.OFF if input_context is not None
                                                         else shard_policy)
    if deterministic is not None:
        options.deterministic = bool(deterministic)
    ds = ds.with_options(options)
    if prefetch_to_device:
        ds = ds.apply(tf.data.experimental.prefetch_to_device(prefetch_to_device))
    return ds
