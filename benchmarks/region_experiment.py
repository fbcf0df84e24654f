"""Region recipes ablation: which recipe wakes the region branch, and does it help? (CPU, ~2 hours)

    python benchmarks/region_experiment.py --quick                          # minutes: checks the plumbing
    python benchmarks/region_experiment.py                                  # the table in docs/evaluation.md
    python benchmarks/region_experiment.py --variants reference,regions,byol --seeds 0,1,2 --first-seed-only ""

Every variant is the `tiny` preset (narrow ResNet-18, 96 px, output stride 16 -> 6x6 heatmap grid) on
synthetic faces in the pre-training framing ("crop"), pre-trained for the same number of steps with
`python -m fra_keras.pretrain` and explicit flags (`VARIANTS`):

* reference   the paper recipe as it is (the reference's decoder and Sinkhorn);
* regions     the opt-in region recipe: content queries + SwAV-style Sinkhorn (docs/method.md);
* swav        Sinkhorn on exp(P / 0.05) alone; content: content queries alone;
* crossview   the region recipe with cross-view clustering targets at weight 2.0: the `tiny` preset's
              default (not in the default --variants; docs/evaluation.md, "Cross-view clustering targets");
* byol        plain BYOL, the global loss only (`--region-losses false`);
* random      no pre-training (the same architecture, random weights).

For each pre-trained model (and each seed) it reports the final mask-embedding cosine and clustering
loss / log K of the training log, the region awareness of the heatmaps (area-normalised purity,
coverage, cross-view consistency; `fra_keras.downstream.regions`), and linear probes at the CLI's
default budget on the evaluation split of `python -m fra_keras.evaluate` (`--data synthetic`):
expression (mean-class accuracy; "aligned" faces), attributes (mean accuracy; "aligned") and landmarks
(NME; "box" crops). Runs already finished in --out-dir are reused (delete the folder or pass --force).
Synthetic-face numbers compare recipes under one protocol; they are not benchmark results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Every recipe flag is explicit, so that a variant means the same whatever the preset's defaults.
_SAME_VIEW = ["--cluster-targets", "same_view", "--cluster-loss-weight", "0.1"]   # the reference's clustering
_REFERENCE = ["--decoder-query-content", "false", "--sinkhorn-epsilon", "0"] + _SAME_VIEW
_RECIPE = ["--decoder-query-content", "true", "--sinkhorn-epsilon", "0.05"]
VARIANTS = {
    "reference": _REFERENCE,
    "regions": _RECIPE + _SAME_VIEW,
    "swav": ["--decoder-query-content", "false", "--sinkhorn-epsilon", "0.05"] + _SAME_VIEW,
    "content": ["--decoder-query-content", "true", "--sinkhorn-epsilon", "0"] + _SAME_VIEW,
    "crossview": _RECIPE + ["--cluster-targets", "cross_view", "--cluster-loss-weight", "2.0"],
    "byol": ["--region-losses", "false"] + _REFERENCE,
}
FULL = dict(epochs=10, steps_per_epoch=25, warmup_epochs=1, train_faces=2000, test_faces=500, region_faces=256,
            probe_epochs=30)
QUICK = dict(epochs=2, steps_per_epoch=2, warmup_epochs=1, train_faces=64, test_faces=32, region_faces=16,
             probe_epochs=2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny scale, to check the whole pipeline in minutes")
    p.add_argument("--variants", default="reference,regions,swav,content,byol",
                   help=f"comma-separated, from {sorted(VARIANTS)} (random is always added)")
    p.add_argument("--seeds", default="0,1", help="pre-training seeds (comma-separated)")
    p.add_argument("--first-seed-only", default="swav,content",
                   help="variants pre-trained at the first seed only (comma-separated; '' for none)")
    p.add_argument("--out-dir", default=None, help="default: runs/region_experiment[_quick]")
    p.add_argument("--figure", default=None, help="heatmap PNG of the first seed (default: OUT_DIR/heatmaps.png)")
    p.add_argument("--force", action="store_true", help="pre-train again even if OUT_DIR has the runs")
    p.add_argument("--image-size", type=int, default=96)
    for key, value in FULL.items():
        p.add_argument("--" + key.replace("_", "-"), type=int, default=None,
                       help=f"default {value} ({QUICK[key]} with --quick)")
    args = p.parse_args(argv)
    scale = QUICK if args.quick else FULL
    for key, value in scale.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in args.variants:
        if v not in VARIANTS:
            p.error(f"--variants: {v!r} is not one of {sorted(VARIANTS)}")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.first_seed_only = {v.strip() for v in args.first_seed_only.split(",") if v.strip()}
    args.out_dir = args.out_dir or os.path.join("runs", "region_experiment" + ("_quick" if args.quick else ""))
    args.figure = args.figure or os.path.join(args.out_dir, "heatmaps.png")
    return args


def pretrain_flags(args, variant: str, seed: int, out: str):
    flags = ["--preset", "tiny", "--output-dir", out, "--image-size", str(args.image_size),
             "--epochs", str(args.epochs), "--steps-per-epoch", str(args.steps_per_epoch),
             "--warmup-epochs", str(args.warmup_epochs), "--seed", str(seed), "--no-tensorboard",
             "--heatmap-every", "0", "--verbose", "2"]
    if args.quick:
        flags += ["--batch-size", "8", "--synthetic-samples", "16", "--monitor-every", "0"]
    return flags + VARIANTS[variant]


def pretrain(args, variant, seed):
    """Pre-train (or reuse) one run; returns (run folder, info)."""
    from fra_keras import pretrain as cli

    out = os.path.join(args.out_dir, f"{variant}-s{seed}")
    flags = pretrain_flags(args, variant, seed, out)
    info = {"command": "python -m fra_keras.pretrain " + " ".join(flags)}
    if args.force or not os.path.isfile(os.path.join(out, "model.keras")):
        print(f"\n=== {info['command']}", flush=True)
        t = time.time()
        if cli.main(flags):
            raise SystemExit(f"pre-training {variant} seed {seed} failed")
        info["seconds"] = time.time() - t
    else:
        print(f"=== reusing {out}/model.keras", flush=True)
    with open(os.path.join(out, "summary.json")) as f:
        info["final"] = json.load(f)["final"]
    return out, info


def render(task, split, num, image_size):
    """Images and labels of the evaluation split that `python -m fra_keras.evaluate` uses."""
    import numpy as np

    from fra_keras.data.synthetic import synthetic_dataset
    from fra_keras.downstream.data import synthetic_profile

    keys = ("image", "expression", "attributes") if task == "expression" else ("image", "landmarks68")
    ds = synthetic_dataset(image_size=image_size, seed=0, split=split, num_samples=num, keys=keys,
                           profile=synthetic_profile(task)).batch(64)
    parts = {k: [] for k in keys}
    for batch in ds:
        for k in keys:
            parts[k].append(batch[k].numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def feature_maps(extractor, images, batch_size=64):
    import numpy as np

    return np.concatenate([np.asarray(extractor.feature_map(images[i:i + batch_size]))
                           for i in range(0, len(images), batch_size)])


def probe(extractor, data, args):
    """Linear probes of one frozen backbone at the CLI's default budget: {metric: value}."""
    from fra_keras.downstream.tasks import fit_linear_probe, score

    out = {}
    aligned_train, aligned_test = data["aligned"]
    f_train = feature_maps(extractor, aligned_train["image"]).mean(axis=(1, 2), keepdims=True)
    f_test = feature_maps(extractor, aligned_test["image"]).mean(axis=(1, 2), keepdims=True)
    for task, key, kwargs in (("expression", "expression", {"num_classes": 7}),
                              ("attributes", "attributes", {"num_attributes": 40})):
        _, _, outputs = fit_linear_probe(task, extractor.channels, f_train, aligned_train[key], f_test,
                                         args.image_size, epochs=args.probe_epochs, seed=0, verbose=0,
                                         head_kwargs=kwargs)
        metrics, _ = score(task, outputs, aligned_test[key], args.image_size)
        out.update(metrics)
    box_train, box_test = data["box"]
    _, _, outputs = fit_linear_probe("landmarks", extractor.channels, feature_maps(extractor, box_train["image"]),
                                     box_train["landmarks68"], feature_maps(extractor, box_test["image"]),
                                     args.image_size, epochs=args.probe_epochs, seed=0, verbose=0,
                                     head_kwargs={"num_points": 68})
    metrics, _ = score("landmarks", outputs, box_test["landmarks68"], args.image_size)
    out.update(metrics)
    return out


def _write_json(path, value):
    """Write JSON atomically (NumPy scalars as floats): a failure never leaves half a file."""
    from fra_keras.config import atomic_write_text

    atomic_write_text(path, json.dumps(value, indent=2, default=float) + "\n")


COLUMNS = (("mask_cosine", "mask cos. ↓", "{:.2f}"), ("cluster_ratio", "clu. loss / log K ↓", "{:.2f}"),
           ("purity", "purity ↑", "{:.3f}"), ("coverage", "coverage ↑", "{:.1f}"),
           ("consistency", "consistency ↑", "{:.2f}"),
           ("synthetic_mean_class_accuracy", "expr. mean-class ↑", "{:.3f}"),
           ("synthetic_attribute_accuracy", "attributes ↑", "{:.3f}"), ("synthetic_nme", "landmark NME ↓", "{:.3f}"))


def table(rows):
    """Markdown: one row per variant, mean (± half the range) over seeds."""
    import numpy as np

    out = ["| variant | seeds | " + " | ".join(c[1] for c in COLUMNS) + " |",
           "|---|---|" + "---|" * len(COLUMNS)]
    for name, runs in rows.items():
        cells = []
        for key, _, fmt in COLUMNS:
            values = [r[key] for r in runs if r.get(key) is not None]
            if not values:
                cells.append("–")
                continue
            cell = fmt.format(float(np.mean(values)))
            if len(values) > 1:
                cell += " ± " + fmt.format(float((np.max(values) - np.min(values)) / 2))
            cells.append(cell)
        out.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None):
    args = parse_args(argv)
    from fra_keras.cli_utils import quiet_tensorflow

    quiet_tensorflow()
    from fra_keras.data.synthetic import REGION_NAMES
    from fra_keras.downstream import plots, regions
    from fra_keras.downstream.loading import build_random, load_feature_extractor, random_extractor

    start = time.time()
    os.makedirs(args.out_dir, exist_ok=True)
    runs = {(v, s): pretrain(args, v, s) for v in args.variants for s in args.seeds
            if s == args.seeds[0] or v not in args.first_seed_only}
    print(f"\n=== rendering the evaluation split ({args.train_faces} + {args.test_faces} faces, "
          f"aligned and box) and {args.region_faces} region faces", flush=True)
    data = {"aligned": (render("expression", "train", args.train_faces, args.image_size),
                        render("expression", "test", args.test_faces, args.image_size)),
            "box": (render("landmarks", "train", args.train_faces, args.image_size),
                    render("landmarks", "test", args.test_faces, args.image_size))}
    views = regions.render_views(args.region_faces, args.image_size, seed=0)
    k = None
    rows, results, figure_panels = {}, {}, []
    for (variant, seed), (folder, info) in runs.items():
        print(f"=== evaluating {variant} seed {seed}", flush=True)
        extractor = load_feature_extractor(os.path.join(folder, "model.keras"), image_size=args.image_size,
                                           with_regions=variant != "byol")
        k = extractor.config.num_regions
        cache = os.path.join(folder, "ablation_metrics.json")   # one model's metrics, reused on a rerun
        if os.path.isfile(cache) and not args.force:
            with open(cache) as f:
                row = json.load(f)
        else:
            row = dict(probe(extractor, data, args))
            final = info["final"]
            if variant != "byol":
                report = regions.evaluate_regions(extractor.fra_model, views, REGION_NAMES)
                row.update({m: float(report[m]) for m in ("purity", "coverage", "consistency")})
                row["mask_cosine"] = final.get("mask_cosine")
                row["cluster_ratio"] = final["loss_cluster"] / math.log(k)
                row["dominant_parts"] = list(report["dominant_parts"])
            row["seed"] = seed
            _write_json(cache, row)
        if variant != "byol" and seed == args.seeds[0] and variant in ("reference", "regions"):
            faces = views["image_a"][:4]
            figure_panels.append((variant, faces, regions.model_heatmaps(extractor.fra_model, faces)))
        rows.setdefault(variant, []).append(row)
        results[f"{variant}-s{seed}"] = {"info": info, "metrics": row}
    print("=== evaluating random init", flush=True)
    config = load_feature_extractor(os.path.join(runs[next(iter(runs))][0], "model.keras"),
                                    image_size=args.image_size).config
    rand = random_extractor(config.replace(decoder_query_content=False, sinkhorn_epsilon=0.0), seed=1000,
                            image_size=args.image_size)
    row = dict(probe(rand, data, args))
    _, random_fra = build_random(config.replace(decoder_query_content=False, sinkhorn_epsilon=0.0), seed=1000,
                                 with_regions=True)
    report = regions.evaluate_regions(random_fra, views, REGION_NAMES)
    row.update({m: float(report[m]) for m in ("purity", "coverage", "consistency")})
    rows["random"] = [row]
    results["random"] = {"metrics": row}
    figure_panels.append(("random", views["image_a"][:4], regions.model_heatmaps(random_fra, views["image_a"][:4])))
    size = plots.save_png(plots.heatmap_figure(figure_panels), args.figure)
    text = table(rows)
    settings = {k: sorted(v) if isinstance(v, set) else v for k, v in vars(args).items()}
    summary = {"args": settings, "results": results, "table": text, "seconds": time.time() - start,
               "figure": {"path": args.figure, "bytes": size}}
    _write_json(os.path.join(args.out_dir, "results.json"), summary)
    print("\n" + text)
    print(f"\nfigure: {args.figure} ({size} bytes); results: {os.path.join(args.out_dir, 'results.json')}; "
          f"total {time.time() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
