"""Execute chapter notebooks with papermill and build the book with Jupyter Book 1.x.

Everything that can be wrong with a request (unknown chapter, profile or parameter, a value of the wrong type) is
refused before any notebook runs. A chapter whose cell raises is reported by chapter and cell, and its partly
executed notebook is kept for inspection.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from . import parameters, provenance
from ..runs import atomic_write_json

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
EXECUTED = REPO / "book" / "chapters"


class ChapterFailedError(RuntimeError):
    """A chapter's notebook raised in one of its cells."""


class BookBuildError(RuntimeError):
    """Jupyter Book could not build the HTML book."""


def chapters() -> list[str]:
    """Chapter names (notebook stems in ``notebooks/``), in book order."""
    return sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def notebook_parameters(chapter: str) -> dict[str, Any]:
    """Names and default values of the chapter notebook's parameters cell."""
    import papermill

    params = papermill.inspect_notebook(str(NOTEBOOKS / f"{chapter}.ipynb"))
    return {name: _literal(p["default"]) for name, p in params.items()}


def parse_value(text: str) -> Any:
    """A command-line parameter value: YAML scalars and lists (``200``, ``0.05``, ``[0,1]``, ``null``, ``abc``)."""
    return yaml.safe_load(text)


def _literal(source: str) -> Any:
    import ast

    try:
        return ast.literal_eval(source)
    except (ValueError, SyntaxError):
        return source


def resolve_parameters(chapter: str, profile: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The parameters papermill injects into ``chapter``: the profile's values and ``overrides``, resolved and
    checked by :func:`ctcbook.book.parameters.resolve_request` -- the same function the notebook's first cell
    calls, so a chapter run here and one run by papermill directly get identical values. Raises
    :class:`~ctcbook.book.parameters.ParameterError` (a ValueError) naming the bad chapter, profile, parameter or
    value."""
    if chapter not in chapters():
        raise ValueError(f"chapter must be one of {chapters()}, got {chapter!r}")
    defaults = None
    if chapter not in parameters.PARAMETER_DEFAULTS:  # a notebook outside the book's profiles (tests)
        defaults = {k: v for k, v in notebook_parameters(chapter).items() if k != "profile"}
    return parameters.resolve_request(chapter, profile, overrides, defaults)


def run_chapters(names: list[str] | None, profile: str, overrides: dict[str, Any] | None = None, *,
                 output_dir: Path = EXECUTED, log=print, cell_timeout: int | None = None) -> list[Path]:
    """Execute chapters (default: all) in ``profile``; return the executed notebooks' paths.

    ``cell_timeout``: seconds one cell may run before the chapter fails (None: no limit, for long GPU training).

    Runs live in ``$CTCBOOK_RUNS`` (default ``<repo>/runs``), so finished training is reused across executions.
    Each executed notebook gets a provenance box under its title (:mod:`ctcbook.book.provenance`), and beside it
    ``<chapter>.run.json`` records the same (profile, data, device, seeds, versions, commit, wall time) and the
    parameters.
    """
    import papermill
    from nbclient.exceptions import CellTimeoutError
    from papermill.exceptions import PapermillExecutionError

    names = names or chapters()
    plan = [(name, resolve_parameters(name, profile, overrides)) for name in names]  # refuse before running
    os.environ.setdefault("CTCBOOK_RUNS", str(REPO / "runs"))
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    outputs = []
    for name, params in plan:
        out = output_dir / f"{name}.ipynb"
        log(f"[ctcbook] executing {name} (profile {profile}) -> {out}")
        start = time.perf_counter()
        try:
            papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters=params,
                                       kernel_name="python3", cwd=str(REPO), progress_bar=False,
                                       execution_timeout=cell_timeout)
        except PapermillExecutionError as err:
            raise ChapterFailedError(f"chapter {name} failed in cell {err.cell_index} (execution count "
                                     f"{err.exec_count}): {err.ename}: {err.evalue}\nThe failed notebook is kept at "
                                     f"{out}") from None
        except CellTimeoutError:
            raise ChapterFailedError(f"chapter {name}: a cell ran longer than {cell_timeout} s and was stopped\n"
                                     f"The partly executed notebook is kept at {out}") from None
        seconds = time.perf_counter() - start
        record = provenance.collect(name, profile, {**notebook_parameters(name), **params}, seconds)
        record["first_wall_seconds"] = provenance.first_wall_seconds(output_dir / f"{name}.run.json", params,
                                                                     seconds)
        provenance.stamp(out, record)
        atomic_write_json(output_dir / f"{name}.run.json", {**record, "parameters": params})
        log(f"[ctcbook] {name} done in {seconds:.0f} s")
        outputs.append(out)
    return outputs


def build_book(*, warnings_as_errors: bool = False, path_output: Path = REPO,
               chapters_dir: Path | None = None) -> Path:
    """Build the HTML book from ``book/`` into ``<path_output>/_build/html``; return that folder.

    Executed chapters come from ``book/chapters`` (default) or from ``chapters_dir`` (e.g. a smoke-profile run for
    the browser test), in which case ``book/`` is copied into ``<path_output>/book`` with those chapters, so the
    published chapters in ``book/chapters`` are left alone. Notebooks are not executed here
    (``execute_notebooks: off``): run :func:`run_chapters` first.
    """
    import shutil

    source = REPO / "book"
    if chapters_dir is not None:
        source = Path(path_output) / "book"
        if source.exists():
            shutil.rmtree(source)
        shutil.copytree(REPO / "book", source, ignore=shutil.ignore_patterns("chapters"))
        (source / "chapters").mkdir()
        for c in chapters():
            if (Path(chapters_dir) / f"{c}.ipynb").exists():
                shutil.copy2(Path(chapters_dir) / f"{c}.ipynb", source / "chapters" / f"{c}.ipynb")
    missing = [c for c in chapters() if not (source / "chapters" / f"{c}.ipynb").exists()]
    if missing:
        raise FileNotFoundError(f"chapters not executed yet: {missing}; run `ctcbook run --profile default` first")
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(source), "--config",
           str(REPO / "_config.yml"), "--toc", str(source / "_toc.yml"), "--path-output", str(path_output)]
    if warnings_as_errors:
        cmd += ["-W", "-n", "--keep-going"]
    if subprocess.run(cmd).returncode != 0:
        raise BookBuildError(f"jupyter-book build failed (command: {' '.join(cmd)}); see its output above")
    return Path(path_output) / "_build" / "html"
