"""`import fra_keras` registers every Keras-serializable class (issue 13, item 1).

The README promises that `keras.saving.load_model("model.keras")` needs no `custom_objects` once
`fra_keras` is imported; these tests run that sentence literally in fresh processes.
"""

import os
import re
import subprocess
import sys

import pytest
from harness import tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter from the repository root."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny compiled FRA saved as model.keras."""
    model = tiny_model(0)
    model.compile()
    path = str(tmp_path_factory.mktemp("reg") / "model.keras")
    model.save(path)
    return path


@pytest.mark.parametrize("imports", ["import fra_keras\nimport keras", "import keras\nimport fra_keras",
                                     "import fra_keras\nimport tensorflow\nimport keras"])
def test_import_fra_keras_is_enough_to_load_a_model(saved_model, imports):
    code = (f"{imports}\nm = keras.saving.load_model({saved_model!r})\n"
            "print(type(m).__module__, type(m).__name__, 'FRA' in vars(__import__('fra_keras')))")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Loaded as the package's class, without the lazy attribute fra_keras.FRA having been touched.
    assert proc.stdout.split() == ["fra_keras.models.fra", "FRA", "False"]


def test_import_fra_keras_stays_light():
    """Registration waits for Keras: `import fra_keras` alone still imports no TensorFlow."""
    proc = _python("import sys, fra_keras\nprint('tensorflow' in sys.modules, 'keras' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]


def test_serializable_module_list_is_complete():
    """Every module with a register_keras_serializable class is in fra_keras.SERIALIZABLE_MODULES."""
    import fra_keras

    found = set()
    for folder, _, files in os.walk(os.path.join(ROOT, "fra_keras")):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            with open(path) as f:
                if re.search(r"^@keras\.saving\.register_keras_serializable", f.read(), re.M):
                    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    found.add(rel)
    assert found and found == set(fra_keras.SERIALIZABLE_MODULES)
