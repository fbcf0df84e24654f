"""benchmarks/official_step.py without PyTorch: argument checks (one-line errors), the export of the
official tree, and the summary of the timed rounds."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from harness import load_benchmark

official = load_benchmark("official_step")


def git_repo(folder, files):
    """A git repository in `folder` with one commit holding `files` ({path: text})."""
    for path, text in files.items():
        os.makedirs(os.path.dirname(os.path.join(folder, path)) or folder, exist_ok=True)
        with open(os.path.join(folder, path), "w") as f:
            f.write(text)
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "c"]):
        subprocess.run(["git", "-C", str(folder), *cmd], check=True, env=env)
    return str(folder)


def error_of(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        official.check_args(official.parse_args(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    return err


def test_missing_official_folder_is_one_line_error(tmp_path, capsys):
    missing = str(tmp_path / "nowhere")
    err = error_of(["--official", missing, "--torch-python", sys.executable], capsys)
    assert "--official=" in err and missing in err and "not a directory" in err


def test_folder_without_the_official_code_is_rejected(tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    assert "no models/fra.py" in error_of(["--official", str(plain)], capsys)
    other = git_repo(tmp_path / "other", {"README.md": "x"})
    assert "no models/fra.py" in error_of(["--official", other], capsys)


def test_bad_numbers_backbone_and_python_are_named(tmp_path, capsys):
    repo = git_repo(tmp_path / "fra", {"models/fra.py": "# stand-in\n"})
    base = ["--official", repo, "--torch-python", sys.executable]
    assert "--backbone='vgg16'" in error_of(base + ["--backbone", "vgg16"], capsys)
    assert "--batch-size=0" in error_of(base + ["--batch-size", "0"], capsys)
    assert "--warmup=0" in error_of(base + ["--warmup", "0"], capsys)
    missing = str(tmp_path / "python")
    assert f"--torch-python={missing!r}" in error_of(["--official", repo, "--torch-python", missing], capsys)
    official.check_args(official.parse_args(base))      # a valid set passes


def test_export_tree_writes_the_committed_files(tmp_path):
    repo = git_repo(tmp_path / "fra", {"models/fra.py": "A = 1\n", "backbone/resnet.py": "B = 2\n"})
    with open(os.path.join(repo, "models/fra.py"), "w") as f:
        f.write("uncommitted\n")
    out = tmp_path / "out"
    out.mkdir()
    official.export_tree(repo, str(out))
    assert (out / "models/fra.py").read_text() == "A = 1\n"
    assert (out / "backbone/resnet.py").read_text() == "B = 2\n"


def test_summarise_takes_medians_per_side_and_kind():
    rng = np.random.default_rng(0)
    walls, cpus = rng.uniform(1, 3, (2, 2, 5)), rng.uniform(0.5, 2, (2, 2, 5))
    rounds = {side: [{kind: dict(wall=float(walls[s, k, r]), cpu=float(cpus[s, k, r]))
                      for k, kind in enumerate(official.KINDS)} for r in range(5)]
              for s, side in enumerate(("official", "keras"))}
    stats = official.summarise(rounds, batch_size=8)
    for s, side in enumerate(("official", "keras")):
        for k, kind in enumerate(official.KINDS):
            ips, cpu, wall = stats[side, kind]
            assert wall == pytest.approx(np.median(walls[s, k]))
            assert ips == pytest.approx(8 / np.median(walls[s, k]))
            assert cpu == pytest.approx(np.median(cpus[s, k]))


def test_memory_rows_subtract_the_import_and_take_ratios():
    mib = official.MIB
    results = {("official", "fra"): {"import": 200 * mib, "peak": 900 * mib},
               ("official", "floor"): {"import": 200 * mib, "peak": 600 * mib},
               ("keras", "fra"): {"import": 600 * mib, "peak": 1300 * mib},
               ("keras", "floor"): {"import": 600 * mib, "peak": 900 * mib}}
    rows, ratios = official.memory_rows(results)
    assert rows == [("official fra", 200, 900, 700), ("official floor", 200, 600, 400),
                    ("keras fra", 600, 1300, 700), ("keras floor", 600, 900, 300)]
    assert ratios["fra"] == pytest.approx((1300 / 900, 1.0))
    assert ratios["floor"] == pytest.approx((900 / 600, 300 / 400))


def test_bad_keras_flags_are_one_line_errors(tmp_path, capsys):
    repo = git_repo(tmp_path / "fra", {"models/fra.py": "# stand-in\n"})
    base = ["--official", repo, "--torch-python", sys.executable]
    err = error_of(base + ["--keras-flags", "--no-such-flag 1"], capsys)
    assert "--keras-flags='--no-such-flag 1'" in err and "--no-such-flag" in err.split(":", 2)[-1]
    err = error_of(base + ["--keras-flags", "--backward-per-view maybe"], capsys)
    assert "--keras-flags=" in err and "maybe" in err
    official.check_args(official.parse_args(base + ["--keras-flags", "--backward-per-view true"]))
