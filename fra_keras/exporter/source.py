"""What an export is made from: a model.keras, a backbone.weights.h5 (+ config.json), an earlier
export, or an in-memory FRA model; and the optional downstream head with its output names."""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, List, Optional

import keras

import fra_keras.downstream.heads  # noqa: F401  (registers the downstream heads' custom layers)
import fra_keras.models.fra  # noqa: F401  (registers FRA so that model.keras loads)
from fra_keras.config import FRAConfig
from fra_keras.exporter.layout import (BASE_OUTPUTS, MANIFEST, ExportError, check_head_path, check_source_path,
                                       first_line)
from fra_keras.exporter.manifest import check_checksums, read_manifest, sha256
from fra_keras.models.backbone import load_backbone

_OUTPUT_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclasses.dataclass
class Source:
    """What an export is made from.

    kind: "keras" (model.keras from pre-training, or an in-memory FRA), "weights" (backbone.weights.h5 +
    config.json) or "savedmodel" (an earlier export, re-exported / verified as is).
    """

    kind: str
    path: Optional[str]
    config: FRAConfig
    backbone: Any = None          # the Keras backbone (reference), kind keras / weights
    model: Any = None             # the FRA model, kind keras
    manifest: Optional[dict] = None   # kind savedmodel: its manifest
    sha256: Optional[str] = None

    @property
    def has_regions(self) -> bool:
        if self.kind == "savedmodel":
            return bool(self.manifest["heatmaps"]["included"])
        return self.model is not None and bool(self.config.region_losses)

    @property
    def no_heatmaps_reason(self) -> str:
        if self.kind == "weights":
            return ("exported from a bare backbone.weights.h5: the prototypes (region embeddings) live in "
                    "the full model.keras; export that file to get heatmaps")
        if self.kind == "savedmodel":
            return self.manifest["heatmaps"].get("reason", "")
        return "the model was trained without the region branch (region_losses=False)"


def load_source(model) -> Source:
    """A `Source` from a path (see `layout.check_source_path`) or an in-memory FRA model."""
    if not isinstance(model, str):
        if not (hasattr(model, "backbone") and hasattr(model, "config")):
            raise ExportError(f"model={type(model).__name__}: pass a path or an FRA model (with .backbone, .config)")
        return Source("keras", None, model.config, backbone=model.backbone, model=model)
    kind = check_source_path(model)
    if kind == "savedmodel":
        manifest = read_manifest(model)
        problems = check_checksums(model, manifest)
        if problems:
            raise ExportError(f"--model {model!r} does not match its manifest: {'; '.join(problems)}")
        return Source("savedmodel", model, FRAConfig.from_dict(manifest["config"]), manifest=manifest,
                      sha256=sha256(os.path.join(model, MANIFEST)))
    if kind == "keras":
        try:
            loaded = keras.saving.load_model(model, compile=False)
        except Exception as e:  # corrupt zip, unknown class, ...
            raise ExportError(f"--model {model!r} could not be loaded: {first_line(e)}") from None
        if not (hasattr(loaded, "backbone") and hasattr(loaded, "config")):
            raise ExportError(f"--model {model!r} holds a {type(loaded).__name__}, not an FRA model (no backbone)")
        return Source("keras", model, loaded.config, backbone=loaded.backbone, model=loaded, sha256=sha256(model))
    cfg_path = os.path.join(os.path.dirname(os.path.abspath(model)), "config.json")
    config = FRAConfig.from_json(cfg_path)
    try:
        backbone = load_backbone(model, config)
    except Exception as e:
        raise ExportError(f"--model {model!r} does not fit the architecture of {cfg_path}: {first_line(e)}") from None
    return Source("weights", model, config, backbone=backbone, sha256=sha256(model))


def load_head(head):
    """A head: a keras.Model (B, h, w, C) -> tensor or dict of tensors, or a path to a .keras file."""
    if head is None or not isinstance(head, str):
        return head
    check_head_path(head)
    try:
        return keras.saving.load_model(head, compile=False)
    except Exception as e:
        raise ExportError(f"--head {head!r} could not be loaded: {first_line(e)}") from None


def _snake_case(name: str) -> str:
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def head_output_names(head) -> List[str]:
    """Names the head's outputs get in the export.

    A dict output keeps its keys; a list output uses the output layers' names; a single tensor is named
    after its output layer when that layer was named by the user, else `head_output`.
    """
    output = head.output
    if isinstance(output, dict):
        names = list(output)
    else:
        tensors = list(output) if isinstance(output, (list, tuple)) else [output]
        ops = [t._keras_history.operation for t in tensors]
        auto = [re.fullmatch(rf"{_snake_case(type(op).__name__)}(_\d+)?", op.name) is not None for op in ops]
        if len(ops) == 1:
            names = ["head_output" if auto[0] else ops[0].name]
        else:
            names = [f"head_output_{i}" if a else op.name for i, (op, a) in enumerate(zip(ops, auto))]
    for n in names:
        if not _OUTPUT_NAME_RE.match(str(n)):
            raise ExportError(f"head output name {n!r} must match {_OUTPUT_NAME_RE.pattern}")
        if n in BASE_OUTPUTS:
            raise ExportError(f"head output name {n!r} clashes with the backbone output of the same name; "
                              "rename the head's output layer or dict key")
    if len(set(names)) != len(names):
        raise ExportError(f"head output names {names} are not unique")
    return [str(n) for n in names]


def check_head(head, config: FRAConfig) -> List[str]:
    """Check the head takes the backbone feature map; return its output names."""
    inputs = getattr(head, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise ExportError(f"the head must have one input, the feature map (B, h, w, {config.feature_channels}); "
                          f"it has {len(inputs or [])}")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or shape[-1] not in (None, config.feature_channels):
        raise ExportError(f"the head's input has shape {shape}; it must take the backbone feature map "
                          f"(None, h, w, {config.feature_channels})")
    return head_output_names(head)


def head_values(result, head_names) -> list:
    """A head's outputs (a dict, a list or one tensor) as a list in the order of `head_names`."""
    if isinstance(result, dict):
        return [result[k] for k in head_names]
    if isinstance(result, (list, tuple)):
        return list(result)
    return [result]
