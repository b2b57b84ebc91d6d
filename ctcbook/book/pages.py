"""What the book's pages need beyond the notebooks' own tags: papermill's cell left out, tables.

The notebooks' authors tag their cells for Jupyter Book (``hide-input`` collapses code, ``remove-cell`` leaves a
cell out of the page but not the downloadable notebook); the one cell they cannot tag is the one papermill injects.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import nbformat


def hide_injected_parameters(path: Path) -> None:
    """Leave papermill's injected cell out of the page (every value is listed under the provenance box)."""
    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    nbformat.write(nb, str(tmp))
    os.replace(tmp, path)


# --- tables on the page ----------------------------------------------------------------------------------------
def table(df, precision: int = 2):
    """``df`` as the page shows a table: no index, floats to ``precision`` decimals, and an HTML id hashed from its
    columns and shape (pandas' Styler draws a random one, which would make two executions of a chapter differ)."""
    key = f"{list(map(str, df.columns))}|{df.shape}|{precision}".encode()
    return (df.style.hide(axis="index").format(precision=precision)
            .set_uuid(hashlib.sha256(key).hexdigest()[:10]))
