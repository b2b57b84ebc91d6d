"""Chapter 1's appendix "How the default was chosen": the candidates CSV and the budget arithmetic."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ctcbook.chapters import ch1_tradeoff as tradeoff

ROW = dict(candidate="w16_flip", description="ResNet-8 w16, flip only", epochs=60, seed=0, final_quarter_mean=1.0,
           final_quarter_min=1.0, last=1.0, seconds_per_epoch=0.51, wall_seconds=71.0)


def test_merge_adds_rows_replaces_the_same_key_and_keeps_the_others(tmp_path):
    path = tmp_path / "c.csv"
    tradeoff.merge_candidates(path, [ROW, {**ROW, "candidate": "w16_pad1", "final_quarter_mean": 0.9873}])
    merged = tradeoff.merge_candidates(path, [{**ROW, "final_quarter_mean": 0.995, "note": "again"},
                                              {**ROW, "epochs": 100}])
    back = tradeoff.read_candidates(path)
    assert len(back) == 3 and list(back.columns) == list(tradeoff.CANDIDATE_COLUMNS)
    again = back[(back.candidate == "w16_flip") & (back.epochs == 60)].iloc[0]
    assert again.final_quarter_mean == 0.995 and again.note == "again"  # the same key: replaced
    pad = back[back.candidate == "w16_pad1"].iloc[0]
    assert not pad.meets_fit and bool(again.meets_fit)  # filled in from the 99% rule
    assert [p.name for p in tmp_path.iterdir()] == ["c.csv"]  # no temporary file left behind
    with pytest.raises(ValueError, match="unknown"):
        tradeoff.merge_candidates(path, [{**ROW, "colour": "red"}])
    assert len(tradeoff.read_candidates(path)) == 3  # a refused row leaves the file as it was


def test_the_shipped_csv_holds_the_leads_measurements():
    df = tradeoff.read_candidates()
    row = df[(df.candidate == "w16_pad1") & (df.epochs == 100)].iloc[0]
    assert (row.final_quarter_mean, row.final_quarter_min, row.last) == (0.9958, 0.9920, 0.9965)
    flip = df[(df.candidate == "w16_flip") & (df.epochs == 60)].iloc[0]
    assert flip.final_quarter_mean == 1.0 and bool(flip.meets_fit)
    assert not df[(df.candidate == "w16_cropflip") & (df.epochs == 60)].iloc[0].meets_fit


def test_the_benchmark_script_adds_a_row(tmp_path):
    path = tmp_path / "c.csv"
    script = Path(__file__).parents[1] / "benchmarks" / "fit_candidates.py"
    subprocess.run([sys.executable, str(script), "--csv", str(path), "--add", "w24_pad1", "60", "0", "0.9921",
                    "0.989", "0.993", "0.62", "85", "busy machine"], check=True, capture_output=True,
                   env={"PYTHONPATH": str(Path(__file__).parents[1]), "PATH": "/usr/bin:/bin"})
    row = tradeoff.read_candidates(path).iloc[0]
    assert row.candidate == "w24_pad1" and row.final_quarter_mean == 0.9921 and row.note == "busy machine"


def test_budget_estimate_is_runs_times_epochs_times_cost_plus_probes():
    b = tradeoff.budget_estimate(100, seconds_per_epoch=1.2, probe_seconds=3.5, chapter_runs=5, probe_every=5,
                                 book_groups=[(5, 5), (10, 5), (9, 20), (2, None)])
    probed5, probed20 = len(tradeoff.probe_epochs(100, 5)), len(tradeoff.probe_epochs(100, 20))
    assert (probed5, probed20) == (21, 6)
    assert b.chapter == pytest.approx(5 * (100 * 1.2 + 21 * 3.5))
    assert b.book == pytest.approx(26 * 100 * 1.2 + (15 * 21 + 9 * 6) * 3.5)
    assert not b.fits  # 4,411 s of the book's lower bound: over 60 min
    small = tradeoff.budget_estimate(60, seconds_per_epoch=1.2, probe_seconds=3.5, chapter_runs=5, probe_every=5,
                                     book_groups=[(5, 5), (10, 5), (9, 20)])
    assert small.fits and small.chapter == pytest.approx(5 * (60 * 1.2 + 13 * 3.5))
    text = tradeoff.budget_markdown({"a/100": b, "b/60": small}, 1.2, 3.5, 24)
    assert "`a/100`" in text and "over the book limit" in text and "within both limits" in text
    fitted = tradeoff.budget_markdown({"a/100": b, "b/60": small}, 1.2, 3.5, 24,
                                      {"a/100": ("crop(1)+flip", 0.9958), "b/60": ("flip", 1.0)})
    assert "meeting both the fit (a) and the budget (b): `b/60`." in fitted  # a/100 fits but is over budget
    failed = tradeoff.budget_markdown({"b/60": small}, 1.2, 3.5, 24, {"b/60": ("crop(2)+flip", 0.9568)})
    assert "fails the 99% criterion" in failed and "(b): none, at this cost per epoch." in failed
    with pytest.raises(ValueError, match="seconds_per_epoch"):
        tradeoff.budget_estimate(60, seconds_per_epoch=-1.0, probe_seconds=1.0, chapter_runs=1, probe_every=1,
                                 book_groups=[])


def test_candidates_table_has_human_columns_and_a_live_row(tmp_path):
    from ctcbook.stats import t_interval
    df = pd.DataFrame([{**ROW, "meets_fit": True, "date": "2026-11-23", "note": ""}])
    live = tradeoff.FitCheck({0: 0.999, 1: 1.0}, {0: 0.99, 1: 1.0}, t_interval([99.9, 100.0]), 0.9995, (46, 60),
                             0.99, True)
    shown = tradeoff.candidates_table(df, live, "flip only", 1.17)
    assert len(shown) == 2 and "clean train acc., final quarter mean (%)" in shown
    assert shown.iloc[1]["seeds"] == "0, 1" and shown.iloc[1]["meets the 99% fit"] == "yes"
    assert shown.iloc[0]["clean train acc., final quarter mean (%)"] == "100.00"


def test_a_wider_candidate_costs_the_square_of_its_width_ratio_and_the_book_adds_its_fixed_rest(tmp_path):
    assert tradeoff.candidate_width("w24_pad1") == 24 and tradeoff.candidate_width("flip") is None
    groups = [(5, 5), (10, 10), (9, 20)]
    base = tradeoff.budget_estimate(60, seconds_per_epoch=1.0, probe_seconds=2.0, chapter_runs=5, probe_every=5,
                                    book_groups=groups)
    wide = tradeoff.budget_estimate(60, seconds_per_epoch=1.0, probe_seconds=2.0, chapter_runs=5, probe_every=5,
                                    book_groups=groups, width_factor=(24 / 16) ** 2, book_rest=900.0)
    trained = 24 * 60 * 1.0
    assert wide.book - base.book == pytest.approx(trained * (2.25 - 1) + 900.0)  # probes do not scale with width
    assert wide.chapter - base.chapter == pytest.approx(5 * 60 * 1.25)
    assert wide.book_rest == 900.0 and "about" in tradeoff.budget_markdown({"w": wide}, 1.0, 2.0, 24)
    assert "at least" in tradeoff.budget_markdown({"b": base}, 1.0, 2.0, 24)  # no rest measured: a lower bound
    costs = tmp_path / "costs.json"
    costs.write_text('{"measured": "fresh clone", "ctc_epoch_factor": 1.5, '
                     '"rest": [{"part": "set-up", "seconds": 200}, {"part": "chapter 4", "seconds": 100}]}')
    got = tradeoff.read_book_costs(costs)
    assert got.rest == 300.0 and got.ctc_epoch_factor == 1.5
    assert "set-up 3.3 min" in got.text and "5.0 min in all" in got.text and "fresh clone" in got.text
    missing = tradeoff.read_book_costs(tmp_path / "missing.json")
    assert (missing.rest, missing.ctc_epoch_factor) == (0.0, 1.0) and "lower bounds" in missing.text


def test_book_groups_charge_ctc_style_runs_their_measured_cost_per_epoch():
    ctc = {"seeds": [0, 1, 2, 3, 4], "probe_every": 10, "discrim_seeds": [0, 1, 2], "ablation_seeds": [0, 1, 2],
           "control_probe_every": 20}
    groups = tradeoff.book_run_groups([0, 1, 2, 3, 4], 5, ctc, ctc_epoch_factor=1.5)
    assert groups == [(5, 5, 1.0), (5, 10, 1.5), (5, 10, 1.0), (9, 20, 1.5)]
    plain = tradeoff.budget_estimate(60, seconds_per_epoch=1.0, probe_seconds=0.0, chapter_runs=5, probe_every=5,
                                     book_groups=tradeoff.book_run_groups([0, 1, 2, 3, 4], 5, ctc))
    ctc_cost = tradeoff.budget_estimate(60, seconds_per_epoch=1.0, probe_seconds=0.0, chapter_runs=5, probe_every=5,
                                        book_groups=groups)
    assert ctc_cost.book - plain.book == pytest.approx(14 * 60 * 0.5)  # 5 CTC + 9 secondary runs at +50%


def test_rule_c_names_the_candidate_closest_to_the_papers_augmentation_among_those_meeting_both():
    assert tradeoff.closeness("crop(2)+flip") > tradeoff.closeness("crop(1)+flip") > tradeoff.closeness(
        "flip only") > tradeoff.closeness("no augmentation")
    cheap = tradeoff.budget_estimate(60, seconds_per_epoch=1.0, probe_seconds=1.0, chapter_runs=5, probe_every=5,
                                     book_groups=[(24, 10)])
    longer = tradeoff.budget_estimate(80, seconds_per_epoch=1.0, probe_seconds=1.0, chapter_runs=5, probe_every=5,
                                      book_groups=[(24, 10)])
    text = tradeoff.budget_markdown({"flip/60": cheap, "pad1/80": longer, "pad2/60": cheap}, 1.0, 1.0, 24,
                                    {"flip/60": ("flip only", 1.0), "pad1/80": ("crop(1)+flip", 0.995),
                                     "pad2/60": ("crop(2)+flip", 0.96)})
    assert "Rule (c), closest to the paper's crop (4 px) + flip, then cheaper: `pad1/80`" in text  # pad2 misses (a)


def test_rule_pick_is_none_without_a_candidate_meeting_both():
    over = tradeoff.budget_estimate(200, seconds_per_epoch=10.0, probe_seconds=1.0, chapter_runs=5, probe_every=5,
                                    book_groups=[(24, 10)])
    assert tradeoff.rule_pick({"x/200": over}, {"x/200": ("crop(1)+flip", 1.0)}) is None


def test_thinning_probes_only_the_secondary_runs_first_and_last_epochs():
    ctc = {"seeds": [0, 1, 2, 3, 4], "probe_every": 10, "discrim_seeds": [0, 1, 2], "ablation_seeds": [0, 1, 2],
           "control_probe_every": 20}
    groups = tradeoff.book_run_groups([0, 1, 2, 3, 4], 10, ctc, ctc_epoch_factor=1.2)
    thin = tradeoff.thinned_groups(groups, 80)
    assert thin[:-1] == [tuple(g) for g in groups[:-1]] and thin[-1] == (9, 80, 1.2)
    kw = dict(seconds_per_epoch=1.0, probe_seconds=2.0, chapter_runs=5, probe_every=10)
    full = tradeoff.budget_estimate(80, book_groups=groups, **kw)
    less = tradeoff.budget_estimate(80, book_groups=thin, **kw)
    # the secondary runs lose 5 - 2 probed checkpoints each (1, 20, 40, 60, 80 -> 1, 80): 9 x 3 x 2 s
    assert full.book - less.book == pytest.approx(9 * 3 * 2.0)


def test_thinning_text_names_a_closer_candidate_that_fits_only_after_thinning():
    ctc = {"seeds": [0, 1, 2, 3, 4], "probe_every": 10, "discrim_seeds": [0, 1, 2], "ablation_seeds": [0, 1, 2],
           "control_probe_every": 20}
    groups = tradeoff.book_run_groups([0, 1, 2, 3, 4], 10, ctc)
    candidates = pd.DataFrame({"candidate": ["w16_flip", "w16_pad1"], "epochs": [60, 80],
                               "description": ["flip only", "crop(1)+flip"], "final_quarter_mean": [1.0, 0.995]})
    kw = dict(seconds_per_epoch=1.0, probe_seconds=2.0, chapter_runs=5, probe_every=10)
    full80 = tradeoff.budget_estimate(80, book_groups=groups, **kw)
    thin80 = tradeoff.budget_estimate(80, book_groups=tradeoff.thinned_groups(groups, 80), **kw)
    rest = 3600 - (full80.book + thin80.book) / 2          # the limit falls between the two estimates
    est = {"w16_flip/60": tradeoff.budget_estimate(60, book_groups=groups, book_rest=rest, **kw),
           "w16_pad1/80": tradeoff.budget_estimate(80, book_groups=groups, book_rest=rest, **kw)}
    fits = {"w16_flip/60": ("flip only", 1.0), "w16_pad1/80": ("crop(1)+flip", 0.995)}
    assert tradeoff.rule_pick(est, fits) == "w16_flip/60"
    text = tradeoff.thinning_markdown(candidates, fits, est, "w16_flip/60", est["w16_flip/60"], 2900.0,
                                      book_groups=groups, rest=rest, width_factor=lambda name: 1.0, **kw)
    assert "`w16_pad1/80`" in text and "would pick `w16_pad1/80` with thinned controls" in text
    assert "measured 48.3 min" in text and "the default stays `w16_flip/60`" in text
    # far over the limit: thinning does not rescue it
    far = tradeoff.thinning_markdown(candidates, fits, {**est, "w16_pad1/80": tradeoff.budget_estimate(
        80, book_groups=groups, book_rest=rest + 600, **kw)}, "w16_flip/60", est["w16_flip/60"], None,
        book_groups=groups, rest=rest + 600, width_factor=lambda name: 1.0, **kw)
    assert "still over the limit, so the rule drops it" in far
    # a candidate that meets both already, or fails the fit, gets no paragraph
    assert tradeoff.thinning_markdown(candidates, {**fits, "w16_pad1/80": ("crop(1)+flip", 0.98)}, est,
                                      "w16_flip/60", est["w16_flip/60"], None, book_groups=groups, rest=rest,
                                      width_factor=lambda name: 1.0, **kw) == ""


def test_the_live_rows_augmentation_is_named_as_the_candidates_are_and_ranked_by_rule_c():
    assert tradeoff.augment_description("crop_flip", 1) == "crop(1)+flip"
    assert tradeoff.augment_description("flip", 2) == "flip only"
    assert tradeoff.closeness(tradeoff.augment_description("crop_flip", 1) + ", 80 epochs") == (2, 1)
    assert tradeoff.closeness(tradeoff.augment_description("none", 0)) == (0, 0)
    with pytest.raises(ValueError, match=r"augment must be one of .*'crop_flip'.*got 'mixup'"):
        tradeoff.augment_description("mixup", 1)


def test_a_measured_build_counts_for_the_source_model_it_trained_only(tmp_path):
    model = {"source": "fashion_mnist", "train_size": 2000, "depth": 8, "width": 16, "epochs": 80,
             "augment": "crop_flip", "crop_padding": 1}
    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps({"measured": "fresh clone", "ctc_epoch_factor": 1.06, "total_seconds": 3459,
                                 "source_model": model, "rest": [{"part": "the rest", "seconds": 1101}]}))
    got = tradeoff.read_book_costs(costs)
    assert got.total == 3459.0 and got.measured_model({**model, "seed": 3, "lr": 0.1})
    for key, other in (("epochs", 60), ("augment", "flip"), ("crop_padding", 2), ("width", 8)):
        assert not got.measured_model({**model, key: other}), key
    costs.write_text(json.dumps({"measured": "older file", "ctc_epoch_factor": 1.0, "total_seconds": 2896,
                                 "rest": [{"part": "the rest", "seconds": 1061}]}))
    assert not tradeoff.read_book_costs(costs).measured_model(model)  # which model it measured is unknown
