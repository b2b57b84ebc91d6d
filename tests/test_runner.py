"""The runner refuses bad requests before running anything, and reports a failing cell by chapter and cell."""
import nbformat
import pytest

import ctcbook.book.runner as runner
from ctcbook.book import parameters
from ctcbook.book.cli import main


@pytest.fixture
def no_execution(monkeypatch):
    import papermill

    def refuse(*a, **k):
        raise AssertionError("nothing may execute when the request is invalid")

    monkeypatch.setattr(papermill, "execute_notebook", refuse)


def test_notebook_parameters_cells_set_only_the_profile():  # every default lives in ctcbook.book.profiles
    import papermill

    for chapter in runner.chapters():
        params = papermill.inspect_notebook(str(runner.NOTEBOOKS / f"{chapter}.ipynb"))
        assert {name: p["default"] for name, p in params.items()} == {"profile": '"default"'}


def test_unknown_profile_is_refused(no_execution):
    with pytest.raises(ValueError, match=r"profile must be one of .*'default'.*got 'fast'"):
        runner.run_chapters(["01_tradeoff"], "fast")


def test_unknown_parameter_is_refused(no_execution):
    with pytest.raises(ValueError, match=r"no parameter 'epoch'; its parameters are .*'epochs'"):
        runner.run_chapters(["01_tradeoff"], "default", {"epoch": 3})


def test_badly_typed_parameter_is_refused(no_execution):
    with pytest.raises(ValueError, match=r"parameter 'epochs' .* got 'many'"):
        runner.run_chapters(["01_tradeoff"], "default", {"epochs": "many"})


def test_unknown_chapter_is_refused(no_execution):
    with pytest.raises(ValueError, match=r"chapter must be one of"):
        runner.run_chapters(["99_nothing"], "default")


def test_cli_reports_bad_parameter_and_exits_2(no_execution, capsys):
    assert main(["run", "01_tradeoff", "--profile", "smoke", "-p", "lr", "fast"]) == 2
    assert "parameter 'lr'" in capsys.readouterr().err


def test_parse_value_reads_yaml():
    assert parameters.parse_value("200") == 200 and parameters.parse_value("[0, 1]") == [0, 1]
    assert parameters.parse_value("null") is None and parameters.parse_value("0.05") == 0.05


def _chapter(tmp_path, monkeypatch, name: str, *sources: str):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "default"\nx = 1', metadata={"tags": ["parameters", "remove-cell"]})
    nb.cells = [params, *(nbformat.v4.new_code_cell(src) for src in sources)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, notebooks / f"{name}.ipynb")
    monkeypatch.setattr(runner, "NOTEBOOKS", notebooks)
    _register(monkeypatch, name)


def _register(monkeypatch, chapter: str) -> None:
    """A test chapter with one parameter, x (default 1), under every profile."""
    monkeypatch.setitem(parameters.PARAMETER_DEFAULTS, chapter, {"x": 1})
    monkeypatch.setitem(parameters.SPECS, "x", parameters.Spec("int"))


def test_stuck_cell_fails_the_chapter_after_the_cell_timeout(tmp_path, monkeypatch):
    _chapter(tmp_path, monkeypatch, "08_stuck", "import time\ntime.sleep(60)")
    with pytest.raises(runner.ChapterFailedError, match=r"chapter 08_stuck: a cell ran longer than 2 s"):
        runner.run_chapters(["08_stuck"], "smoke", output_dir=tmp_path / "out", log=lambda *_: None, cell_timeout=2)


def test_failing_cell_names_chapter_and_cell_and_keeps_notebook(tmp_path, monkeypatch):
    _chapter(tmp_path, monkeypatch, "09_broken", "y = x + 1", "raise RuntimeError('deliberate failure')")
    out = tmp_path / "out"
    with pytest.raises(runner.ChapterFailedError, match=r"chapter 09_broken failed in cell .*deliberate failure") as err:
        runner.run_chapters(["09_broken"], "smoke", {"x": 5}, output_dir=out, log=lambda *_: None)
    assert str(out / "09_broken.ipynb") in str(err.value)
    kept = nbformat.read(out / "09_broken.ipynb", as_version=4)
    assert any("deliberate failure" in str(c.get("outputs", "")) for c in kept.cells)


# --- progress streaming ------------------------------------------------------------------------------------------

def test_execution_streams_chapter_cell_and_progress_lines(tmp_path, monkeypatch):
    _chapter(tmp_path, monkeypatch, "07_talks",
             "from tqdm import tqdm\nimport time\nfor i in tqdm(range(30), desc='train', unit='epoch'):\n"
             "    time.sleep(0.02)",
             "import time\ntime.sleep(2.5)\nprint('after the quiet part')")
    lines = []
    runner.run_chapters(["07_talks"], "smoke", output_dir=tmp_path / "out", log=lines.append, heartbeat_seconds=1)
    text = "\n".join(lines)
    assert "[ctcbook] 07_talks cell 3/4 | running: from tqdm import tqdm" in text
    bars = [line for line in lines if "| train:" in line]
    # TQDM_MININTERVAL reaches the kernel: 30 fast iterations give the first and the final update, not 30
    assert 1 <= len(bars) <= 3 and "30/30" in bars[-1], bars
    assert all("\r" not in line for line in lines)
    assert any(line.startswith("[ctcbook] 07_talks cell 4/4 | still running (") for line in lines), text
    assert "[ctcbook] 07_talks cell 4/4 | after the quiet part" in text


# --- up-to-date skip ----------------------------------------------------------------------------------------------

RUN_CELL = ("import os\nfrom ctcbook.runs import RunStore\nrun = RunStore().open({'x': x})\n"
            "run.done or run.mark_done({'x': x})")


LIGHT_CELL = "import os\nprint(x)"  # no torch import: a quick kernel


def _executed_once(tmp_path, monkeypatch, source=LIGHT_CELL):
    """The tiny chapter 06_fresh executed once into tmp_path/out; returns that folder."""
    monkeypatch.setenv("CTCBOOK_RUNS", str(tmp_path / "runs"))
    _chapter(tmp_path, monkeypatch, "06_fresh", source)
    out = tmp_path / "out"
    runner.run_chapters(["06_fresh"], "smoke", output_dir=out, log=lambda *_: None)
    return out


@pytest.fixture
def executed_once(tmp_path, monkeypatch):
    return _executed_once(tmp_path, monkeypatch)


def _stale(out, x=1):
    from ctcbook.book import freshness

    params = runner.resolve_parameters("06_fresh", "smoke", {"x": x} if x != 1 else None)
    return freshness.stale_reasons(out / "06_fresh.run.json", runner.NOTEBOOKS / "06_fresh.ipynb", params,
                                   out / "06_fresh.ipynb")


def test_unchanged_chapter_is_skipped_and_says_why_force_re_executes(executed_once, monkeypatch):
    import papermill

    real = papermill.execute_notebook
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("an up-to-date chapter ran"))
    lines = []
    runner.run_chapters(["06_fresh"], "smoke", output_dir=executed_once, log=lines.append)
    assert len(lines) == 1 and "06_fresh up to date" in lines[0] and "0 finished run(s)" in lines[0], lines
    monkeypatch.setattr(papermill, "execute_notebook", real)
    lines = []
    runner.run_chapters(["06_fresh"], "smoke", output_dir=executed_once, log=lines.append, force=True)
    assert any("executing 06_fresh" in line and "[forced]" in line for line in lines), lines
    # the page shows the parameters once: all of them, collapsed under the provenance box; both parameter cells are
    # left out of the page (the runner tags papermill's)
    nb = nbformat.read(executed_once / "06_fresh.ipynb", as_version=4)
    tags = {tuple(c.metadata.get("tags", [])) for c in nb.cells if c.cell_type == "code"}
    assert ("injected-parameters", "remove-cell") in tags
    box = next(c for c in nb.cells if c.metadata.get("ctcbook_provenance"))
    assert "All parameters of this execution" in box.source


def test_each_cause_of_re_execution_is_named(monkeypatch, tmp_path):
    import json

    from ctcbook.book import freshness

    out = _executed_once(tmp_path, monkeypatch, RUN_CELL)  # opens a real run: RunStore.open reports it
    assert _stale(out) == []
    record = json.loads((out / "06_fresh.run.json").read_text())
    [run_path] = record["key"]["runs"]
    assert run_path.startswith(str(tmp_path / "runs"))
    assert _stale(out, x=2) == ["parameters changed: x 1 -> 2"]
    # library source
    monkeypatch.setattr(freshness, "library_sha256", lambda: "0" * 64)
    assert _stale(out) == ["library source (ctcbook/**/*.py) changed"]
    monkeypatch.undo()
    monkeypatch.setattr(runner, "NOTEBOOKS", tmp_path / "notebooks")
    _register(monkeypatch, "06_fresh")
    # a run deleted or retrained
    done = tmp_path / "runs" / run_path.rsplit("/", 1)[1] / "DONE"
    saved = done.read_bytes()
    done.unlink()
    assert any("is missing or unfinished" in r for r in _stale(out))
    done.write_bytes(saved + b" ")
    assert any("was retrained" in r for r in _stale(out))
    done.write_bytes(saved)
    # the executed notebook edited (or left behind by a failed execution)
    executed = out / "06_fresh.ipynb"
    executed.write_text(executed.read_text().replace("\n", "\n ", 1))
    assert any("executed notebook" in r for r in _stale(out))
    # the notebook source changed
    nb = nbformat.read(tmp_path / "notebooks" / "06_fresh.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("one more sentence"))
    nbformat.write(nb, tmp_path / "notebooks" / "06_fresh.ipynb")
    assert "notebook source 06_fresh.ipynb changed" in _stale(out)


def test_changed_parameter_re_executes_that_chapter_only(tmp_path, monkeypatch):
    monkeypatch.setenv("CTCBOOK_RUNS", str(tmp_path / "runs"))
    _chapter(tmp_path, monkeypatch, "06_fresh", LIGHT_CELL)
    other = nbformat.read(tmp_path / "notebooks" / "06_fresh.ipynb", as_version=4)
    nbformat.write(other, tmp_path / "notebooks" / "07_other.ipynb")
    _register(monkeypatch, "07_other")
    out = tmp_path / "out"
    runner.run_chapters(None, "smoke", output_dir=out, log=lambda *_: None)
    real = runner.resolve_parameters
    monkeypatch.setattr(runner, "resolve_parameters",
                        lambda chapter, profile, overrides=None: {**real(chapter, profile, overrides),
                                                                  **({"x": 3} if chapter == "07_other" else {})})
    lines = []
    runner.run_chapters(None, "smoke", output_dir=out, log=lines.append)
    assert "06_fresh up to date" in lines[0]
    assert "executing 07_other" in lines[1] and "parameters changed: x 1 -> 3" in lines[1], lines
