"""Sample faces for the serving clients, and the clients' messages when no server runs (issue 13,
item 12)."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from harness import ROOT
from test_newcomer_pretrain import assert_one_line  # noqa: E402  (tests/ is on sys.path)


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _run(args, cwd):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("samples")
    proc = _run(["-m", "fra_keras.data.samples", "--output", "samples/", "--num", "4"], cwd)
    assert proc.returncode == 0, proc.stderr
    return cwd, proc.stdout


def test_samples_command_writes_decodable_faces(samples):
    cwd, out = samples
    names = sorted(os.listdir(cwd / "samples"))
    assert names == [f"face-00{i}.jpg" for i in range(4)]
    for name in names:
        image = np.asarray(Image.open(cwd / "samples" / name))
        assert image.shape == (112, 112, 3) and image.std() > 10     # a picture, not a blank
    assert "wrote 4 synthetic faces" in out


def test_samples_are_the_synthetic_validation_faces(tmp_path):
    from fra_keras.data.samples import write_samples
    from fra_keras.data.synthetic import render_sample

    (path,) = write_samples(str(tmp_path), num=1, size=64, fmt="png")
    np.testing.assert_array_equal(np.asarray(Image.open(path)),
                                  render_sample(0, seed=0, image_size=64, split="validation")["image"])


@pytest.mark.parametrize("args, needle", [
    (["--num", "0"], "--num 0"),
    (["--size", "20"], "--size 20"),
    (["--output", "file.txt"], "--output 'file.txt' is an existing file"),
])
def test_samples_bad_arguments(tmp_path, args, needle):
    (tmp_path / "file.txt").write_text("x")
    proc = _run(["-m", "fra_keras.data.samples", *args], tmp_path)
    assert proc.returncode == 2
    assert_one_line(proc.stderr, needle)


def test_samples_are_not_overwritten(samples):
    cwd, _ = samples
    proc = _run(["-m", "fra_keras.data.samples", "--output", "samples/"], cwd)
    assert proc.returncode == 2
    assert_one_line(proc.stderr, "--overwrite")


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("client, protocol", [("rest_client.py", "REST"), ("grpc_client.py", "gRPC")])
def test_clients_say_where_they_tried_and_how_to_serve(samples, client, protocol):
    cwd, _ = samples
    port = _closed_port()
    proc = _run([os.path.join(ROOT, "export", "clients", client), "samples/face-000.jpg",
                 "--host", f"127.0.0.1:{port}", "--timeout", "10"], cwd)
    assert proc.returncode == 1
    assert_one_line(proc.stderr, f"no TF Serving {protocol} server answered at", f"127.0.0.1:{port}",
                    "docker run", "tensorflow/serving", "--host")


def test_npy_files_feed_saved_model_cli_inputs(tmp_path):
    """--npy writes what `saved_model_cli run --inputs` loads: the stacked images and the bytes."""
    proc = _run(["-m", "fra_keras.data.samples", "--output", "s", "--num", "2", "--size", "64", "--npy"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    faces = np.load(tmp_path / "s" / "faces.npy")
    assert faces.shape == (2, 64, 64, 3) and faces.dtype == np.uint8
    encoded = np.load(tmp_path / "s" / "image_bytes.npy", allow_pickle=True)
    assert encoded.dtype == object and encoded[1] == (tmp_path / "s" / "face-001.jpg").read_bytes()
