"""Where a chapter's numbers come from: profile, data, device, seeds, versions, commit, wall time and parameters.

The runner :func:`collect`s the record after executing a chapter and :func:`stamp`s it as a box under the chapter's
title, so that no number in the book is without its origin; the same record goes to ``<chapter>.run.json``.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import nbformat

REPO = Path(__file__).resolve().parents[2]


def git_commit() -> str:
    """The checkout's commit (12 hex digits, ``+changes`` when tracked files differ); ``unknown`` outside git."""
    try:
        return subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty=+changes", "--abbrev=12",
                               "--exclude=*"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def collect(chapter: str, profile: str, parameters: dict[str, Any], wall_seconds: float) -> dict[str, Any]:
    """The provenance record of one chapter execution."""
    import torch
    import torchvision

    from .. import __version__

    data = {k: parameters[k] for k in ("source", "source_classes", "train_size", "targets") if k in parameters}
    device = (f"CUDA: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available()
              else f"CPU ({os.cpu_count()} cores, {platform.machine()})")
    return {
        "chapter": chapter, "profile": profile, "seeds": parameters.get("seeds"), "data": data,
        "data_location": os.environ.get("CTCBOOK_DATA", "default locations (see ctcbook.data)"),
        "device": device, "ctcbook": __version__, "torch": torch.__version__,
        "torchvision": torchvision.__version__, "python": platform.python_version(), "commit": git_commit(),
        "wall_seconds": round(wall_seconds, 1), "finished_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "all_parameters": dict(parameters),  # the page's one list of them: the notebook sets only the profile
    }


def first_wall_seconds(previous_record: Path, parameters: dict[str, Any], seconds: float) -> float:
    """The wall time of the first execution with these parameters (the previous record's, when its parameters are
    the same: a re-execution from finished runs is much faster than the one that trained them), else ``seconds``."""
    try:
        old = json.loads(Path(previous_record).read_text())
    except (OSError, ValueError):
        old = {}
    same = old.get("parameters") == parameters and "first_wall_seconds" in old
    return old["first_wall_seconds"] if same else round(seconds, 1)


def markdown(record: dict[str, Any]) -> str:
    """The provenance box (a MyST admonition) of a record, then every parameter's value in a collapsed dropdown."""
    data = ", ".join(f"{k} `{v}`" for k, v in record["data"].items()) or "see the parameters below"
    parameters = record.get("all_parameters")
    minutes = record["wall_seconds"] / 60
    first = record.get("first_wall_seconds", record["wall_seconds"]) / 60
    timing = (f"Wall time of this execution: {minutes:.1f} min" if abs(first - minutes) < 0.05 else
              f"Wall time of this execution: {minutes:.1f} min, reusing finished training runs and cached estimates; "
              f"the first execution with these parameters took {first:.1f} min")
    return "\n".join([
        "```{admonition} Provenance of this page",
        ":class: note",
        f"Executed with profile **`{record['profile']}`** on **{record['device']}**, seeds `{record['seeds']}`; "
        f"data: {data} (from {record['data_location']}). "
        f"ctcbook {record['ctcbook']} at commit `{record['commit']}`, torch {record['torch']}, torchvision "
        f"{record['torchvision']}, Python {record['python']}. {timing} (finished {record['finished_at']}).",
        "```",
    ] + (["", "````{admonition} All parameters of this execution", ":class: dropdown", "```python",
          *(f"{name} = {value!r}" for name, value in parameters.items()), "```", "````"] if parameters else []))


def stamp(notebook: Path, record: dict[str, Any]) -> None:
    """Insert the provenance box after the notebook's first (title) cell, replacing an earlier box."""
    nb = nbformat.read(str(notebook), as_version=4)
    nb.cells = [c for c in nb.cells if not c.get("metadata", {}).get("ctcbook_provenance")]
    cell = nbformat.v4.new_markdown_cell(markdown(record))
    cell.metadata["ctcbook_provenance"] = True
    nb.cells.insert(1 if nb.cells else 0, cell)
    tmp = notebook.with_name(f".{notebook.name}.tmp")
    nbformat.write(nb, str(tmp))
    os.replace(tmp, notebook)
