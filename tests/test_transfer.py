"""The trade-off picture (ctcbook.book.plots.tradeoff_picture) on small hand-made probe tables; the results tables
are tested in test_ch5_intervals.py."""
import pandas as pd
import pytest

from ctcbook import results
from ctcbook.book import plots


def _curves(offset: float) -> pd.DataFrame:
    rows = []
    for seed, curve in ((0, [0.50, 0.70, 0.60]), (1, [0.55, 0.65, 0.62])):
        for epoch, (src, acc) in enumerate(zip([0.6, 0.8, 0.9], curve), start=1):
            rows.append({"seed": seed, "epoch": epoch, "target": "source", "test_acc": src})
            rows.append({"seed": seed, "epoch": epoch, "target": "t", "probe_acc": acc + offset, "knn_acc": acc})
    return pd.DataFrame(rows)


def test_tradeoff_picture_draws_one_curve_per_method():
    table = results.method_table({"baseline": _curves(0.0), "ctc": _curves(0.1)})
    fig = plots.tradeoff_picture(table, ["t"])
    ax = fig.axes[0]
    assert ax.get_xlabel() == "source test accuracy (%)" and "(%)" in ax.get_ylabel()
    assert [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")][:1] == ["baseline"]
    with pytest.raises(ValueError, match="at least one method"):
        results.method_table({})
