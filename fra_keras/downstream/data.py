"""Train / test data for the downstream tasks, from synthetic faces or a real on-disk layout.

`--data` specs (read with `fra_keras.data.readers`):

==================  ===================================================  ============================
spec                train / test                                         tasks
==================  ===================================================  ============================
synthetic           synthetic_faces_v1 "train" / "test" (identity-       every task (regions too)
                    disjoint), rendered at the evaluation size as
                    evaluation crops: "aligned" faces with posed
                    expressions (expression, attributes, knn; like
                    RAF-DB aligned) or "box" face-box crops
                    (landmarks; like 300W / WFLW)
synthetic:PROFILE   the same with another framing: wide | crop |         every task
                    aligned | box (docs/datasets.md)
rafdb:ROOT          RAF-DB basic train / test                            expression, knn
affectnet:ROOT      training.csv / validation.csv (7 classes)            expression, knn
ferplus:ROOT        FER2013Train / FER2013Test (majority vote, 8 cl.)    expression, knn
fer2013:CSV|ROOT    Training / PrivateTest                               expression, knn
folder:ROOT         ROOT/train / ROOT/val (or test, validation),          expression, knn
                    one folder per class (ImageFolder)
celeba:ROOT         official partitions 0 / 2                            attributes (landmarks: 5 pts)
300w:ROOT           afw + helen/trainset + lfpw/trainset / the test      landmarks
                    folders present among helen/testset, lfpw/testset,
                    ibug ("full" = common + challenging)
wflw:LIST           the _train / _test list files (either one given, or  landmarks (98 points)
                    the WFLW root)
==================  ===================================================  ============================

Every split becomes a `tf.data.Dataset` of dicts ``{"image": uint8 (S, S, 3), <label key>: ...}`` where
the label key is ``expression`` (int), ``attributes`` (int8 (40,), -1 unknown) or ``landmarks``
(float32 (P, 2) pixels at the evaluation size S).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional, Tuple

TASK_KEYS = {"expression": "expression", "knn": "expression", "attributes": "attributes",
             "landmarks": "landmarks", "regions": "region_mask"}
LAYOUTS = ("synthetic", "rafdb", "affectnet", "ferplus", "fer2013", "folder", "celeba", "300w", "wflw")
LAYOUT_HELP = {
    "rafdb": "ROOT/EmoLabel/list_patition_label.txt and ROOT/Image/aligned/*_aligned.jpg",
    "affectnet": "ROOT/Manually_Annotated_file_lists/{training,validation}.csv and the images",
    "ferplus": "ROOT/Labels/FER2013{Train,Test}/label.csv and ROOT/Images/FER2013{Train,Test}/",
    "fer2013": "a fer2013.csv (emotion,pixels,Usage) or a folder holding one",
    "folder": "ROOT/train/<class>/*.jpg and ROOT/val/<class>/*.jpg",
    "celeba": "list_attr_celeba.txt, list_eval_partition.txt and img_align_celeba/",
    "300w": "ROOT/{afw,helen/trainset,lfpw/trainset}/*.pts + images, test in ibug / helen/testset / lfpw/testset",
    "wflw": "WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_{train,test}.txt + WFLW_images/",
}


class DataSpecError(ValueError):
    """A `--data` value that cannot be used (unknown layout, wrong folder layout, task mismatch)."""


@dataclasses.dataclass(eq=False)
class TaskData:
    """Both splits of one data source for one task."""

    name: str
    spec: str
    label_key: str
    train: Any
    test: Any
    num_train: int
    num_test: int
    image_size: int
    class_names: Optional[Tuple[str, ...]] = None
    num_points: Optional[int] = None
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def is_synthetic(self) -> bool:
        return self.name == "synthetic"

    def describe(self) -> Dict[str, Any]:
        out = {"name": self.name, "spec": self.spec, "label": self.label_key, "num_train": self.num_train,
               "num_test": self.num_test, "image_size": self.image_size}
        if self.class_names is not None:
            out["class_names"] = list(self.class_names)
        if self.num_points is not None:
            out["num_points"] = self.num_points
        out.update(self.extra)
        return out


#: Framing of synthetic evaluation faces per task when `--data synthetic` names none.
SYNTHETIC_EVAL_PROFILES = {"expression": "aligned", "knn": "aligned", "attributes": "aligned",
                           "landmarks": "box", "regions": "crop"}


def parse_spec(spec: str) -> Tuple[str, Optional[str]]:
    """'synthetic' -> ('synthetic', None); 'synthetic:wide' -> ('synthetic', 'wide');
    'rafdb:/data/raf' -> ('rafdb', '/data/raf')."""
    from fra_keras.config import SYNTHETIC_PROFILES

    if spec == "synthetic":
        return "synthetic", None
    layout, sep, path = spec.partition(":")
    if layout == "synthetic":
        if path not in SYNTHETIC_PROFILES:
            raise DataSpecError(f"--data {spec!r}: the synthetic profile must be one of "
                                f"{', '.join(SYNTHETIC_PROFILES)}")
        return "synthetic", path
    layout = layout.lower()
    if not sep or layout not in LAYOUTS or layout == "synthetic" or not path:
        raise DataSpecError(f"--data {spec!r}: expected 'synthetic' or LAYOUT:PATH with LAYOUT one of "
                            f"{', '.join(LAYOUTS[1:])}")
    return layout, path


def check_spec(spec: str, task: str) -> Tuple[str, Optional[str]]:
    """Validate `--data` against `task` without reading anything heavy (path existence only)."""
    layout, path = parse_spec(spec)
    if task == "regions" and layout != "synthetic":
        raise DataSpecError(f"--data {spec!r}: the regions task needs part masks, i.e. --data synthetic")
    if layout != "synthetic" and not os.path.exists(path):
        raise DataSpecError(f"--data {spec!r}: {path!r} does not exist (expected {LAYOUT_HELP[layout]})")
    return layout, path


def synthetic_profile(task: str, profile: Optional[str] = None) -> str:
    """The framing of synthetic evaluation faces for `task` (`SYNTHETIC_EVAL_PROFILES` by default)."""
    return profile or SYNTHETIC_EVAL_PROFILES[task]


def _synthetic(task, image_size, num_train, num_test, seed, profile=None):
    from fra_keras.data.synthetic import CELEBA_ATTRIBUTES, EXPRESSION_NAMES, synthetic_dataset

    if task == "regions":
        raise DataSpecError("regions data is rendered by fra_keras.downstream.regions")
    source = {"expression": "expression", "knn": "expression", "attributes": "attributes",
              "landmarks": "landmarks68"}[task]
    key = TASK_KEYS[task]
    profile = synthetic_profile(task, profile)

    def split(name, n):
        ds = synthetic_dataset(image_size=image_size, seed=seed, split=name, num_samples=n, keys=("image", source),
                               profile=profile)
        return ds.map(lambda e: {"image": e["image"], key: e[source]}).cache()

    class_names = tuple(EXPRESSION_NAMES) if key == "expression" else (
        tuple(CELEBA_ATTRIBUTES) if key == "attributes" else None)
    return TaskData("synthetic", "synthetic", key, split("train", num_train), split("test", num_test), num_train,
                    num_test, image_size, class_names, 68 if key == "landmarks" else None,
                    {"generator": "synthetic_faces_v1", "profile": profile, "seed": seed,
                     "splits": ["train", "test"]})


def _read_layout(layout, path, task):
    """(train Records, test Records, extra description) for a real layout."""
    from fra_keras.data import readers as r

    if layout == "rafdb":
        return r.read_rafdb(path, "train"), r.read_rafdb(path, "test"), {}
    if layout == "affectnet":
        return (r.read_affectnet(path, "training.csv"), r.read_affectnet(path, "validation.csv"),
                {"num_classes": 7})
    if layout == "ferplus":
        return r.read_ferplus(path, "train"), r.read_ferplus(path, "test"), {}
    if layout == "fer2013":
        csv = os.path.join(path, "fer2013.csv") if os.path.isdir(path) else path
        return r.read_fer2013(csv, "train"), r.read_fer2013(csv, "test"), {}
    if layout == "folder":
        train_dir = os.path.join(path, "train")
        test_dir = next((os.path.join(path, d) for d in ("val", "validation", "test")
                         if os.path.isdir(os.path.join(path, d))), None)
        if not os.path.isdir(train_dir) or test_dir is None:
            raise r.MissingFileError("expected the sub-folders train/ and val/ (or test/, validation/)", file=path)
        train = r.read_image_folder_labels(train_dir)
        return train, r.read_image_folder_labels(test_dir, class_names=train.class_names), {
            "test_folder": os.path.basename(test_dir)}
    if layout == "celeba":
        return r.read_celeba(path, "train"), r.read_celeba(path, "test"), {}
    if layout == "300w":
        present = [s for s in r.W300_SUBSETS["full"] if os.path.isdir(os.path.join(path, *s.split("/")))]
        if not present:
            raise r.MissingFileError(f"no test folder among {r.W300_SUBSETS['full']}", file=path)
        return r.read_300w(path, "train"), r.read_300w(path, present), {"test_subsets": present}
    if layout == "wflw":
        train_file, test_file = _wflw_files(path)
        return (r.read_wflw(train_file, num_points=98), r.read_wflw(test_file, num_points=98),
                {"train_list": train_file, "test_list": test_file})
    raise DataSpecError(f"layout {layout!r} is not supported")


def _wflw_files(path):
    from fra_keras.data.records import MissingFileError

    if os.path.isdir(path):
        folder = os.path.join(path, "WFLW_annotations", "list_98pt_rect_attr_train_test")
        return (os.path.join(folder, "list_98pt_rect_attr_train.txt"),
                os.path.join(folder, "list_98pt_rect_attr_test.txt"))
    name = os.path.basename(path)
    if "_test" in name:
        return os.path.join(os.path.dirname(path), name.replace("_test", "_train")), path
    if "_train" in name:
        return path, os.path.join(os.path.dirname(path), name.replace("_train", "_test"))
    raise MissingFileError("expected a WFLW list file named *_train.txt or *_test.txt", file=path)


def load_task_data(spec: str, task: str, image_size: int, num_train: Optional[int] = None,
                   num_test: Optional[int] = None, seed: int = 0) -> TaskData:
    """Both splits of `spec` for `task` (see the module docstring). `num_train` / `num_test`: how many
    synthetic faces to render, or a cap on a real set (None: all)."""
    from fra_keras.data.records import DataFormatError

    layout, path = check_spec(spec, task)
    if layout == "synthetic":
        from fra_keras.data.synthetic import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE

        if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
            raise DataSpecError(f"--image-size {image_size}: synthetic faces are rendered at "
                                f"{MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} px")
        return _synthetic(task, image_size, int(num_train or 2000), int(num_test or 500), seed, path)
    try:
        train, test, extra = _read_layout(layout, path, task)
    except DataFormatError as exc:
        raise DataSpecError(f"--data {spec!r} is not in the {layout} layout ({LAYOUT_HELP[layout]}): "
                            f"{exc}") from None
    key = TASK_KEYS[task]
    if key not in train.labels:
        raise DataSpecError(f"--data {spec!r}: the {layout} layout has no {key!r} labels, which task {task!r} "
                            f"needs (it has {sorted(k for k in train.labels)})")
    for name, records in (("train", train), ("test", test)):
        if len(records) == 0:
            raise DataSpecError(f"--data {spec!r}: the {name} split is empty ({LAYOUT_HELP[layout]})")

    def split(records, cap):
        ds = records.to_dataset(image_size=image_size)
        n = len(records)
        if cap is not None and cap < n:
            ds, n = ds.take(int(cap)), int(cap)
        return ds.map(lambda e: {"image": e["image"], key: e[key]}), n

    train_ds, n_train = split(train, num_train)
    test_ds, n_test = split(test, num_test)
    num_points = int(train.labels["landmarks"].shape[1]) if key == "landmarks" else None
    class_names = tuple(train.class_names) if train.class_names is not None else None
    extra = dict(extra, layout=train.layout, root=path, dropped={"train": train.dropped, "test": test.dropped},
                 skipped={"train": train.num_skipped, "test": test.num_skipped})
    return TaskData(layout, spec, key, train_ds, test_ds, n_train, n_test, image_size, class_names, num_points,
                    extra)
