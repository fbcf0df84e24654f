"""fra_keras.data.tfds_builders: every builder built offline from data written here, loaded back and
compared with its source (the renderer for synthetic faces; the readers, and through them the
synthetic faces the format writers stored, for the real layouts). About 30 s on 2 loaded cores.
"""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from fra_keras.data import readers, tfds_builders, writers  # noqa: F401  (importing registers the builders)
from fra_keras.data.synthetic import SAMPLE_KEYS, render_sample

SIZE = 64
#: layout -> samples per split written by fra_keras.data.writers.write_synthetic
COUNTS = {
    "rafdb": {"train": 3, "test": 2},
    "affectnet": {"train": 3, "validation": 2},
    "ferplus": {"train": 6, "validation": 2, "test": 2},   # train row 5 gets votes the rules drop
    "fer2013": {"train": 2, "validation": 2, "test": 2},
    "celeba": {"train": 2, "validation": 2, "test": 2},
    "300w": {"train": 3, "test": 2},
    "wflw": {"train": 2, "test": 2},
}
#: builder name -> (layout, {tfds split: reader call on the layout root})
READS = {
    "fra_rafdb": ("rafdb", {s: (lambda r, s=s: readers.read_rafdb(r, s)) for s in ("train", "test")}),
    "fra_affectnet": ("affectnet", {"train": lambda r: readers.read_affectnet(r, "training.csv"),
                                    "validation": lambda r: readers.read_affectnet(r, "validation.csv")}),
    "fra_ferplus": ("ferplus", {s: (lambda r, s=s: readers.read_ferplus(r, s))
                                for s in ("train", "validation", "test")}),
    "fra_fer2013": ("fer2013", {s: (lambda r, s=s: readers.read_fer2013(os.path.join(r, "fer2013.csv"), s))
                                for s in ("train", "validation", "test")}),
    "fra_celeba": ("celeba", {s: (lambda r, s=s: readers.read_celeba(r, s)) for s in ("train", "validation", "test")}),
    "fra_300w": ("300w", {"train": lambda r: readers.read_300w(r, "train"),
                          "challenging": lambda r: readers.read_300w(r, "challenging")}),
    "fra_wflw": ("wflw", {s: (lambda r, s=s: readers.read_wflw(os.path.join(
        r, tfds_builders.WFLW_LIST.format(split=s)))) for s in ("train", "test")}),
}


@pytest.fixture(scope="module")
def manual(tmp_path_factory):
    """One manual folder holding every layout under its usual name (manual/rafdb, manual/celeba, ...)."""
    root = tmp_path_factory.mktemp("tfds_manual")
    for layout, counts in COUNTS.items():
        writers.write_synthetic(layout, root / layout, counts, seed=0, image_size=SIZE)
    return root


def prepare(name, data_dir, manual_dir, **kwargs):
    builder = tfds.builder(name, data_dir=str(data_dir), **kwargs)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual_dir), try_download_gcs=False))
    return builder


def test_names_are_registered_by_import():
    assert tfds_builders.BUILDER_NAMES == ("fra_synthetic_faces", "fra_rafdb", "fra_affectnet", "fra_ferplus",
                                           "fra_fer2013", "fra_celeba", "fra_300w", "fra_wflw")
    for name in tfds_builders.BUILDER_NAMES:
        cls = tfds.builder_cls(name)
        assert cls.__module__.startswith("fra_keras.data.") and cls.name == name
    configs = tfds.builder_cls("fra_synthetic_faces").builder_configs
    assert sorted(configs, key=int) == ["64", "112", "224"]
    assert (configs["64"].image_size, configs["64"].num_train) == (64, 800)
    assert tfds.builder_cls("fra_300w").MANUAL_DOWNLOAD_INSTRUCTIONS


def test_synthetic_faces_equal_the_renderer(tmp_path):
    name = "fra_synthetic_faces/64/num_train=3,num_validation=2,num_test=2"
    splits, info = tfds.load(name, split=["train", "validation", "test"], data_dir=str(tmp_path),
                             try_gcs=False, with_info=True)
    assert info.config_name == "64_n3-2-2_seed0"
    assert info.features["expression"].names == list(readers.RAFDB_CLASSES)
    assert info.features["image"].shape == (SIZE, SIZE, 3)
    identities = {}
    for split, ds in zip(("train", "validation", "test"), splits):
        examples = list(tfds.as_numpy(ds))
        assert sorted(int(e["index"]) for e in examples) == list(range(info.splits[split].num_examples))
        for e in examples:
            source = render_sample(int(e["index"]), seed=0, image_size=SIZE, split=split)
            for key in SAMPLE_KEYS:
                np.testing.assert_array_equal(e[key], source[key], err_msg=f"{split} {e['index']} {key}")
        identities[split] = {int(e["identity"]) for e in examples}
    assert [info.splits[s].num_examples for s in ("train", "validation", "test")] == [3, 2, 2]
    assert not identities["train"] & identities["validation"] and not identities["train"] & identities["test"]


def test_synthetic_config_arguments_are_checked():
    config = tfds_builders.synthetic_faces_config(112, 10, 5, 5, seed=3)
    assert (config.name, config.image_size, config.num_validation) == ("112_n10-5-5_seed3", 112, 5)
    with pytest.raises(ValueError, match="num_train=0"):
        tfds_builders.synthetic_faces_config(64, num_train=0)
    with pytest.raises(ValueError, match="image_size"):
        tfds_builders.synthetic_faces_config(16)


def _check_against_reader(builder, split, records, root):
    examples = list(tfds.as_numpy(builder.as_dataset(split=split)))
    assert builder.info.splits[split].num_examples == len(records) == len(examples) > 0
    if records.images is not None:
        keys = [f"{os.path.basename(records.paths[i])}:{records.lines[i]}" for i in range(len(records))]
    else:
        keys = [os.path.relpath(p, root).replace(os.sep, "/") for p in records.paths]
    index = {k: i for i, k in enumerate(keys)}
    assert sorted(e["image/filename"].decode() for e in examples) == sorted(keys)
    for e in examples:
        i = index[e["image/filename"].decode()]
        source = records.load(i)
        assert e["image"].shape == source["image"].shape and e["image"].dtype == np.uint8
        diff = np.abs(e["image"].astype(np.int32) - source["image"].astype(np.int32))
        assert diff.mean() < 2.0, f"{split} {keys[i]}: images differ by {diff.mean():.2f} on average"
        for key, value in source.items():
            if key == "image" or key not in e:
                continue
            np.testing.assert_array_equal(e[key], value, err_msg=f"{split} {keys[i]} {key}")
        for key in ("valence", "arousal", "face_box", "votes", "face_rect", "wflw_attributes"):
            if key in records.labels:
                np.testing.assert_allclose(e[key], records.labels[key][i], rtol=1e-6, err_msg=key)
    return examples


@pytest.mark.parametrize("name", sorted(READS))
def test_manual_builders_match_the_readers(name, manual, tmp_path):
    layout, reads = READS[name]
    root = str(manual / layout)
    # rafdb gets the layout root itself as manual_dir, the others the shared folder (found by name).
    builder = prepare(name, tmp_path, root if name == "fra_rafdb" else manual)
    assert sorted(builder.info.splits) == sorted(reads)
    for split, read in reads.items():
        _check_against_reader(builder, split, read(root), root)


def test_labels_trace_back_to_the_synthetic_faces(manual, tmp_path):
    """Spot checks against the renderer itself, not only the readers."""
    rafdb = prepare("fra_rafdb", tmp_path, manual)
    for e in tfds.as_numpy(rafdb.as_dataset(split="test")):
        n = int(e["image/filename"].decode().split("_")[1])          # Image/aligned/test_0001_aligned.jpg
        assert e["expression"] == render_sample(n - 1, 0, SIZE, "test")["expression"]
    celeba = prepare("fra_celeba", tmp_path, manual)
    for e in tfds.as_numpy(celeba.as_dataset(split="validation")):
        k = int(os.path.splitext(os.path.basename(e["image/filename"].decode()))[0])   # 000003.jpg
        source = render_sample(k - 1 - COUNTS["celeba"]["train"], 0, SIZE, "validation")
        np.testing.assert_array_equal(e["attributes"], (source["attributes"] == 1).astype(np.int8))
        assert e["identity"] == source["identity"]
    w300 = prepare("fra_300w", tmp_path, manual)
    for e in tfds.as_numpy(w300.as_dataset(split="challenging")):
        n = int(e["image/filename"].decode().split("_")[-1].split(".")[0])   # ibug/image_0001.png
        np.testing.assert_allclose(e["landmarks"], render_sample(n - 1, 0, SIZE, "test")["landmarks68"], atol=6e-4)
    assert w300.info.features["image"].shape == (None, None, 3)


def test_ferplus_drops_rows_like_the_reader(manual, tmp_path):
    builder = prepare("fra_ferplus", tmp_path, manual)
    assert builder.info.splits["train"].num_examples == COUNTS["ferplus"]["train"] - 1
    assert builder.info.features["expression"].names == list(readers.FERPLUS_CLASSES)


def test_missing_layout_names_what_to_put_where(tmp_path):
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    (manual_dir / "unrelated.txt").write_text("x")
    with pytest.raises(readers.MissingFileError, match="WFLW_annotations"):
        prepare("fra_wflw", tmp_path / "data", manual_dir)
    assert not (tmp_path / "data" / "fra_wflw" / "98" / "1.0.0").exists()
