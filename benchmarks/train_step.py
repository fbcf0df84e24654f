"""Training-step throughput: the full FRA step against the backbone "floor", measured in one run.

    python benchmarks/train_step.py --preset tiny
    python benchmarks/train_step.py --preset paper --backbone resnet18 --image-size 112 --batch-size 16
    python benchmarks/train_step.py --preset paper --image-size 112 --batch-size 8 --pieces
    python benchmarks/train_step.py --preset tiny --no-optimizer --step-times 30

FRA step: `FRA.train_step` (2 online forward+backward passes and 2 target forward passes of backbone +
neck, predictors, losses, LARS, EMA of the target, prototype EMA), in a `tf.function` (XLA with
--jit-compile true).
Floor: the same backbone doing exactly its share of that work and nothing else: 2 forward+backward
passes (online, both views) and 2 forward passes (target, training-mode BatchNorm), with a plain SGD
update so that the gradients are really computed. FRA / floor is what the heads, losses, optimiser and
EMA cost on top of the unavoidable backbone work.

The two are timed in rotation (`--repeats` rounds of `--steps` steps each, after `--warmup` steps
that include tracing), so that load swings on a shared machine hit both alike; the median and best
round are printed, with the ratio of the medians, and the process CPU time per step (all threads): on a
machine shared with other jobs the wall time also counts the time other processes hold the cores, the
CPU time not. Throughput counts samples (view pairs) per second: batch_size / step time.

--no-optimizer times both steps without their updates, the definition of issue 14 ("FRA / floor
without the optimiser on both sides"): the FRA step is then `FRA.train_step` less LARS, the target EMA,
the prototype EMA and the metrics (2 online forward+backward passes through backbone, neck, predictors
and losses, 2 target forward passes, the gradients of every optimised variable), the floor the same
without its SGD update.

--step-times N times N single steps of each kind, alternating (after the warm-up), and prints the
median, 90th percentile and maximum with, per step, the process CPU time, minor page faults and involuntary
context switches (getrusage) and the time in Python's garbage collector, so that a slow step can be told
apart: our own extra work (CPU time up), a garbage collection, memory being mapped afresh (page faults
up) or other processes taking the cores (wall time up, CPU time not, context switches up). --gc-off
runs the timed steps with Python's garbage collector disabled.

--compare-keras-attention adds a third step to the rounds: the FRA step with the mask decoder's
attention run by Keras' MultiHeadAttention, as before `TokenAttention` (same function and weights).

--compare-unfused-batchnorm adds two more steps to the rounds: the FRA step and the floor built with
`fused_batchnorm=False` (Keras's BatchNorm ops instead of TensorFlow's fused kernel; same mathematics),
and prints unfused / fused time ratios measured side by side.

--pieces adds a breakdown: forward+backward time of each head on the real feature shapes, the losses,
the optimiser update and the EMA, each as its own `tf.function` (see docs/scaling.md for figures).
--profile-ops runs --steps more steps of the FRA step and of the floor under the TensorFlow profiler and
prints, by op type, the kernels' time per step summed over the executor's threads and the ops per
step, side by side with their difference: where the FRA step's extra time goes (docs/scaling.md).
--json PATH also writes the figures of the rounds (samples/s, ms and CPU ms per step, ratios, peak memory).
Any FRAConfig field can be overridden with its flag (`--hidden-dim 1024`, `--precision mixed_bfloat16`).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import re
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from fra_keras import cli_utils  # noqa: E402
from fra_keras.config import FRAConfig  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", help="tiny | paper (then override fields)")
    parser.add_argument("--steps", type=int, default=3, help="steps per timed round (default 3)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds of each (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first, tracing included")
    parser.add_argument("--pieces", action="store_true", help="also time the parts of the FRA step")
    parser.add_argument("--flops", action="store_true",
                        help="also count the FLOPs of both steps (TF graph statistics) and split FRA's by part")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: TensorFlow's default)")
    parser.add_argument("--no-optimizer", action="store_true",
                        help="time both steps without their optimiser update (FRA: also without the target and "
                             "prototype EMA and the metrics): forward + backward only")
    parser.add_argument("--step-times", type=int, default=0, metavar="N",
                        help="also time N single steps of each kind, alternating, and print their spread (median, "
                             "p90, max) with CPU time, GC time, page faults and context switches per step")
    parser.add_argument("--compare-keras-attention", action="store_true",
                        help="also time, in the same rounds, the FRA step with the mask decoder's attention run by "
                             "Keras' MultiHeadAttention (the implementation before TokenAttention, same weights)")
    parser.add_argument("--compare-unfused-batchnorm", action="store_true",
                        help="also time, in the same rounds, the FRA step and the floor with fused_batchnorm=False "
                             "(Keras's BatchNorm ops) and print unfused / fused ratios")
    parser.add_argument("--profile-ops", action="store_true",
                        help="also profile --steps steps of each and print their op time by op type")
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="also write the figures (samples/s, ms and CPU ms per step, ratios, peak memory) here")
    parser.add_argument("--gc-off", action="store_true",
                        help="disable Python's garbage collector during the timed steps")
    cli_utils.add_config_flags(parser)
    args = parser.parse_args(argv)
    overrides = cli_utils.config_overrides(args)
    overrides.setdefault("steps_per_epoch", 1000)
    overrides.setdefault("epochs", 10)
    return args, FRAConfig.from_preset(args.preset, **overrides)


def random_views(config, seed=0):
    """Random normal views {"view1", "view2"} (B, S, S, 3) of the config's batch and size, plus
    whole-image crop geometries when the config's clustering targets need them (`cluster_targets=
    "cross_view"`, the tiny preset's default): the step then does the cross-view work it does in training."""
    import tensorflow as tf

    from fra_keras.data import augment
    from fra_keras.data.device_augment import GEOMETRY_SUFFIX, VIEWS

    batch = config.batch_size
    g = tf.random.Generator.from_seed(seed)
    shape = (batch, config.image_size, config.image_size, 3)
    views = {"view1": g.normal(shape), "view2": g.normal(shape)}
    if augment.needs_geometry(config):
        views.update({view + GEOMETRY_SUFFIX: augment.whole_image_geometry(batch) for view in VIEWS})
    return views


def fra_step_fn(config, jit, update=True):
    """(model, step): `step(views)` runs one FRA step and returns its loss; without `update`, the
    forward + backward part of `FRA.train_step` only (no update, no EMA, no metrics)."""
    import tensorflow as tf

    from fra_keras.data.device_augment import augment_views
    from fra_keras.models.fra import FRA, _geometries

    model = FRA(config)
    model.compile(jit_compile=jit)
    if update:
        step = tf.function(model.train_step, jit_compile=jit, reduce_retracing=True)
        return model, lambda views: step(views)["loss"]

    @tf.function(jit_compile=jit, reduce_retracing=True)
    def gradients_only(views):
        data = augment_views(views, config)
        geometry = _geometries(data, config)
        views = [data["view1"], data["view2"]]
        target = [model._run_network(model.target_backbone, model.target_neck, v, True) for v in views]
        target = [{k: tf.stop_gradient(v) for k, v in t.items()} for t in target]
        _, loss, _, grads = model._online_gradients(views, target, model.optimizer.iterations, geometry,
                                                    model.optimized_variables)
        return consume(loss, grads)

    return model, gradients_only


def use_keras_attention(model):
    """Run the mask decoders of `model` (online and target) with Keras' MultiHeadAttention, the parent
    class of their TokenAttention layers (same weights; the implementation before TokenAttention), for
    an A/B timing in one process. Must be called before the first step is traced."""
    import keras

    for neck in (model.neck, model.target_neck):
        for layer in neck.mask_decoder.decoder_layers if hasattr(neck, "mask_decoder") else ():
            for attention in (layer.self_attn, layer.cross_attn):
                attention.__class__ = keras.layers.MultiHeadAttention


def consume(value, tensors):
    """(value, one float32 sum per tensor of `tensors`): makes the tensors *outputs* of the timed
    function. A tensor that nothing reads, or that only a control dependency waits for, is not safe:
    Grappler's dependency optimizer turns stateless ops whose results no op reads into no-ops, and
    constant folding rewrites `0 * x` to zeros. Measured before this helper (ResNet-18, 112 px, batch 16,
    paper heads): the "no optimiser" FRA step whose gradients were control dependencies only took
    0.76 s and 1,215 MiB instead of 1.25 s and 1,526 MiB -- the weight gradients had been pruned.
    The sums cost one read of each tensor."""
    import tensorflow as tf

    return value, tf.stack([tf.reduce_sum(tf.cast(t, tf.float32)) for t in tensors if t is not None])


def first(out):
    """The loss of a step's output: `out` itself, or its first element for `consume`'s pairs."""
    return out[0] if isinstance(out, (tuple, list)) else out


def floor_step_fn(config, jit, update=True):
    """(online backbone, step): 2 forward+backward (online) + 2 forward (target) passes of the backbone,
    plain SGD update (none without `update`: the gradients are computed and dropped)."""
    import keras
    import tensorflow as tf

    from fra_keras.models.backbone import build_backbone
    from fra_keras.models.fra import dtype_policy

    with dtype_policy(config.precision):
        online = build_backbone(config, name="floor_online")
        target = build_backbone(config, name="floor_target")
    optimizer = keras.optimizers.SGD(1e-4)
    if config.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(online.trainable_variables)

    @tf.function(jit_compile=jit, reduce_retracing=True)
    def step(views):
        t = [target(views[k], training=True) for k in ("view1", "view2")]
        with tf.GradientTape() as tape:
            f = [online(views[k], training=True) for k in ("view1", "view2")]
            loss = sum(tf.reduce_mean(tf.cast(x, tf.float32)) for x in f)
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, online.trainable_variables)
        if not update:
            return consume(loss, list(grads) + t)
        optimizer.apply_gradients(zip(grads, online.trainable_variables))
        return consume(loss, t)

    return online, step


def unfused_batchnorm(config):
    """`config` with Keras's BatchNorm ops instead of the fused kernel, all else equal (the A/B of
    --compare-unfused-batchnorm)."""
    return config.replace(fused_batchnorm=False)


def time_rounds(fns, views, steps, repeats, warmup, cpu=None):
    """{name: [seconds per step, one per round]}, rounds interleaved across `fns`; also fills `cpu`
    (a dict, when given) with the process CPU seconds per step of each round (all threads)."""
    for name, fn in fns.items():
        for _ in range(warmup):
            float(first(fn(views)))
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(steps):
                out = fn(views)
            float(first(out))
            times[name].append((time.perf_counter() - start) / steps)
            if cpu is not None:
                cpu.setdefault(name, []).append((time.process_time() - start_cpu) / steps)
    return times


def time_single_steps(fns, views, n):
    """{name: per-step records} of `n` single calls of each of `fns`, alternating (so that load swings hit
    all alike): wall and process CPU seconds, minor page faults, involuntary context switches (getrusage;
    the process's own counters, all threads) and the seconds spent in Python's garbage collector."""
    import resource

    pauses = []

    def on_gc(phase, info):
        pauses.append(time.perf_counter())

    records = {name: [] for name in fns}
    gc.callbacks.append(on_gc)
    try:
        for _ in range(n):
            for name, fn in fns.items():
                pauses.clear()
                before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
                float(first(fn(views)))
                wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
                records[name].append(dict(
                    wall=wall, cpu=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
                    sys=after.ru_stime - before.ru_stime, gc=sum(pauses[1::2]) - sum(pauses[0::2]),
                    minflt=after.ru_minflt - before.ru_minflt, nivcsw=after.ru_nivcsw - before.ru_nivcsw))
    finally:
        gc.callbacks.remove(on_gc)
    return records


def spread(values):
    """(median, 90th percentile, maximum) of `values`; the percentile by linear interpolation between
    order statistics (NumPy's default)."""
    ordered = sorted(values)
    pos = 0.9 * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return statistics.median(ordered), ordered[lo] + (pos - lo) * (ordered[hi] - ordered[lo]), ordered[-1]


def print_step_times(label, records):
    walls = [r["wall"] for r in records]
    med, p90, top = spread(walls)
    print(f"{len(records)} single steps, {label}: wall median {1000 * med:.0f} ms, p90 {1000 * p90:.0f} ms "
          f"({p90 / med:.2f}x), max {1000 * top:.0f} ms ({top / med:.2f}x)")
    for key, label in (("cpu", "process CPU s"), ("sys", "of which system"), ("gc", "Python GC s"),
                       ("minflt", "minor page faults"), ("nivcsw", "involuntary ctx switches")):
        m, p, t = spread([r[key] for r in records])
        print(f"  {label:26s} median {m:10.3f}  p90 {p:10.3f}  max {t:10.3f}")
    slow = [i for i, w in enumerate(walls) if w > 1.25 * med]
    print(f"  steps over 1.25x the median: {slow or 'none'}")
    for i in slow:
        r = records[i]
        print(f"    step {i}: wall {1000 * r['wall']:.0f} ms, CPU {1000 * r['cpu']:.0f} ms "
              f"(sys {1000 * r['sys']:.0f}), GC {1000 * r['gc']:.0f} ms, {r['minflt']} page faults, "
              f"{r['nivcsw']} involuntary switches")
    print("  per step (wall ms / CPU ms): "
          + " ".join(f"{1000 * r['wall']:.0f}/{1000 * r['cpu']:.0f}" for r in records))


def pieces(model, config, views, jit, steps, repeats, keras_attention_model=None):
    """Seconds per call of each part of the FRA step (forward+backward where it has weights); with
    `keras_attention_model` (see `use_keras_attention`) also its mask decoder's."""
    import tensorflow as tf

    from fra_keras import losses
    from fra_keras.optimizers import ema_momentum

    v = views["view1"]
    feats = model.backbone(v, training=True)
    b, h, w, c = feats.shape
    k, d = config.num_regions, config.proj_dim
    neck = model.neck
    out = neck(feats, training=True)
    fns = {}

    def fwd_bwd(layer, make_input):
        x = make_input()

        @tf.function(jit_compile=jit)
        def fn():
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                s = sum(tf.reduce_sum(tf.cast(t, tf.float32)) for t in tf.nest.flatten(y))
            return consume(s, tape.gradient(s, layer.trainable_variables + [x]))
        return fn

    fns["backbone fwd+bwd (1 view)"] = fwd_bwd(model.backbone, lambda: v)
    fns["global projector fwd+bwd"] = fwd_bwd(neck.proj, lambda: tf.reduce_mean(feats, axis=[1, 2]))
    if config.region_losses:
        fns["pixel projector fwd+bwd"] = fwd_bwd(neck.pixel_proj, lambda: feats)
        fns["mask decoder fwd+bwd"] = fwd_bwd(neck.mask_decoder, lambda: feats)
        if keras_attention_model is not None:
            fns["mask decoder fwd+bwd, Keras MHA"] = fwd_bwd(keras_attention_model.neck.mask_decoder, lambda: feats)
        fns["region projector fwd+bwd"] = fwd_bwd(neck.region_proj, lambda: tf.cast(
            tf.random.normal((b, k, c)), feats.dtype))
        fns["region predictor fwd+bwd"] = fwd_bwd(model.region_predictor, lambda: out["regions"])
        fns["whole neck fwd+bwd"] = fwd_bwd(neck, lambda: feats)

        @tf.function(jit_compile=jit)
        def loss_fn():
            logits = tf.random.normal((b * h * w, k))
            p = tf.random.normal((b, k, d))
            with tf.GradientTape() as tape:
                tape.watch([logits, p])
                s = losses.clustering_loss(logits, logits * 0.9) + losses.region_loss(p, p * 0.9)
            return consume(s, tape.gradient(s, [logits, p]))
        fns["clustering + region losses fwd+bwd"] = loss_fn
    fns["predictor fwd+bwd"] = fwd_bwd(model.predictor, lambda: out["z"])

    variables = model.optimized_variables
    grads = [tf.random.normal(var.shape) * 1e-3 for var in variables]

    @tf.function(jit_compile=jit)
    def optimizer_fn():
        model.optimizer.apply_gradients(zip(grads, variables))
        return tf.constant(0.0)
    millions = sum(np_size(x) for x in variables) / 1e6
    fns[f"{type(model.optimizer).__name__} update ({millions:.1f}M params)"] = optimizer_fn

    @tf.function(jit_compile=jit)
    def ema_fn():
        m = ema_momentum(tf.constant(0), 1000, config.ema_momentum)
        for t_var, o_var in zip(model.target_variables, model.online_variables):
            t_var.assign(m * t_var + (1.0 - m) * o_var)
        return tf.constant(0.0)
    fns["EMA of the target"] = ema_fn
    wrapped = {name: (lambda f=f: lambda _views: f())() for name, f in fns.items()}
    return time_rounds(wrapped, views, steps, repeats, warmup=1)


# Graph-op name patterns of each part (forward and gradient ops share the layer's name scope; Keras
# adds "_1"-style suffixes to scopes inside a tf.function), first match wins.
PARTS = (("target backbone (2 fwd)", r"target_backbone(_\d+)?/"), ("target neck (2 fwd)", r"target_neck(_\d+)?/"),
         ("pixel projector", r"pixel_proj(_\d+)?/"), ("region projector", r"region_proj(_\d+)?/"),
         ("mask decoder", r"mask_decoder(_\d+)?/"), ("global projector", r"neck(_\d+)?/proj(_\d+)?/"),
         ("region predictor", r"region_predictor(_\d+)?/"), ("predictor", r"predictor(_\d+)?/"),
         ("online backbone (2 fwd+bwd)", r"(^|/)backbone(_\d+)?/"),
         ("optimizer", r"(^|/)(lars|sgd|adamw|lion|lamb)(_\d+)?/"))


def count_flops(fn, views):
    """(total FLOPs, {part: FLOPs}) of one call of the tf.function `fn` from TF's op statistics
    (convolutions, matmuls and their gradients; element-wise ops are not counted)."""
    from tensorflow.python.framework import ops as tf_ops

    graph = fn.get_concrete_function(views).graph
    total, parts = 0, {}
    for op in graph.get_operations():
        if op.type.startswith("BatchMatMul"):
            flops = _batch_matmul_flops(op)
        else:
            try:
                stats = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops")
            except (ValueError, KeyError):
                continue
            flops = int(stats.value or 0)
        total += flops
        part = "losses, EMA, heatmap maths"
        for label, pattern in PARTS:
            if re.search(pattern, op.name):
                part = label
                break
        parts[part] = parts.get(part, 0) + flops
    return total, parts


def _batch_matmul_flops(op):
    """2 * batch * m * n * k, honouring adj_x (TF's own statistic takes k from the last axis of x even
    when x is adjoint, which overstates the kernel gradients of Keras' EinsumDense 32-fold here)."""
    x, out = op.inputs[0].shape, op.outputs[0].shape
    if x.rank is None or out.rank is None or not out.is_fully_defined():
        return 0
    adj_x = op.get_attr("adj_x") if "adj_x" in op.node_def.attr else False
    k = x[-2] if adj_x else x[-1]
    if k is None:
        return 0
    return 2 * int(out.num_elements()) * int(k)


def peak_memory_gib():
    """{"host_rss": peak resident GiB of this process (getrusage), "gpu0": TensorFlow's peak on GPU:0 in
    GiB, or None without a GPU}. Both steps' models are resident here; benchmarks/memory.py measures
    each step alone."""
    import resource

    import tensorflow as tf

    gpu = None
    if tf.config.list_physical_devices("GPU"):
        gpu = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30
    return {"host_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "gpu0": gpu}


def peak_memory():
    """`peak_memory_gib` as text."""
    peak = peak_memory_gib()
    text = f"peak host RSS {peak['host_rss']:.2f} GiB"
    if peak["gpu0"] is not None:
        text += f", peak GPU:0 {peak['gpu0']:.2f} GiB"
    return text + " (this process: FRA and floor together)"


def profile_ops(fn, views, steps):
    """{op type: (ms per step summed over threads, ops per step)} of `steps` calls of `fn(views)`, read
    from the TensorFlow profiler's host trace: the events of the executor's compute threads named
    "<op name>:<op type>". The profiler adds a cost of its own to every op, so these are shares, not
    timings; a step of many small ops is inflated more than one of few large ops."""
    import collections
    import glob
    import tempfile

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory(prefix="fra_profile_") as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            for _ in range(steps):
                out = fn(views)
                float(tf.reduce_sum(first(out)))
        finally:
            tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        with open(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0], "rb") as f:
            space.ParseFromString(f.read())
    time_ps, count = collections.Counter(), collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if "::" in name or name.count(":") != 1:      # executor / thread-pool events, not ops
                    continue
                op_type = name.split(":")[1]
                time_ps[op_type] += event.duration_ps
                count[op_type] += 1
    return {k: (time_ps[k] / 1e9 / steps, count[k] / steps) for k in count}


def print_op_profile(fns, views, steps, top=25):
    """Print `profile_ops` of the FRA step and the floor side by side, the op types with the largest
    difference first."""
    prof = {name: profile_ops(fn, views, steps) for name, fn in fns.items()}
    fra, floor = prof["fra"], prof["floor"]
    total = {k: sum(ms for ms, _ in p.values()) for k, p in prof.items()}
    ops = {k: sum(n for _, n in p.values()) for k, p in prof.items()}
    print(f"op profile ({steps} steps of each; kernel ms per step summed over threads, with the profiler's "
          f"overhead): FRA {total['fra']:.0f} ms in {ops['fra']:.0f} ops, floor {total['floor']:.0f} ms in "
          f"{ops['floor']:.0f} ops, ratio {total['fra'] / max(total['floor'], 1e-9):.2f}")
    print(f"  {'op type':36s} {'FRA ms':>9s} {'floor ms':>9s} {'FRA-floor':>10s} {'FRA ops':>8s} {'floor ops':>9s}")
    kinds = sorted(set(fra) | set(floor), key=lambda k: -abs(fra.get(k, (0, 0))[0] - floor.get(k, (0, 0))[0]))
    for k in kinds[:top]:
        a, b = fra.get(k, (0.0, 0.0)), floor.get(k, (0.0, 0.0))
        print(f"  {k:36s} {a[0]:9.1f} {b[0]:9.1f} {a[0] - b[0]:10.1f} {a[1]:8.0f} {b[1]:9.0f}")


def device_kinds(tf):
    """The physical device kinds TensorFlow sees, e.g. ["CPU", "GPU"]."""
    return sorted({d.device_type for d in tf.config.list_physical_devices()})


def write_report(path, report):
    """Write a benchmark's figures as JSON (the files `benchmarks/gpu_suite.py` collects)."""
    import json

    with open(path, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")


def np_size(variable):
    size = 1
    for s in variable.shape:
        size *= int(s)
    return size


def main(argv=None):
    args, config = parse_args(argv)
    tf = cli_utils.quiet_tensorflow()
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    from fra_keras.models.fra import resolve_jit_compile

    jit = resolve_jit_compile(config.jit_compile)
    views = random_views(config)
    update = not args.no_optimizer
    model, fra = fra_step_fn(config, jit, update)
    _, floor = floor_step_fn(config, jit, update)
    params = sum(np_size(v) for v in model.optimized_variables) / 1e6
    print(f"{config.backbone} width {config.backbone_width} stride {config.output_stride} at {config.image_size} px "
          f"({config.feature_grid}x{config.feature_grid} grid), batch {config.batch_size}, K={config.num_regions}, "
          f"hidden {config.hidden_dim}, proj {config.proj_dim}, decoder {config.decoder_dim}; {config.precision}, "
          f"XLA {'on' if jit else 'off'}; {params:.1f}M trainable params")
    print(f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, TF {tf.__version__}, "
          f"{tf.config.list_logical_devices()[0].device_type}; {args.repeats} rounds x {args.steps} steps, "
          f"interleaved; "
          f"{'with' if update else 'WITHOUT'} the optimiser update{'' if update else ' (and EMA)'} on both sides"
          f"{'; Python GC off' if args.gc_off else ''}")
    if args.gc_off:
        gc.disable()
    steps = {"fra": fra, "floor": floor}
    if args.compare_keras_attention:
        keras_model, steps["fra_keras_attention"] = fra_step_fn(config, jit, update)
        use_keras_attention(keras_model)
    if args.compare_unfused_batchnorm:
        unfused = unfused_batchnorm(config)
        _, steps["fra_unfused_bn"] = fra_step_fn(unfused, jit, update)
        _, steps["floor_unfused_bn"] = floor_step_fn(unfused, jit, update)
    cpu = {}
    times = time_rounds(steps, views, args.steps, args.repeats, args.warmup, cpu)
    b = config.batch_size
    report = {"backbone": config.backbone, "image_size": config.image_size, "batch_size": b,
              "precision": config.precision, "xla": bool(jit), "update": update, "devices": device_kinds(tf),
              "steps": {}, "ratios": {}}
    labels = dict(fra="FRA step", floor="floor (2 fwd+bwd + 2 fwd)", fra_keras_attention="FRA, Keras MHA decoder",
                  fra_unfused_bn="FRA, unfused BatchNorm", floor_unfused_bn="floor, unfused BatchNorm")
    for name in times:
        med, best = statistics.median(times[name]), min(times[name])
        print(f"{labels[name]:28s} {b / med:8.1f} samples/s (median)  {b / best:8.1f} (best)  {1000 * med:8.1f} ms/step"
              f"  {1000 * statistics.median(cpu[name]):8.1f} CPU ms/step")
        report["steps"][name] = {"samples_per_s": b / med, "samples_per_s_best": b / best, "ms_per_step": 1000 * med,
                                 "cpu_ms_per_step": 1000 * statistics.median(cpu[name])}
    for name, base in (("fra", "floor"), ("fra_keras_attention", "floor"), ("fra_keras_attention", "fra"),
                       ("fra_unfused_bn", "floor_unfused_bn"), ("fra_unfused_bn", "fra"),
                       ("floor_unfused_bn", "floor")):
        if name in times:
            ratios = sorted(f / g for f, g in zip(times[name], times[base]))
            report["ratios"][f"{name}/{base}"] = statistics.median(times[name]) / statistics.median(times[base])
            print(f"{labels[name]} / {labels[base].split(' (')[0]} time ratio: "
                  f"{statistics.median(times[name]) / statistics.median(times[base]):.2f} "
                  f"(per-round ratios {ratios[0]:.2f}-{ratios[-1]:.2f}); CPU-time ratio "
                  f"{statistics.median(cpu[name]) / statistics.median(cpu[base]):.2f}")
    print(f"memory: {peak_memory()}")
    report["peak_memory_gib"] = peak_memory_gib()
    if args.json:
        write_report(args.json, report)
    if args.step_times:
        for name, records in time_single_steps(steps, views, args.step_times).items():
            print_step_times(labels[name], records)
    gc.enable()
    if args.flops:
        fra_fn = tf.function(model.train_step) if update else fra
        fra_total, parts = count_flops(fra_fn, views)
        floor_total, _ = count_flops(floor, views)
        print(f"FLOPs per step: FRA {fra_total / 1e9:.1f} G, floor {floor_total / 1e9:.1f} G, "
              f"ratio {fra_total / floor_total:.2f} (time ratio above)")
        for name, value in sorted(parts.items(), key=lambda kv: -kv[1]):
            print(f"  {name:30s} {value / 1e9:8.2f} GFLOP  {100 * value / fra_total:5.1f} %")
    if args.profile_ops:
        print_op_profile({"fra": fra, "floor": floor}, views, args.steps)
    if args.pieces:
        print("pieces (median ms per call; forward+backward on one view's shapes, batch %d):" % b)
        piece_times = pieces(model, config, views, jit, args.steps, max(args.repeats // 2, 2),
                             keras_model if args.compare_keras_attention else None)
        for name, values in piece_times.items():
            print(f"  {name:44s} {1000 * statistics.median(values):8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
