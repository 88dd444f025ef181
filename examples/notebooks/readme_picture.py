"""Run the_graph.ipynb and save its last drawing of the graph as the_graph.png, the README's picture.

python examples/notebooks/readme_picture.py   (needs the notebook extra: pip install "spacegraph[notebook]")
"""

import base64
import tempfile
from pathlib import Path

import nbclient
import nbformat

HERE = Path(__file__).resolve().parent


def last_png(notebook: nbformat.NotebookNode, marker: str) -> bytes:
    """The last image/png output of a code cell whose source contains ``marker``."""
    images = [
        output["data"]["image/png"]
        for cell in notebook.cells
        if cell.cell_type == "code" and marker in cell.source
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    if not images:
        raise SystemExit(f"no figure in a cell with {marker!r}: did the notebook change?")
    return base64.b64decode(images[-1])


def main() -> None:
    notebook = nbformat.read(HERE / "the_graph.ipynb", as_version=4)
    with tempfile.TemporaryDirectory() as folder:
        nbclient.NotebookClient(notebook, timeout=300, resources={"metadata": {"path": folder}}).execute()
    target = HERE / "the_graph.png"
    target.write_bytes(last_png(notebook, "graph.draw()"))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
