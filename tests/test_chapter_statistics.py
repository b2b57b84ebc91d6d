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
