"""The pages' cell tags: the authors' tags in the chapter notebooks and papermill's injected cell left out."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from ctcbook.book.pages import hide_injected_parameters

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_each_chapter_as_executed_leaves_parameter_cells_out_and_hides_its_set_up(tmp_path, path):
    nb = nbformat.read(str(path), as_version=4)
    params = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    injected = nbformat.v4.new_code_cell('# Parameters\nprofile = "smoke"\n',
                                         metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(params + 1, injected)  # where papermill puts it
    out = tmp_path / path.name
    nbformat.write(nb, str(out))
    hide_injected_parameters(out)
    hide_injected_parameters(out)  # re-runnable: the tag is added once
    cells = nbformat.read(str(out), as_version=4).cells
    tags = [c.metadata.get("tags", []) for c in cells]
    assert tags[params] == ["parameters", "remove-cell"] and tags[params + 1] == ["injected-parameters", "remove-cell"]
    for cell, t in zip(cells, tags):  # every value is listed once, under the provenance box; set-up code collapsed
        if cell.cell_type == "code" and cell.source.lstrip().startswith(("import ", "from ")):
            assert {"hide-input", "remove-input", "remove-cell"} & set(t), cell.source[:80]
        if "remove-output" in t:  # a live widget, empty on the static page: no code without output either
            assert {"hide-input", "remove-input", "remove-cell"} & set(t), cell.source[:80]


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
