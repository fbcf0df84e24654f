"""Export failures that must be clean (issue 13, item 2) and the verification tolerance (item 3)."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(image_size=64, backbone_width=8, hidden_dim=32, proj_dim=16, decoder_dim=16, decoder_ffn_dim=16,
            decoder_heads=2, batch_size=4, steps_per_epoch=2, epochs=1, warmup_epochs=0)

# Runs `python -m fra_keras.export ARGS` with the named modules made unimportable
# (sys.modules[name] = None makes `import name` raise ModuleNotFoundError, as when not installed).
WITHOUT = """
import runpy, sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
sys.argv = ["fra_keras.export"] + sys.argv[2:]
runpy.run_module("fra_keras.export", run_name="__main__", alter_sys=True)
"""


def _export_without(missing, args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.time()
    proc = subprocess.run([sys.executable, "-c", WITHOUT, missing, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc, time.time() - start


@pytest.mark.parametrize("missing", ["onnx", "tf2onnx", "onnxruntime", "onnx,tf2onnx,onnxruntime"])
def test_missing_onnx_tools_give_one_line_and_no_folders(tmp_path, missing):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").write_bytes(b"not checked before the tools")
    proc, seconds = _export_without(missing, ["--model", "run/model.keras"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert 'pip install -e ".[onnx]"' in err and "--formats savedmodel" in err
    for package in missing.split(","):
        assert package in err
    assert sorted(os.listdir(tmp_path)) == ["run"]   # no export/models/{onnx,savedmodel}/fra left behind
    assert seconds < 30   # decided before TensorFlow loads


def test_savedmodel_only_export_does_not_need_onnx(tmp_path):
    """--formats savedmodel passes the up-front check without the ONNX tools."""
    from fra_keras import export

    export.check_onnx_tools(["savedmodel"])
    proc, _ = _export_without("onnx,tf2onnx,onnxruntime", ["--model", "missing.keras", "--formats", "savedmodel"],
                              tmp_path)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "onnx" not in proc.stderr


def test_failed_export_removes_the_folders_it_created(tmp_path, monkeypatch):
    import keras

    from fra_keras import export
    from fra_keras.models.fra import FRA

    keras.utils.set_random_seed(0)
    model = FRA.from_preset("tiny", **TINY)

    def broken(*args, **kwargs):
        raise RuntimeError("simulated crash while building the serving graph")

    monkeypatch.setattr(export, "build_serving_module", broken)
    out = tmp_path / "export" / "models"
    with pytest.raises(RuntimeError, match="simulated"):
        export.export_model(model, str(out), "fra", 1, formats=["savedmodel", "onnx"], saved_model_cli=False,
                            log=None)
    assert os.listdir(tmp_path) == []
    # Folders that existed before the export are kept, even when empty.
    out.mkdir(parents=True)
    with pytest.raises(RuntimeError, match="simulated"):
        export.export_model(model, str(out), "fra", 1, formats=["savedmodel"], saved_model_cli=False, log=None)
    assert out.is_dir() and os.listdir(out) == []
