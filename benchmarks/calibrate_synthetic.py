"""Calibrate the synthetic evaluation: the ladder of scores a representation should climb.

    python benchmarks/calibrate_synthetic.py                 # default CLI budgets, about 15 min on 2 cores
    python benchmarks/calibrate_synthetic.py --quick         # a minute: checks the plumbing

On the same synthetic split as `python -m fra_keras.evaluate` (`--data synthetic`: "aligned" faces for
expression, "box" face crops for landmarks; docs/datasets.md), with the same budgets as the CLI
defaults, for expression and landmarks it prints:

1. the label-only baseline (majority class / chance; the training mean shape for landmarks);
2. a linear probe on raw pixels (the normalised image flattened: what a linear model reads without
   any representation);
3. a linear probe on a randomly initialised network
   (`python -m fra_keras.evaluate TASK --model random --protocol linear`);
4. the same network trained end to end with labels
   (`python -m fra_keras.evaluate TASK --model random --protocol finetune`).

A pre-trained representation is useful on this split when its linear probe climbs from rung 3 towards
rung 4. The gap 3 -> 4 must be wide for the split to tell a good representation from a random one
(issue "regions": at least 15 points of mean-class accuracy on expression, supervised landmark NME at
most half the mean shape's). Results and the command go to docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few faces and epochs: checks the plumbing only")
    p.add_argument("--tasks", default="expression,landmarks", help="comma-separated: expression, landmarks")
    p.add_argument("--preset", default="tiny", help="architecture of the random / supervised network")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="write the ladder as JSON here")
    return p.parse_args(argv)


def _evaluate(task, protocol, args, extra):
    """One `python -m fra_keras.evaluate` run in this process; returns its report."""
    from fra_keras import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "report.json")
        argv = [task, "--model", "random", "--preset", args.preset, "--protocol", protocol, "--seed",
                str(args.seed), "--output", out, "--verbose", "0"] + extra
        print("=== python -m fra_keras.evaluate " + " ".join(a for a in argv if a != out), flush=True)
        code = evaluate.main(argv)
        if code:
            raise SystemExit(f"evaluate {task} {protocol} failed with exit code {code}")
        with open(out) as f:
            return json.load(f)


def _pixel_probe(task, args, extra_sizes):
    """Linear probe on the normalised pixels of the same split, with the CLI's linear-probe budget."""
    import numpy as np

    from fra_keras.config import FRAConfig
    from fra_keras.downstream.data import load_task_data
    from fra_keras.downstream.tasks import DEFAULT_EPOCHS, fit_linear_probe, score

    config = FRAConfig.from_preset(args.preset)
    data = load_task_data("synthetic", task, config.image_size, *extra_sizes, seed=args.seed)

    def arrays(ds):
        images, labels = [], []
        for batch in ds.batch(256):
            images.append(np.asarray(batch["image"], np.float32))
            labels.append(np.asarray(batch[data.label_key]))
        x = (np.concatenate(images) / 255.0 - np.asarray(config.mean)) / np.asarray(config.std)
        return x.reshape(len(x), 1, 1, -1).astype(np.float32), np.concatenate(labels)

    x_train, y_train = arrays(data.train)
    x_test, y_test = arrays(data.test)
    kwargs = {"num_classes": 7} if task == "expression" else {"num_points": int(data.num_points)}
    if task == "landmarks":  # the landmark head reads a feature grid: give it the 1x1 "grid" of all pixels
        kwargs["upsample"] = 1
    epochs = 3 if args.quick else DEFAULT_EPOCHS["linear"]
    _, _, outputs = fit_linear_probe(task, x_train.shape[-1], x_train, y_train, x_test, data.image_size,
                                     epochs=epochs, batch_size=64, seed=args.seed, verbose=0, head_kwargs=kwargs,
                                     mean=config.mean, std=config.std)
    metrics, _ = score(task, outputs, y_test, data.image_size, data.name, data.class_names, y_train)
    return metrics


ROWS = {"expression": ("synthetic_top1_accuracy", "synthetic_mean_class_accuracy"),
        "landmarks": ("synthetic_nme", "synthetic_failure_rate_10")}


def main(argv=None):
    args = parse_args(argv)
    from fra_keras.cli_utils import quiet_tensorflow

    quiet_tensorflow()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for t in tasks:
        if t not in ROWS:
            raise SystemExit(f"--tasks: {t!r} is not one of {sorted(ROWS)}")
    extra = ["--train-samples", "128", "--test-samples", "64", "--epochs", "2"] if args.quick else []
    sizes = (128, 64) if args.quick else (None, None)
    ladder, lines = {}, []
    start = time.time()
    for task in tasks:
        linear = _evaluate(task, "linear", args, extra)
        finetune = _evaluate(task, "finetune", args, extra)
        pixels = _pixel_probe(task, args, sizes)
        base = linear["details"]["baselines"]
        rungs = {"label-only baseline": {k: base[k]["value"] for k in ROWS[task]},
                 "linear probe, raw pixels": {k: pixels[k] for k in ROWS[task]},
                 "linear probe, random network": {k: linear["metrics"][k] for k in ROWS[task]},
                 "supervised end to end (finetune from random)": {k: finetune["metrics"][k] for k in ROWS[task]}}
        ladder[task] = {"rungs": rungs, "data": linear["data"],
                        "budgets": {"linear": linear["setup"], "finetune": finetune["setup"]}}
        lines += [f"\n{task} ({linear['data']['num_train']} train / {linear['data']['num_test']} test faces, "
                  f"profile {linear['data'].get('profile')}, {linear['data']['image_size']} px)",
                  "| rung | " + " | ".join(f"{k.replace('synthetic_', '')} ({'↑' if 'acc' in k else '↓'})"
                                           for k in ROWS[task]) + " |",
                  "|---|" + "---|" * len(ROWS[task])]
        for name, values in rungs.items():
            lines.append(f"| {name} | " + " | ".join(f"{values[k]:.3f}" for k in ROWS[task]) + " |")
        if task == "expression":
            gap = rungs["supervised end to end (finetune from random)"]["synthetic_mean_class_accuracy"] - \
                rungs["linear probe, random network"]["synthetic_mean_class_accuracy"]
            ladder[task]["gap_points"] = 100 * gap
            lines.append(f"gap random probe -> supervised: {100 * gap:+.1f} points of mean-class accuracy "
                         "(target: >= 15)")
        else:
            ratio = rungs["supervised end to end (finetune from random)"]["synthetic_nme"] / \
                rungs["label-only baseline"]["synthetic_nme"]
            ladder[task]["supervised_over_mean_shape"] = ratio
            lines.append(f"supervised NME / mean-shape NME: {ratio:.2f} (target: <= 0.5)")
    text = "\n".join(lines)
    print(text)
    print(f"\ntotal {time.time() - start:.0f}s")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"ladder": ladder, "table": text, "seconds": time.time() - start,
                       "command": "python benchmarks/calibrate_synthetic.py " + " ".join(argv or sys.argv[1:])},
                      f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
