"""Execute the notebooks top to bottom in smoke mode (FRA_NOTEBOOK_QUICK=1); any error fails.

Both notebooks share one FRA_NOTEBOOK_OUT, as for a user who runs them in order with the default
`runs/notebook`: 02 then loads the model 01 saved instead of pre-training its own (the documented
"Reuse notebook 01's model" path; about half a minute less on 2 cores). 02's other path, the fallback
cell that pre-trains with `fra_keras.pretrain.main`, is checked without training below (its flags and
config are accepted); the pre-training entry point itself is tested end to end in
tests/test_pretrain_cli.py and tests/test_newcomer_pretrain.py. 02 run alone (`-k 02`) takes the
fallback path for real.
"""

import os
import types

import nbclient
import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(f for f in os.listdir(os.path.join(ROOT, "notebooks")) if f.endswith(".ipynb"))


def _read(name):
    with open(os.path.join(ROOT, "notebooks", name)) as f:
        return nbformat.read(f, as_version=4)


@pytest.fixture(scope="module")
def notebook_out(tmp_path_factory):
    """The FRA_NOTEBOOK_OUT folder shared by the notebooks of this module."""
    return tmp_path_factory.mktemp("notebook_out") / "out"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path, monkeypatch, notebook_out):
    monkeypatch.setenv("FRA_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("FRA_NOTEBOOK_OUT", str(notebook_out))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    nb = _read(name)
    # Committed notebooks carry no outputs (keeps the repository small and diffs readable).
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), name
    had_model = os.path.isfile(notebook_out / "model.keras")
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert os.path.isfile(notebook_out / "model.keras") or name != "01_pretrain.ipynb"
    if name == "02_downstream.ipynb":   # which pre-trained model it used: 01's when there was one
        text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
        used = notebook_out / "model.keras" if had_model else notebook_out / "pretrain" / "model.keras"
        assert f"pre-trained model: {used}\n" in text, text[:2000]


def test_notebook_02_fallback_pretraining_is_a_valid_pretrain_command(tmp_path):
    """02's fallback cell (no model from 01) in smoke mode: `pretrain.main` gets flags that the CLI
    parses, checks and turns into the small config, with its output in the notebook's folder."""
    from fra_keras import pretrain

    cells = [c.source for c in _read("02_downstream.ipynb").cells
             if c.cell_type == "code" and "pretrain.main(" in c.source]
    assert len(cells) == 1, "02 lost (or doubled) its fallback pre-training cell"
    calls = []
    stub = types.SimpleNamespace(main=lambda argv: calls.append(list(argv)) or 0)
    scope = {"os": os, "QUICK": True, "OUT_DIR": str(tmp_path), "PRETRAINED": str(tmp_path / "none.keras"),
             "pretrain": stub}
    exec(cells[0], scope)
    assert len(calls) == 1 and scope["PRETRAINED"] == str(tmp_path / "pretrain" / "model.keras")
    args = pretrain.build_parser().parse_args(calls[0])
    pretrain.check_run_flags(args)
    config, output_dir, resuming = pretrain.resolve_config(args)
    assert output_dir == str(tmp_path / "pretrain") and not resuming
    assert (config.image_size, config.batch_size, config.epochs, config.steps_per_epoch) == (64, 8, 1, 2)
