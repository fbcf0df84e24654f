"""Region-health monitor: is the region branch alive? (on by default in `python -m fra_keras.pretrain`)

Every `every_steps` optimizer steps, on a small fixed held-out set of labelled synthetic faces
("aligned" framing, identity-disjoint "validation" / "test" splits, never seen in pre-training), the
`RegionMonitor` callback measures, in inference mode and in a few seconds:

===================== =================================================================================
key                   meaning
===================== =================================================================================
monitor_mask_cosine   mean pairwise cosine of the K mask embeddings (batch mean over the held-out
                      faces): ~1 = every heatmap the same, the branch is asleep; <= 0.5 = distinct regions
monitor_cluster_ratio clustering loss (online vs target on the same faces) / log K: ~1 = no structure
monitor_region_usage  entropy of how often each region is a pixel's arg-max, / log K: 1 = all K used,
                      0 = one region takes every pixel
monitor_knn_accuracy  k-NN (k=20, cosine) expression accuracy of the pooled online backbone features,
                      reference faces -> query faces: does the representation read expressions?
===================== =================================================================================

A check also runs when training starts (the starting point). Values go to TensorBoard
(``monitor/...`` scalars, x = optimizer step), to ``monitor.csv`` (a row per check) and, the latest check of each epoch, to that epoch's row of ``history.csv``. A plain BYOL model
(``region_losses=False``) gets the k-NN accuracy only. Solo-learn and lightly give an online k-NN or
linear probe; the region-health numbers are this project's (docs/method.md, "Region recipes").
"""

from __future__ import annotations

import csv
import math
import os
import time
from typing import Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from fra_keras import losses
from fra_keras.preprocessing import normalize_images

MONITOR_KEYS = ("monitor_mask_cosine", "monitor_cluster_ratio", "monitor_region_usage", "monitor_knn_accuracy")


def usage_entropy(attention) -> float:
    """Entropy of the arg-max share of each region over all pixels, divided by log K (NumPy).

    attention: (..., K) heatmaps. 1 when every region wins equally many pixels, 0 when one wins all.
    """
    a = np.asarray(attention)
    k = a.shape[-1]
    share = np.bincount(np.argmax(a.reshape(-1, k), axis=-1), minlength=k) / float(a.size // k)
    nz = share[share > 0]
    return float(-np.sum(nz * np.log(nz)) / math.log(k))


def held_out_faces(image_size: int, num_reference: int = 256, num_query: int = 128, seed: int = 0):
    """Labelled synthetic faces for the monitor: (reference images, labels, query images, labels).

    "aligned" framing (posed expressions); references from the "validation" split, queries from "test":
    both identity-disjoint from the "train" split that synthetic pre-training uses.
    """
    from fra_keras.data.synthetic import render_batch

    ref = render_batch(range(num_reference), seed=seed, image_size=image_size, split="validation",
                       profile="aligned")
    query = render_batch(range(num_query), seed=seed, image_size=image_size, split="test", profile="aligned")
    return ref["image"], ref["expression"], query["image"], query["expression"]


def region_health(model, images, batch_size: int = 64) -> Dict[str, float]:
    """Mask cosine, clustering ratio and usage entropy of a FRA `model` on normalised `images`.

    Each network's K embeddings are the held-out batch mean of its mask embeddings (as in training);
    the clustering loss compares the online (student) and target (teacher) cosines of the same pixels.
    """
    c = model.config
    outs = {"masks": [], "pixel": [], "target_masks": [], "target_pixel": []}
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size]
        online = model.neck(model.backbone(x, training=False), training=False)
        target = model.target_neck(model.target_backbone(x, training=False), training=False)
        for key, out in (("", online), ("target_", target)):
            outs[key + "masks"].append(np.asarray(tf.cast(out["masks"], tf.float32)))
            outs[key + "pixel"].append(np.asarray(tf.cast(out["pixel"], tf.float32)))
    outs = {k: np.concatenate(v) for k, v in outs.items()}
    mask_mean = outs["masks"].mean(axis=0)                                          # (K, D)
    attention, s = losses.region_heatmaps(outs["pixel"], mask_mean, c.heatmap_scale, return_logits=True)
    attention, s = attention.numpy(), s.numpy()                                     # (N, h, w, K) each
    t = losses.region_logits(outs["target_pixel"], outs["target_masks"].mean(axis=0)).numpy()
    k = c.num_regions
    cluster = losses.clustering_loss(s.reshape(-1, k), t.reshape(-1, k), c.student_temperature,
                                     c.teacher_temperature, c.sinkhorn_iterations, c.me_max_weight,
                                     c.sinkhorn_epsilon)
    return {"monitor_mask_cosine": float(losses.mean_pairwise_cosine(mask_mean)),
            "monitor_cluster_ratio": float(cluster) / math.log(k),
            "monitor_region_usage": usage_entropy(attention)}


def knn_probe(model, ref_images, ref_labels, query_images, query_labels, k: int = 20,
              batch_size: int = 64) -> float:
    """k-NN expression accuracy of the pooled online backbone features (`model.embed`)."""
    from fra_keras.downstream.metrics import knn_accuracy

    def embed(images):
        return np.concatenate([model.embed(images[i:i + batch_size], training=False).numpy()
                               for i in range(0, len(images), batch_size)])

    return knn_accuracy(embed(ref_images), ref_labels, embed(query_images), query_labels, k=k)


class RegionMonitor(keras.callbacks.Callback):
    """Log region health and a k-NN probe every `every_steps` steps (see the module docstring).

    Args:
      config: the model's `FRAConfig` (image size, normalisation).
      every_steps: optimizer steps between checks (> 0).
      log_dir: TensorBoard folder (None: no TensorBoard). csv_path: monitor.csv (None: not written).
      num_reference / num_query: held-out faces for the k-NN probe (the first `num_query` references
        are also the faces of the region-health check).
      verbose: print one line per check.
    """

    def __init__(self, config, every_steps: int = 25, log_dir: Optional[str] = None,
                 csv_path: Optional[str] = None, num_reference: int = 256, num_query: int = 128,
                 seed: int = 0, verbose: bool = True):
        super().__init__()
        if int(every_steps) < 1:
            raise ValueError(f"every_steps={every_steps!r} must be a positive integer")
        self.config, self.every_steps = config, int(every_steps)
        self.log_dir, self.csv_path, self.verbose = log_dir, csv_path, bool(verbose)
        self.num_reference, self.num_query, self.seed = int(num_reference), int(num_query), int(seed)
        self.latest: Dict[str, float] = {}
        self.history = []
        self._data = None
        self._writer = None

    def on_train_begin(self, logs=None):
        if self._data is None:
            ref, ref_y, query, query_y = held_out_faces(self.config.image_size, self.num_reference,
                                                        self.num_query, self.seed)
            mean, std = self.config.mean, self.config.std
            self._data = (normalize_images(ref, mean, std), ref_y, normalize_images(query, mean, std), query_y)
        if self.log_dir and self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "monitor"))
        # A first check before any step: the starting point, and every epoch row gets the columns.
        self.check()

    def check(self) -> Dict[str, float]:
        """Measure now; returns (and records) the values with the optimizer step."""
        start = time.time()
        ref, ref_y, query, query_y = self._data
        values = {}
        if self.config.region_losses:
            values.update(region_health(self.model, ref[:self.num_query]))
        values["monitor_knn_accuracy"] = knn_probe(self.model, ref, ref_y, query, query_y)
        step = int(self.model.optimizer.iterations.numpy())
        self.latest = values
        self.history.append(dict(step=step, **values))
        if self._writer is not None:
            with self._writer.as_default():
                for key, value in values.items():
                    tf.summary.scalar(key.replace("monitor_", "monitor/"), value, step=step)
            self._writer.flush()
        if self.csv_path:
            new = not os.path.isfile(self.csv_path)
            with open(self.csv_path, "a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=("step",) + MONITOR_KEYS, restval="")
                if new:
                    writer.writeheader()
                writer.writerow(self.history[-1])
        if self.verbose:
            parts = [f"{k.replace('monitor_', '').replace('_', ' ')} {v:.3f}" for k, v in values.items()]
            print(f"monitor step {step}: " + ", ".join(parts) + f" ({time.time() - start:.1f}s)", flush=True)
        return values

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every_steps == 0:
            self.check()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.latest)
