"""onnxruntime client for an fra_keras ONNX export (no server).

    python export/clients/onnx_client.py export/models/onnx/fra/3/model.onnx face1.jpg face2.png
    python export/clients/onnx_client.py MODEL.onnx face.png --json     # full outputs as JSON

The model takes uint8 RGB images (batch, height, width, 3) and resizes / normalises them itself.
Images of the same size are sent as one batch, others one by one. Inputs are validated against the
model's input spec first (fra_keras.serving.OnnxPredictor), so a bad file gives a one-line error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

from fra_keras import serving


def run(model_path: str, image_paths, predictor=None) -> dict:
    """Outputs for `image_paths`, in their order: name -> array (len(image_paths), ...)."""
    import numpy as np

    predictor = predictor or serving.OnnxPredictor(model_path)
    images = [serving.read_image_file(p) for p in image_paths]
    groups = defaultdict(list)
    for i, image in enumerate(images):
        groups[image.shape].append(i)
    results = [None] * len(images)
    for indices in groups.values():
        out = predictor.predict({"images": np.stack([images[i] for i in indices])})
        for j, i in enumerate(indices):
            results[i] = {k: v[j] for k, v in out.items()}
    return {k: np.stack([r[k] for r in results]) for k in results[0]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model.onnx written by python -m fra_keras.export")
    parser.add_argument("images", nargs="+", help="JPEG / PNG files")
    parser.add_argument("--json", action="store_true", help="print every output in full, as JSON")
    args = parser.parse_args(argv)
    try:
        outputs = run(args.model, args.images)
    except (serving.ServingError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # onnxruntime failing to open the file
        print(f"error: {args.model}: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({k: v.tolist() for k, v in outputs.items()}))
        return 0
    for path, row in zip(args.images, serving.summarize_outputs(outputs)):
        print(json.dumps({"image": path, **row}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
