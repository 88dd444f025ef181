"""Every notebook in examples/notebooks runs offline without an error and shows its figures and its tables."""

import os
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook extra (nbformat) is not installed")
nbclient = pytest.importorskip("nbclient", reason="the notebook extra (nbclient) is not installed")
pytest.importorskip("ipykernel", reason="the notebook extra (ipykernel) is not installed")
pytest.importorskip("matplotlib", reason="the notebook extra (matplotlib) is not installed")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "examples" / "notebooks").glob("*.ipynb"))
SECONDS_PER_CELL = 120


def test_the_four_notebooks_are_there():
    names = {path.name for path in NOTEBOOKS}
    expected = {"connect_audio_and_image", "the_graph", "write_a_space_plugin", "evaluate_a_route"}
    assert {f"{name}.ipynb" for name in expected} <= names


def test_notebooks_are_stored_with_the_outputs_of_one_whole_run():
    """A reader on the web sees the figures: every code cell ran, in order, in one kernel, without an error
    (``python examples/notebooks/run_notebooks.py`` stores them so)."""
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), path.name
        assert not [out for cell in code for out in cell.outputs if out.output_type == "error"], path.name
        assert {"image/png", "text/html"} <= output_types(notebook), path.name


def output_types(notebook) -> set[str]:
    return {
        mime
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        for mime in out.get("data", {})
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_with_figures_and_tables(path, tmp_path, monkeypatch):
    """Run a copy in a temporary folder (relative paths resolve there); any error in a cell fails the test."""
    copy = Path(shutil.copy(path, tmp_path / path.name))
    notebook = nbformat.read(copy, as_version=4)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = nbclient.NotebookClient(
        notebook, timeout=SECONDS_PER_CELL, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell and the traceback, on any error
    errors = [out for cell in notebook.cells for out in cell.get("outputs", ()) if out.output_type == "error"]
    assert not errors
    kinds = output_types(notebook)
    assert "image/png" in kinds, f"{path.name} shows no figure"
    assert "text/html" in kinds, f"{path.name} shows no HTML table"
