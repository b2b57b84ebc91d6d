"""Results tables of methods trained on the same seeds: per-seed measures of a probe table, their Student-t
intervals and paired differences (:mod:`ctcbook.stats`). Accuracies in percent, differences and drops in points.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import pandas as pd

from . import stats

#: Per-seed quantities of :func:`seed_measures`, with the names the pages print.
QUANTITIES = {
    "source_final": "final source accuracy (%)",
    "final": "final transfer (%)",
    "selected": "transfer at the validation-selected epoch (%)",
    "best": "best probed transfer, max of test (optimistic) (%)",
    "drop": "late drop (points)",
    "naive_drop": "max-of-test drop (naive, points)",
}

#: A late drop needs an epoch between the first and last probed to peak at: runs probed at fewer (chapter 3's thinned
#: secondary runs) have no drop measures, and the pages print "not measured".
LATE_DROP_MIN_EPOCHS = 3
NOT_MEASURED = "not measured"


def val_size(rows: pd.DataFrame) -> int:
    """The number of validation images behind one target's ``val_acc`` rows (one split for every seed and epoch)."""
    sizes = rows["n_val"].dropna().unique() if "n_val" in rows else []
    if len(sizes) != 1:
        raise ValueError(f"the probe rows must hold one validation size ('n_val'), got {list(sizes)}")
    return int(sizes[0])


def method_table(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-method probe tables with a ``method`` column."""
    if not tables:
        raise ValueError("tables must name at least one method")
    return pd.concat([t.assign(method=name) for name, t in tables.items()], ignore_index=True)


def seed_measures(table: pd.DataFrame, targets: Sequence[str], column: str = "probe_acc",
                  val_column: str | None = "val_acc", epochs: Sequence[int] | None = None,
                  rule: str = "one_se") -> pd.DataFrame:
    """One ``value`` per (method, seed, target, quantity); without ``val_column`` no validation-selected quantities,
    with fewer than :data:`LATE_DROP_MIN_EPOCHS` probed epochs no drops; ``epochs`` keeps only those epochs; ``rule``
    picks peaks (:func:`ctcbook.stats.peak_index`)."""
    if column not in table:
        raise ValueError(f"column must be a column of the curve table, got {column!r}")
    if epochs is not None:
        table = table[table.epoch.isin(list(epochs))]
    rows = []
    for (method, seed), m in table.groupby(["method", "seed"], sort=False):
        src = m[m.target == "source"].sort_values("epoch")
        if not src.empty:
            rows.append((method, seed, "source", "source_final", 100 * float(src.test_acc.iloc[-1])))
        for key in targets:
            g = m[m.target == key].sort_values("epoch")
            if g.empty or g[column].isna().all():
                continue
            test = g[column].to_numpy(dtype=float)
            late = len(test) >= LATE_DROP_MIN_EPOCHS
            rows += [(method, seed, key, "final", 100 * test[-1]), (method, seed, key, "best", 100 * test.max())]
            if late:
                rows.append((method, seed, key, "naive_drop", 100 * stats.naive_drop(test)))
            if val_column and val_column in g and not g[val_column].isna().any():
                d = stats.selected_drop(g.epoch.to_numpy(), g[val_column].to_numpy(dtype=float), test, val_size(g),
                                        rule)
                at_peak = float(test[list(g.epoch).index(d.peak_epoch)])
                rows.append((method, seed, key, "selected", 100 * at_peak))
                if late:
                    rows.append((method, seed, key, "drop", 100 * d.drop))
    return pd.DataFrame(rows, columns=["method", "seed", "target", "quantity", "value"])


def _per_seed(measures: pd.DataFrame, method: str, target: str, quantity: str) -> dict:
    g = measures[(measures.method == method) & (measures.target == target) & (measures.quantity == quantity)]
    return dict(zip(g.seed, g.value))


def interval_table(measures: pd.DataFrame, quantities: Sequence[str] = tuple(QUANTITIES)) -> pd.DataFrame:
    """Per method, target and quantity (key of :data:`QUANTITIES`): mean over seeds with its 95% Student-t interval."""
    rows = []
    for (method, target, quantity), g in measures.groupby(["method", "target", "quantity"], sort=False):
        if quantity not in quantities:
            continue
        iv = stats.t_interval(g.value.to_numpy())
        rows.append({"method": method, "target": target, "quantity": quantity, "mean": iv.mean, "low": iv.low,
                     "high": iv.high, "seeds": iv.n})
    order = {q: i for i, q in enumerate(quantities)}
    out = pd.DataFrame(rows, columns=["method", "target", "quantity", "mean", "low", "high", "seeds"])
    return out.sort_values(["target", "quantity"], key=lambda c: c.map(order) if c.name == "quantity" else c,
                           kind="stable", ignore_index=True)


def shown_intervals(intervals: pd.DataFrame, decimals: int = 1) -> pd.DataFrame:
    """:func:`interval_table` as a page table: "mean [low, high]" per method (:data:`NOT_MEASURED` where absent)."""
    cells = intervals.assign(cell=[f"{m:.{decimals}f} [{lo:.{decimals}f}, {hi:.{decimals}f}]" if n > 1 else
                                   f"{m:.{decimals}f} (1 seed)"
                                   for m, lo, hi, n in zip(intervals["mean"], intervals.low, intervals.high,
                                                           intervals.seeds)])
    wide = cells.pivot_table(index=["target", "quantity"], columns="method", values="cell", aggfunc="first",
                             sort=False).reset_index()
    wide["quantity"] = wide.quantity.map(QUANTITIES)
    wide = wide.fillna(NOT_MEASURED)
    methods = list(dict.fromkeys(intervals.method))
    wide.columns.name = None
    return wide[["target", "quantity", *[m for m in methods if m in wide.columns]]].rename(
        columns={m: f"{m}: mean [95% CI]" for m in methods})


_WORDS = {"source_final": "source accuracy", "final": "final transfer", "selected": "transfer at the selected epoch",
          "best": "best probed transfer", "drop": "late drop", "naive_drop": "naive drop"}


def paired_rows(measures: pd.DataFrame, a: str, b: str, targets: Sequence[str],
                quantities: Sequence[str] = ("source_final", "final", "drop"), decimals: int = 2) -> list[dict]:
    """Paired differences ``a`` minus ``b`` on the seeds both have, per (target, quantity): interval, seeds, verdict."""
    rows = []
    for target in ["source", *targets]:
        for quantity in quantities:
            if (target == "source") != (quantity == "source_final"):
                continue
            va, vb = _per_seed(measures, a, target, quantity), _per_seed(measures, b, target, quantity)
            common = sorted(set(va) & set(vb))
            if not common:
                continue
            iv = stats.paired_interval({s: va[s] for s in common}, {s: vb[s] for s in common})
            more, less = ("larger", "smaller") if quantity.endswith("drop") else ("higher", "lower")
            v = stats.verdict(iv, quantity=f"{a} − {b}, {QUANTITIES[quantity].split(' (')[0]}"
                              + ("" if target == "source" else f" on {target}"), decimals=decimals,
                              positive=f"{a} has the {more} {_WORDS[quantity]}",
                              negative=f"{a} has the {less} {_WORDS[quantity]}")
            rows.append({"comparison": f"{a} − {b}", "a": a, "b": b, "target": target, "quantity": quantity,
                         "interval": iv, "seeds": common, "sign": v.sign, "text": v.text})
    return rows


def holm_rows(rows: Sequence[dict], decimals: int = 2) -> list[dict]:
    """``rows`` with ``holm``: each verdict's sign after Holm's correction over all of them (one family, ``family``
    long)."""
    family = {i: r["interval"] for i, r in enumerate(rows) if len(r["seeds"]) > 1}
    signs = stats.corrected_signs(family, decimals)
    return [{**r, "holm": signs.get(i, 0), "family": len(family)} for i, r in enumerate(rows)]


def paired_table(rows: Sequence[dict], decimals: int = 2) -> pd.DataFrame:
    """:func:`paired_rows` as a page table (no index); the table's rows are one family for Holm's correction."""
    verdict = {1: "above 0", -1: "below 0", 0: "inconclusive (CI contains 0)"}
    rows = holm_rows(rows, decimals)
    family = rows[0]["family"] if rows else 0
    panel = any(r.get("robustness") for r in rows)
    return pd.DataFrame([{"comparison": r["comparison"], "target": r["target"],
                          "quantity": QUANTITIES[r["quantity"]].replace("(%)", "(points)"),
                          "mean difference": f"{r['interval'].mean:+.{decimals}f}",
                          "95% CI": stats.brackets(r["interval"], decimals), "seeds": len(r["seeds"]),
                          "verdict": verdict[stats.sign(r["interval"], decimals)] if len(r["seeds"]) > 1 else
                          "no interval (one seed)",
                          f"Holm over {family} rows": verdict[r["holm"]] if len(r["seeds"]) > 1 else "",
                          **({"analysis variants": r["robustness"].word if r.get("robustness") else ""} if panel
                             else {})}
                         for r in rows])


def findings(items: Iterable[str]) -> str:
    """A chapter's "What this chapter found" list: one Markdown bullet per computed sentence."""
    return "\n".join(f"- {item}" for item in items)


# --- the robustness panel ------------------------------------------------------------------------------------------
#: The analysis variants every headline verdict is recomputed under, fixed before the numbers they judge: name ->
#: (test column, validation column, peak rule of :func:`ctcbook.stats.peak_index`); the first is the book's analysis.
VARIANTS = {
    "declared": ("probe_acc", "val_acc", "one_se"),
    "ties to the earliest epoch": ("probe_acc", "val_acc", "earliest"),
    "ties to the latest epoch": ("probe_acc", "val_acc", "latest"),
    **{f"validation draw {i}": (f"probe_acc_draw{i}", f"val_acc_draw{i}", "one_se") for i in (1, 2, 3)},
    "scikit-learn's solver": ("probe_acc_sklearn", "val_acc_sklearn", "one_se"),
    "half-decade grid": ("probe_acc_grid", "val_acc_grid", "one_se"),
    "paper's probe (last epoch)": ("probe_acc_paper", "val_acc", "one_se"),
}


def panel(table: pd.DataFrame, estimate: Callable[..., Mapping[object, stats.Interval]],
          decimals: int = 2) -> dict[object, stats.Robustness]:
    """Every verdict of ``estimate(table, test_column, val_column, rule)`` (key -> interval) under each of
    :data:`VARIANTS` whose columns ``table`` holds with a value in every row that has the declared test column."""
    declared = VARIANTS["declared"][0]
    have = table[table[declared].notna()] if declared in table else table
    per = {name: estimate(table, test, val, rule) for name, (test, val, rule) in VARIANTS.items()
           if all(c in have and have[c].notna().all() for c in (test, val))}
    return {key: stats.robustness({name: est[key] for name, est in per.items() if key in est}, decimals)
            for key in per.get("declared", {})}


def robust_text(p: stats.Robustness, decimals: int = 2) -> str:
    """"robust (all 9 analysis variants agree)" or "fragile (2 of 9 analysis variants disagree: name +x [a, b]; ..)"."""
    declared = next(iter(p.signs.values()))
    off = [v for v, s in p.signs.items() if s != declared]
    if not off:
        return f"robust (all {len(p.signs)} analysis variants agree)"
    return (f"fragile ({len(off)} of {len(p.signs)} analysis variants disagree: " + "; ".join(
        f"{v} {p.estimates[v].mean:+.{decimals}f} {stats.brackets(p.estimates[v], decimals)}" for v in off) + ")")


def row_key(row: dict) -> str:
    """A paired row's name in a robustness panel: "a − b: quantity on target"."""
    return f"{row['comparison']}: {_WORDS[row['quantity']]} on {row['target']}"


def with_panel(rows: Sequence[dict], panels: Mapping[str, stats.Robustness]) -> list[dict]:
    """``rows`` (:func:`paired_rows`) with ``robustness``: the :class:`~ctcbook.stats.Robustness` of each panel row."""
    return [{**r, "robustness": panels.get(row_key(r))} for r in rows]


def panel_table(panels: Mapping[object, stats.Robustness], decimals: int = 2) -> pd.DataFrame:
    """One row per verdict: robust or fragile, the span of its estimate, and each variant's "mean [95% CI]"."""
    rows = []
    for key, p in panels.items():
        low, high = p.span
        rows.append({"verdict": key, "robust or fragile": p.word,
                     "estimate across variants": f"{low:+.{decimals}f} to {high:+.{decimals}f}",
                     **{v: f"{iv.mean:+.{decimals}f} {stats.brackets(iv, decimals)}" for v, iv in p.estimates.items()}})
    return pd.DataFrame(rows).fillna(NOT_MEASURED)
