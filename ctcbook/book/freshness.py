"""Is an executed chapter up to date? The key of one execution and the reasons it no longer matches.

The key (``"key"`` in ``<chapter>.run.json``) holds what executing again could change: the SHA-256 of the source
notebook, of the library (``ctcbook/**/*.py``) and of the executed notebook after stamping (a failed or hand-edited
execution is stale), the resolved parameters, and each run folder the chapter opened with the SHA-256 of its ``DONE``
marker (a run deleted, unfinished or retrained shows). Nothing here imports torch: a no-change ``ctcbook run`` is quick.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parents[1]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def library_sha256() -> str:
    """Hex SHA-256 over the relative path and bytes of every ``ctcbook/**/*.py``, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def runs_state(run_paths: list[str]) -> dict[str, str | None]:
    """``{run folder: SHA-256 of its DONE marker, or None when the folder is missing or not finished}``."""
    done = {p: Path(p) / "DONE" for p in sorted(set(run_paths))}
    return {p: file_sha256(d) if d.exists() else None for p, d in done.items()}


def read_runs_used(log: Path) -> list[str]:
    """Run folders listed (one per line) by :meth:`ctcbook.runs.RunStore.open` in ``$CTCBOOK_RUNS_USED``."""
    try:
        return sorted({line for line in Path(log).read_text().splitlines() if line.strip()})
    except FileNotFoundError:
        return []


def execution_key(notebook: Path, parameters: dict[str, Any], run_paths: list[str],
                  executed: Path) -> dict[str, Any]:
    return {"notebook_sha256": file_sha256(notebook), "parameters": parameters,
            "library_sha256": library_sha256(), "runs": runs_state(run_paths),
            "executed_sha256": file_sha256(executed)}


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    names = sorted(set(old) | set(new))
    shown = lambda d, n: repr(d[n]) if n in d else "(notebook default)"  # noqa: E731
    return ", ".join(f"{n} {shown(old, n)} -> {shown(new, n)}" for n in names if shown(old, n) != shown(new, n))


def stale_reasons(record_path: Path, notebook: Path, parameters: dict[str, Any], executed: Path) -> list[str]:
    """Why the chapter executed into ``executed`` must be executed again; ``[]`` when it is up to date."""
    if not Path(executed).exists():
        return [f"no executed notebook at {executed}"]
    try:
        key = json.loads(Path(record_path).read_text())["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return [f"no execution key in {record_path} (never executed by this version of the runner)"]
    reasons = []
    if key.get("notebook_sha256") != file_sha256(notebook):
        reasons.append(f"notebook source {Path(notebook).name} changed")
    if key.get("parameters") != parameters:
        reasons.append(f"parameters changed: {_differences(key.get('parameters') or {}, parameters)}")
    if key.get("library_sha256") != library_sha256():
        reasons.append("library source (ctcbook/**/*.py) changed")
    old_runs = key.get("runs") or {}
    now = runs_state(list(old_runs))
    for path, done in old_runs.items():
        if now[path] is None:
            reasons.append(f"run {Path(path).name} is missing or unfinished ({path})")
        elif now[path] != done:
            reasons.append(f"run {Path(path).name} was retrained (its DONE marker changed)")
    if key.get("executed_sha256") != file_sha256(executed):
        reasons.append(f"executed notebook {executed} differs from the one recorded (failed or edited since)")
    return reasons


def up_to_date_summary(record_path: Path) -> str:
    """Why a chapter counts as up to date, for the log line."""
    key = json.loads(Path(record_path).read_text())["key"]
    return (f"same notebook source, parameters (profile {key['parameters'].get('profile')!r}), library source "
            f"{key['library_sha256'][:12]} and {len(key['runs'])} finished run(s)")
