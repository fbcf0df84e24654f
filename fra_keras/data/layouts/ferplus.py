"""FERPlus (FER2013 images relabelled by 10 taggers): reader, writer (and, in `ferplus_tfds`, the TFDS builder).  The shared schema, errors and
`Records` are in `fra_keras.data.records`; the folder tree in ``docs/datasets.md``.
"""

from __future__ import annotations

import csv as _csv
import os
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

from fra_keras.data.labels import FERPLUS_CLASSES, RAFDB_TO_FERPLUS
from fra_keras.data.layouts.writing import (WriteReport, atomic_write, check_splits, fer_grey48,
                                            sample_expression, write_image)
from fra_keras.data.records import (DirListing, Issues, Records, check_choice, finish_records, label_mapping,
                                    parse_int, require_dir, require_file, stack_rows)

FERPLUS_FOLDERS = {"train": "FER2013Train", "validation": "FER2013Valid", "test": "FER2013Test"}

# --------------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------------


FERPLUS_VOTE_RULES = ("majority", "plurality")


def ferplus_label(votes, rule: str = "majority") -> Tuple[Optional[int], str]:
    """FERPlus majority-vote label from the 10 vote counts (FERPLUS_VOTE_COLUMNS order).

    1. Single votes are removed (counts <= 1 are set to 0: outlier removal).
    2. Ties between the top classes -> dropped (``"tie"``).
    3. ``rule="majority"`` (FERPlus reference "majority" mode): the top class must hold MORE than half of
       the remaining votes, else dropped (``"no_majority"``).  ``rule="plurality"``: the top class wins.
    4. A winning ``unknown`` or ``not_face`` -> dropped (``"unknown"`` / ``"not_face"``); no votes left
       -> ``"no_votes"``.

    Returns ``(class index 0..7 in FERPLUS_CLASSES order, "ok")`` or ``(None, reason)``.
    """
    check_choice("rule", rule, FERPLUS_VOTE_RULES)
    v = np.asarray(votes, dtype=np.float64).copy()
    if v.shape != (10,):
        raise ValueError(f"expected 10 vote counts, got shape {v.shape}")
    v[v <= 1] = 0.0
    total = v.sum()
    if total <= 0:
        return None, "no_votes"
    top = v.max()
    winners = np.flatnonzero(v == top)
    if len(winners) > 1:
        return None, "tie"
    if rule == "majority" and not top > 0.5 * total:
        return None, "no_majority"
    idx = int(winners[0])
    if idx == 8:
        return None, "unknown"
    if idx == 9:
        return None, "not_face"
    return idx, "ok"


def _ferplus_folder(split):
    if split in FERPLUS_FOLDERS:
        return FERPLUS_FOLDERS[split]
    aliases = {"val": "validation", "valid": "validation", "public_test": "validation",
               "private_test": "test"}
    if split in aliases:
        return FERPLUS_FOLDERS[aliases[split]]
    if split in FERPLUS_FOLDERS.values():
        return split
    raise ValueError(f"split={split!r}; expected one of {tuple(FERPLUS_FOLDERS)} "
                     f"or a folder name {tuple(FERPLUS_FOLDERS.values())}")


def read_ferplus(root, split: str = "train", vote_rule: str = "majority", label_order: str = "native",
                 image_size=None, on_error: str = "raise") -> Records:
    """FERPlus: ``root/Labels/FER2013Train/label.csv`` (rows ``fer0000000.png,"(0, 0, 48, 48)",<10
    vote counts>``) with images ``root/Images/FER2013Train/fer0000000.png``; the FERPlus repo layout
    ``root/FER2013Train/{label.csv,*.png}`` also works.  Splits: train (FER2013Train), validation
    (FER2013Valid = PublicTest), test (FER2013Test = PrivateTest).  Labels by :func:`ferplus_label`
    (8 classes, :data:`FERPLUS_CLASSES` order, or RAF-DB order + contempt 7 with
    ``label_order="rafdb"``); dropped rows are counted by reason in ``Records.dropped``.  Extra:
    ``labels["votes"]`` (N, 10) raw counts."""
    check_choice("vote_rule", vote_rule, FERPLUS_VOTE_RULES)
    root = os.fspath(root)
    require_dir(root, "FERPlus root")
    folder = _ferplus_folder(split)
    label_file = os.path.join(root, "Labels", folder, "label.csv")
    image_dir = os.path.join(root, "Images", folder)
    if not os.path.isfile(label_file) and os.path.isfile(os.path.join(root, folder, "label.csv")):
        label_file = os.path.join(root, folder, "label.csv")
        image_dir = os.path.join(root, folder)
    require_file(label_file, "FERPlus label file")
    require_dir(image_dir, "FERPlus image folder")
    mapping, class_names = label_mapping(FERPLUS_CLASSES, label_order)
    issues = Issues(on_error)
    listing = DirListing()
    dropped: Dict[str, int] = {}
    paths, lines, expr, votes_out = [], [], [], []
    with open(label_file, "r", encoding="utf-8-sig", newline="") as f:
        reader = _csv.reader(f)
        for row in reader:
            n = reader.line_num
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != 12:
                issues.bad(f"malformed row: {len(row)} columns, expected 12 (image name, face box, "
                           f"10 vote counts)", label_file, n)
                continue
            counts = [parse_int(c) for c in row[2:]]
            if any(c is None or c < 0 for c in counts):
                if n == 1:  # tolerate a header line
                    continue
                issues.bad(f"malformed row: vote counts {row[2:]} must be non-negative integers",
                           label_file, n)
                continue
            name = row[0].strip()
            if not name:
                dropped["no_image"] = dropped.get("no_image", 0) + 1
                continue
            label, reason = ferplus_label(counts, vote_rule)
            if label is None:
                dropped[reason] = dropped.get(reason, 0) + 1
                continue
            path = os.path.join(image_dir, name)
            if not listing.exists(path):
                issues.bad(f"image file not found: {path}", label_file, n, image=path, missing=True)
                continue
            paths.append(path)
            lines.append(n)
            expr.append(mapping[label])
            votes_out.append(counts)
    labels = {"expression": stack_rows(expr, (), np.int64), "votes": stack_rows(votes_out, (10,), np.int64)}
    records = Records(layout="ferplus", split=split, source=label_file, paths=paths, lines=lines,
                      labels=labels, class_names=class_names, label_order=label_order,
                      image_size=image_size, on_error=on_error, dropped=dropped)
    return finish_records(records, issues)


# --------------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------------


FERPLUS_KEPT_KINDS = ("clear", "rescued")
FERPLUS_DROPPED_KINDS = ("unknown", "tie", "singles", "not_face")


def ferplus_votes(label: int, kind: str, rng: np.random.Generator) -> List[int]:
    """10 FERPlus vote counts (10 taggers) for native class ``label`` following pattern ``kind``:

    * ``clear``: the label gets 6-10 votes; the rest are single votes and at most one pair elsewhere.
    * ``rescued``: the label gets 5 votes and five other columns 1 vote each: 50 % of the raw votes,
      but a majority once single votes are removed (kept).
    * ``unknown``: ``unknown`` 6 votes, the label 2, two singles (dropped: unknown wins).
    * ``tie``: the label and another emotion 4 votes each, two singles (dropped: tie / no majority).
    * ``singles``: one vote in every column (dropped: nothing left after removing single votes).
    * ``not_face``: ``not_face`` 7, the label 2, ``unknown`` 1 (dropped: not a face).
    """
    votes = np.zeros(10, np.int64)
    others = [c for c in range(10) if c != label]
    if kind == "clear":
        m = int(rng.integers(6, 11))
        votes[label] = m
        rest = 10 - m
        pool = list(rng.permutation(others))
        if rest >= 2 and rng.random() < 0.5:
            votes[pool.pop()] = 2
            rest -= 2
        for _ in range(rest):
            votes[pool.pop()] = 1
    elif kind == "rescued":
        votes[label] = 5
        votes[rng.choice(others, size=5, replace=False)] = 1
    elif kind == "unknown":
        votes[8] = 6
        votes[label] = 2
        votes[rng.choice([c for c in others if c != 8], size=2, replace=False)] = 1
    elif kind == "tie":
        rival = int(rng.choice([c for c in range(8) if c != label]))
        votes[label] = 4
        votes[rival] = 4
        votes[rng.choice([c for c in others if c != rival], size=2, replace=False)] = 1
    elif kind == "singles":
        votes[:] = 1
    elif kind == "not_face":
        votes[9] = 7
        votes[label] = 2
        votes[8] = 1
    else:
        raise ValueError(f"kind={kind!r}; expected one of {FERPLUS_KEPT_KINDS + FERPLUS_DROPPED_KINDS}")
    assert votes.sum() == 10
    return votes.tolist()


def write_ferplus(samples_by_split: Mapping[str, Iterable[dict]], root, drop_every: int = 5,
                  seed: int = 0) -> WriteReport:
    """FERPlus: ``root/Images/FER2013{Train,Valid,Test}/fer0000000.png`` (48x48 grey, see
    :func:`fer_grey48`) and ``root/Labels/FER2013{Train,Valid,Test}/label.csv`` rows
    ``fer0000000.png,"(0, 0, 48, 48)",<10 vote counts>`` (neutral, happiness, surprise, sadness, anger,
    disgust, fear, contempt, unknown, NF).  Splits: train, validation, test; image numbers run on
    across the splits as in the real set.  Votes are invented to agree with the sample's expression
    (:func:`ferplus_votes`); every ``drop_every``-th row per split (0: none) instead gets a pattern
    the rules must drop, cycling unknown / tie / singles / not_face; one kept row in 7 is "rescued" by
    single-vote removal.  ``WriteReport.expected`` holds the label the reader must give each row."""
    check_splits(samples_by_split, tuple(FERPLUS_FOLDERS), "ferplus")
    root = os.fspath(root)
    rng = np.random.default_rng(seed)
    report = WriteReport("ferplus", root, [], {})
    index = 0
    for split in FERPLUS_FOLDERS:
        if split not in samples_by_split:
            continue
        folder = FERPLUS_FOLDERS[split]
        rows, expected, kinds = [], [], []
        for j, sample in enumerate(samples_by_split[split]):
            name = f"fer{index:07d}.png"
            index += 1
            write_image(os.path.join(root, "Images", folder, name), fer_grey48(sample["image"]), "png", 0)
            label = int(RAFDB_TO_FERPLUS[sample_expression(sample)])
            if drop_every and (j + 1) % drop_every == 0:
                kind = FERPLUS_DROPPED_KINDS[(j // drop_every) % len(FERPLUS_DROPPED_KINDS)]
            else:
                kind = "rescued" if j % 7 == 3 else "clear"
            votes = ferplus_votes(label, kind, rng)
            rows.append(f'{name},"(0, 0, 48, 48)",' + ",".join(str(v) for v in votes) + "\n")
            expected.append(label if kind in FERPLUS_KEPT_KINDS else None)
            kinds.append(kind)
        label_file = os.path.join(root, "Labels", folder, "label.csv")
        atomic_write(label_file, "".join(rows))
        report.label_files.append(label_file)
        report.counts[split] = len(rows)
        report.expected[split] = expected
        report.vote_kinds[split] = kinds
    return report

