"""GPU throughput and memory of the FRA training step: ResNet-50 at 224 px, bfloat16, XLA, largest batch.

    python benchmarks/gpu_benchmark.py                       # on a GPU machine (one GPU)
    python benchmarks/gpu_benchmark.py --start 64 --max-batch 512 --precision mixed_float16
    python benchmarks/gpu_benchmark.py --smoke               # CPU check of the script itself (seconds)

It searches the largest global batch that fits: batch sizes double from --start until a step runs out
of memory (or --max-batch), then --refine bisection steps between the last fit and the first
failure. Each batch size runs in a fresh subprocess (an out-of-memory error can leave the allocator
fragmented, and each trial's peak memory should be its own): build `FRA` from the paper preset, compile
the train step with XLA, run --warmup steps (compilation included), time --steps steps. For every trial
it prints samples/s (view pairs per second: batch / step time) and the peak device memory from
`tf.config.experimental.get_memory_info` (GPU; on CPU the process's peak RSS instead), then a summary
line and, with --json, a JSON file.

Expected cost on one modern GPU: ~1-2 minutes per trial (XLA compilation of the step dominates), about
5-7 trials with the defaults; bound the whole search with --budget-s.

--smoke: tiny model and sizes on the CPU, trials in-process and eager, and a simulated out-of-memory
above batch 4 so that the search logic runs end to end (used by tests/test_precision_xla.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = os.path.dirname(os.path.abspath(__file__))
SMOKE = dict(image_size=64, backbone_width=8, hidden_dim=32, proj_dim=16, decoder_dim=16, decoder_ffn_dim=16,
             decoder_heads=2, output_stride=16)
SMOKE_OOM_ABOVE = 4


class OutOfMemory(Exception):
    """A trial ran out of device memory."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--precision", default="mixed_bfloat16", help="float32 | mixed_float16 | mixed_bfloat16")
    p.add_argument("--jit-compile", default="true", help="true | false | auto")
    p.add_argument("--start", type=int, default=64, help="first batch size tried (default 64)")
    p.add_argument("--max-batch", type=int, default=2048, help="stop doubling here (default 2048)")
    p.add_argument("--refine", type=int, default=2, help="bisection steps after the first failure (default 2)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per trial (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first, compilation included")
    p.add_argument("--trial-timeout-s", type=int, default=900, help="kill a trial after this long")
    p.add_argument("--budget-s", type=int, default=0, help="stop starting trials after this long (0: none)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--smoke", action="store_true", help="tiny CPU run of the whole script")
    p.add_argument("--trial", type=int, default=None, help=argparse.SUPPRESS)   # internal: one batch size
    return p.parse_args(argv)


def trial_config(args, batch_size):
    from fra_keras.config import FRAConfig

    fields = dict(backbone=args.backbone, image_size=args.image_size, precision=args.precision,
                  jit_compile=str(args.jit_compile).lower(), batch_size=batch_size, steps_per_epoch=1000,
                  epochs=10, strategy="default")
    if args.smoke:
        fields.update(SMOKE, backbone="resnet18", jit_compile="false")
        return FRAConfig.from_preset("tiny", **fields)
    return FRAConfig.from_preset("paper", **fields)


def _is_oom(error) -> bool:
    import tensorflow as tf

    if isinstance(error, (tf.errors.ResourceExhaustedError, MemoryError, OutOfMemory)):
        return True
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "OOM" in text


def _peak_memory():
    """(bytes, source): peak device memory of GPU:0, else the process's peak RSS
    (`train_step.peak_memory_gib`, the step benchmarks' one reading of it)."""
    sys.path.insert(0, HERE)
    import train_step

    peak = train_step.peak_memory_gib()
    if peak["gpu0"] is not None:
        return int(peak["gpu0"] * 2**30), "GPU:0 peak"
    return int(peak["host_rss"] * 2**30), "host peak RSS"


def run_trial(args, batch_size) -> dict:
    """Build, compile and time the FRA step at `batch_size`. Raises OutOfMemory when it does not fit."""
    from fra_keras import cli_utils

    tf = cli_utils.quiet_tensorflow()
    import keras

    from fra_keras.models.fra import FRA, resolve_jit_compile

    sys.path.insert(0, HERE)
    import train_step   # benchmarks/train_step.py: the random views every step benchmark feeds

    if args.smoke and batch_size > SMOKE_OOM_ABOVE:
        raise OutOfMemory(f"simulated out-of-memory above batch {SMOKE_OOM_ABOVE} (--smoke)")
    config = trial_config(args, batch_size)
    jit = resolve_jit_compile(config.jit_compile)
    try:
        keras.utils.set_random_seed(0)
        model = FRA(config)
        model.compile(jit_compile=jit)
        step = model.train_step if args.smoke else tf.function(model.train_step, jit_compile=jit)
        views = train_step.random_views(config, seed=batch_size)
        start = time.perf_counter()
        for _ in range(args.warmup):
            float(step(views)["loss"])
        warmup_s = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(args.steps):
            out = step(views)
        loss = float(out["loss"])
        seconds = (time.perf_counter() - start) / args.steps
    except Exception as e:  # noqa: BLE001 - classified below
        if _is_oom(e):
            raise OutOfMemory(str(e).splitlines()[0][:300]) from None
        raise
    peak, source = _peak_memory()
    return {"batch_size": batch_size, "fits": True, "samples_per_s": batch_size / seconds,
            "step_ms": 1000 * seconds, "warmup_s": warmup_s, "peak_bytes": peak, "memory": source,
            "loss": loss, "precision": config.precision, "xla": jit, "backbone": config.backbone,
            "image_size": config.image_size}


def _trial_subprocess(args, batch_size) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--trial", str(batch_size),
           "--backbone", args.backbone, "--image-size", str(args.image_size), "--precision", args.precision,
           "--jit-compile", str(args.jit_compile), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.trial_timeout_s)
    except subprocess.TimeoutExpired:
        return {"batch_size": batch_size, "fits": False, "error": f"timeout after {args.trial_timeout_s}s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("TRIAL "):
            return json.loads(line[len("TRIAL "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"batch_size": batch_size, "fits": False, "error": f"exit {proc.returncode}: " + " | ".join(tail)}


def measure(args, batch_size) -> dict:
    if args.smoke:           # in-process: the smoke run must stay quick
        try:
            return run_trial(args, batch_size)
        except OutOfMemory as e:
            return {"batch_size": batch_size, "fits": False, "oom": True, "error": str(e)}
    return _trial_subprocess(args, batch_size)


def search(trial, start, max_batch, refine, budget_s=0, report=print):
    """Largest batch that fits: double from `start`, then bisect `refine` times. Returns all results."""
    results, began = [], time.time()

    def run(b):
        if budget_s and time.time() - began > budget_s:
            return None
        r = trial(b)
        results.append(r)
        report(r)
        return r["fits"]

    good, bad, b = None, None, max(int(start), 1)
    while b <= max_batch:
        fits = run(b)
        if fits is None:
            break
        if not fits:
            bad = b
            break
        good, b = b, b * 2
    if good is None and bad is not None:     # even the first size failed: halve down
        b = bad // 2
        while b >= 1:
            fits = run(b)
            if fits is None:
                break
            if fits:
                good = b
                break
            bad, b = b, b // 2
    for _ in range(refine if good is not None and bad is not None else 0):
        mid = (good + bad) // 2
        if mid in (good, bad) or mid <= good:
            break
        fits = run(mid)
        if fits is None:
            break
        good, bad = (mid, bad) if fits else (good, mid)
    return results


def _print_result(r):
    if r.get("fits"):
        print(f"batch {r['batch_size']:5d}: {r['samples_per_s']:8.1f} samples/s  {r['step_ms']:8.1f} ms/step  "
              f"peak {r['peak_bytes'] / 2**30:6.2f} GiB ({r['memory']})  warm-up {r['warmup_s']:.0f}s", flush=True)
    else:
        print(f"batch {r['batch_size']:5d}: does not fit ({r.get('error', '')[:160]})", flush=True)


def main(argv=None):
    args = parse_args(argv)
    if args.smoke:
        args.start, args.max_batch, args.refine = 2, 16, 1
        args.steps, args.warmup = 1, 1
    if args.trial is not None:       # child process of the search
        try:
            result = run_trial(args, args.trial)
        except OutOfMemory as e:
            result = {"batch_size": args.trial, "fits": False, "oom": True, "error": str(e)}
        print("TRIAL " + json.dumps(result), flush=True)
        return 0

    from fra_keras import cli_utils

    tf = cli_utils.quiet_tensorflow()
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and not args.smoke:
        print("warning: no GPU visible; this measures the CPU (use --smoke for a quick check)", file=sys.stderr)
    print(f"FRA step, {args.backbone} at {args.image_size} px, {args.precision}, XLA {args.jit_compile}; "
          f"device: {gpus[0].name if gpus else 'CPU'}{' (smoke: tiny sizes)' if args.smoke else ''}", flush=True)
    done = []

    def report(r):       # the JSON is rewritten after every trial: a search killed from outside keeps them
        done.append(r)
        _print_result(r)
        write_json(args.json, done)

    results = search(lambda b: measure(args, b), args.start, args.max_batch, args.refine, args.budget_s,
                     report=report)
    best, fastest = write_json(args.json, results)
    if best is None:
        print("no batch size fits")
        return 1
    print(f"largest batch that fits: {best['batch_size']} -> {best['samples_per_s']:.1f} samples/s, "
          f"peak {best['peak_bytes'] / 2**30:.2f} GiB; fastest: batch {fastest['batch_size']} "
          f"({fastest['samples_per_s']:.1f} samples/s)")
    return 0


def write_json(path, results):
    """(largest fitting trial, fastest trial) of `results`, both None if none fits; with `path`, writes
    {"results", "largest", "fastest"} there."""
    fits = [r for r in results if r.get("fits")]
    best = max(fits, key=lambda r: r["batch_size"]) if fits else None
    fastest = max(fits, key=lambda r: r["samples_per_s"]) if fits else None
    if path:
        with open(path, "w") as f:
            json.dump({"results": results, "largest": best, "fastest": fastest}, f, indent=2)
    return best, fastest


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(HERE))   # run from a checkout without installing
    sys.exit(main())
