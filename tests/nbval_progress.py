"""pytest plugin for the nbval reproduction check (``-p nbval_progress``): progress bars are not results.

A chapter's first execution writes progress bars (tqdm, on stderr) while it trains and probes; a re-execution from
the finished runs has nothing to train and writes none. This plugin drops the stderr streams from the stored
(reference) outputs before nbval compares, so stdout, tables, text and figures must still match, and any stderr the
re-execution writes (work done again: a run retrained, a probe recomputed) fails the cell as an unexpected output."""
from __future__ import annotations


def pytest_collection_modifyitems(items):
    for item in items:
        cell = getattr(item, "cell", None)
        if cell is not None and "outputs" in cell:
            cell.outputs = [o for o in cell.outputs if not (o.get("output_type") == "stream"
                                                            and o.get("name") == "stderr")]
