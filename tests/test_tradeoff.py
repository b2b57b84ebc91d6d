"""Chapter 1's bookkeeping: probed epochs, targets, the protocol comparison."""
import pandas as pd
import pytest

from ctcbook.chapters import ch1_tradeoff as tradeoff
from ctcbook.targets import load_target, probe_epochs


def test_probe_epochs_include_first_and_last():
    assert probe_epochs(10, 3) == [1, 3, 6, 9, 10]
    assert probe_epochs(4, 1) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="probe_every"):
        probe_epochs(10, 0)


def test_unknown_target_is_refused():
    with pytest.raises(ValueError, match="target must be one of"):
        load_target("imagenet", 1, 28)


def test_protocol_comparison_reports_level_shape_and_peaks():
    ours = pd.DataFrame({"target": "t", "epoch": [1, 2, 3, 4], "probe_acc": [0.80, 0.90, 0.85, 0.84],
                         "val_acc": [0.7, 0.8, 0.9, 0.85], "n_val": 10 ** 9})
    paper = pd.DataFrame({"target": "t", "epoch": [1, 2, 3, 4], "paper_best": [0.82, 0.86, 0.90, 0.84],
                          "paper_final": [0.81, 0.86, 0.88, 0.84], "paper_steps": 300, "paper_epochs": 150})
    c = tradeoff.protocol_comparison(ours, paper).iloc[0]
    assert c["paper's minus ours (points)"] == pytest.approx(0.75)  # +2, -4, +5, 0
    assert c["best-test selection gain (points)"] == pytest.approx(0.75)
    assert c["rank correlation of the curves"] == pytest.approx(0.8)  # Spearman: ranks (1,4,3,2), (1,3,4,2)
    assert c["our peak epoch (validation)"] == 3 and c["paper's peak epoch (best test)"] == 3
    text = tradeoff.protocol_markdown(tradeoff.protocol_comparison(ours, paper))
    assert "(300 SGD steps, 150 epochs) minus ours: +0.75 points" in text and "peak at the same epoch" in text
