"""The runner refuses bad requests before running anything, and reports a failing cell by chapter and cell."""
import nbformat
import pytest

import ctcbook.book.runner as runner
from ctcbook.book.cli import main
from ctcbook.book.profiles import PARAMETER_DEFAULTS


@pytest.fixture
def no_execution(monkeypatch):
    import papermill

    def refuse(*a, **k):
        raise AssertionError("nothing may execute when the request is invalid")

    monkeypatch.setattr(papermill, "execute_notebook", refuse)


def test_notebook_parameters_match_the_default_profile():
    for chapter in runner.chapters():
        params = runner.notebook_parameters(chapter)
        assert params.pop("profile") == "default"
        assert params == PARAMETER_DEFAULTS[chapter]


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
    assert runner.parse_value("200") == 200 and runner.parse_value("[0, 1]") == [0, 1]
    assert runner.parse_value("null") is None and runner.parse_value("0.05") == 0.05


def _chapter(tmp_path, monkeypatch, name: str, *sources: str):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('profile = "default"\nx = 1', metadata={"tags": ["parameters"]}),
                *(nbformat.v4.new_code_cell(src) for src in sources)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, notebooks / f"{name}.ipynb")
    monkeypatch.setattr(runner, "NOTEBOOKS", notebooks)


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
