"""Run every notebook here and store it with its outputs (so that a reader on the web sees its figures), then save
the_graph.ipynb's last drawing of the graph as the_graph.png, the README's picture.

python examples/notebooks/run_notebooks.py   (needs the notebook extra: pip install "spacegraph[notebook]")
"""

import base64
import os
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


def run(path: Path) -> nbformat.NotebookNode:
    """Execute ``path`` in a temporary folder (its relative paths land there) and store it with its outputs."""
    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as folder:
        nbclient.NotebookClient(notebook, timeout=300, resources={"metadata": {"path": folder}}).execute()
    temporary = path.with_name(f".{path.name}.tmp")
    nbformat.write(notebook, temporary)
    os.replace(temporary, path)
    print(f"ran {path.name}")
    return notebook


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    notebooks = {path.name: run(path) for path in sorted(HERE.glob("*.ipynb"))}
    target = HERE / "the_graph.png"
    target.write_bytes(last_png(notebooks["the_graph.ipynb"], "graph.draw("))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
