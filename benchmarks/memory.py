"""Host memory of the FRA training step, stage by stage, against an analytic estimate.

    python benchmarks/memory.py --preset tiny
    python benchmarks/memory.py --preset paper --backbone resnet18 --image-size 112 --batch-size 16
    python benchmarks/memory.py --preset paper --backbone resnet18 --image-size 112 --batch-size 16 \\
        --env TF_ENABLE_ONEDNN_OPTS=0 --env MALLOC_ARENA_MAX=2       # compare settings side by side

Each step kind (`--kinds fra floor`: the FRA step and the backbone floor of benchmarks/train_step.py,
built by that script's own functions) runs in a fresh subprocess per setting (`--env NAME=VALUE[,...]`,
each flag one setting; the inherited environment is always the first), through four stages:
  import   `import tensorflow, keras` (TensorFlow's runtime: shared libraries + Python modules)
  build    the networks and the optimiser (FRA(config).compile(): online, target, predictors, LARS slots)
  trace    tracing the step's tf.function (the Python-side graph)
  step 1   the first execution: graph optimisation (Grappler, oneDNN rewrites) and one step
  steps    --steps more steps (the steady state).
For each stage it records the resident memory after it (VmRSS), the peak during it (VmHWM, reset before
the stage through /proc/self/clear_refs) and the whole process' peak (getrusage ru_maxrss), then prints a
table of increments beside an estimate: bytes of the variables by group (x copies), the gradients
(one per optimised variable) and the activations the backward pass keeps, counted from the traced
graph (forward tensors read by gradient ops, by network and call, aliases such as reshapes and
variable reads not counted). Linux only (/proc).

Any FRAConfig field can be overridden with its flag, as in benchmarks/train_step.py (same parser).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MB = 2 ** 20
STAGES = ("import", "build", "trace", "step 1", "steps")
STATUS_FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile")
# Graph ops whose output shares its input's buffer (not a new activation).
ALIAS_OPS = frozenset({"Identity", "IdentityN", "Reshape", "ExpandDims", "Squeeze", "StopGradient", "Snapshot",
                       "EnsureShape"})
# Ops whose outputs are weights, constants or the step's inputs, not activations.
NOT_ACTIVATION_OPS = frozenset({"ReadVariableOp", "Const", "Placeholder", "VarHandleOp", "Shape", "ShapeN",
                                "Size", "Rank"})


# Pure helpers ------------------------------------------------------------------------------------
def parse_status(text):
    """{field: bytes} for the kB fields STATUS_FIELDS of a /proc/<pid>/status text."""
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in STATUS_FIELDS:
            number, unit = value.split()
            if unit != "kB":
                raise ValueError(f"/proc status field {name}={value.strip()!r}: expected a value in kB")
            out[name] = int(number) * 1024
    return out


def parse_env_setting(text):
    """'A=1,B=2' -> {'A': '1', 'B': '2'}; '' or 'default' -> {} (the inherited environment)."""
    if text in ("", "default"):
        return {}
    out = {}
    for item in text.split(","):
        name, eq, value = item.partition("=")
        if not eq or not name or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"--env {text!r}: expected NAME=VALUE[,NAME=VALUE...], got item {item!r}")
        out[name] = value
    return out


def call_group(scope):
    """The network and call an op belongs to, from its first name-scope component: Keras names the
    n-th call of layer `neck` inside a tf.function `neck_n`; 'gradient_tape' and others: 'other'."""
    return scope if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*?(_\d+)?", scope) else "other"


def increments(stages):
    """Rows (stage, RSS after, peak during the stage, peak minus the RSS before it), bytes, from
    {stage: {"VmRSS": .., "VmHWM": ..}} in STAGES order (the first stage's 'before' is 0)."""
    rows, before = [], 0
    for name in STAGES:
        if name not in stages:
            continue
        s = stages[name]
        rows.append((name, s["VmRSS"], s["VmHWM"], s["VmHWM"] - before))
        before = s["VmRSS"]
    return rows


# Measurement (child process) ---------------------------------------------------------------------
def process_memory():
    """This process' memory now: {VmHWM, VmRSS, RssAnon, RssFile, ru_maxrss} in bytes (Linux)."""
    with open("/proc/self/status") as f:
        out = parse_status(f.read())
    out["ru_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def reset_peak():
    """Reset VmHWM to the current RSS (Linux >= 4.0; ru_maxrss cannot be reset)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def tensor_bytes(tensor):
    """Bytes of a graph tensor, or None when its shape is not fully known."""
    if tensor.shape.rank is None or not tensor.shape.is_fully_defined():
        return None
    return int(tensor.shape.num_elements()) * tensor.dtype.size


def _alias_root(tensor):
    while tensor.op.type in ALIAS_OPS and tensor.op.inputs:
        tensor = tensor.op.inputs[0]
    return tensor


def saved_for_backward(graph, gradient_prefix="gradient_tape/"):
    """Bytes of the forward tensors the backward pass reads, {call group: bytes} (plus 'unknown shape':
    count), from a traced graph. The backward pass is the ops created from the first to the last op
    named under `gradient_prefix` (tape.gradient also adds root-level AddN ops for tensors used twice);
    the saved tensors are those created before it and read by it, followed through aliasing ops, each
    buffer counted once; weights, constants and the step's inputs excluded. They live from their
    forward op to their last gradient op: the activation memory of the step."""
    ops = graph.get_operations()
    ids = [op._id for op in ops if op.name.startswith(gradient_prefix)]
    if not ids:
        return {}
    first, last = min(ids), max(ids)
    seen, groups, unknown = set(), {}, 0
    for op in ops:
        if not first <= op._id <= last:
            continue
        for t in op.inputs:
            root = _alias_root(t)
            if root.op._id >= first or root.op.type in NOT_ACTIVATION_OPS or root.name in seen:
                continue
            seen.add(root.name)
            size = tensor_bytes(root)
            if size is None:
                unknown += 1
                continue
            group = call_group(root.op.name.split("/")[0])
            groups[group] = groups.get(group, 0) + size
    if unknown:
        groups["unknown shape (count)"] = unknown
    return groups


def variable_groups(kind, model_or_step):
    """{group: bytes} of the variables that live for the whole run."""
    def nbytes(variables):
        return sum(int(v.numpy().nbytes) for v in variables)

    if kind == "floor":
        nets, optimizer = model_or_step
        return {"floor networks (online + target, BN statistics)": nbytes([v for n in nets for v in n.variables]),
                "SGD optimiser state": nbytes(optimizer.variables)}
    m = model_or_step
    optimized = m.optimized_variables
    ids = {id(v) for v in optimized} | {id(v) for v in m.target_variables}
    other = [v for v in m.variables if id(v) not in ids and not any(v is w for w in m.optimizer.variables)]
    return {"online + predictors (optimised)": nbytes(optimized), "target (EMA copy)": nbytes(m.target_variables),
            "BN statistics, prototypes, metrics": nbytes(other),
            f"{type(m.optimizer).__name__} slots + counters": nbytes(m.optimizer.variables)}


def run_child(kind, rest, steps, trace_only=False):
    """One stage-by-stage measurement in this (fresh) process; returns the JSON-able record."""
    record = {"kind": kind, "stages": {}}

    def stage(name, fn):
        reset_peak()
        start = time.perf_counter()
        value = fn()
        record["stages"][name] = dict(process_memory(), seconds=time.perf_counter() - start)
        return value

    def load():
        import keras  # noqa: F401

        from fra_keras import cli_utils

        return cli_utils.quiet_tensorflow()

    tf = stage("import", load)
    import keras
    import train_step

    ts_args, config = train_step.parse_args(rest)
    if ts_args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(ts_args.threads)
    from fra_keras.models.fra import resolve_jit_compile

    jit = resolve_jit_compile(config.jit_compile)
    views = train_step.random_views(config)
    if kind == "fra":
        model, loss_fn = stage("build", lambda: train_step.fra_step_fn(config, jit))
        step = _captured(loss_fn, lambda x: isinstance(x, tf.types.experimental.PolymorphicFunction))[0]
    else:
        step = stage("build", lambda: train_step.floor_step_fn(config, jit))
    concrete = stage("trace", lambda: step.get_concrete_function(views))
    if not trace_only:
        stage("step 1", lambda: tf.nest.flatten(step(views))[0].numpy())

        def more():
            for _ in range(steps):
                out = step(views)
            return tf.nest.flatten(out)[0].numpy()
        stage("steps", more)
        record["step_s"] = record["stages"]["steps"]["seconds"] / steps
        record["traces"] = step.experimental_get_tracing_count()   # 1: no retracing
    record["peak"] = process_memory()["ru_maxrss"]

    # The estimate, after the measurements so that its own work is not counted above.
    if kind == "fra":
        record["variables"] = variable_groups(kind, model)
        record["gradients"] = record["variables"]["online + predictors (optimised)"]
    else:
        nets = sorted(_captured(step, lambda x: isinstance(x, keras.Model)), key=lambda n: n.name)
        optimizer = _captured(step, lambda x: isinstance(x, keras.optimizers.Optimizer))[0]
        record["variables"] = variable_groups(kind, (nets, optimizer))
        record["gradients"] = sum(int(v.numpy().nbytes) for v in nets[0].trainable_variables)  # floor_online
    record["saved"] = saved_for_backward(concrete.graph)
    record["config"] = {"backbone": config.backbone, "image_size": config.image_size,
                        "batch_size": config.batch_size, "precision": config.precision, "jit": jit}
    return record


def _captured(fn, predicate):
    """The objects captured by the Python closure behind `fn` (a function or tf.function) that satisfy
    `predicate`: how the step builders of benchmarks/train_step.py hold their networks."""
    fn = getattr(fn, "python_function", fn)
    found = [c.cell_contents for c in (fn.__closure__ or ()) if predicate(c.cell_contents)]
    if not found:
        raise RuntimeError(f"{fn.__qualname__} captures nothing of the expected kind")
    return found


# Report (parent process) -------------------------------------------------------------------------
def _mb(x):
    return f"{x / MB:8.0f}"


def report(record, setting):
    """Print one child's stage table with the estimate beside it."""
    saved = {k: v for k, v in record["saved"].items() if k != "unknown shape (count)"}
    act = sum(saved.values())
    small = [k for k, v in saved.items() if v < 0.01 * act]
    if small:
        saved["others (losses, small ops)"] = sum(saved.pop(k) for k in small)
    var = sum(record["variables"].values())
    first = record["stages"].get("import", {})
    steady = f"{record['step_s']:.2f} s/step (steady), " if "step_s" in record else "traced only, "
    print(f"\n== {record['kind']} step, setting: {setting or 'inherited environment'}; {steady}"
          f"process peak {record['peak'] / MB:.0f} MB" + (f", traced {record['traces']}x" if "traces" in record else ""))
    print(f"{'stage':8s} {'RSS after':>9s} {'peak in':>8s} {'peak - RSS before':>18s}   estimate (MB)")
    notes = {
        "import": f"shared libraries {first.get('RssFile', 0) / MB:.0f} + anonymous {first.get('RssAnon', 0) / MB:.0f}",
        "build": f"variables {var / MB:.0f} = " + " + ".join(f"{k} {v / MB:.0f}" for k, v in record["variables"].items()),
        "trace": "graph objects in Python",
        "step 1": "as 'steps' + graph optimisation; freed memory stays with the allocator",
        "estimate": f"gradients {record['gradients'] / MB:.0f} + saved activations {act / MB:.0f} "
                 f"= {(record['gradients'] + act) / MB:.0f} (+ temporaries)",
    }
    for name, rss, peak, inc in increments(record["stages"]):
        print(f"{name:8s} {_mb(rss)} {_mb(peak)} {_mb(inc):>18s}   {notes.get(name, notes['estimate'])}")
    if "steps" not in record["stages"]:
        print(f"{'step':8s} {'':8s} {'':8s} {'':>18s}   {notes['estimate']}")
    print("saved activations by network call (MB): " + ", ".join(
        f"{k} {v / MB:.0f}" for k, v in sorted(saved.items(), key=lambda kv: -kv[1])))
    if "unknown shape (count)" in record["saved"]:
        print(f"  ({record['saved']['unknown shape (count)']} saved tensors of unknown shape not counted)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=["fra", "floor"], choices=["fra", "floor"])
    parser.add_argument("--steps", type=int, default=3, help="steps after the first (default 3)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE[,NAME=VALUE]",
                        help="an extra setting to measure (repeatable); 'default' = inherited environment")
    parser.add_argument("--trace-only", action="store_true",
                        help="only build and trace (no step runs): the estimate at sizes too large to run here")
    parser.add_argument("--json", default=None, help="also write all records to this JSON file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.steps < 1:
        parser.error(f"--steps {args.steps}: must be at least 1")
    try:
        settings = [{}] + [parse_env_setting(e) for e in args.env if parse_env_setting(e)]
    except ValueError as error:
        parser.error(str(error))
    return args, rest, settings


def main(argv=None):
    args, rest, settings = parse_args(argv)
    if args.child:
        record = run_child(args.child, rest, args.steps, args.trace_only)
        print("MEMORY_JSON " + json.dumps(record), flush=True)
        return 0
    import train_step

    train_step.parse_args(rest)   # reject bad config flags before starting subprocesses
    records = []
    for setting in settings:
        for kind in args.kinds:
            env = dict(os.environ, **setting)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.dirname(HERE), env.get("PYTHONPATH")) if p)
            cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, "--steps", str(args.steps),
                   *(["--trace-only"] if args.trace_only else []), *rest]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("MEMORY_JSON ")]
            if proc.returncode or not lines:
                print(proc.stdout[-2000:] + proc.stderr[-4000:], file=sys.stderr)
                print(f"error: the {kind} measurement with {setting or 'the inherited environment'} failed "
                      f"(exit {proc.returncode})", file=sys.stderr)
                return 1
            record = json.loads(lines[-1][len("MEMORY_JSON "):])
            record["setting"] = ",".join(f"{k}={v}" for k, v in setting.items())
            report(record, record["setting"])
            sys.stdout.flush()
            records.append(record)
    if len(records) > len(args.kinds):
        print("\nsummary (MB): setting, kind, process peak, steady-step peak, s/step")
        for r in (r for r in records if "step_s" in r):
            print(f"  {r['setting'] or 'inherited':40s} {r['kind']:6s} {_mb(r['peak'])} "
                  f"{_mb(r['stages']['steps']['VmHWM'])} {r['step_s']:8.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
