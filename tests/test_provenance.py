"""The provenance box the runner puts under each chapter's title."""
import nbformat

from ctcbook.book import provenance


def test_record_names_profile_device_versions_and_commit():
    rec = provenance.collect("01_tradeoff", "smoke", {"seeds": [0, 1], "source": "fashion_mnist",
                                                       "targets": ["digits"], "epochs": 2}, 12.34)
    assert rec["profile"] == "smoke" and rec["seeds"] == [0, 1] and rec["wall_seconds"] == 12.3
    assert rec["data"] == {"source": "fashion_mnist", "targets": ["digits"]}
    assert rec["torch"].startswith("2.") and rec["device"]
    assert rec["commit"] == "unknown" or len(rec["commit"].split("+")[0]) == 12
    text = provenance.markdown(rec)
    assert text.startswith("```{admonition} Provenance") and text.endswith("```")
    assert "profile **`smoke`**" in text and "this execution: 0.2 min (" in text and "source `fashion_mnist`" in text
    # every parameter once, collapsed (papermill's injected cell holds only the values that differ from the defaults)
    assert "````{admonition} All parameters of this execution\n:class: dropdown\n```python\n" in text
    assert "\nepochs = 2\n" in text and "\ntargets = ['digits']\n" in text and text.count("epochs = ") == 1
    text = provenance.markdown({**rec, "first_wall_seconds": 600.0})
    assert "0.2 min, reusing finished training runs" in text and "took 10.0 min" in text


def test_first_wall_seconds_carries_over_for_the_same_parameters(tmp_path):
    import json

    path = tmp_path / "c.run.json"
    assert provenance.first_wall_seconds(path, {"a": 1}, 12.0) == 12.0
    path.write_text(json.dumps({"parameters": {"a": 1}, "first_wall_seconds": 500.0}))
    assert provenance.first_wall_seconds(path, {"a": 1}, 12.0) == 500.0
    assert provenance.first_wall_seconds(path, {"a": 2}, 12.0) == 12.0


def test_stamp_goes_under_the_title_and_replaces_an_earlier_box(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"), nbformat.v4.new_code_cell("x = 1")]
    path = tmp_path / "c.ipynb"
    nbformat.write(nb, str(path))
    rec = provenance.collect("c", "smoke", {"seeds": [0]}, 1.0)
    provenance.stamp(path, rec)
    provenance.stamp(path, {**rec, "profile": "default"})
    cells = nbformat.read(str(path), as_version=4).cells
    assert [c.cell_type for c in cells] == ["markdown", "markdown", "code"]
    assert "profile **`default`**" in cells[1].source and cells[0].source == "# Title"
    assert not list(tmp_path.glob(".*.tmp"))
