"""Chapter 3's runs and paired statistics (ctcbook.chapters.ch3_ctc) on hand-made curve tables with known answers."""
import pandas as pd
import pytest
from scipy import stats as st

from ctcbook import results
from ctcbook.chapters import ch3_ctc as ch3
from ctcbook.config import TrainConfig

BASE = TrainConfig(train_size=200, epochs=6, width=4)
CTC = ch3.ctc_config(BASE, stage_two_epoch=4, weight_decay_coef=2.0, lr_restart=0.1, alpha=0.5, beta=1.0, nce_k=64)


def test_chapter_configs_pair_every_method_by_seed_with_the_right_weights():
    cfg = ch3.chapter_configs(BASE, CTC, seeds=[0, 1, 2], discrim=dict(alpha=0.1, beta=1.0, instance_t=0.5, nce_t=0.4),
                              discrim_seeds=[0, 1], ablation_seeds=[2])
    assert list(cfg) == [ch3.BASELINE, ch3.CTC, ch3.SCHEDULE, ch3.DISCRIM, ch3.STAGE1, ch3.STAGE2]
    assert [c.seed for c in cfg[ch3.SCHEDULE]] == [0, 1, 2] and [c.seed for c in cfg[ch3.DISCRIM]] == [0, 1]
    sched = cfg[ch3.SCHEDULE][0]
    assert sched.objective == "ce" and sched.schedule == "two_stage" and sched.stages == CTC.stages
    assert cfg[ch3.BASELINE][0].schedule == "cosine"
    d = cfg[ch3.DISCRIM][0].ctc
    assert (d.alpha, d.beta, d.instance_t, d.nce_t, d.nce_k) == (0.1, 1.0, 0.5, 0.4, 64)
    assert (cfg[ch3.STAGE1][0].ctc.alpha, cfg[ch3.STAGE1][0].ctc.beta) == (0.5, 0.0)
    assert (cfg[ch3.STAGE2][0].ctc.alpha, cfg[ch3.STAGE2][0].ctc.beta) == (0.0, 1.0)
    # every run differs from every other (no two methods collapse into one run folder)
    every = [c for cs in cfg.values() for c in cs]
    assert len({c.replace() for c in every}) == len({repr(c) for c in every}) == len(every)
    with pytest.raises(ValueError, match="CTCConfig fields"):
        ch3.with_weights(CTC, gamma=1.0)
    with pytest.raises(ValueError, match="needs a CTC config"):
        ch3.schedule_only(BASE)


def _table(method, seed, finals, drop, source, epochs=(1, 5, 10)):
    """One seed's curve table: target "t" whose val and test peak at the middle epoch, then test falls by ``drop``
    (points) to ``finals``; source test accuracy ``source`` (%) at the last epoch."""
    rows = [{"method": method, "seed": seed, "target": "source", "epoch": e, "test_acc": a / 100}
            for e, a in zip(epochs, (50, 70, source))]
    mid = finals + drop
    rows += [{"method": method, "seed": seed, "target": "t", "epoch": e, "probe_acc": a / 100, "val_acc": v,
              "n_val": 10 ** 9} for e, a, v in zip(epochs, (mid - 3, mid, finals), (0.5, 0.9, 0.8))]
    return pd.DataFrame(rows)


def _two_methods(ctc_source):
    base = [_table("baseline", s, 80.0 + s, 2.0 + s, 95.0 + 0.1 * s) for s in range(5)]
    ctc = [_table("CTC", s, 81.0 + s, 1.0, src) for s, src in enumerate(ctc_source)]
    return pd.concat(base + ctc, ignore_index=True)


def test_paired_differences_use_the_student_t_interval_over_seeds():
    table = _two_methods([94.0, 94.5, 93.8, 94.2, 94.0])
    rows = ch3.comparisons(table, ["t"])
    src = next(r for r in rows if r["target"] == "source")
    diffs = [94.0 - 95.0, 94.5 - 95.1, 93.8 - 95.2, 94.2 - 95.3, 94.0 - 95.4]
    sem = pd.Series(diffs).std(ddof=1) / 5 ** 0.5
    assert src["interval"].mean == pytest.approx(sum(diffs) / 5)
    assert src["interval"].high - src["interval"].mean == pytest.approx(st.t.ppf(0.975, 4) * sem)
    assert src["sign"] == -1 and src["seeds"] == [0, 1, 2, 3, 4]
    drop = next(r for r in rows if r["quantity"] == "drop")
    # baseline drops 2..6 points, CTC 1 point: CTC − baseline = -1, -2, ..., -5
    assert drop["interval"].mean == pytest.approx(-3.0) and drop["sign"] == -1
    final = next(r for r in rows if r["quantity"] == "final")
    assert final["interval"].mean == pytest.approx(1.0) and final["interval"].sd == pytest.approx(0.0, abs=1e-9)
    text = ch3.headline_markdown(rows, ["t"])
    assert text.startswith("**CTC costs source accuracy against the baseline: -1.10 points, 95% CI [")
    assert "over 5 paired seeds" in text and "late drop -3.00 points" in text


def test_headline_says_inconclusive_when_the_interval_contains_zero():
    table = _two_methods([96.0, 94.0, 96.5, 94.5, 95.7])
    text = ch3.headline_markdown(ch3.comparisons(table, ["t"]), ["t"])
    assert text.startswith("**CTC changes source accuracy") and "(inconclusive: the interval contains 0)" in text


def _curve(method, seed, epochs, test, val, source=95.0):
    rows = [{"method": method, "seed": seed, "target": "source", "epoch": e, "test_acc": source / 100} for e in epochs]
    rows += [{"method": method, "seed": seed, "target": "t", "epoch": e, "probe_acc": a / 100, "val_acc": v,
              "n_val": 10 ** 9} for e, a, v in zip(epochs, test, val)]
    return pd.DataFrame(rows)


def test_a_secondary_method_is_compared_on_the_epochs_and_seeds_both_have():
    # schedule only is probed at 1, 5, 10, 15 on 5 seeds; the ablation at 1, 10, 15 on seeds 0 and 1. On the shared
    # grid the schedule-only peak (epoch 5) is not probed, so its drop must be measured from epoch 10's peak.
    sched = pd.concat([_curve(ch3.SCHEDULE, s, (1, 5, 10, 15), (70, 90, 83, 80), (0.5, 0.95, 0.9, 0.8))
                       for s in range(5)])
    abl = pd.concat([_curve(ch3.STAGE1, s, (1, 10, 15), (77, 79, 80), (0.95, 0.7, 0.8)) for s in range(2)])
    rows = ch3.comparisons(pd.concat([sched, abl], ignore_index=True), ["t"], pairs=[(ch3.STAGE1, ch3.SCHEDULE)])
    drop = next(r for r in rows if r["quantity"] == "drop")
    assert drop["seeds"] == [0, 1]
    # schedule only on {1, 10, 15}: peak 10, test 83 -> 80, drop 3; ablation: peak 1, test 77 -> 80, drop -3
    assert drop["interval"].mean == pytest.approx(-6.0)


def test_no_late_drop_is_compared_when_the_shared_grid_is_the_first_and_last_epochs():
    # the budget rule thins the secondary runs to their first and last epochs: a drop between those two is no late
    # drop, so the comparison keeps source and final transfer only
    sched = pd.concat([_table(ch3.SCHEDULE, s, 80.0, 4.0, 95.0) for s in range(5)])
    abl = pd.concat([_table(ch3.STAGE1, s, 80.0, 0.0, 95.0) for s in range(2)])
    abl = abl[abl.epoch != 5]
    rows = ch3.comparisons(pd.concat([sched, abl], ignore_index=True), ["t"], pairs=[(ch3.STAGE1, ch3.SCHEDULE)])
    assert {r["quantity"] for r in rows} == {"source_final", "final"}
    assert next(r for r in rows if r["quantity"] == "final")["seeds"] == [0, 1]


def test_findings_box_text_holds_the_computed_numbers():
    table = _two_methods([94.0, 94.5, 93.8, 94.2, 94.0])
    sched = table[table.method == ch3.BASELINE].assign(method=ch3.SCHEDULE)
    rows = ch3.comparisons(pd.concat([table, sched], ignore_index=True), ["t"])
    box = ch3.findings_markdown(rows, ["t"], "I(X;T) moved in stage 1.")
    assert box.startswith("- the CTC losses on top of their schedule (CTC − schedule only): source ") and "```" not in box
    assert box.endswith("\n- I(X;T) moved in stage 1.")
    assert "-1.10 points" in ch3.headline_markdown(rows, ["t"])


def _info(method, seed, stage1, stage2):
    return [{"method": method, "seed": seed, "epoch": e, "estimator": "renyi", "split": "source",
             "layer": "penultimate", "i_xt": x, "i_ty": 0.5}
            for e, x in ((1, 1.0), (2, 1.0 + stage1 / 2), (4, 1.0 + stage1), (6, 1.0 + stage1 + stage2))]


def test_stage_information_says_which_stage_moves_ixt():
    rows = [r for s in range(3) for r in _info("baseline", s, 0.1 * s, 0.0)]
    rows += [r for s in range(3) for r in _info("CTC", s, 0.1 * s + 0.5 + 0.01 * s, 0.001 * s)]
    out = ch3.stage_information(pd.DataFrame(rows), ["baseline", "CTC"], switch_epoch=4)
    diff = {r["stage"]: r for r in out if r["method"] == "CTC − baseline"}
    assert diff["stage 1"]["interval"].mean == pytest.approx(0.51) and diff["stage 1"]["sign"] == 1
    assert diff["stage 2"]["sign"] == 0 or abs(diff["stage 2"]["interval"].mean) < 0.01
    text = ch3.stage_information_markdown(out)
    assert "stage 1 (raises it)" in text and "stage 2 (" not in text
    table = ch3.stage_table(out)
    assert list(table.columns) == ["method", "stage", "change of I(X;T) (bits)", "95% CI (bits)", "seeds", "verdict"]


def test_stage_table_never_calls_an_interval_excluding_zero_inconclusive():
    # the regression: CTC − baseline, stage 2, -0.038 [-0.071, -0.005] bits printed with "inconclusive"
    sd = 0.033 * 3 ** 0.5 / 4.302652729911275                 # t_{0.975, 2} * sd / sqrt(3) = 0.033
    rows = [r for s in range(3) for r in _info("baseline", s, 0.0, 0.0)]
    rows += [r for s, d in enumerate((-0.038 - sd, -0.038, -0.038 + sd)) for r in _info("CTC", s, 0.0, d)]
    table = ch3.stage_table(ch3.stage_information(pd.DataFrame(rows), ["baseline", "CTC"], switch_epoch=4))
    row = table[(table.method == "CTC − baseline") & (table.stage == "stage 2")].iloc[0]
    assert row["95% CI (bits)"] == "[-0.071, -0.005]" and row["verdict"] == "falls"


def test_comparison_figure_has_t_bands_a_switch_line_and_the_legend_off_the_axes():
    from ctcbook.book import plots

    table = _two_methods([94.0, 94.5, 93.8, 94.2, 94.0])
    fig = plots.method_comparison_figure(table, ["t"], switch_epoch=5, methods=["baseline", "CTC"])
    src, tgt = fig.axes[:2]
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["baseline", "CTC", "stage switch"]
    band = src.collections[0].get_paths()[0].vertices[:, 1]
    # baseline source accuracy at the last epoch: 95.0..95.4 over 5 seeds -> mean 95.2 +- t(0.975, 4) * sd / sqrt(5)
    half = st.t.ppf(0.975, 4) * pd.Series([95.0, 95.1, 95.2, 95.3, 95.4]).std(ddof=1) / 5 ** 0.5
    assert band.max() == pytest.approx(95.2 + half, abs=1e-6)
    assert tgt.get_ylabel() == "top-1 accuracy (%)" and src.get_xlabel() == "training epoch"
    plots.close(fig)


def test_paper_protocol_columns_compare_final_and_best_without_a_validation_split():
    table = _two_methods([94.0, 94.5, 93.8, 94.2, 94.0]).rename(columns={"probe_acc": "paper_final"})
    table = table.drop(columns="val_acc")
    rows = ch3.comparisons(table, ["t"], pairs=[(ch3.CTC, ch3.BASELINE)], quantities=("final", "best"),
                           column="paper_final", val_column=None)
    assert [(r["target"], r["quantity"]) for r in rows] == [("t", "final"), ("t", "best")]
    # best: CTC peaks at 82+s, the baseline at 82+2s: CTC − baseline = -s, mean -2
    assert rows[1]["interval"].mean == pytest.approx(-2.0)


def _row(a, b, values, target="t"):
    from ctcbook import stats

    iv = stats.t_interval(values)
    return {"a": a, "b": b, "target": target, "quantity": "final", "interval": iv, "seeds": list(range(len(values))),
            "sign": stats.sign(iv), "holm": stats.sign(iv), "family": 3}


def test_the_chapter_says_which_stage_carries_the_gain():
    gain = _row(ch3.CTC, ch3.SCHEDULE, [2.0, 2.5, 1.5, 2.2, 1.8])
    up, flat = [2.0, 2.4, 1.6], [1.0, -1.0, 0.2]
    only2 = [gain, _row(ch3.STAGE1, ch3.SCHEDULE, flat), _row(ch3.STAGE2, ch3.SCHEDULE, up)]
    text = ch3.carrier(only2, "t")
    assert "stage 2's loss alone reproduces a gain and stage 1's does not, so the gain goes with stage 2" in text
    assert "3 seeds, the headline comparison 5" in text
    both = [gain, _row(ch3.STAGE1, ch3.SCHEDULE, up), _row(ch3.STAGE2, ch3.SCHEDULE, up)]
    assert "either stage's loss alone reproduces a gain" in ch3.carrier(both, "t")
    neither = [gain, _row(ch3.STAGE1, ch3.SCHEDULE, flat), _row(ch3.STAGE2, ch3.SCHEDULE, flat)]
    assert "neither stage's loss alone reproduces a gain" in ch3.carrier(neither, "t")
    none = [_row(ch3.CTC, ch3.SCHEDULE, flat), *only2[1:]]
    assert ch3.carrier(none, "t").startswith("nothing to attribute")
    assert ch3.carrier(only2[:2], "t") is None
    assert "What carries the gain on `t`" in ch3.findings_markdown(only2, ["t"])


def test_headline_panel_and_sentences_say_when_a_comparison_is_fragile():
    table = _two_methods([94.0, 94.5, 93.8, 94.2, 94.0])
    for v in ("draw1", "draw2", "draw3", "sklearn", "grid"):
        table[f"val_acc_{v}"], table[f"probe_acc_{v}"] = table.val_acc, table.probe_acc
    table["probe_acc_paper"] = table.probe_acc
    robust = ch3.headline_panel(table, ["t"])
    assert set(robust) == {"CTC − baseline: final transfer on t", "CTC − baseline: late drop on t"}
    assert all(p.robust for p in robust.values())
    # the paper's probe scores CTC's last epoch 3 points lower on seed 0: final transfer no longer above 0
    paper = (table.method == "CTC") & (table.seed == 0) & (table.epoch == 10) & (table.target == "t")
    table.loc[paper, "probe_acc_paper"] -= 0.03
    panel = ch3.headline_panel(table, ["t"])
    final = panel["CTC − baseline: final transfer on t"]
    assert not final.robust and final.signs == {**{v: 1 for v in final.signs}, "paper's probe (last epoch)": 0}
    rows = results.with_panel(ch3.comparisons(table, ["t"]), panel)
    assert "final transfer +1.00 points, 95% CI [1.00, 1.00], fragile (1 of 9 analysis variants disagree: paper's " \
           "probe (last epoch) +0.40" in ch3.headline_markdown(rows, ["t"])
    shown = results.paired_table(rows)
    # the same epoch is the drop's end: seed 0's CTC drop grows by 3 points, CTC − baseline's drop no longer below 0
    assert list(shown["analysis variants"]) == ["", "fragile", "fragile"]
