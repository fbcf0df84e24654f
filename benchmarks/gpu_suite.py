"""Every GPU figure of docs/scaling.md ("GPU figures") in one command, within a time budget.

    python benchmarks/gpu_suite.py --out gpu-results                  # one GPU machine, about 8-9 minutes
    python benchmarks/gpu_suite.py --out gpu-results --budget-s 420 --batch-size 256
    python benchmarks/gpu_suite.py --smoke --out /tmp/suite-smoke     # CPU, tiny sizes: checks the suite

A GPU machine is lent for minutes, not hours, so the measurements run as one prepared script. The
stages run in order of importance, each as a subprocess of an existing benchmark or entry point with
its own time limit (what is left of --budget-s, at most the stage's share), and each writes its
figures as JSON:

1. `step`: `benchmarks/train_step.py` on the paper preset (ResNet-50, 224 px), --precision and XLA at
   --batch-size: samples/s (view pairs) of the full FRA training step and of its backbone floor,
   timed in rotation, and TensorFlow's peak GPU memory of the process (both models).
2. `pipeline`: `benchmarks/input_pipeline.py` on this host's cores: JPEG decode rate and the view pairs/s
   of both augmentation paths (all in `tf.data`; decode and crops only, the rest on the device).
3. `pretrain`: a short `python -m fra_keras.pretrain --preset paper` on synthetic faces, with the
   input pipeline and on-device augmentation of a real run; its steady-state throughput from
   `summary.json` (timed after the warm-up steps).
4. `search`: `benchmarks/gpu_benchmark.py` from twice --batch-size up, with what time is left: the
   largest batch that fits and its samples/s.

After every stage `suite.json` (all figures so far) and `summary.md` (the table for docs/scaling.md,
with the checks against the goals: at least --goal samples/s per GPU, and an input pipeline faster than
the step) are rewritten, so a stage killed by its time limit keeps what the others measured. Each
stage's output is in `<stage>.log`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STAGES = ("step", "pipeline", "pretrain", "search")
# Share of the whole budget each stage may take at most (XLA compilation of the ResNet-50 FRA step
# dominates `step` and `pretrain`; the pipeline runs on the CPU only; the search gets what is left).
SHARES = {"step": 0.45, "pipeline": 0.2, "pretrain": 0.4, "search": 1.0}
# Tiny sizes for --smoke (CPU): the same fields benchmarks/gpu_benchmark.py uses for its own smoke run.
MIN_STAGE_S = 20    # a stage with less time than this left is skipped, not started
SMOKE_FIELDS = ["--backbone", "resnet18", "--backbone-width", "8", "--output-stride", "16", "--hidden-dim", "32",
                "--proj-dim", "16", "--decoder-dim", "16", "--decoder-ffn-dim", "16", "--decoder-heads", "2"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the JSON files, logs and summary.md")
    p.add_argument("--budget-s", type=float, default=510, help="wall-clock budget of the whole suite (default 510)")
    p.add_argument("--batch-size", type=int, default=128, help="global batch of the step and pretrain stages")
    p.add_argument("--precision", default="mixed_bfloat16", help="float32 | mixed_float16 | mixed_bfloat16")
    p.add_argument("--pretrain-steps", type=int, default=60, help="steps of the pretrain stage (default 60)")
    p.add_argument("--pipeline-images", type=int, default=1024, help="JPEGs of the pipeline stage")
    p.add_argument("--goal", type=float, default=1200.0, help="samples/s per GPU to check against (issue 14)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--smoke", action="store_true", help="tiny model and sizes on the CPU: checks the suite")
    args = p.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        p.error(f"--stages: {','.join(unknown)} not known; choose from {','.join(STAGES)}")
    if args.batch_size < 1 or args.budget_s <= 0 or args.pretrain_steps < 2:
        p.error("--batch-size must be >= 1, --budget-s > 0 and --pretrain-steps >= 2; got "
                f"{args.batch_size}, {args.budget_s}, {args.pretrain_steps}")
    args.stages = stages
    return args


def stage_command(stage, args):
    """(argv, the JSON file the stage writes) of one stage, relative to args.out."""
    py, out, b = sys.executable, args.out, args.batch_size
    if stage == "step":
        path = os.path.join(out, "step.json")
        cmd = [py, os.path.join(HERE, "train_step.py"), "--json", path]
        if args.smoke:
            cmd += ["--preset", "tiny", *SMOKE_FIELDS, "--image-size", "64", "--batch-size", str(b),
                    "--jit-compile", "false", "--steps", "1", "--repeats", "1", "--warmup", "1"]
        else:
            cmd += ["--preset", "paper", "--image-size", "224", "--batch-size", str(b), "--precision",
                    args.precision, "--jit-compile", "true", "--steps", "10", "--repeats", "3", "--warmup", "3"]
        return cmd, path
    if stage == "pretrain":
        run = os.path.join(out, "pretrain-run")
        cmd = [py, "-m", "fra_keras.pretrain", "--output-dir", run, "--epochs", "1", "--warmup-epochs", "0",
               "--steps-per-epoch", str(args.pretrain_steps), "--batch-size", str(b), "--no-tensorboard",
               "--heatmap-every", "0", "--monitor-every", "0", "--keep-checkpoints", "1", "--verbose", "2"]
        if args.smoke:
            cmd += ["--preset", "tiny", *SMOKE_FIELDS, "--image-size", "64", "--synthetic-size", "72",
                    "--synthetic-samples", "16", "--jit-compile", "false"]
        else:
            cmd += ["--preset", "paper", "--precision", args.precision, "--synthetic-samples", "1024"]
        return cmd, os.path.join(run, "summary.json")
    if stage == "pipeline":
        path = os.path.join(out, "pipeline.json")
        cmd = [py, os.path.join(HERE, "input_pipeline.py"), "--reference", "", "--json", path]
        if args.smoke:
            cmd += ["--num-images", "16", "--source-size", "72", "--image-size", "64", "--batch-size", "4",
                    "--repeats", "1"]
        else:
            cmd += ["--num-images", str(args.pipeline_images), "--image-size", "224", "--batch-size", "64",
                    "--repeats", "2"]
        return cmd, path
    path = os.path.join(out, "search.json")
    cmd = [py, os.path.join(HERE, "gpu_benchmark.py"), "--json", path]
    if args.smoke:
        cmd += ["--smoke"]
    else:
        cmd += ["--precision", args.precision, "--start", str(2 * b), "--refine", "1", "--steps", "5"]
    return cmd, path


def run_stage(stage, args, deadline, log_path):
    """Run one stage with the time it may take; returns its record {"status", "seconds", "command",
    "figures"}: status "ok", "failed (exit N)", "timed out after S s", or "skipped (...)"."""
    cmd, path = stage_command(stage, args)
    limit = min(deadline - time.monotonic(), SHARES[stage] * args.budget_s)
    record = {"command": " ".join(shlex.quote(c) for c in cmd), "figures": None}
    if limit < MIN_STAGE_S:
        return dict(record, status="skipped (budget spent)", seconds=0.0)
    if stage == "search":
        cmd += ["--budget-s", str(int(max(limit / 2, 10))), "--trial-timeout-s", str(int(max(limit - 15, 10)))]
        record["command"] = " ".join(shlex.quote(c) for c in cmd)
    start = time.monotonic()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    with open(log_path, "w") as log:
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=limit, env=env, cwd=ROOT)
            status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {limit:.0f} s"
    record.update(status=status, seconds=round(time.monotonic() - start, 1))
    if os.path.isfile(path):
        with open(path) as f:
            record["figures"] = json.load(f)
    return record


def _fmt(value, digits=1):
    return "n/a" if value is None else f"{value:,.{digits}f}"


def summary_rows(results, args):
    """(measurement, value) rows of the summary table from the stages' figures, with the checks
    against the goals; a stage without figures gives its status instead."""
    rows = []
    step = (results.get("step") or {}).get("figures")
    if step:
        fra, floor = step["steps"]["fra"], step["steps"]["floor"]
        where = f"batch {step['batch_size']}, {step['precision']}, XLA {'on' if step['xla'] else 'off'}"
        rows += [(f"FRA training step, samples/s per device ({where})", _fmt(fra["samples_per_s"])),
                 ("backbone floor (2 fwd+bwd + 2 fwd, SGD), samples/s", _fmt(floor["samples_per_s"])),
                 ("FRA / floor, time", _fmt(step["ratios"]["fra/floor"], 2)),
                 ("peak device memory of the step process, GiB (GPU:0; both models)",
                  _fmt(step["peak_memory_gib"]["gpu0"], 2)),
                 (f"goal: at least {args.goal:,.0f} samples/s", "met" if fra["samples_per_s"] >= args.goal
                  else "not met")]
    elif "step" in results:
        rows.append(("FRA training step", results["step"]["status"]))
    pretrain = (results.get("pretrain") or {}).get("figures")
    rate = ((pretrain or {}).get("throughput") or {}).get("samples_per_second")
    if rate is not None:
        t = pretrain["throughput"]
        rows.append((f"end to end: `pretrain --preset {'tiny` (smoke sizes)' if args.smoke else 'paper`'}, "
                     "synthetic faces, samples/s "
                     f"({t['timed_steps']} steps after {t['warmup_steps']} warm-up)", _fmt(rate)))
    elif "pretrain" in results:
        rows.append(("end to end: `pretrain --preset paper`", results["pretrain"]["status"]))
    pipeline = (results.get("pipeline") or {}).get("figures")
    if pipeline:
        r, cores = pipeline["rates"], pipeline["cores"]
        rows += [(f"JPEG decode + resize, images/s on {cores} cores", _fmt(r["decode"]["wall"])),
                 (f"input pipeline, CPU augmentation path, pairs/s on {cores} cores", _fmt(r["cpu"]["wall"])),
                 (f"input pipeline, on-device path (CPU part), pairs/s on {cores} cores", _fmt(r["device"]["wall"]))]
        if step:
            need = step["steps"]["fra"]["samples_per_s"]
            rows.append(("input pipeline (on-device path) faster than the FRA step",
                         f"{'yes' if r['device']['wall'] >= need else 'no'} "
                         f"({r['device']['wall'] / need:.2f}x the step's rate)"))
    elif "pipeline" in results:
        rows.append(("input pipeline", results["pipeline"]["status"]))
    search = (results.get("search") or {}).get("figures")
    if search and search.get("largest"):
        best, fastest = search["largest"], search["fastest"]
        tried = ", ".join(str(r["batch_size"]) + ("" if r.get("fits") else " (no)") for r in search["results"])
        rows += [(f"largest batch that fits of those tried ({tried}): samples/s, peak GiB",
                  f"{best['batch_size']}: {_fmt(best['samples_per_s'])}, {_fmt(best['peak_bytes'] / 2**30, 2)}"),
                 ("fastest batch tried: samples/s", f"{fastest['batch_size']}: {_fmt(fastest['samples_per_s'])}")]
    elif "search" in results:
        rows.append(("largest batch", results["search"]["status"]))
    return rows


def write_outputs(results, args, machine):
    """Rewrite suite.json and summary.md from the results so far."""
    with open(os.path.join(args.out, "suite.json"), "w") as f:
        json.dump({"machine": machine, "budget_s": args.budget_s, "stages": results}, f, indent=2)
        f.write("\n")
    lines = [f"Machine: {machine}", "", "| measurement | value |", "|---|---|"]
    lines += [f"| {m} | {v} |" for m, v in summary_rows(results, args)]
    lines += ["", "Commands:", ""] + [f"    {r['command']}    # {name}: {r['status']}, {r['seconds']} s"
                                        for name, r in results.items()]
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return "\n".join(lines)


def describe_machine():
    """One line: CPU cores and the GPUs `nvidia-smi` lists (TensorFlow is not imported here)."""
    gpus = "no GPU"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            gpus = "; ".join(line.strip() for line in out.stdout.strip().splitlines())
    except (OSError, subprocess.TimeoutExpired):
        pass
    return f"{os.cpu_count()} CPU cores ({platform.machine()}), {gpus}"


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    deadline = time.monotonic() + args.budget_s
    machine = describe_machine()
    print(f"gpu_suite: {machine}; budget {args.budget_s:.0f} s; stages {','.join(args.stages)}; out {args.out}",
          flush=True)
    results = {}
    for stage in args.stages:
        print(f"[{stage}] starting ({deadline - time.monotonic():.0f} s of the budget left)", flush=True)
        results[stage] = run_stage(stage, args, deadline, os.path.join(args.out, f"{stage}.log"))
        print(f"[{stage}] {results[stage]['status']} in {results[stage]['seconds']} s", flush=True)
        text = write_outputs(results, args, machine)
    print(text)
    return 0 if all(r["status"] == "ok" for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
