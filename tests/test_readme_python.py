"""The README's "In Python / notebooks" block runs as written, in a fresh process.

Only sizes are shrunk (image size, layer widths: those of the tests' tiny model, tests/harness.py,
number of synthetic faces, batch, steps, the monitor's held-out faces: 24 + 12 instead of 256 + 128,
which take seconds to render and embed at each check; 24 references still exceed the probe's k = 20)
so that it runs in about half a minute on CI; every call of the block is kept as it is, and `images` is
a batch of synthetic uint8 faces.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHRINK = (("image_size=96", "image_size=64, synthetic_size=64, synthetic_samples=16, batch_size=8, backbone_width=8, "
                            "hidden_dim=32, proj_dim=16, decoder_dim=16, decoder_ffn_dim=16, decoder_heads=2"),
          ("steps_per_epoch=10", "steps_per_epoch=2"),
          ("every_steps=10", "every_steps=2, num_reference=24, num_query=12"))


def readme_python_block() -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    match = re.search(r"\*\*In Python / notebooks\.\*\*\s*```python\n(.*?)```", text, re.S)
    assert match, "the README lost its 'In Python / notebooks' block"
    return match.group(1)


def test_readme_python_block_runs(tmp_path):
    code = readme_python_block()
    for old, new in SHRINK:
        assert old in code, f"README block changed: {old!r} not found; update SHRINK"
        code = code.replace(old, new)
    prelude = ("import numpy as np\n"
               "from fra_keras.data.synthetic import render_batch\n"
               "images = render_batch(range(2), image_size=64)['image']\n")
    checks = ("\nfeatures = model.backbone(x)\n"
              "assert features.shape[0] == 2 and model.embed(x).shape == (2, features.shape[-1])\n"
              "assert model.heatmaps(x).shape[-1] == model.config.num_regions\n"
              "assert len(monitor.history) == 3, monitor.history\n"
              "print('README block ok')\n")
    script = tmp_path / "readme_block.py"
    script.write_text(prelude + code + checks)
    proc = subprocess.run([sys.executable, str(script)], cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "README block ok" in proc.stdout
