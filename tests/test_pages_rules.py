"""ctcbook.book.pages: each rule that tags an executed chapter's cells, and the result on the real chapters."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from ctcbook.book.pages import reader_tag, tag_notebook

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def code(src, tags=()):
    return nbformat.v4.new_code_cell(src, metadata={"tags": list(tags)})


@pytest.mark.parametrize("src", [
    "fig = plots.f(t)\ndisplay(fig)\nplots.close(fig)",                          # figure
    "display(ft.summary_table(results).style.hide(axis='index'))",               # a table
    "per_class = ft.per_class(exp)\ndisplay(per_class.style.hide(axis='index'))",
    "display(Markdown(report(t)))",                                              # a findings list
    "rows = []\nfor k, g in m.items():\n    rows.append({'k': k})\ndisplay(pd.DataFrame(rows))\nglue('a', 1)",
])
def test_display_plumbing_is_collapsed(src):
    assert reader_tag(code(src)) == "hide-input"


@pytest.mark.parametrize("src", [
    "display(fig)\nprint(run.name)",                                   # prints what the library did: stays
    "results = exp.results(methods, seeds)\nprint(len(results))",      # the work itself
    "rows = []\nfor k in ks:\n    train(k)\ndisplay(rows)",             # a loop that trains
    "for k in ks:\n    rows.append(k)\nelse:\n    train()\ndisplay(rows)",
])
def test_cells_that_do_work_stay_visible(src):
    assert reader_tag(code(src)) is None


def test_glue_cells_with_loops_are_collapsed():
    assert reader_tag(code("a = t.iloc[0]\nglue('a', a, display=False)")) == "hide-input"
    assert reader_tag(code("for k in ks:\n    glue(k, v[k], display=False)")) == "hide-input"
    assert reader_tag(code("for k in ks:\n    glue(k, fit(v[k]), display=False)\n    fit(k)")) is None


def test_reports_of_builtins_only_are_collapsed():
    src = "chapter_seconds = time.perf_counter() - chapter_start\nprint(f'{chapter_seconds:.0f} s on {device}')"
    assert reader_tag(code(src)) == "hide-input"
    assert reader_tag(code("print(f'{len(rows)} rows, {sum(x):.1f} s')")) == "hide-input"
    # a library call inside the report: the code says where the number comes from, so it stays
    assert reader_tag(code("s = sum(r['train_seconds'] for r in run.metrics())\nprint(s)")) is None


def test_live_widget_cells_show_no_code_without_output():
    assert reader_tag(code("explore.live_explorer(view)", ["remove-output"])) == "hide-input"
    assert reader_tag(code("explore.live_explorer(view)", ["remove-output", "hide-cell"])) is None


def test_author_tags_win_and_parameters_show_once():
    for tag in ("remove-input", "remove-cell", "hide-input", "hide-cell", "hide-output"):
        assert reader_tag(code("display(fig)", [tag])) is None
    assert reader_tag(code("x = 1", ["parameters"])) == "remove-cell"
    assert reader_tag(code("x = 2", ["injected-parameters"])) == "remove-cell"  # all values: under the provenance box


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_each_chapter_as_executed_leaves_parameter_cells_out_and_hides_its_set_up(tmp_path, path):
    nb = nbformat.read(str(path), as_version=4)
    params = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    injected = nbformat.v4.new_code_cell('# Parameters\nprofile = "default"\n',
                                         metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(params + 1, injected)  # where papermill puts it
    out = tmp_path / path.name
    nbformat.write(nb, str(out))
    tag_notebook(out)
    again = tag_notebook(out)
    assert again == 0  # re-runnable: tags are added once
    cells = nbformat.read(str(out), as_version=4).cells
    tags = [set(c.metadata.get("tags", [])) for c in cells]
    shown = [t for t in tags if {"parameters", "injected-parameters"} & t and not {"remove-cell"} & t]
    assert not shown  # every value is listed once, collapsed, under the provenance box (test_provenance.py)
    for cell, t in zip(cells, tags):
        if cell.cell_type == "code" and cell.source.lstrip().startswith(("import ", "from ")):
            assert t & {"hide-input", "remove-input", "remove-cell"}, cell.source[:80]


def test_table_has_no_index_fixed_decimals_and_the_same_html_every_time():
    import pandas as pd

    from ctcbook.book.pages import table

    df = pd.DataFrame({"method": ["a", "b"], "top-1 (%)": [91.234567, 80.0]}, index=[7, 8])
    html = table(df).to_html()
    assert html == table(df.copy()).to_html()  # no random id: two executions give the same page (nbval)
    assert "91.23" in html and "91.2346" not in html
    assert ">7<" not in html and ">8<" not in html  # the index is hidden
    other = table(df.assign(extra=1)).to_html()
    ids = {h.split('id="T_')[1].split("_")[0] for h in (html, other)}
    assert len(ids) == 2  # two tables on one page do not share an id
