"""What the TFDS builders of the FRA data share: version and citation, the `FraBuilder` base (a
`code_path` that works without `importlib_resources`) and `ManualBuilder`, which turns the `Records`
of a reader into TFDS examples read from ``manual_dir``.

Importing this module registers nothing (both bases skip registration); `fra_keras.data.tfds_builders`
imports every builder.  See that module for the names, splits and features.
"""

from __future__ import annotations

import inspect
import io
import os
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds

from fra_keras.data.records import MissingFileError, Records

VERSION = tfds.core.Version("1.0.0")
RELEASE_NOTES = {"1.0.0": "Initial release (fra_keras)."}
HOMEPAGE = None  # no public page yet; set it when the project is published
FRA_CITATION = """\
@inproceedings{fra2024,
  title     = {Self-Supervised Facial Representation Learning with Facial Region Awareness},
  booktitle = {CVPR},
  year      = {2024}
}"""



class FraBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
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



def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


_PASS_THROUGH = (".jpg", ".jpeg", ".png")


def record_examples(records: Records, root: str, extras: Sequence[str] = (),
                     fill: Optional[Dict[str, Callable[[], np.ndarray]]] = None):
    """(key, example) for every record: the image (original bytes when JPEG / PNG and not cropped, else
    PNG of the decoded pixels), ``image/filename``, the schema labels and the named extras."""
    fill = fill or {}
    for i in range(len(records)):
        item = records.load(i)   # decodes the image once: a corrupt file raises DataFormatError here
        if records.images is not None:
            key = f"{os.path.basename(records.paths[i])}:{records.lines[i]}"
            image = png_bytes(item.pop("image"))
        else:
            path = records.paths[i]
            key = os.path.relpath(path, root).replace(os.sep, "/")
            pixels = item.pop("image")
            if records.crop_boxes is None and path.lower().endswith(_PASS_THROUGH):
                with open(path, "rb") as f:
                    image = f.read()
            else:
                image = png_bytes(pixels)
        example = {"image": image, "image/filename": key}
        example.update(item)
        for name in extras:
            example[name] = records.labels[name][i]
        for name, make in fill.items():
            if name not in example:
                example[name] = make()
        yield key, example


def find_root(manual_dir, probes: Sequence[str], names: Sequence[str], instructions: str) -> str:
    """The layout root: ``manual_dir`` or ``manual_dir/<name>`` for the first of `names`, whichever holds
    one of the `probes` (paths relative to the root)."""
    base = os.fspath(manual_dir)
    candidates = [base] + [os.path.join(base, n) for n in names]
    for root in candidates:
        if any(os.path.exists(os.path.join(root, *p.split("/"))) for p in probes):
            return root
    raise MissingFileError(
        f"no data in the expected layout under manual_dir={base!r} (looked for {list(probes)} in "
        f"{candidates}). Expected:\n{instructions}", file=base)


class ManualBuilder(FraBuilder, skip_registration=True):
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
        return find_root(dl_manager.manual_dir, self.PROBES, (self.name,) + tuple(self.ROOT_NAMES),
                          self.MANUAL_DOWNLOAD_INSTRUCTIONS)

    def _generate_examples(self, records, root, extras=(), fill=None):
        yield from record_examples(records, root, extras, fill)


def expression_feature(names) -> tfds.features.ClassLabel:
    return tfds.features.ClassLabel(names=list(names))


def landmark_features(n: int) -> dict:
    return {"landmarks": tfds.features.Tensor(shape=(n, 2), dtype=np.float32,
                                              doc="(x, y) pixels, 0 = centre of the top-left pixel"),
            "visible": tfds.features.Tensor(shape=(n,), dtype=np.bool_)}

