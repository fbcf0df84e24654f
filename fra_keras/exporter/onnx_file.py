"""The ONNX file: tf2onnx conversion of the SavedModel's `serving_default` (the uint8 function, opset
`ONNX_OPSET`, dynamic dimensions batch / height / width), its metadata, and its checks.

onnx, tf2onnx and onnxruntime are an optional extra (`pip install -e ".[onnx]"`): they are imported
inside the functions that need them, so a SavedModel-only export works without them.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Dict, List, Optional

import tensorflow as tf

from fra_keras.config import FRAConfig
from fra_keras.exporter.layout import ONNX_FILE, ONNX_OPSET, VerificationError, first_line
from fra_keras.exporter.tolerance import Tolerance, compare_outputs
from fra_keras.serving import OnnxPredictor, ServingError


def onnx_metadata(config: FRAConfig, name: str, version: int, outputs, common: dict, opset: int) -> Dict[str, str]:
    """The model's metadata_props: name, version, input, outputs, preprocessing, heatmaps, tools."""
    heatmaps = common["heatmaps"]
    return {"fra_keras.name": name, "fra_keras.version": str(version),
            "input": "images: uint8 (batch, height, width, 3) RGB",
            "outputs": ",".join(outputs), "image_size": str(config.image_size),
            "mean": json.dumps(list(config.mean)), "std": json.dumps(list(config.std)),
            "preprocessing": common["preprocessing"]["formula"] + " (inside the graph)",
            "heatmaps": "included" if heatmaps["included"] else "not included: " + heatmaps["reason"],
            "backbone": config.backbone, "opset": str(opset),
            "tensorflow": common["tools"]["tensorflow"], "tf2onnx": common["tools"]["tf2onnx"]}


def convert_to_onnx(saved_model_dir: str, output_path: str, opset: int = ONNX_OPSET,
                    metadata: Optional[Dict[str, str]] = None, version: Optional[int] = None, loaded=None):
    """tf2onnx conversion of the SavedModel's `serving_default` (the uint8 function) to `output_path`.

    Dynamic dimensions are named batch / height / width; `metadata` goes to metadata_props.
    """
    import onnx
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    tf2onnx.logging.set_level(logging.ERROR)
    loaded = loaded if loaded is not None else tf.saved_model.load(saved_model_dir)
    signature = loaded.signatures["serving_default"]
    fn = tf.function(lambda images: signature(images=images))
    spec = [tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")]
    try:
        model_proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=opset)
    except Exception as e:
        raise VerificationError([f"tf2onnx conversion failed: {first_line(e)}"]) from None
    graph = model_proto.graph
    for value in graph.input:
        dims = value.type.tensor_type.shape.dim
        for dim, label in zip(dims, ("batch", "height", "width")):
            if not dim.HasField("dim_value"):
                dim.dim_param = label
    for value in graph.output:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
    del model_proto.metadata_props[:]
    for key, val in (metadata or {}).items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = str(key), str(val)
    if version is not None:
        model_proto.model_version = int(version)
    model_proto.doc_string = "fra_keras export: uint8 images (batch, height, width, 3) -> embeddings, maps"
    onnx.save(model_proto, output_path)
    return model_proto


def check_onnx(onnx_dir: str, names, batches: dict, keras_ref: dict, keras_tol: Tolerance, tight: Tolerance,
               sm_out: dict, report: dict, diffs: dict, problems: List[str]):
    """Check the ONNX file of an export version folder: `onnx.checker` (full check), its input and
    outputs, and onnxruntime's outputs on `batches` vs the Keras reference (`keras_tol`) and vs the
    SavedModel's outputs `sm_out` when given (`tight`). Appends to `problems`; raises
    VerificationError only when the file cannot be checked at all."""
    import onnx

    path = os.path.join(onnx_dir, ONNX_FILE)
    try:
        onnx.checker.check_model(path, full_check=True)
    except Exception as e:
        raise VerificationError(problems + [f"onnx.checker: {first_line(e)}"], report) from None
    report["checks"].append("onnx.checker (full_check)")
    model = onnx.load(path, load_external_data=False)
    graph_inputs = [i for i in model.graph.input]
    dims = [d.dim_param or d.dim_value for d in graph_inputs[0].type.tensor_type.shape.dim] if graph_inputs else []
    if [i.name for i in graph_inputs] != ["images"] or dims[:1] != ["batch"]:
        problems.append(f"ONNX input {[i.name for i in graph_inputs]} dims {dims}: expected images (batch, ...)")
    outs = sorted(o.name for o in model.graph.output)
    if outs != sorted(names):
        problems.append(f"ONNX outputs {outs} differ from the manifest's {sorted(names)}")
    try:
        ort = OnnxPredictor(path)
        for batch, images in batches.items():
            out = ort.predict({"images": images})
            compare_outputs(out, keras_ref[batch], names, keras_tol, "onnx_vs_keras", diffs, problems)
            if sm_out:
                compare_outputs(out, sm_out[batch], names, tight, "onnx_vs_savedmodel", diffs, problems)
        report["checks"].append("onnxruntime outputs")
    except ServingError as e:
        problems.append(f"onnxruntime rejected a verification request: {e}")
