"""Execute chapter notebooks with papermill and build the book with Jupyter Book 1.x.

A bad request (unknown chapter, profile or parameter, a value of the wrong type) is refused before any notebook runs;
a failing chapter is reported by chapter and cell, its partly executed notebook kept for inspection.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import freshness, pages, parameters, progress, provenance

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
EXECUTED = REPO / "book" / "chapters"
#: The live-widget JavaScript under ``book/_static`` (``make widgets``; ``nb_ipywidgets_js`` in ``_config.yml``).
WIDGET_JS = ("widgets/require.js", "widgets/embed-amd.js")


class ChapterFailedError(RuntimeError):
    """A chapter's notebook raised in one of its cells."""


class BookBuildError(RuntimeError):
    """Jupyter Book could not build the HTML book."""


def chapters() -> list[str]:
    """Chapter names (notebook stems in ``notebooks/``), in book order."""
    return sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def resolve_parameters(chapter: str, profile: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every parameter of ``chapter`` under ``profile`` with ``overrides``, checked as the notebook checks them."""
    if chapter not in chapters():
        raise ValueError(f"chapter must be one of {chapters()}, got {chapter!r}")
    if "profile" in (overrides or {}):
        raise parameters.ParameterError("set the profile with --profile, not -p profile")
    return parameters.resolve(chapter, {**(overrides or {}), "profile": profile})


def run_chapters(names: list[str] | None, profile: str, overrides: dict[str, Any] | None = None, *,
                 output_dir: Path = EXECUTED, log=functools.partial(print, flush=True), cell_timeout: int | None = None,
                 force: bool = False, heartbeat_seconds: float = 30.0) -> list[Path]:
    """Execute chapters (default: all) in ``profile``, skipping those up to date unless ``force``; return the
    executed notebooks. Each gets a provenance box, and ``<chapter>.run.json`` beside it its record and key.
    ``log`` flushes each line at once (a CI log or a pipe would otherwise get them in blocks)."""
    names = names or chapters()
    plan = [(name, resolve_parameters(name, profile, overrides)) for name in names]  # refuse before running
    os.environ.setdefault("CTCBOOK_RUNS", str(REPO / "runs"))
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    outputs = []
    for name, params in plan:
        out, record_path = output_dir / f"{name}.ipynb", output_dir / f"{name}.run.json"
        reasons = freshness.stale_reasons(record_path, NOTEBOOKS / f"{name}.ipynb", params, out)
        if not reasons and not force:
            log(f"[ctcbook] {name} up to date ({freshness.up_to_date_summary(record_path)}); skipped, "
                f"--force re-executes it")
            outputs.append(out)
            continue
        why = "forced" if force else "; ".join(reasons)
        log(f"[ctcbook] executing {name} (profile {profile}) -> {out} [{why}]")
        start = time.perf_counter()
        runs_used = _execute(name, {"profile": profile, **(overrides or {})}, out, log, cell_timeout,
                             heartbeat_seconds)
        seconds = time.perf_counter() - start
        record = provenance.collect(name, profile, params, seconds)
        record["first_wall_seconds"] = provenance.first_wall_seconds(record_path, params, seconds)
        pages.hide_injected_parameters(out)
        provenance.stamp(out, record)
        key = freshness.execution_key(NOTEBOOKS / f"{name}.ipynb", params, runs_used, out)
        from ..runs import atomic_write_json  # here, not at the top: it imports torch, which an up-to-date run skips

        atomic_write_json(record_path, {**record, "parameters": params, "key": key})
        log(f"[ctcbook] {name} done in {seconds:.0f} s")
        outputs.append(out)
    return outputs


def _execute(name: str, params: dict[str, Any], out: Path, log, cell_timeout: int | None,
             heartbeat_seconds: float) -> list[str]:
    """Execute one chapter with papermill, streaming its progress; return the run folders it opened."""
    import logging
    import tempfile
    from unittest import mock

    import nbformat
    import papermill
    from nbclient.exceptions import CellTimeoutError
    from papermill.exceptions import PapermillExecutionError

    source = NOTEBOOKS / f"{name}.ipynb"
    n_cells = len(nbformat.read(str(source), as_version=4).cells) + 1  # + papermill's injected cell
    fd, used_log = tempfile.mkstemp(prefix=f"ctcbook-{name}-runs-", suffix=".txt")
    os.close(fd)
    kernel_env = mock.patch.dict(os.environ, {**progress.KERNEL_ENV, "CTCBOOK_RUNS_USED": used_log})
    # the parameters cell sets only the profile, so papermill calls every other name unknown; the notebook checks them
    logging.getLogger("papermill").addFilter(_known_parameters)
    try:
        with kernel_env, progress.ChapterProgress(name, n_cells, log, heartbeat_seconds) as stream:
            papermill.execute_notebook(str(source), str(out), parameters=params, kernel_name="python3",
                                       cwd=str(REPO), progress_bar=False, execution_timeout=cell_timeout,
                                       stdout_file=stream, stderr_file=stream, on_cell_start=stream.cell_started)
        return freshness.read_runs_used(Path(used_log))
    except PapermillExecutionError as err:
        raise ChapterFailedError(f"chapter {name} failed in cell {err.cell_index} (execution count "
                                 f"{err.exec_count}): {err.ename}: {err.evalue}\nThe failed notebook is kept at "
                                 f"{out}") from None
    except CellTimeoutError:
        raise ChapterFailedError(f"chapter {name}: a cell ran longer than {cell_timeout} s and was stopped\n"
                                 f"The partly executed notebook is kept at {out}") from None
    finally:
        logging.getLogger("papermill").removeFilter(_known_parameters)
        Path(used_log).unlink(missing_ok=True)


def _known_parameters(record) -> bool:
    return not record.getMessage().startswith("Passed unknown parameter")


def build_book(*, warnings_as_errors: bool = False, path_output: Path = REPO,
               chapters_dir: Path | None = None) -> Path:
    """Build the HTML book into ``<path_output>/_build/html`` and return it; ``chapters_dir`` (e.g. a smoke run) is
    built in a copy of ``book/`` under ``path_output``, leaving the published chapters alone."""
    import shutil

    source = REPO / "book"
    if chapters_dir is not None:
        source = Path(path_output) / "book"
        shutil.rmtree(source, ignore_errors=True)
        shutil.copytree(REPO / "book", source, ignore=shutil.ignore_patterns("chapters"))
        (source / "chapters").mkdir()
        for c in chapters():
            if (Path(chapters_dir) / f"{c}.ipynb").exists():
                shutil.copy2(Path(chapters_dir) / f"{c}.ipynb", source / "chapters" / f"{c}.ipynb")
    widget_js = [p for p in WIDGET_JS if not (source / "_static" / p).is_file()]
    if widget_js:
        raise FileNotFoundError(f"widget JavaScript missing from {source / '_static'}: {widget_js}; run `make widgets` "
                                f"(the book serves it itself so live widgets work offline)")
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
