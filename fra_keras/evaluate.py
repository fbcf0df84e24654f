"""`python -m fra_keras.evaluate TASK --model PATH --data SPEC`: downstream evaluation of a backbone.

Tasks (docs/method.md, "Downstream protocols"; docs/datasets.md):
  expression   softmax classifier; top-1 and mean per-class accuracy
  attributes   40 sigmoid outputs, unknown labels (-1) masked; mean binary accuracy (0.5 threshold)
  landmarks    soft-argmax heatmap regression; NME (outer-eye-corner normalised) and failure rate @10%
  knn          k-nearest-neighbour accuracy of frozen pooled embeddings (cosine; no training)
  regions      region awareness of FRA's K heatmaps on synthetic faces (purity, coverage, cross-view
               consistency), next to a randomly initialised FRA of the same config

Examples::

    python -m fra_keras.evaluate expression --model runs/x/model.keras                 # synthetic faces
    python -m fra_keras.evaluate expression --model runs/x/backbone.weights.h5 --data rafdb:/data/RAF-DB
    python -m fra_keras.evaluate attributes --model runs/x --data celeba:/data/celeba --protocol finetune
    python -m fra_keras.evaluate landmarks --model export/models/fra/1 --data wflw:/data/WFLW
    python -m fra_keras.evaluate regions --model runs/x/model.keras --figure heatmaps.png
    python -m fra_keras.evaluate expression --model random --backbone-width 32      # a baseline

The head trains with a Keras progress bar on a terminal (one line per epoch when the output goes to a
file or pipe). Every run writes a JSON report (task, protocol, metrics, data, model config, timing) to
--output (default reports/<task>-<timestamp>/report.json) and saves the trained head as head.keras
(input: the backbone feature map; output: a dict of named tensors) and, for Keras backbones, the whole
model as model.keras: in --save-dir, by default the report's folder (or, for an explicit --output
PATH.json, the folder PATH/). The summary names each metric's direction (higher / lower is better).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

from fra_keras import cli_utils
from fra_keras.config import VGGFACE2_MEAN, VGGFACE2_STD

TASKS = ("expression", "attributes", "landmarks", "knn", "regions")
DEFAULT_EPOCHS = {"linear": 30, "finetune": 5}

EPILOG = """\
model kinds (--model):
  model.keras            a FRA model from pre-training (the only kind with region heatmaps)
  backbone.weights.h5    the pre-trained backbone; config.json must be beside it
  RUN_DIR                a pre-training run folder (uses model.keras, else backbone.weights.h5)
  SAVED_MODEL_DIR        an exported SavedModel (serving_default: uint8 images -> embedding,
                         feature_map); linear probe only
  random                 a randomly initialised backbone (--preset / --config / --backbone-width ...)

data (--data):
  synthetic (default), rafdb:ROOT, affectnet:ROOT, ferplus:ROOT, fer2013:CSV, folder:ROOT (train/ and
  val/ class folders), celeba:ROOT, 300w:ROOT, wflw:LIST_FILE (or the WFLW root)

protocols:
  linear     frozen backbone in inference mode; features are computed once and the head trains on
             them (AdamW 1e-3, wd 1e-4, warm-up + cosine); no augmentation
  finetune   the whole network trains (docs/method.md, "Downstream protocols": AdamW 2e-4, wd 0.05 on
             all weights, 5% linear warm-up, half-cycle cosine to 1e-6 per iteration); horizontal
             flips for expression / attributes

Synthetic-face metrics carry "synthetic" in their key: they are not benchmark numbers.
"""


def build_parser():
    p = argparse.ArgumentParser(prog="python -m fra_keras.evaluate",
                                description="Downstream evaluation of a FRA backbone.", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=TASKS)
    p.add_argument("--model", required=True, metavar="PATH",
                   help="model.keras | backbone.weights.h5 | run folder | SavedModel folder | random")
    p.add_argument("--data", default="synthetic", metavar="SPEC", help="synthetic (default) or LAYOUT:PATH")
    p.add_argument("--protocol", default="linear", choices=("linear", "finetune"))
    p.add_argument("--epochs", type=int, default=None,
                   help=f"training epochs of the head (default {DEFAULT_EPOCHS['linear']} linear, "
                        f"{DEFAULT_EPOCHS['finetune']} finetune)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=None,
                   help="evaluation resolution (default: the model config's image_size)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-3 linear, 2e-4 finetune)")
    p.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (default 1e-4 / 0.05)")
    p.add_argument("--train-samples", type=int, default=None,
                   help="synthetic faces to render for training (default 2000), or a cap on a real train split")
    p.add_argument("--test-samples", type=int, default=None,
                   help="synthetic test faces (default 500; 256 for regions), or a cap on a real test split")
    p.add_argument("--seed", type=int, default=0, help="synthetic data seed, head init and shuffling")
    p.add_argument("--k", type=int, default=20, help="neighbours for the knn task (default 20)")
    p.add_argument("--knn-temperature", type=float, default=0.07,
                   help="knn vote weight exp(cos / T) (default 0.07; 0 = one vote per neighbour)")
    p.add_argument("--landmark-hidden", type=int, default=0,
                   help="channels of a 3x3 conv before the landmark logits (default 0: linear head)")
    p.add_argument("--landmark-upsample", type=int, default=1,
                   help="bilinear upsampling of the feature map before the landmark logits (default 1)")
    p.add_argument("--figure", default=None, metavar="PNG", help="regions: write heatmap pictures here")
    p.add_argument("--figure-faces", type=int, default=4, help="regions: faces per model in --figure")
    p.add_argument("--output", default=None, metavar="JSON",
                   help="write the report here (default: reports/<task>-<timestamp>/report.json)")
    p.add_argument("--save-dir", default=None,
                   help="write head.keras (and model.keras) here (default: the default report's folder; "
                        "for an explicit --output PATH.json, the folder PATH/)")
    p.add_argument("--verbose", type=int, default=None, choices=(0, 1, 2),
                   help="Keras progress: 1 bar, 2 one line per epoch, 0 silent (default: 1 on a terminal, "
                        "2 when the output goes to a file or pipe)")
    g = p.add_argument_group("--model random (and the regions baseline's preset)")
    g.add_argument("--preset", default="tiny", help="FRAConfig preset for --model random (default tiny)")
    g.add_argument("--config", default=None, help="a config.json for --model random instead of a preset")
    g.add_argument("--backbone", default=None, help="resnet18 | resnet34 | resnet50 | resnet101")
    g.add_argument("--backbone-width", type=int, default=None)
    g.add_argument("--output-stride", type=int, default=None, choices=(8, 16, 32))
    return p


# Helpers -----------------------------------------------------------------------------------------
def _random_overrides(args):
    out = {}
    for name in ("backbone", "backbone_width", "output_stride", "image_size"):
        value = getattr(args, name)
        if value is not None:
            out[name] = value
    return out


def _jsonable(value):
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _batches(dataset, batch_size):
    import tensorflow as tf

    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def extract(extractor, dataset, label_key, batch_size, pooled, total=None, verbose=1, what="features"):
    """Run the frozen backbone over `dataset`: (features, labels) as NumPy arrays.

    `pooled`: keep (N, 1, 1, C) averages (what pooling heads see) instead of the (N, h, w, C) maps."""
    import keras
    import numpy as np
    import tensorflow as tf

    bar = keras.utils.Progbar(total, unit_name="image", verbose=1 if verbose == 1 else 0)
    feats, labels = [], []
    for batch in _batches(dataset, batch_size):
        fmap = extractor.feature_map(batch["image"])
        if pooled:
            fmap = tf.reduce_mean(fmap, axis=[1, 2], keepdims=True)
        feats.append(np.asarray(fmap, np.float32))
        labels.append(np.asarray(batch[label_key]))
        bar.add(int(batch["image"].shape[0]))
    if not feats:
        raise ValueError(f"no images to compute {what} from")
    return np.concatenate(feats), np.concatenate(labels)


def _targets(task, labels, image_size):
    from fra_keras.downstream.models import to_normalized

    if task == "landmarks":
        return to_normalized(labels, image_size, image_size)
    return labels


#: Metric-name parts whose values are errors (lower is better); every other metric (accuracies,
#: region purity / coverage / consistency) is a score (higher is better).
LOWER_IS_BETTER = ("nme", "failure_rate")


def metric_direction(name: str) -> str:
    """'lower' or 'higher' (is better) for a report metric name such as 'synthetic_nme'."""
    return "lower" if any(part in name for part in LOWER_IS_BETTER) else "higher"


def baselines(task, train_labels, test_labels, num_classes=None):
    """What each metric scores without looking at the image: {metric: (value, what)}.

    expression: top-1 of always answering the training set's majority class, and chance (1 / C) for
    mean-class accuracy; attributes: each attribute's training majority value; landmarks: the NME and
    failure rate of the training set's mean shape. Pure NumPy.
    """
    import numpy as np

    from fra_keras.downstream import metrics as m

    if task == "expression":
        c = int(num_classes or max(int(np.max(train_labels)), int(np.max(test_labels))) + 1)
        majority = int(np.argmax(np.bincount(train_labels, minlength=c)))
        return {"top1_accuracy": (float(np.mean(test_labels == majority)), f"majority class ({majority})"),
                "mean_class_accuracy": (1.0 / c, f"chance (1/{c})")}
    if task == "attributes":
        known_train = train_labels >= 0
        positive = np.sum((train_labels == 1) & known_train, 0) * 2 >= np.maximum(np.sum(known_train, 0), 1)
        known = test_labels >= 0
        hits = np.where(known, test_labels == positive[None].astype(test_labels.dtype), False)
        return {"attribute_accuracy": (float(hits.sum() / max(known.sum(), 1)), "training majority per attribute")}
    if task == "landmarks":
        mean_shape = np.broadcast_to(np.asarray(train_labels, np.float64).mean(axis=0, keepdims=True),
                                     np.shape(test_labels))
        nme = m.landmark_nme(mean_shape, test_labels)
        return {"nme": (float(nme.mean()), "training mean shape"),
                "failure_rate_10": (m.failure_rate(nme, 0.10), "training mean shape")}
    raise ValueError(task)


def score(task, outputs, labels, image_size, prefix="synthetic", class_names=None, train_labels=None):
    """(metrics prefixed with the data name, details) from head outputs and raw test labels.

    Landmark labels are pixels at `image_size`; head outputs are normalised (see heads.py).
    With `train_labels`, details["baselines"] gives every metric's label-only baseline (`baselines`)
    and details["directions"] whether it is better high or low."""
    import numpy as np

    from fra_keras.downstream import metrics as m
    from fra_keras.downstream.heads import ATTRIBUTE_OUTPUT, EXPRESSION_OUTPUT, LANDMARK_OUTPUT
    from fra_keras.downstream.models import to_pixels

    details = {}
    if task == "expression":
        logits = outputs[EXPRESSION_OUTPUT]
        num_classes = logits.shape[-1]
        values = {"top1_accuracy": m.top1_accuracy(labels, logits),
                  "mean_class_accuracy": m.mean_class_accuracy(labels, logits, num_classes)}
        names = class_names or tuple(str(c) for c in range(num_classes))
        per = m.per_class_accuracy(labels, logits, num_classes)
        details["per_class_accuracy"] = {str(names[c]) if c < len(names) else str(c): per[c]
                                         for c in range(num_classes)}
        details["chance_top1"] = float(np.max(np.bincount(labels, minlength=num_classes)) / len(labels))
    elif task == "attributes":
        logits = outputs[ATTRIBUTE_OUTPUT]
        values = {"attribute_accuracy": m.attribute_accuracy(labels, logits)}
        per = m.per_attribute_accuracy(labels, logits)
        names = class_names or tuple(str(a) for a in range(per.shape[0]))
        details["per_attribute_accuracy"] = {names[a]: per[a] for a in range(per.shape[0]) if np.isfinite(per[a])}
        known = labels >= 0
        majority = np.where(known, labels == (np.sum((labels == 1) & known, 0) * 2 >= np.sum(known, 0)), False)
        details["majority_baseline"] = float(majority.sum() / max(known.sum(), 1))
    elif task == "landmarks":
        predicted = to_pixels(outputs[LANDMARK_OUTPUT], image_size, image_size)
        nme = m.landmark_nme(predicted, labels)
        values = {"nme": float(nme.mean()), "failure_rate_10": m.failure_rate(nme, 0.10)}
        details["nme_median"] = float(np.median(nme))
        details["eye_corner_indices"] = list(m.eye_corner_indices(labels.shape[1]))
        mean_shape = np.broadcast_to(labels.mean(axis=0, keepdims=True), labels.shape)
        details["mean_shape_nme"] = float(m.landmark_nme(mean_shape, labels).mean())
    else:
        raise ValueError(task)
    metrics = {f"{prefix}_{k}": float(v) for k, v in values.items()}
    details["directions"] = {k: metric_direction(k) for k in metrics}
    if train_labels is not None:
        num_classes = outputs[EXPRESSION_OUTPUT].shape[-1] if task == "expression" else None
        details["baselines"] = {f"{prefix}_{k}": {"value": v, "what": what}
                                for k, (v, what) in baselines(task, train_labels, labels, num_classes).items()}
    return metrics, details


def _model_kwargs(task, data, args, labels=None):
    import numpy as np

    if task == "expression":
        n = len(data.class_names) if data.class_names else int(np.max(labels)) + 1
        return {"num_classes": max(n, 2)}
    if task == "attributes":
        return {"num_attributes": 40}
    return {"num_points": int(data.num_points), "hidden": args.landmark_hidden, "upsample": args.landmark_upsample}


# Tasks -------------------------------------------------------------------------------------------
def fit_linear_probe(task, channels, x_train, y_train, x_test, image_size, epochs=DEFAULT_EPOCHS["linear"],
                     batch_size=64, optimizer=None, seed=0, verbose=1, head_kwargs=None,
                     mean=VGGFACE2_MEAN, std=VGGFACE2_STD, timing=None):
    """Train a `task` head on cached frozen features; returns (feature-input model, history, test outputs).

    `x_*`: (N, h, w, C) feature maps (or (N, 1, 1, C) pooled features for pooling heads); `y_train`: raw
    labels (landmarks in pixels at `image_size`). The returned model's `.head` is the trained head."""
    import keras
    import numpy as np

    from fra_keras.downstream.models import TASK_MODELS, downstream_optimizer

    keras.utils.set_random_seed(seed)
    if optimizer is None:
        optimizer = downstream_optimizer("linear", max(1, math.ceil(len(x_train) / batch_size)), epochs)
    model = TASK_MODELS[task](backbone=None, channels=channels, protocol="linear", mean=mean, std=std,
                              **(head_kwargs or {}))
    model.compile(optimizer=optimizer)
    timing = {} if timing is None else timing
    t = time.time()
    history = model.fit(x_train, _targets(task, y_train, image_size), batch_size=batch_size, epochs=epochs,
                        shuffle=True, verbose=verbose)
    timing["train_s"] = time.time() - t
    t = time.time()
    outputs = {k: np.asarray(v) for k, v in model.predict(x_test, batch_size=batch_size, verbose=0).items()}
    timing["eval_s"] = time.time() - t
    return model, history, outputs


def run_head(args, extractor, data, timing):
    """Train and score a task head (linear on cached features, or fine-tune end to end)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from fra_keras.downstream.models import FINETUNE_LR, LINEAR_LR, TASK_MODELS, downstream_optimizer

    task, protocol = args.task, args.protocol
    epochs = args.epochs or DEFAULT_EPOCHS[protocol]
    bs = args.batch_size
    cls = TASK_MODELS[task]
    meta = dict(mean=extractor.mean, std=extractor.std)
    keras.utils.set_random_seed(args.seed)
    steps = max(1, math.ceil(data.num_train / bs))
    optimizer = downstream_optimizer(protocol, steps, epochs, args.lr, args.weight_decay)
    full_model = None
    if protocol == "linear":
        t = time.time()
        pooled = task != "landmarks"
        if args.verbose:
            print(f"features: {data.num_train} train + {data.num_test} test images", flush=True)
        x_train, y_train = extract(extractor, data.train, data.label_key, bs, pooled, data.num_train, args.verbose)
        x_test, y_test = extract(extractor, data.test, data.label_key, bs, pooled, data.num_test, args.verbose)
        timing["features_s"] = time.time() - t
        kwargs = _model_kwargs(task, data, args, y_train)
        model, history, outputs = fit_linear_probe(
            task, extractor.channels, x_train, y_train, x_test, data.image_size, epochs=epochs, batch_size=bs,
            optimizer=optimizer, seed=args.seed, verbose=args.verbose, head_kwargs=kwargs, timing=timing, **meta)
        if extractor.backbone is not None:
            full_model = cls(backbone=extractor.backbone, head=model.head, protocol="linear", **kwargs, **meta)
        head = model.head
    else:
        kwargs = _model_kwargs(task, data, args, _peek_labels(data) if task == "expression" else None)
        model = cls(backbone=extractor.backbone, protocol="finetune", **kwargs, **meta)
        model.compile(optimizer=optimizer)
        flip = task in ("expression", "attributes")
        key = data.label_key

        def prepare(element, augment):
            image = extractor.normalize(element["image"])
            if augment and flip:
                image = tf.image.stateless_random_flip_left_right(image, element["_seed"])
            target = element[key]
            if task == "landmarks":
                target = (tf.cast(target, tf.float32) + 0.5) / float(data.image_size)
            return image, {key: target}

        seeds = tf.data.Dataset.random(seed=args.seed).batch(2)
        train = tf.data.Dataset.zip(data.train, seeds).map(lambda e, s: dict(e, _seed=s))
        train = (train.shuffle(min(data.num_train, 4096), seed=args.seed, reshuffle_each_iteration=True)
                 .map(lambda e: prepare(e, True), num_parallel_calls=tf.data.AUTOTUNE)
                 .batch(bs).prefetch(tf.data.AUTOTUNE))
        t = time.time()
        history = model.fit(train, epochs=epochs, verbose=args.verbose)
        timing["train_s"] = time.time() - t
        t = time.time()
        outs, labels = [], []
        for batch in _batches(data.test, bs):
            pred = model(extractor.normalize(batch["image"]), training=False)
            outs.append({k: np.asarray(v) for k, v in pred.items()})
            labels.append(np.asarray(batch[key]))
        outputs = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
        y_test = np.concatenate(labels)
        timing["eval_s"] = time.time() - t
        full_model, head = model, model.head
    train_labels = y_train if protocol == "linear" else _peek_labels(data)
    metrics, details = score(task, outputs, y_test, data.image_size, data.name, data.class_names, train_labels)
    setup = dict(epochs=epochs, batch_size=bs, steps_per_epoch=steps, optimizer="AdamW",
                 learning_rate=args.lr if args.lr is not None else (FINETUNE_LR if protocol == "finetune" else LINEAR_LR),
                 weight_decay=float(optimizer.weight_decay), schedule="linear warm-up 5% + half-cycle cosine to 1e-6",
                 head=kwargs, augmentation="horizontal flip" if protocol == "finetune" and task != "landmarks"
                 else "none")
    hist = {k: [float(x) for x in v] for k, v in history.history.items()}
    return metrics, details, setup, hist, head, full_model


def _peek_labels(data):
    import numpy as np

    return np.concatenate([np.asarray(b[data.label_key]) for b in _batches(data.train, 256)])


def run_knn(args, extractor, data, timing):
    import numpy as np

    from fra_keras.downstream import metrics as m

    t = time.time()
    x_train, y_train = extract(extractor, data.train, data.label_key, args.batch_size, True, data.num_train,
                               args.verbose)
    x_test, y_test = extract(extractor, data.test, data.label_key, args.batch_size, True, data.num_test,
                             args.verbose)
    timing["features_s"] = time.time() - t
    t = time.time()
    temperature = args.knn_temperature or None
    x_train, x_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
    pred = m.knn_predict(x_train, y_train, x_test, k=args.k, temperature=temperature,
                         num_classes=int(max(y_train.max(), y_test.max())) + 1)
    timing["eval_s"] = time.time() - t
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    metrics = {f"{data.name}_knn_top1_accuracy": m.top1_accuracy(y_test, pred),
               f"{data.name}_knn_mean_class_accuracy": m.mean_class_accuracy(y_test, pred, num_classes)}
    details = {"chance_top1": float(np.max(np.bincount(y_test, minlength=num_classes)) / len(y_test)),
               "directions": {k: metric_direction(k) for k in metrics},
               "baselines": {f"{data.name}_knn_{k}": {"value": v, "what": what}
                             for k, (v, what) in baselines("expression", y_train, y_test, num_classes).items()}}
    setup = {"k": args.k, "temperature": temperature, "similarity": "cosine", "embedding": "global average pool"}
    return metrics, details, setup


def run_regions(args, extractor, timing):
    from fra_keras.data.synthetic import REGION_NAMES
    from fra_keras.downstream import regions
    from fra_keras.downstream.loading import build_random

    if not extractor.has_regions:
        from fra_keras.downstream.loading import ModelLoadError

        what = ("a FRA model trained without the region branch (region_losses=False)"
                if extractor.fra_model is not None else f"a {extractor.kind.replace('_', ' ')}")
        raise ModelLoadError(f"--model {args.model!r}: the regions task needs a FRA model.keras with the region "
                             f"branch (region_losses=True); this is {what}")
    num = args.test_samples or 256
    t = time.time()
    from fra_keras.downstream.data import parse_spec, synthetic_profile

    profile = synthetic_profile("regions", parse_spec(args.data)[1])
    views = regions.render_views(num, extractor.image_size, seed=args.seed, profile=profile)
    timing["data_s"] = timing.get("data_s", 0.0) + time.time() - t
    t = time.time()
    trained = regions.evaluate_regions(extractor.fra_model, views, REGION_NAMES, args.batch_size)
    _, baseline_model = build_random(extractor.fra_model.config, seed=args.seed + 1000, with_regions=True)
    baseline = regions.evaluate_regions(baseline_model, views, REGION_NAMES, args.batch_size)
    timing["eval_s"] = time.time() - t
    metrics = {}
    for name in ("purity", "coverage", "consistency", "purity_mass", "coverage_mass"):
        metrics[f"synthetic_region_{name}"] = float(trained[name])
        metrics[f"synthetic_region_{name}_random"] = float(baseline[name])
    details = {"model": trained, "random_init": baseline, "num_faces": num,
               "views": "A: as rendered; B: horizontal flip + square crop of 65-90% of the side at a random "
                        "offset, resized back (bilinear image, nearest mask)",
               "chance_purity_density": 1.0 / len(REGION_NAMES), "profile": profile}
    if args.figure:
        from fra_keras.downstream import plots

        n = min(args.figure_faces, num)
        images = views["image_a"][:n]
        panels = [("model", images, regions.model_heatmaps(extractor.fra_model, images)),
                  ("random", images, regions.model_heatmaps(baseline_model, images))]
        details["figure"] = args.figure
        details["figure_bytes"] = plots.save_png(plots.heatmap_figure(panels), args.figure)
    return metrics, details, {"heatmaps": "FRA.heatmaps (prototype embeddings), bilinear to image size"}


# Driver ------------------------------------------------------------------------------------------
def run(args) -> dict:
    """Evaluate as `args` say; returns the report dict (also written to --output)."""
    import keras
    import tensorflow as tf

    import fra_keras
    from fra_keras.downstream.data import load_task_data
    from fra_keras.downstream.loading import ModelLoadError, load_feature_extractor

    start = time.time()
    timing = {}
    overrides = _random_overrides(args)
    preset = args.preset
    if args.model == "random" and args.config:
        from fra_keras.config import FRAConfig

        base = FRAConfig.from_json(args.config)
        preset, overrides = base.preset, dict(base.to_dict(), **overrides)
        overrides.pop("preset", None)
        from fra_keras.config import PRESETS

        if preset not in PRESETS:
            preset = "tiny"
    extractor = load_feature_extractor(args.model, image_size=args.image_size, preset=preset,
                                       config_overrides=overrides, seed=args.seed,
                                       with_regions=args.task == "regions")
    timing["load_s"] = time.time() - start
    if args.protocol == "finetune" and not extractor.can_finetune:
        raise ModelLoadError(f"--model {args.model!r}: a SavedModel has no trainable Keras weights; use "
                             "--protocol linear (or pass model.keras / backbone.weights.h5)")
    report = {"task": args.task, "protocol": args.protocol if args.task in ("expression", "attributes", "landmarks")
              else None, "model": extractor.describe()}
    artifacts = {}
    if args.task == "regions":
        metrics, details, setup = run_regions(args, extractor, timing)
        report["data"] = {"name": "synthetic", "spec": args.data, "generator": "synthetic_faces_v1",
                          "profile": details["profile"],
                          "split": "test", "num_faces": details["num_faces"], "image_size": extractor.image_size,
                          "seed": args.seed}
    else:
        t = time.time()
        data = load_task_data(args.data, args.task, extractor.image_size, args.train_samples, args.test_samples,
                              args.seed)
        timing["data_s"] = time.time() - t
        report["data"] = data.describe()
        if args.task == "knn":
            metrics, details, setup = run_knn(args, extractor, data, timing)
        else:
            metrics, details, setup, history, head, full_model = run_head(args, extractor, data, timing)
            report["history"] = history
            save_dir = args.save_dir or (os.path.splitext(args.output)[0] if args.output else None)
            if save_dir:
                os.makedirs(save_dir, exist_ok=True)
                artifacts["head"] = os.path.join(save_dir, "head.keras")
                head.save(artifacts["head"])
                if full_model is not None:
                    artifacts["model"] = os.path.join(save_dir, "model.keras")
                    full_model.save(artifacts["model"])
    timing["total_s"] = time.time() - start
    report.update(metrics=metrics, details=details, setup=setup, timing=timing, artifacts=artifacts,
                  seed=args.seed, versions={"fra_keras": fra_keras.__version__, "tensorflow": tf.__version__,
                                            "keras": keras.__version__})
    report = _jsonable(report)
    if args.output:
        from fra_keras.config import atomic_write_text

        folder = os.path.dirname(os.path.abspath(args.output))
        os.makedirs(folder, exist_ok=True)
        atomic_write_text(args.output, json.dumps(report, indent=2) + "\n")
    return report


def _summary(report) -> str:
    lines = [f"{report['task']} ({report['protocol'] or 'no training'}) on {report['data']['spec']} "
             f"with {report['model']['kind']} {report['model']['path'] or ''}".rstrip()]
    base = report.get("details", {}).get("baselines", {})
    for k, v in report["metrics"].items():
        text = f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}"
        text += f"  ({metric_direction(k)} is better"
        if k in base:
            text += f"; baseline {base[k]['value']:.4f} = {base[k]['what']}"
        lines.append(text + ")")
    lines.append(f"  time: {report['timing']['total_s']:.1f}s")
    return "\n".join(lines)


def default_output(task: str, root: str = "reports") -> str:
    """reports/<task>-<YYYYmmdd-HHMMSS>/report.json (a new folder: -2, -3, ... if it exists)."""
    base = os.path.join(root, f"{task}-{time.strftime('%Y%m%d-%H%M%S')}")
    folder, n = base, 1
    while os.path.exists(folder):
        n += 1
        folder = f"{base}-{n}"
    return os.path.join(folder, "report.json")


class OutputPathError(ValueError):
    """--output / --save-dir name a path taken by something of the wrong kind."""


def check_output_paths(args):
    """TensorFlow-free checks of --output / --save-dir: one line when a path is taken by something of
    the wrong kind (a folder where the report file goes, a file where a folder goes)."""
    if args.output is not None and os.path.isdir(args.output):
        raise OutputPathError(f"--output {args.output!r} is a folder; give a file name such as "
                             f"{os.path.join(args.output, 'report.json')!r}")
    for flag, folder in (("--output", os.path.dirname(os.path.abspath(args.output)) if args.output else None),
                         ("--save-dir", args.save_dir)):
        if folder is not None and os.path.exists(folder) and not os.path.isdir(folder):
            raise OutputPathError(f"{flag}: {folder!r} is an existing file, not a folder")


def check_data_layout(spec: str, task: str):
    """Read the label files of a real `--data` layout now, before TensorFlow loads (the readers need
    only NumPy), so that a wrong layout is a one-line error within a second instead of after the
    TensorFlow start-up. The data is read again, the usual way, by `run`."""
    import warnings

    from fra_keras.data.readers import DataFormatError
    from fra_keras.downstream import data as task_data

    layout, path = task_data.check_spec(spec, task)
    if layout == "synthetic":
        return
    try:
        with warnings.catch_warnings():   # skipped-record warnings are issued by the real read
            warnings.simplefilter("ignore")
            train, _, _ = task_data._read_layout(layout, path, task)
    except DataFormatError as exc:
        raise task_data.DataSpecError(f"--data {spec!r} is not in the {layout} layout "
                                      f"({task_data.LAYOUT_HELP[layout]}): {exc}") from None
    key = task_data.TASK_KEYS[task]
    if key not in train.labels:
        raise task_data.DataSpecError(f"--data {spec!r}: the {layout} layout has no {key!r} labels, which task "
                                      f"{task!r} needs")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from fra_keras.downstream.data import DataSpecError, check_spec
    from fra_keras.downstream.loading import ModelLoadError, resolve_model_path

    for name in ("epochs", "batch_size", "image_size", "train_samples", "test_samples", "k"):
        value = getattr(args, name)
        if value is not None and value < 1:
            cli_utils.fail(f"--{name.replace('_', '-')} {value}: must be a positive integer")
    try:  # cheap checks first, before TensorFlow loads
        kind, _ = resolve_model_path(args.model)
        check_spec(args.data, args.task)
        if kind == "saved_model" and args.protocol == "finetune":
            raise ModelLoadError(f"--model {args.model!r} is a SavedModel: linear probe only (--protocol linear)")
        check_output_paths(args)
        if args.task != "regions":
            check_data_layout(args.data, args.task)
    except (ModelLoadError, DataSpecError, OutputPathError) as exc:
        cli_utils.fail(str(exc))
    if args.output is None:   # every run keeps its report and its head
        args.output = default_output(args.task)
        args.save_dir = args.save_dir or os.path.dirname(args.output)
    args.verbose = cli_utils.progress_verbosity(args.verbose)
    cli_utils.quiet_tensorflow()
    from fra_keras.config import ConfigError
    from fra_keras.data.readers import DataFormatError

    try:
        report = run(args)
    except (ModelLoadError, DataSpecError, ConfigError, DataFormatError) as exc:
        cli_utils.fail(str(exc))
    print(_summary(report))
    print(f"report: {args.output}")
    for kind, path in report.get("artifacts", {}).items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
