"""Every chapter notebook executes in the smoke profile, and source notebooks are committed without outputs."""
import json

import nbformat
import pytest

import ctcbook.book.runner as runner


@pytest.mark.parametrize("chapter", runner.chapters())
def test_source_notebook_has_no_outputs(chapter):
    nb = nbformat.read(runner.NOTEBOOKS / f"{chapter}.ipynb", as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


@pytest.mark.notebook
@pytest.mark.parametrize("chapter", runner.chapters())
def test_chapter_runs_in_smoke_profile(chapter, smoke_chapters):
    folder, errors = smoke_chapters
    assert errors[chapter] is None, errors[chapter]
    nb = nbformat.read(folder / f"{chapter}.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the chapter shows no figure"
    record = json.loads((folder / f"{chapter}.run.json").read_text())
    assert record["profile"] == "smoke" and record["wall_seconds"] > 0
    box = nb.cells[1]
    assert box.cell_type == "markdown" and box.metadata.get("ctcbook_provenance")
    assert "profile **`smoke`**" in box.source and record["commit"] in box.source
