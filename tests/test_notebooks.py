"""Every chapter notebook executes in the smoke profile, and source notebooks are committed without outputs."""
import json

import nbformat
import pytest

import ctcbook.runner as runner


@pytest.mark.parametrize("chapter", runner.chapters())
def test_source_notebook_has_no_outputs(chapter):
    nb = nbformat.read(runner.NOTEBOOKS / f"{chapter}.ipynb", as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


@pytest.mark.notebook
@pytest.mark.parametrize("chapter", runner.chapters())
def test_chapter_runs_in_smoke_profile(chapter, tmp_path, monkeypatch):
    monkeypatch.setenv("CTCBOOK_RUNS", str(tmp_path / "runs"))
    # A per-cell limit turns a hung cell into a failure instead of a stalled CI run.
    [out] = runner.run_chapters([chapter], "smoke", output_dir=tmp_path, log=lambda *_: None, cell_timeout=600)
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the chapter shows no figure"
    record = json.loads((tmp_path / f"{chapter}.run.json").read_text())
    assert record["profile"] == "smoke" and record["wall_seconds"] > 0
