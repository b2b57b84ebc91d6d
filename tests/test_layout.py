"""The package's layers: building blocks <- chapters <- book. Imports only go that way."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ctcbook"


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("chapters", "book"):
        return parts[1]
    return "blocks"


def _imports(path: Path, source: str | None = None) -> list[str]:
    """Absolute names of the ctcbook modules ``path`` imports (relative imports resolved); ``source`` replaces the
    file's text."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    package = list(rel.parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
                names = [name] if node.module else [f"{name}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
            found += [n for n in names if n.split(".")[0] == "ctcbook"]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "ctcbook"]
    return found


ORDER = {"blocks": 0, "chapters": 1, "book": 2}
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


def _violations(path: Path, source: str | None = None) -> list[str]:
    me = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return [f"{me} ({_layer(me)}) imports {imported} ({_layer(imported)})"
            for imported in _imports(path, source) if ORDER[_layer(imported)] > ORDER[_layer(me)]]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down_the_layers(path):
    assert _violations(path) == []


def test_the_layer_check_sees_upward_imports():
    # The check itself must be able to fail.
    assert _violations(PACKAGE / "probes.py", "from .chapters import ch1_tradeoff\n")
    assert _violations(PACKAGE / "train.py", "from .book.plots import curve_figure\n")
    assert _violations(PACKAGE / "chapters" / "ch1_tradeoff.py", "from ..book import explore\n")
    assert _violations(PACKAGE / "data" / "images.py", "import ctcbook.chapters.ch2_information\n")
    assert not _violations(PACKAGE / "book" / "explore.py", "from ..chapters.ch1_tradeoff import run_target\n")


def test_no_near_homonyms_side_by_side():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert not {"info", "information", "ctc_report", "evaluate"} & top


def _chapter_of(module: str) -> str:
    return module.split(".")[-1].split("_")[0]  # ch4_<a> and ch4_<b> would be one chapter's modules


def _cross_chapter(path: Path, source: str | None = None) -> list[str]:
    me = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return [f"{me} imports {imported}" for imported in _imports(path, source)
            if _layer(imported) == "chapters" and imported != "ctcbook.chapters"
            and _chapter_of(imported) != _chapter_of(me)]


@pytest.mark.parametrize("path", sorted((PACKAGE / "chapters").glob("ch*.py")), ids=lambda p: p.name)
def test_no_chapter_imports_another_chapter(path):
    # what two chapters share belongs to a building block (targets, results, estimators)
    assert _cross_chapter(path) == []


def test_the_chapter_check_sees_a_chapter_importing_another():
    assert _cross_chapter(PACKAGE / "chapters" / "ch3_ctc.py", "from .ch5_transfer import method_table\n")
    assert not _cross_chapter(PACKAGE / "chapters" / "ch4_fusion.py", "from . import ch4_sweep\n")
