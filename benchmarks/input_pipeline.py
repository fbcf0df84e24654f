"""Input-pipeline throughput of both augmentation paths, measured side by side in one run.

    python benchmarks/input_pipeline.py --num-images 512 --image-size 224

Writes a temporary folder of N JPEGs at --source-size px (synthetic faces if
`fra_keras.data.synthetic` is available, else smooth random images), then measures, in rotation
(--repeats rounds; shared machines swing 1.5-2.5x, so compare within a run):

1. decode: read + decode + resize to --image-size (`image_folder_dataset`), images/s;
2. cpu: `pretraining_dataset(..., augment_on_device=False)`, every augmentation in `tf.data`, pairs/s;
3. device: `pretraining_dataset(..., augment_on_device=True)`, what stays on the CPU when the
   accelerator augments (decode, two resized crops, batching), pairs/s;
4. reference: the CPU path as it was at git revision --reference (default 04c71b4, before the
   speed-ups; its `augment.py` and `pipeline.py` are loaded from git), pairs/s; skipped without git;
5. with --shards: the CPU path from TFRecord shards of the same images.

Each rate is given two ways: wall clock (what the run got), and per core: elements per CPU-second of
this process (`time.process_time` over the timed window, all threads), which other jobs on the
machine disturb much less. Ratios are to the decode rate of the same run. Timing starts after a warm-up
(tracing and buffer filling excluded); the best of the rounds is printed with the median in brackets.
All tf.data parallelism is AUTOTUNE.

--ops also times each augmentation op on one 224 px face image (CPU ms per call, current and
reference implementation), the table in docs/data_pipeline.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from fra_keras.config import FRAConfig  # noqa: E402
from fra_keras.data import augment, folders, shard  # noqa: E402
from fra_keras.data.pipeline import pretraining_dataset  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = "04c71b4"   # the last revision with the per-image-only pipeline (issue 14)


def source_images(n: int, size: int, seed: int = 0):
    """uint8 (size, size, 3) images: synthetic faces if available, else smooth random images."""
    if importlib.util.find_spec("fra_keras.data.synthetic") is not None:
        from fra_keras.data.synthetic import synthetic_dataset

        render = min(size, 224)   # the generator renders 64-224 px; larger sizes are upsampled
        ds = synthetic_dataset(image_size=render, seed=seed, split="train", num_samples=n, keys=("image",))
        ds = ds.map(lambda e: e["image"])
        if render != size:
            ds = ds.map(lambda im: tf.cast(tf.round(tf.clip_by_value(
                tf.image.resize(im, [size, size], method="bilinear"), 0, 255)), tf.uint8))
        label = "synthetic faces" + (f" (rendered at {render} px, resized)" if render != size else "")
        return label, ds.as_numpy_iterator()
    rs = np.random.RandomState(seed)

    def gen():
        for _ in range(n):
            low = rs.rand(1, 8, 8, 3).astype(np.float32)
            img = tf.image.resize(low, [size, size], method="bicubic")[0].numpy()
            img = img + 0.05 * rs.randn(size, size, 3)
            yield (np.clip(img, 0, 1) * 255).astype(np.uint8)
    return "smooth random images", gen()


def write_folder(images, root: str, per_dir: int = 64) -> int:
    n = 0
    for i, image in enumerate(images):
        d = os.path.join(root, f"id{i // per_dir:04d}")
        os.makedirs(d, exist_ok=True)
        tf.io.write_file(os.path.join(d, f"{i:06d}.jpg"), tf.io.encode_jpeg(image, quality=95))
        n += 1
    return n


def rate(ds, count: int, warmup: int, per_element: int = 1):
    """(elements per wall second, elements per CPU second of this process) over `count` elements
    (times per_element) after `warmup` elements."""
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        next(it)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return count * per_element / wall, count * per_element / max(cpu, 1e-9)


# The reference implementation, loaded from git ------------------------------------------------
def _git_show(revision: str, path: str) -> str:
    return subprocess.run(["git", "-C", REPO, "show", f"{revision}:{path}"], check=True,
                          capture_output=True, text=True).stdout


def _module(name: str, source: str, folder: str) -> types.ModuleType:
    """Import `source` as module `name` from a file in `folder` (AutoGraph needs the source file)."""
    path = os.path.join(folder, name + ".py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_reference(revision: str, folder: str):
    """(augment, pipeline, None): the modules of `revision` (written to `folder`); (None, None, reason)
    if git cannot read them."""
    if not revision:
        return None, None, "--reference ''"
    try:
        augment_source = _git_show(revision, "fra_keras/data/augment.py")
        pipeline_source = _git_show(revision, "fra_keras/data/pipeline.py").replace(
            "from fra_keras.data.augment import", "from fra_reference_augment import")
    except (OSError, subprocess.CalledProcessError) as e:
        return None, None, f"git revision {revision!r} not readable ({type(e).__name__})"
    return (_module("fra_reference_augment", augment_source, folder),
            _module("fra_reference_pipeline", pipeline_source, folder), None)


# Per-op costs ---------------------------------------------------------------------------------
def _op_loops(config, image, module, calls: int):
    """{op name: tf.function running the op `calls` times} for the augment module `module` (current
    or reference) on the float32 (S, S, 3) `image`; the crop draws random boxes in a (S+32)-px image."""
    size = image.shape[0]
    big = tf.cast(tf.round(tf.image.resize(image[tf.newaxis], [size + 32, size + 32])[0] * 255.0),
                  tf.uint8)
    radius = module.blur_radius(config)

    def small(i):   # a per-call perturbation, so that no call can be hoisted out of the loop
        return tf.cast(i, tf.float32) * 1e-7

    ops = {
        "random resized crop": lambda i: module.resized_crop(big, tf.stack(module.sample_crop_box(
            size + 32, size + 32, tf.stack([tf.cast(i, tf.int64), 1]))), size),
        "flip": lambda i: tf.reverse(image + small(i), axis=[1]),
        "brightness": lambda i: module.adjust_brightness(image, 1.1 + small(i)),
        "contrast": lambda i: module.adjust_contrast(image, 1.1 + small(i)),
        "saturation": lambda i: module.adjust_saturation(image, 1.1 + small(i)),
        "hue": lambda i: module.adjust_hue(image, 0.05 + small(i)),
        "grayscale": lambda i: module.grayscale(image + small(i)),
        "gaussian blur": lambda i: module.gaussian_blur(image, 1.0 + small(i), radius),
        "solarize": lambda i: module.solarize(image + small(i)),
        "normalize": lambda i: module.normalize(image + small(i), config),
    }

    def loop(op):
        return tf.function(lambda: tf.reduce_sum(tf.map_fn(
            lambda i: tf.reduce_sum(op(i)), tf.range(calls), fn_output_signature=tf.float32,
            parallel_iterations=1)), autograph=False)
    return {name: loop(op) for name, op in ops.items()}


def print_op_costs(config, image, reference, calls: int = 100, rounds: int = 5):
    """CPU ms per call of each op, current and reference interleaved, best of `rounds`."""
    from fra_keras.data.pipeline import normalized_batch

    modules = {"current": augment}
    if reference is not None:
        modules["reference"] = reference
    loops = {m: _op_loops(config, image, module, calls) for m, module in modules.items()}
    # The CPU path normalises whole batches in one XLA-compiled map (pipeline.normalized_batch).
    batch = {"view1": tf.repeat(image[tf.newaxis], calls, axis=0)}
    xla_normalize = normalized_batch(config)
    loops["current"]["normalize (XLA, batch)"] = lambda: xla_normalize(batch)["view1"]
    times = {m: {name: [] for name in ops} for m, ops in loops.items()}
    for ops in loops.values():
        for fn in ops.values():
            np.asarray(fn())   # trace and compile
    for _ in range(rounds):
        for name in loops["current"]:
            for m in loops:
                if name in loops[m]:
                    start = time.process_time()
                    np.asarray(loops[m][name]())
                    times[m][name].append((time.process_time() - start) / calls * 1e3)
    print(f"\nper-op CPU cost on one {image.shape[0]} px face (ms per call, best of {rounds} rounds of "
          f"{calls} calls):")
    print(f"  {'op':24s} {'reference':>9s} {'current':>8s}")
    for name, ms in times["current"].items():
        ref = times.get("reference", {}).get(name)
        ref = f"{min(ref):9.3f}" if ref else f"{'-':>9s}"
        print(f"  {name:24s} {ref} {min(ms):8.3f}")


def write_rates(path, best, med, **context):
    """Write the rates as JSON: {key: {"wall", "wall_median", "per_core", "per_core_median"}} (images/s for
    "decode", view pairs/s for the pipelines) plus `context`; the file `benchmarks/gpu_suite.py` collects."""
    import json

    rates = {key: {"wall": float(best[key][0]), "wall_median": float(med[key][0]),
                   "per_core": float(best[key][1]), "per_core_median": float(med[key][1])} for key in best}
    with open(path, "w") as f:
        json.dump(dict(context, rates=rates), f, indent=2)
        f.write("\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=512)
    parser.add_argument("--source-size", type=int, default=256, help="stored image size (px)")
    parser.add_argument("--image-size", type=int, default=224, help="view size (px)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--passes", type=float, default=1.0,
                        help="measured images = passes * num-images (after a warm-up)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the measurements")
    parser.add_argument("--reference", default=REFERENCE,
                        help="git revision of the reference CPU path ('' to skip); default %(default)s")
    parser.add_argument("--shards", action="store_true", help="also measure the CPU path from TFRecords")
    parser.add_argument("--num-shards", type=int, default=8)
    parser.add_argument("--ops", action="store_true", help="also time each augmentation op")
    parser.add_argument("--keep", default=None, help="write the data here and keep it")
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="also write the rates (best and median of the rounds, wall and per core) here")
    args = parser.parse_args(argv)

    root = args.keep or tempfile.mkdtemp(prefix="fra_input_bench_")
    folder = os.path.join(root, "jpeg")
    shards_dir = os.path.join(root, "shards")
    try:
        t0 = time.perf_counter()
        kind, images = source_images(args.num_images, args.source_size)
        n = write_folder(images, folder)
        size_mb = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(folder)
                      for f in fs) / 2 ** 20
        note = ""
        if args.shards:
            summary = shard.write_shards(shard.folder_examples(folder), shards_dir, args.num_shards,
                                         overwrite=True)
            note = f" and {summary['num_shards']} TFRecord shards"
        print(f"data: {n} {kind} at {args.source_size} px as JPEG q95 ({size_mb:.1f} MB){note}, "
              f"written in {time.perf_counter() - t0:.1f} s")
        print(f"machine: {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
              f"TF {tf.__version__}, load average {os.getloadavg()[0]:.2f}")

        measured = int(args.passes * n)
        b = args.batch_size
        config = FRAConfig.from_preset("paper", image_size=args.image_size, batch_size=b)
        steps = max(1, measured // b)
        ref_augment, ref_pipeline, why = load_reference(args.reference, root)

        def decode_rate():
            ds = folders.image_folder_dataset(folder, image_size=args.image_size, shuffle=True).repeat()
            return rate(ds.prefetch(tf.data.AUTOTUNE), measured, warmup=b)

        def pairs(build):
            return lambda: rate(build(), steps, warmup=2, per_element=b)

        benches = {
            "decode": decode_rate,
            "cpu": pairs(lambda: pretraining_dataset(config, folder, augment_on_device=False)),
            "device": pairs(lambda: pretraining_dataset(config, folder, augment_on_device=True)),
        }
        if ref_pipeline is not None:
            benches["reference"] = pairs(lambda: ref_pipeline.pretraining_dataset(config, folder))
        else:
            print(f"reference: skipped, {why}")
        if args.shards:
            benches["shards"] = pairs(lambda: pretraining_dataset(config, shards_dir,
                                                                  augment_on_device=False))
        # In rotation, --repeats times: on a shared machine the best of each is the least disturbed
        # estimate, and rotation spreads any disturbance over all of them.
        results = {k: [] for k in benches}
        for _ in range(args.repeats):
            for key, fn in benches.items():
                results[key].append(fn())
        best = {k: np.max(np.asarray(v), axis=0) for k, v in results.items()}
        med = {k: np.median(np.asarray(v), axis=0) for k, v in results.items()}
        print(f"\n(best of {args.repeats}, median in brackets; wall = what this run got, per core = "
              f"per CPU-second of this process; ratio = per-core rate / per-core decode rate)")
        print(f"  {'measurement':44s} {'wall /s':>16s} {'per core /s':>18s} {'ratio':>14s}")
        labels = {
            "decode": f"decode + resize to {args.image_size} (images)",
            "reference": f"CPU path, reference {args.reference} (pairs)",
            "cpu": "CPU path (pairs)",
            "device": "on-device path, CPU part (pairs)",
            "shards": "CPU path from TFRecords (pairs)",
        }
        for key in ("decode", "reference", "cpu", "device", "shards"):
            if key not in best:
                continue
            ratio = ("" if key == "decode" else
                     f"{best[key][1] / best['decode'][1]:6.3f} [{med[key][1] / med['decode'][1]:.3f}]")
            print(f"  {labels[key]:44s} {best[key][0]:7.1f} [{med[key][0]:6.1f}] "
                  f"{best[key][1]:8.1f} [{med[key][1]:7.1f}] {ratio:>14s}")
        if "reference" in best:
            print(f"CPU path / reference: {best['cpu'][1] / best['reference'][1]:.2f}x per core "
                  f"[{med['cpu'][1] / med['reference'][1]:.2f}x]")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        if args.json:
            write_rates(args.json, best, med, cores=os.cpu_count(), image_size=args.image_size,
                        batch_size=b, images=n)

        if args.ops:
            face = next(iter(folders.image_folder_dataset(folder, image_size=args.image_size,
                                                          shuffle=False)))
            print_op_costs(config, augment.to_float(face), ref_augment)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
