"""TFDS builder ``fra_synthetic_faces``: the procedural faces of `fra_keras.data.synthetic`, rendered
at build time (nothing is downloaded) and stored losslessly, so ``tfds.load`` returns exactly
`render_sample(index, seed, size, split)`.  Registered by importing `fra_keras.data.tfds_builders`.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

from fra_keras.data import synthetic as synth
from fra_keras.data.layouts.tfds_base import FRA_CITATION, HOMEPAGE, FraBuilder


@dataclasses.dataclass(eq=False)
class FraSyntheticFacesConfig(tfds.core.BuilderConfig):
    """Image size, examples per split and generator seed of `fra_synthetic_faces`."""

    image_size: int = 64
    num_train: int = 800
    num_validation: int = 100
    num_test: int = 100
    seed: int = 0

    def num_examples(self, split: str) -> int:
        return {"train": self.num_train, "validation": self.num_validation, "test": self.num_test}[split]


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer (examples in that split)")
    return int(value)


def synthetic_faces_config(image_size: int = 64, num_train: int = 800, num_validation: int = 100,
                           num_test: int = 100, seed: int = 0) -> FraSyntheticFacesConfig:
    """A custom `fra_synthetic_faces` config; its name (and so its folder under ``data_dir``) encodes
    every value, e.g. ``64_n800-100-100_seed0``. The registered configs "64", "112" and "224" are the
    defaults for their size."""
    image_size = synth._check_size(image_size)
    counts = [_check_count(n, v) for n, v in (("num_train", num_train), ("num_validation", num_validation),
                                              ("num_test", num_test))]
    seed = synth._check_seed(seed)
    name = f"{image_size}_n{counts[0]}-{counts[1]}-{counts[2]}_seed{seed}"
    return FraSyntheticFacesConfig(
        name=name, image_size=image_size, num_train=counts[0], num_validation=counts[1], num_test=counts[2],
        seed=seed, description=f"{image_size} px; {counts[0]} / {counts[1]} / {counts[2]} train / validation "
                               f"/ test faces; generator seed {seed}.")


_SYNTHETIC_CONFIGS = [
    FraSyntheticFacesConfig(name="64", image_size=64, num_train=800, num_validation=100, num_test=100,
                            description="64 px; 800 / 100 / 100 faces (builds in under a minute on 2 cores)."),
    FraSyntheticFacesConfig(name="112", image_size=112, num_train=1600, num_validation=200, num_test=200,
                            description="112 px; 1600 / 200 / 200 faces (one train face per identity)."),
    FraSyntheticFacesConfig(name="224", image_size=224, num_train=3200, num_validation=400, num_test=400,
                            description="224 px; 3200 / 400 / 400 faces."),
]


class FraSyntheticFaces(FraBuilder):
    """Procedural faces with every label (`fra_keras.data.synthetic`, generator ``synthetic_faces_v1``).

    Identity-disjoint splits (train / validation / test hold different people). Example ``index`` of a
    split equals ``render_sample(index, seed, image_size, split)`` exactly. Sizes and counts: the configs
    "64" (default), "112", "224", or keyword arguments ``num_train``, ``num_validation``, ``num_test``,
    ``seed`` (also in the name string: ``fra_synthetic_faces/64/num_train=100,num_test=20``), or
    ``config=synthetic_faces_config(...)``.
    """

    BUILDER_CONFIGS = _SYNTHETIC_CONFIGS

    def __init__(self, *, config=None, num_train: Optional[int] = None, num_validation: Optional[int] = None,
                 num_test: Optional[int] = None, seed: Optional[int] = None, **kwargs):
        overrides = dict(num_train=num_train, num_validation=num_validation, num_test=num_test, seed=seed)
        if any(v is not None for v in overrides.values()):
            base = config
            if base is None:
                base = self.BUILDER_CONFIGS[0]
            elif isinstance(base, str):
                known = {c.name: c for c in self.BUILDER_CONFIGS}
                if base.split(":")[0] not in known:
                    raise ValueError(f"config={base!r}: expected one of {sorted(known)} (or a "
                                     "FraSyntheticFacesConfig) together with num_train / num_validation / "
                                     "num_test / seed")
                base = known[base.split(":")[0]]
            values = {k: (v if v is not None else getattr(base, k)) for k, v in overrides.items()}
            config = synthetic_faces_config(base.image_size, **values)
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        s = self.builder_config.image_size
        mask = dict(shape=(s, s), dtype=np.uint8, encoding=tfds.features.Encoding.ZLIB)
        return tfds.core.DatasetInfo(
            builder=self,
            description=(synth.__doc__ or "").split("\n\n")[0] + " Labels: part masks, landmarks, expression, "
                        "action units, CelebA attributes, identity and pose.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(s, s, 3), encoding_format="png"),
                "mask": tfds.features.Tensor(doc="fine part labels, metadata['part_names']", **mask),
                "region_mask": tfds.features.Tensor(doc="8 coarse regions, metadata['region_names']", **mask),
                "landmarks68": tfds.features.Tensor(shape=(68, 2), dtype=np.float32,
                                                    doc="(x, y) pixels, 300W order, 0 = centre of the top-left pixel"),
                "visible68": tfds.features.Tensor(shape=(68,), dtype=np.bool_),
                "landmarks5": tfds.features.Tensor(shape=(5, 2), dtype=np.float32, doc="CelebA 5-point order"),
                "bbox": tfds.features.Tensor(shape=(4,), dtype=np.float32, doc="x0, y0, x1, y1"),
                "expression": tfds.features.ClassLabel(names=list(synth.EXPRESSION_NAMES)),
                "au": tfds.features.Tensor(shape=(len(synth.AU_NAMES),), dtype=np.float32,
                                           doc="action-unit intensities in [0, 1], metadata['au_names']"),
                "attributes": tfds.features.Tensor(shape=(len(synth.CELEBA_ATTRIBUTES),), dtype=np.int8,
                                                   doc="CelebA order; 1 / 0, -1 = unknown"),
                "identity": tfds.features.Scalar(dtype=np.int64, doc="global identity id"),
                "pose": tfds.features.Tensor(shape=(3,), dtype=np.float32, doc="yaw, pitch, roll in degrees"),
                "index": tfds.features.Scalar(dtype=np.int64, doc="render_sample index within the split"),
            }),
            supervised_keys=("image", "expression"),
            homepage=HOMEPAGE,
            citation=FRA_CITATION,
            metadata=tfds.core.MetadataDict(
                generator=synth.GENERATOR_VERSION, seed=self.builder_config.seed, image_size=s,
                part_names=list(synth.PART_NAMES), region_names=list(synth.REGION_NAMES),
                au_names=list(synth.AU_NAMES), attribute_names=list(synth.CELEBA_ATTRIBUTES),
                landmark5_names=list(synth.LANDMARK5_NAMES)),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # generated: nothing to download or read
        return {split: self._generate_examples(split) for split in synth.SPLITS}

    def _generate_examples(self, split: str):
        c = self.builder_config
        for i in range(c.num_examples(split)):
            sample = synth.render_sample(i, seed=c.seed, image_size=c.image_size, split=split)
            example = {k: sample[k] for k in synth.SAMPLE_KEYS}
            example["index"] = np.int64(i)
            yield i, example

