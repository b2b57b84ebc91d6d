"""Chapter 1's bookkeeping: probed epochs, summaries of curves, cached probes."""
import pandas as pd
import pytest

from ctcbook.chapters import ch1_tradeoff as tradeoff


def test_probe_epochs_include_first_and_last():
    assert tradeoff.probe_epochs(10, 3) == [1, 3, 6, 9, 10]
    assert tradeoff.probe_epochs(4, 1) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="probe_every"):
        tradeoff.probe_epochs(10, 0)


def _table():
    rows = []
    for seed, curve in ((0, [0.50, 0.70, 0.65, 0.60]), (1, [0.52, 0.66, 0.72, 0.70])):
        for epoch, (src, acc) in enumerate(zip([0.6, 0.8, 0.9, 0.95], curve), start=1):
            rows.append({"seed": seed, "epoch": epoch, "target": "source", "test_acc": src})
            rows.append({"seed": seed, "epoch": epoch, "target": "t", "probe_acc": acc, "n_test": 1000})
    return pd.DataFrame(rows)


def test_summary_finds_peak_and_drop_per_seed_and_for_the_mean_curve():
    s = tradeoff.summarize(_table()).set_index("seed")
    assert s.loc[0, "peak_epoch"] == 2 and s.loc[0, "drop_points"] == pytest.approx(10.0)
    assert s.loc[1, "peak_epoch"] == 3 and s.loc[1, "drop_points"] == pytest.approx(2.0)
    assert s.loc[1, "source_peak"] == 0.9 and s.loc[1, "source_final"] == 0.95
    mean = s.loc["mean"]  # mean curve: 0.51, 0.68, 0.685, 0.65
    assert mean.peak_epoch == 3 and mean.drop_points == pytest.approx(3.5)


def test_findings_state_the_noise():
    table = _table()
    text = tradeoff.findings_markdown(tradeoff.summarize(table), table)
    assert "peaks at 68.5% at epoch 3" in text and "3.5 points below its peak" in text
    assert "1,000 test images" in text and "larger than twice" in text  # SE at 0.65, n=1000: 1.5 points


def test_standard_error():
    assert tradeoff.standard_error(0.5, 100) == pytest.approx(0.05)


def test_unknown_target_is_refused():
    with pytest.raises(ValueError, match="target must be one of"):
        tradeoff.load_target("imagenet", 1, 28)


def test_protocol_markdown_reports_gap_and_selection_gain():
    ours = pd.DataFrame({"target": ["t", "t"], "epoch": [1, 2], "probe_acc": [0.80, 0.90]})
    paper = pd.DataFrame({"target": ["t", "t"], "epoch": [1, 2], "paper_best": [0.82, 0.86],
                          "paper_final": [0.81, 0.86]})
    text = tradeoff.protocol_markdown(ours, paper)
    assert "-1.0 points on average over 2 probed epochs (range -4.0 to +2.0)" in text
    assert "adds 0.50 points" in text


def test_convergence_markdown_says_whether_the_training_set_is_fitted():
    table = _table().assign(train_acc=0.9)
    assert "has not fitted its training set (10.0%" in tradeoff.convergence_markdown(table)
    assert "has essentially fitted" in tradeoff.convergence_markdown(table.assign(train_acc=0.995))
