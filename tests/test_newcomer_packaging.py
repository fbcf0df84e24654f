"""The `notebooks` extra installs what the notebooks need (issue 13, item 11)."""

import configparser
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _extra(name):
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    lines = parser["options.extras_require"][name].strip().splitlines()
    return {re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower() for line in lines if line.strip()}


def _notebook_sources():
    folder = os.path.join(ROOT, "notebooks")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".ipynb"):
            with open(os.path.join(folder, name)) as f:
                cells = json.load(f)["cells"]
            yield name, "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def test_notebooks_extra_has_jupyter_a_kernel_and_matplotlib():
    extra = _extra("notebooks")
    assert {"jupyterlab", "ipykernel", "matplotlib"} <= extra


def test_notebooks_extra_covers_what_the_notebooks_use():
    extra = _extra("notebooks")
    for name, source in _notebook_sources():
        if re.search(r"^\s*(import|from) matplotlib", source, re.M):
            assert "matplotlib" in extra, name
        if "OnnxPredictor" in source or "export_model(" in source:   # exports to ONNX by default
            assert {"onnx", "tf2onnx", "onnxruntime"} <= extra, name
