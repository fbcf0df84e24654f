"""Are a model's heatmaps facial parts or a partition of the image frame? A figure and two numbers.

For each model: the arg-max maps of a few crop-framed synthetic test faces, and the map of the most
frequent winning heatmap at each pixel position over all N faces (a frame partition shows up as the
same coloured blocks on every face and in the majority map). Prints, per model, the largest usage and
the position / part predictability of the arg-max maps (`fra_keras.downstream.regions`; docs/evaluation.md,
"Why the heatmaps are not facial parts").

    python benchmarks/region_partitions.py --model reference=runs/ablation/reference-s0/model.keras \\
        --model recipe=runs/long/regions-1000/model.keras --model random --output docs/region_partitions.png \\
        --heatmaps region_heatmaps.png     # optional: also each model's K heatmaps on the first 4 faces
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, metavar="LABEL=PATH",
                   help="a FRA model.keras, as LABEL=PATH or PATH; 'random' = a random tiny FRA (repeatable)")
    p.add_argument("--num-faces", type=int, default=256, help="test faces for the numbers (default 256)")
    p.add_argument("--show", type=int, default=6, help="faces shown per model (default 6)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="region_partitions.png", help="PNG path")
    p.add_argument("--heatmaps", default=None, metavar="PNG",
                   help="also write the K heatmaps of the first --heatmap-faces faces, per model (face, arg-max, "
                        "heatmap 0..K-1 per row; `plots.heatmap_figure`)")
    p.add_argument("--heatmap-faces", type=int, default=4, help="faces per model in --heatmaps (default 4)")
    args = p.parse_args(argv)
    if args.num_faces < 1 or not 1 <= args.show <= args.num_faces:
        p.error(f"--num-faces {args.num_faces} / --show {args.show}: need 1 <= show <= num-faces")
    if not 1 <= args.heatmap_faces <= args.num_faces:
        p.error(f"--heatmap-faces {args.heatmap_faces}: need 1 <= heatmap-faces <= num-faces ({args.num_faces})")
    for spec in args.model:
        path = spec.split("=", 1)[-1]
        if path != "random" and not os.path.isfile(path):
            p.error(f"--model {spec!r}: {path!r} is not a file; pass a FRA model.keras or 'random'")
    return args


def majority_map(labels, k):
    """(H, W) most frequent label at each position of int (N, H, W) maps."""
    import numpy as np

    return np.argmax(np.stack([(labels == j).sum(axis=0) for j in range(k)]), axis=0)


def main(argv=None):
    args = parse_args(argv)
    import keras
    import numpy as np
    from PIL import Image, ImageDraw

    from fra_keras.config import FRAConfig
    from fra_keras.data.synthetic import REGION_NAMES
    from fra_keras.downstream import plots, regions
    from fra_keras.downstream.loading import build_random

    rows, numbers, views, panels = [], {}, None, []
    for spec in args.model:
        label, path = spec.split("=", 1) if "=" in spec else (os.path.basename(os.path.dirname(spec)) or spec, spec)
        if path == "random":
            _, model = build_random(FRAConfig.from_preset("tiny"), seed=args.seed + 1000, with_regions=True)
        else:
            model = keras.saving.load_model(path)
        if views is None:
            views = regions.render_views(args.num_faces, model.config.image_size, seed=args.seed, profile="crop")
        hm = regions.model_heatmaps(model, views["image_a"])
        labels = np.argmax(hm, axis=-1)
        k = hm.shape[-1]
        numbers[label] = {"largest_usage": float(regions.usage(hm).max()),
                          "position_predictability": regions.position_predictability(labels),
                          "part_predictability": regions.part_predictability(labels, views["mask_a"],
                                                                             len(REGION_NAMES))}
        print(label, json.dumps({n: round(v, 3) for n, v in numbers[label].items()}), flush=True)
        tiles = [plots.argmax_tile(views["image_a"][i], hm[i]) for i in range(args.show)]
        grey = np.full_like(views["image_a"][0], 128)
        tiles.append(plots.argmax_tile(grey, np.eye(k)[majority_map(labels, k)], alpha=1.0))
        rows.append((label, tiles))
        n = args.heatmap_faces
        panels.append((label, views["image_a"][:n], hm[:n]))
    s, gap, lw, header = views["image_a"].shape[1], 2, 72, 14
    canvas = Image.new("RGB", (lw + (args.show + 1) * (s + gap), header + (len(rows) + 1) * (s + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((lw + args.show * (s + gap) + 2, 1), "majority", fill=(0, 0, 0))
    for c in range(args.show):
        canvas.paste(Image.fromarray(views["image_a"][c]), (lw + c * (s + gap), header))
    for r, (label, tiles) in enumerate(rows, start=1):
        y = header + r * (s + gap)
        draw.text((2, y + s // 2 - 5), label, fill=(0, 0, 0))
        for c, tile in enumerate(tiles):
            canvas.paste(Image.fromarray(tile), (lw + c * (s + gap), y))
    size = plots.save_png(canvas, args.output, max_bytes=150_000)
    print(f"figure: {args.output} ({size} bytes)")
    if args.heatmaps:
        size = plots.save_png(plots.heatmap_figure(panels), args.heatmaps, max_bytes=300_000)
        print(f"heatmaps: {args.heatmaps} ({size} bytes)")
    return numbers


if __name__ == "__main__":
    main()
