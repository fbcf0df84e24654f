"""TFX Trainer module file: pre-train FRA on TFRecord files and write the serving model (docs/tfx.md).

Use it as the `module_file` of a TFX `Trainer`::

    trainer = tfx.components.Trainer(
        module_file="export/tfx_trainer.py",
        examples=example_gen.outputs["examples"],
        train_args=tfx.proto.TrainArgs(num_steps=6140 * 50),
        eval_args=tfx.proto.EvalArgs(num_steps=100),
        custom_config={"preset": "paper", "fra_config": {"batch_size": 512}})

`run_fn` is an adapter: `fn_args.custom_config` -> `FRAConfig` and trainer options, `train_steps` ->
a step plan (`fra_keras.training.plan_steps`), then the run engine of `python -m fra_keras.pretrain`
(`fra_keras.training.train`, reading `train_files` through `fra_keras.data.pretraining_dataset`), then
the validation loss, the verified fra_keras export and the TFX serving model (`write_serving_model`).
Nothing here imports `tfx` (it cannot be installed next to TF 2.21 / protobuf 7) nor, at load time,
TensorFlow: `run_fn` only reads the attributes of the `FnArgs` object, so any object with the same
fields works (tests use a `SimpleNamespace`). The fields, the `custom_config` keys, the step rule and
the serving signatures are in docs/tfx.md.
"""

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import uuid
from typing import Any, Dict, List, Optional

LOG = logging.getLogger("fra_keras.tfx_trainer")

#: Signature name -> (input name, the fra_keras export signature it reuses).
TFX_SIGNATURES = {
    "serving_default": ("examples", "serve_tf_example"),
    "serve_images": ("images", "serving_default"),
    "serve_image_bytes": ("image_bytes", "serve_image_bytes"),
    "serve_tf_example": ("examples", "serve_tf_example"),
}
#: Signature name -> input name (the form `fra_keras.export.write_warmup` / `verify_saved_model` take).
SERVING_INPUTS = {sig: name for sig, (name, _) in TFX_SIGNATURES.items()}
TFX_MANIFEST = os.path.join("assets.extra", "fra_tfx.json")
TFX_REFERENCE = os.path.join("assets.extra", "verification.npz")
TRAINER_OPTIONS = {"steps_per_epoch": None, "image_key": "image", "shuffle_buffer": 8192, "export_name": "fra",
                   "checkpoint_every": 1, "saved_model_cli": True, "verbose": 2}
_IGNORED_PREFIXES = ("ai_platform_", "vertex_")

# =============================================================================================
# custom_config
# =============================================================================================
# No `from __future__ import annotations`: TFX may execute this file without registering it in
# sys.modules, and dataclasses then cannot resolve string annotations.
@dataclasses.dataclass
class TrainerSettings:
    config: Any                       # FRAConfig (before step planning)
    options: Dict[str, Any]


def parse_custom_config(custom_config: Optional[dict]) -> TrainerSettings:
    """FRAConfig and trainer options from `fn_args.custom_config` (see the module docstring)."""
    from fra_keras.config import ConfigError, FRAConfig

    if isinstance(custom_config, str):  # some runners hand custom_config over as its JSON text
        try:
            custom_config = json.loads(custom_config) if custom_config.strip() else None
        except json.JSONDecodeError as e:
            raise ConfigError(f"custom_config is a string but not JSON: {e}") from None
    if not isinstance(custom_config, (dict, type(None))):
        raise ConfigError(f"custom_config={custom_config!r} must be a dict (or None)")
    values = dict(custom_config or {})
    fields = {f.name for f in dataclasses.fields(FRAConfig)}
    preset = values.pop("preset", None)
    path = values.pop("fra_config_path", None)
    nested = values.pop("fra_config", None) or {}
    if not isinstance(nested, dict):
        raise ConfigError(f"custom_config['fra_config']={nested!r} must be a dict of FRAConfig fields")
    options = dict(TRAINER_OPTIONS)
    flat, unknown = {}, []
    for key, value in values.items():
        if key in TRAINER_OPTIONS:
            options[key] = value
        elif key in fields:
            flat[key] = value
        elif not key.startswith(_IGNORED_PREFIXES):
            unknown.append(key)
    if unknown:
        raise ConfigError(f"custom_config keys {sorted(unknown)} are not FRAConfig fields nor trainer options "
                          f"{sorted(TRAINER_OPTIONS)} nor 'preset' / 'fra_config' / 'fra_config_path'")
    both = sorted(set(flat) & set(nested))
    if both:
        raise ConfigError(f"custom_config gives {both} both flat and in 'fra_config'; give each once")
    if preset is not None and path is not None:
        raise ConfigError("custom_config: give 'preset' or 'fra_config_path', not both")
    base = FRAConfig.from_json(path) if path is not None else FRAConfig.from_preset(preset or "paper")
    overrides = {**nested, **flat}
    config = base.replace(**overrides) if overrides else base
    for name in ("steps_per_epoch", "shuffle_buffer", "checkpoint_every"):
        value = options[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"custom_config['{name}']={value!r} must be a positive integer")
    if not isinstance(options["image_key"], str) or not options["image_key"]:
        raise ConfigError(f"custom_config['image_key']={options['image_key']!r} must be a feature name")
    return TrainerSettings(config, options)


# =============================================================================================
# Files (local or remote, e.g. gs://)
# =============================================================================================
def _is_remote(path: str) -> bool:
    return "://" in os.fspath(path)


def _upload(local: str, remote: str):
    """Copy a local folder tree to a (remote) folder with tf.io.gfile."""
    import tensorflow as tf

    for folder, _, names in os.walk(local):
        rel = os.path.relpath(folder, local)
        target = remote if rel == "." else f"{remote.rstrip('/')}/{rel.replace(os.sep, '/')}"
        tf.io.gfile.makedirs(target)
        for name in names:
            tf.io.gfile.copy(os.path.join(folder, name), f"{target}/{name}", overwrite=True)


# =============================================================================================
# The TFX serving model
# =============================================================================================
def write_serving_model(export_dir: str, serving_model_dir: str, model_name: str = "fra",
                        extra_info: Optional[dict] = None, saved_model_cli: bool = False) -> dict:
    """Save the verified fra_keras export in `export_dir` again with the TFX signatures (module docstring)
    into `serving_model_dir`, with one warm-up request per signature (`fra_keras.export.write_warmup`),
    verify it there (`verify_serving_model`) and move it into place.

    The graph and variables are the export's (re-saved from `tf.saved_model.load`), so nothing is traced
    from Keras again. Returns the verification report. Raises `fra_keras.export.VerificationError`.
    """
    import tensorflow as tf

    from fra_keras import export, training
    from fra_keras.config import FRAConfig

    manifest = export.read_manifest(export_dir)
    config = FRAConfig.from_dict(manifest["config"])
    local_final = serving_model_dir
    staging_root = None
    if _is_remote(serving_model_dir):
        staging_root = tempfile.mkdtemp(prefix="fra-tfx-serving-")
        local_final = os.path.join(staging_root, "serving")
    parent = os.path.dirname(os.path.abspath(local_final))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".tmp-serving-{uuid.uuid4().hex[:8]}")
    try:
        loaded = tf.saved_model.load(export_dir)
        functions = export.MODULE_FUNCTIONS
        tf.saved_model.save(loaded, tmp, signatures={
            sig: getattr(loaded, functions[source]) for sig, (_, source) in TFX_SIGNATURES.items()})
        n_warm = export.write_warmup(tmp, config, model_name, SERVING_INPUTS)
        shutil.copy2(os.path.join(export_dir, export.REFERENCE), os.path.join(tmp, TFX_REFERENCE))
        info = {"format": "fra_keras tfx serving model", "model_name": model_name,
                "signatures": {sig: {"input": name, "fra_keras_export_signature": source}
                               for sig, (name, source) in TFX_SIGNATURES.items()},
                "outputs": manifest["outputs"], "warmup_requests": n_warm,
                "source_export": {"path": os.path.abspath(export_dir), "manifest": manifest},
                "config": manifest["config"], **(extra_info or {})}
        training.write_json(os.path.join(tmp, TFX_MANIFEST), info)
        report = verify_serving_model(tmp, saved_model_cli=saved_model_cli)
        if os.path.exists(local_final):
            shutil.rmtree(local_final)
        os.rename(tmp, local_final)
        if staging_root is not None:
            _upload(local_final, serving_model_dir)
        return report
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if staging_root is not None:
            shutil.rmtree(staging_root, ignore_errors=True)


def verify_serving_model(serving_model_dir: str, saved_model_cli: bool = False) -> dict:
    """Check a serving model written by `write_serving_model` with the exporter's SavedModel verifier
    (`fra_keras.export.verify_saved_model`, docs/tfx.md) for the TFX signatures, against the config,
    outputs and verification.npz stored in its assets.extra/. Returns the report; raises
    `fra_keras.export.VerificationError` listing every problem."""
    from fra_keras import export
    from fra_keras.config import FRAConfig

    with open(os.path.join(serving_model_dir, TFX_MANIFEST)) as f:
        info = json.load(f)
    inputs, reference, tol_key = export.load_reference(os.path.join(serving_model_dir, TFX_REFERENCE))
    return export.verify_saved_model(serving_model_dir, inputs, reference, FRAConfig.from_dict(info["config"]),
                                     list(info["outputs"]), tolerance_key=tol_key, signatures=SERVING_INPUTS,
                                     saved_model_cli=saved_model_cli)


# =============================================================================================
# run_fn
# =============================================================================================
def _log_eval(run_dir: str, results: dict, step: int):
    import tensorflow as tf

    writer = tf.summary.create_file_writer(os.path.join(run_dir, "validation"))
    with writer.as_default():
        for name, value in results.items():
            tf.summary.scalar(f"evaluation_{name}_vs_iterations", float(value), step=step)
    writer.flush()
    writer.close()


def _as_patterns(files) -> List[str]:
    if files is None:
        return []
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    return [os.fspath(f) for f in files]


def run_fn(fn_args) -> dict:
    """Pre-train FRA on `fn_args.train_files`, evaluate on `fn_args.eval_files`, write the serving model
    to `fn_args.serving_model_dir` (docs/tfx.md). Returns the run summary (also in
    model_run_dir/summary.json). Raises on a non-finite loss or a failed verification; then nothing is
    written to serving_model_dir."""
    from fra_keras import training
    from fra_keras.data.shard import find_shards

    serving_model_dir = getattr(fn_args, "serving_model_dir", None)
    model_run_dir = getattr(fn_args, "model_run_dir", None)
    if not serving_model_dir or not model_run_dir:
        raise ValueError(f"fn_args needs serving_model_dir and model_run_dir, got {serving_model_dir!r} and "
                         f"{model_run_dir!r}")
    train_patterns = _as_patterns(getattr(fn_args, "train_files", None))
    if not train_patterns:
        raise ValueError("fn_args.train_files is empty: pass the TFRecord file patterns to train on")
    find_shards(train_patterns)          # fail now, not after training, when a pattern is wrong
    eval_patterns = _as_patterns(getattr(fn_args, "eval_files", None))
    if eval_patterns:
        find_shards(eval_patterns)
    settings = parse_custom_config(getattr(fn_args, "custom_config", None))
    options = settings.options
    plan = training.plan_steps(getattr(fn_args, "train_steps", None), settings.config, options["steps_per_epoch"])
    if plan.note:
        LOG.warning(plan.note)
    config = settings.config.replace(epochs=plan.epochs, warmup_epochs=plan.warmup_epochs,
                                     steps_per_epoch=plan.steps_per_epoch)
    remote = _is_remote(model_run_dir)
    local_run = tempfile.mkdtemp(prefix="fra-tfx-run-") if remote else model_run_dir
    try:
        run = training.train(
            config, local_run, steps_per_epoch=plan.steps_per_epoch, resume=True,   # a rerun resumes
            options=training.RunOptions(checkpoint_every=options["checkpoint_every"], log_every=0,
                                        tensorboard_dir=model_run_dir, verbose=options["verbose"]),
            data={"data_dir": train_patterns, "image_key": options["image_key"],
                  "shuffle_buffer": options["shuffle_buffer"]},
            source=f"TFRecord files {train_patterns}", log=LOG.info,
            after_fit=lambda run: _evaluate_and_export(run, fn_args, eval_patterns, plan, options))
        if remote and run.chief:
            _upload(local_run, model_run_dir)
        return run.summary
    finally:
        if remote:
            shutil.rmtree(local_run, ignore_errors=True)


def _evaluate_and_export(run, fn_args, eval_patterns, plan, options) -> dict:
    """The engine's `after_fit` hook: the validation loss (every worker), then on the chief the
    fra_keras export and the TFX serving model. Returns the entries it adds to the run summary."""
    from fra_keras import data as fra_data
    from fra_keras import export, training

    config, model, step = run.config, run.model, run.summary["steps_run"]
    extra = {"train_steps": getattr(fn_args, "train_steps", None), "warmup_epochs": plan.warmup_epochs,
             "eval": None}
    if eval_patterns:
        eval_steps = getattr(fn_args, "eval_steps", None) or None
        # The same pipeline in a fixed order with fixed view seeds: the same batches on every call.
        eval_ds = fra_data.pretraining_dataset(config.replace(seed=config.seed + 1), data_dir=eval_patterns,
                                               image_key=options["image_key"], shuffle=False,
                                               repeat=eval_steps is not None)
        raw = model.evaluate(eval_ds, steps=eval_steps, return_dict=True, verbose=0)
        results = {k: float(v) for k, v in raw.items()}
        LOG.info("validation (%s batches of %d): %s", eval_steps or "one pass", config.batch_size,
                 ", ".join(f"{k}={v:.4f}" for k, v in results.items()))
        _log_eval(run.tensorboard_dir, results, step)
        extra["eval"] = {**results, "steps": eval_steps}
        training.write_json(os.path.join(run.write_dir, "eval_results.json"), {**extra["eval"], "step": step})
    if not run.chief:
        return extra
    name = options["export_name"]
    result = export.export_model(model, output_dir=os.path.join(run.write_dir, "export"), name=name,
                                 formats=("savedmodel",), saved_model_cli=bool(options["saved_model_cli"]),
                                 log=LOG.info)
    extra["export"] = result.paths["savedmodel"]
    done = {**run.summary, **extra}
    report = write_serving_model(result.paths["savedmodel"], fn_args.serving_model_dir, model_name=name,
                                 extra_info={"eval": extra["eval"], "training": {k: done[k] for k in (
                                     "train_steps", "steps_run", "epochs", "steps_per_epoch", "warmup_epochs")}},
                                 saved_model_cli=bool(options["saved_model_cli"]))
    extra.update(serving_model_dir=fn_args.serving_model_dir, serving_checks=report["checks"])
    LOG.info("serving model written to %s (signatures %s)", fn_args.serving_model_dir, ", ".join(TFX_SIGNATURES))
    return extra
