"""The spread statistics the chapters print, on hand-made numbers where the correct and the likely wrong formula
give different verdicts (issue 18: a test for each mistake that would change the book's text)."""
import pandas as pd
import pytest

from ctcbook.chapters import ch3_ctc


def _comparison(drop_b, drop_o, std, seeds):
    row = dict(target="t", drop_std=std, seeds=seeds, drop_min=0.0, drop_max=9.0, final_mean=80.0, final_std=1.0,
               source_final_mean=90.0)
    return pd.DataFrame([dict(row, method="base", drop_mean=drop_b), dict(row, method="ctc", drop_mean=drop_o)])


@pytest.mark.parametrize("diff, verdict", [(3.0, "more than twice"), (2.5, "within twice")])
def test_ctc_verdict_uses_the_standard_error_of_the_difference_of_means(diff, verdict):
    # 4 seeds each with drop std 2 points: SE = sqrt(2^2/4 + 2^2/4) = 1.41 points, so a 3-point difference is more
    # than twice the SE and a 2.5-point one is not. Forgetting the /seeds (SE = 2.83) or using the std of one side
    # (2.0) would call the 3-point difference "within".
    text = ch3_ctc.verdict_markdown(_comparison(6.0, 6.0 - diff, 2.0, 4), "base", "ctc")
    assert verdict in text and "(1.41 points)" in text, text


def test_ctc_verdict_with_one_seed_says_there_is_no_spread():
    text = ch3_ctc.verdict_markdown(_comparison(6.0, 3.0, float("nan"), 1), "base", "ctc")
    assert "one seed each" in text


def _curve(seed, drop):
    """Chapter 1's curve table for one seed: the probe on target "t" peaks at epoch 2, then falls by ``drop`` points."""
    rows = [{"seed": seed, "target": "source", "epoch": e, "test_acc": a} for e, a in ((1, 0.5), (2, 0.7), (3, 0.9))]
    rows += [{"seed": seed, "target": "t", "epoch": e, "probe_acc": a, "n_test": 1000}
             for e, a in ((1, 0.6), (2, 0.8), (3, 0.8 - drop / 100))]
    return pd.DataFrame(rows)


def test_ctc_comparison_spread_is_the_sample_standard_deviation_over_seeds():
    # Drops 2, 4, 9 points over three seeds: mean 5, sample std (ddof=1) sqrt(13) = 3.61 (ddof=0 would give 2.94).
    table = ch3_ctc.with_method({"base": pd.concat([_curve(s, d) for s, d in ((0, 2.0), (1, 4.0), (2, 9.0))])})
    row = ch3_ctc.compare(table).iloc[0]
    assert row.seeds == 3 and row.drop_mean == pytest.approx(5.0)
    assert row.drop_std == pytest.approx(13 ** 0.5)
    assert (row.drop_min, row.drop_max) == pytest.approx((2.0, 9.0))
