"""fra_keras.export: layout, manifest, signatures, parity (Keras / SavedModel / onnxruntime), size,
atomic writes, overwrite refusal, heads, bare backbones, re-export, verification, CLI, onnx client.

One export of a tiny FRA model with a head (both formats, through the CLI entry point in-process) is
shared by this module and tests/test_serving_contract.py (the session fixture `tiny_export` of
tests/conftest.py). About 1.5-2 minutes on 2 loaded cores.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from harness import export_reference, load_client, tiny_config, tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tolerance for the tests' own comparisons (max abs diff <= ATOL + RTOL * max |reference|), the same
# bound as fra_keras.export.TOLERANCES["float32"].
ATOL, RTOL = 1e-4, 1e-5

def assert_close(actual, expected, names, label=""):
    for name in names:
        a, e = np.asarray(actual[name]), np.asarray(expected[name])
        assert a.shape == e.shape, (label, name, a.shape, e.shape)
        assert a.dtype == np.float32, (label, name, a.dtype)
        diff = float(np.max(np.abs(a - e)))
        limit = ATOL + RTOL * float(np.max(np.abs(e)))
        assert diff <= limit, f"{label} {name}: max abs diff {diff:.3g} > {limit:.3g}"


# Fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared(tiny_export):
    return tiny_export


@pytest.fixture(scope="module")
def keras_models(tiny_export_models):
    return tiny_export_models


@pytest.fixture(scope="module")
def batches():
    rng = np.random.RandomState(7)
    return {"b1": rng.randint(0, 256, (1, 64, 64, 3)).astype(np.uint8),
            "b4": rng.randint(0, 256, (4, 64, 64, 3)).astype(np.uint8),
            "odd": rng.randint(0, 256, (2, 90, 50, 3)).astype(np.uint8)}


NAMES = ["embedding", "feature_map", "heatmaps", "expression_logits"]


# Layout and manifest -------------------------------------------------------------------------
def test_layout_manifest_and_checksums(shared):
    from fra_keras.exporter.layout import ONNX_OPSET, SIGNATURES
    from fra_keras.exporter.manifest import check_checksums, read_manifest

    sm, onnx_dir = shared["sm"], shared["onnx"]
    for rel in ("saved_model.pb", "variables/variables.index", "assets.extra/tf_serving_warmup_requests",
                "manifest.json", "verification.npz"):
        assert os.path.isfile(os.path.join(sm, rel)), rel
    assert os.path.isfile(os.path.join(onnx_dir, "model.onnx"))
    assert os.path.isfile(os.path.join(shared["out"], "onnx", "fra", "config.pbtxt"))
    for parent in (os.path.dirname(sm), os.path.dirname(onnx_dir)):
        assert sorted(os.listdir(parent)) in (["1"], ["1", "config.pbtxt"]), os.listdir(parent)  # no .tmp-*
    for folder, fmt in ((sm, "savedmodel"), (onnx_dir, "onnx")):
        m = read_manifest(folder)
        assert m["format"] == fmt and m["name"] == "fra" and m["version"] == 1
        assert list(m["outputs"]) == NAMES
        assert all(o["dtype"] == "float32" for o in m["outputs"].values())
        assert m["outputs"]["heatmaps"]["shape"] == [None, 4, 4, 8]
        assert m["heatmaps"]["included"] is True and m["heatmaps"]["num_regions"] == 8
        assert m["head"]["outputs"] == ["expression_logits"]
        assert m["preprocessing"]["mean"] == pytest.approx([0.5231, 0.4044, 0.3489])
        assert m["preprocessing"]["std"] == pytest.approx([0.2536, 0.2194, 0.2070])
        assert m["preprocessing"]["resize"]["size"] == [64, 64]
        assert m["config"]["image_size"] == 64 and m["config"]["backbone_width"] == 8
        for tool in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime"):
            assert m["tools"][tool], tool
        assert m["source"]["kind"] == "keras" and len(m["source"]["sha256"]) == 64
        assert m["verification"]["ok"] is True
        assert check_checksums(folder, m) == []
    sm_manifest = read_manifest(sm)
    assert sorted(sm_manifest["signatures"]) == sorted(SIGNATURES)
    assert sm_manifest["signatures"]["serving_default"]["images"] == {
        "dtype": "uint8", "shape": [None, None, None, 3], "content": "image"}
    assert sm_manifest["warmup"]["requests"] == 3
    assert read_manifest(onnx_dir)["onnx"]["opset"] == ONNX_OPSET


def test_signatures_are_named_float32_and_graph_is_clean(shared):
    import tensorflow as tf

    from fra_keras.exporter.layout import SIGNATURES
    from fra_keras.exporter.verification import scan_graph_ops

    loaded = tf.saved_model.load(shared["sm"])
    assert sorted(loaded.signatures) == ["serve_image_bytes", "serve_tf_example", "serving_default"]
    for sig, input_name in SIGNATURES.items():
        fn = loaded.signatures[sig]
        _, kwargs = fn.structured_input_signature
        assert list(kwargs) == [input_name]
        assert kwargs[input_name].dtype == (tf.uint8 if sig == "serving_default" else tf.string)
        assert sorted(fn.structured_outputs) == sorted(NAMES)
        assert all(s.dtype == tf.float32 for s in fn.structured_outputs.values())
    assert scan_graph_ops(shared["sm"]) == []


def test_graph_scan_flags_python_and_xla_functions(tmp_path):
    import tensorflow as tf

    from fra_keras.exporter.verification import scan_graph_ops

    class Bad(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def py(self, x):
            return tf.numpy_function(lambda v: v * 2, [x], tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)], jit_compile=True)
        def xla(self, x):
            return x * 2

    module = Bad()
    tf.saved_model.save(module, str(tmp_path), signatures={"py": module.py, "xla": module.xla})
    problems = " ".join(scan_graph_ops(str(tmp_path)))
    assert "PyFunc" in problems
    assert "XLA" in problems


# Parity -------------------------------------------------------------------------------------
def test_savedmodel_and_onnx_match_keras_at_batch_1_and_4(shared, keras_models, batches):
    import onnx
    import onnxruntime as ort
    import tensorflow as tf

    from fra_keras.exporter.layout import ONNX_OPSET

    model, head = keras_models
    fn = tf.saved_model.load(shared["sm"]).signatures["serving_default"]
    path = os.path.join(shared["onnx"], "model.onnx")
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert sorted(names) == sorted(NAMES)
    for key, images in batches.items():
        ref = export_reference(model, head, images)
        saved = {k: v.numpy() for k, v in fn(images=tf.constant(images)).items()}
        assert_close(saved, ref, NAMES, f"savedmodel {key}")
        onnx_out = dict(zip(names, session.run(names, {"images": images})))
        assert_close(onnx_out, ref, NAMES, f"onnx {key}")
        assert_close(onnx_out, saved, NAMES, f"onnx vs savedmodel {key}")
    proto = onnx.load(path)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert proto.graph.input[0].name == "images" and dims == ["batch", "height", "width", 3]
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert all(o.type.tensor_type.shape.dim[0].dim_param == "batch" for o in proto.graph.output)
    assert {i.domain: i.version for i in proto.opset_import}[""] == ONNX_OPSET
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["image_size"] == "64" and json.loads(meta["mean"]) == pytest.approx([0.5231, 0.4044, 0.3489])
    assert meta["heatmaps"] == "included" and meta["fra_keras.version"] == "1"
    assert proto.model_version == 1


def test_savedmodel_variables_size_matches_parameter_count(shared, keras_models):
    model, head = keras_models
    n_params = (model.backbone.count_params() + model.neck.pixel_proj.count_params()
                + int(np.prod(model.prototypes.shape)) + head.count_params())
    folder = os.path.join(shared["sm"], "variables")
    data = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if ".data-" in f)
    # Each float32 weight once (the Keras export bug stores each twice, ratio ~2); the rest is the
    # checkpoint's object graph.
    ratio = data / (4 * n_params)
    assert 1.0 <= ratio < 1.25, f"variables hold {data} bytes for {n_params} parameters (ratio {ratio:.2f})"


# Verification -------------------------------------------------------------------------------
def test_verify_cli_passes_and_detects_tampering(shared, tmp_path, capsys):
    from fra_keras.exporter.cli import main
    from fra_keras.exporter.layout import VerificationError
    from fra_keras.exporter.verification import verify

    assert main(["verify", shared["out"]]) == 0
    out = capsys.readouterr().out
    assert "ok fra/1" in out and "onnx_vs_savedmodel" in out

    copy = tmp_path / "models"
    shutil.copytree(shared["out"], copy)
    ref = copy / "savedmodel" / "fra" / "1" / "verification.npz"
    ref.write_bytes(ref.read_bytes() + b"x")
    with pytest.raises(VerificationError, match="verification.npz: sha256"):
        verify(str(copy / "savedmodel" / "fra" / "1"), saved_model_cli=False)
    assert main(["verify", str(copy / "savedmodel" / "fra")]) == 1


def test_broken_onnx_file_fails_verification(shared, tmp_path):
    from fra_keras.exporter.layout import VerificationError
    from fra_keras.exporter.manifest import file_checksums, read_manifest, write_manifest
    from fra_keras.exporter.verification import verify_version

    folder = tmp_path / "1"
    shutil.copytree(shared["onnx"], folder)
    model = folder / "model.onnx"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    manifest = read_manifest(str(folder))
    manifest["files"] = file_checksums(str(folder))   # a consistent manifest for a broken file
    write_manifest(str(folder), manifest)
    with pytest.raises(VerificationError, match="onnx.checker"):
        verify_version(None, str(folder))


def test_verify_saved_model_takes_other_signature_names(shared, tmp_path):
    """The SavedModel verifier works for any signature map: the export re-saved with the TFX serving
    model's signatures (serving_default takes tf.Examples) passes, and a wrong reference is caught."""
    import tensorflow as tf

    from fra_keras.config import FRAConfig
    from fra_keras.exporter.layout import REFERENCE, VerificationError
    from fra_keras.exporter.manifest import read_manifest
    from fra_keras.exporter.reference import load_reference
    from fra_keras.exporter.verification import verify_saved_model
    from fra_keras.exporter.warmup import write_warmup

    # signature -> (input name, the export's tf.function behind it)
    tfx = {"serving_default": ("examples", "serve_tf_example"), "serve_images": ("images", "serve_images"),
           "serve_image_bytes": ("image_bytes", "serve_image_bytes"),
           "serve_tf_example": ("examples", "serve_tf_example")}
    loaded = tf.saved_model.load(shared["sm"])
    folder = str(tmp_path / "serving")
    tf.saved_model.save(loaded, folder, signatures={sig: getattr(loaded, fn) for sig, (_, fn) in tfx.items()})
    manifest = read_manifest(shared["sm"])
    config = FRAConfig.from_dict(manifest["config"])
    signatures = {sig: name for sig, (name, _) in tfx.items()}
    assert write_warmup(folder, config, "fra", signatures) == 4
    inputs, reference, tol_key = load_reference(os.path.join(shared["sm"], REFERENCE))
    report = verify_saved_model(folder, inputs, reference, config, list(manifest["outputs"]),
                                tolerance_key=tol_key, signatures=signatures)
    assert report["ok"] and sorted(report["max_abs_diff"]) == [
        "serve_image_bytes_vs_images", "serve_images_vs_keras", "serve_tf_example_vs_images",
        "serving_default_vs_images"]
    assert "4 warm-up requests replayed through the gRPC contract" in report["checks"]
    wrong = {b: {**outs, "embedding": outs["embedding"] + 0.5} for b, outs in reference.items()}
    with pytest.raises(VerificationError, match="serve_images_vs_keras: embedding"):
        verify_saved_model(folder, inputs, wrong, config, list(manifest["outputs"]), signatures=signatures)
    with pytest.raises(VerificationError, match="signatures"):   # the export's own names do not fit
        verify_saved_model(folder, inputs, reference, config, list(manifest["outputs"]))


def test_entry_module_keeps_the_names_other_code_imports():
    """`fra_keras.export` gives every name export/tfx_trainer.py and the notebooks use, as the exporter's
    own objects, and importing it (and reading a light name) loads no TensorFlow."""
    import importlib
    import re

    from fra_keras import export, exporter

    with open(os.path.join(ROOT, "export", "tfx_trainer.py")) as f:
        used = set(re.findall(r"(?<![/\w])export\.([A-Za-z_]\w*)", f.read())) - {"md", "py"}
    assert {"export_model", "verify", "read_manifest", "load_reference", "VerificationError"} & used
    modules = {m: importlib.import_module(f"fra_keras.exporter.{m}") for m in exporter.PUBLIC}
    assert used <= set(exporter.__all__), used - set(exporter.__all__)
    for module, names in exporter.PUBLIC.items():   # after every submodule is imported: none shadows a name
        for name in names:
            assert getattr(export, name) is getattr(exporter, name) is getattr(modules[module], name), name
    with pytest.raises(AttributeError, match="no_such_name"):
        export.no_such_name
    code = ("import sys, fra_keras.export as e; e.TOLERANCES; e.SIGNATURES; e.check_request; "
            "print('tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr[-2000:]


# Writing: refusal, atomicity, overwrite, re-export ------------------------------------------
def test_refuses_to_overwrite_an_existing_version(shared):
    from fra_keras.exporter.layout import ExportError
    from fra_keras.exporter.manifest import file_checksums
    from fra_keras.exporter.write import export_model

    before = file_checksums(shared["sm"])
    with pytest.raises(ExportError, match="already exists"):
        export_model(shared["model"], shared["out"], "fra", 1)
    assert file_checksums(shared["sm"]) == before
    proc = subprocess.run([sys.executable, "-m", "fra_keras.export", "--model", shared["model"], "--output-dir",
                           shared["out"], "--name", "fra", "--version", "1"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "already exists" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--model", "/nonexistent/model.keras"], "does not exist"),
    (["--model", "MODEL", "--formats", "savedmodel,tflite"], "--formats"),
    (["--model", "MODEL", "--version", "0"], "--version"),
    (["--model", "MODEL", "--name", "../x"], "--name"),
    (["--model", "MODEL", "--head", "head.h5"], "--head"),
])
def test_cli_bad_arguments_give_one_line(shared, tmp_path, args, message):
    args = [shared["model"] if a == "MODEL" else a for a in args]
    proc = subprocess.run([sys.executable, "-m", "fra_keras.export", *args, "--output-dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert message in proc.stderr
    assert not os.listdir(tmp_path)


def test_failed_export_leaves_nothing_behind(shared, tmp_path, monkeypatch):
    from fra_keras.exporter import write
    from fra_keras.exporter.layout import VerificationError

    def broken(*args, **kwargs):
        raise VerificationError(["simulated failure"])

    monkeypatch.setattr(write, "verify_version", broken)
    with pytest.raises(VerificationError, match="simulated"):
        write.export_model(shared["sm"], str(tmp_path), "fra", 2, formats=["savedmodel"])
    assert os.listdir(tmp_path) == []   # not even the empty savedmodel/fra parents


def test_reexport_from_savedmodel_and_overwrite(shared, tmp_path):
    from fra_keras.exporter.layout import ExportError
    from fra_keras.exporter.verification import verify
    from fra_keras.exporter.write import export_model

    out = str(tmp_path)
    first = export_model(shared["sm"], out, "fra-copy", 3, formats=["savedmodel"], saved_model_cli=False,
                         log=None)
    manifest = first.manifest
    assert manifest["source"]["kind"] == "savedmodel" and manifest["source"]["original"]["kind"] == "keras"
    assert list(manifest["outputs"]) == NAMES
    assert manifest["verification"]["keras_reference"].startswith("stored")
    with pytest.raises(ExportError, match="already exists"):
        export_model(shared["sm"], out, "fra-copy", 3, formats=["savedmodel"], log=None)
    marker = os.path.join(first.paths["savedmodel"], "stale-file")
    open(marker, "w").close()
    second = export_model(shared["sm"], out, "fra-copy", 3, formats=["savedmodel"], overwrite=True,
                          saved_model_cli=False, log=None)
    assert not os.path.exists(marker)                     # the old version was replaced as a whole
    assert sorted(os.listdir(os.path.dirname(second.paths["savedmodel"]))) == ["3"]
    verify(out, saved_model_cli=False)
    with pytest.raises(ExportError, match="--head"):
        export_model(shared["sm"], out, "fra-copy", 4, head=shared["head"], log=None)


# Sources and heads --------------------------------------------------------------------------
def test_backbone_weights_export_has_no_heatmaps(shared, tmp_path, batches):
    import tensorflow as tf

    from fra_keras.exporter.write import export_model

    result = export_model(shared["weights"], str(tmp_path), "backbone", 1, formats=["savedmodel"],
                          saved_model_cli=False, log=None)
    manifest = result.manifest
    assert list(manifest["outputs"]) == ["embedding", "feature_map"]
    assert manifest["heatmaps"]["included"] is False and "prototypes" in manifest["heatmaps"]["reason"]
    assert manifest["source"]["kind"] == "weights"
    assert not os.path.exists(tmp_path / "onnx")
    bare = tf.saved_model.load(result.paths["savedmodel"]).signatures["serving_default"]
    full = tf.saved_model.load(shared["sm"]).signatures["serving_default"]
    images = tf.constant(batches["b4"])
    a, b = bare(images=images), full(images=images)
    assert sorted(a) == ["embedding", "feature_map"]
    assert_close({k: v.numpy() for k, v in a.items()}, {k: b[k].numpy() for k in a}, list(a), "weights vs keras")


def test_head_output_names_and_checks():
    import keras

    from fra_keras.exporter.layout import ExportError
    from fra_keras.exporter.source import check_head

    config = tiny_config()
    c = config.feature_channels
    inp = keras.Input((None, None, c))
    pooled = keras.layers.GlobalAveragePooling2D()(inp)
    named = keras.layers.Dense(7, name="expression_logits")(pooled)
    auto = keras.layers.Dense(3)(pooled)
    assert check_head(keras.Model(inp, named), config) == ["expression_logits"]
    assert check_head(keras.Model(inp, auto), config) == ["head_output"]
    assert check_head(keras.Model(inp, {"valence": auto, "expr": named}), config) == ["valence", "expr"]
    with pytest.raises(ExportError, match="clashes"):
        check_head(keras.Model(inp, {"embedding": auto}), config)
    wrong = keras.Input((None, None, c + 1))
    with pytest.raises(ExportError, match="feature map"):
        check_head(keras.Model(wrong, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(wrong))),
                   config)


def test_head_that_cannot_trace_unknown_sizes_still_saves(tmp_path):
    """Bilinear UpSampling2D fails when traced with unknown h, w (what tf.saved_model.save does to a
    tracked Keras model's default signature); the export tracks variables only and traces at image_size."""
    import keras
    import tensorflow as tf

    from fra_keras.exporter.graph import build_serving_module
    from fra_keras.exporter.source import check_head
    from fra_keras.models.backbone import build_backbone

    config = tiny_config()
    backbone = build_backbone(config, synchronized=False)
    inp = keras.Input((None, None, config.feature_channels))
    up = keras.layers.UpSampling2D(2, interpolation="bilinear")(keras.layers.Conv2D(3, 1)(inp))
    head = keras.Model(inp, {"maps": up})
    names = check_head(head, config)
    module = build_serving_module(config, backbone, head=head, head_names=names)
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve_images})
    out = tf.saved_model.load(str(tmp_path)).signatures["serving_default"](images=tf.zeros([1, 64, 64, 3], tf.uint8))
    assert out["maps"].shape == (1, 8, 8, 3) and "heatmaps" not in out


def test_mixed_precision_model_exports_float32(tmp_path):
    import tensorflow as tf

    import fra_keras
    from fra_keras.exporter.write import export_model

    model = tiny_model(1, precision="mixed_bfloat16")
    assert model.backbone.compute_dtype == "bfloat16"
    result = export_model(model, str(tmp_path), "bf16", 1, formats=["savedmodel"], saved_model_cli=False,
                          log=None)
    fn = tf.saved_model.load(result.paths["savedmodel"]).signatures["serving_default"]
    assert all(spec.dtype == tf.float32 for spec in fn.structured_outputs.values())
    assert result.report["tolerances"]["keras"] == {"atol": 2e-2, "rtol": 5e-2}
    # The export computes in float32: it matches a float32 copy of the same backbone weights tightly.
    backbone32 = fra_keras.build_backbone(model.config.replace(precision="float32"))
    backbone32.set_weights(model.backbone.get_weights())
    assert backbone32.compute_dtype == "float32"
    images = np.random.RandomState(3).randint(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    out = {k: v.numpy() for k, v in fn(images=tf.constant(images)).items()}
    x = tf.image.resize(tf.cast(images, tf.float32) / 255.0, [64, 64])
    x = (x - tf.constant(model.config.mean)) / tf.constant(model.config.std)
    features = backbone32(x, training=False).numpy()
    assert_close(out, {"feature_map": features, "embedding": features.mean(axis=(1, 2))},
                 ["embedding", "feature_map"], "bf16 export vs float32 keras")
    assert out["heatmaps"].dtype == np.float32


def test_warmup_records_without_serving_protos_match_real_protos():
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from fra_keras import serving
    from fra_keras.exporter.warmup import prediction_log_bytes

    image = np.arange(2 * 3 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3, 3)
    request = serving.build_predict_request("fra", image, "serving_default")
    real = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    manual = prediction_log_bytes("fra", "serving_default", "images", tf.make_tensor_proto(image))
    assert manual == real.SerializeToString()


# onnx client ----------------------------------------------------------------------------------
def test_onnx_client_runs_for_real(shared, keras_models, tmp_path, capsys):
    from PIL import Image

    model, head = keras_models
    client = load_client("onnx_client")
    rng = np.random.RandomState(11)
    images = [rng.randint(0, 256, s).astype(np.uint8) for s in ((64, 64, 3), (64, 64, 3), (72, 56, 3))]
    paths = []
    for i, im in enumerate(images):
        paths.append(str(tmp_path / f"face{i}.png"))
        Image.fromarray(im).save(paths[-1])
    model_path = os.path.join(shared["onnx"], "model.onnx")
    assert client.main([model_path, *paths, "--json"]) == 0
    outputs = json.loads(capsys.readouterr().out)
    for i, im in enumerate(images):
        ref = export_reference(model, head, im[np.newaxis])
        got = {k: np.asarray(v[i:i + 1], np.float32) for k, v in outputs.items()}
        assert_close(got, ref, NAMES, f"onnx client image {i}")
    assert client.main([model_path, paths[0]]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert len(row["region_share"]) == 8 and 0 <= row["expression_logits"]["top"] < 7
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    assert client.main([model_path, str(bad)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
