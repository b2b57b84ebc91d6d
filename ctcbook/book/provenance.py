"""Where a chapter's numbers come from: profile, data, device, seeds, versions, commit and wall time.

The runner calls :func:`collect` after executing a chapter and :func:`stamp` to put a provenance box (a MyST
admonition) right under the chapter's title in the executed notebook, so that no number in the book is without its
origin. The same record is stored in ``<chapter>.run.json``.
"""
from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import nbformat

REPO = Path(__file__).resolve().parents[2]


def git_commit(repo: Path = REPO) -> str:
    """The checkout's commit (12 hex digits), with ``+changes`` when tracked files differ from it; ``unknown``
    outside a git checkout."""
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+changes" if dirty else "")


def device_description() -> str:
    """The device chapters run on by default: the CUDA GPU's name, or the CPU with its core count."""
    import torch

    if torch.cuda.is_available():
        return f"CUDA: {torch.cuda.get_device_name(0)}"
    return f"CPU ({os.cpu_count()} cores, {platform.machine()})"


def collect(chapter: str, profile: str, parameters: dict[str, Any], wall_seconds: float) -> dict[str, Any]:
    """The provenance record of one chapter execution."""
    import torch
    import torchvision

    from .. import __version__

    data = {k: parameters[k] for k in ("source", "source_classes", "train_size", "targets") if k in parameters}
    return {
        "chapter": chapter, "profile": profile, "seeds": parameters.get("seeds"), "data": data,
        "data_location": os.environ.get("CTCBOOK_DATA", "default locations (see ctcbook.data)"),
        "device": device_description(), "ctcbook": __version__, "torch": torch.__version__,
        "torchvision": torchvision.__version__, "python": platform.python_version(), "commit": git_commit(),
        "wall_seconds": round(wall_seconds, 1), "finished_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        # every parameter's value in this execution: the page's one list of them (the notebook sets only the profile)
        "all_parameters": dict(parameters),
    }


def first_wall_seconds(previous_record: Path, parameters: dict[str, Any], seconds: float) -> float:
    """The wall time of the first execution with these parameters: carried over from the previous record beside the
    executed notebook when its parameters are the same (a re-execution from finished runs is much faster than the
    execution that trained them), else ``seconds``."""
    import json

    try:
        old = json.loads(Path(previous_record).read_text())
    except (OSError, ValueError):
        return round(seconds, 1)
    if old.get("parameters") == parameters and "first_wall_seconds" in old:
        return old["first_wall_seconds"]
    return round(seconds, 1)


def markdown(record: dict[str, Any]) -> str:
    """The provenance box (MyST ``admonition``) for a record of :func:`collect`, followed (when the record has them)
    by every parameter's value in a collapsed dropdown: the page's one full list of the parameters."""
    data = ", ".join(f"{k} `{v}`" for k, v in record["data"].items()) or "see the parameters below"
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
    ] + _parameters_dropdown(record.get("all_parameters")))


def _parameters_dropdown(parameters: dict[str, Any] | None) -> list[str]:
    if not parameters:
        return []
    return ["", "````{admonition} All parameters of this execution", ":class: dropdown", "```python",
            *(f"{name} = {value!r}" for name, value in parameters.items()), "```", "````"]


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
