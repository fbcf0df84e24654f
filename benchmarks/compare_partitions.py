"""Do two pre-trainings learn the same partition of the face? Matched distances between region reports.

Reads the `python -m fra_keras.evaluate regions --output R.json` reports of several models (the same
test faces: the evaluation's defaults) and prints the matrix of `regions.partition_distance` between
their arg-max part shares (`density_share_hard`): 0 = the same partition up to the order of the K
heatmaps, 2 = nothing in common. docs/evaluation.md ("Student temperature") uses it to show that runs
with the same seed learn the same partition whatever their student temperature.

    python benchmarks/compare_partitions.py runs/long/st011-s0/regions.json s0-T0.12=runs/long/st012-s0/regions.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", metavar="[LABEL=]REGIONS_JSON",
                   help="region reports of `python -m fra_keras.evaluate regions` (at least two)")
    p.add_argument("--key", default="density_share_hard", choices=("density_share_hard", "density_share", "mass_share"),
                   help="which part shares to compare (default: those of the arg-max maps)")
    args = p.parse_args(argv)
    if len(args.reports) < 2:
        p.error(f"reports: got {len(args.reports)}; need at least two to compare")
    return args


def load_shares(spec: str, key: str):
    """(label, (K, P) shares) of one `[LABEL=]PATH` report; a one-line error for a missing or foreign file."""
    label, _, path = spec.rpartition("=")
    label = label or os.path.basename(os.path.dirname(os.path.abspath(path))) or path
    try:
        with open(path) as f:
            report = json.load(f)
        shares = report["details"]["model"][key]
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: report {path!r} could not be read: {e}") from None
    except (KeyError, TypeError):
        raise SystemExit(f"error: report {path!r} has no details.model.{key}: is it a `regions` report?") from None
    return label, shares


def main(argv=None) -> int:
    args = parse_args(argv)
    from fra_keras.downstream.regions import partition_distance

    loaded = [load_shares(spec, args.key) for spec in args.reports]
    width = max(8, *(len(label) for label, _ in loaded))
    print(" " * width + " ".join(f"{label:>{width}}" for label, _ in loaded))
    for label_a, a in loaded:
        try:
            row = [partition_distance(a, b) for _, b in loaded]
        except ValueError as e:
            raise SystemExit(f"error: {label_a}: {e}") from None
        print(f"{label_a:>{width}}" + " ".join(f"{d:>{width}.2f}" for d in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
