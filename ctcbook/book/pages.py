"""Reader-facing tags, applied by rule to each executed chapter so figures, numbers and prose lead the page.

Jupyter Book reads cell tags: ``hide-input`` collapses a cell's code behind a click (never removes it) and
``remove-cell`` leaves a cell out of the page (it stays in the downloadable notebook). The rules:

* papermill's ``injected-parameters`` cell (the values this page was executed with) -> ``hide-input``;
* the notebook's own ``parameters`` cell (the defaults, overridden by the injected cell) -> ``remove-cell``, so the
  page shows the parameters once;
* set-up: a code cell whose first statement is an import -> ``hide-input``;
* glue: a code cell of assignments and ``glue(...)`` calls only (the numbers the prose quotes) -> ``hide-input``;
* figure plumbing: ``fig = ...``, ``display(fig)``, ``plots.close(fig)`` only -> ``hide-input``.

A cell that already has a ``remove-*`` or ``hide-*`` tag is left as its author tagged it. :func:`tag_notebook` is
re-runnable (tags are added once) and is applied by the runner to every executed chapter.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import nbformat

KEEP = ("remove-input", "remove-cell", "hide-input", "hide-cell", "remove-output", "hide-output")


def _statements(source: str) -> list[ast.stmt] | None:
    try:
        return ast.parse(source).body
    except SyntaxError:  # IPython magics: no rule applies
        return None


def _call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        func = node.value.func
        if isinstance(func, ast.Name):
            return func.id
        if isinstance(func, ast.Attribute):
            return func.attr
    return None


def _is_glue(body: list[ast.stmt]) -> bool:
    calls = [_call_name(s) for s in body]
    return "glue" in calls and all(isinstance(s, (ast.Assign, ast.AnnAssign)) or c == "glue"
                                   for s, c in zip(body, calls))


def _is_figure(body: list[ast.stmt]) -> bool:
    for s in body:
        if isinstance(s, ast.Assign) and [getattr(t, "id", None) for t in s.targets] == ["fig"]:
            continue
        if _call_name(s) in ("display", "close") and ast.unparse(s.value.args[0] if s.value.args else s) == "fig":
            continue
        return False
    return bool(body)


def reader_tag(cell) -> str | None:
    """The tag a rule gives ``cell`` (``hide-input``, ``remove-cell``) or None."""
    tags = cell.get("metadata", {}).get("tags", [])
    if cell.get("cell_type") != "code" or any(t in KEEP for t in tags):
        return None
    if "injected-parameters" in tags:
        return "hide-input"
    if "parameters" in tags:
        return "remove-cell"
    body = _statements(cell.get("source", ""))
    if not body:
        return None
    if isinstance(body[0], (ast.Import, ast.ImportFrom)) or _is_glue(body) or _is_figure(body):
        return "hide-input"
    return None


def tag_notebook(path: Path) -> int:
    """Add the rules' tags to the notebook at ``path`` in place (atomically); return how many cells changed."""
    nb = nbformat.read(str(path), as_version=4)
    changed = 0
    for cell in nb.cells:
        tag = reader_tag(cell)
        if tag:
            cell.metadata.setdefault("tags", []).append(tag)
            changed += 1
    if changed:
        tmp = Path(path).with_name(f".{Path(path).name}.tmp")
        nbformat.write(nb, str(tmp))
        os.replace(tmp, path)
    return changed
