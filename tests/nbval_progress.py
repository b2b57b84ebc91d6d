"""pytest plugin for the nbval reproduction check (``-p nbval_progress``): progress bars and wall-clock times that a
chapter glues are not results.

A chapter's first execution writes progress bars (tqdm, on stderr) while it trains and probes; a re-execution from
the finished runs has nothing to train and writes none. This plugin drops the stderr streams from the stored
(reference) outputs before nbval compares, so stdout, tables, text and figures must still match, and any stderr the
re-execution writes (work done again: a run retrained, a probe recomputed) fails the cell as an unexpected output.
Values glued for the text under names ending in ``_seconds`` or ``_minutes`` (wall-clock times) are left out of the
comparison on both sides; times printed as text are masked by ``nbval_sanitize.cfg``."""
from __future__ import annotations

import re

TIME_RECORD = re.compile(r"_(seconds|minutes)$")


def _is_time_record(output) -> bool:
    name = (output.get("metadata") or {}).get("scrapbook", {}).get("name", "")
    return bool(TIME_RECORD.search(name))


def pytest_configure(config):
    from nbval.plugin import IPyNbCell

    original = IPyNbCell.compare_outputs
    if getattr(original, "ctcbook_times_skipped", False):
        return

    def compare_outputs(self, test, ref, skip_compare=None):
        return original(self, [o for o in test if not _is_time_record(o)],
                        [o for o in ref if not _is_time_record(o)], skip_compare)

    compare_outputs.ctcbook_times_skipped = True
    IPyNbCell.compare_outputs = compare_outputs


def pytest_collection_modifyitems(items):
    for item in items:
        cell = getattr(item, "cell", None)
        if cell is not None and "outputs" in cell:
            cell.outputs = [o for o in cell.outputs if not (o.get("output_type") == "stream"
                                                            and o.get("name") == "stderr")]
