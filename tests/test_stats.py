"""The book's one statistical rule (ctcbook.stats): t intervals, paired differences, the late drop, verdicts."""
import math

import numpy as np
import pytest
from scipy import stats as st

from ctcbook.stats import (Interval, bootstrap_correlation, corrected_signs, drop_verdict, holm, late_drop,
                           mechanism_verdict, naive_drop, p_value, paired_differences, paired_interval, peak_index,
                           robustness, selected_drop, sign, t_interval, t_quantile, terminal_drop, verdict)

#: So many validation images that the one-standard-error window holds only exact ties.
MANY = 10 ** 9


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_t_quantiles_match_scipy_and_known_values(n):
    assert t_quantile(0.95, n) == pytest.approx(st.t.ppf(0.975, n - 1), rel=1e-12)
    known = {2: 12.706204736, 3: 4.302652730, 5: 2.776445105, 10: 2.262157163}  # printed t tables, df = n - 1
    assert t_quantile(0.95, n) == pytest.approx(known[n], abs=1e-8)


def test_t_interval_on_fixed_numbers():
    x = [1.0, 2.0, 4.0, 7.0, 6.0]
    iv = t_interval(x)
    sd = np.std(x, ddof=1)
    half = st.t.ppf(0.975, 4) * sd / math.sqrt(5)
    assert (iv.mean, iv.sd, iv.n) == (pytest.approx(4.0), pytest.approx(sd), 5)
    assert (iv.low, iv.high) == (pytest.approx(4.0 - half), pytest.approx(4.0 + half))
    lo, hi = st.t.interval(0.95, 4, loc=np.mean(x), scale=st.sem(x))
    assert (iv.low, iv.high) == (pytest.approx(lo), pytest.approx(hi))
    one = t_interval([3.0])
    assert one.n == 1 and one.low == -math.inf and one.high == math.inf
    with pytest.raises(ValueError, match="values"):
        t_interval([])
    with pytest.raises(ValueError, match="finite"):
        t_interval([1.0, float("nan")])


def test_paired_differences_pair_by_seed_and_refuse_unpaired_seeds():
    a = {0: 0.90, 1: 0.80, 2: 0.85}
    b = {2: 0.84, 0: 0.89, 1: 0.79}
    assert paired_differences(a, b) == pytest.approx({0: 0.01, 1: 0.01, 2: 0.01})
    # paired: the seed-to-seed spread cancels (0.01 each), an unpaired comparison would not exclude 0
    iv = paired_interval(a, b)
    assert iv.mean == pytest.approx(0.01) and iv.sd == pytest.approx(0, abs=1e-12)
    with pytest.raises(ValueError, match="only in a: \\[3\\]"):
        paired_differences({**a, 3: 0.5}, b)


def test_selected_drop_on_a_constructed_curve_with_known_peak():
    epochs = [1, 5, 10, 15, 20, 25, 30]
    val = [0.50, 0.70, 0.80, 0.78, 0.76, 0.75, 0.74]      # validation peak at epoch 10
    test = [0.51, 0.69, 0.79, 0.77, 0.75, 0.74, 0.73]
    d = selected_drop(epochs, val, test, MANY)
    assert d.peak_epoch == 10 and d.drop == pytest.approx(0.06) and d.naive == pytest.approx(0.06)


def test_noisy_test_curve_separates_selected_and_naive_drops():
    epochs = list(range(1, 11))
    val = [0.80] * 5 + [0.81] + [0.80] * 4              # validation peaks at epoch 6, flat otherwise
    test = [0.80, 0.80, 0.83, 0.80, 0.80, 0.80, 0.80, 0.80, 0.80, 0.80]  # a lucky test value at epoch 3
    d = selected_drop(epochs, val, test, MANY)
    assert d.peak_epoch == 6 and d.drop == pytest.approx(0.0)
    assert d.naive == pytest.approx(0.03) == naive_drop(test)
    rng = np.random.default_rng(0)
    curves = {s: (epochs, 0.8 + rng.normal(0, 0.005, 10), 0.8 + rng.normal(0, 0.005, 10)) for s in range(5)}
    summary = late_drop(curves, MANY)
    assert summary.selected.n == summary.naive.n == 5
    assert all(d.naive >= 0 for d in summary.per_seed.values())
    assert summary.naive.mean > summary.selected.mean  # max-of-test inflates the drop on pure noise
    with pytest.raises(ValueError, match="one value per epoch"):
        selected_drop(epochs, val[:-1], test, MANY)


def test_a_tie_with_the_last_epoch_is_no_drop():
    epochs = [10, 20, 40, 80]
    val = [0.70, 0.80, 0.75, 0.80]                          # tied best at epoch 20 and at the last epoch
    test = [0.70, 0.85, 0.78, 0.80]
    for n_val in (MANY, 179):
        d = selected_drop(epochs, val, test, n_val)
        assert d.peak_epoch == 80 and d.drop == 0.0
    assert d.naive == pytest.approx(0.05)


def test_one_standard_error_rule_on_a_noisy_validation_curve():
    epochs = [1, 2, 3, 4, 5, 6]
    val = [0.70, 0.80, 0.79, 0.78, 0.795, 0.76]             # argmax: epoch 2; within one SE (0.0179 at n 500): 2, 3, 5
    test = [0.70, 0.82, 0.80, 0.79, 0.80, 0.77]
    assert int(np.argmax(val)) == 1 and peak_index(val, 500) == 4
    d = selected_drop(epochs, val, test, 500)
    assert d.peak_epoch == 5 and d.drop == pytest.approx(0.03)
    assert selected_drop(epochs, val, test, 100_000).peak_epoch == 2     # SE 0.0013: only the best itself
    with pytest.raises(ValueError, match="n_val"):
        peak_index(val, 0)


def test_terminal_drop_starts_where_the_source_fits_not_at_the_peak():
    epochs = [1, 2, 3, 4, 5, 6, 7, 8]
    test = [0.60, 0.75, 0.80, 0.78, 0.77, 0.76, 0.76, 0.75]   # peaks at epoch 3, the source fits at epoch 6
    assert selected_drop(epochs, test, test, MANY).drop == pytest.approx(0.05)
    assert terminal_drop(epochs, test, 6) == pytest.approx(0.01)
    assert terminal_drop(epochs, test, 5.5) == pytest.approx(0.01)   # the first probed epoch at or after the fit
    assert terminal_drop(epochs, test, None) is None and terminal_drop(epochs, test, 9) is None


def test_holm_on_a_worked_example():
    # alpha 0.05, m = 3: sorted p 0.01 <= 0.05/3 rejects; 0.03 > 0.05/2 stops, so 0.04 is kept too
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03}) == {"a": True, "b": False, "c": False}
    assert holm({"a": 0.01, "b": 0.02, "c": 0.04}) == {"a": True, "b": True, "c": True}
    assert holm({"a": 0.04}) == {"a": True} and holm({}) == {}


def test_p_value_inverts_the_t_interval():
    rng = np.random.default_rng(3)
    for _ in range(200):
        iv = t_interval(rng.normal(rng.normal(0, 1), 1, 5))
        assert (p_value(iv) < 0.05) == (iv.low > 0 or iv.high < 0)
    assert p_value(t_interval([1.0])) == 1.0


def test_holm_correction_can_turn_a_verdict_inconclusive_but_never_invent_one():
    strong = t_interval([2.0, 2.1, 1.9, 2.05, 1.95])
    weak = t_interval([0.5, 0.9, 0.1, 0.8, 0.2])              # p about 0.03: excludes 0 alone, not after Holm over 3
    null = t_interval([0.5, -0.4, 0.1, -0.2, 0.3])
    assert sign(weak) == 1 and 0.0167 < p_value(weak) < 0.05
    assert corrected_signs({"s": strong, "w": weak, "n": null}) == {"s": 1, "w": 0, "n": 0}
    assert corrected_signs({"w": weak}) == {"w": 1}


def test_an_interval_excluding_zero_as_printed_is_never_inconclusive():
    # chapter 3's stage table: -0.038 [-0.071, -0.005] bits at three decimals, once called inconclusive
    iv = Interval(mean=-0.038, low=-0.071, high=-0.005, n=3, sd=0.0133)
    assert sign(iv, 3) == -1 and "inconclusive" not in verdict(iv, quantity="q", unit="bits", decimals=3).text
    assert sign(iv, 2) == 0                                # at two decimals it prints as [-0.08, 0.00]


def test_verdict_wording_follows_the_interval():
    drop = drop_verdict(t_interval([1.0, 1.2, 0.9, 1.1, 1.3]), target="mnist5k")
    assert drop.sign == 1 and "late drop on mnist5k: 1.10 points, 95% CI [" in drop.text
    assert "over 5 seeds" in drop.text and "inconclusive" not in drop.text
    none = drop_verdict(t_interval([1.0, -0.5, 0.3, 0.8, -0.2]), target="digits")
    assert none.sign == 0 and "inconclusive (the interval contains 0)" in none.text
    neg = verdict(t_interval([-1.0, -1.2, -0.9]), quantity="CTC minus baseline", negative="CTC is lower")
    assert neg.sign == -1 and neg.text.endswith("CTC is lower")
    assert verdict(t_interval([2.0]), quantity="q").sign == 0


def test_verdict_never_flips_on_rounding():
    # low bound 0.0004 prints as 0.00 at two decimals: the words must not claim more than the printed interval
    iv = Interval(mean=0.5, low=0.0004, high=0.9996, n=5, sd=0.4)
    v = verdict(iv, quantity="q")
    assert v.sign == 0 and "[0.00, 1.00]" in v.text
    assert verdict(iv, quantity="q", decimals=4).sign == 1
    iv = Interval(mean=0.6, low=0.29, high=0.91, n=5, sd=0.25)  # 0.29 * 100 is 28.999... in binary
    assert "[0.29, 0.91]" in verdict(iv, quantity="q").text


def _mechanism_curves(transfer_falls: bool, info_falls: bool, seeds=range(5)):
    epochs = np.arange(1, 11)
    rng = np.random.default_rng(1)
    out = {}
    for s in seeds:
        rise = np.minimum(epochs, 4) / 4                        # up to epoch 4
        late = np.clip(epochs - 4, 0, None) / 6                 # 0 -> 1 after epoch 4
        acc = 0.6 + 0.2 * rise + (-0.05 if transfer_falls else 0.05) * late
        val = acc + rng.normal(0, 0.001, 10)
        test = acc + rng.normal(0, 0.001, 10)
        ixt = 3.0 + rise + (-0.5 if info_falls else 0.5) * late + rng.normal(0, 0.01, 10)
        out[s] = (epochs, val, test, ixt)
    return out


def test_mechanism_verdict_checks_sign_and_timing():
    right = mechanism_verdict(_mechanism_curves(True, True), n_val=MANY, target="fmnist_5-9")
    assert right.coincides and "co-occurs" in right.text
    assert right.transfer.low > 0 and right.compression.low > 0
    wrong = mechanism_verdict(_mechanism_curves(True, False), n_val=MANY, target="fmnist_5-9")
    assert not wrong.coincides and "coincides" not in wrong.text and "opposite" in wrong.text
    # chapter 2's old case: I(X;T) falls while transfer rises to the end (peak at the last epoch: no late phase)
    rising = mechanism_verdict(_mechanism_curves(False, True), n_val=MANY, target="fmnist_5-9")
    assert not rising.coincides and "coincides" not in rising.text and "no late phase" in rising.text
    assert set(rising.peak_epochs.values()) == {10} and set(right.peak_epochs.values()) == {4}
    # transfer rises after a validation peak that is not the last epoch while I(X;T) falls: wrong sign, not the
    # mechanism
    curves = {}
    for s, (e, v, t, i) in _mechanism_curves(True, True).items():
        v = v.copy()
        v[3] += 0.5                                           # validation peak stays at epoch 4
        curves[s] = (e, v, np.linspace(0.6, 0.7, 10) + 0.001 * s, i)
    upward = mechanism_verdict(curves, n_val=MANY, target="fmnist_5-9")
    assert not upward.coincides and upward.transfer.high < 0 and "opposite" in upward.text
    # timing: I(X;T) falls only BEFORE the transfer peak (epochs 1-4), flat after -> not the mechanism
    curves = {}
    for s, (e, v, t, _) in _mechanism_curves(True, True).items():
        curves[s] = (e, v, t, np.where(e <= 4, 4.0 - 0.3 * e, 2.8) + 0.001 * s)
    early = mechanism_verdict(curves, n_val=MANY, target="fmnist_5-9")
    assert not early.coincides and "inconclusive" in early.text


def test_partial_correlation_removes_a_shared_control():
    rng = np.random.default_rng(4)
    z = {s: np.arange(8.0) for s in range(5)}
    x = {s: z[s] + rng.normal(0, 0.3, 8) for s in range(5)}
    y = {s: z[s] + rng.normal(0, 0.3, 8) for s in range(5)}          # linked only through z
    assert bootstrap_correlation(x, y, n_boot=300).r > 0.9
    partial = bootstrap_correlation(x, y, given=z, n_boot=300)
    assert abs(partial.r) < 0.35 and partial.low < 0 < partial.high
    assert bootstrap_correlation(x, x, given=z, n_boot=300).r == pytest.approx(1.0)


def test_bootstrap_correlation_over_seeds():
    rng = np.random.default_rng(0)
    x = {s: rng.normal(size=8) for s in range(5)}
    y = {s: -x[s] + 10 * s + rng.normal(0, 0.1, 8) for s in range(5)}  # seed offsets must not create correlation
    c = bootstrap_correlation(x, y, n_boot=500)
    assert c.r < -0.95 and c.low <= c.r <= c.high < -0.9 and c.n_seeds == 5
    # seed offsets in both (pooled raw r would be ~1) but no within-seed relation
    xo = {s: rng.normal(size=8) + 10 * s for s in range(5)}
    yo = {s: rng.normal(size=8) + 10 * s for s in range(5)}
    assert np.corrcoef(np.concatenate(list(xo.values())), np.concatenate(list(yo.values())))[0, 1] > 0.95
    offsets = bootstrap_correlation(xo, yo, n_boot=500)
    assert abs(offsets.r) < 0.4 and offsets.low < 0.4
    one = bootstrap_correlation({0: x[0]}, {0: y[0]})
    assert math.isnan(one.low) and one.r < -0.9


def test_peak_rules_break_ties_as_named():
    val = [0.70, 0.80, 0.75, 0.80, 0.79]                    # tied best at epochs 2 and 4; epoch 5 within one SE at 500
    assert [peak_index(val, 500, rule) for rule in ("earliest", "latest", "one_se")] == [1, 3, 4]
    assert peak_index(val, MANY, "one_se") == 3
    with pytest.raises(ValueError, match="rule must be one of .* got 'median'"):
        peak_index(val, 500, "median")
    d = late_drop({0: ([1, 2, 3, 4, 5], val, [0.7, 0.9, 0.8, 0.85, 0.8])}, 500, rule="earliest")
    assert d.per_seed[0].peak_epoch == 2 and d.per_seed[0].drop == pytest.approx(0.1)


def test_robustness_is_fragile_when_any_variant_changes_the_sign():
    above, around = t_interval([1.0, 1.2, 0.9]), t_interval([1.0, -1.0, 0.5])
    r = robustness({"declared": above, "a": above, "b": around})
    assert not r.robust and r.signs == {"declared": 1, "a": 1, "b": 0}
    assert r.span == pytest.approx((around.mean, above.mean))
    assert robustness({"declared": around, "a": around}).robust
    with pytest.raises(ValueError, match="declared"):
        robustness({})
