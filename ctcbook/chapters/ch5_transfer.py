"""Chapter 5: which of the CTC abstract's claims held, from the paired results tables of :mod:`ctcbook.results`."""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from ..results import findings, holm_rows, paired_rows


def claims_markdown(measures: pd.DataFrame, baseline: str, method: str, targets: Sequence[str]) -> str:
    """Which of the abstract's claims held: ``method`` - ``baseline`` paired on source accuracy, transfer, drop."""
    rows = {(r["target"], r["quantity"]): r
            for r in holm_rows(paired_rows(measures, method, baseline, targets, ("source_final", "final", "drop")))}
    lines = []
    src = rows.get(("source", "source_final"))
    if src is not None:
        status = {1: "held (higher source accuracy)", 0: "not contradicted: no cost distinguishable from noise",
                  -1: "did not hold here: it costs source accuracy"}[src["sign"]]
        lines.append(f"**Discriminative** (source accuracy kept): {status}. {src['text']}{_holm(src)}.")
    for key in targets:
        fin, drop = rows.get((key, "final")), rows.get((key, "drop"))
        if fin is not None:
            status = {1: "held", 0: "inconclusive", -1: "did not hold (transfer is lower)"}[fin["sign"]]
            lines.append(f"**Transferable** on `{key}` (final transfer gain): {status}. {fin['text']}{_holm(fin)}.")
        if drop is not None:
            status = {-1: "held (a smaller late drop)", 0: "inconclusive",
                      1: "did not hold (a larger late drop)"}[drop["sign"]]
            lines.append(f"**Late loss mitigated** on `{key}` (drop reduction): {status}. {drop['text']}{_holm(drop)}.")
    return findings(lines)


def _holm(row: dict) -> str:
    return (f"; not after Holm's correction over the {row['family']} claims, where it is inconclusive"
            if row["sign"] and not row["holm"] else "")
