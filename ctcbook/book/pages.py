"""What the book's pages need beyond the notebooks' own tags: papermill's cell left out, profiles, sections, tables.

The notebooks' authors tag their cells for Jupyter Book (``hide-input`` collapses code, ``remove-cell`` leaves a
cell out of the page but not the downloadable notebook); the one cell they cannot tag is the one papermill injects.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import nbformat

from .profiles import PARAMETER_DEFAULTS, PROFILES


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


# --- what the book's front matter says about the chapters, computed from the chapters -------------------------
def chapter_profiles(chapter: str) -> list[str]:
    """The profiles ``chapter`` (e.g. ``"04_dynamic_mlp"``) runs under: ``default`` and every profile that lists it."""
    if chapter not in PARAMETER_DEFAULTS:
        raise ValueError(f"chapter must be one of {sorted(PARAMETER_DEFAULTS)}, got {chapter!r}")
    return ["default"] + sorted(p for p, chapters in PROFILES.items() if p != "default" and chapter in chapters)


def beside_the_paper(nb) -> list:
    """The cells of the "Beside the paper(s)" section, up to the next level-1 or 2 heading (ValueError if none)."""
    start = None
    for i, cell in enumerate(nb.cells):
        first = cell.source.lstrip().splitlines()[0] if cell.cell_type == "markdown" and cell.source.strip() else ""
        if start is None and first.lower().startswith("## beside the paper"):
            start = i
        elif start is not None and (first.startswith("# ") or first.startswith("## ")):
            return nb.cells[start:i]
    if start is None:
        raise ValueError("the notebook has no '## Beside the paper' section")
    return nb.cells[start:]


# --- tables on the page ----------------------------------------------------------------------------------------
def table(df, precision: int = 2):
    """``df`` as the page shows a table: no index, floats to ``precision`` decimals, and an HTML id hashed from its
    columns and shape (pandas' Styler draws a random one, which would make two executions of a chapter differ)."""
    key = f"{list(map(str, df.columns))}|{df.shape}|{precision}".encode()
    return (df.style.hide(axis="index").format(precision=precision)
            .set_uuid(hashlib.sha256(key).hexdigest()[:10]))
