"""Heatmap pictures with Pillow: faces with each of the K heatmaps overlaid (docs/region_heatmaps.png).

    grid = heatmap_figure([("FRA", images, heatmaps), ("random", images, heatmaps_random)])
    save_png(grid, "docs/region_heatmaps.png")

Each row is one face of one model: the face, the arg-max segmentation over K (one colour per heatmap),
then heatmap 0..K-1 overlaid in a blue-to-yellow colour map. Heatmaps at the paper's scale 1.0 are soft
(softmax over K of cosines), so each tile is min-max stretched over its own face for display; the
arg-max tile shows the hard assignment without stretching.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

# Control points of a perceptually ordered map (dark blue -> teal -> yellow), like viridis.
_CMAP = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], np.float32)
# Distinct colours for the arg-max tile (one per heatmap, cycled).
_PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                     (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190),
                     (0, 128, 128), (170, 110, 40)], np.float32)


def colormap(values) -> np.ndarray:
    """[0, 1] values (...) -> uint8 RGB (..., 3)."""
    v = np.clip(np.asarray(values, np.float32), 0.0, 1.0) * (len(_CMAP) - 1)
    lo = np.floor(v).astype(np.int64)
    hi = np.minimum(lo + 1, len(_CMAP) - 1)
    t = (v - lo)[..., None]
    return np.clip(_CMAP[lo] * (1 - t) + _CMAP[hi] * t, 0, 255).astype(np.uint8)


def overlay(image, heatmap, alpha: float = 0.6) -> np.ndarray:
    """One face (H, W, 3) uint8 with one heatmap (H, W) min-max stretched and blended on top."""
    h = np.asarray(heatmap, np.float32)
    span = float(h.max() - h.min())
    h = (h - h.min()) / span if span > 0 else np.zeros_like(h)
    colour = colormap(h).astype(np.float32)
    grey = np.asarray(image, np.float32).mean(axis=-1, keepdims=True)
    return np.clip((1 - alpha) * grey + alpha * colour, 0, 255).astype(np.uint8)


def argmax_tile(image, heatmaps, alpha: float = 0.55) -> np.ndarray:
    """The hard assignment over K (one palette colour per heatmap) blended on the face."""
    winner = np.argmax(np.asarray(heatmaps), axis=-1)
    colour = _PALETTE[winner % len(_PALETTE)]
    return np.clip((1 - alpha) * np.asarray(image, np.float32) + alpha * colour, 0, 255).astype(np.uint8)


def heatmap_figure(panels: Sequence[Tuple[str, np.ndarray, np.ndarray]], num_faces: Optional[int] = None,
                   label_width: int = 64, header: int = 14, gap: int = 2):
    """A Pillow image: for each (label, images (N, S, S, 3) uint8, heatmaps (N, S, S, K)) panel, one row
    per face with [face, arg-max, heatmap 0 .. K-1]."""
    from PIL import Image, ImageDraw

    if not panels:
        raise ValueError("heatmap_figure needs at least one panel")
    s = int(panels[0][1].shape[1])
    k = int(panels[0][2].shape[-1])
    n = min(int(num_faces or panels[0][1].shape[0]), min(p[1].shape[0] for p in panels))
    cols = 2 + k
    rows = n * len(panels)
    width = label_width + cols * (s + gap)
    height = header + rows * (s + gap)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    titles = ["face", "argmax"] + [f"k={j}" for j in range(k)]
    for c, title in enumerate(titles):
        draw.text((label_width + c * (s + gap) + 2, 1), title, fill=(0, 0, 0))
    row = 0
    for label, images, heatmaps in panels:
        if images.shape[1] != s or heatmaps.shape[1:3] != images.shape[1:3]:
            raise ValueError("every panel needs images and heatmaps of the same size (resize heatmaps first)")
        for i in range(n):
            y = header + row * (s + gap)
            draw.text((2, y + s // 2 - 5), label if i == 0 else "", fill=(0, 0, 0))
            tiles = [images[i], argmax_tile(images[i], heatmaps[i])]
            tiles += [overlay(images[i], heatmaps[i][..., j]) for j in range(heatmaps.shape[-1])]
            for c, tile in enumerate(tiles):
                canvas.paste(Image.fromarray(tile), (label_width + c * (s + gap), y))
            row += 1
    return canvas


def save_png(image, path: str, max_bytes: int = 300_000) -> int:
    """Save as PNG; if larger than `max_bytes`, quantise to 256, then 128, 64 colours. Returns the size."""
    import io
    import os

    for colors in (None, 256, 128, 64):
        buffer = io.BytesIO()
        (image if colors is None else image.quantize(colors=colors, dither=0)).save(buffer, "PNG", optimize=True)
        if buffer.tell() <= max_bytes or colors == 64:
            break
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "wb") as f:
        f.write(buffer.getvalue())
    return buffer.tell()
