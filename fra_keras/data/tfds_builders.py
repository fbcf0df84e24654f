"""TensorFlow Datasets builders for the FRA data: generated synthetic faces and the real layouts.

Importing this module registers the builders with TFDS (class name -> snake_case name)::

    import fra_keras.data.tfds_builders  # noqa: F401  (registers the builders)
    import tensorflow_datasets as tfds

    ds = tfds.load("fra_synthetic_faces", split="train", data_dir="/data/tfds")          # 64 px, 800/100/100
    ds = tfds.load("fra_synthetic_faces/112", split="validation", data_dir="/data/tfds")
    ds = tfds.load("fra_synthetic_faces/64/num_train=5000,num_validation=500,num_test=500", split="train")

    builder = tfds.builder("fra_rafdb", data_dir="/data/tfds")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir="/data/raw/rafdb"))
    ds = builder.as_dataset(split="test")

=======================  ===========================  ===================================================
name                     splits                       features (besides ``image``, ``image/filename``)
=======================  ===========================  ===================================================
fra_synthetic_faces      train, validation, test      mask, region_mask, landmarks68, visible68,
  /64 (default) /112                                  landmarks5, bbox, expression (RAF-DB names), au,
  /224                                                attributes (int8 40), identity, pose, index
fra_rafdb                train, test                  expression (RAF-DB order)
fra_affectnet /7 /8      train, validation            expression (AffectNet order), landmarks (68),
                                                      visible, valence, arousal, face_box
fra_ferplus              train, validation, test      expression (FERPlus order), votes (10)
  /majority /plurality
fra_fer2013              train, validation, test      expression (FER2013 order)
fra_celeba               train, validation, test      attributes (int8 40), identity, landmarks (5)
fra_300w /raw /0based    train, common, challenging,  landmarks (68), visible
                         private (the folders found)
fra_wflw /98 /68         train, test                  landmarks (98 or 68), visible, face_rect,
                                                      wflw_attributes (6)
=======================  ===========================  ===================================================

Nothing is ever downloaded: the synthetic faces are rendered (`fra_keras.data.synthetic`), the real data
sets are read from ``manual_dir`` with the readers of `fra_keras.data.readers` (same label rules, same
errors naming the file and line). Use ``try_gcs=False`` (the default of ``tfds.load``) and, for
``download_and_prepare``, ``DownloadConfig(manual_dir=..., try_download_gcs=False)``. Each builder's
``MANUAL_DOWNLOAD_INSTRUCTIONS`` gives the folder tree it expects; ``manual_dir`` may be that tree's
root or a folder holding it under the builder's name (``<manual_dir>/fra_rafdb``) or the data set's
usual name (``<manual_dir>/rafdb``, ``RAF-DB``, ...), so one manual folder can serve every builder.

Images: JPEG / PNG files are stored as the bytes of the original file (decoded once at build time to
check them); other formats, crops and FER2013's pixel rows are stored as PNG. Keys are the image
paths relative to the layout root (FER2013: ``fer2013.csv:<line>``), also returned as
``image/filename``; TFDS shuffles the examples by key when it writes the files. Synthetic faces are
stored losslessly (PNG, zlib masks): ``tfds.load`` returns exactly `render_sample(index, seed, size, split)`.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import os
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds

from fra_keras.data import readers
from fra_keras.data import synthetic as synth

VERSION = tfds.core.Version("1.0.0")
RELEASE_NOTES = {"1.0.0": "Initial release (fra_keras)."}
HOMEPAGE = None  # no public page yet; set it when the project is published
FRA_CITATION = """\
@inproceedings{fra2024,
  title     = {Self-Supervised Facial Representation Learning with Facial Region Awareness},
  booktitle = {CVPR},
  year      = {2024}
}"""

__all__ = [
    "FraSyntheticFaces", "FraSyntheticFacesConfig", "FraRafdb", "FraAffectnet", "FraAffectnetConfig",
    "FraFerplus", "FraFerplusConfig", "FraFer2013", "FraCeleba", "Fra300w", "Fra300wConfig", "FraWflw",
    "FraWflwConfig", "BUILDER_NAMES", "synthetic_faces_config",
]



# =============================================================================================
# Shared base
# =============================================================================================
class _FraBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Common version, and a `code_path` that works without the `importlib_resources` package.

    tensorflow-datasets 4.9.10 evaluates `importlib_resources.abc.Traversable` in
    `DatasetBuilder.code_path` for every builder defined in an installed package, but declares that
    package as a dependency for Python < 3.9 only (tensorflow/datasets#11212), so `download_and_prepare`
    fails with "No module named 'importlib_resources'" on Python 3.11. The file of the class is what
    TFDS's own fallback returns outside zipapps.
    """

    VERSION = VERSION
    RELEASE_NOTES = RELEASE_NOTES

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        from etils import epath

        return epath.Path(inspect.getfile(cls))


# =============================================================================================
# Synthetic faces
# =============================================================================================
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


class FraSyntheticFaces(_FraBuilder):
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


# =============================================================================================
# Real layouts read from manual_dir
# =============================================================================================
def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


_PASS_THROUGH = (".jpg", ".jpeg", ".png")


def _record_examples(records: readers.Records, root: str, extras: Sequence[str] = (),
                     fill: Optional[Dict[str, Callable[[], np.ndarray]]] = None):
    """(key, example) for every record: the image (original bytes when JPEG / PNG and not cropped, else
    PNG of the decoded pixels), ``image/filename``, the schema labels and the named extras."""
    fill = fill or {}
    for i in range(len(records)):
        item = records.load(i)   # decodes the image once: a corrupt file raises DataFormatError here
        if records.images is not None:
            key = f"{os.path.basename(records.paths[i])}:{records.lines[i]}"
            image = _png(item.pop("image"))
        else:
            path = records.paths[i]
            key = os.path.relpath(path, root).replace(os.sep, "/")
            pixels = item.pop("image")
            if records.crop_boxes is None and path.lower().endswith(_PASS_THROUGH):
                with open(path, "rb") as f:
                    image = f.read()
            else:
                image = _png(pixels)
        example = {"image": image, "image/filename": key}
        example.update(item)
        for name in extras:
            example[name] = records.labels[name][i]
        for name, make in fill.items():
            if name not in example:
                example[name] = make()
        yield key, example


def _find_root(manual_dir, probes: Sequence[str], names: Sequence[str], instructions: str) -> str:
    """The layout root: ``manual_dir`` or ``manual_dir/<name>`` for the first of `names`, whichever holds
    one of the `probes` (paths relative to the root)."""
    base = os.fspath(manual_dir)
    candidates = [base] + [os.path.join(base, n) for n in names]
    for root in candidates:
        if any(os.path.exists(os.path.join(root, *p.split("/"))) for p in probes):
            return root
    raise readers.MissingFileError(
        f"no data in the expected layout under manual_dir={base!r} (looked for {list(probes)} in "
        f"{candidates}). Expected:\n{instructions}", file=base)


class _ManualBuilder(_FraBuilder, skip_registration=True):
    """Shared parts of the builders that wrap a reader of `fra_keras.data.readers`."""

    PROBES: Tuple[str, ...] = ()
    ROOT_NAMES: Tuple[str, ...] = ()
    DESCRIPTION = ""

    def _label_features(self) -> dict:
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        features = {"image": tfds.features.Image(shape=(None, None, 3)),
                    "image/filename": tfds.features.Text(doc="image path relative to the layout root")}
        features.update(self._label_features())
        keys = ("image", "expression") if "expression" in features else None
        return tfds.core.DatasetInfo(builder=self, description=self.DESCRIPTION,
                                     features=tfds.features.FeaturesDict(features), supervised_keys=keys,
                                     homepage=HOMEPAGE, citation=FRA_CITATION, metadata=self._metadata())

    def _metadata(self) -> Optional[tfds.core.MetadataDict]:
        return None

    def _root(self, dl_manager) -> str:
        return _find_root(dl_manager.manual_dir, self.PROBES, (self.name,) + tuple(self.ROOT_NAMES),
                          self.MANUAL_DOWNLOAD_INSTRUCTIONS)

    def _generate_examples(self, records, root, extras=(), fill=None):
        yield from _record_examples(records, root, extras, fill)


def _expression_feature(names) -> tfds.features.ClassLabel:
    return tfds.features.ClassLabel(names=list(names))


def _landmark_features(n: int) -> dict:
    return {"landmarks": tfds.features.Tensor(shape=(n, 2), dtype=np.float32,
                                              doc="(x, y) pixels, 0 = centre of the top-left pixel"),
            "visible": tfds.features.Tensor(shape=(n,), dtype=np.bool_)}


# RAF-DB ---------------------------------------------------------------------------------------
class FraRafdb(_ManualBuilder):
    """RAF-DB basic emotion (aligned 100x100 faces), via `readers.read_rafdb`."""

    DESCRIPTION = ("RAF-DB basic expressions, 7 classes in RAF-DB order (surprise, fear, disgust, happiness, "
                   "sadness, anger, neutral), read from manual_dir by fra_keras.data.readers.read_rafdb.")
    PROBES = ("EmoLabel/list_patition_label.txt",)
    ROOT_NAMES = ("rafdb", "RAF-DB", "basic")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
RAF-DB (basic) is distributed on request (http://www.whdeng.cn/RAF/model1.html). Put in manual_dir
(or manual_dir/rafdb):
  EmoLabel/list_patition_label.txt         train_00001.jpg 5   (labels 1..7)
  Image/aligned/train_00001_aligned.jpg    (and test_0001_aligned.jpg ...)
"""

    def _label_features(self):
        return {"expression": _expression_feature(readers.RAFDB_CLASSES)}

    def _split_generators(self, dl_manager):
        root = self._root(dl_manager)
        return {split: self._generate_examples(readers.read_rafdb(root, split), root)
                for split in ("train", "test")}


# AffectNet ------------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class FraAffectnetConfig(tfds.core.BuilderConfig):
    num_classes: int = 7
    crop_face: bool = False


class FraAffectnet(_ManualBuilder):
    """AffectNet (manually annotated), via `readers.read_affectnet` (codes 8-10 dropped; contempt too
    in config "7")."""

    BUILDER_CONFIGS = [
        FraAffectnetConfig(name="7", num_classes=7, description="7 classes (contempt dropped), FRA's affectnet7."),
        FraAffectnetConfig(name="8", num_classes=8, description="8 classes (with contempt)."),
    ]
    DESCRIPTION = ("AffectNet manually annotated images; expression in AffectNet's order (neutral, happiness, "
                   "sadness, surprise, fear, disgust, anger[, contempt]); codes 8-10 dropped.")
    PROBES = ("Manually_Annotated_file_lists/training.csv", "training.csv")
    ROOT_NAMES = ("affectnet", "AffectNet")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
AffectNet is distributed on request (http://mohammadmahoor.com/affectnet/). Put in manual_dir
(or manual_dir/affectnet):
  Manually_Annotated_file_lists/training.csv     (split "train")
  Manually_Annotated_file_lists/validation.csv   (split "validation"; optional)
  Manually_Annotated_Images/<subDirectory_filePath from the csv>
The csv files may also lie directly in the root.
"""

    def _label_features(self):
        c = self.builder_config
        return {"expression": _expression_feature(readers.AFFECTNET_CLASSES[:c.num_classes]),
                **_landmark_features(68),
                "valence": tfds.features.Scalar(dtype=np.float32),
                "arousal": tfds.features.Scalar(dtype=np.float32),
                "face_box": tfds.features.Tensor(shape=(4,), dtype=np.float32, doc="x, y, width, height")}

    def _split_generators(self, dl_manager):
        root = self._root(dl_manager)
        c = self.builder_config
        out = {}
        for split, csv_name in (("train", "training.csv"), ("validation", "validation.csv")):
            if split == "validation" and not any(os.path.isfile(os.path.join(root, *p)) for p in (
                    ("Manually_Annotated_file_lists", csv_name), (csv_name,))):
                continue
            records = readers.read_affectnet(root, csv=csv_name, num_classes=c.num_classes, crop_face=c.crop_face)
            out[split] = self._generate_examples(records, root, extras=("valence", "arousal", "face_box"))
        return out


# FERPlus --------------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class FraFerplusConfig(tfds.core.BuilderConfig):
    vote_rule: str = "majority"


class FraFerplus(_ManualBuilder):
    """FERPlus, via `readers.read_ferplus` (single votes removed, ties / unknown / not-face dropped)."""

    BUILDER_CONFIGS = [
        FraFerplusConfig(name="majority", vote_rule="majority",
                         description="The top class must hold more than half of the votes (FERPlus 'majority')."),
        FraFerplusConfig(name="plurality", vote_rule="plurality", description="The top class wins."),
    ]
    DESCRIPTION = ("FERPlus (FER2013 images relabelled by 10 taggers); 8 classes in FERPlus order (neutral, "
                   "happiness, surprise, sadness, anger, disgust, fear, contempt); raw votes in `votes`.")
    PROBES = tuple(f"{top}{folder}/label.csv" for top in ("Labels/", "")
                   for folder in readers.FERPLUS_FOLDERS.values())
    ROOT_NAMES = ("ferplus", "FERPlus")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
FERPlus labels: https://github.com/microsoft/FERPlus; images: generate them from fer2013.csv with the
repository's script. Put in manual_dir (or manual_dir/ferplus):
  Labels/FER2013Train/label.csv    Images/FER2013Train/fer0000000.png   (split "train")
  Labels/FER2013Valid/label.csv    Images/FER2013Valid/...               ("validation")
  Labels/FER2013Test/label.csv     Images/FER2013Test/...                ("test")
The repository layout FER2013Train/{label.csv,*.png} works too.
"""

    def _label_features(self):
        return {"expression": _expression_feature(readers.FERPLUS_CLASSES),
                "votes": tfds.features.Tensor(shape=(10,), dtype=np.int64,
                                              doc="raw counts: 8 classes, unknown, not a face")}

    def _split_generators(self, dl_manager):
        root = self._root(dl_manager)
        out = {}
        for split, folder in readers.FERPLUS_FOLDERS.items():
            if not any(os.path.isfile(os.path.join(root, *p, folder, "label.csv")) for p in (("Labels",), ())):
                continue
            records = readers.read_ferplus(root, split, vote_rule=self.builder_config.vote_rule)
            out[split] = self._generate_examples(records, root, extras=("votes",))
        if not out:
            raise readers.MissingFileError(f"no FERPlus label.csv under {root}", file=root)
        return out


# FER2013 --------------------------------------------------------------------------------------
class FraFer2013(_ManualBuilder):
    """FER2013 (``fer2013.csv``), via `readers.read_fer2013`; 48x48 grey faces emitted as RGB."""

    DESCRIPTION = ("FER2013; 7 classes in FER2013 order (anger, disgust, fear, happiness, sadness, surprise, "
                   "neutral); Training / PublicTest / PrivateTest = train / validation / test.")
    PROBES = ("fer2013.csv",)
    ROOT_NAMES = ("fer2013", "FER2013")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
FER2013 (Kaggle "challenges-in-representation-learning-facial-expression-recognition-challenge"). Put
fer2013.csv (columns emotion,pixels,Usage) in manual_dir (or manual_dir/fer2013).
"""

    def _label_features(self):
        return {"expression": _expression_feature(readers.FER2013_CLASSES)}

    def _split_generators(self, dl_manager):
        root = self._root(dl_manager)
        csv_path = os.path.join(root, "fer2013.csv")
        return {split: self._generate_examples(readers.read_fer2013(csv_path, split), root)
                for split in ("train", "validation", "test")}


# CelebA ---------------------------------------------------------------------------------------
class FraCeleba(_ManualBuilder):
    """CelebA aligned faces, via `readers.read_celeba` (attributes 0 / 1; identity and 5 landmarks)."""

    DESCRIPTION = ("CelebA aligned faces: 40 attributes (int8 0 / 1, CelebA column order), identity (CelebA id "
                   "- 1; -1 when identity_CelebA.txt is absent), 5 landmarks (lefteye, righteye, nose, "
                   "leftmouth, rightmouth; NaN when list_landmarks_align_celeba.txt is absent).")
    # manual_dir/celeba (the FRA layout root/celeba) is found through ROOT_NAMES.
    PROBES = tuple(f"{d}list_attr_celeba.{ext}" for d in ("", "Anno/") for ext in ("txt", "csv"))
    ROOT_NAMES = ("celeba", "CelebA")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
CelebA (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html). Put in manual_dir (or manual_dir/celeba):
  list_attr_celeba.txt, list_eval_partition.txt, img_align_celeba/000001.jpg ...
  optional: identity_CelebA.txt, list_landmarks_align_celeba.txt
The Google-Drive layout (Anno/, Eval/, Img/img_align_celeba/) and the Kaggle layout (.csv list files,
img_align_celeba/img_align_celeba/) work too.
"""

    def _label_features(self):
        return {"attributes": tfds.features.Tensor(shape=(40,), dtype=np.int8, doc="CelebA order, 1 / 0"),
                "identity": tfds.features.Scalar(dtype=np.int64),
                "landmarks": tfds.features.Tensor(shape=(5, 2), dtype=np.float32)}

    def _metadata(self):
        return tfds.core.MetadataDict(attribute_names=list(readers.CELEBA_ATTRIBUTES),
                                      landmark_names=list(readers.CELEBA_LANDMARK_NAMES))

    def _split_generators(self, dl_manager):
        root = self._root(dl_manager)
        fill = {"identity": lambda: np.int64(-1),
                "landmarks": lambda: np.full((5, 2), np.nan, np.float32)}
        out = {}
        for split in ("train", "validation", "test"):
            records = readers.read_celeba(root, split)
            out[split] = self._generate_examples(records, root, fill=fill)
        return out

    def _generate_examples(self, records, root, extras=(), fill=None):
        for key, example in _record_examples(records, root, extras, fill):
            example.pop("visible", None)  # all True for CelebA's 5 points
            yield key, example


# 300W -----------------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class Fra300wConfig(tfds.core.BuilderConfig):
    coordinate_offset: float = 0.0


class Fra300w(_ManualBuilder):
    """300W / iBUG ``.pts`` folders, via `readers.read_300w`; one split per subset folder found."""

    name = "fra_300w"
    BUILDER_CONFIGS = [
        Fra300wConfig(name="raw", coordinate_offset=0.0,
                      description="Coordinates as stored in the .pts files (read_300w's default)."),
        Fra300wConfig(name="0based", coordinate_offset=-1.0,
                      description="Coordinates minus 1: the official 1-based iBUG files to 0-based pixels."),
    ]
    DESCRIPTION = ("300W 68-point landmarks. Splits: train (afw, helen/trainset, lfpw/trainset), common "
                   "(helen/testset, lfpw/testset), challenging (ibug), private (01_Indoor, 02_Outdoor); only "
                   "those whose folders exist. full = common + challenging: split='common+challenging'.")
    SPLIT_SUBSETS = ("train", "common", "challenging", "private")
    PROBES = tuple(sorted({f.split("/")[0] for s in SPLIT_SUBSETS for f in readers.W300_SUBSETS[s]}))
    ROOT_NAMES = ("300w", "300W", "ibug_300W_large_face_landmark_dataset")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
300W (https://ibug.doc.ic.ac.uk/resources/300-W/). Put in manual_dir (or manual_dir/300w) the folders
afw/, helen/{trainset,testset}/, lfpw/{trainset,testset}/, ibug/ and/or 01_Indoor/, 02_Outdoor/, each
image beside its .pts file (same name). The official files are 1-based: use the config
fra_300w/0based for 0-based pixel coordinates (fra_300w/raw keeps the stored values).
"""

    def _label_features(self):
        return _landmark_features(68)

    def _split_generators(self, dl_manager):
        root = self._root(dl_manager)
        offset = self.builder_config.coordinate_offset
        out = {}
        for subset in self.SPLIT_SUBSETS:
            folders = readers.W300_SUBSETS[subset]
            if all(os.path.isdir(os.path.join(root, *f.split("/"))) for f in folders):
                records = readers.read_300w(root, subset=subset, coordinate_offset=offset)
                out[subset] = self._generate_examples(records, root)
        if not out:
            raise readers.MissingFileError(
                f"no complete 300W subset under {root}: expected the folders of one of "
                f"{ {s: readers.W300_SUBSETS[s] for s in self.SPLIT_SUBSETS} }", file=root)
        return out


# WFLW -----------------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class FraWflwConfig(tfds.core.BuilderConfig):
    num_points: int = 98


WFLW_LIST = "WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_{split}.txt"


class FraWflw(_ManualBuilder):
    """WFLW, via `readers.read_wflw` (98 points, or 68 in the 300W order)."""

    BUILDER_CONFIGS = [
        FraWflwConfig(name="98", num_points=98, description="The 98 WFLW points."),
        FraWflwConfig(name="68", num_points=68, description="Mapped to the 300W-68 order (readers.WFLW98_TO_68)."),
    ]
    DESCRIPTION = ("WFLW landmarks; face_rect (x_min, y_min, x_max, y_max) and the 6 flags pose, expression, "
                   "illumination, make-up, occlusion, blur in wflw_attributes.")
    PROBES = ("WFLW_annotations",)
    ROOT_NAMES = ("wflw", "WFLW")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
WFLW (https://wywu.github.io/projects/LAB/WFLW.html). Put in manual_dir (or manual_dir/wflw):
  WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_{train,test}.txt
  WFLW_images/<event folders>/*.jpg
"""

    def _label_features(self):
        return {**_landmark_features(self.builder_config.num_points),
                "face_rect": tfds.features.Tensor(shape=(4,), dtype=np.float32),
                "wflw_attributes": tfds.features.Tensor(shape=(6,), dtype=np.int8,
                                                        doc=", ".join(readers.WFLW_ATTRIBUTES))}

    def _split_generators(self, dl_manager):
        root = self._root(dl_manager)
        out = {}
        for split in ("train", "test"):
            path = os.path.join(root, *WFLW_LIST.format(split=split).split("/"))
            if os.path.isfile(path):
                records = readers.read_wflw(path, image_root=os.path.join(root, "WFLW_images"),
                                            num_points=self.builder_config.num_points)
                out[split] = self._generate_examples(records, root, extras=("face_rect", "wflw_attributes"))
        if not out:
            raise readers.MissingFileError(f"no WFLW list file under {root} ({WFLW_LIST})", file=root)
        return out


#: Every name this module registers (``tfds.load`` names).
BUILDER_NAMES = tuple(cls.name for cls in (FraSyntheticFaces, FraRafdb, FraAffectnet, FraFerplus, FraFer2013,
                                           FraCeleba, Fra300w, FraWflw))


def manual_builders() -> Dict[str, type]:
    """``{tfds name: builder class}`` of the builders that read ``manual_dir``."""
    return {cls.name: cls for cls in (FraRafdb, FraAffectnet, FraFerplus, FraFer2013, FraCeleba, Fra300w, FraWflw)}
