"""`python -m fra_keras.pretrain`: FRA self-supervised pre-training from the command line.

With no flags it trains the `tiny` preset on built-in synthetic faces (a few minutes on 2 CPU cores)
and writes the same artefacts as a full run. Typical commands::

    python -m fra_keras.pretrain                                      # embedded default, CPU, minutes
    python -m fra_keras.pretrain --preset paper --data-dir /data/vggface2/train   # the paper recipe
    python -m fra_keras.pretrain --resume runs/20261128-1200          # continue a crashed run

A run folder (`--output-dir`, default `runs/<timestamp>`) holds: config.json, history.csv (a row per
epoch, every metric), tensorboard/, checkpoints/ (atomic, resumable), and at the end model.keras (the
full model: online + target + predictors, loads without custom_objects) and backbone.weights.h5 (the
online ResNet alone, what downstream tasks use).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from fra_keras import cli_utils
from fra_keras.config import ConfigError, FRAConfig, atomic_write_text

EPILOG = """\
operational advice:
  * The paper recipe (--preset paper) is ResNet-50 at 224 px, global batch 512 (8 GPUs, 64 each),
    LARS lr 0.9 not scaled with batch, 50 epochs with 10 warm-up. On fewer GPUs keep the global batch
    if memory allows (use --precision mixed_bfloat16 or mixed_float16); if you must shrink it, lower
    --learning-rate roughly in proportion and watch z_std (collapse) and loss_cluster.
  * z_std near 0 means the representation collapsed; region_entropy near 0 means the K heatmaps
    collapsed onto one region. Both are logged every epoch (history.csv, TensorBoard).
  * Heatmaps need a feature grid of at least 4x4: ResNet-50 at stride 32 needs >= 128 px; below that
    use --output-stride 16.
  * A crash loses at most the current epoch: rerun with --resume RUN_DIR (the config is read back from
    RUN_DIR/config.json; flags you pass, e.g. --epochs, override it).
  * Several GPUs are used automatically (MirroredStrategy); several hosts through TF_CONFIG
    (--strategy multi-worker: run the same command on every host, --output-dir on a shared file
    system; only the chief writes). XLA is on by default with one GPU or a TPU (--jit-compile).
    The learning rate is not scaled with the batch. See docs/scaling.md.
"""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m fra_keras.pretrain", description="FRA self-supervised pre-training (CVPR 2024).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", help="tiny (default: CPU-friendly) | paper (the official recipe)")
    parser.add_argument("--config", default=None, help="a config.json to start from instead of a preset")
    parser.add_argument("--output-dir", default=None, help="run folder (default: runs/<timestamp>)")
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="RUN_DIR",
                        help="continue from the latest checkpoint of RUN_DIR (or of --output-dir)")
    parser.add_argument("--checkpoint-every", type=int, default=1, metavar="EPOCHS",
                        help="save a checkpoint every N epochs (default 1; the last epoch is always saved)")
    parser.add_argument("--keep-checkpoints", type=int, default=1, metavar="N",
                        help="keep the newest N checkpoint folders, delete older ones once a newer one is "
                             "complete (default 1: enough to resume; each holds the full training state)")
    parser.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard logs")
    parser.add_argument("--monitor-every", type=int, default=25, metavar="STEPS",
                        help="region-health monitor every N steps (mask-embedding cosine, clustering loss / "
                             "log K, region usage, k-NN expression accuracy on held-out faces; a few seconds "
                             "each; monitor.csv, TensorBoard, history.csv); 0: off (default 25)")
    parser.add_argument("--log-every", type=int, default=10, metavar="STEPS",
                        help="also log per-step scalars (batch_loss, ...) to TensorBoard every N optimiser "
                             "steps (default 10; 0: per-epoch scalars only)")
    parser.add_argument("--heatmap-every", type=int, default=1, metavar="EPOCHS",
                        help="log region-heatmap pictures to TensorBoard every N epochs (0: never)")
    parser.add_argument("--verbose", type=int, default=None, choices=(0, 1, 2),
                        help="Keras progress: 1 progress bar, 2 one line per epoch, 0 silent (default: 1 "
                             "on a terminal, 2 when the output goes to a file or pipe)")
    cli_utils.add_config_flags(parser)
    return parser


def resolve_config(args) -> tuple[FRAConfig, str, bool]:
    """(config, output_dir, resuming) from the parsed flags."""
    overrides = cli_utils.config_overrides(args)
    resuming = args.resume is not None
    output_dir = args.output_dir
    if resuming:
        output_dir = args.resume or output_dir
        if not output_dir:
            raise ConfigError("--resume needs a run folder: --resume RUN_DIR (or --output-dir RUN_DIR --resume)")
        cfg_path = os.path.join(output_dir, "config.json")
        if not os.path.isfile(cfg_path):
            raise ConfigError(f"--resume {output_dir!r}: no config.json there; is it a run folder?")
        config = FRAConfig.from_json(cfg_path).replace(**overrides)
        return config, output_dir, True
    if args.config:
        config = FRAConfig.from_json(args.config).replace(**overrides)
    else:
        config = FRAConfig.from_preset(args.preset, **overrides)
    if output_dir is None:
        output_dir = os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
    return config, output_dir, False


def steps_per_epoch_for(config: FRAConfig) -> int:
    """Steps per epoch: the config's, else images // batch for an image folder."""
    if config.steps_per_epoch:
        return config.steps_per_epoch
    if config.data_dir is None:
        raise ConfigError("steps_per_epoch=None with synthetic faces: pass --steps-per-epoch N")
    from fra_keras.data.pipeline import num_examples

    if not os.path.isdir(config.data_dir):
        raise ConfigError(f"data_dir={config.data_dir!r} is not a folder")
    count = num_examples(config.data_dir)   # images in a folder, or records in TFRecord shards
    steps = count // config.batch_size
    if steps < 1:
        raise ConfigError(f"data_dir={config.data_dir!r} has {count} images, fewer than one batch of "
                          f"batch_size={config.batch_size}")
    return steps


# The image files the folder reader takes (fra_keras.data.folders.IMAGE_EXTENSIONS, repeated here so
# that the layout can be checked before TensorFlow is imported).
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def scan_data_dir(data_dir) -> str | None:
    """TensorFlow-free first look at `--data-dir`: "shards", "images", or None (synthetic faces / a URL,
    checked later). Raises ConfigError naming the folder when it is missing, a file, or has no images."""
    if data_dir is None or "://" in str(data_dir):
        return None
    if not os.path.exists(data_dir):
        raise ConfigError(f"--data-dir {data_dir!r} does not exist; expected a folder of .jpg/.jpeg/.png "
                          "face images (any nesting) or of TFRecord shards")
    if not os.path.isdir(data_dir):
        raise ConfigError(f"--data-dir {data_dir!r} is a file, not a folder of face images or TFRecord shards")
    if any(".tfrecord" in name for name in os.listdir(data_dir)):
        return "shards"
    for _, _, files in os.walk(data_dir, followlinks=True):
        if any(f.lower().endswith(_IMAGE_EXTENSIONS) for f in files):
            return "images"
    raise ConfigError(f"--data-dir {data_dir!r} contains no .jpg/.jpeg/.png files (searched every subfolder) "
                      "and no TFRecord shards")


def check_output_dir(output_dir: str):
    """ConfigError when `output_dir`, or a folder above it, exists as something other than a folder."""
    path = os.path.abspath(output_dir)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent
    if not os.path.isdir(path):
        where = "is" if path == os.path.abspath(output_dir) else f"is inside {path!r}, which is"
        raise ConfigError(f"--output-dir {output_dir!r} {where} an existing file; a run needs a folder there: "
                          "choose another --output-dir")


def check_run_flags(args):
    """One-line errors for the run-control flags (before TensorFlow loads)."""
    for flag, value, low in (("--checkpoint-every", args.checkpoint_every, 1),
                             ("--keep-checkpoints", args.keep_checkpoints, 1),
                             ("--log-every", args.log_every, 0), ("--heatmap-every", args.heatmap_every, 0),
                             ("--monitor-every", args.monitor_every, 0)):
        if value < low:
            raise ConfigError(f"{flag} {value}: must be an integer >= {low}")


def progress_verbosity(verbose, stream=None) -> int:
    """See `cli_utils.progress_verbosity` (bar on a terminal, one line per epoch in a file or pipe)."""
    return cli_utils.progress_verbosity(verbose, stream)


def _check_data(config: FRAConfig):
    """Describe the data source; one line (ConfigError / ValueError) when a folder has nothing usable:
    missing, empty, or (checking a sample of up to 256 files) no image that decodes."""
    if config.data_dir is None:
        return "synthetic faces (synthetic_faces_v1, %s framing, %d faces at %d px)" % (
            config.synthetic_profile, config.synthetic_samples, config.synthetic_size)
    from fra_keras.data.shard import has_shards

    if "://" not in config.data_dir and not os.path.isdir(config.data_dir):
        raise ConfigError(f"data_dir={config.data_dir!r} is not a folder")
    if has_shards(config.data_dir):
        return f"TFRecord shards in {config.data_dir}"
    from fra_keras.data.folders import check_decodable, list_images

    images = list_images(config.data_dir)  # raises ValueError naming data_dir when empty
    check_decodable(config.data_dir, images)
    return f"{len(images)} images in {config.data_dir} (unreadable files are skipped with a warning)"


def run(args) -> int:
    try:  # everything that needs no TensorFlow first, so that mistakes are reported at once
        check_run_flags(args)
        config, output_dir, resuming = resolve_config(args)
        check_output_dir(output_dir)
        scan_data_dir(config.data_dir)
        checkpoints = os.path.join(output_dir, "checkpoints")
        if not resuming and os.path.isfile(os.path.join(checkpoints, "latest")):
            raise ConfigError(f"--output-dir {output_dir!r} already holds a run; pass --resume {output_dir} "
                              "to continue it, or choose another --output-dir")
    except (ConfigError, ValueError, FileNotFoundError) as e:
        cli_utils.fail(str(e))

    cli_utils.quiet_tensorflow()
    try:
        steps_per_epoch = steps_per_epoch_for(config)
        source = _check_data(config)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        cli_utils.fail(str(e))
    from fra_keras import distributed

    # The strategy first: MultiWorkerMirroredStrategy must exist before TensorFlow runs any op.
    try:
        strategy = distributed.make_strategy(config.strategy)
    except ValueError as e:
        cli_utils.fail(str(e))
    # Only the chief keeps artefacts; other workers write to a temporary folder, deleted at the end.
    with distributed.chief_output_dir(output_dir) as write_dir:
        return _train(args, config, output_dir, write_dir, resuming, steps_per_epoch, source, strategy)


def _train(args, config, output_dir, write_dir, resuming, steps_per_epoch, source, strategy) -> int:
    """Build, (resume,) fit and save. Checkpoints are read from `output_dir` (on a shared file system
    for multi-worker resume) and everything is written to `write_dir` (`output_dir` on the chief)."""
    import keras

    from fra_keras import callbacks as fra_callbacks
    from fra_keras import data as fra_data
    from fra_keras import distributed
    from fra_keras.data.device_augment import resolve_augment_on_device
    from fra_keras.models.fra import FRA

    checkpoints = os.path.join(output_dir, "checkpoints")
    os.makedirs(write_dir, exist_ok=True)
    config.to_json(os.path.join(write_dir, "config.json"))
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = FRA(config)
        model.compile(steps_per_epoch=steps_per_epoch)
    initial_epoch = 0
    if resuming:
        folder, state = fra_callbacks.latest_checkpoint(checkpoints)
        if folder is None:
            print(f"note: {checkpoints} has no checkpoint yet; starting from scratch")
        else:
            fra_callbacks.restore_checkpoint(model, folder)
            initial_epoch = int(state["epoch"])
            print(f"resumed from {folder} (epoch {initial_epoch}, step {state['step']})")
    if initial_epoch >= config.epochs:
        print(f"nothing to do: {initial_epoch} of {config.epochs} epochs already done")
    n_params = sum(int(v.shape.num_elements()) for v in model.optimized_variables)
    print(f"FRA {config.preset}: {config.backbone} (width {config.backbone_width}, stride {config.output_stride}), "
          f"{config.image_size}px -> {config.feature_grid}x{config.feature_grid} grid, K={config.num_regions}, "
          f"{n_params / 1e6:.2f}M trainable params")
    print(f"data: {source}; global batch {config.batch_size}, {steps_per_epoch} steps x {config.epochs} epochs; "
          f"{distributed.describe(strategy)}, {config.precision}, "
          f"XLA {'on' if model.jit_compile else 'off'}, augmentation on "
          f"{'the accelerator' if resolve_augment_on_device(config.augment_on_device) else 'CPU'}")
    print(f"output: {output_dir}" + ("" if write_dir == output_dir else
                                     " (written by the chief; this worker's files go to a temporary folder)"))

    if distributed.in_multi_worker_mode(strategy):
        # One input pipeline per worker, each reading its own share of the source and producing
        # per-replica batches (instead of every worker building every global batch and dropping the
        # other workers' part, tf.data's DATA auto-sharding).
        dataset = strategy.distribute_datasets_from_function(
            lambda context: fra_data.pretraining_dataset(config, input_context=context))
    else:
        dataset = fra_data.pretraining_dataset(config)
    guard = fra_callbacks.NonFiniteLossGuard()
    monitor = []
    if args.monitor_every:
        from fra_keras.monitor import RegionMonitor

        monitor = [RegionMonitor(config, every_steps=args.monitor_every, seed=config.seed,
                                 csv_path=os.path.join(write_dir, "monitor.csv"),
                                 log_dir=None if args.no_tensorboard else os.path.join(write_dir, "tensorboard"))]
    steps = fra_callbacks.StepCounter()
    history = fra_callbacks.HistoryCSV(os.path.join(write_dir, "history.csv"), append=resuming)
    history.initial_epoch = initial_epoch
    # The monitor comes before HistoryCSV: it adds its latest values to each epoch's logs. The history
    # row is written before the checkpoint: a crash between the two leaves a row for an epoch that will
    # be re-run (dropped on resume), never a checkpoint whose epoch has no row.
    cbs = [guard, steps, *monitor, history,
           fra_callbacks.AtomicCheckpoint(os.path.join(write_dir, "checkpoints"), every_epochs=args.checkpoint_every,
                                          keep=args.keep_checkpoints, guard=guard, chief_only=False)]
    if not args.no_tensorboard:
        cbs.append(fra_callbacks.StepTensorBoard(os.path.join(write_dir, "tensorboard"), log_every=args.log_every))
        if args.heatmap_every and config.region_losses:
            try:
                from fra_keras.visualize import HeatmapCallback
            except ImportError:
                HeatmapCallback = None
            if HeatmapCallback is not None:
                cbs.append(HeatmapCallback(os.path.join(write_dir, "tensorboard"), config,
                                           every_epochs=args.heatmap_every))
    start = time.time()
    if initial_epoch < config.epochs:
        model.fit(dataset, epochs=config.epochs, steps_per_epoch=steps_per_epoch, initial_epoch=initial_epoch,
                  callbacks=cbs, verbose=progress_verbosity(args.verbose))
    if guard.failure:
        print(f"error: {guard.failure}", file=sys.stderr)
        return 1
    expected = max(config.epochs - initial_epoch, 0) * steps_per_epoch
    if steps.count < expected:
        print(f"error: {_ran_out_message(config, steps.count, expected)}", file=sys.stderr)
        return 1
    fra_callbacks.save_model_files(model, write_dir)
    summary = {"seconds": round(time.time() - start, 1), "epochs": config.epochs,
               "steps_per_epoch": steps_per_epoch, "final": _last_history_row(write_dir)}
    atomic_write_text(os.path.join(write_dir, "summary.json"), json.dumps(summary, indent=2) + "\n")
    # Every worker prints the digest of its final weights: they must agree in a multi-worker run.
    print(f"weights digest: {distributed.weights_digest(model)}")
    where = (f"{output_dir}/model.keras, {output_dir}/backbone.weights.h5" if write_dir == output_dir
             else "this worker's copies are discarded, the chief writes the run folder")
    print(f"done in {summary['seconds']:.0f}s: {where}")
    if write_dir == output_dir:
        print(what_next(output_dir, tensorboard=not args.no_tensorboard))
    return 0


def what_next(run_dir: str, tensorboard: bool = True) -> str:
    """The commands that use a finished run (printed at the end of `pretrain`)."""
    model = os.path.join(run_dir, "model.keras")
    lines = ["next:",
             f"  python -m fra_keras.export --model {model} --name fra --version 1      # TF Serving + ONNX",
             f"  python -m fra_keras.evaluate expression --model {model}               # linear probe",
             f"  python -m fra_keras.visualize --model {model} --output heatmaps.png   # region heatmaps"]
    if tensorboard:
        lines.append(f"  tensorboard --logdir {os.path.join(run_dir, 'tensorboard')}")
    return "\n".join(lines)


def _ran_out_message(config: FRAConfig, done: int, expected: int) -> str:
    """Why training stopped early: the input ended (for a folder: how many files cannot be decoded)."""
    text = f"training ran out of input after {done} of {expected} optimiser steps"
    if config.data_dir and "://" not in config.data_dir:
        from fra_keras.data.shard import has_shards

        if not has_shards(config.data_dir):
            from fra_keras.data.folders import check_images, list_images

            paths = list_images(config.data_dir)
            good, bad = check_images(paths)
            text += (f": --data-dir {config.data_dir!r} has {len(bad)} of {len(paths)} image files that cannot "
                     f"be decoded ({len(good)} usable, batch size {config.batch_size})")
            return text + "; no model was saved"
    return text + f" (data: {config.data_dir or 'synthetic faces'}); no model was saved"


def _last_history_row(output_dir):
    import csv

    path = os.path.join(output_dir, "history.csv")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {k: float(v) for k, v in rows[-1].items() if v not in ("", "NA")} if rows else {}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
