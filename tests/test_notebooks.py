"""Execute the notebooks top to bottom in smoke mode (FRA_NOTEBOOK_QUICK=1); any error fails."""

import os

import nbclient
import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(f for f in os.listdir(os.path.join(ROOT, "notebooks")) if f.endswith(".ipynb"))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path, monkeypatch):
    monkeypatch.setenv("FRA_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("FRA_NOTEBOOK_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    with open(os.path.join(ROOT, "notebooks", name)) as f:
        nb = nbformat.read(f, as_version=4)
    # Committed notebooks carry no outputs (keeps the repository small and diffs readable).
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), name
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert os.path.isfile(tmp_path / "out" / "model.keras") or name != "01_pretrain.ipynb"
