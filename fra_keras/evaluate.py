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
from fra_keras.downstream.tasks import DEFAULT_EPOCHS, metric_direction, run_head, run_knn, run_regions

TASKS = ("expression", "attributes", "landmarks", "knn", "regions")

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
  finetune   the whole network trains (docs/method.md, "Downstream protocols": AdamW, wd 0.05 on all
             weights, 5% linear warm-up, half-cycle cosine to 1e-6 per iteration; peak 1e-3 for the
             5-epoch default, where the reference's 2e-4 for 100 epochs under-trains); horizontal
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
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-3 linear, 1e-3 finetune; the reference fine-tunes at 2e-4 for 100 epochs)")
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

    from fra_keras.data.records import DataFormatError
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
    from fra_keras.data.records import DataFormatError

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
