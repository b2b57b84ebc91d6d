"""Chapter 3: CTC against the cross-entropy baseline and the controls that separate its causes.

Every comparison (:data:`COMPARISONS`) is paired by seed on the seeds and probed epochs both methods share;
accuracies in the curve tables are fractions, in the reports percent, differences in points.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import pandas as pd

from .. import stats
from ..config import CTCConfig, StageSchedule, TrainConfig
from ..results import findings, holm_rows, paired_rows, panel, robust_text, row_key, seed_measures

BASELINE, CTC, SCHEDULE = "baseline", "CTC", "schedule only"
DISCRIM, STAGE1, STAGE2 = "CTC (discriminability)", "stage-1 loss only", "stage-2 loss only"
MAIN_METHODS = (BASELINE, CTC, SCHEDULE)
#: The chapter's paired comparisons (a minus b), in the order the page lists them.
COMPARISONS = ((CTC, BASELINE), (CTC, SCHEDULE), (SCHEDULE, BASELINE), (DISCRIM, BASELINE), (STAGE1, SCHEDULE),
               (STAGE2, SCHEDULE), (STAGE1, CTC), (STAGE2, CTC))


def ctc_config(base: TrainConfig, *, stage_two_epoch: int, weight_decay_coef: float, lr_restart: float,
               **ctc_fields) -> TrainConfig:
    """The cross-entropy config ``base`` turned into CTC (schedule and losses of CTCConfig), all else unchanged."""
    schedule = "paper_two_stage" if base.schedule == "paper_cosine" else "two_stage"
    return base.replace(objective="ctc", schedule=schedule, lr_floor=0.0,
                        stages=StageSchedule(stage_two_epoch, weight_decay_coef, lr_restart),
                        ctc=CTCConfig(**ctc_fields))


def schedule_only(config: TrainConfig) -> TrainConfig:
    """Cross-entropy with CTC's two-stage schedule: bitwise CTC with both loss weights 0, at a plain run's cost."""
    if config.ctc is None:
        raise ValueError(f"schedule_only needs a CTC config, got objective {config.objective!r}")
    return config.replace(objective="ce", ctc=None)


def with_weights(config: TrainConfig, **fields) -> TrainConfig:
    """``config`` with some CTC fields replaced (e.g. ``beta=0.0`` for the stage-1-loss-only ablation)."""
    if config.ctc is None:
        raise ValueError(f"with_weights needs a CTC config, got objective {config.objective!r}")
    unknown = set(fields) - set(config.ctc.__dict__)
    if unknown:
        raise ValueError(f"fields must be CTCConfig fields, got {sorted(unknown)}")
    return config.replace(ctc=CTCConfig(**{**config.ctc.__dict__, **fields}))


def chapter_configs(base: TrainConfig, ctc: TrainConfig, *, seeds: Sequence[int], discrim: Mapping[str, float],
                    discrim_seeds: Sequence[int], ablation_seeds: Sequence[int]) -> dict[str, list[TrainConfig]]:
    """Every run of the chapter per method (methods with no seeds left out)."""
    if ctc.ctc is None or base.objective != "ce":
        raise ValueError("chapter_configs needs a cross-entropy base and a CTC config")
    configs = {BASELINE: [base.replace(seed=s) for s in seeds], CTC: [ctc.replace(seed=s) for s in seeds],
               SCHEDULE: [schedule_only(ctc).replace(seed=s) for s in seeds],
               DISCRIM: [with_weights(ctc, **discrim).replace(seed=s) for s in discrim_seeds],
               STAGE1: [with_weights(ctc, beta=0.0).replace(seed=s) for s in ablation_seeds],
               STAGE2: [with_weights(ctc, alpha=0.0).replace(seed=s) for s in ablation_seeds]}
    return {name: cs for name, cs in configs.items() if cs}


#: The comparisons the robustness panel checks (:data:`ctcbook.results.VARIANTS`), on final transfer and late drop.
HEADLINE = ((CTC, BASELINE), (CTC, SCHEDULE))


def _probed_epochs(table: pd.DataFrame, method: str) -> set:
    return set(table[(table.method == method) & (table.target != "source")].epoch)


def comparisons(table: pd.DataFrame, targets: Sequence[str], pairs: Iterable[tuple[str, str]] = COMPARISONS,
                quantities: Sequence[str] = ("source_final", "final", "drop"), column: str = "probe_acc",
                val_column: str | None = "val_acc", rule: str = "one_se") -> list[dict]:
    """:func:`ctcbook.results.paired_rows` for each pair in ``table`` on the probed epochs both methods share, with
    their Holm-corrected signs (all of them one family)."""
    rows = []
    methods = set(table.method)
    for a, b in pairs:
        if a not in methods or b not in methods:
            continue
        shared = _probed_epochs(table, a) & _probed_epochs(table, b)
        pair = table[table.method.isin([a, b])]
        pair = pair[(pair.target == "source") | pair.epoch.isin(shared)]
        m = seed_measures(pair, targets, column, val_column, rule=rule)
        rows += paired_rows(m, a, b, targets, quantities)
    return holm_rows(rows)


def headline_panel(table: pd.DataFrame, targets: Sequence[str]) -> dict[str, stats.Robustness]:
    """:data:`HEADLINE`'s final-transfer and late-drop differences under every analysis variant, by
    :func:`ctcbook.results.row_key`."""
    def estimate(t, test, val, rule):
        rows = comparisons(t, targets, HEADLINE, ("final", "drop"), test, val, rule)
        return {row_key(r): r["interval"] for r in rows}
    return panel(table[table.method.isin([m for pair in HEADLINE for m in pair])], estimate)


def _find(rows: Sequence[dict], a: str, b: str, target: str, quantity: str) -> dict | None:
    return next((r for r in rows if (r["a"], r["b"], r["target"], r["quantity"]) == (a, b, target, quantity)), None)


def headline_markdown(rows: Sequence[dict], targets: Sequence[str]) -> str:
    """CTC's source-accuracy cost against the baseline, then per target its late drop and final transfer."""
    src = _find(rows, CTC, BASELINE, "source", "source_final")
    if src is None:
        return "CTC and the baseline share no seed: nothing to compare."
    iv = src["interval"]
    cost = {1: "gains", -1: "costs", 0: "changes"}[src["sign"]]
    parts = [f"**CTC {cost} source accuracy against the baseline: {iv.mean:+.2f} points, 95% CI "
             f"{stats.brackets(iv)} over {iv.n} paired seeds**" + (" (inconclusive: the interval contains 0)."
                                                               if src["sign"] == 0 else ".")]
    for key in targets:
        d, f = _find(rows, CTC, BASELINE, key, "drop"), _find(rows, CTC, BASELINE, key, "final")
        s = _find(rows, SCHEDULE, BASELINE, key, "final")
        if d is None or f is None:
            continue
        bits = [f"late drop {_said(d)}", f"final transfer {_said(f)}"]
        if s is not None:
            bits.append(f"the schedule alone moves final transfer by {_said(s)}")
        parts.append(f"On `{key}`, CTC − baseline: " + "; ".join(bits) + ".")
    return " ".join(parts)


def _said(row: dict) -> str:
    iv = row["interval"]
    holm = f", not after Holm's correction over {row['family']} comparisons" if row["sign"] and not row["holm"] else ""
    robust = f", {robust_text(row['robustness'])}" if row.get("robustness") else ""
    said = ", inconclusive" if row["sign"] == 0 else holm
    return f"{iv.mean:+.2f} points, 95% CI {stats.brackets(iv)}{said}{robust}"


def findings_markdown(rows: Sequence[dict], targets: Sequence[str], stage_text: str | None = None) -> str:
    """The closing box's list, from ``rows`` (:func:`comparisons`) and the stage sentence."""
    lines = []
    for a, b, what in ((CTC, SCHEDULE, "the CTC losses on top of their schedule"),
                       (STAGE1, SCHEDULE, "the stage-1 loss alone"), (STAGE2, SCHEDULE, "the stage-2 loss alone"),
                       (DISCRIM, BASELINE, "the discriminability setting against the baseline")):
        bits = [f"`{key}` {_said(r)}" for key in targets if (r := _find(rows, a, b, key, "final")) is not None]
        src = _find(rows, a, b, "source", "source_final")
        if bits:
            lead = f"source {_said(src)}; " if src is not None else ""
            lines.append(f"{what} ({a} − {b}): {lead}final transfer " + ", ".join(bits) + ".")
    lines += [f"What carries the gain on `{key}`: {text}" for key in targets if (text := carrier(rows, key))]
    return findings(lines + ([stage_text] if stage_text else []))


def carrier(rows: Sequence[dict], key: str) -> str | None:
    """The chapter's reading of the ablations on ``key``: does either stage's loss alone reproduce CTC's final-transfer
    gain over its schedule? A rule on the uncorrected verdicts, fixed before the numbers; None without the rows."""
    gain = _find(rows, CTC, SCHEDULE, key, "final")
    alone = {stage: _find(rows, name, SCHEDULE, key, "final") for stage, name in (("1", STAGE1), ("2", STAGE2))}
    if gain is None or None in alone.values():
        return None
    if gain["sign"] <= 0:
        return (f"nothing to attribute: CTC's losses add no final transfer over their schedule that the seeds can "
                f"show ({_said(gain)}).")
    seeds = min(len(r["seeds"]) for r in alone.values())
    alone_text = "; ".join(f"stage {k}'s loss alone {_said(r)}" for k, r in alone.items())
    gains = [k for k, r in alone.items() if r["sign"] > 0]
    reading = (f"stage {gains[0]}'s loss alone reproduces a gain and stage {'2' if gains[0] == '1' else '1'}'s does "
               f"not, so the gain goes with stage {gains[0]}" if len(gains) == 1 else
               "either stage's loss alone reproduces a gain, so neither is needed on its own" if gains else
               "neither stage's loss alone reproduces a gain the seeds can show: the gain needs both, or the "
               "ablations' seeds are too few to tell")
    return (f"CTC's losses add final transfer over their schedule ({_said(gain)}); {alone_text}: {reading} (the "
            f"ablations have {seeds} seeds, the headline comparison {len(gain['seeds'])}).")


# --- I(X;T) during training ----------------------------------------------------------------------------------------
#: Decimals of the stage changes of I(X;T) (bits): the table prints them and its verdicts are decided on them.
STAGE_DECIMALS = 3


def stage_information(info: pd.DataFrame, methods: Sequence[str], switch_epoch: int) -> list[dict]:
    """The change of the source test split's Renyi I(X;T) (bits) over each stage per method, and CTC − baseline."""
    g = info[(info.estimator == "renyi") & (info.split == "source") & (info.layer == "penultimate")]
    per = {}
    for (method, seed), e in g.groupby(["method", "seed"]):
        e = e.sort_values("epoch")
        before = e[e.epoch <= switch_epoch]
        if before.empty or e.epoch.max() <= switch_epoch:
            continue
        first, mid, last = e.i_xt.iloc[0], before.i_xt.iloc[-1], e.i_xt.iloc[-1]
        per.setdefault(method, {})[seed] = {"stage 1": mid - first, "stage 2": last - mid}
    intervals = [(m, stage, stats.t_interval({s: v[stage] for s, v in per[m].items()}))
                 for m in methods if m in per for stage in ("stage 1", "stage 2")]
    if len(methods) >= 2 and methods[0] in per and methods[1] in per:
        a, b = methods[1], methods[0]
        common = sorted(set(per[a]) & set(per[b]))
        intervals += [(f"{a} − {b}", stage, stats.paired_interval({s: per[a][s][stage] for s in common},
                                                                   {s: per[b][s][stage] for s in common}))
                      for stage in ("stage 1", "stage 2") if common]
    return [{"method": m, "stage": stage, "interval": iv, "sign": stats.sign(iv, STAGE_DECIMALS)}
            for m, stage, iv in intervals]


def stage_table(rows: Sequence[dict]) -> pd.DataFrame:
    """:func:`stage_information` as a page table (human column names; show without the index)."""
    return pd.DataFrame([{"method": r["method"], "stage": r["stage"],
                          "change of I(X;T) (bits)": f"{r['interval'].mean:+.{STAGE_DECIMALS}f}",
                          "95% CI (bits)": stats.brackets(r["interval"], STAGE_DECIMALS), "seeds": r["interval"].n,
                          "verdict": {1: "rises", -1: "falls", 0: "inconclusive (CI contains 0)"}[r["sign"]]}
                         for r in rows])


def stage_information_markdown(rows: Sequence[dict], a: str = CTC, b: str = BASELINE) -> str:
    """Which stages move I(X;T) differently for ``a`` than for ``b`` (paired interval excludes 0), in words."""
    diff = [r for r in rows if r["method"] == f"{a} − {b}"]
    if not diff:
        return f"I(X;T): {a} and {b} share no seed measured on both sides of the switch."
    moved = [r for r in diff if r["sign"] != 0]
    numbers = "; ".join(f"{r['stage']} {r['interval'].mean:+.{STAGE_DECIMALS}f} bits, 95% CI "
                        f"{stats.brackets(r['interval'], STAGE_DECIMALS)}" for r in diff)
    if not moved:
        return (f"I(X;T) on the source test split: neither stage changes it differently for {a} than for {b} beyond "
                f"the seeds' spread ({a} − {b}, change over each stage: {numbers}).")
    said = " and ".join(f"{r['stage']} ({'raises' if r['sign'] > 0 else 'lowers'} it)" for r in moved)
    return (f"I(X;T) on the source test split: {said} for {a} relative to {b} ({a} − {b}, change over each stage: "
            f"{numbers}).")
