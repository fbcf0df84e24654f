"""The serving graph: plain tf.functions on a tf.Module, each weight stored once, float32 throughout.

Signatures (preprocessing inside the graph: `fra_keras.preprocessing.resize_images` to the config's
image_size, then `normalize_images` with the training statistics):

* `serving_default(images: uint8 (B, H, W, 3))`
* `serve_image_bytes(image_bytes: string (B,))`        encoded JPEG / PNG
* `serve_tf_example(examples: string (B,))`            serialized tf.Example, feature `image` = encoded bytes

each returning `embedding` (B, C) (pooled backbone features), `feature_map` (B, h, w, C),
`heatmaps` (B, h, w, K) when the model has the region branch (prototypes), and the head's outputs
when a head is exported.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from fra_keras import losses
from fra_keras.config import FRAConfig
from fra_keras.exporter.layout import TF_EXAMPLE_IMAGE_KEY
from fra_keras.exporter.source import Source, head_values
from fra_keras.models.backbone import build_backbone
from fra_keras.models.fra import dtype_policy
from fra_keras.preprocessing import normalize_images, resize_images


def float32_components(source: Source):
    """Float32 copies of the backbone and pixel projector (compute in float32 whatever the training
    precision, plain BatchNorm instead of SyncBN) with the trained weights, and the prototypes.

    Returns (backbone, pixel_proj or None, prototypes (K, D) float32 array or None).
    """
    config = source.config
    with dtype_policy("float32"):
        backbone = build_backbone(config.replace(precision="float32"), name="backbone", synchronized=False)
        backbone.set_weights(source.backbone.get_weights())
        pixel_proj, prototypes = None, None
        if source.has_regions:
            original = source.model.neck.pixel_proj
            pixel_proj = type(original).from_config({**original.get_config(), "synchronized": False,
                                                     "dtype": "float32", "name": "pixel_proj"})
            pixel_proj.build((None, None, None, config.feature_channels))
            pixel_proj.set_weights(original.get_weights())
            prototypes = source.model.prototypes.numpy().astype("float32")
    return backbone, pixel_proj, prototypes


def _weights_of(layer) -> dict:
    # Only the variables are tracked, not the Keras objects: tracking a Keras model makes
    # tf.saved_model.save trace its `_default_save_signature` with unknown spatial dimensions
    # (which fails for some heads, e.g. bilinear UpSampling2D) and stores extra functions.
    out = {}
    for w in layer.weights:
        value = getattr(w, "value", w)
        out[w.path] = value if isinstance(value, tf.Variable) else w
    return out


def build_serving_module(config: FRAConfig, backbone, pixel_proj=None, prototypes=None, head=None,
                         head_names: Sequence[str] = ()):
    """A `tf.Module` with the three serving tf.functions (see the module docstring)."""
    size = int(config.image_size)
    mean = [float(v) for v in config.mean]
    std = [float(v) for v in config.std]
    scale = float(config.heatmap_scale)
    head_names = list(head_names)

    class FRAServing(tf.Module):
        def __init__(self):
            super().__init__(name="fra_serving")
            self.backbone_weights = _weights_of(backbone)
            if pixel_proj is not None:
                self.pixel_proj_weights = _weights_of(pixel_proj)
                self.prototypes = tf.Variable(prototypes, trainable=False, name="prototypes")
            if head is not None:
                self.head_weights = _weights_of(head)

        def _outputs(self, resized):
            x = normalize_images(resized, mean, std)
            features = tf.cast(backbone(x, training=False), tf.float32)
            out = {"embedding": tf.reduce_mean(features, axis=[1, 2]), "feature_map": features}
            if pixel_proj is not None:
                pixel = pixel_proj(features, training=False)
                out["heatmaps"] = losses.region_heatmaps(pixel, self.prototypes, scale)
            if head is not None:
                values = head_values(head(features, training=False), head_names)
                for n, v in zip(head_names, values):
                    out[n] = tf.cast(v, tf.float32)
            return out

        def _decode(self, encoded):
            image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
            image.set_shape([None, None, 3])
            return resize_images(image[tf.newaxis], size)[0]

        def _from_encoded(self, encoded):
            resized = tf.map_fn(self._decode, encoded,
                                fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
            return self._outputs(resized)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
        def serve_images(self, images):
            return self._outputs(resize_images(images, size))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve_image_bytes(self, image_bytes):
            return self._from_encoded(image_bytes)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve_tf_example(self, examples):
            parsed = tf.io.parse_example(
                examples, {TF_EXAMPLE_IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
            return self._from_encoded(parsed[TF_EXAMPLE_IMAGE_KEY])

    return FRAServing()


#: The tf.function of the serving module behind each signature.
MODULE_FUNCTIONS = {"serving_default": "serve_images", "serve_image_bytes": "serve_image_bytes",
                    "serve_tf_example": "serve_tf_example"}


def serving_signatures(module) -> dict:
    """Signature name -> the module's tf.function, for `tf.saved_model.save(..., signatures=...)`."""
    return {sig: getattr(module, fn) for sig, fn in MODULE_FUNCTIONS.items()}
