"""Chapter 5's results tables (ctcbook.chapters.ch5_transfer) on small hand-made probe tables."""
import pandas as pd
import pytest

from ctcbook.chapters import ch5_transfer as transfer


def _curves(offset: float) -> pd.DataFrame:
    rows = []
    for seed, curve in ((0, [0.50, 0.70, 0.60]), (1, [0.55, 0.65, 0.62])):
        for epoch, (src, acc) in enumerate(zip([0.6, 0.8, 0.9], curve), start=1):
            rows.append({"seed": seed, "epoch": epoch, "target": "source", "test_acc": src})
            rows.append({"seed": seed, "epoch": epoch, "target": "t", "probe_acc": acc + offset, "knn_acc": acc})
    return pd.DataFrame(rows)


def test_results_table_gives_final_and_best_over_seeds():
    table = transfer.method_table({"baseline": _curves(0.0), "ctc": _curves(0.1)})
    res = transfer.results_table(table, ["t"]).set_index(["method", "measure"])
    base = res.loc[("baseline", "linear probe")]
    assert base.final_mean == pytest.approx(61.0) and base.final_std == pytest.approx(1.41421356, rel=1e-6)
    assert base.best_mean == pytest.approx(67.5) and base.best_epochs == "2, 2" and base.seeds == 2
    assert base.source_final == pytest.approx(90.0)
    assert res.loc[("ctc", "linear probe")].final_mean == pytest.approx(71.0)
    assert res.loc[("ctc", "kNN (k=20)")].final_mean == pytest.approx(61.0)
    wide = transfer.formatted(transfer.results_table(table, ["t"]))
    assert list(wide.columns) == ["baseline: final (%)", "baseline: best (%)", "ctc: final (%)", "ctc: best (%)"]
    assert wide.loc[("t", "linear probe"), "ctc: final (%)"] == "71.0 ± 1.4"


def test_tradeoff_picture_draws_one_curve_per_method():
    table = transfer.method_table({"baseline": _curves(0.0), "ctc": _curves(0.1)})
    fig = transfer.tradeoff_picture(table, ["t"])
    ax = fig.axes[0]
    assert ax.get_xlabel() == "source test accuracy (%)" and "(%)" in ax.get_ylabel()
    assert [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")][:1] == ["baseline"]
    with pytest.raises(ValueError, match="at least one method"):
        transfer.method_table({})


def test_differences_markdown_states_the_gap_and_the_spread():
    table = transfer.method_table({"baseline": _curves(0.0), "ctc": _curves(0.1)})
    text = transfer.differences_markdown(transfer.results_table(table, ["t"]), "baseline", "ctc")
    assert "`t`, linear probe: ctc 71.0 ± 1.4% vs baseline 61.0 ± 1.4% at the final epoch (+10.0 points, larger than" \
           in text
    assert "`t`, kNN (k=20): ctc 61.0" in text and "(+0.0 points, within" in text
