"""Shared fixtures: every chapter executed once in the smoke profile (used by the notebook and browser tests)."""
from __future__ import annotations

import pytest

import ctcbook.book.runner as runner


@pytest.fixture(scope="session")
def smoke_chapters(tmp_path_factory):
    """Execute every chapter in the smoke profile into one folder; returns (folder, {chapter: error or None}).

    Each chapter runs on its own so one failure is reported by its own test; a per-cell limit turns a hung cell into
    a failure instead of a stalled CI run."""
    out = tmp_path_factory.mktemp("smoke_book")
    mp = pytest.MonkeyPatch()
    mp.setenv("CTCBOOK_RUNS", str(out / "runs"))
    errors = {}
    try:
        for chapter in runner.chapters():
            try:
                runner.run_chapters([chapter], "smoke", output_dir=out, log=lambda *_: None, cell_timeout=600)
                errors[chapter] = None
            except runner.ChapterFailedError as err:
                errors[chapter] = str(err)
    finally:
        mp.undo()
    return out, errors
