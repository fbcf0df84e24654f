"""Heatmap pictures: the grid composition against a hand computation, and the CLI end to end."""

import numpy as np
import pytest

from fra_keras import visualize


def test_heatmap_rows_layout_and_argmax_colours():
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    heat = rng.random((2, 8, 8, 3)).astype(np.float32)
    grid = visualize.heatmap_rows(faces, heat, alpha=1.0)
    assert grid.shape == (16, 8 * 5, 3) and grid.dtype == np.uint8      # face | argmax | 3 heatmaps
    np.testing.assert_array_equal(grid[:8, :8], faces[0])
    # With alpha=1 the argmax panel is exactly the winning region's colour at every pixel.
    colours = visualize.region_colours(3)
    expected = colours[np.argmax(heat[1], axis=-1)].astype(np.uint8)
    np.testing.assert_array_equal(grid[8:, 8:16], expected)
    # A heatmap panel is brightest in its own colour where that heatmap peaks.
    j = 2
    peak = np.unravel_index(np.argmax(heat[0, ..., j]), (8, 8))
    panel = grid[:8, 8 * (2 + j): 8 * (3 + j)].astype(np.float32)
    grey = faces[0].astype(np.float32).mean(-1, keepdims=True) * 0.6
    np.testing.assert_allclose(panel[peak], 0.2 * grey[peak] + 0.8 * colours[j], atol=1.0)


def test_heatmap_rows_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="heatmaps"):
        visualize.heatmap_rows(np.zeros((1, 8, 8, 3)), np.zeros((1, 4, 4, 8)))


def test_cli_writes_png(tiny_fra, tmp_path):
    from PIL import Image

    path = str(tmp_path / "model.keras")
    tiny_fra.save(path)
    out = str(tmp_path / "heatmaps.png")
    assert visualize.main(["--model", path, "--output", out, "--num", "2"]) == 0
    image = np.asarray(Image.open(out))
    assert image.shape == (2 * 64, (8 + 2) * 64, 3)


def test_cli_rejects_missing_model(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        visualize.main(["--model", str(tmp_path / "nope.keras")])
    assert e.value.code == 2 and "nope.keras" in capsys.readouterr().err
