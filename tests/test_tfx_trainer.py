"""export/tfx_trainer.py: a TFX Trainer `run_fn` driven by a stand-in for TFX's FnArgs.

One tiny run (2 optimiser steps on synthetic-face shards written here, 2 evaluation batches read from a
GZIP file laid out like ExampleGen's output) is shared by the tests of this module; about a minute on 2
loaded cores, most of it the export and its verification.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

from harness import SMALL_MODEL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE_FILE = os.path.join(ROOT, "export", "tfx_trainer.py")
TINY = dict(**SMALL_MODEL, batch_size=4)


def load_module():
    spec = importlib.util.spec_from_file_location("fra_tfx_trainer_under_test", MODULE_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trainer():
    return load_module()


def write_data(root):
    """Train shards (fra_keras.data.shard, with their features.json) and an ExampleGen-like GZIP eval file."""
    import tensorflow as tf

    from fra_keras.data.shard import make_example, synthetic_examples, write_shards

    train = root / "shards"
    write_shards(synthetic_examples(image_size=64, num_samples=10, split="train"), str(train), num_shards=2,
                 name="train")
    eval_dir = root / "Split-eval"
    eval_dir.mkdir(parents=True)
    records = [make_example(jpeg, labels) for jpeg, labels in
               synthetic_examples(image_size=64, num_samples=8, split="validation")]
    with tf.io.TFRecordWriter(str(eval_dir / "data_tfrecord-00000-of-00001.gz"), options="GZIP") as w:
        for r in records:
            w.write(r)
    return train, eval_dir, records


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """`write_data` once for the module: {root, train, eval_dir, records}; tests must not modify the files."""
    root = tmp_path_factory.mktemp("tfx_trainer")
    train, eval_dir, records = write_data(root)
    return {"root": root, "train": train, "eval_dir": eval_dir, "records": records}


@pytest.fixture(scope="module")
def run(trainer, data):
    root, train, eval_dir, records = data["root"], data["train"], data["eval_dir"], data["records"]
    fn_args = types.SimpleNamespace(
        train_files=[str(train)],                      # a folder: the features.json beside the shards is skipped
        eval_files=[str(eval_dir / "*")],
        train_steps=2, eval_steps=2,
        custom_config={"preset": "tiny", "fra_config": TINY, "steps_per_epoch": 1, "saved_model_cli": False},
        model_run_dir=str(root / "model_run"),
        serving_model_dir=str(root / "model" / "Format-Serving"))
    summary = trainer.run_fn(fn_args)
    return {"fn_args": fn_args, "summary": summary, "records": records, "root": root}


# Fast checks (no training) ---------------------------------------------------------------------
def test_module_file_imports_neither_tfx_nor_tensorflow_at_load():
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('m', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "assert callable(m.run_fn); print(sorted(k for k in sys.modules if k.split('.')[0] in "
            "('tfx', 'tensorflow', 'keras')))")
    out = subprocess.run([sys.executable, "-c", code, MODULE_FILE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_custom_config_nested_flat_and_errors(trainer):
    from fra_keras.config import ConfigError

    s = trainer.parse_custom_config({"preset": "tiny", "fra_config": {"batch_size": 8}, "image_size": 64,
                                     "steps_per_epoch": 3, "ai_platform_training_args": {"x": 1}})
    assert (s.config.preset, s.config.batch_size, s.config.image_size) == ("tiny", 8, 64)
    assert s.options["steps_per_epoch"] == 3 and s.options["image_key"] == "image"
    assert trainer.parse_custom_config(None).config.preset == "paper"
    with pytest.raises(ConfigError, match="both flat and in 'fra_config'"):
        trainer.parse_custom_config({"batch_size": 8, "fra_config": {"batch_size": 4}})
    with pytest.raises(ConfigError, match=r"\['batchsize'\]"):
        trainer.parse_custom_config({"batchsize": 8})
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        trainer.parse_custom_config({"steps_per_epoch": 0})
    with pytest.raises(ConfigError, match="batch_size"):
        trainer.parse_custom_config({"preset": "tiny", "batch_size": -1})


def test_missing_inputs_fail_before_training(trainer, tmp_path):
    args = dict(train_files=[str(tmp_path / "nothing-*")], eval_files=None, train_steps=1, eval_steps=None,
                custom_config={"preset": "tiny"}, model_run_dir=str(tmp_path / "run"),
                serving_model_dir=str(tmp_path / "serving"))
    with pytest.raises(ValueError, match="matches no TFRecord file"):
        trainer.run_fn(types.SimpleNamespace(**args))
    with pytest.raises(ValueError, match="serving_model_dir"):
        trainer.run_fn(types.SimpleNamespace(**{**args, "serving_model_dir": None}))
    (tmp_path / "train-00000-of-00001.tfrecord").write_bytes(b"")   # found by the glob, never read
    with pytest.raises(ValueError, match="nothing-eval"):    # a wrong eval pattern fails before training
        trainer.run_fn(types.SimpleNamespace(**{**args, "train_files": [str(tmp_path / "train-*")],
                                                "eval_files": [str(tmp_path / "nothing-eval-*")]}))
    assert not os.path.exists(tmp_path / "serving") and not os.path.exists(tmp_path / "run")


def test_eval_batches_are_reproducible_and_gzip_is_read(data, tmp_path):
    """run_fn's evaluation input: the project pipeline in a fixed order, GZIP files, another image key."""
    import tensorflow as tf

    from fra_keras.config import FRAConfig
    from fra_keras.data import pretraining_dataset

    eval_dir, records = data["eval_dir"], data["records"]
    config = FRAConfig.from_preset("tiny", **TINY)
    read = lambda patterns, key="image": next(iter(pretraining_dataset(    # noqa: E731
        config, data_dir=patterns, image_key=key, shuffle=False, repeat=False)))
    first, second = read([str(eval_dir / "*")]), read([str(eval_dir / "*")])
    assert first["view1"].shape == (4, 64, 64, 3)
    np.testing.assert_array_equal(first["view1"].numpy(), second["view1"].numpy())
    assert not np.allclose(first["view1"].numpy(), first["view2"].numpy())
    # The same images under another feature name, uncompressed: the same batch.
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    with tf.io.TFRecordWriter(str(renamed / "data_tfrecord-00000-of-00001")) as w:
        for r in records:
            example = tf.train.Example.FromString(r)
            example.features.feature["picture"].CopyFrom(example.features.feature["image"])
            del example.features.feature["image"]
            w.write(example.SerializeToString())
    other = read([str(renamed)], key="picture")
    np.testing.assert_array_equal(first["view1"].numpy(), other["view1"].numpy())


# The shared run -----------------------------------------------------------------------------------
def test_run_fn_trains_evaluates_and_logs(run):
    import tensorflow as tf

    summary, run_dir = run["summary"], run["fn_args"].model_run_dir
    assert (summary["steps_run"], summary["epochs"], summary["steps_per_epoch"]) == (2, 2, 1)
    assert np.isfinite(summary["final"]["loss"])
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    assert (config["epochs"], config["batch_size"], config["image_size"]) == (2, 4, 64)
    with open(os.path.join(run_dir, "history.csv")) as f:
        assert len(f.read().strip().splitlines()) == 1 + 2
    with open(os.path.join(run_dir, "checkpoints", "latest")) as f:
        assert f.read().strip() == "epoch-0002"
    for name in ("model.keras", "backbone.weights.h5", "summary.json"):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    with open(os.path.join(run_dir, "eval_results.json")) as f:
        evaluation = json.load(f)
    assert evaluation["steps"] == 2 and np.isfinite(evaluation["loss"]) and evaluation["step"] == 2
    assert os.listdir(os.path.join(run_dir, "train")), "no TensorBoard training events"
    logged = {}
    for event_file in tf.io.gfile.glob(os.path.join(run_dir, "validation", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(event_file):
            for value in event.summary.value:
                logged[value.tag] = (event.step, float(tf.make_ndarray(value.tensor)))
    assert logged["evaluation_loss_vs_iterations"][0] == 2
    assert logged["evaluation_loss_vs_iterations"][1] == pytest.approx(evaluation["loss"], rel=1e-6)


def test_fra_export_passes_the_export_verification(run):
    from fra_keras import export

    results = export.verify(os.path.join(run["fn_args"].model_run_dir, "export"), saved_model_cli=False)
    assert [r["name"] for r in results] == ["fra"] and results[0]["report"]["ok"]
    assert results[0]["savedmodel"] == run["summary"]["export"]


def test_serving_default_takes_serialized_tf_examples(run, trainer):
    import tensorflow as tf

    from fra_keras.data.folders import decode_image

    serving = run["fn_args"].serving_model_dir
    assert " / ".join(trainer.TFX_SIGNATURES) + " outputs" in run["summary"]["serving_checks"]
    assert any("warm-up requests replayed" in c for c in run["summary"]["serving_checks"])
    loaded = tf.saved_model.load(serving)
    default = loaded.signatures["serving_default"]
    (_, inputs) = default.structured_input_signature
    assert list(inputs) == ["examples"] and inputs["examples"].dtype == tf.string
    examples = run["records"][:3]                     # the shards' own records (image + label features)
    out = default(examples=tf.constant(examples))
    assert out["embedding"].shape == (3, 64) and out["heatmaps"].shape[-1] == 8
    assert np.all(np.isfinite(out["embedding"].numpy()))
    images = tf.stack([decode_image(tf.io.parse_single_example(
        r, {"image": tf.io.FixedLenFeature([], tf.string)})["image"]) for r in examples])
    by_images = loaded.signatures["serve_images"](images=images)
    np.testing.assert_allclose(out["embedding"].numpy(), by_images["embedding"].numpy(), atol=1e-4, rtol=1e-5)
    # The same numbers as the fra_keras export's own uint8 signature.
    original = tf.saved_model.load(run["summary"]["export"]).signatures["serving_default"](images=images)
    np.testing.assert_allclose(by_images["feature_map"].numpy(), original["feature_map"].numpy(), atol=1e-5)
    with open(os.path.join(serving, "assets.extra", "fra_tfx.json")) as f:
        info = json.load(f)
    assert info["signatures"]["serving_default"] == {"input": "examples",
                                                     "fra_keras_export_signature": "serve_tf_example"}
    assert info["eval"]["loss"] == pytest.approx(run["summary"]["eval"]["loss"])


def test_verify_serving_model_detects_a_wrong_reference(run, trainer, tmp_path):
    from fra_keras import export

    copy = tmp_path / "serving"
    shutil.copytree(run["fn_args"].serving_model_dir, copy)
    path = copy / "assets.extra" / "verification.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["keras__b4__embedding"] = arrays["keras__b4__embedding"] + 0.5
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(export.VerificationError, match="serve_images_vs_keras: embedding"):
        trainer.verify_serving_model(str(copy))


def test_pretrain_cli_on_the_same_shards_trains_the_same_model(run, tmp_path):
    """run_fn and `python -m fra_keras.pretrain` are adapters over one engine (fra_keras.training.train)
    reading through one pipeline: the same config and shards give the same run folder and the same
    numbers, epoch by epoch."""
    import csv

    from fra_keras import pretrain
    from fra_keras.config import FRAConfig

    tfx_dir, cli_dir = run["fn_args"].model_run_dir, str(tmp_path / "cli")
    tfx_config = FRAConfig.from_json(os.path.join(tfx_dir, "config.json"))
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    assert pretrain.main(flags + ["--epochs", str(tfx_config.epochs), "--steps-per-epoch", "1",
                                  "--warmup-epochs", str(tfx_config.warmup_epochs),
                                  "--data-dir", str(run["root"] / "shards"), "--output-dir", cli_dir,
                                  "--monitor-every", "0", "--heatmap-every", "0", "--verbose", "0"]) == 0
    cli_config = FRAConfig.from_json(os.path.join(cli_dir, "config.json"))
    assert cli_config.replace(data_dir=None) == tfx_config
    for name in ("model.keras", "backbone.weights.h5", "summary.json", "checkpoints/latest",
                 "checkpoints/epoch-0002/model.weights.h5"):
        assert os.path.isfile(os.path.join(cli_dir, name)) and os.path.isfile(os.path.join(tfx_dir, name)), name
    rows = []
    for folder in (tfx_dir, cli_dir):
        with open(os.path.join(folder, "history.csv")) as f:
            rows.append(list(csv.DictReader(f)))
    assert list(rows[0][0]) == list(rows[1][0])                        # the same columns
    for tfx_row, cli_row in zip(*rows):
        for key in tfx_row:
            np.testing.assert_allclose(float(cli_row[key]), float(tfx_row[key]), rtol=1e-5, err_msg=key)
    with open(os.path.join(cli_dir, "summary.json")) as f:
        cli_summary = json.load(f)
    assert cli_summary["steps_run"] == run["summary"]["steps_run"] == 2
