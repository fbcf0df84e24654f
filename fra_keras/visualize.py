"""Pictures of FRA's region heatmaps: PNG grids and a TensorBoard callback.

Each row of a grid shows one face: the input, the argmax region map (each pixel coloured by the region
whose heatmap is largest there), then the K heatmaps, each overlaid on the face in its own colour.
FRA's heatmaps are a softmax over K of cosines at temperature 1 (docs/method.md, "Neck and heatmaps"),
so they are soft; each heatmap panel is stretched to its own min..max so its shape is visible, and the
argmax map shows the partition at a glance.

Command::

    python -m fra_keras.visualize --model runs/<run>/model.keras --images synthetic --output heatmaps.png
    python -m fra_keras.visualize --model runs/<run>/model.keras --images ~/faces --num 6
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

# Region colours (RGB), distinct at a glance; cycled when K > 12.
PALETTE = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40),
], dtype=np.float32)


def region_colours(k: int) -> np.ndarray:
    """(K, 3) float32 RGB colours in 0..255."""
    return PALETTE[np.arange(k) % len(PALETTE)]


def upsample_heatmaps(heatmaps, size: int) -> np.ndarray:
    """(B, h, w, K) -> (B, size, size, K) bilinear, as float32 NumPy."""
    import tensorflow as tf

    return tf.image.resize(tf.convert_to_tensor(heatmaps, tf.float32), (size, size), method="bilinear").numpy()


def heatmap_rows(images_uint8: np.ndarray, heatmaps: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Compose the picture grid.

    Args:
      images_uint8: (B, S, S, 3) faces as shown.
      heatmaps: (B, S, S, K) heatmaps already at image resolution.
    Returns: (B * S, (K + 2) * S, 3) uint8: per row [face | argmax map | K overlays].
    """
    images = np.asarray(images_uint8, np.float32)
    heat = np.asarray(heatmaps, np.float32)
    if images.ndim != 4 or heat.ndim != 4 or images.shape[:3] != heat.shape[:3]:
        raise ValueError(f"images {images.shape} and heatmaps {heat.shape} must be (B,S,S,3) and (B,S,S,K)")
    k = heat.shape[-1]
    colours = region_colours(k)
    rows = []
    for face, hm in zip(images, heat):
        winner = colours[np.argmax(hm, axis=-1)]
        panels = [face, (1 - alpha) * face + alpha * winner]
        for j in range(k):
            m = hm[..., j]
            m = (m - m.min()) / max(float(m.max() - m.min()), 1e-8)
            grey = face.mean(axis=-1, keepdims=True) * 0.6
            w = 0.8 * m[..., None]
            panels.append(grey * (1 - w) + w * colours[j])
        rows.append(np.concatenate(panels, axis=1))
    return np.clip(np.concatenate(rows, axis=0), 0, 255).astype(np.uint8)


def model_heatmap_grid(model, images_uint8: np.ndarray) -> np.ndarray:
    """Run `model.heatmaps` on uint8 faces (resized to the model's image size) and compose the grid."""
    import tensorflow as tf

    from fra_keras.preprocessing import normalize_images

    size = model.config.image_size
    faces = tf.image.resize(tf.convert_to_tensor(images_uint8), (size, size), method="bilinear")
    faces = tf.cast(tf.clip_by_value(tf.round(faces), 0, 255), tf.uint8)
    heat = model.heatmaps(normalize_images(faces, model.config.mean, model.config.std), training=False)
    return heatmap_rows(faces.numpy(), upsample_heatmaps(heat, size))


def sample_faces(source: str, num: int, size: int, seed: int = 0) -> np.ndarray:
    """`num` uint8 faces at `size` px from "synthetic" (validation split, framed like the synthetic
    pre-training faces: the "crop" profile) or an image folder."""
    if source == "synthetic":
        from fra_keras.data.synthetic import render_batch

        return render_batch(range(num), seed=seed, image_size=size, split="validation", profile="crop")["image"]
    from fra_keras.data.folders import list_images, read_image

    paths = list_images(source)[:num]
    return np.stack([read_image(p, size).numpy() for p in paths])


def save_png(array: np.ndarray, path: str) -> None:
    """Write a uint8 picture atomically."""
    from PIL import Image

    tmp = f"{path}.tmp-{os.getpid()}.png"
    Image.fromarray(array).save(tmp, optimize=True)
    os.replace(tmp, path)


def _heatmap_callback_class():
    """Define HeatmapCallback on first use: it subclasses a Keras class, and importing Keras (hence
    TensorFlow) at module import would make every mistake on the command line wait for it."""
    from fra_keras.cli_utils import quiet_tensorflow

    quiet_tensorflow()  # before Keras loads TensorFlow
    import keras

    class HeatmapCallback(keras.callbacks.Callback):
        """Log the heatmap grid of a fixed set of faces to TensorBoard every `every_epochs` epochs.

        The faces are synthetic validation faces (or `images`, uint8 (N, S, S, 3)); the picture is written
        under the tag "heatmaps" of `log_dir/heatmaps`.
        """

        def __init__(self, log_dir, config, every_epochs=1, num_images=4, images=None):
            super().__init__()
            self.log_dir = os.path.join(log_dir, "heatmaps")
            self.every_epochs = max(int(every_epochs), 1)
            self.images = images
            self.num_images = int(num_images)
            self.config = config
            self._writer = None

        def on_epoch_end(self, epoch, logs=None):
            if (epoch + 1) % self.every_epochs:
                return
            import tensorflow as tf

            if self.images is None:
                self.images = sample_faces("synthetic", self.num_images, self.config.image_size, self.config.seed)
            grid = model_heatmap_grid(self.model, self.images)
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(self.log_dir)
            with self._writer.as_default():
                tf.summary.image("heatmaps", grid[None], step=epoch)
            self._writer.flush()

    HeatmapCallback.__module__ = __name__
    return HeatmapCallback


def __getattr__(name):
    """`HeatmapCallback` is created lazily (see `_heatmap_callback_class`)."""
    if name == "HeatmapCallback":
        value = _heatmap_callback_class()
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv=None) -> int:
    from fra_keras import cli_utils

    parser = argparse.ArgumentParser(prog="python -m fra_keras.visualize",
                                     description="Draw FRA region heatmaps over faces as a PNG grid.")
    parser.add_argument("--model", required=True, help="a model.keras written by pre-training")
    parser.add_argument("--images", default="synthetic", help="'synthetic' or a folder of face images")
    parser.add_argument("--output", default="heatmaps.png", help="PNG path (default heatmaps.png)")
    parser.add_argument("--num", type=int, default=6, help="number of faces (rows)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic faces")
    args = parser.parse_args(argv)
    if not args.model.endswith(".keras"):
        cli_utils.fail(f"--model {args.model!r} must be a model.keras from pre-training (it holds the heatmap heads)")
    if not os.path.isfile(args.model):
        cli_utils.fail(f"--model {args.model!r} does not exist")
    if args.images != "synthetic" and not os.path.isdir(args.images):
        cli_utils.fail(f"--images {args.images!r} must be 'synthetic' or an existing folder")
    if args.num < 1:
        cli_utils.fail(f"--num {args.num} must be >= 1")
    cli_utils.quiet_tensorflow()   # only now: the checks above need no TensorFlow
    import keras

    import fra_keras.models.fra  # noqa: F401  (registers the custom objects)

    try:
        model = keras.saving.load_model(args.model)
    except Exception as e:  # a truncated or foreign file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        cli_utils.fail(f"--model {args.model!r} could not be loaded: {first}")
    if not getattr(model, "config", None) or not model.config.region_losses:
        cli_utils.fail(f"--model {args.model!r} has no region branch (trained with region_losses=False)")
    try:
        faces = sample_faces(args.images, args.num, model.config.image_size, args.seed)
    except ValueError as e:
        cli_utils.fail(str(e))
    save_png(model_heatmap_grid(model, faces), args.output)
    print(f"wrote {args.output}: {len(faces)} faces x (input, argmax map, {model.config.num_regions} heatmaps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
