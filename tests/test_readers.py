"""Readers of the real data-set layouts, exercised through the format writers (write -> read -> compare)."""

import os

import numpy as np
import pytest

import tensorflow as tf  # noqa: E402

from fra_keras.data import readers as R  # noqa: E402
from fra_keras.data import writers as W  # noqa: E402


# --------------------------------------------------------------------------------------------------
# Hand-made samples
# --------------------------------------------------------------------------------------------------


def _smooth_image(rng, h, w):
    """A smooth random colour image (compresses well, so JPEG stays close to the original)."""
    from PIL import Image

    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def make_sample(rng, i, h=40, w=40):
    lm = rng.uniform(3.0, min(h, w) - 4.0, (68, 2)).astype(np.float32)
    attributes = rng.integers(0, 2, 40).astype(np.int8)
    attributes[[2, 10, 25]] = -1  # "unknown" columns (like the synthetic faces' untied attributes)
    return {
        "image": _smooth_image(rng, h, w),
        "landmarks68": lm,
        "visible68": rng.random(68) > 0.1,
        "landmarks5": rng.uniform(3.0, min(h, w) - 4.0, (5, 2)).astype(np.float32),
        "expression": i % 7,
        "attributes": attributes,
        "identity": i // 3,
        "pose": np.array([0.0, 0.0, 0.0], np.float32),
    }


def make_samples(n, seed=0, offset=0, **kw):
    rng = np.random.default_rng(seed)
    return [make_sample(rng, offset + i, **kw) for i in range(n)]


def as_list(ds):
    return list(ds.as_numpy_iterator())


def close_jpeg(a, b, tol=4.0):
    assert a.shape == b.shape
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean()) < tol


# --------------------------------------------------------------------------------------------------
# RAF-DB
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def rafdb(tmp_path):
    samples = {"train": make_samples(8, seed=1), "test": make_samples(6, seed=2, offset=3)}
    report = W.write_rafdb(samples, tmp_path)
    return tmp_path, samples, report


def test_rafdb_roundtrip(rafdb):
    root, samples, report = rafdb
    assert report.counts == {"train": 8, "test": 6}
    lines = open(os.path.join(root, "EmoLabel", "list_patition_label.txt")).read().splitlines()
    assert lines[0] == f"train_00001.jpg {samples['train'][0]['expression'] + 1}"
    assert lines[8].startswith("test_0001.jpg ")
    assert os.path.isfile(os.path.join(root, "Image", "aligned", "test_0006_aligned.jpg"))
    for split in ("train", "test"):
        recs = R.read_rafdb(root, split)
        assert len(recs) == len(samples[split]) and recs.num_skipped == 0
        assert recs.class_names == R.RAFDB_CLASSES
        want = np.array([s["expression"] for s in samples[split]])
        np.testing.assert_array_equal(recs.labels["expression"], want)
        np.testing.assert_array_equal(recs.class_counts(), np.bincount(want, minlength=7))
        elements = as_list(recs.dataset)
        assert set(elements[0]) == {"image", "expression"}
        for e, s in zip(elements, samples[split]):
            assert e["image"].dtype == np.uint8 and e["expression"].dtype == np.int64
            assert e["expression"] == s["expression"]
            assert close_jpeg(e["image"], s["image"])
    assert len(R.read_rafdb(root, "all")) == 14


def test_rafdb_missing_root_and_label_file(tmp_path):
    with pytest.raises(R.MissingFileError, match="nowhere"):
        R.read_rafdb(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="list_patition_label.txt"):
        R.read_rafdb(tmp_path)
    with pytest.raises(ValueError, match="split"):
        R.read_rafdb(tmp_path, split="validation")


def test_rafdb_malformed_line(rafdb):
    root, samples, _ = rafdb
    label_file = os.path.join(root, "EmoLabel", "list_patition_label.txt")
    lines = open(label_file).read().splitlines()
    lines.insert(3, "train_00004.jpg eight")  # becomes line 4
    open(label_file, "w").write("\n".join(lines) + "\n")
    with pytest.raises(R.DataFormatError) as info:
        R.read_rafdb(root, "train")
    assert info.value.line == 4 and info.value.file == label_file
    assert "list_patition_label.txt, line 4" in str(info.value)
    with pytest.warns(R.SkippedRecordsWarning, match="line 4"):
        recs = R.read_rafdb(root, "train", on_error="skip")
    assert recs.num_skipped == 1 and len(recs) == 8
    assert recs.skipped[0].line == 4


def test_rafdb_missing_image(rafdb):
    root, samples, _ = rafdb
    missing = os.path.join(root, "Image", "aligned", "train_00003_aligned.jpg")
    os.remove(missing)
    with pytest.raises(R.MissingFileError) as info:
        R.read_rafdb(root, "train")
    assert info.value.line == 3 and missing in str(info.value) and "line 3" in str(info.value)
    with pytest.warns(R.SkippedRecordsWarning):
        recs = R.read_rafdb(root, "train", on_error="skip")
    assert recs.num_skipped == 1 and len(recs) == 7
    want = [s["expression"] for k, s in enumerate(samples["train"]) if k != 2]
    np.testing.assert_array_equal(recs.labels["expression"], want)
    assert len(R.read_rafdb(root, "test")) == 6  # other split unaffected


def test_rafdb_corrupt_image(rafdb):
    root, samples, _ = rafdb
    bad = os.path.join(root, "Image", "aligned", "train_00005_aligned.jpg")
    with open(bad, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 this is not a jpeg")
    recs = R.read_rafdb(root, "train")  # existence is checked eagerly, decoding lazily
    assert len(recs) == 8
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        as_list(recs.dataset)
    assert "train_00005_aligned.jpg" in str(info.value) and "line 5" in str(info.value)
    with pytest.raises(R.DataFormatError, match="train_00005_aligned.jpg"):
        recs.load(4)
    with pytest.raises(R.DataFormatError, match="line 5"):
        recs.validate()

    skip = R.read_rafdb(root, "train", on_error="skip")
    with pytest.warns(R.SkippedRecordsWarning, match="train_00005"):
        elements = as_list(skip.to_dataset(image_size=16))
    assert len(elements) == 7 and skip.num_skipped == 1
    assert skip.all_skipped[0].line == 5
    want = [s["expression"] for k, s in enumerate(samples["train"]) if k != 4]
    assert [int(e["expression"]) for e in elements] == want
    as_list(skip.to_dataset(image_size=16))  # a second pass does not double-count
    assert skip.num_skipped == 1
    assert skip.validate() == 7


# --------------------------------------------------------------------------------------------------
# AffectNet
# --------------------------------------------------------------------------------------------------


def test_affectnet_roundtrip_and_dropped_codes(tmp_path):
    samples = make_samples(9, seed=3, h=48, w=40)
    W.write_affectnet(samples, tmp_path, "training.csv")
    csv_path = tmp_path / "Manually_Annotated_file_lists" / "training.csv"
    lines = csv_path.read_text().splitlines()
    assert lines[0].split(",") == list(R.AFFECTNET_COLUMNS)
    # Rows with contempt (7) and none / uncertain / non-face (8-10), reusing the first image.
    first = lines[1].split(",")
    extra = [",".join(first[:6] + [str(code)] + first[7:]) for code in (7, 8, 9, 10, 7)]
    csv_path.write_text("\n".join(lines + extra) + "\n")

    recs7 = R.read_affectnet(tmp_path, "training.csv")
    assert len(recs7) == 9
    assert recs7.dropped == {"contempt": 2, "none": 1, "uncertain": 1, "non_face": 1}
    assert recs7.class_names == R.AFFECTNET_CLASSES[:7]
    native = {"neutral": 0, "happiness": 1, "sadness": 2, "surprise": 3, "fear": 4, "disgust": 5, "anger": 6}
    want_native = [native[R.RAFDB_CLASSES[s["expression"]]] for s in samples]
    np.testing.assert_array_equal(recs7.labels["expression"], want_native)
    recs8 = R.read_affectnet(tmp_path, str(csv_path), num_classes=8)
    assert len(recs8) == 11 and recs8.class_counts()[7] == 2
    raf = R.read_affectnet(tmp_path, "training.csv", label_order="rafdb")
    np.testing.assert_array_equal(raf.labels["expression"], [s["expression"] for s in samples])
    assert raf.class_names == R.RAFDB_CLASSES
    assert R.read_affectnet(tmp_path, "training.csv", num_classes=8, label_order="rafdb").class_names[7] == "contempt"

    elements = as_list(recs7.dataset)
    assert set(elements[0]) == {"image", "expression", "landmarks", "visible"}
    for e, s in zip(elements, samples):
        assert close_jpeg(e["image"], s["image"])
        np.testing.assert_allclose(e["landmarks"], s["landmarks68"], atol=0.006)

    crop = R.read_affectnet(tmp_path, "training.csv", crop_face=True)
    box = crop.labels["face_box"][0].astype(int)
    e = crop.load(0)
    assert e["image"].shape == (box[3], box[2], 3)
    np.testing.assert_allclose(e["landmarks"], samples[0]["landmarks68"] - box[:2], atol=0.006)
    x, y = int(round(samples[0]["landmarks68"][30, 0])), int(round(samples[0]["landmarks68"][30, 1]))
    assert close_jpeg(e["image"][y - box[1], x - box[0]][None], samples[0]["image"][y, x][None], tol=8)


def test_affectnet_malformed_row(tmp_path):
    W.write_affectnet(make_samples(3, seed=4), tmp_path, "validation.csv")
    csv_path = tmp_path / "Manually_Annotated_file_lists" / "validation.csv"
    lines = csv_path.read_text().splitlines()
    parts = lines[2].split(",")
    parts[5] = "1.0;2.0;3.0"  # 3 landmark values instead of 136
    lines[2] = ",".join(parts)
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(R.DataFormatError, match="validation.csv, line 3: .*136"):
        R.read_affectnet(tmp_path, "validation.csv")
    with pytest.warns(R.SkippedRecordsWarning):
        assert R.read_affectnet(tmp_path, "validation.csv", on_error="skip").num_skipped == 1
    with pytest.raises(R.MissingFileError, match="nope.csv"):
        R.read_affectnet(tmp_path, "nope.csv")
    # The official validation.csv comes without a header row: same columns, same result.
    csv_path.write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(R.DataFormatError, match="validation.csv, line 2: .*136"):
        R.read_affectnet(tmp_path, "validation.csv")
    csv_path.write_text("\n".join(lines[1:2] + lines[3:]) + "\n")
    headless = R.read_affectnet(tmp_path, "validation.csv", label_order="rafdb")
    assert len(headless) == 2 and headless.lines == [1, 2]


# --------------------------------------------------------------------------------------------------
# FERPlus
# --------------------------------------------------------------------------------------------------

#: (votes, majority result, plurality result), computed by hand from the rules in docs/datasets.md
#: ("FERPlus") / readers.
FERPLUS_CASES = [
    ([0, 8, 1, 0, 0, 0, 0, 1, 0, 0], (1, "ok"), (1, "ok")),                  # clear happiness
    ([5, 1, 1, 1, 1, 1, 0, 0, 0, 0], (0, "ok"), (0, "ok")),                  # 5/10, but 5/5 after singles go
    ([4, 3, 0, 0, 0, 0, 0, 0, 2, 1], (None, "no_majority"), (0, "ok")),      # 4 of 9 is no majority
    ([4, 4, 1, 1, 0, 0, 0, 0, 0, 0], (None, "tie"), (None, "tie")),
    ([1] * 10, (None, "no_votes"), (None, "no_votes")),                      # only single votes
    ([2, 0, 0, 0, 0, 0, 0, 0, 6, 2], (None, "unknown"), (None, "unknown")),
    ([2, 0, 0, 0, 0, 0, 0, 0, 1, 7], (None, "not_face"), (None, "not_face")),
    ([0, 0, 0, 0, 0, 0, 0, 6, 2, 2], (7, "ok"), (7, "ok")),                  # contempt is a class
    ([3, 0, 0, 0, 0, 0, 0, 0, 3, 4], (None, "no_majority"), (None, "not_face")),
    ([0, 0, 2, 0, 0, 0, 3, 0, 0, 0], (6, "ok"), (6, "ok")),                  # fear 3 of 5
]


@pytest.mark.parametrize("votes,majority,plurality", FERPLUS_CASES)
def test_ferplus_vote_rules(votes, majority, plurality):
    assert R.ferplus_label(votes, "majority") == majority
    assert R.ferplus_label(votes, "plurality") == plurality


def test_ferplus_roundtrip(tmp_path):
    samples = {"train": make_samples(16, seed=5), "test": make_samples(5, seed=6, offset=2)}
    report = W.write_ferplus(samples, tmp_path, drop_every=3, seed=1)
    kinds = report.vote_kinds["train"]
    assert set(kinds) == {"clear", "rescued", "unknown", "tie", "singles", "not_face"}
    first = open(tmp_path / "Labels" / "FER2013Train" / "label.csv").readline().strip()
    assert first.startswith('fer0000000.png,"(0, 0, 48, 48)",') and len(first.split('",')[1].split(",")) == 10
    assert os.path.isfile(tmp_path / "Images" / "FER2013Test" / "fer0000020.png")

    recs = R.read_ferplus(tmp_path, "train")
    expected = report.expected["train"]
    keep = [k for k, e in enumerate(expected) if e is not None]
    assert len(recs) == len(keep) == 11
    np.testing.assert_array_equal(recs.labels["expression"], [expected[k] for k in keep])
    assert recs.dropped == {"unknown": 2, "tie": 1, "no_votes": 1, "not_face": 1}
    assert R.read_ferplus(tmp_path, "train", vote_rule="plurality").num_dropped == 5
    assert recs.class_names == R.FERPLUS_CLASSES
    raf = R.read_ferplus(tmp_path, "train", label_order="rafdb")
    np.testing.assert_array_equal(raf.labels["expression"], [samples["train"][k]["expression"] for k in keep])
    for e, k in zip(as_list(recs.dataset), keep):
        grey = W.fer_grey48(samples["train"][k]["image"])
        np.testing.assert_array_equal(e["image"], np.repeat(grey[:, :, None], 3, axis=2))  # PNG: exact
    assert len(R.read_ferplus(tmp_path, "test")) == 4  # row 3 of 5 becomes "unknown"
    with pytest.raises(R.MissingFileError, match="FER2013Valid"):
        R.read_ferplus(tmp_path, "validation")


def test_ferplus_malformed_row(tmp_path):
    W.write_ferplus({"validation": make_samples(4, seed=7)}, tmp_path, drop_every=0)
    label_file = tmp_path / "Labels" / "FER2013Valid" / "label.csv"
    lines = label_file.read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ",x"
    label_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(R.DataFormatError, match="label.csv, line 2"):
        R.read_ferplus(tmp_path, "validation")
    with pytest.warns(R.SkippedRecordsWarning):
        assert len(R.read_ferplus(tmp_path, "val", on_error="skip")) == 3


# --------------------------------------------------------------------------------------------------
# FER2013
# --------------------------------------------------------------------------------------------------


def test_fer2013_roundtrip(tmp_path):
    samples = {"train": make_samples(7, seed=8), "validation": make_samples(3, seed=9),
               "test": make_samples(4, seed=10, offset=1)}
    csv_path = tmp_path / "fer2013.csv"
    W.write_fer2013(samples, csv_path)
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "emotion,pixels,Usage" and lines[1].endswith(",Training")
    assert lines[-1].endswith(",PrivateTest") and len(lines[1].split(",")[1].split()) == 2304
    code = {"anger": 0, "disgust": 1, "fear": 2, "happiness": 3, "sadness": 4, "surprise": 5, "neutral": 6}
    for split in ("train", "validation", "test"):
        recs = R.read_fer2013(csv_path, split)
        want = [code[R.RAFDB_CLASSES[s["expression"]]] for s in samples[split]]
        np.testing.assert_array_equal(recs.labels["expression"], want)
        assert recs.lines[0] == 2 + sum(len(samples[s]) for s in ("train", "validation", "test")[
            :("train", "validation", "test").index(split)])
        for e, s in zip(as_list(recs.dataset), samples[split]):
            grey = W.fer_grey48(s["image"])
            np.testing.assert_array_equal(e["image"], np.repeat(grey[:, :, None], 3, axis=2))
    raf = R.read_fer2013(csv_path, "PrivateTest", label_order="rafdb")
    np.testing.assert_array_equal(raf.labels["expression"], [s["expression"] for s in samples["test"]])
    resized = as_list(R.read_fer2013(csv_path, "test", image_size=32).dataset)
    assert resized[0]["image"].shape == (32, 32, 3)
    assert len(R.read_fer2013(csv_path, "all")) == 14


def test_fer2013_malformed_pixels(tmp_path):
    csv_path = tmp_path / "fer2013.csv"
    W.write_fer2013({"train": make_samples(3, seed=11)}, csv_path)
    lines = csv_path.read_text().splitlines()
    lines[3] = lines[3].replace(" ", " 300 ", 1)  # one value too many and out of range
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(R.DataFormatError, match=r"fer2013.csv, line 4: .*2304"):
        R.read_fer2013(csv_path)
    with pytest.warns(R.SkippedRecordsWarning):
        assert R.read_fer2013(csv_path, on_error="skip").num_skipped == 1


# --------------------------------------------------------------------------------------------------
# CelebA
# --------------------------------------------------------------------------------------------------


def test_celeba_roundtrip(tmp_path):
    samples = {"train": make_samples(6, seed=12, h=44, w=36), "validation": make_samples(3, seed=13),
               "test": make_samples(4, seed=14, offset=5)}
    root = tmp_path / "celeba"  # the FRA / torchvision layout: <data root>/celeba/...
    report = W.write_celeba(samples, root)
    valid = report.valid_attributes
    assert valid.shape == (40,) and not valid[[2, 10, 25]].any() and valid.sum() == 37
    attr_lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    assert attr_lines[0] == "13" and attr_lines[1].split() == list(R.CELEBA_ATTRIBUTES)
    assert attr_lines[2].split()[0] == "000001.jpg"
    assert (root / "list_eval_partition.txt").read_text().splitlines()[6] == "000007.jpg 1"
    for split in ("train", "validation", "test"):
        recs = R.read_celeba(tmp_path, split, attribute_mask=valid)
        assert len(recs) == len(samples[split])
        elements = as_list(recs.dataset)
        assert set(elements[0]) == {"image", "attributes", "identity", "landmarks", "visible"}
        for e, s in zip(elements, samples[split]):
            assert e["attributes"].dtype == np.int8
            np.testing.assert_array_equal(e["attributes"], s["attributes"])  # unknown -> -1 via the mask
            assert e["identity"] == s["identity"]
            np.testing.assert_allclose(e["landmarks"], s["landmarks5"], atol=0.5)
            assert close_jpeg(e["image"], s["image"])
    plain = R.read_celeba(root, "train")
    np.testing.assert_array_equal(plain.labels["attributes"][:, valid],
                                  np.stack([s["attributes"] for s in samples["train"]])[:, valid])
    assert set(np.unique(plain.labels["attributes"]).tolist()) <= {0, 1}
    assert len(R.read_celeba(root, "all")) == 13


def test_celeba_kaggle_csv_layout(tmp_path):
    import shutil

    samples = make_samples(5, seed=22)
    flat = tmp_path / "flat"
    W.write_celeba({"train": samples[:3], "test": samples[3:]}, flat)
    kaggle = tmp_path / "kaggle"
    shutil.copytree(flat / "img_align_celeba", kaggle / "img_align_celeba" / "img_align_celeba")
    attr = (flat / "list_attr_celeba.txt").read_text().splitlines()
    (kaggle / "list_attr_celeba.csv").write_text(
        "\n".join([",".join(["image_id"] + attr[1].split())] + [",".join(l.split()) for l in attr[2:]]) + "\n")
    part = (flat / "list_eval_partition.txt").read_text().splitlines()
    (kaggle / "list_eval_partition.csv").write_text(
        "image_id,partition\n" + "\n".join(",".join(l.split()) for l in part) + "\n")
    recs = R.read_celeba(kaggle, "test")
    assert len(recs) == 2 and "identity" not in recs.labels and "landmarks" not in recs.labels
    np.testing.assert_array_equal(recs.labels["attributes"], R.read_celeba(flat, "test").labels["attributes"])
    assert close_jpeg(as_list(recs.dataset)[1]["image"], samples[4]["image"])


def test_celeba_errors(tmp_path):
    W.write_celeba({"train": make_samples(4, seed=15)}, tmp_path)
    attr = tmp_path / "list_attr_celeba.txt"
    lines = attr.read_text().splitlines()
    lines[3] = lines[3].replace("-1", "2", 1).replace(" 1", " 2", 1)
    attr.write_text("\n".join(lines) + "\n")
    with pytest.raises(R.DataFormatError, match="list_attr_celeba.txt, line 4"):
        R.read_celeba(tmp_path)
    attr.write_text("\n".join(lines[:4]) + "\n")  # truncated: declares 4 rows, lists 2
    with pytest.raises(R.DataFormatError, match="line 1: .*declares 4"):
        R.read_celeba(tmp_path)
    with pytest.raises(R.MissingFileError, match="list_attr_celeba.txt"):
        R.read_celeba(tmp_path / "img_align_celeba")


# --------------------------------------------------------------------------------------------------
# 300W / .pts
# --------------------------------------------------------------------------------------------------


def test_read_pts(tmp_path):
    path = tmp_path / "a.pts"
    path.write_text("version: 1\nn_points:  3\n{\n1.5 2.25\n3 4\n\n5.125 6\n}\n")
    np.testing.assert_array_equal(R.read_pts(path), [[1.5, 2.25], [3, 4], [5.125, 6]])
    path.write_text("version: 1\nn_points:  3\n{\n1.5 2.25\n3 four\n5 6\n}\n")
    with pytest.raises(R.DataFormatError, match=r"a.pts, line 5"):
        R.read_pts(path)
    path.write_text("version: 1\nn_points:  4\n{\n1 2\n3 4\n5 6\n}\n")
    with pytest.raises(R.DataFormatError, match="n_points says 4"):
        R.read_pts(path)


def test_300w_roundtrip_and_rescaling(tmp_path):
    train = make_samples(5, seed=16, h=48, w=64)
    test = make_samples(4, seed=17, h=48, w=64)
    W.write_300w(train, tmp_path, subset="lfpw/trainset")
    W.write_300w(test, tmp_path, subset="ibug", image_format="jpg")
    assert (tmp_path / "ibug" / "image_0001.pts").read_text().startswith("version: 1\nn_points:  68\n{\n")
    recs = R.read_300w(tmp_path, subset=["lfpw/trainset"])
    assert len(recs) == 5
    for e, s in zip(as_list(recs.dataset), train):
        np.testing.assert_array_equal(e["image"], s["image"])  # PNG: exact
        np.testing.assert_allclose(e["landmarks"], s["landmarks68"], atol=6e-4)
        assert e["visible"].all() and e["landmarks"].shape == (68, 2)
    challenging = R.read_300w(tmp_path, subset="challenging")
    assert len(challenging) == 4 and all(p.endswith(".jpg") for p in challenging.paths)
    assert len(R.read_300w(tmp_path)) == 9
    assert R.read_300w(tmp_path, subset="ibug", coordinate_offset=-1.0).labels["landmarks"][0, 0, 0] == \
        pytest.approx(test[0]["landmarks68"][0, 0] - 1.0, abs=6e-4)

    # Landmark rescaling with image_size: (48, 64) -> (24, 40), half-pixel-centre convention.
    small = as_list(R.read_300w(tmp_path, subset="lfpw/trainset", image_size=(24, 40)).dataset)
    scale = np.array([40 / 64, 24 / 48], np.float32)
    for e, s in zip(small, train):
        assert e["image"].shape == (24, 40, 3)
        np.testing.assert_allclose(e["landmarks"], (s["landmarks68"] + 0.5) * scale - 0.5, atol=1e-3)
    # The image edges map onto the image edges; the record's numpy path agrees with tf.data.
    np.testing.assert_allclose(R.rescale_landmarks([[-0.5, -0.5], [63.5, 47.5]], (48, 64), (24, 40)),
                               [[-0.5, -0.5], [39.5, 23.5]])
    loaded = R.read_300w(tmp_path, subset="lfpw/trainset").load(0, image_size=(24, 40))
    np.testing.assert_allclose(loaded["landmarks"], small[0]["landmarks"], atol=1e-4)
    assert close_jpeg(loaded["image"], small[0]["image"], tol=6)


def test_300w_missing_image_and_bad_pts(tmp_path):
    W.write_300w(make_samples(3, seed=18), tmp_path, subset="ibug")
    os.remove(tmp_path / "ibug" / "image_0002.png")
    with pytest.raises(R.MissingFileError, match="image_0002.pts"):
        R.read_300w(tmp_path)
    with pytest.warns(R.SkippedRecordsWarning):
        assert R.read_300w(tmp_path, on_error="skip").num_skipped == 1
    text = (tmp_path / "ibug" / "image_0003.pts").read_text().replace("}\n", "")
    (tmp_path / "ibug" / "image_0003.pts").write_text(text)
    with pytest.raises(R.DataFormatError, match="image_0003.pts, line 71: no '}'"):
        R.read_pts(tmp_path / "ibug" / "image_0003.pts")
    with pytest.warns(R.SkippedRecordsWarning):
        recs = R.read_300w(tmp_path, on_error="skip")
    assert len(recs) == 1 and recs.num_skipped == 2


# --------------------------------------------------------------------------------------------------
# WFLW
# --------------------------------------------------------------------------------------------------


def test_wflw_98_to_68_round_trip():
    rng = np.random.default_rng(19)
    lm68 = rng.uniform(0, 100, (3, 68, 2)).astype(np.float32)
    lm98, vis98 = W.landmarks68_to_98(lm68)
    assert lm98.shape == (3, 98, 2) and vis98.all()
    np.testing.assert_array_equal(R.wflw98_to_68(lm98), lm68)
    assert len(set(R.WFLW98_TO_68.tolist())) == 68
    # The made-up points sit where they should: odd contour points are midpoints, pupils eye centres.
    np.testing.assert_allclose(lm98[:, 1], 0.5 * (lm68[:, 0] + lm68[:, 1]), rtol=1e-6)
    np.testing.assert_allclose(lm98[:, 96], lm68[:, 36:42].mean(axis=1), rtol=1e-5)
    vis = np.ones(68, bool)
    vis[37] = False
    _, v98 = W.landmarks68_to_98(lm68[0], vis)
    assert not v98[61] and not v98[62] and v98[63] and v98[96]


def test_wflw_roundtrip(tmp_path):
    samples = make_samples(6, seed=20, h=40, w=48)
    samples[1]["pose"] = np.array([50.0, 0.0, 0.0], np.float32)
    W.write_wflw(samples, tmp_path, split="test")
    ann = tmp_path / "WFLW_annotations" / "list_98pt_rect_attr_train_test" / "list_98pt_rect_attr_test.txt"
    assert len(ann.read_text().splitlines()[0].split()) == 207
    recs98 = R.read_wflw(ann)  # image root found beside WFLW_annotations
    recs68 = R.read_wflw(ann, tmp_path / "WFLW_images", num_points=68)
    assert len(recs98) == len(recs68) == 6
    flags = recs98.labels["wflw_attributes"]
    assert flags[1, 0] == 1 and flags[0, 0] == 0
    np.testing.assert_array_equal(flags[:, 1], [int(s["expression"] != 6) for s in samples])
    np.testing.assert_array_equal(flags[:, 4], [int(not s["visible68"].all()) for s in samples])
    for e98, e68, s in zip(as_list(recs98.dataset), as_list(recs68.dataset), samples):
        np.testing.assert_allclose(e98["landmarks"], W.landmarks68_to_98(s["landmarks68"])[0], atol=2e-5)
        np.testing.assert_allclose(e68["landmarks"], s["landmarks68"], atol=2e-5)
        assert close_jpeg(e68["image"], s["image"])
    lines = ann.read_text().splitlines()
    lines[2] = " ".join(lines[2].split()[1:])
    ann.write_text("\n".join(lines) + "\n")
    with pytest.raises(R.DataFormatError, match="list_98pt_rect_attr_test.txt, line 3: .*206 fields"):
        R.read_wflw(ann)


# --------------------------------------------------------------------------------------------------
# ImageFolder
# --------------------------------------------------------------------------------------------------


def test_image_folder(tmp_path):
    samples = make_samples(9, seed=21)
    W.write_image_folder(samples, tmp_path / "train")
    recs = R.read_image_folder_labels(tmp_path / "train", class_names=R.RAFDB_CLASSES)
    assert len(recs) == 9
    np.testing.assert_array_equal(np.sort(recs.labels["expression"]), np.sort([s["expression"] for s in samples]))
    sorted_recs = R.read_image_folder_labels(tmp_path / "train")
    assert sorted_recs.class_names == tuple(sorted(R.RAFDB_CLASSES))
    for path, label in zip(sorted_recs.paths, sorted_recs.labels["expression"]):
        assert os.path.basename(os.path.dirname(path)) == sorted_recs.class_names[label]
    for e, path in zip(as_list(recs.dataset), recs.paths):
        s = samples[int(os.path.splitext(os.path.basename(path))[0])]
        assert close_jpeg(e["image"], s["image"]) and e["expression"] == s["expression"]
    with pytest.raises(R.MissingFileError):
        R.read_image_folder_labels(tmp_path / "nothing")


# --------------------------------------------------------------------------------------------------
# End to end from the synthetic generator
# --------------------------------------------------------------------------------------------------


def test_synthetic_end_to_end(tmp_path):
    """render_sample -> writer -> reader, for one layout of each label kind."""
    from fra_keras.data import synthetic
    assert tuple(synthetic.CELEBA_ATTRIBUTES) == R.CELEBA_ATTRIBUTES
    assert tuple(n.lower() for n in synthetic.EXPRESSION_NAMES) == R.RAFDB_CLASSES
    size, seed = 64, 3

    def render(k, split):
        return synthetic.render_sample(k, seed=seed, image_size=size, split=split)

    W.write_synthetic("rafdb", tmp_path / "raf", {"train": 4, "test": 3}, seed=seed, image_size=size)
    raf = R.read_rafdb(tmp_path / "raf", "test")
    for k, e in enumerate(as_list(raf.dataset)):
        s = render(k, "test")
        assert e["expression"] == int(s["expression"]) and close_jpeg(e["image"], s["image"], tol=6)

    (report,) = W.write_synthetic("celeba", tmp_path / "celeba", {"train": 3, "test": 2}, seed=seed,
                                  image_size=size)
    known = np.array([a in synthetic.KNOWN_ATTRIBUTES for a in R.CELEBA_ATTRIBUTES])
    np.testing.assert_array_equal(report.valid_attributes, known)
    cel = R.read_celeba(tmp_path / "celeba", "test", attribute_mask=report.valid_attributes)
    for k, e in enumerate(as_list(cel.dataset)):
        s = render(k, "test")
        np.testing.assert_array_equal(e["attributes"], s["attributes"])  # unknowns come back as -1
        assert e["identity"] == int(s["identity"])
        np.testing.assert_allclose(e["landmarks"], s["landmarks5"], atol=0.5)

    W.write_synthetic("300w", tmp_path / "300w", {"test": 3}, seed=seed, image_size=size)
    w300 = R.read_300w(tmp_path / "300w", subset="challenging", image_size=32)
    for k, e in enumerate(as_list(w300.dataset)):
        want = R.rescale_landmarks(render(k, "test")["landmarks68"], (size, size), (32, 32))
        np.testing.assert_allclose(e["landmarks"], want, atol=1e-3)

    W.write_synthetic("affectnet", tmp_path / "affectnet", {"validation": 3}, seed=seed, image_size=size)
    aff = R.read_affectnet(tmp_path / "affectnet", "validation.csv", label_order="rafdb", crop_face=True)
    for k, e in enumerate(as_list(aff.dataset)):
        s = render(k, "validation")
        x0, y0, x1, y1 = s["bbox"]
        assert e["expression"] == int(s["expression"])
        box = aff.labels["face_box"][k]
        assert box[0] <= x0 and box[1] <= y0 and box[0] + box[2] >= x1 and box[1] + box[3] >= y1
        np.testing.assert_allclose(e["landmarks"], s["landmarks68"] - box[:2], atol=0.006)

    W.write_synthetic("ferplus", tmp_path / "ferplus", {"train": 4}, seed=seed, image_size=size)
    fp = R.read_ferplus(tmp_path / "ferplus", "train", label_order="rafdb")
    # 4 rows < drop_every=5: every row keeps its label
    assert fp.labels["expression"].tolist() == [int(render(k, "train")["expression"]) for k in range(4)]
