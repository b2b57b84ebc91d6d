"""The mutation check (benchmarks/mutate.py, ``make mutate``): every mutant in tests/mutants/*.toml still applies to
the current code (a refactor that removes a mutant's text must update the mutant, not silently disable it), and the
tool tells caught from not caught on a tiny repository of its own."""
from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("ctcbook_mutate", ROOT / "benchmarks" / "mutate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


mutate = _tool()


def test_every_mutant_applies_to_the_current_code():
    mutants = mutate.load_mutants(ROOT)
    assert mutate.check_mutants(mutants, ROOT) == []
    assert len(mutants) >= 20
    for m in mutants:
        assert m.file.startswith(("ctcbook/", "benchmarks/")) and m.tests and m.tests[0].startswith("tests/"), m


def _tiny_repo(tmp_path: Path, mutants: str) -> Path:
    repo = tmp_path / "repo"
    (repo / "ctcbook" / "chapters").mkdir(parents=True)  # a folder named like book/chapters, which is not copied
    (repo / "tests" / "mutants").mkdir(parents=True)
    (repo / "ctcbook" / "__init__.py").write_text("")
    (repo / "ctcbook" / "chapters" / "__init__.py").write_text("")
    (repo / "ctcbook" / "chapters" / "arith.py").write_text("def add(a, b):\n    return a + b\n\n\ndef unused():\n    return 1\n")
    (repo / "tests" / "test_arith.py").write_text("from ctcbook.chapters.arith import add\n\n\ndef test_add():\n"
                                                  "    assert add(2, 3) == 5\n")
    (repo / "tests" / "mutants" / "arith.toml").write_text(textwrap.dedent(mutants))
    return repo


MUTANTS = """
    [[mutant]]
    name = "add-subtracts"
    file = "ctcbook/chapters/arith.py"
    old = "return a + b"
    new = "return a - b"
    tests = ["tests/test_arith.py"]

    [[mutant]]
    name = "unused-changed"
    file = "ctcbook/chapters/arith.py"
    old = "return 1"
    new = "return 2"
    tests = ["tests/test_arith.py"]
"""


def test_tool_reports_caught_and_not_caught(tmp_path, capsys):
    repo = _tiny_repo(tmp_path, MUTANTS)
    assert mutate.main(["--root", str(repo), "--timeout", "120", "-j", "2"]) == 1
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith(("add-", "unused-"))}
    assert "caught" in lines["add-subtracts"] and "NOT" not in lines["add-subtracts"]
    assert "NOT CAUGHT" in lines["unused-changed"]
    assert "1 of 2 mutants caught; not caught: unused-changed" in out
    assert "return a + b" in (repo / "ctcbook" / "chapters" / "arith.py").read_text()  # the original is untouched
    assert mutate.main(["--root", str(repo), "-k", "add", "--timeout", "120"]) == 0


def test_tool_refuses_a_mutant_whose_text_is_gone(tmp_path, capsys):
    repo = _tiny_repo(tmp_path, MUTANTS.replace('old = "return 1"', 'old = "return 3"'))
    assert mutate.main(["--root", str(repo), "--check"]) == 1
    assert "'unused-changed'" in capsys.readouterr().out
    with pytest.raises(mutate.MutantError, match="occurs 0 times"):
        mutate.load_mutants(repo)[1].apply((repo / "ctcbook" / "chapters" / "arith.py").read_text())


@pytest.mark.parametrize("entry, message", [
    ('name = "a"\nfile = "f"\nold = "x"\ntests = ["t"]', "missing fields"),
    ('name = "a"\nfile = "f"\nold = "x"\nnew = "x"\ntests = ["t"]', "equals its old text"),
    ('name = "a"\nfile = "f"\nold = ["x", "y"]\nnew = "z"\ntests = ["t"]', "same number of edits"),
    ('name = "a"\nfile = "f"\nold = "x"\nnew = "y"\ntests = ["t"]\nwhy = "w"\nextra = 1', "unknown fields"),
])
def test_malformed_mutant_entries_are_refused(tmp_path, entry, message):
    folder = tmp_path / "tests" / "mutants"
    folder.mkdir(parents=True)
    (folder / "x.toml").write_text("[[mutant]]\n" + entry + "\n")
    with pytest.raises(mutate.MutantError, match=message):
        mutate.load_mutants(tmp_path)


def test_baseline_selects_every_mutants_tests_in_one_run():
    m = lambda name, *tests: mutate.Mutant(name, "ctcbook/x.py", (("a", "b"),), tests, "x.toml")
    args = mutate.baseline_args([m("a", "tests/test_p.py", "-k", "knn or probe"), m("b", "tests/test_q.py"),
                                 m("c", "tests/test_p.py", "-k", "ties")])
    assert args == ("tests/test_p.py", "tests/test_q.py", "-k", "(knn or probe) or test_q or (ties)")
