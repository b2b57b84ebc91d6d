"""Chapter 1's late drop, one rule: peak chosen on validation, t intervals."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from ctcbook.chapters import ch1_tradeoff as tradeoff

# Three seeds, one target. Validation peaks at epoch 3 on every seed; the test curve is noisy, with its maximum at
# epoch 2 on seed 0 (a spike the validation split does not see).
VAL = {0: [0.50, 0.60, 0.80, 0.70], 1: [0.50, 0.60, 0.80, 0.75], 2: [0.50, 0.60, 0.80, 0.72]}
TEST = {0: [0.50, 0.90, 0.80, 0.70], 1: [0.50, 0.60, 0.78, 0.75], 2: [0.50, 0.60, 0.79, 0.74]}
SOURCE = {0: [0.6, 0.8, 0.9, 0.95], 1: [0.6, 0.8, 0.91, 0.94], 2: [0.62, 0.8, 0.9, 0.96]}
# clean training accuracy: seeds 0 and 1 fit (>= 99%) at epoch 10, seed 2 never does
CLEAN = {0: [0.7, 0.95, 0.99, 1.0], 1: [0.7, 0.96, 0.995, 1.0], 2: [0.7, 0.9, 0.95, 0.98]}


def _table():
    rows = []
    for seed in VAL:
        for i, epoch in enumerate([1, 5, 10, 15]):
            rows.append({"seed": seed, "epoch": epoch, "target": "source", "test_acc": SOURCE[seed][i],
                         "clean_train_acc": CLEAN[seed][i]})
            rows.append({"seed": seed, "epoch": epoch, "target": "t", "probe_acc": TEST[seed][i],
                         "val_acc": VAL[seed][i], "n_val": 10 ** 9, "n_test": 1000})
    return pd.DataFrame(rows)


def test_late_drop_is_chosen_on_validation_and_differs_from_the_naive_drop():
    d = tradeoff.late_drops(_table())["t"]
    assert [d.per_seed[s].peak_epoch for s in (0, 1, 2)] == [10, 10, 10]
    drops = np.array([0.10, 0.03, 0.05])  # test at epoch 10 minus test at epoch 15
    assert d.selected.mean == pytest.approx(drops.mean())
    half = st.t.ppf(0.975, 2) * drops.std(ddof=1) / np.sqrt(3)
    assert (d.selected.low, d.selected.high) == pytest.approx((drops.mean() - half, drops.mean() + half))
    naive = np.array([0.20, 0.03, 0.05])  # seed 0's maximum is the epoch-5 spike
    assert d.naive.mean == pytest.approx(naive.mean()) and d.naive.mean > d.selected.mean


def test_source_accuracy_at_first_peak_and_last_with_paired_gains():
    table = _table()
    src = tradeoff.source_accuracy(table, tradeoff.late_drops(table))["t"]
    assert src["first"].mean == pytest.approx(100 * np.mean([0.6, 0.6, 0.62]))
    assert src["peak"].mean == pytest.approx(100 * np.mean([0.9, 0.91, 0.9]))  # the validation peak, epoch 10
    late = 100 * (np.array([0.95, 0.94, 0.96]) - np.array([0.9, 0.91, 0.9]))
    assert src["late_rise"].mean == pytest.approx(late.mean())
    assert src["late_rise"].sd == pytest.approx(late.std(ddof=1))  # paired per seed, not two separate spreads


def _shown(table):
    drops = tradeoff.late_drops(table)
    source = tradeoff.source_accuracy(table, drops)
    fits = tradeoff.fit_epochs(table)
    terminal = tradeoff.terminal_drops(table, fits)
    holm = tradeoff.holm_signs(drops, terminal)
    return (tradeoff.drop_table(drops, source, terminal, holm, {}),
            tradeoff.drop_markdown(drops, source, terminal, fits, holm, {}))


def test_terminal_drop_starts_at_each_seeds_fit_and_skips_seeds_that_never_fit():
    table = _table()
    fits = tradeoff.fit_epochs(table)
    assert fits == {0: 10, 1: 10, 2: None}
    term = tradeoff.terminal_drops(table, fits)["t"]
    assert term.n == 2 and term.mean == pytest.approx(100 * np.mean([0.10, 0.03]))
    never = table.assign(clean_train_acc=0.5)
    assert tradeoff.terminal_drops(never, tradeoff.fit_epochs(never)) == {"t": None}


def test_table_and_text_name_the_quantities_and_follow_the_interval():
    shown, text = _shown(_table())
    assert list(shown.index) == [0] and "late drop (points)" in shown and "max-of-test drop, naive (points)" in shown
    assert shown.loc[0, "late drop (points)"] == pytest.approx(6.0)
    assert shown.loc[0, "terminal drop (points)"] == pytest.approx(6.5)
    assert shown.loc[0, "late drop, Holm over 1"] == "inconclusive"
    assert shown.loc[0, "peak epoch per seed (chosen on validation)"] == "10, 10, 10"
    # 6.00 points, t interval over 3 seeds (t 4.30, sd 3.61) [-2.96, 14.96]: contains 0, so inconclusive
    assert "late drop on t: 6.00 points, 95% CI [-2.96, 14.96] over 3 seeds: inconclusive" in text
    assert "naive max-of-test drop" in text and "adds 3.33 points" in text
    assert "fit epochs per seed: 10, 10, never" in text and "Corrected for the family of targets (Holm)" in text
    # the same curves with a tighter drop: the verdict follows the interval
    tight = _table()
    tight.loc[(tight.target == "t") & (tight.epoch == 15), "probe_acc"] = [0.70, 0.68, 0.69]
    shown, text = _shown(tight)
    assert "transfer falls after its validation-selected peak" in text
    assert shown.loc[0, "late drop, Holm over 1"] == "drop"


def test_a_table_without_validation_accuracy_is_refused():
    table = _table()
    table.loc[table.target == "t", "val_acc"] = np.nan
    with pytest.raises(ValueError, match="val_acc"):
        tradeoff.late_drops(table)


def _with_variants(table, flip):
    """``table`` with every probe variant's columns equal to the declared ones, but validation draw 1 reading the
    ``flip`` seeds' test curves as flat after the peak (no drop there)."""
    out = table.copy()
    targets = out.target != "source"
    for v in ("draw1", "draw2", "draw3", "sklearn", "grid"):
        out.loc[targets, f"val_acc_{v}"], out.loc[targets, f"probe_acc_{v}"] = out.val_acc, out.probe_acc
    out.loc[targets, "probe_acc_paper"] = out.probe_acc
    late = targets & out.seed.isin(flip) & (out.epoch == 15)
    out.loc[late, "probe_acc_draw1"] = out.loc[targets & out.seed.isin(flip) & (out.epoch == 10)].probe_acc.values
    return out


def test_panel_marks_a_verdict_fragile_when_one_variant_disagrees():
    table = _table().assign(n_val=500)
    fits = tradeoff.fit_epochs(table)
    robust = tradeoff.drop_panel(_with_variants(table, []), fits)
    assert set(robust) == {"late drop on t", "terminal drop on t"} and robust["late drop on t"].robust
    assert len(robust["late drop on t"].estimates) == 9
    # every seed drops 5 points after the peak; validation draw 1 sees seed 0 flat: 3.33 [-3.84, 10.5], contains 0
    steady = _table().assign(n_val=500)
    steady.loc[steady.target == "t", "probe_acc"] = steady.loc[steady.target == "t"].apply(
        lambda r: 0.80 if r.epoch == 10 else 0.75 if r.epoch == 15 else 0.5, axis=1)
    panel = tradeoff.drop_panel(_with_variants(steady, [0]), tradeoff.fit_epochs(steady))
    late = panel["late drop on t"]
    assert late.signs["declared"] == 1 and late.signs["validation draw 1"] == 0 and not late.robust
    drops = tradeoff.late_drops(steady)
    terminal = tradeoff.terminal_drops(steady, tradeoff.fit_epochs(steady))
    text = tradeoff.drop_markdown(drops, tradeoff.source_accuracy(steady, drops), terminal,
                                  tradeoff.fit_epochs(steady), tradeoff.holm_signs(drops, terminal), panel)
    assert "The verdict is fragile (1 of 9 analysis variants disagree: validation draw 1 +3.33" in text
    shown = tradeoff.drop_table(drops, tradeoff.source_accuracy(steady, drops), terminal,
                                tradeoff.holm_signs(drops, terminal), panel)
    assert shown.loc[0, "late drop, analysis variants"] == "fragile"


def test_panel_tie_variants_break_a_tie_their_own_way():
    table = _table().assign(n_val=10 ** 9)
    t = table.target == "t"
    table.loc[t, "val_acc"] = table.loc[t].epoch.map({1: 0.5, 5: 0.8, 10: 0.7, 15: 0.8})   # tie: epochs 5 and 15
    table.loc[t, "probe_acc"] = table.loc[t].epoch.map({1: 0.5, 5: 0.8, 10: 0.7, 15: 0.75}) + 0.01 * table.loc[t].seed
    late = tradeoff.drop_panel(_with_variants(table, []), tradeoff.fit_epochs(table))["late drop on t"]
    assert late.estimates["declared"].mean == 0.0 and late.estimates["ties to the latest epoch"].mean == 0.0
    assert late.estimates["ties to the earliest epoch"].mean == pytest.approx(5.0)
