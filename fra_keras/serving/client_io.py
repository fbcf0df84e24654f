"""What the clients in export/clients/ share: reading images, the server hint, and summarizing outputs.

NumPy only at import; Pillow is imported when an image file is read.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from fra_keras.serving.contract import SIGNATURE_INPUTS, ServingError


def serve_command(model_name: str = "fra", export_root: str = "export/models") -> str:
    """The command that serves an export with TF Serving (REST on 8501, gRPC on 8500)."""
    return (f'docker run -p 8501:8501 -p 8500:8500 -v "$PWD/{export_root}/savedmodel/{model_name}:'
            f'/models/{model_name}" -e MODEL_NAME={model_name} tensorflow/serving')


def unreachable_message(protocol: str, where: str, reason: str, model_name: str = "fra") -> str:
    """One line for a client that found no server: what it tried and how to start one."""
    return (f"no TF Serving {protocol} server answered at {where} ({reason}); start one with: "
            f"{serve_command(model_name)} (or pass --host HOST:PORT)")


def summarize_outputs(outputs: Mapping[str, Any]) -> list:
    """Per image: embedding norm, the share of heatmap pixels each region wins, and for 1-D head outputs
    the top index and score. Peaks are picked here, in the client, not in the graph: an argmax baked into
    the graph can disagree between TF and ONNX on ties (np.argmax keeps the lowest index)."""
    arrays = {k: np.asarray(v) for k, v in outputs.items()}
    batch = len(next(iter(arrays.values())))
    rows = []
    for i in range(batch):
        row = {}
        for name, value in arrays.items():
            v = value[i]
            if name == "embedding":
                row["embedding_dim"] = int(v.shape[-1])
                row["embedding_norm"] = round(float(np.linalg.norm(v)), 6)
            elif name == "feature_map":
                row["feature_map_shape"] = list(v.shape)
            elif name == "heatmaps":
                k = v.shape[-1]
                winners = np.argmax(v.reshape(-1, k), axis=-1)
                share = np.bincount(winners, minlength=k) / winners.size
                row["region_share"] = [round(float(s), 4) for s in share]
            elif v.ndim == 1:
                row[name] = {"top": int(np.argmax(v)), "score": round(float(np.max(v)), 6)}
            else:
                row[name] = {"shape": list(v.shape)}
        rows.append(row)
    return rows


def read_image_file(path: str) -> np.ndarray:
    """A JPEG / PNG file as a uint8 RGB array (H, W, 3) (Pillow)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def stack_images(paths: Sequence[str]) -> np.ndarray:
    """Decoded images stacked into one uint8 batch; they must share a size (the model resizes)."""
    images = [read_image_file(p) for p in paths]
    sizes = sorted({im.shape for im in images})
    if len(sizes) > 1:
        raise ServingError(f"images of different sizes {sizes} cannot share a uint8 batch; send them one by "
                           "one, or as encoded bytes (signature serve_image_bytes)")
    return np.stack(images)


def signature_values(image_paths: Sequence[str], signature: str):
    """The input values of `signature` for `image_paths`, as a client sends them.

    `serving_default`: one uint8 batch (N, H, W, 3) of the decoded images; `serve_image_bytes`: the N
    encoded files as bytes; `serve_tf_example`: N serialized `tf.Example`s holding those bytes. An
    unknown signature is a `ServingError` naming the allowed ones.
    """
    if signature not in SIGNATURE_INPUTS:
        raise ServingError(f"--signature {signature!r}: choose one of {list(SIGNATURE_INPUTS)}")
    if signature == "serving_default":
        return stack_images(image_paths)
    if signature == "serve_image_bytes":
        return [read_bytes(p) for p in image_paths]
    from fra_keras.serving.protos import build_tf_example

    return [build_tf_example(read_bytes(p)) for p in image_paths]
