"""The book's inference over seeds: one rule for every chapter.

A quantity is measured once per seed (independent training run) and summarised by its mean and a 95% Student-t
interval (:func:`t_interval`); methods trained with the same seeds are compared on per-seed differences
(:func:`paired_interval`). The late drop (:func:`selected_drop`) picks the peak epoch on *validation* accuracy by
the one-standard-error rule (:func:`peak_index`) and measures it on *test*, so the choice does not see the noise it
is measured with; :func:`naive_drop` (max of test minus last, >= 0 by construction) only shows how much choosing on
test inflates it; :func:`terminal_drop` measures the phase after the source has fitted its training set.
:func:`verdict` words follow the interval as printed, :func:`holm` corrects a family of them; :func:`mechanism_verdict`
checks the paper's mechanism (sign and timing).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as _st

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` per-seed values with a two-sided Student-t interval [``low``, ``high``]; ``sd`` has ddof 1.
    With one seed the interval is (-inf, inf): one run says nothing about run-to-run spread."""

    mean: float
    low: float
    high: float
    n: int
    sd: float
    level: float = LEVEL

    def scaled(self, factor: float) -> "Interval":
        """The same interval in other units (e.g. x100: accuracy fractions to points)."""
        return Interval(self.mean * factor, self.low * factor, self.high * factor, self.n, self.sd * abs(factor),
                        self.level)


def t_quantile(level: float, n: int) -> float:
    """The two-sided Student-t quantile t_{(1+level)/2, n-1} for ``n`` values."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    if n < 2:
        raise ValueError(f"a t quantile needs n >= 2 values, got n={n}")
    return float(_st.t.ppf((1 + level) / 2, df=n - 1))


def t_interval(values: Sequence[float] | Mapping[object, float], level: float = LEVEL) -> Interval:
    """Mean and Student-t interval over per-seed ``values`` (a sequence, or a mapping seed -> value)."""
    x = np.asarray(list(values.values()) if isinstance(values, Mapping) else values, dtype=float).ravel()
    if x.size == 0:
        raise ValueError("values must hold at least one value (one per seed), got none")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"values must be finite numbers, got {x.tolist()}")
    n, mean = len(x), float(x.mean())
    if n == 1:
        if not 0 < level < 1:
            raise ValueError(f"level must lie in (0, 1), got {level!r}")
        return Interval(mean, -math.inf, math.inf, 1, math.nan, level)
    sd = float(x.std(ddof=1))
    half = t_quantile(level, n) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd, level)


def paired_differences(a: Mapping[object, float], b: Mapping[object, float]) -> dict[object, float]:
    """Per-seed ``a[seed] - b[seed]``. Both must hold the same seeds: an unpaired seed is an error, not dropped."""
    if set(a) != set(b):
        raise ValueError(f"paired comparison needs the same seeds on both sides: only in a: {sorted(set(a) - set(b))}, "
                         f"only in b: {sorted(set(b) - set(a))}")
    return {s: float(a[s]) - float(b[s]) for s in sorted(a)}


def paired_interval(a: Mapping[object, float], b: Mapping[object, float], level: float = LEVEL) -> Interval:
    """Student-t interval of the per-seed differences ``a - b``."""
    return t_interval(paired_differences(a, b), level)


# --- the late drop -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Drop:
    """One seed's late drop: ``peak_epoch`` (chosen on validation), ``drop`` (:func:`selected_drop`), ``naive``."""

    peak_epoch: int
    drop: float
    naive: float


def _curve(epochs, *curves) -> list[np.ndarray]:
    e = np.asarray(epochs)
    out = [e]
    for name, c in curves:
        c = np.asarray(c, dtype=float)
        if c.shape != e.shape or e.ndim != 1 or e.size == 0:
            raise ValueError(f"{name} must have one value per epoch ({e.size} epochs), got shape {c.shape}")
        if not np.all(np.isfinite(c)):
            raise ValueError(f"{name} must be finite, got {c.tolist()}")
        out.append(c)
    if np.any(np.diff(e) <= 0):
        raise ValueError(f"epochs must be strictly increasing, got {e.tolist()}")
    return out


def naive_drop(test: Sequence[float]) -> float:
    """Largest test accuracy minus the last one: >= 0 by construction, biased upwards by test noise."""
    t = np.asarray(test, dtype=float)
    return float(t.max() - t[-1])


#: Peak rules: the book's one-standard-error rule, and plain argmax with ties to the earliest or the latest epoch (the
#: robustness panel's tie variants).
PEAK_RULES = ("one_se", "earliest", "latest")


def peak_index(val: Sequence[float], n_val: int, rule: str = "one_se") -> int:
    """The one-standard-error peak: the *last* epoch whose validation accuracy is within one binomial standard error
    (sqrt(p (1 - p) / n_val) at the best accuracy p) of the best, so a tie with the last epoch is never a drop."""
    if isinstance(n_val, bool) or not isinstance(n_val, (int, np.integer)) or n_val < 1:
        raise ValueError(f"n_val (validation images) must be an integer >= 1, got {n_val!r}")
    if rule not in PEAK_RULES:
        raise ValueError(f"rule must be one of {PEAK_RULES}, got {rule!r}")
    v = np.asarray(val, dtype=float)
    best = float(v.max())
    se = math.sqrt(max(best * (1 - best), 0.0) / n_val) if rule == "one_se" else 0.0
    near = np.flatnonzero(v >= best - se - 1e-12)  # 1e-12: equal accuracies computed in two ways tie
    return int(near[0] if rule == "earliest" else near[-1])


def selected_drop(epochs: Sequence[int], val: Sequence[float], test: Sequence[float], n_val: int,
                  rule: str = "one_se") -> Drop:
    """Peak = :func:`peak_index` of the *validation* curve; drop = test there minus test at the last epoch."""
    e, v, t = _curve(epochs, ("val", val), ("test", test))
    peak = peak_index(v, n_val, rule)
    return Drop(int(e[peak]), float(t[peak] - t[-1]), naive_drop(t))


def terminal_drop(epochs: Sequence[int], test: Sequence[float], fit_epoch: int | None) -> float | None:
    """Test accuracy at the first epoch >= ``fit_epoch`` (the source fits its training set) minus at the last; None
    when the source never fits (``fit_epoch`` None) or fits only after the last probed epoch."""
    e, t = _curve(epochs, ("test", test))
    if fit_epoch is None or fit_epoch > e[-1]:
        return None
    return float(t[int(np.flatnonzero(e >= fit_epoch)[0])] - t[-1])


@dataclass(frozen=True)
class DropSummary:
    """Late drops over seeds: ``selected`` and ``naive`` intervals, and the per-seed :class:`Drop` s."""

    selected: Interval
    naive: Interval
    per_seed: dict


def late_drop(curves: Mapping[object, tuple[Sequence[int], Sequence[float], Sequence[float]]], n_val: int,
              level: float = LEVEL, rule: str = "one_se") -> DropSummary:
    """Selected and naive late drops of ``curves`` (seed -> (epochs, val, test)), each a t interval over seeds."""
    per_seed = {s: selected_drop(*c, n_val, rule) for s, c in curves.items()}
    return DropSummary(t_interval([d.drop for d in per_seed.values()], level),
                       t_interval([d.naive for d in per_seed.values()], level), per_seed)


# --- verdicts ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """``sign`` +1 / -1 / 0 (printed interval above 0, below 0, inconclusive), the sentence, and its numbers alone."""

    sign: int
    text: str
    numbers: str


def _fmt(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}" if math.isfinite(x) else ("-inf" if x < 0 else "inf")


def _printed(iv: Interval, decimals: int) -> tuple[float, float]:
    """The bounds a reader sees: rounded outwards (containing the computed ones), or (-inf, inf) with one seed."""
    if iv.n <= 1:
        return iv.low, iv.high
    f = 10 ** decimals
    # round(.., 9) first: 0.29 * 100 is 28.999999999999996 in binary, which must print as 0.29, not 0.28
    return math.floor(round(iv.low * f, 9)) / f, math.ceil(round(iv.high * f, 9)) / f


def brackets(iv: Interval, decimals: int = 2) -> str:
    """The interval as the book prints it, "[a, b]", rounded outwards (the bounds :func:`verdict` decides on)."""
    low, high = _printed(iv, decimals)
    return f"[{_fmt(low, decimals)}, {_fmt(high, decimals)}]"


def sign(iv: Interval, decimals: int = 2) -> int:
    """+1 / -1 / 0: the interval as printed at ``decimals`` lies above 0, below 0, or contains it (inconclusive)."""
    if decimals < 0:
        raise ValueError(f"decimals must be >= 0, got {decimals}")
    low, high = _printed(iv, decimals)
    return 1 if low > 0 else -1 if high < 0 else 0


def verdict(iv: Interval, *, quantity: str, unit: str = "points", decimals: int = 2, positive: str = "positive",
            negative: str = "negative") -> Verdict:
    """Words that follow the interval: "<quantity>: X <unit>, 95% CI [a, b] over n seeds: <positive|negative>".

    Decided on the interval *as printed* (:func:`sign`), so the words never disagree with the numbers a reader sees:
    a bound that prints as 0.00 counts as containing 0."""
    s = sign(iv, decimals)
    pct = f"{round(iv.level * 100):d}%"
    numbers = (f"{quantity}: {_fmt(iv.mean, decimals)} {unit}, {pct} CI {brackets(iv, decimals)} "
               f"over {iv.n} seed{'s' if iv.n != 1 else ''}")
    if s:
        return Verdict(s, f"{numbers}: {positive if s > 0 else negative}", numbers)
    why = "one seed gives no interval" if iv.n == 1 else "the interval contains 0"
    return Verdict(0, f"{numbers}: inconclusive ({why})", numbers)


def p_value(iv: Interval) -> float:
    """Two-sided one-sample t-test of mean 0 over the interval's seeds (the test its t interval inverts)."""
    if iv.n < 2:
        return 1.0
    if iv.sd == 0:
        return 0.0 if iv.mean != 0 else 1.0
    return float(2 * _st.t.sf(abs(iv.mean) / (iv.sd / math.sqrt(iv.n)), iv.n - 1))


def holm(pvalues: Mapping[object, float], alpha: float = 1 - LEVEL) -> dict[object, bool]:
    """Holm's step-down test over a family: key -> whether its null is rejected at family-wise error ``alpha``."""
    order = sorted(pvalues, key=lambda k: pvalues[k])
    rejected = {k: False for k in pvalues}
    for i, k in enumerate(order):
        if pvalues[k] > alpha / (len(order) - i):
            break
        rejected[k] = True
    return rejected


def corrected_signs(intervals: Mapping[object, Interval], decimals: int = 2) -> dict[object, int]:
    """Each member's :func:`sign`, kept only where Holm's correction over the whole family still rejects 0."""
    alpha = 1 - next(iter(intervals.values())).level if intervals else 1 - LEVEL
    rejected = holm({k: p_value(iv) for k, iv in intervals.items()}, alpha)
    return {k: sign(iv, decimals) if rejected[k] else 0 for k, iv in intervals.items()}


@dataclass(frozen=True)
class Robustness:
    """One verdict under every declared analysis variant: variant -> interval and its :func:`sign`; ``robust`` when
    every variant's sign is the declared one's."""

    estimates: dict
    signs: dict

    @property
    def robust(self) -> bool:
        return len(set(self.signs.values())) == 1

    @property
    def word(self) -> str:
        return "robust" if self.robust else "fragile"

    @property
    def span(self) -> tuple[float, float]:
        """The smallest and largest estimate (mean) over the variants."""
        means = [iv.mean for iv in self.estimates.values()]
        return min(means), max(means)


def robustness(estimates: Mapping[str, Interval], decimals: int = 2) -> Robustness:
    """:class:`Robustness` of one verdict from its interval under each variant (the first is the declared one)."""
    if not estimates:
        raise ValueError("estimates must hold the declared variant's interval at least, got none")
    return Robustness(dict(estimates), {k: sign(iv, decimals) for k, iv in estimates.items()})


def drop_verdict(iv: Interval, *, target: str, decimals: int = 2) -> Verdict:
    """The book's sentence for a late drop in points (see :func:`selected_drop`)."""
    return verdict(iv, quantity=f"late drop on {target}", decimals=decimals,
                   positive="transfer falls after its validation-selected peak",
                   negative="transfer rises after its validation-selected peak")


@dataclass(frozen=True)
class Mechanism:
    """Intervals of transfer's late drop and of I(X;T)'s fall from the same peak epoch to the last; ``coincides``
    only when both lie above 0; ``peak_epochs``: seed -> the start of its late phase."""

    transfer: Interval
    compression: Interval
    coincides: bool
    text: str
    peak_epochs: dict


def mechanism_verdict(curves: Mapping[object, tuple[Sequence[int], Sequence[float], Sequence[float], Sequence[float]]],
                      *, n_val: int, target: str, transfer_scale: float = 100.0, transfer_unit: str = "points",
                      info_unit: str = "bits", level: float = LEVEL, decimals: int = 2,
                      rule: str = "one_se") -> Mechanism:
    """Does I(X;T) fall over the epochs in which transfer falls? ``curves``: seed -> (epochs, val, test, ixt); per
    seed, transfer's drop and I(X;T)'s fall from transfer's validation-selected peak to the last epoch."""
    drops, falls, peaks, last = {}, {}, {}, {}
    for s, (epochs, val, test, ixt) in curves.items():
        e, v, t, i = _curve(epochs, ("val", val), ("test", test), ("ixt", ixt))
        peak = peak_index(v, n_val, rule)
        drops[s] = (t[peak] - t[-1]) * transfer_scale
        falls[s] = i[peak] - i[-1]
        peaks[s], last[s] = int(e[peak]), int(e[-1])
    transfer, compression = t_interval(drops, level), t_interval(falls, level)
    vt = verdict(transfer, quantity=f"late drop of transfer on {target}", unit=transfer_unit, decimals=decimals)
    vc = verdict(compression, quantity="fall of I(X;T) over the same epochs", unit=info_unit, decimals=decimals)
    both = f"{vt.numbers}; {vc.numbers}"
    if vt.sign > 0 and vc.sign > 0:
        return Mechanism(transfer, compression, True,
                         f"{both}: transfer falls after its peak and I(X;T) falls over the same epochs; the fall "
                         f"of transferability co-occurs with compression, as the paper's mechanism predicts (a "
                         f"co-occurrence: both also move with the epoch, so it does not show a cause)", peaks)
    if all(peaks[s] == last[s] for s in peaks):
        text = ("transfer's validation peak (one-standard-error rule) is the last probed epoch on every seed: there is "
                "no late phase, so no late loss of transferability for compression to explain")
    elif vt.sign > 0 and vc.sign < 0:
        text = "transfer falls after its peak while I(X;T) rises: the opposite of the paper's mechanism"
    elif vt.sign > 0:
        text = "transfer falls after its peak; whether I(X;T) falls with it is inconclusive"
    elif vt.sign < 0:
        text = ("transfer rises after its validation-selected peak, so there is no late loss of transferability for "
                "compression to explain" + ("; I(X;T) falls meanwhile, the opposite of the mechanism"
                                             if vc.sign > 0 else ""))
    else:
        text = "no late loss of transferability is distinguishable from noise, so the mechanism cannot be tested"
    return Mechanism(transfer, compression, False, f"{both}: {text}", peaks)


# --- correlation -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Correlation:
    """Within-seed Pearson ``r`` (each seed centred on its own means, then pooled) with a bootstrap-over-seeds
    percentile interval [``low``, ``high``] (NaN with fewer than 2 seeds)."""

    r: float
    low: float
    high: float
    n_seeds: int
    n_boot: int
    level: float = LEVEL


def _residuals(a: np.ndarray, z: np.ndarray | None) -> np.ndarray:
    """``a`` minus its least-squares fit on an intercept (and on ``z``, the control, when given)."""
    if z is None:
        return a - a.mean()
    design = np.column_stack([np.ones_like(z), z])
    return a - design @ np.linalg.lstsq(design, a, rcond=None)[0]


def _within_r(xs: list[np.ndarray], ys: list[np.ndarray], zs: list | None = None) -> float:
    zs = zs or [None] * len(xs)
    x = np.concatenate([_residuals(a, z) for a, z in zip(xs, zs)])
    y = np.concatenate([_residuals(b, z) for b, z in zip(ys, zs)])
    den = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 1e-24 else math.nan


def bootstrap_correlation(x: Mapping[object, Sequence[float]], y: Mapping[object, Sequence[float]], *,
                          given: Mapping[object, Sequence[float]] | None = None, n_boot: int = 2000, seed: int = 0,
                          level: float = LEVEL) -> Correlation:
    """Correlation of ``x`` and ``y`` (seed -> per-epoch values), partial on ``given`` (seed -> the control, e.g. the
    epoch) when given: each seed's values minus their linear fit on it; the bootstrap resamples whole seeds."""
    if set(x) != set(y) or (given is not None and set(given) != set(x)):
        raise ValueError(f"x, y (and given) must hold the same seeds, got {sorted(x)} and {sorted(y)}")
    seeds = sorted(x)
    xs = [np.asarray(x[s], dtype=float) for s in seeds]
    ys = [np.asarray(y[s], dtype=float) for s in seeds]
    zs = None if given is None else [np.asarray(given[s], dtype=float) for s in seeds]
    for i, (s, a, b) in enumerate(zip(seeds, xs, ys)):
        if a.shape != b.shape or a.ndim != 1 or a.size < 2 or (zs is not None and zs[i].shape != a.shape):
            raise ValueError(f"seed {s}: x and y (and given) need the same number (>= 2) of epochs, got "
                             f"{a.shape} and {b.shape}")
    r = _within_r(xs, ys, zs)
    if len(seeds) < 2:
        return Correlation(r, math.nan, math.nan, len(seeds), 0, level)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(seeds), len(seeds))
        rb = _within_r([xs[i] for i in pick], [ys[i] for i in pick], None if zs is None else [zs[i] for i in pick])
        if math.isfinite(rb):
            boots.append(rb)
    if not boots:
        return Correlation(r, math.nan, math.nan, len(seeds), 0, level)
    low, high = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return Correlation(r, float(low), float(high), len(seeds), len(boots), level)
