"""Chapter 5's tables with Student-t intervals and its summary of the abstract's claims, on hand-made curves."""
import pandas as pd
import pytest
from scipy import stats as st

from ctcbook import results
from ctcbook.chapters import ch5_transfer as ch5


def _seed(method, seed, test, val, source=0.9, epochs=(1, 5, 10)):
    rows = [{"method": method, "seed": seed, "target": "source", "epoch": e, "test_acc": source} for e in epochs]
    rows += [{"method": method, "seed": seed, "target": "t", "epoch": e, "probe_acc": a, "val_acc": v,
              "n_val": 10 ** 9, "knn_acc": a} for e, a, v in zip(epochs, test, val)]
    return rows


def test_seed_measures_separate_the_validation_selected_drop_from_the_max_of_test_one():
    # test peaks at epoch 5 (0.82) but validation at epoch 1: the drop is test(1) - test(10) = 0.78 - 0.80 < 0,
    # the naive drop 0.82 - 0.80 = 2 points, "best" (max of test) 82%, the selected epoch's test 78%.
    m = results.seed_measures(pd.DataFrame(_seed("b", 0, (0.78, 0.82, 0.80), (0.9, 0.7, 0.8))), ["t"])
    v = dict(zip(m.quantity, m.value))
    assert v["drop"] == pytest.approx(-2.0) and v["naive_drop"] == pytest.approx(2.0)
    assert v["best"] == pytest.approx(82.0) and v["selected"] == pytest.approx(78.0)
    assert v["final"] == pytest.approx(80.0) and v["source_final"] == pytest.approx(90.0)
    no_val = results.seed_measures(pd.DataFrame(_seed("b", 0, (0.78, 0.82, 0.80), (0.9, 0.7, 0.8))).drop(
        columns="val_acc"), ["t"], val_column="val_acc")
    assert "drop" not in set(no_val.quantity) and "final" in set(no_val.quantity)
    with pytest.raises(ValueError, match="column must be"):
        results.seed_measures(pd.DataFrame(_seed("b", 0, (0.7,) * 3, (0.7,) * 3)), ["t"], column="paper_final")


def test_a_run_probed_at_its_first_and_last_epochs_only_has_no_late_drop():
    # the secondary runs thinned by the budget rule: with epochs 1 and 80 only, a "peak" can only be the first
    # epoch, which is no late phase; the drops are left out, final and best are kept, and the table says so
    two = pd.DataFrame(_seed("control", 0, (0.85, 0.80), (0.9, 0.8), epochs=(1, 80)))
    m = results.seed_measures(two, ["t"])
    assert {"drop", "naive_drop"}.isdisjoint(m.quantity) and {"final", "best", "selected"} <= set(m.quantity)
    three = pd.DataFrame(_seed("control", 0, (0.85, 0.86, 0.80), (0.9, 0.95, 0.8), epochs=(1, 40, 80)))
    v = dict(zip(*results.seed_measures(three, ["t"])[["quantity", "value"]].T.values))
    assert v["drop"] == pytest.approx(6.0) and v["naive_drop"] == pytest.approx(6.0)
    both = pd.concat([pd.DataFrame(_seed("baseline", s, (0.8, 0.85, 0.8), (0.8, 0.9, 0.8))) for s in (0, 1)]
                     + [pd.DataFrame(_seed("control", s, (0.85, 0.80), (0.9, 0.8), epochs=(1, 10))) for s in (0, 1)])
    shown = results.shown_intervals(results.interval_table(results.seed_measures(both, ["t"])))
    drop = shown[shown.quantity == "late drop (points)"].iloc[0]
    assert drop["control: mean [95% CI]"] == "not measured" and drop["baseline: mean [95% CI]"].startswith("5.0")
    rows = results.paired_rows(results.seed_measures(both, ["t"]), "control", "baseline", ["t"])
    assert {r["quantity"] for r in rows} == {"source_final", "final"}  # no drop difference without a drop


def _methods():
    rows = []
    for s in range(4):
        rows += _seed("baseline", s, (0.70, 0.80 + 0.01 * s, 0.76), (0.5, 0.9, 0.8), source=0.95)
        rows += _seed("CTC", s, (0.70, 0.80, 0.79 + 0.005 * s), (0.5, 0.9, 0.8), source=0.93 + 0.002 * s)
    return pd.DataFrame(rows)


def test_interval_table_matches_scipy_t_and_is_shown_with_human_columns():
    m = results.seed_measures(_methods(), ["t"])
    iv = results.interval_table(m).set_index(["method", "target", "quantity"])
    finals = [79.0, 79.5, 80.0, 80.5]
    half = st.t.ppf(0.975, 3) * pd.Series(finals).std(ddof=1) / 2
    row = iv.loc[("CTC", "t", "final")]
    assert row["mean"] == pytest.approx(79.75) and row.high - row["mean"] == pytest.approx(half)
    shown = results.shown_intervals(results.interval_table(m))
    assert list(shown.columns) == ["target", "quantity", "baseline: mean [95% CI]", "CTC: mean [95% CI]"]
    assert "best probed transfer, max of test (optimistic) (%)" in set(shown.quantity)
    assert isinstance(shown.index, pd.RangeIndex)


def test_claims_summary_follows_the_intervals():
    text = ch5.claims_markdown(results.seed_measures(_methods(), ["t"]), "baseline", "CTC", ["t"])
    # source: CTC 93.0..93.6 vs 95: a cost whose interval lies below the 1-point margin
    assert "**Discriminative** (source accuracy kept, within a non-inferiority margin of 1 point declared before the " \
           "numbers): did not hold: the interval lies below the margin" in text
    # final: CTC 79.0..80.5 vs 76: a gain; drop: baseline 4..7 points, CTC 1..-0.5: reduced
    assert "**Transferable** on `t` (final transfer gain): held." in text
    assert "**Late loss mitigated** on `t` (drop reduction): held (a smaller late drop)." in text
    text = ch5.claims_markdown(results.seed_measures(_methods(), ["t"]), "CTC", "baseline", ["t"])
    assert "**Transferable** on `t` (final transfer gain): did not hold" in text
    # a copy of CTC whose last probe moves by +1, -1, +1, -1 points: the interval of the gain contains 0
    noisy = _methods()
    noisy = noisy[noisy.method == "CTC"].assign(method="copy")
    last = (noisy.target == "t") & (noisy.epoch == 10)
    noisy.loc[last, "probe_acc"] += [0.01, -0.01, 0.01, -0.01]
    both = pd.concat([_methods(), noisy], ignore_index=True)
    text = ch5.claims_markdown(results.seed_measures(both, ["t"]), "CTC", "copy", ["t"])
    assert "**Transferable** on `t` (final transfer gain): inconclusive." in text
    assert "declared before the numbers): held: the interval lies above the margin" in text


def test_paired_table_has_human_columns_and_no_index():
    rows = results.paired_rows(results.seed_measures(_methods(), ["t"]), "CTC", "baseline", ["t"])
    table = results.paired_table(rows)
    assert list(table.columns) == ["comparison", "target", "quantity", "mean difference", "95% CI", "seeds", "verdict",
                                   f"Holm over {len(rows)} rows"]
    assert table.iloc[0].quantity == "final source accuracy (points)" and table.iloc[0].verdict == "below 0"
    # Holm over the table's rows can only keep or withdraw a verdict, never invent one
    holm = table[f"Holm over {len(rows)} rows"]
    assert all(h == v or h.startswith("inconclusive") for h, v in zip(holm, table.verdict))
    assert isinstance(table.index, pd.RangeIndex)


def test_one_seed_gives_no_interval_and_says_so():
    m = results.seed_measures(_methods()[lambda d: d.seed == 0], ["t"])
    table = results.paired_table(results.paired_rows(m, "CTC", "baseline", ["t"]))
    assert set(table.verdict) == {"no interval (one seed)"} and set(table["95% CI"]) == {"[-inf, inf]"}


def test_holm_rows_withdraw_a_weak_verdict_and_the_pages_say_so():
    from ctcbook import stats
    from ctcbook.chapters import ch3_ctc, ch5_transfer

    ivs = [stats.t_interval([2.0, 2.1, 1.9, 2.05, 1.95]), stats.t_interval([0.5, 0.9, 0.1, 0.8, 0.2]),
           stats.t_interval([0.5, -0.4, 0.1, -0.2, 0.3])]
    rows = results.holm_rows([{"interval": iv, "seeds": [0, 1, 2, 3, 4], "sign": stats.sign(iv)} for iv in ivs])
    assert [(r["sign"], r["holm"], r["family"]) for r in rows] == [(1, 1, 3), (1, 0, 3), (0, 0, 3)]
    assert "not after Holm's correction over 3 comparisons" in ch3_ctc._said(rows[1])
    assert "Holm" not in ch3_ctc._said(rows[0]) and "Holm" not in ch3_ctc._said(rows[2])
    assert "not after Holm's correction over the 3 claims" in ch5_transfer._holm(rows[1])


@pytest.mark.parametrize("shift, status", [(-0.5, "held: the interval lies above the margin"),
                                           (-3.0, "did not hold: the interval lies below the margin"),
                                           (-1.0, "inconclusive: the interval reaches below the margin")])
def test_source_accuracy_is_judged_against_the_declared_margin(shift, status):
    table = pd.DataFrame([row for m in ("baseline", "CTC") for s in range(5) for row in _seed(
        m, s, (0.5, 0.6, 0.7), (0.5, 0.6, 0.7), source=0.9 + 0.002 * s + (shift / 100 + 0.001 * (-1) ** s if m == "CTC"
                                                                          else 0))])
    text = ch5.claims_markdown(results.seed_measures(table, ["t"]), "baseline", "CTC", ["t"])
    assert f"margin of {ch5.MARGIN:g} point declared before the numbers): {status}" in text
