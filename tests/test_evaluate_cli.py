"""`python -m fra_keras.evaluate` end to end on tiny synthetic data, one real layout, and the errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from harness import save_run, tiny_model

from fra_keras import evaluate

# Few faces, few epochs: these runs check the plumbing, not the numbers.
SMALL = ["--image-size", "64", "--train-samples", "24", "--test-samples", "12", "--epochs", "2",
         "--batch-size", "8", "--verbose", "0"]


@pytest.fixture(scope="module")
def fra_run(tiny_fra, tmp_path_factory):
    """A tiny (untrained) FRA run folder: model.keras, backbone.weights.h5, config.json."""
    return save_run(tiny_fra, str(tmp_path_factory.mktemp("fra")))["run"]


def _run(task, model, tmp_path, *extra):
    out = str(tmp_path / f"{task}.json")
    assert evaluate.main([task, "--model", model, *SMALL, "--output", out, *extra]) == 0
    with open(out) as f:
        return json.load(f)


def _error(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        evaluate.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_expression_from_model_keras_saves_head_and_model(fra_run, tmp_path):
    import keras

    import fra_keras.downstream.models  # noqa: F401  (registers the downstream classes)

    report = _run("expression", os.path.join(fra_run, "model.keras"), tmp_path)
    assert report["task"] == "expression" and report["protocol"] == "linear"
    assert report["model"]["kind"] == "keras_model" and report["model"]["config"]["backbone_width"] == 8
    assert report["data"]["name"] == "synthetic" and report["data"]["num_train"] == 24
    for key in ("synthetic_top1_accuracy", "synthetic_mean_class_accuracy"):
        assert 0.0 <= report["metrics"][key] <= 1.0
    assert len(report["history"]["loss"]) == 2
    assert {"load_s", "data_s", "features_s", "train_s", "eval_s", "total_s"} <= set(report["timing"])
    head = keras.saving.load_model(report["artifacts"]["head"])
    assert head.input_shape == (None, None, None, 64)              # width 8 * 8 channels
    out = head(np.zeros((2, 4, 4, 64), "float32"))
    assert set(out) == {"expression_logits", "expression_probabilities"} and out["expression_logits"].shape == (2, 7)
    model = keras.saving.load_model(report["artifacts"]["model"])
    images = np.zeros((1, 64, 64, 3), "float32")
    np.testing.assert_allclose(np.asarray(model(images)["expression_logits"]),
                               np.asarray(head(model.backbone(images))["expression_logits"]), atol=1e-5)


def test_attributes_from_backbone_weights(fra_run, tmp_path):
    report = _run("attributes", os.path.join(fra_run, "backbone.weights.h5"), tmp_path)
    assert report["model"]["kind"] == "backbone_weights"
    assert 0.0 <= report["metrics"]["synthetic_attribute_accuracy"] <= 1.0
    assert report["details"]["per_attribute_accuracy"]      # only attributes with known labels


def test_landmarks_with_random_backbone(tmp_path):
    report = _run("landmarks", "random", tmp_path, "--backbone-width", "8")
    assert report["model"]["kind"] == "random" and report["model"]["channels"] == 64
    metrics = report["metrics"]
    assert metrics["synthetic_nme"] > 0 and 0.0 <= metrics["synthetic_failure_rate_10"] <= 1.0
    assert report["details"]["eye_corner_indices"] == [36, 45]


def test_knn_from_run_folder(fra_run, tmp_path):
    report = _run("knn", fra_run, tmp_path, "--k", "5")
    assert report["protocol"] is None and report["setup"]["k"] == 5
    assert 0.0 <= report["metrics"]["synthetic_knn_top1_accuracy"] <= 1.0


def test_regions_compares_with_random_init(fra_run, tmp_path):
    figure = str(tmp_path / "heatmaps.png")
    report = _run("regions", os.path.join(fra_run, "model.keras"), tmp_path, "--figure", figure,
                  "--figure-faces", "2")
    m = report["metrics"]
    for name in ("purity", "coverage", "consistency"):
        assert f"synthetic_region_{name}" in m and f"synthetic_region_{name}_random" in m
    assert 0.0 <= m["synthetic_region_consistency"] <= 1.0
    assert 1 <= m["synthetic_region_coverage"] <= 8
    trained = report["details"]["model"]
    assert np.asarray(trained["mass"]).shape == (8, 8)            # K heatmaps x 8 coarse parts
    np.testing.assert_allclose(np.asarray(trained["density_share"]).sum(axis=1), 1.0, atol=1e-3)
    assert os.path.isfile(figure) and 0 < os.path.getsize(figure) < 300_000


def test_finetune_updates_the_backbone(tmp_path):
    report = _run("expression", "random", tmp_path, "--backbone-width", "8", "--protocol", "finetune",
                  "--epochs", "1")
    assert report["protocol"] == "finetune"
    assert report["setup"]["weight_decay"] == pytest.approx(0.05)
    assert report["setup"]["learning_rate"] == pytest.approx(1e-3)


def test_expression_on_a_rafdb_folder(tmp_path):
    from fra_keras.data.writers import write_synthetic

    root = str(tmp_path / "rafdb")
    write_synthetic("rafdb", root, num_per_split={"train": 16, "test": 8}, image_size=64)
    report = _run("expression", "random", tmp_path, "--backbone-width", "8", "--data", f"rafdb:{root}")
    assert report["data"]["name"] == "rafdb" and report["data"]["num_train"] == 16
    assert report["data"]["num_test"] == 8
    assert "rafdb_top1_accuracy" in report["metrics"]
    assert report["data"]["class_names"][0] == "surprise"


def test_wrong_model_path_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fra_keras.evaluate", "expression", "--model",
                           str(tmp_path / "nope.keras")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --model") and "does not exist" in lines[0]


def test_data_folder_in_the_wrong_layout(capsys, tmp_path):
    from fra_keras.data.writers import write_synthetic

    root = str(tmp_path / "celeba")
    write_synthetic("celeba", root, num_per_split=2, image_size=64)
    err = _error(capsys, ["expression", "--model", "random", "--data", f"rafdb:{root}", *SMALL])
    assert "not in the rafdb layout" in err and "list_patition_label.txt" in err
    err = _error(capsys, ["expression", "--model", "random", "--data", f"celeba:{root}", *SMALL])
    assert "no 'expression' labels" in err
    err = _error(capsys, ["expression", "--model", "random", "--data", f"rafdb:{tmp_path / 'missing'}"])
    assert "does not exist" in err
    err = _error(capsys, ["expression", "--model", "random", "--data", "imagenet:/x"])
    assert "LAYOUT:PATH" in err


def test_regions_needs_the_region_branch(capsys, fra_run, tmp_path):
    err = _error(capsys, ["regions", "--model", os.path.join(fra_run, "backbone.weights.h5"), *SMALL])
    assert "region branch" in err
    byol = save_run(tiny_model(0, region_losses=False), str(tmp_path / "byol"))["run"]
    err = _error(capsys, ["regions", "--model", os.path.join(byol, "model.keras"), *SMALL])
    assert "region_losses=False" in err
    err = _error(capsys, ["regions", "--model", os.path.join(fra_run, "model.keras"), "--data", "rafdb:/x"])
    assert "synthetic" in err
