"""Image folders, TFRecord shards and `pretraining_dataset` (fra_keras.data)."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from harness import tiny_config

import fra_keras.data as fdata
from fra_keras.data import folders, shard
from fra_keras.data.pipeline import pretraining_dataset



def _png_bytes(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def face_folder(tmp_path_factory):
    """Nested folder: 6 RGB JPEGs (two identities, mixed-case extensions), 1 RGB PNG, 1 grey PNG,
    1 RGBA PNG, 1 corrupt .jpg, and a text file that is not an image."""
    root = tmp_path_factory.mktemp("faces")
    rs = np.random.RandomState(0)
    arrays = {}
    for ident in ("id_a", "id_b"):
        (root / "train" / ident).mkdir(parents=True)
        for k, ext in enumerate((".jpg", ".JPG", ".jpeg")):
            path = root / "train" / ident / f"img{k}{ext}"
            arr = rs.randint(0, 256, (40 + k, 36, 3)).astype(np.uint8)
            Image.fromarray(arr).save(path, format="JPEG", quality=95)
            arrays[str(path)] = arr
    (root / "extra" / "deeper").mkdir(parents=True)
    rgb = rs.randint(0, 256, (30, 30, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(root / "extra" / "rgb.png")
    grey = rs.randint(0, 256, (20, 24)).astype(np.uint8)
    Image.fromarray(grey, mode="L").save(root / "extra" / "deeper" / "grey.PNG")
    rgba = rs.randint(0, 256, (22, 22, 4)).astype(np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(root / "extra" / "rgba.png")
    (root / "extra" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (root / "extra" / "notes.txt").write_text("not an image")
    return {"root": str(root), "rgb": rgb, "grey": grey, "rgba": rgba, "jpegs": arrays,
            "corrupt": str(root / "extra" / "corrupt.jpg")}


# Folders ------------------------------------------------------------------------------------
def test_list_images_nested_sorted_case_insensitive(face_folder):
    paths = folders.list_images(face_folder["root"])
    assert len(paths) == 10                                  # 6 jpg + 3 png + 1 corrupt; no .txt
    assert paths == sorted(paths)
    assert any(p.endswith(".JPG") for p in paths) and any(p.endswith("grey.PNG") for p in paths)
    assert not any(p.endswith(".txt") for p in paths)


def test_folder_errors_name_the_path(tmp_path, face_folder):
    missing = str(tmp_path / "nope")
    with pytest.raises(ValueError, match="data_dir=.*nope.*does not exist"):
        folders.list_images(missing)
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="data_dir=.*empty.*no .jpg"):
        folders.image_folder_dataset(str(empty))
    a_file = os.path.join(face_folder["root"], "extra", "rgb.png")
    with pytest.raises(ValueError, match="data_dir=.*rgb.png.*is a file"):
        folders.list_images(a_file)
    with pytest.raises(ValueError, match="data_dir"):
        pretraining_dataset(tiny_config(batch_size=2), missing)


def test_check_images_splits_good_and_bad(face_folder):
    assert fdata.num_examples(face_folder["root"]) == 10               # files, before decoding
    good, bad = folders.check_images(folders.list_images(face_folder["root"]))
    assert bad == [face_folder["corrupt"]]
    assert len(good) == 9


def test_folder_dataset_decodes_rgb_grey_rgba_and_skips_corrupt(face_folder):
    ds = folders.image_folder_dataset(face_folder["root"], shuffle=False)
    images = list(ds.as_numpy_iterator())
    assert len(images) == 9                                  # the corrupt file is skipped
    assert all(im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3 for im in images)
    by_shape = {im.shape: im for im in images}
    np.testing.assert_array_equal(by_shape[(30, 30, 3)], face_folder["rgb"])
    grey = by_shape[(20, 24, 3)]
    for c in range(3):
        np.testing.assert_array_equal(grey[..., c], face_folder["grey"])
    np.testing.assert_array_equal(by_shape[(22, 22, 3)], face_folder["rgba"][..., :3])
    resized = list(folders.image_folder_dataset(face_folder["root"], image_size=16).as_numpy_iterator())
    assert len(resized) == 9 and all(im.shape == (16, 16, 3) for im in resized)


def test_folder_dataset_check_warns_and_shards(face_folder):
    with pytest.warns(UserWarning, match="1 of 10 image files cannot be decoded"):
        ds = folders.image_folder_dataset(face_folder["root"], check=True, shuffle=False)
    assert len(list(ds)) == 9
    parts = [list(folders.image_folder_dataset(face_folder["root"], num_shards=2, shard_index=k,
                                               shuffle=False).as_numpy_iterator()) for k in (0, 1)]
    assert len(parts[0]) + len(parts[1]) == 9


def test_folder_cli_reports_skipped(face_folder, capsys):
    assert folders.main([face_folder["root"]]) == 0
    out = capsys.readouterr().out
    assert "10 image files, 9 decodable, 1 skipped" in out and "corrupt.jpg" in out


# Shards -------------------------------------------------------------------------------------
def _labelled_examples(n, rs):
    images, labels = [], []
    for i in range(n):
        images.append(rs.randint(0, 256, (12, 10, 3)).astype(np.uint8))
        labels.append({"identity": np.int64(i), "expression": np.int32(i % 7),
                       "attributes": rs.randint(-1, 2, 40).astype(np.int8),
                       "landmarks68": rs.rand(68, 2).astype(np.float32) * 100,
                       "visible68": rs.rand(68) > 0.3})
    return images, labels


@pytest.fixture(scope="module")
def labelled_shards(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("shards"))
    images, labels = _labelled_examples(22, np.random.RandomState(1))
    summary = shard.write_shards(((_png_bytes(im), lab) for im, lab in zip(images, labels)), out, 4,
                                 name="train")
    return {"dir": out, "images": images, "labels": labels, "summary": summary}


def test_shards_are_named_counted_and_atomic(labelled_shards):
    names = sorted(os.listdir(labelled_shards["dir"]))
    assert names == [f"train-0000{k}-of-00004.tfrecord" for k in range(4)] + ["train.features.json"]
    assert labelled_shards["summary"]["counts"] == [6, 6, 5, 5]
    assert labelled_shards["summary"]["num_examples"] == 22
    d = labelled_shards["dir"]
    assert shard.has_shards(d) and shard.has_shards(os.path.join(d, "train-*.tfrecord"))
    assert not shard.has_shards(os.path.dirname(d)) and not shard.has_shards(None)
    assert len(shard.find_shards(os.path.join(d, "train-0000[01]-*"))) == 2
    assert fdata.num_examples(d) == 22                                 # from train.features.json
    assert shard.count_records(os.path.join(d, "train-0000[01]-*")) == 12   # subset: counted
    with pytest.raises(ValueError, match="already holds 4 'train-\\*' shards"):
        shard.write_shards(iter([]), labelled_shards["dir"], 2)


def test_shard_round_trip_images_and_labels(labelled_shards):
    ds = shard.tfrecord_dataset(labelled_shards["dir"], labels=True, shuffle=False)
    got = sorted(ds.as_numpy_iterator(), key=lambda e: int(e["identity"]))
    assert len(got) == 22
    for element, image, label in zip(got, labelled_shards["images"], labelled_shards["labels"]):
        np.testing.assert_array_equal(element["image"], image)
        for key, value in label.items():
            assert element[key].shape == np.shape(value), key
            assert element[key].dtype == np.asarray(value).dtype, key
            np.testing.assert_array_equal(element[key], value)
    images_only = list(shard.tfrecord_dataset(labelled_shards["dir"]).as_numpy_iterator())
    assert len(images_only) == 22 and images_only[0].dtype == np.uint8
    some = next(iter(shard.tfrecord_dataset(labelled_shards["dir"], labels=["expression"])))
    assert sorted(some) == ["expression", "image"]
    with pytest.raises(ValueError, match="not in the shards"):
        shard.tfrecord_dataset(labelled_shards["dir"], labels=["age"])


def _identities(ds):
    return [int(e["identity"]) for e in ds.as_numpy_iterator()]


@pytest.mark.parametrize("global_seed", [None, 7])
def test_worker_sharding_by_file_is_disjoint_and_complete(labelled_shards, global_seed):
    # Workers shuffle with their own seeds (and any global seed an application set): the split into
    # disjoint files must not depend on it (shard the file list before shuffling it).
    if global_seed is not None:
        tf.random.set_seed(global_seed)
    parts = [_identities(shard.tfrecord_dataset(labelled_shards["dir"], labels=["identity"],
                                                num_shards=2, shard_index=k, seed=k))
             for k in (0, 1)]
    assert set(parts[0]).isdisjoint(parts[1])
    assert sorted(parts[0] + parts[1]) == list(range(22))
    with pytest.raises(ValueError, match="cannot be split across num_shards=5"):
        shard.tfrecord_dataset(labelled_shards["dir"], num_shards=5)


def _auto_shard(ds, num_workers, index, policy):
    """What a multi-worker strategy does to a dataset (a private TF op: the test fails if it moves)."""
    from tensorflow.python.data.experimental.ops.distribute import _AutoShardDataset

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy
    return _AutoShardDataset(ds.with_options(options), num_workers, index)


def test_tf_data_auto_shard_by_file(labelled_shards):
    policy = tf.data.experimental.AutoShardPolicy.FILE
    parts = [_identities(_auto_shard(shard.tfrecord_dataset(labelled_shards["dir"], labels=["identity"]),
                                     2, k, policy)) for k in (0, 1)]
    assert set(parts[0]).isdisjoint(parts[1])
    assert sorted(parts[0] + parts[1]) == list(range(22))


def test_pretraining_dataset_from_shards_keeps_file_auto_sharding(labelled_shards):
    config = tiny_config(batch_size=2, image_size=32)
    ds = pretraining_dataset(config, labelled_shards["dir"], repeat=False)
    assert (ds.options().experimental_distribute.auto_shard_policy
            == tf.data.experimental.AutoShardPolicy.FILE)
    # The FILE rewrite must find the reader through the whole pipeline (it fails with NotFound on
    # zip/enumerate/scan sources): each worker then sees only its files, 11 images -> 5 batches.
    worker = _auto_shard(ds, 2, 0, tf.data.experimental.AutoShardPolicy.FILE)
    batches = list(worker)
    assert len(batches) == 5 and batches[0]["view1"].shape == (2, 32, 32, 3)


def test_shard_cli_folder_passes_jpegs_through_and_skips_corrupt(face_folder, tmp_path, capsys):
    out = str(tmp_path / "folder_shards")
    rc = shard.main(["--source", "folder", "--data-dir", face_folder["root"], "--output", out,
                     "--num-shards", "3"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "10 image files, 9 written, 1 skipped" in text and "corrupt.jpg" in text
    assert len(shard.find_shards(out)) == 3 and not [f for f in os.listdir(out) if "partial" in f]
    images = list(shard.tfrecord_dataset(out, shuffle=False).as_numpy_iterator())
    assert len(images) == 9
    # JPEG files are stored byte for byte: decoding gives exactly what decoding the file gives.
    decoded = {im.tobytes() for im in images}
    for path in face_folder["jpegs"]:
        assert folders.read_image(path).numpy().tobytes() in decoded
    assert shard.main(["--source", "folder", "--data-dir", str(tmp_path / "nope"), "--output", out,
                       "--num-shards", "1", "--overwrite"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_shard_cli_synthetic_round_trip(tmp_path):
    from fra_keras.data.synthetic import synthetic_dataset

    out = str(tmp_path / "synthetic_shards")
    assert shard.main(["--source", "synthetic", "--output", out, "--num-shards", "2",
                       "--image-size", "64", "--num-samples", "6", "--split", "train"]) == 0
    keys = shard.DEFAULT_SYNTHETIC_LABELS
    ref = list(synthetic_dataset(image_size=64, seed=0, split="train", num_samples=6,
                                 keys=("image",) + keys).as_numpy_iterator())
    got = {int(e["identity"]): e
           for e in shard.tfrecord_dataset(out, labels=True, shuffle=False).as_numpy_iterator()}
    assert sorted(got) == sorted(int(r["identity"]) for r in ref)          # 6 distinct identities
    for r in ref:
        e = got[int(r["identity"])]
        for k in keys:
            assert e[k].shape == np.shape(r[k]) and e[k].dtype == np.asarray(r[k]).dtype, k
            np.testing.assert_array_equal(e[k], r[k], err_msg=k)
        # Stored as JPEG quality 95 without chroma subsampling: exactly that encoding of the render.
        jpeg = tf.io.decode_jpeg(tf.io.encode_jpeg(r["image"], quality=95, chroma_downsampling=False))
        np.testing.assert_array_equal(e["image"], jpeg)
        assert np.abs(e["image"].astype(float) - r["image"]).mean() < 8.0


# pretraining_dataset ------------------------------------------------------------------------
def test_pretraining_dataset_on_folder(face_folder):
    config = tiny_config(image_size=32, seed=3)
    ds = pretraining_dataset(config, face_folder["root"])
    spec = ds.element_spec
    assert set(spec) == {"view1", "view2"}
    for v in spec.values():
        assert v.shape == (4, 32, 32, 3) and v.dtype == tf.float32
    assert (ds.options().experimental_distribute.auto_shard_policy
            == tf.data.experimental.AutoShardPolicy.DATA)
    first = [b for b in ds.take(3)]                          # 9 images, repeated: more than one pass
    for b in first:
        assert np.isfinite(b["view1"].numpy()).all() and not np.array_equal(b["view1"], b["view2"])
    again = next(iter(pretraining_dataset(config, face_folder["root"])))
    np.testing.assert_array_equal(first[0]["view1"], again["view1"])   # seeded: reproducible
    other = next(iter(pretraining_dataset(config.replace(seed=4), face_folder["root"])))
    assert not np.array_equal(first[0]["view1"], other["view1"])
    # config.data_dir is used when no data_dir is passed; batch_size overrides the config.
    ds2 = pretraining_dataset(config.replace(data_dir=face_folder["root"]), batch_size=3, repeat=False)
    assert [b["view1"].shape[0] for b in ds2] == [3, 3, 3]


def test_pretraining_dataset_with_input_context(face_folder):
    config = tiny_config(batch_size=8, image_size=32)
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2)
    ds = pretraining_dataset(config, face_folder["root"], input_context=ctx)
    assert ds.element_spec["view1"].shape == (4, 32, 32, 3)           # per-replica batch
    assert (ds.options().experimental_distribute.auto_shard_policy
            == tf.data.experimental.AutoShardPolicy.OFF)
    assert next(iter(ds))["view2"].shape == (4, 32, 32, 3)


def test_import_is_lazy_and_exports():
    for name in ("pretraining_dataset", "two_views", "make_view", "image_folder_dataset", "list_images",
                 "tfrecord_dataset"):
        assert callable(getattr(fdata, name)), name


def test_pretraining_dataset_on_synthetic_faces():
    config = tiny_config(synthetic_samples=8)
    ds = pretraining_dataset(config)
    s = config.image_size
    for v in ds.element_spec.values():
        assert v.shape == (4, s, s, 3) and v.dtype == tf.float32
    batches = list(ds.take(3))                               # 12 > 8 samples: crosses an epoch
    for b in batches:
        assert b["view1"].shape == (4, s, s, 3) and np.isfinite(b["view2"].numpy()).all()
    assert not np.array_equal(batches[0]["view1"], batches[1]["view1"])
