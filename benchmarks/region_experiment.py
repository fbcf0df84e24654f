"""Does the region branch help? FRA vs plain BYOL vs random init, on synthetic faces (CPU, ~1 hour).

    python benchmarks/region_experiment.py --quick                         # minutes: checks the plumbing
    python benchmarks/region_experiment.py --figure docs/region_heatmaps.png   # the full default scale

Steps (everything at the `tiny` preset: narrow ResNet-18, 96 px, output stride 16 -> 6x6 heatmap grid):

1. pre-train (a) FRA and (b) the same model with ``region_losses=False`` (plain BYOL: global loss only)
   for the same number of steps, with `fra_keras.pretrain.main([...])` and explicit flags;
2. render synthetic train / test faces once (identity-disjoint splits) and compute the frozen feature
   maps of (a), (b) and (c) a randomly initialised backbone of the same architecture;
3. linear-probe expression, attributes and landmarks on those features (several probe seeds; mean and
   spread), plus kNN expression accuracy;
4. region awareness (purity, coverage, cross-view consistency) of (a) next to a random FRA;
5. print a table, write results.json in --out-dir and a heatmap picture (--figure).

Runs already finished in --out-dir are reused (delete the folder or pass --force to retrain).
Synthetic-face numbers are not benchmark results; they compare the three models under one protocol.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FULL = dict(epochs=20, steps_per_epoch=25, batch_size=32, warmup_epochs=2, synthetic_samples=2048,
            train_faces=2000, test_faces=500, region_faces=256, probe_epochs=30, probe_seeds=3)
QUICK = dict(epochs=2, steps_per_epoch=3, batch_size=16, warmup_epochs=1, synthetic_samples=64,
             train_faces=96, test_faces=48, region_faces=24, probe_epochs=5, probe_seeds=1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny scale, to check the whole pipeline in minutes")
    p.add_argument("--out-dir", default=None, help="default: runs/region_experiment[_quick]")
    p.add_argument("--figure", default=None, help="heatmap PNG (default: OUT_DIR/region_heatmaps.png)")
    p.add_argument("--force", action="store_true", help="pre-train again even if OUT_DIR has the runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=96)
    for key, value in FULL.items():
        p.add_argument("--" + key.replace("_", "-"), type=int, default=None, help=f"default {value} ({QUICK[key]} with --quick)")
    args = p.parse_args(argv)
    scale = QUICK if args.quick else FULL
    for key, value in scale.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.out_dir = args.out_dir or os.path.join("runs", "region_experiment" + ("_quick" if args.quick else ""))
    args.figure = args.figure or os.path.join(args.out_dir, "region_heatmaps.png")
    return args


def pretrain_flags(args, region_losses: bool, out: str):
    return ["--preset", "tiny", "--output-dir", out, "--region-losses", "true" if region_losses else "false",
            "--image-size", str(args.image_size), "--epochs", str(args.epochs),
            "--steps-per-epoch", str(args.steps_per_epoch), "--warmup-epochs", str(args.warmup_epochs),
            "--batch-size", str(args.batch_size), "--synthetic-samples", str(args.synthetic_samples),
            "--seed", str(args.seed), "--no-tensorboard", "--heatmap-every", "0", "--verbose", "2"]


def pretrain_all(args):
    from fra_keras import pretrain

    runs, info = {}, {}
    for name, region in (("fra", True), ("byol", False)):
        out = os.path.join(args.out_dir, name)
        flags = pretrain_flags(args, region, out)
        done = os.path.isfile(os.path.join(out, "model.keras"))
        if args.force or not done:
            print(f"\n=== pre-training {name}: python -m fra_keras.pretrain {' '.join(flags)}", flush=True)
            t = time.time()
            code = pretrain.main(flags)
            if code:
                raise SystemExit(f"pre-training {name} failed with exit code {code}")
            info[name] = {"seconds": time.time() - t}
        else:
            print(f"=== reusing {out}/model.keras", flush=True)
            info[name] = {"seconds": None}
        summary = os.path.join(out, "summary.json")
        if os.path.isfile(summary):
            with open(summary) as f:
                info[name]["summary"] = json.load(f)
        info[name]["command"] = "python -m fra_keras.pretrain " + " ".join(flags)
        runs[name] = os.path.join(out, "model.keras")
    return runs, info


def render(split, num, image_size, seed):
    import numpy as np

    from fra_keras.data.synthetic import synthetic_dataset

    keys = ("image", "expression", "attributes", "landmarks68")
    ds = synthetic_dataset(image_size=image_size, seed=seed, split=split, num_samples=num, keys=keys).batch(64)
    parts = {k: [] for k in keys}
    for batch in ds:
        for k in keys:
            parts[k].append(batch[k].numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def feature_maps(extractor, images, batch_size=64):
    import numpy as np

    return np.concatenate([np.asarray(extractor.feature_map(images[i:i + batch_size]))
                           for i in range(0, len(images), batch_size)])


def probe_model(extractor, train, test, args):
    """Linear probes of one frozen backbone: {metric: (mean, std, values)}."""
    import numpy as np

    from fra_keras.downstream import metrics as m
    from fra_keras.evaluate import fit_linear_probe, score

    t = time.time()
    f_train, f_test = feature_maps(extractor, train["image"]), feature_maps(extractor, test["image"])
    pooled_train = f_train.mean(axis=(1, 2), keepdims=True)
    pooled_test = f_test.mean(axis=(1, 2), keepdims=True)
    results = {"features_s": time.time() - t}
    tasks = (("expression", pooled_train, pooled_test, "expression", {"num_classes": 7}),
             ("attributes", pooled_train, pooled_test, "attributes", {"num_attributes": 40}),
             ("landmarks", f_train, f_test, "landmarks68", {"num_points": 68}))
    for task, x_tr, x_te, key, kwargs in tasks:
        values = []
        for seed in range(args.probe_seeds):
            _, _, outputs = fit_linear_probe(task, extractor.channels, x_tr, train[key], x_te, args.image_size,
                                             epochs=args.probe_epochs, batch_size=64, seed=seed, verbose=0,
                                             head_kwargs=kwargs)
            metrics, _ = score(task, outputs, test[key], args.image_size)
            values.append(metrics)
        for name in values[0]:
            v = [float(x[name]) for x in values]
            results[name] = {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": v}
    knn = m.knn_accuracy(pooled_train.reshape(len(pooled_train), -1), train["expression"],
                         pooled_test.reshape(len(pooled_test), -1), test["expression"], k=20)
    results["synthetic_knn_top1_accuracy"] = {"mean": knn, "std": 0.0, "values": [knn]}
    return results


ROWS = (("synthetic_top1_accuracy", "expression top-1 (linear) ↑"),
        ("synthetic_mean_class_accuracy", "expression mean-class acc. ↑"),
        ("synthetic_attribute_accuracy", "attributes mean acc. (known) ↑"),
        ("synthetic_nme", "landmarks NME (inter-ocular) ↓"),
        ("synthetic_failure_rate_10", "landmarks failure rate @10% ↓"),
        ("synthetic_knn_top1_accuracy", "expression kNN top-1 (k=20) ↑"))


def table(probes, regions):
    names = list(probes)
    out = ["| metric (synthetic faces) | " + " | ".join(names) + " |",
           "|---|" + "---|" * len(names)]
    for key, label in ROWS:
        cells = []
        for n in names:
            r = probes[n][key]
            cells.append(f"{r['mean']:.3f} ± {r['std']:.3f}" if len(r["values"]) > 1 else f"{r['mean']:.3f}")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out += ["", "| region awareness (FRA heatmaps) | FRA | random-init FRA |", "|---|---|---|"]
    for key, label in (("purity", "purity, area-normalised (chance 0.125) ↑"), ("coverage", "coverage (parts of 8) ↑"),
                       ("consistency", "cross-view consistency ↑"), ("purity_mass", "purity, raw mass"),
                       ("coverage_mass", "coverage, raw mass")):
        fmt = "{:.0f}" if key.startswith("coverage") else "{:.3f}"
        out.append(f"| {label} | {fmt.format(regions['fra'][key])} | {fmt.format(regions['random'][key])} |")
    out.append(f"| dominant part per heatmap (FRA) | {', '.join(regions['fra']['dominant_parts'])} | "
               f"{', '.join(regions['random']['dominant_parts'])} |")
    out.append(f"| heatmap usage (arg-max share) | {', '.join(f'{u:.2f}' for u in regions['fra']['usage'])} | "
               f"{', '.join(f'{u:.2f}' for u in regions['random']['usage'])} |")
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
    runs, pre_info = pretrain_all(args)
    t = time.time()
    print(f"\n=== rendering {args.train_faces} train + {args.test_faces} test faces at {args.image_size} px",
          flush=True)
    train = render("train", args.train_faces, args.image_size, args.seed)
    test = render("test", args.test_faces, args.image_size, args.seed)
    render_s = time.time() - t
    fra = load_feature_extractor(runs["fra"], image_size=args.image_size)
    byol = load_feature_extractor(runs["byol"], image_size=args.image_size)
    rand = random_extractor(fra.config, seed=args.seed + 1000, image_size=args.image_size)
    probes = {}
    for name, extractor in (("FRA", fra), ("BYOL", byol), ("random init", rand)):
        print(f"=== linear probes: {name}", flush=True)
        t = time.time()
        probes[name] = probe_model(extractor, train, test, args)
        probes[name]["seconds"] = time.time() - t
    with open(os.path.join(args.out_dir, "probes.json"), "w") as f:   # kept if a later step fails
        json.dump(probes, f, indent=2)
    print("=== region awareness", flush=True)
    t = time.time()
    views = regions.render_views(args.region_faces, args.image_size, seed=args.seed)
    _, random_fra = build_random(fra.config, seed=args.seed + 1000, with_regions=True)
    region_results = {"fra": regions.evaluate_regions(fra.fra_model, views, REGION_NAMES),
                      "random": regions.evaluate_regions(random_fra, views, REGION_NAMES)}
    faces = views["image_a"][:4]
    figure = plots.heatmap_figure([("FRA", faces, regions.model_heatmaps(fra.fra_model, faces)),
                                   ("random", faces, regions.model_heatmaps(random_fra, faces))])
    size = plots.save_png(figure, args.figure)
    region_s = time.time() - t
    text = table(probes, region_results)
    results = {"args": vars(args), "pretraining": pre_info, "probes": probes, "regions": region_results,
               "figure": {"path": args.figure, "bytes": size},
               "timing": {"render_s": render_s, "regions_s": region_s, "total_s": time.time() - start},
               "table": text}
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print("\n" + text)
    for name, info in pre_info.items():
        final = info.get("summary", {}).get("final", {})
        keys = ("loss", "loss_global", "loss_region", "loss_cluster", "z_std", "region_entropy")
        print(f"{name} final epoch: " + ", ".join(f"{k}={final[k]:.4f}" for k in keys if k in final))
    print(f"\nfigure: {args.figure} ({size} bytes); results: {os.path.join(args.out_dir, 'results.json')}; "
          f"total {time.time() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
