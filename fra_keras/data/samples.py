"""`python -m fra_keras.data.samples`: write a few synthetic face images to try the serving clients.

    python -m fra_keras.data.samples --output samples/ --num 4          # samples/face-000.jpg ...
    python export/clients/rest_client.py samples/*.jpg                  # against TF Serving
    python -m fra_keras.data.samples --output samples/ --num 4 --npy --overwrite
    saved_model_cli run --dir export/models/savedmodel/fra/1 --tag_set serve \
        --signature_def serving_default --inputs images=samples/faces.npy   # no server at all

--npy also writes faces.npy (the uint8 images stacked, (N, S, S, 3): the `images` input of
serving_default) and image_bytes.npy (the encoded files as an object array: the `image_bytes` input
of serve_image_bytes), because `saved_model_cli run --input_exprs` only accepts Python literals.

The faces are `synthetic_faces_v1` validation faces (`fra_keras.data.synthetic.render_sample`, NumPy
only: no TensorFlow), saved as JPEG (or PNG with --format png) at --size pixels, the same kind of image
the models were pre-trained on by default. Existing files are not overwritten unless --overwrite.
"""

from __future__ import annotations

import argparse
import os
import sys

FORMATS = {"jpg": "JPEG", "png": "PNG"}


def sample_paths(output: str, num: int, fmt: str = "jpg"):
    """The file names `write_samples` uses: OUTPUT/face-000.jpg, face-001.jpg, ..."""
    return [os.path.join(output, f"face-{i:03d}.{fmt}") for i in range(num)]


def write_samples(output: str, num: int = 4, size: int = 112, seed: int = 0, fmt: str = "jpg",
                  overwrite: bool = False):
    """Render `num` synthetic faces and save them under `output` (created); returns the paths."""
    from PIL import Image

    from fra_keras.data.synthetic import render_sample

    paths = sample_paths(output, num, fmt)
    taken = [p for p in paths if os.path.exists(p)]
    if taken and not overwrite:
        raise FileExistsError(f"--output {output!r} already holds {os.path.basename(taken[0])}; pass --overwrite "
                              "or choose another folder")
    os.makedirs(output, exist_ok=True)
    for index, path in enumerate(paths):
        image = render_sample(index, seed=seed, image_size=size, split="validation")["image"]
        tmp = f"{path}.tmp-{os.getpid()}"
        Image.fromarray(image).save(tmp, format=FORMATS[fmt], **({"quality": 95} if fmt == "jpg" else {}))
        os.replace(tmp, path)
    return paths


def write_npy(output: str, paths) -> list:
    """faces.npy (uint8 (N, S, S, 3)) and image_bytes.npy (object array of the encoded files) in
    `output`, the inputs of `saved_model_cli run --inputs`; returns their paths."""
    import numpy as np
    from PIL import Image

    faces = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths]).astype(np.uint8)
    encoded = np.empty(len(paths), dtype=object)
    for i, p in enumerate(paths):
        with open(p, "rb") as f:
            encoded[i] = f.read()
    written = []
    for name, array in (("faces.npy", faces), ("image_bytes.npy", encoded)):
        path = os.path.join(output, name)
        np.save(path, array, allow_pickle=array.dtype == object)
        written.append(path)
    return written


def _check_args(args):
    """One-line problems with the arguments, or None."""
    from fra_keras.data.synthetic import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE

    if not 1 <= args.num <= 1000:
        return f"--num {args.num}: must be between 1 and 1000"
    if not MIN_IMAGE_SIZE <= args.size <= MAX_IMAGE_SIZE:
        return f"--size {args.size}: synthetic faces are rendered at {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} px"
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        return f"--output {args.output!r} is an existing file; give a folder"
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fra_keras.data.samples",
                                     description="Write synthetic face images (JPEG / PNG) to try the clients.")
    parser.add_argument("--output", default="samples", help="folder to write to (default samples/)")
    parser.add_argument("--num", type=int, default=4, help="number of faces (default 4)")
    parser.add_argument("--size", type=int, default=112, help="pixels a side (default 112)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--format", default="jpg", choices=sorted(FORMATS), help="jpg (default) or png")
    parser.add_argument("--overwrite", action="store_true", help="replace existing face-NNN files")
    parser.add_argument("--npy", action="store_true",
                        help="also write faces.npy and image_bytes.npy for saved_model_cli run --inputs")
    args = parser.parse_args(argv)
    problem = _check_args(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        paths = write_samples(args.output, args.num, args.size, args.seed, args.format, args.overwrite)
    except (FileExistsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.npy:
        paths += write_npy(args.output, paths)
    print(f"wrote {args.num} synthetic faces ({args.size} px): {', '.join(paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
