"""Reader-facing tags, applied by rule to each executed chapter so figures, numbers and prose lead the page.

Jupyter Book reads cell tags: ``hide-input`` collapses a cell's code behind a click (never removes it) and
``remove-cell`` leaves a cell out of the page (it stays in the downloadable notebook). The rules:

* papermill's ``injected-parameters`` cell (only the values that differ from the notebook's defaults) and the
  notebook's own ``parameters`` cell (the defaults) -> ``remove-cell``: the page shows every parameter's value once,
  collapsed, in the dropdown under the provenance box (:func:`ctcbook.book.provenance.markdown`); both cells stay in
  the downloadable notebook;
* set-up: a code cell whose first statement is an import -> ``hide-input``;
* glue: a code cell of assignments and ``glue(...)`` calls only (the numbers the prose quotes) -> ``hide-input``;
  here and below, ``.append(...)`` calls and ``for`` loops of such statements count as assignments (a table built
  row by row);
* figure plumbing: ``fig = ...``, ``display(fig)``, ``plots.close(fig)`` only -> ``hide-input``;
* display plumbing: assignments and ``display(...)`` / ``close(...)`` / ``glue(...)`` calls only, at least one
  ``display`` (a table, a figure, a static explorer, a findings list: the output is the content) -> ``hide-input``;
* reports: assignments and ``print(...)`` calls whose only calls are Python builtins and ``perf_counter`` (a wall
  time, a count: nothing of the library runs in them) -> ``hide-input``;
* live widgets: a cell its author tagged ``remove-output`` only (a JupyterLab widget, empty on the static page) ->
  ``hide-input``, so the page shows no code without output.

A cell that already has a ``remove-input``, ``remove-cell``, ``hide-input`` or ``hide-cell`` tag is left as its
author tagged it; one tagged ``hide-output`` is left too. :func:`tag_notebook` is
re-runnable (tags are added once) and is applied by the runner to every executed chapter.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import nbformat

# tags that already decide how a cell's *code* is shown: no rule touches such a cell
_INPUT_DECIDED = ("remove-input", "remove-cell", "hide-input", "hide-cell", "hide-output")
_BUILTINS = frozenset(dir(__import__("builtins"))) | {"perf_counter"}


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


_SHOW = ("display", "close", "glue")


def _plumbing(s: ast.stmt, calls: tuple[str, ...]) -> bool:
    """An assignment, a call of one of ``calls`` or ``.append(...)``, or a for loop of such statements."""
    if isinstance(s, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        return True
    if isinstance(s, ast.For):
        return not s.orelse and all(_plumbing(b, calls) for b in s.body)
    return _call_name(s) in calls + ("append",)


def _calls(body: list[ast.stmt]) -> list[str | None]:
    """The names of the statement-level calls of ``body``, for loops included."""
    out = []
    for s in body:
        out += _calls(s.body) if isinstance(s, ast.For) else [_call_name(s)]
    return out


def _is_glue(body: list[ast.stmt]) -> bool:
    return "glue" in _calls(body) and all(_plumbing(s, ("glue",)) for s in body)


def _is_figure(body: list[ast.stmt]) -> bool:
    for s in body:
        if isinstance(s, ast.Assign) and [getattr(t, "id", None) for t in s.targets] == ["fig"]:
            continue
        if _call_name(s) in ("display", "close") and ast.unparse(s.value.args[0] if s.value.args else s) == "fig":
            continue
        return False
    return bool(body)


def _is_display(body: list[ast.stmt]) -> bool:
    return "display" in _calls(body) and all(_plumbing(s, _SHOW) for s in body)


def _is_report(body: list[ast.stmt]) -> bool:
    if "print" not in _calls(body) or not all(_plumbing(s, ("print",)) for s in body):
        return False
    for node in (n for s in body for n in ast.walk(s)):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if name not in _BUILTINS:
                return False
    return True


def reader_tag(cell) -> str | None:
    """The tag a rule gives ``cell`` (``hide-input``, ``remove-cell``) or None."""
    tags = cell.get("metadata", {}).get("tags", [])
    if cell.get("cell_type") != "code" or any(t in _INPUT_DECIDED for t in tags):
        return None
    if "remove-output" in tags:
        return "hide-input"
    if "injected-parameters" in tags or "parameters" in tags:
        return "remove-cell"
    body = _statements(cell.get("source", ""))
    if not body:
        return None
    if (isinstance(body[0], (ast.Import, ast.ImportFrom)) or _is_glue(body) or _is_figure(body) or _is_display(body)
            or _is_report(body)):
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


# --- what the book's front matter says about the chapters, computed from the chapters -------------------------

def chapter_profiles(chapter: str) -> list[str]:
    """The profiles ``chapter`` (e.g. ``"04_dynamic_mlp"``) runs under: ``default`` (every chapter's parameters cell)
    and every named profile of :data:`ctcbook.book.profiles.PROFILES` that lists the chapter."""
    from .profiles import PARAMETER_DEFAULTS, PROFILES

    if chapter not in PARAMETER_DEFAULTS:
        raise ValueError(f"chapter must be one of {sorted(PARAMETER_DEFAULTS)}, got {chapter!r}")
    return ["default"] + sorted(p for p, chapters in PROFILES.items() if p != "default" and chapter in chapters)


def beside_the_paper(nb) -> list:
    """The cells of a notebook's "Beside the paper(s)" section: from that ``##`` heading to the next heading of level
    1 or 2 (or the end). Raises ValueError when the notebook has no such section."""
    start = None
    for i, cell in enumerate(nb.cells):
        first = cell.source.lstrip().splitlines()[0] if cell.cell_type == "markdown" and cell.source.strip() else ""
        if start is None and first.lower().startswith("## beside the paper"):
            start = i
        elif start is not None and (first.startswith("# ") or first.startswith("## ")):
            return nb.cells[start:i]
    if start is None:
        raise ValueError("the notebook has no '## Beside the paper' section")
    return nb.cells[start:]


# A paper's accuracy quoted in prose: a number with decimals and a percent sign (e.g. "67.924%").
_QUOTED = r"\d+\.\d+\s?%"
_PAPER_CONSTANT = "PAPER_"


def _imports(nb) -> dict:
    """The notebook's top-level imports, executed into a fresh namespace (nothing else of the notebook runs)."""
    ns: dict = {}
    for cell in nb.cells:
        body = _statements(cell.source) if cell.cell_type == "code" else None
        for stmt in body or []:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                exec(compile(ast.Module([stmt], []), "<imports>", "exec"), ns)  # noqa: S102 - the notebook's own imports
    return ns


def _quotes_in_code(source: str, ns: dict) -> bool:
    """True when ``source`` names a ``PAPER_*`` constant, or calls a library function whose source names one."""
    import inspect

    body = _statements(source) or []
    for node in (n for stmt in body for n in ast.walk(stmt)):
        if not isinstance(node, (ast.Name, ast.Attribute)):
            continue
        name = node.id if isinstance(node, ast.Name) else node.attr
        if name.startswith(_PAPER_CONSTANT):
            return True
        try:
            obj = eval(compile(ast.Expression(node), "<name>", "eval"), dict(ns))  # noqa: S307 - a dotted name
        except Exception:  # a variable of the notebook: not resolvable from its imports alone
            continue
        if callable(obj) and getattr(obj, "__module__", "").startswith("ctcbook"):
            try:
                if _PAPER_CONSTANT in inspect.getsource(obj):
                    return True
            except (OSError, TypeError):
                continue
    return False


def quotes_paper_numbers(path: Path) -> bool:
    """Does the chapter notebook at ``path`` print a paper's own numbers in its "Beside the paper" section? Yes when
    the section's prose quotes an accuracy with decimals ("67.924%"), or its code shows a ``PAPER_*`` constant of the
    library (directly, or through a library function that reads one)."""
    import re

    nb = nbformat.read(str(path), as_version=4)
    cells = beside_the_paper(nb)
    if any(c.cell_type == "markdown" and re.search(_QUOTED, c.source) for c in cells):
        return True
    ns = _imports(nb)
    return any(c.cell_type == "code" and _quotes_in_code(c.source, ns) for c in cells)


# --- tables on the page ----------------------------------------------------------------------------------------

def table(df, precision: int = 2):
    """``df`` as the page shows a table: no index column, floats to ``precision`` decimals, and a deterministic HTML
    id (pandas' Styler draws a random one per table, which would make two executions of the same chapter differ and
    nbval's reproduction check fail). The id is a hash of the table's columns and shape, so two tables on one page
    do not share it."""
    import hashlib

    key = f"{list(map(str, df.columns))}|{df.shape}|{precision}".encode()
    return (df.style.hide(axis="index").format(precision=precision)
            .set_uuid(hashlib.sha256(key).hexdigest()[:10]))
