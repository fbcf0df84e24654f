"""The FRA step of fra-keras against the official PyTorch code, each beside its own backbone floor.

    python benchmarks/official_step.py --official PATH --backbone resnet18 --image-size 112 --batch-size 16
    python benchmarks/official_step.py --official PATH --backbone resnet50 --image-size 224 --batch-size 8
    python benchmarks/official_step.py --official PATH --backbone resnet18 --image-size 112 --batch-size 16 --memory

PATH is a git checkout (or bare git directory) of github.com/zaczgao/Facial_Region_Awareness; its HEAD
is exported with `git archive` into a temporary folder and imported from there (nothing of it is copied
into this repository). The official side runs under a separate Python with PyTorch (`--torch-python`,
default /work/torchvenv/bin/python: torch, numpy and classy_vision; no torchvision needed), the
fra-keras side under this Python, each in its own long-lived subprocess. Definitions (issue 14, the same
as `benchmarks/train_step.py --no-optimizer`), fixed random views, float32, `--threads` intra-op
threads on both sides (torch.set_num_threads; TensorFlow's intra-op pool):

* official FRA step: `FRAB.forward(view1, view2)` (online network forward on both views, target network
  forward on both views under `torch.no_grad`, predictors and losses) and `loss.backward()`; no
  optimiser step, no target EMA. Built as `main.py` builds it from the README's pre-training command
  (FRAB, resnet*_encoder, SyncBN (plain BatchNorm in one process), D 256, hidden 4096, K 8 "attn"
  masks, teacher temperature 0.04, cluster weight 0.1, region loss weight 0.5) plus `--lewel-l2-norm`,
  without which that command fails (docs/method.md, "What the reference code gets wrong").
* official floor: two `resnet*_encoder` networks of the same code, 2 forward+backward passes of the
  online one and 2 forward passes of the target one (training mode, `torch.no_grad`).
* fra-keras FRA step and floor: `train_step.fra_step_fn` / `train_step.floor_step_fn` without update,
  on the paper preset with the same backbone, image size and batch size.

After `--warmup` steps of each, `--repeats` rounds follow; in each round each subprocess in turn times
`--steps` steps of its FRA step and then of its floor (`train_step.time_rounds`) while the other one
waits, the order of the two subprocesses alternating from round to round, so that load swings on a
shared machine hit both implementations alike. Printed: img/s (batch size / median step time, one
sample = one image's two views), process CPU time per step (all threads), FRA / floor of each
implementation, and fra-keras / official FRA step speed, with the 1-minute load average seen during
the run. The fvcore package, which the official code imports only for `c2_xavier_fill` (the init of
the decoder's input projection), is replaced by a stand-in with the same initialisation.

`--memory` measures peak resident memory instead of speed: each side and each kind runs alone in a fresh
subprocess (`--warmup` + `--steps` steps), which reports its resident memory after importing its framework
(and, for the official side, its code) and before building anything, and its peak resident memory (VmHWM,
Linux) at the end. Printed per side and kind: RSS after import, peak, peak minus import (what the step
itself holds: weights, optimiser-free gradients, activations, caches), and fra-keras / official ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_TORCH_PYTHON = "/work/torchvenv/bin/python"
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
# The README's pre-training command (github.com/zaczgao/Facial_Region_Awareness, README.md) as FRAB's
# keyword arguments, main.py's defaults for the flags it leaves out, and l2_norm=True (its ObjectNeck
# asserts it; the README command omits --lewel-l2-norm).
OFFICIAL_KWARGS = dict(dim=256, m=0.996, hid_dim=4096, num_neck_mlp=2, scale=1.0, l2_norm=True, num_heads=8,
                       loss_weight=0.5, mask_type="attn", num_proto=8, teacher_temp=0.04, loss_w_cluster=0.1)
OFFICIAL_NORM = "SyncBN"
KINDS = ("fra", "floor")
MIB = 2 ** 20


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", required=True, metavar="PATH",
                        help="git checkout or git directory of github.com/zaczgao/Facial_Region_Awareness")
    parser.add_argument("--torch-python", default=DEFAULT_TORCH_PYTHON,
                        help=f"Python with torch for the official side (default {DEFAULT_TORCH_PYTHON})")
    parser.add_argument("--backbone", default="resnet18", help=f"one of {', '.join(BACKBONES)}")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads on both sides (default 2)")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of each (default 3)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each first (default 3)")
    parser.add_argument("--omp-wait-policy", choices=("PASSIVE", "ACTIVE", "inherit"), default="PASSIVE",
                        help="OMP_WAIT_POLICY of the PyTorch subprocess (default PASSIVE: on cores shared with other "
                             "jobs, OpenMP's spinning workers slow PyTorch several-fold; inherit: leave it as it is)")
    parser.add_argument("--keras-flags", default="", metavar="FLAGS",
                        help="FRAConfig flags for the fra-keras side on top of the paper preset, as one string "
                             "(e.g. \"--backward-per-view true\"); the official side is unchanged")
    parser.add_argument("--memory", action="store_true",
                        help="measure peak resident memory (each side and kind in a fresh process) instead of speed")
    parser.add_argument("--worker", choices=("official", "keras"), help=argparse.SUPPRESS)
    parser.add_argument("--kinds", default=",".join(KINDS), help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def check_args(args):
    """Validate `args` without starting anything; a one-line error (SystemExit 2) for the first bad one."""
    if args.backbone not in BACKBONES:
        fail(f"--backbone={args.backbone!r} is not allowed; choose one of {list(BACKBONES)}")
    for name in ("image_size", "batch_size", "threads", "steps", "repeats"):
        if getattr(args, name) <= 0:
            fail(f"--{name.replace('_', '-')}={getattr(args, name)} must be a positive integer")
    if args.warmup < 1:
        fail(f"--warmup={args.warmup} must be at least 1 (the first step traces / allocates)")
    if not os.path.isdir(args.official):
        fail(f"--official={args.official!r} is not a directory; pass a git checkout of "
             "github.com/zaczgao/Facial_Region_Awareness")
    found = subprocess.run(["git", "-C", args.official, "cat-file", "-e", "HEAD:models/fra.py"],
                           capture_output=True)
    if found.returncode:
        fail(f"--official={args.official!r} is not a git checkout of the official FRA code (no models/fra.py at "
             "HEAD); pass a checkout of github.com/zaczgao/Facial_Region_Awareness")
    if not (os.path.isfile(args.torch_python) and os.access(args.torch_python, os.X_OK)):
        fail(f"--torch-python={args.torch_python!r} is not an executable file; pass a Python with torch")
    if args.keras_flags:
        check_keras_flags(args.keras_flags)


def check_keras_flags(flags):
    """Parse `flags` as the fra-keras worker will (FRAConfig flags on the paper preset); a one-line
    error naming them and the problem if they do not parse or validate."""
    import contextlib
    import io

    sys.path.insert(0, HERE)
    import train_step
    from fra_keras.config import ConfigError

    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            train_step.parse_args(["--preset", "paper"] + shlex.split(flags))
    except SystemExit:
        lines = captured.getvalue().strip().splitlines() or ["not accepted"]
        fail(f"--keras-flags={flags!r}: {lines[-1].split(': error: ')[-1]}")
    except (ConfigError, ValueError) as error:
        fail(f"--keras-flags={flags!r}: {error}")


def fail(message):
    """One-line error and exit 2 (this script must not import fra_keras in the torch subprocess)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def export_tree(official, folder):
    """Write the HEAD tree of the git checkout `official` into `folder` (git archive | tar)."""
    archive = subprocess.run(["git", "-C", official, "archive", "--format=tar", "HEAD"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)


# Workers -----------------------------------------------------------------------------------------
def serve(steps_fns, views, args, info):
    """Warm up, announce `info`, then answer each stdin line with a JSON line: "round" times one round
    (`train_step.time_rounds`, one repeat), "memory" gives this process' memory now (bytes: VmRSS, VmHWM
    = the peak so far) beside `info["import_rss"]`."""
    import memory
    import train_step

    train_step.time_rounds(steps_fns, views, args.steps, 0, args.warmup)
    print("READY " + json.dumps(info), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "memory":
            print("MEMORY " + json.dumps(memory.process_memory()), flush=True)
            continue
        if command != "round":
            break
        cpu = {}
        wall = train_step.time_rounds(steps_fns, views, args.steps, 1, 0, cpu)
        print("ROUND " + json.dumps({k: dict(wall=wall[k][0], cpu=cpu[k][0]) for k in steps_fns}), flush=True)


def import_rss():
    """Resident bytes of this process now (read right after the framework's imports)."""
    import memory

    return memory.process_memory()["VmRSS"]


def stub_fvcore():
    """A stand-in for `fvcore.nn.weight_init` (the official decoder's only use of fvcore): c2_xavier_fill
    is Caffe2's XavierFill, kaiming_uniform_(a=1) on the weight and a zero bias (fvcore's own docstring,
    https://github.com/facebookresearch/fvcore/blob/main/fvcore/nn/weight_init.py)."""
    import types

    import torch.nn as nn

    def c2_xavier_fill(module):
        nn.init.kaiming_uniform_(module.weight, a=1)
        if module.bias is not None:
            nn.init.constant_(module.bias, 0)

    weight_init = types.ModuleType("fvcore.nn.weight_init")
    weight_init.c2_xavier_fill = c2_xavier_fill
    package, nn_package = types.ModuleType("fvcore"), types.ModuleType("fvcore.nn")
    package.nn, nn_package.weight_init = nn_package, weight_init
    sys.modules.update({"fvcore": package, "fvcore.nn": nn_package, "fvcore.nn.weight_init": weight_init})


def official_worker(args):
    """The official FRAB model's step and the torch ResNet floor, served to the parent."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    stub_fvcore()
    sys.path.insert(0, args.tree)
    import backbone as backbone_models
    from models import get_model
    from utils import get_norm

    baseline = import_rss()
    kinds = args.kinds.split(",")
    encoder = backbone_models.__dict__[f"{args.backbone}_encoder"]
    norm = get_norm(OFFICIAL_NORM)
    fns, params = {}, None
    if "fra" in kinds:
        model = get_model("FRAB")(encoder, norm_layer=norm, **OFFICIAL_KWARGS)
        model.train()
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if "floor" in kinds:
        online, target = (encoder(norm_layer=norm, with_avgpool=False) for _ in range(2))
        online.train(), target.train()
        target.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    shape = (args.batch_size, 3, args.image_size, args.image_size)
    views = (torch.randn(shape, generator=g), torch.randn(shape, generator=g))

    def fra(v):
        model.zero_grad(set_to_none=True)
        loss, _ = model(v[0], v[1])
        loss.backward()
        return loss.detach()

    def floor(v):
        online.zero_grad(set_to_none=True)
        with torch.no_grad():
            for x in v:
                target(x)
        loss = sum(online(x).mean() for x in v)
        loss.backward()
        return loss.detach()

    for kind, fn in (("fra", fra), ("floor", floor)):
        if kind in kinds:
            fns[kind] = fn
    serve(fns, views, args,
          dict(version=f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY="
               f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}", params=params, import_rss=baseline))


def keras_worker(args):
    """fra-keras's FRA step and floor without update (benchmarks/train_step.py), served to the parent."""
    import train_step

    _, config = train_step.parse_args(["--preset", "paper", "--backbone", args.backbone, "--image-size",
                                       str(args.image_size), "--batch-size", str(args.batch_size)]
                                      + shlex.split(args.keras_flags))
    from fra_keras import cli_utils

    tf = cli_utils.quiet_tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    from fra_keras.models.fra import resolve_jit_compile

    baseline = import_rss()
    kinds = args.kinds.split(",")
    jit = resolve_jit_compile(config.jit_compile)
    fns, params = {}, None
    if "fra" in kinds:
        model, fns["fra"] = train_step.fra_step_fn(config, jit, update=False)
        params = sum(train_step.np_size(v) for v in model.optimized_variables)
    if "floor" in kinds:
        _, fns["floor"] = train_step.floor_step_fn(config, jit, update=False)
    serve(fns, train_step.random_views(config), args,
          dict(version=f"TF {tf.__version__}, {args.threads} intra-op threads, XLA {'on' if jit else 'off'}",
               params=params, import_rss=baseline))


# Parent ------------------------------------------------------------------------------------------
class Worker:
    """A worker subprocess of this script, driven line by line over its stdin / stdout."""

    def __init__(self, name, python, args, tree, kinds=KINDS, **env_vars):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(
            p for p in (ROOT, HERE, os.environ.get("PYTHONPATH")) if p), **env_vars)
        cmd = [python, os.path.abspath(__file__), "--worker", name, "--tree", tree, "--official", args.official,
               "--backbone", args.backbone, "--image-size", str(args.image_size), "--batch-size",
               str(args.batch_size), "--threads", str(args.threads), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--kinds", ",".join(kinds), "--keras-flags", args.keras_flags]
        self.name = name
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._expect("READY")

    def _expect(self, tag):
        for line in self.proc.stdout:
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1:])
        fail(f"the {self.name} worker stopped (exit {self.proc.wait()}) before answering {tag}; see its errors above")

    def ask(self, command, tag):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._expect(tag)

    def round(self):
        return self.ask("round", "ROUND")

    def memory(self):
        return self.ask("memory", "MEMORY")

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()


def summarise(rounds, batch_size):
    """{(side, kind): (img/s at the median step time, median CPU s per step, median wall s per step)}
    from `rounds` = {side: [{kind: {"wall": s, "cpu": s}}, one per round]}."""
    out = {}
    for side, records in rounds.items():
        for kind in KINDS:
            wall = statistics.median(r[kind]["wall"] for r in records)
            out[side, kind] = (batch_size / wall, statistics.median(r[kind]["cpu"] for r in records), wall)
    return out


def report(rounds, infos, args, loads):
    """Print the table of img/s and CPU time, FRA / floor per side and fra-keras / official speed."""
    stats = summarise(rounds, args.batch_size)
    labels = dict(official="official (PyTorch)", keras="fra-keras (TF)")
    print(f"{args.backbone} at {args.image_size} px, batch {args.batch_size}, float32, {args.threads} threads; "
          f"{args.warmup} warm-up steps, {args.repeats} rounds x {args.steps} steps of each, alternating; "
          f"1-min load average {min(loads):.1f}-{max(loads):.1f} during the run ({os.cpu_count()} CPUs)")
    for side in rounds:
        print(f"  {labels[side]}: {infos[side]['version']}; {infos[side]['params']:,} trainable parameters")
    print(f"{'':20s} {'FRA img/s':>10s} {'floor img/s':>12s} {'FRA CPU ms':>11s} {'floor CPU ms':>13s} "
          f"{'FRA/floor wall':>15s} {'FRA/floor CPU':>14s}")
    for side in rounds:
        (fra_ips, fra_cpu, fra_wall), (floor_ips, floor_cpu, floor_wall) = stats[side, "fra"], stats[side, "floor"]
        per_round = sorted(r["fra"]["wall"] / r["floor"]["wall"] for r in rounds[side])
        print(f"{labels[side]:20s} {fra_ips:10.2f} {floor_ips:12.2f} {1000 * fra_cpu:11.0f} {1000 * floor_cpu:13.0f} "
              f"{fra_wall / floor_wall:8.2f} ({per_round[0]:.2f}-{per_round[-1]:.2f}) {fra_cpu / floor_cpu:7.2f}")
    speed = [o["fra"]["wall"] / k["fra"]["wall"] for o, k in zip(rounds["official"], rounds["keras"])]
    floor_speed = [o["floor"]["wall"] / k["floor"]["wall"] for o, k in zip(rounds["official"], rounds["keras"])]
    print(f"fra-keras / official FRA step speed: {stats['keras', 'fra'][0] / stats['official', 'fra'][0]:.2f} "
          f"(wall; per-round {min(speed):.2f}-{max(speed):.2f}), "
          f"{stats['official', 'fra'][1] / stats['keras', 'fra'][1]:.2f} (CPU time); floors: "
          f"{stats['keras', 'floor'][0] / stats['official', 'floor'][0]:.2f} "
          f"(per-round {min(floor_speed):.2f}-{max(floor_speed):.2f}), "
          f"{stats['official', 'floor'][1] / stats['keras', 'floor'][1]:.2f} (CPU time)")


def measure_memory(args, tree, omp):
    """{(side, kind): {"import": bytes, "peak": bytes}}: each side and kind alone in a fresh worker that
    warms up, runs one round of `--steps` steps and reports its memory."""
    out = {}
    for side, python, env in (("official", args.torch_python, omp), ("keras", sys.executable, {})):
        for kind in KINDS:
            worker = Worker(side, python, args, tree, kinds=(kind,), **env)
            try:
                worker.round()
                out[side, kind] = dict(peak=worker.memory()["VmHWM"], **{"import": worker.info["import_rss"]})
            finally:
                worker.close()
            print(f"{side} {kind}: peak {out[side, kind]['peak'] / MIB:.0f} MiB", flush=True)
    return out


def memory_rows(results):
    """Rows (label, import MiB, peak MiB, peak - import MiB) per side and kind, then per kind the
    fra-keras / official ratios of the peak and of peak - import, from `measure_memory`'s results."""
    rows = []
    for side in ("official", "keras"):
        for kind in KINDS:
            r = results[side, kind]
            rows.append((f"{side} {kind}", r["import"] / MIB, r["peak"] / MIB, (r["peak"] - r["import"]) / MIB))
    ratios = {}
    for kind in KINDS:
        o, k = results["official", kind], results["keras", kind]
        ratios[kind] = (k["peak"] / o["peak"], (k["peak"] - k["import"]) / (o["peak"] - o["import"]))
    return rows, ratios


def report_memory(results, args):
    rows, ratios = memory_rows(results)
    print(f"{args.backbone} at {args.image_size} px, batch {args.batch_size}, float32, {args.threads} threads; "
          f"{args.warmup} warm-up + {args.steps} steps, each side and kind in a fresh process; peak = VmHWM")
    print(f"{'':16s} {'RSS after import MiB':>21s} {'peak MiB':>9s} {'peak - import MiB':>17s}")
    for label, imported, peak, own in rows:
        print(f"{label:16s} {imported:21.0f} {peak:9.0f} {own:17.0f}")
    for kind, (peak, own) in ratios.items():
        print(f"fra-keras / official, {kind}: peak {peak:.2f}, peak - import {own:.2f}")


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        sys.path.insert(0, HERE)
        return official_worker(args) if args.worker == "official" else keras_worker(args)
    check_args(args)
    omp = {} if args.omp_wait_policy == "inherit" else dict(OMP_WAIT_POLICY=args.omp_wait_policy)
    if args.memory:
        with tempfile.TemporaryDirectory(prefix="fra_official_") as tree:
            export_tree(args.official, tree)
            results = measure_memory(args, tree, omp)
        report_memory(results, args)
        return 0
    with tempfile.TemporaryDirectory(prefix="fra_official_") as tree:
        export_tree(args.official, tree)
        loads = [os.getloadavg()[0]]
        workers = {}
        try:
            workers["official"] = Worker("official", args.torch_python, args, tree, **omp)
            workers["keras"] = Worker("keras", sys.executable, args, tree)
            rounds = {side: [] for side in workers}
            for i in range(args.repeats):
                for side in (("official", "keras") if i % 2 == 0 else ("keras", "official")):
                    rounds[side].append(workers[side].round())
                    loads.append(os.getloadavg()[0])
                print(f"round {i + 1}/{args.repeats}: " + ", ".join(
                    f"{side} FRA {1000 * rounds[side][-1]['fra']['wall']:.0f} ms, floor "
                    f"{1000 * rounds[side][-1]['floor']['wall']:.0f} ms" for side in workers)
                    + f"; load {loads[-1]:.1f}", flush=True)
        finally:
            for worker in workers.values():
                worker.close()
    report(rounds, {side: w.info for side, w in workers.items()}, args, loads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
