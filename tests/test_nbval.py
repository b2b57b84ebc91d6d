"""nbval as the book's reproduction check: re-executing an executed chapter against its finished runs must give its
outputs back (times, progress rates, paths, memory addresses and animation ids masked by ``nbval_sanitize.cfg``).

The chapters are those the session fixture already executed in the smoke profile (tests/conftest.py); nbval
re-executes them in a child pytest with the fixture's run store, so nothing is trained twice: the second execution
reads finished runs and cached probes, which is what a reader checking a published chapter does too (README)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

import ctcbook.book.runner as runner

HERE = Path(__file__).parent
SANITIZE = HERE / "nbval_sanitize.cfg"
pytestmark = pytest.mark.notebook


def nbval(notebooks: list[Path], runs: Path, data: Path) -> subprocess.CompletedProcess:
    """``pytest --nbval`` on ``notebooks`` in a child process (kernel: this interpreter) with ``$CTCBOOK_RUNS``;
    progress bars of the first execution are not compared (``nbval_progress.py``)."""
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "CTCBOOK_RUNS": str(runs), "CTCBOOK_DATA": str(data), "PYTHONPATH": path}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "nbval_progress",
           "--rootdir", str(notebooks[0].parent), "--nbval", "--nbval-current-env", "--nbval-sanitize-with", str(SANITIZE), "--nbval-cell-timeout", "600",
           *map(str, notebooks)]
    return subprocess.run(cmd, env=env, cwd=notebooks[0].parent, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def executed(smoke_chapters, tmp_path_factory):
    """(folder of executed chapters, run store, a data folder): nbval runs the kernel in the notebook's folder, so
    chapter 4's relative iNat21 fixture path is offered through ``$CTCBOOK_DATA/inat21`` instead."""
    folder, errors = smoke_chapters
    failed = {c: e for c, e in errors.items() if e}
    assert not failed, f"chapters failed in the smoke profile: {failed}"
    data = tmp_path_factory.mktemp("data")
    (data / "inat21").symlink_to(runner.REPO / "tests" / "fixtures" / "inat21_mini")
    if os.environ.get("CTCBOOK_DATA"):
        for entry in Path(os.environ["CTCBOOK_DATA"]).iterdir():
            if entry.name != "inat21":
                (data / entry.name).symlink_to(entry)
    return folder, folder / "runs", data


def test_executed_chapters_reproduce_their_outputs(executed):
    folder, runs, data = executed
    result = nbval([folder / f"{c}.ipynb" for c in runner.chapters()], runs, data)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]


def test_a_changed_number_fails_the_check(executed):
    """One digit of a published table changed by hand: nbval must notice."""
    folder, runs, data = executed
    chapter = runner.chapters()[-1]
    nb = nbformat.read(folder / f"{chapter}.ipynb", as_version=4)
    changed = None
    code = [c for c in nb.cells if c.cell_type == "code"]
    for k, cell in enumerate(code):
        for out in cell.outputs:
            text = out.get("data", {}).get("text/plain", "")
            digit = next((ch for ch in text if ch in "123456789"), None)
            if changed is None and digit:
                out["data"]["text/plain"] = text.replace(digit, str(int(digit) % 9 + 1), 1)
                changed = k
    assert changed is not None, f"{chapter} has no text output with a number to change"
    nbformat.write(nb, folder / f"changed_{chapter}.ipynb")  # beside the chapter: same working folder for the kernel
    try:
        result = nbval([folder / f"changed_{chapter}.ipynb"], runs, data)
    finally:
        (folder / f"changed_{chapter}.ipynb").unlink()
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert result.returncode != 0 and len(failed) == 1 and f"::Cell {changed} " in failed[0], result.stdout[-4000:]
