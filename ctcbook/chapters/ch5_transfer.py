"""Chapter 5: which of the CTC abstract's claims held, from the paired results tables of :mod:`ctcbook.results`."""
from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from .. import stats
from ..results import findings, holm_rows, paired_rows, robust_text, with_panel

#: Source accuracy counts as kept when CTC − baseline's interval lies above -MARGIN points (non-inferiority): one
#: point, declared before the numbers, about the seed-to-seed spread of one run's source accuracy at this scale.
MARGIN = 1.0


def claims_markdown(measures: pd.DataFrame, baseline: str, method: str, targets: Sequence[str],
                    panel: Mapping[str, stats.Robustness] | None = None) -> str:
    """Which of the abstract's claims held: ``method`` - ``baseline`` paired on source accuracy, transfer, drop."""
    rows = {(r["target"], r["quantity"]): r for r in with_panel(holm_rows(paired_rows(
        measures, method, baseline, targets, ("source_final", "final", "drop"))), panel or {})}
    lines = []
    src = rows.get(("source", "source_final"))
    if src is not None:
        iv = src["interval"]
        status = ("held: the interval lies above the margin" if iv.low > -MARGIN else
                  "did not hold: the interval lies below the margin, it costs source accuracy" if iv.high < -MARGIN
                  else "inconclusive: the interval reaches below the margin")
        lines.append(f"**Discriminative** (source accuracy kept, within a non-inferiority margin of {MARGIN:g} point "
                     f"declared before the numbers): {status}. {src['text']}{_holm(src)}.")
    for key in targets:
        fin, drop = rows.get((key, "final")), rows.get((key, "drop"))
        if fin is not None:
            status = {1: "held", 0: "inconclusive", -1: "did not hold (transfer is lower)"}[fin["sign"]]
            lines.append(f"**Transferable** on `{key}` (final transfer gain): {status}. {fin['text']}{_holm(fin)}"
                         f"{_robust(fin)}.")
        if drop is not None:
            status = {-1: "held (a smaller late drop)", 0: "inconclusive",
                      1: "did not hold (a larger late drop)"}[drop["sign"]]
            lines.append(f"**Late loss mitigated** on `{key}` (drop reduction): {status}. {drop['text']}"
                         f"{_holm(drop)}{_robust(drop)}.")
    return findings(lines)


def _holm(row: dict) -> str:
    return (f"; not after Holm's correction over the {row['family']} claims, where it is inconclusive"
            if row["sign"] and not row["holm"] else "")


def _robust(row: dict) -> str:
    return f"; the verdict is {robust_text(row['robustness'])}" if row.get("robustness") else ""
