"""Chapter 1's appendix "How the default was chosen": the candidates CSV, the measured book costs and the rule that
picks among them, as the benchmark scripts record them."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import book_costs  # noqa: E402
import fit_candidates  # noqa: E402

ROW = dict(candidate="w16_flip", description="ResNet-8 w16, flip only", epochs=60, seed=0, final_quarter_mean=1.0,
           final_quarter_min=1.0, last=1.0, seconds_per_epoch=0.51, wall_seconds=71.0)
MODEL = {"source": "fashion_mnist", "train_size": 2000, "depth": 8, "width": 16, "epochs": 80, "augment": "crop_flip",
         "crop_padding": 1, "schedule": "cosine", "warmup_epochs": 0, "lr_floor": 0.0}


def test_merge_adds_rows_replaces_the_same_key_and_keeps_the_others(tmp_path):
    path = tmp_path / "c.csv"
    fit_candidates.merge_candidates(path, [ROW, {**ROW, "candidate": "w16_pad1", "final_quarter_mean": 0.9873}])
    fit_candidates.merge_candidates(path, [{**ROW, "final_quarter_mean": 0.995, "note": "again"},
                                           {**ROW, "epochs": 100}])
    back = fit_candidates.read_candidates(path)
    assert len(back) == 3 and list(back.columns) == list(fit_candidates.CANDIDATE_COLUMNS)
    again = back[(back.candidate == "w16_flip") & (back.epochs == 60)].iloc[0]
    assert again.final_quarter_mean == 0.995 and again.note == "again"  # the same key: replaced
    pad = back[back.candidate == "w16_pad1"].iloc[0]
    assert not pad.meets_fit and bool(again.meets_fit)  # filled in from the 99% rule
    assert [p.name for p in tmp_path.iterdir()] == ["c.csv"]  # no temporary file left behind
    with pytest.raises(ValueError, match="unknown"):
        fit_candidates.merge_candidates(path, [{**ROW, "colour": "red"}])
    assert len(fit_candidates.read_candidates(path)) == 3  # a refused row leaves the file as it was


def test_the_shipped_csv_holds_the_leads_measurements():
    df = fit_candidates.read_candidates()
    row = df[(df.candidate == "w16_pad1") & (df.epochs == 100)].iloc[0]
    assert (row.final_quarter_mean, row.final_quarter_min, row.last) == (0.9958, 0.9920, 0.9965)
    flip = df[(df.candidate == "w16_flip") & (df.epochs == 60)].iloc[0]
    assert flip.final_quarter_mean == 1.0 and bool(flip.meets_fit)
    assert not df[(df.candidate == "w16_cropflip") & (df.epochs == 60)].iloc[0].meets_fit


def test_the_benchmark_script_adds_a_row(tmp_path):
    path = tmp_path / "c.csv"
    subprocess.run([sys.executable, str(BENCHMARKS / "fit_candidates.py"), "--csv", str(path), "--add", "w24_pad1",
                    "60", "0", "0.9921", "0.989", "0.993", "0.62", "85", "busy machine"], check=True,
                   capture_output=True, env={"PYTHONPATH": str(BENCHMARKS.parent), "PATH": "/usr/bin:/bin"})
    row = fit_candidates.read_candidates(path).iloc[0]
    assert row.candidate == "w24_pad1" and row.final_quarter_mean == 0.9921 and row.note == "busy machine"


def test_rule_c_names_the_candidate_closest_to_the_papers_augmentation_among_those_meeting_both():
    closeness = fit_candidates.closeness
    assert closeness("crop(2)+flip") > closeness("crop(1)+flip") > closeness("flip only") > closeness("no augmentation")
    cheap, dear = 2000.0, 3000.0
    pick = fit_candidates.rule_pick({"flip/60": ("flip only", 1.0, cheap), "pad1/80": ("crop(1)+flip", 0.995, dear),
                                     "pad1/100": ("crop(1)+flip", 0.996, dear + 100),
                                     "pad2/60": ("crop(2)+flip", 0.96, cheap)})  # pad2 misses the fit (a)
    assert pick == "pad1/80"  # then the cheaper of the two crop(1) candidates
    over = fit_candidates.rule_pick({"flip/60": ("flip only", 1.0, cheap), "pad1/80": ("crop(1)+flip", 0.995, 3700.0)})
    assert over == "flip/60"  # over the book's 60 minutes: (b) drops it
    assert fit_candidates.rule_pick({"x/200": ("crop(1)+flip", 1.0, 9999.0)}) is None
    paper = "crop(1)+flip, the paper's schedule (5 warm-up epochs, cosine per epoch to 0.1 x lr)"
    assert closeness("crop(2)+flip") > closeness(paper) > closeness("crop(1)+flip")  # augmentation first
    assert fit_candidates.rule_pick({"pad1/80": ("crop(1)+flip", 0.995, cheap), "paper/80": (paper, 0.992, dear),
                                     "paper/60": (paper, 0.985, cheap)}) == "paper/80"  # paper/60 misses the fit


def test_a_measured_build_counts_for_the_source_model_it_trained_only(tmp_path):
    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps({"measured": "fresh clone", "ctc_epoch_factor": 1.06, "total_seconds": 3459,
                                 "source_model": MODEL, "rest": [{"part": "the rest", "seconds": 1101}]}))
    got = book_costs.read_book_costs(costs)
    assert (got.total, got.rest) == (3459.0, 1101.0) and got.measured_model({**MODEL, "seed": 3, "lr": 0.1})
    for key, other in (("epochs", 60), ("augment", "flip"), ("crop_padding", 2), ("width", 8),
                       ("schedule", "paper_cosine")):
        assert not got.measured_model({**MODEL, key: other}), key
    assert fit_candidates.source_model("w16_pad1", 80) == MODEL


def test_a_candidates_book_scales_the_measured_part_by_epochs_and_width_squared():
    costs = book_costs.BookCosts("fresh clone", total=3000.0, rest=1000.0, source_model=MODEL)
    assert costs.book_seconds(80, 16) == pytest.approx(3000.0)
    assert costs.book_seconds(40, 16) == pytest.approx(1000.0 + 2000.0 / 2)
    assert costs.book_seconds(80, 24) == pytest.approx(1000.0 + 2000.0 * 2.25)  # the rest does not grow


def test_the_recorded_appendix_is_the_report_of_the_recorded_measurements():
    recorded = fit_candidates.REPORT_MD.read_text()
    head, body = recorded.split("\n\n", 1)
    assert "Recorded on" in head and "at commit" in head
    assert body == fit_candidates.report(fit_candidates.read_candidates(), book_costs.read_book_costs())
    assert "`w16_pad1_paper/80` (ResNet-8 w16, 2,000 images, crop(1)+flip, the paper's schedule (5 warm-up epochs, " \
           "cosine per epoch to 0.1 x lr)). It is the `default` profile's source model." in body
    assert f"| {book_costs.read_book_costs().total / 60:.1f} measured |" in body and "`w24_pad1/60`" in body


def test_the_report_says_when_the_pick_is_not_the_default():
    candidates = fit_candidates.read_candidates()
    costs = book_costs.read_book_costs()
    flip_only = candidates[~candidates.candidate.isin(["w16_pad1", "w16_pad1_paper"])]
    text = fit_candidates.report(flip_only, costs)
    assert "`w16_flip/60` (ResNet-8 w16, 2,000 images, flip only). The `default` profile's source model is none." \
        in text
