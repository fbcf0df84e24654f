"""Format writers: dump sample dicts (e.g. synthetic faces) into the real data sets' on-disk layouts.

Each writer takes an iterable of sample dicts in the shared schema (docs/datasets.md, "Writing synthetic
data in the real layouts"; see `fra_keras.data.layouts.writing`) - a ``split -> samples`` dict for the
layouts that hold several splits - and writes the files exactly as the data set is distributed, so
that :mod:`fra_keras.data.readers` can be exercised end to end without real data.  Each writer lives
with its data set's reader in `fra_keras.data.layouts`; this module gathers them and adds the
synthetic dumps.  Nothing here needs TensorFlow.

``write_synthetic(layout, root, num_per_split)`` renders synthetic faces and writes them in one go;
``python -m fra_keras.data.writers LAYOUT OUT_DIR --num 20`` does the same from the shell.

The layouts and the choices made where a real layout cannot hold a synthetic label are documented in
``docs/datasets.md`` (CelebA unknown attributes, FERPlus invented votes, WFLW 68 -> 98 points).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Mapping

import numpy as np

from fra_keras.data.layouts.affectnet import write_affectnet
from fra_keras.data.layouts.celeba import write_celeba
from fra_keras.data.layouts.fer2013 import write_fer2013
from fra_keras.data.layouts.ferplus import (FERPLUS_DROPPED_KINDS, FERPLUS_KEPT_KINDS, ferplus_votes,
                                            write_ferplus)
from fra_keras.data.layouts.image_folder import write_image_folder
from fra_keras.data.layouts.rafdb import write_rafdb
from fra_keras.data.layouts.w300 import W300_SUBSETS, format_pts, write_300w
from fra_keras.data.layouts.wflw import landmarks68_to_98, write_wflw
from fra_keras.data.layouts.writing import WriteReport, encode_image, fer_grey48

__all__ = [
    "FERPLUS_DROPPED_KINDS", "FERPLUS_KEPT_KINDS", "LAYOUT_SPLITS", "WriteReport", "encode_image", "fer_grey48",
    "ferplus_votes", "format_pts", "landmarks68_to_98", "main", "write_300w", "write_affectnet", "write_celeba",
    "write_fer2013", "write_ferplus", "write_image_folder", "write_rafdb", "write_synthetic", "write_wflw",
]

# --------------------------------------------------------------------------------------------------
# Synthetic dumps
# --------------------------------------------------------------------------------------------------

LAYOUT_SPLITS = {
    "rafdb": ("train", "test"),
    "affectnet": ("train", "validation"),
    "ferplus": ("train", "validation", "test"),
    "fer2013": ("train", "validation", "test"),
    "celeba": ("train", "validation", "test"),
    "300w": ("train", "test"),
    "wflw": ("train", "test"),
    "image_folder": ("train", "validation"),
}


def write_synthetic(layout: str, root, num_per_split=20, seed: int = 0, image_size: int = 112) -> List[WriteReport]:
    """Render synthetic faces (``fra_keras.data.synthetic.render_sample``) and write them in ``layout``
    under ``root``.  ``num_per_split``: an int for every split of the layout (:data:`LAYOUT_SPLITS`) or a
    dict split -> count.  Where the files go (read them back with the matching reader):

    * rafdb: ``root`` (train, test);  celeba: ``root`` (train, validation, test);
    * ferplus: ``root`` (train, validation, test);  fer2013: ``root/fer2013.csv``;
    * affectnet: ``root`` with ``training.csv`` (train) and ``validation.csv`` (validation);
    * 300w: train split over ``root/{afw,helen/trainset,lfpw/trainset}`` (``subset="train"``), test in
      ``root/ibug`` (``subset="challenging"``);
    * wflw: ``root`` with the train / test list files;
    * image_folder: ``root/train`` and ``root/val`` with RAF-DB class folders.
    """
    from fra_keras.data.synthetic import render_sample

    if layout not in LAYOUT_SPLITS:
        raise ValueError(f"layout={layout!r}; expected one of {tuple(LAYOUT_SPLITS)}")
    splits = LAYOUT_SPLITS[layout]
    if isinstance(num_per_split, Mapping):
        counts = {s: int(num_per_split[s]) for s in splits if s in num_per_split}
    else:
        counts = {s: int(num_per_split) for s in splits}

    def gen(split):
        return (render_sample(i, seed=seed, image_size=image_size, split=split) for i in range(counts[split]))

    root = os.fspath(root)
    by_split = {s: gen(s) for s in counts}
    if layout == "rafdb":
        return [write_rafdb(by_split, root)]
    if layout == "ferplus":
        return [write_ferplus(by_split, root, seed=seed)]
    if layout == "fer2013":
        return [write_fer2013(by_split, os.path.join(root, "fer2013.csv"))]
    if layout == "celeba":
        return [write_celeba(by_split, root)]
    if layout == "affectnet":
        names = {"train": "training.csv", "validation": "validation.csv"}
        return [write_affectnet(by_split[s], root, names[s]) for s in counts]
    if layout == "300w":
        reports = []
        for s in counts:
            folders = W300_SUBSETS["train"] if s == "train" else W300_SUBSETS["challenging"]
            edges = np.linspace(0, counts[s], len(folders) + 1).round().astype(int)
            for folder, lo, hi in zip(folders, edges[:-1], edges[1:]):
                samples = (render_sample(i, seed=seed, image_size=image_size, split=s) for i in range(lo, hi))
                reports.append(write_300w(samples, root, subset=folder, start=int(lo) + 1))
        return reports
    if layout == "wflw":
        return [write_wflw(by_split[s], root, split=s) for s in counts]
    folders = {"train": "train", "validation": "val"}
    return [write_image_folder(by_split[s], os.path.join(root, folders[s])) for s in counts]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fra_keras.data.writers",
        description="Write synthetic faces in a real data set's on-disk layout (to exercise the readers "
                    "without real data). Example: python -m fra_keras.data.writers rafdb /tmp/rafdb --num 50")
    parser.add_argument("layout", choices=sorted(LAYOUT_SPLITS))
    parser.add_argument("out_dir")
    parser.add_argument("--num", type=int, default=20, help="samples per split (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=112)
    args = parser.parse_args(argv)
    for report in write_synthetic(args.layout, args.out_dir, args.num, args.seed, args.image_size):
        print(f"{report.layout}: wrote {report.counts} under {report.root}")
        for f in report.label_files:
            print(f"  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

