"""Chapter 3's experiment: CTC against the cross-entropy baseline, the numbers it reports and the text around them.

Tables follow :func:`ctcbook.chapters.ch1_tradeoff.curves` (columns seed, epoch, target, accuracies as fractions) with an extra
``method`` column. Drops are in percentage points, from the seed's peak probed epoch to its last.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..config import CTCConfig, StageSchedule, TrainConfig
from .ch1_tradeoff import summarize
from .ch5_transfer import method_table


def ctc_config(base: TrainConfig, *, stage_two_epoch: int, weight_decay_coef: float, lr_restart: float,
               **ctc_fields) -> TrainConfig:
    """``base`` (a cross-entropy config) turned into CTC: two-stage schedule, CTC losses (fields of
    :class:`~ctcbook.config.CTCConfig`); everything else (data, model, lr, epochs, seed) unchanged."""
    return base.replace(objective="ctc", schedule="two_stage",
                        stages=StageSchedule(stage_two_epoch, weight_decay_coef, lr_restart),
                        ctc=CTCConfig(**ctc_fields))


def scaled(config: TrainConfig, scale: float) -> TrainConfig:
    """``config`` with both loss weights (alpha and beta) multiplied by ``scale`` (>= 0)."""
    if config.ctc is None:
        raise ValueError(f"scaled needs a CTC config, got objective {config.objective!r}")
    if not scale >= 0:
        raise ValueError(f"scale must be >= 0, got {scale}")
    return config.replace(ctc=config.ctc.__class__(**{**config.ctc.__dict__, "alpha": config.ctc.alpha * scale,
                                                       "beta": config.ctc.beta * scale}))


#: Concatenate curve tables (one per method name) with a ``method`` column: chapter 5's
#: :func:`ctcbook.chapters.ch5_transfer.method_table`, one implementation for both chapters.
with_method = method_table


def compare(table: pd.DataFrame, column: str = "probe_acc") -> pd.DataFrame:
    """Per method and target, over seeds: peak-to-final drop (points) mean, std, min, max; final probe accuracy
    (%) mean and std; peak epochs; final source accuracy (%) mean and std. ``table`` from :func:`with_method`."""
    rows = []
    for method, g in table.groupby("method", sort=False):
        s = summarize(g.drop(columns="method"), column)
        s = s[s.seed != "mean"]
        for target, t in s.groupby("target", sort=False):
            rows.append({"method": method, "target": target, "seeds": len(t),
                         "drop_mean": t.drop_points.mean(), "drop_std": _std(t.drop_points),
                         "drop_min": t.drop_points.min(), "drop_max": t.drop_points.max(),
                         "final_mean": 100 * t.final.mean(), "final_std": 100 * _std(t.final),
                         "peak_mean": 100 * t.peak.mean(), "peak_epochs": list(t.peak_epoch),
                         "source_final_mean": 100 * t.source_final.mean(),
                         "source_final_std": 100 * _std(t.source_final)})
    return pd.DataFrame(rows)


def _std(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def verdict_markdown(comparison: pd.DataFrame, baseline: str, method: str) -> str:
    """One paragraph per target: did ``method`` reduce the late loss of transferability against ``baseline``, by how
    much, and is the difference larger than the seeds' spread (the standard error of the difference of means)."""
    paragraphs = []
    base = comparison[comparison.method == baseline].set_index("target")
    other = comparison[comparison.method == method].set_index("target")
    for target in other.index:
        b, o = base.loc[target], other.loc[target]
        diff = b.drop_mean - o.drop_mean
        se = float(np.sqrt(b.drop_std ** 2 / b.seeds + o.drop_std ** 2 / o.seeds))
        final = o.final_mean - b.final_mean
        se_final = float(np.sqrt(b.final_std ** 2 / b.seeds + o.final_std ** 2 / o.seeds))
        if not np.isfinite(se):
            clear = "(one seed each: no spread to compare with)"
        elif abs(diff) > 2 * se:
            clear = f"more than twice the standard error of that difference over seeds ({se:.2f} points)"
        else:
            clear = (f"within twice the standard error of that difference over seeds ({se:.2f} points), so not "
                     f"distinguishable from no effect")
        word = (f"reduced the late loss: its drop is {diff:.2f} points smaller" if diff > 0 else
                f"did not reduce the late loss: its drop is {-diff:.2f} points larger")
        paragraphs.append(
            f"**{target}**: the peak-to-final drop of the probe is {b.drop_mean:.2f} points for {baseline} "
            f"(seeds {b.drop_min:.2f} to {b.drop_max:.2f}) and {o.drop_mean:.2f} points for {method} (seeds "
            f"{o.drop_min:.2f} to {o.drop_max:.2f}): {method} {word}, "
            f"{clear}. Final probe accuracy: {b.final_mean:.2f}% vs {o.final_mean:.2f}% ({final:+.2f} points, "
            f"standard error {se_final:.2f}); final source accuracy {b.source_final_mean:.2f}% vs "
            f"{o.source_final_mean:.2f}%.")
    return "\n\n".join(paragraphs)


def sweep_table(tables: dict[float, pd.DataFrame], targets: Sequence[str], column: str = "probe_acc") -> pd.DataFrame:
    """One row per loss-weight scale (curve tables of one seed, keyed by scale): final source accuracy (%), and per
    target the final probe accuracy (%) and the drop from the best probed epoch to the last (points)."""
    rows = []
    for scale, t in sorted(tables.items()):
        src = t[t.target == "source"].sort_values("epoch")
        row = {"scale": scale, "source_final": 100 * src.test_acc.iloc[-1]}
        for key in targets:
            g = t[t.target == key].sort_values("epoch")
            row[f"{key} final"] = 100 * g[column].iloc[-1]
            row[f"{key} drop"] = 100 * (g[column].max() - g[column].iloc[-1])
        rows.append(row)
    return pd.DataFrame(rows)


def identical_weights(a: dict, b: dict) -> bool:
    """Whether two state dicts hold bitwise-identical tensors under the same names."""
    return a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def mean_information(info: pd.DataFrame, methods: Iterable[str], estimator: str = "renyi",
                     split: str = "source") -> pd.DataFrame:
    """Seed-mean I(X;T) and I(T;Y) (bits) of the penultimate layer per method and epoch, with the min-max over
    seeds. ``info`` holds :func:`ctcbook.chapters.ch2_information.information_curves` rows plus a ``method`` column."""
    methods = list(methods)
    g = info[(info.estimator == estimator) & (info.split == split) & (info.layer == "penultimate")
             & info.method.isin(methods)]
    out = g.groupby(["method", "epoch"]).agg(i_xt=("i_xt", "mean"), i_xt_min=("i_xt", "min"),
                                             i_xt_max=("i_xt", "max"), i_ty=("i_ty", "mean"),
                                             seeds=("seed", "nunique")).reset_index()
    order = {m: i for i, m in enumerate(methods)}  # rows in the order of ``methods`` (the figures' colours)
    return out.sort_values(["method", "epoch"], key=lambda c: c.map(order) if c.name == "method" else c,
                           ignore_index=True)


def schedule_markdown(sweep: pd.DataFrame, cosine: pd.DataFrame, targets: Sequence[str]) -> str:
    """How much of CTC's difference from the cosine baseline the schedule alone explains, on the sweep's seed:
    per target, final probe accuracy (%) and late drop (points) of the cosine baseline, of scale 0 (cross-entropy with
    CTC's schedule) and of scale 1 (CTC). ``sweep``/``cosine``: :func:`sweep_table` outputs (scales 0 and 1 needed)."""
    by_scale = sweep.set_index("scale")
    if 0.0 not in by_scale.index or 1.0 not in by_scale.index:
        return "The sweep needs scales 0 and 1 to separate the schedule's effect from the losses'."
    zero, one, cos = by_scale.loc[0.0], by_scale.loc[1.0], cosine.iloc[0]
    lines = [f"- source: final accuracy {cos.source_final:.2f}% (cosine baseline), {zero.source_final:.2f}% "
             f"(scale 0: CTC's schedule only), {one.source_final:.2f}% (CTC)."]
    for key in targets:
        f, d = f"{key} final", f"{key} drop"
        lines.append(
            f"- `{key}`: final probe {cos[f]:.2f}% / {zero[f]:.2f}% / {one[f]:.2f}% and late drop {cos[d]:.2f} / "
            f"{zero[d]:.2f} / {one[d]:.2f} points (cosine baseline / schedule only / CTC): the schedule alone moves "
            f"the final probe by {zero[f] - cos[f]:+.2f} points, the CTC losses on top of it by {one[f] - zero[f]:+.2f}.")
    return "\n".join(lines)
