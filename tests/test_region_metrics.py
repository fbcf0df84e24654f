"""Hard (arg-max) region metrics and the ideal soft purity, against NumPy constructions."""

import numpy as np
import pytest

from fra_keras.downstream import regions as r


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _simplex(k):
    """K unit vectors with pairwise cosine -1/(K-1): the centred standard basis, normalised."""
    v = np.eye(k) - 1.0 / k
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _striped_masks(n, parts, width=3):
    """(n, parts*width, parts*width) masks: vertical stripes, part p in columns [p*width, (p+1)*width)."""
    side = parts * width
    cols = np.repeat(np.arange(parts), width)
    return np.broadcast_to(cols[None, None, :], (n, side, side)).copy()


def test_hard_heatmaps_are_one_hot_argmax():
    rng = np.random.default_rng(0)
    hm = rng.random((2, 3, 4, 5))
    hard = r.hard_heatmaps(hm)
    assert hard.shape == hm.shape and hard.dtype == np.float32
    np.testing.assert_array_equal(hard.sum(-1), 1.0)
    np.testing.assert_array_equal(np.argmax(hard, -1), np.argmax(hm, -1))


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.2])
def test_ideal_purity_matches_a_perfect_segmentation_with_simplex_embeddings(scale):
    k = 8
    e = _simplex(k)
    masks = _striped_masks(2, k)
    pixels = e[masks]                                    # every pixel of part p projects onto embedding p
    heatmaps = _softmax(pixels @ e.T / scale)            # cos = dot of unit vectors
    dens = r.density_share(r.part_mass(heatmaps, masks, k), r.part_area(masks, k))
    assert r.purity(dens) == pytest.approx(r.ideal_purity(scale, k, k), rel=1e-9)
    assert r.coverage(dens) == k
    # the hard version of the same maps is a perfect segmentation
    hard = r.hard_heatmaps(heatmaps)
    assert r.purity(r.density_share(r.part_mass(hard, masks, k), r.part_area(masks, k))) == pytest.approx(1.0)


def test_ideal_purity_limits_and_bad_input():
    assert r.ideal_purity(1e-3, 8, 8) == pytest.approx(1.0)
    assert r.ideal_purity(1e3, 8, 8) == pytest.approx(1 / 8, rel=2e-3)
    assert r.ideal_purity(1.0, 8, 8) < 0.4 < r.ideal_purity(0.7, 8, 8)
    with pytest.raises(ValueError, match="scale > 0"):
        r.ideal_purity(0.0, 8, 8)


def test_report_separates_a_faint_but_right_segmentation_from_its_soft_purity():
    k, n = 4, 3
    masks = _striped_masks(n, k)
    rng = np.random.default_rng(1)
    logits = 0.05 * np.eye(k)[masks] + 0.001 * rng.standard_normal(masks.shape + (k,))
    heatmaps = _softmax(logits)                          # right arg-max everywhere, nearly uniform values
    flipped = heatmaps[:, :, ::-1], masks[:, :, ::-1]
    rep = r.region_report(heatmaps, masks, flipped[0], flipped[1], [f"p{i}" for i in range(k)], min_pixels=1)
    assert rep["purity"] < 0.27                          # chance 0.25
    assert rep["purity_hard"] == pytest.approx(1.0)
    assert rep["consistency_hard"] == pytest.approx(1.0)
    np.testing.assert_allclose(rep["density_share_hard"], np.eye(k), atol=1e-4)
    # a wrong segmentation (parts shifted by one heatmap) keeps hard purity but breaks consistency
    shifted = np.roll(heatmaps, 1, axis=-1)
    rep2 = r.region_report(heatmaps, masks, shifted[:, :, ::-1], flipped[1], [f"p{i}" for i in range(k)],
                           min_pixels=1)
    assert rep2["consistency_hard"] == pytest.approx(0.0)


def test_hard_purity_weights_by_usage_and_hard_consistency_skips_absent_heatmaps():
    k = 3
    masks = _striped_masks(1, k)                         # 1 x 9 x 9, three parts of 27 pixels
    winner = np.zeros(masks.shape, np.int64)             # heatmap 0 wins everywhere...
    winner[0, 0, 0] = 1                                  # ...but one pixel of part 0, won by heatmap 1
    hm = np.eye(k)[winner]                               # heatmap 2 never wins
    dens = r.density_share(r.part_mass(hm, masks, k), r.part_area(masks, k))
    # NumPy by hand: heatmap 0 has densities (26/27, 1, 1) -> share of the largest 27/80; heatmap 1 is
    # pure (share 1) but wins 1 of 81 pixels; heatmap 2 has no pixels (share 0, weight 0)
    expected = (80 / 81) * (1 / (26 / 27 + 2)) + (1 / 81) * 1.0
    assert r.weighted_purity(dens, r.usage(hm)) == pytest.approx(expected)
    rep = r.region_report(hm, masks, hm, masks, ["a", "b", "c"], min_pixels=1)
    assert rep["purity_hard"] == pytest.approx(expected)
    # heatmap 2 is absent in both views: only heatmaps 0 and 1 count, and both agree
    assert rep["consistency_hard"] == pytest.approx(1.0)
    dom = r.per_image_dominant(hm, masks, k)
    np.testing.assert_array_equal(dom, [[1, 0, -1]])
    with pytest.raises(ValueError, match="positive sum"):
        r.weighted_purity(dens, np.zeros(k))


def test_position_and_part_predictability_tell_a_frame_partition_from_a_part_segmentation():
    rng = np.random.default_rng(2)
    n, side, k = 6, 8, 4
    # parts: a random axis-aligned rectangle per image (part 1) on background (part 0)
    masks = np.zeros((n, side, side), np.int64)
    for i in range(n):
        y, x = rng.integers(0, side - 3, 2)
        masks[i, y:y + 3, x:x + 3] = 1
    frame = np.broadcast_to((np.arange(side)[:, None] // (side // 2)) * 2 + np.arange(side)[None, :] // (side // 2),
                            (n, side, side))        # heatmap = quadrant of the frame
    parts = masks.copy()                            # heatmap = part
    # NumPy by hand: the frame partition is fully predicted by position; the part segmentation by part
    assert r.position_predictability(frame) == pytest.approx(1.0)
    assert r.part_predictability(parts, masks, 2) == pytest.approx(1.0)
    # and the other way round they are not: per part, the most frequent quadrant
    joint = np.zeros((2, k))
    for p_, q in zip(masks.ravel(), frame.ravel()):
        joint[p_, q] += 1
    assert r.part_predictability(frame, masks, 2) == pytest.approx(joint.max(1).sum() / masks.size)
    assert r.part_predictability(frame, masks, 2) < 0.5
    counts = np.stack([(parts == j).sum(0) for j in range(2)])
    assert r.position_predictability(parts) == pytest.approx(counts.max(0).sum() / parts.size)
    with pytest.raises(ValueError, match="same shape"):
        r.part_predictability(frame[:2], masks, 2)


def test_region_partitions_benchmark_majority_map_and_bad_input():
    from harness import load_benchmark

    bench = load_benchmark("region_partitions")
    labels = np.array([[[0, 1], [2, 2]], [[0, 2], [2, 1]], [[1, 2], [2, 1]]])
    # by hand: position (0,0) -> 0 (twice), (0,1) -> 2 (twice), (1,0) -> 2, (1,1) -> 1 (twice)
    np.testing.assert_array_equal(bench.majority_map(labels, 3), [[0, 2], [2, 1]])
    with pytest.raises(SystemExit):
        bench.parse_args(["--model", "no/such/model.keras"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--model", "random", "--num-faces", "4", "--show", "5"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--model", "random", "--num-faces", "4", "--heatmap-faces", "5"])


def test_region_partitions_benchmark_writes_both_figures(tmp_path):
    """A random FRA on 4 faces: the partition figure, the heatmap figure (2 faces x [face, arg-max, K
    heatmaps] per model) and the three numbers, with the largest usage matching the figure's model."""
    from PIL import Image

    from harness import load_benchmark

    bench = load_benchmark("region_partitions")
    out, heat = tmp_path / "partitions.png", tmp_path / "heatmaps.png"
    numbers = bench.main(["--model", "random", "--num-faces", "4", "--show", "2", "--heatmap-faces", "2",
                          "--output", str(out), "--heatmaps", str(heat)])
    assert set(numbers["random"]) == {"largest_usage", "position_predictability", "part_predictability"}
    assert 1 / 8 <= numbers["random"]["largest_usage"] <= 1.0
    assert numbers["random"]["position_predictability"] >= numbers["random"]["largest_usage"] - 1e-9
    partitions_height = Image.open(out).size[1]
    width, height = Image.open(heat).size
    k = 8
    assert width > (2 + k) * 96 and height > 2 * 96 and partitions_height > 96   # 2 rows of 10 panels at 96 px


def test_partition_distance_matches_heatmaps_before_comparing():
    """Known answers: a reordered partition is at distance 0; one changed heatmap adds its L1 / K; and the
    matching is the best one, checked against an explicit loop over the 3! orders of a random case."""
    import itertools

    a = np.eye(4)                                                   # heatmap k = part k
    b = a[[2, 0, 3, 1]].copy()                                      # the same partition, reordered
    assert r.partition_distance(a, b) == pytest.approx(0.0, abs=1e-12)
    b[1] = [0.5, 0.5, 0.0, 0.0]                                     # b's heatmap 1 (a's 0) now half part 1
    assert r.partition_distance(a, b) == pytest.approx(1.0 / 4)     # |0.5| + |0.5| over 4 heatmaps
    rng = np.random.default_rng(3)
    x, y = rng.dirichlet(np.ones(5), size=3), rng.dirichlet(np.ones(5), size=3)
    best = min(sum(abs(x[i, p] - y[perm[i], p]) for i in range(3) for p in range(5))
               for perm in itertools.permutations(range(3))) / 3
    assert r.partition_distance(x, y) == pytest.approx(best, rel=1e-12)
    assert r.partition_distance(x, y) <= np.abs(x - y).sum(1).mean() + 1e-12   # never worse than the identity
    with pytest.raises(ValueError, match="one shape"):
        r.partition_distance(x, y[:2])
    with pytest.raises(ValueError, match="K=10 heatmaps; allowed 1-9"):
        r.partition_distance(np.eye(10), np.eye(10))


def test_compare_partitions_script_in_a_fresh_process(tmp_path):
    """`benchmarks/compare_partitions.py` as docs/evaluation.md runs it: the matrix of two reports, and a
    one-line error for a file that is not a region report."""
    import json
    import subprocess
    import sys

    from harness import ROOT, subprocess_env

    a = np.eye(4)
    b = a[[1, 0, 3, 2]].copy()
    b[0] = [0.5, 0.5, 0.0, 0.0]                                     # distance 0.25, as above
    paths = []
    for name, shares in (("one", a), ("two", b)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps({"details": {"model": {"density_share_hard": shares.tolist()}}}))
    script = [sys.executable, f"{ROOT}/benchmarks/compare_partitions.py"]
    run = subprocess.run(script + [f"A={paths[0]}", f"B={paths[1]}"], capture_output=True, text=True,
                         env=subprocess_env(), timeout=120)
    assert run.returncode == 0, run.stderr
    rows = [line.split() for line in run.stdout.strip().splitlines()]
    assert rows[0] == ["A", "B"] and rows[1] == ["A", "0.00", "0.25"] and rows[2] == ["B", "0.25", "0.00"]
    (tmp_path / "other.json").write_text(json.dumps({"metrics": {}}))
    bad = subprocess.run(script + [str(paths[0]), str(tmp_path / "other.json")], capture_output=True, text=True,
                         env=subprocess_env(), timeout=120)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [f"error: report {str(tmp_path / 'other.json')!r} has no "
                                               "details.model.density_share_hard: is it a `regions` report?"]
