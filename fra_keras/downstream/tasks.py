"""The task runners behind `python -m fra_keras.evaluate`: feature extraction from a frozen backbone,
linear probes on cached features, fine-tuning, k-NN, region awareness, and scoring against label-only
baselines.

`fra_keras.evaluate` keeps the command line (arguments, checks, the JSON report); the runners take its
parsed `args`.  `fit_linear_probe`, `score`, `baselines` and `metric_direction` are also used on their
own (benchmarks/calibrate_synthetic.py, benchmarks/region_experiment.py).  TensorFlow and Keras are
imported inside the functions that need them, so that importing this module (and the command line's
argument checks) stays light.
"""

from __future__ import annotations

import math
import time

from fra_keras.config import VGGFACE2_MEAN, VGGFACE2_STD

#: Default training epochs of a head per protocol (docs/evaluation.md).
DEFAULT_EPOCHS = {"linear": 30, "finetune": 5}


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
    for name in ("purity", "coverage", "consistency", "purity_mass", "coverage_mass", "purity_hard",
                 "consistency_hard", "position_predictability", "part_predictability"):
        metrics[f"synthetic_region_{name}"] = float(trained[name])
        metrics[f"synthetic_region_{name}_random"] = float(baseline[name])
    details = {"model": trained, "random_init": baseline, "num_faces": num,
               "views": "A: as rendered; B: horizontal flip + square crop of 65-90% of the side at a random "
                        "offset, resized back (bilinear image, nearest mask)",
               "chance_purity_density": 1.0 / len(REGION_NAMES), "profile": profile,
               "purity_ideal": trained["purity_ideal"]}
    if args.figure:
        from fra_keras.downstream import plots

        n = min(args.figure_faces, num)
        images = views["image_a"][:n]
        panels = [("model", images, regions.model_heatmaps(extractor.fra_model, images)),
                  ("random", images, regions.model_heatmaps(baseline_model, images))]
        details["figure"] = args.figure
        details["figure_bytes"] = plots.save_png(plots.heatmap_figure(panels), args.figure)
    return metrics, details, {"heatmaps": "FRA.heatmaps (prototype embeddings), bilinear to image size"}
