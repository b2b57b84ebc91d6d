"""Mutation check: put known mistakes into a copy of the package one at a time and see whether the tests notice.

Each mistake ("mutant") is an entry in one of the files ``tests/mutants/*.toml`` (one file per area, so each area's
owner adds entries to its own file)::

    [[mutant]]
    name  = "probe-reg-chosen-on-test"          # unique over all files
    file  = "ctcbook/probes.py"                 # relative to the repository root
    old   = "val_acc[reg] = accuracy(...)"      # must occur exactly once in the file
    new   = "val_acc[reg] = accuracy(...)"      # what it becomes
    tests = ["tests/test_probes.py", "-k", "test_split"]   # pytest arguments that should catch it
    why   = "one line: the published number it would change"  # optional

A mistake that needs several edits gives ``old`` and ``new`` as lists of the same length (applied in order, each
``old`` occurring exactly once at the time it is applied).

The repository (package, tests, pyproject.toml, notebooks, book sources) is copied once to a temporary folder. The
tests named by the mutants are first run on the unchanged copy, in one pytest process (the baseline: they must
pass, or every mutant would look caught); then for each mutant its file is changed, its tests run with ``python -m pytest -x`` (PYTHONPATH =
the copy, byte-code caching off, runs in a temporary ``$CTCBOOK_RUNS``, one thread, pytest's installed plugins
not loaded unless ``--with-plugins``), and the file is restored. A mutant is
*caught* when pytest reports a failure or error (exit status 1 or 2, or the per-mutant time limit, reported as
"caught (timeout)"); exit status 0 is "NOT CAUGHT".

Usage (from the repository root; ``make mutate`` runs all of them)::

    python benchmarks/mutate.py                 # every mutant
    python benchmarks/mutate.py -k probe        # mutants whose name contains "probe"
    python benchmarks/mutate.py --list          # list them, run nothing
    python benchmarks/mutate.py --check         # only check that every ``old`` text occurs exactly once

Exit status: 0 when every selected mutant is caught; 1 when any is not caught, an ``old`` text is missing or
repeated, or the baseline fails. Not part of ``make test`` (it runs the relevant tests once per mutant: minutes);
``tests/test_mutants.py`` checks in CI that every mutant still applies to the current code.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import queue
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTANT_DIR = Path("tests") / "mutants"
# What the copy holds: enough for the package, its tests and the notebook/book tests' inputs.
COPY = ("ctcbook", "tests", "notebooks", "book", "benchmarks", "pyproject.toml", "_config.yml")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".ipynb_checkpoints")


def _ignore(folder: str, names: list[str]) -> set[str]:
    """Byte code and caches anywhere; the executed chapters under book/ (built output, large), not ctcbook/chapters."""
    skip = set(_IGNORE(folder, names))
    if Path(folder).name == "book" and "chapters" in names:
        skip.add("chapters")
    return skip
FIELDS = {"name", "file", "old", "new", "tests", "why"}


class MutantError(ValueError):
    """A mutant entry is malformed, or its ``old`` text does not occur exactly once."""


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    edits: tuple[tuple[str, str], ...]   # (old, new) pairs, applied in order
    tests: tuple[str, ...]               # pytest arguments
    source: str                          # the .toml file it came from
    why: str = ""

    def apply(self, text: str) -> str:
        """``text`` with every edit applied; raises MutantError if an ``old`` does not occur exactly once."""
        for i, (old, new) in enumerate(self.edits):
            count = text.count(old)
            if count != 1:
                raise MutantError(f"mutant {self.name!r} ({self.source}): edit {i + 1}'s old text occurs {count} times "
                                  f"in {self.file} (must be exactly once): {old[:80]!r}")
            text = text.replace(old, new)
        return text


def _as_list(value, what: str, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise MutantError(f"{where}: {what} must be a string or a non-empty list of strings, got {value!r}")


def load_mutants(root: Path = ROOT) -> list[Mutant]:
    """Every mutant of ``root/tests/mutants/*.toml``, in file then entry order; checks the entries' fields and
    that names are unique (not yet that the ``old`` texts occur: see :func:`check_mutants`)."""
    mutants, seen = [], {}
    files = sorted((Path(root) / MUTANT_DIR).glob("*.toml"))
    if not files:
        raise MutantError(f"no mutant files in {Path(root) / MUTANT_DIR}")
    for path in files:
        rel = str(path.relative_to(root))
        entries = tomllib.loads(path.read_text()).get("mutant", [])
        if not entries:
            raise MutantError(f"{rel}: no [[mutant]] entries")
        for i, e in enumerate(entries):
            where = f"{rel} entry {i + 1} ({e.get('name', '?')})"
            missing = {"name", "file", "old", "new", "tests"} - set(e)
            unknown = set(e) - FIELDS
            if missing or unknown:
                raise MutantError(f"{where}: missing fields {sorted(missing)}, unknown fields {sorted(unknown)}; "
                                  f"allowed: {sorted(FIELDS)}")
            old, new = _as_list(e["old"], "old", where), _as_list(e["new"], "new", where)
            if len(old) != len(new):
                raise MutantError(f"{where}: old and new must have the same number of edits, got {len(old)} and "
                                  f"{len(new)}")
            if any(o == n for o, n in zip(old, new)):
                raise MutantError(f"{where}: an edit's new text equals its old text (no mistake is put in)")
            if e["name"] in seen:
                raise MutantError(f"{where}: name {e['name']!r} is already used in {seen[e['name']]}")
            seen[e["name"]] = rel
            mutants.append(Mutant(e["name"], e["file"], tuple(zip(old, new)),
                                  tuple(_as_list(e["tests"], "tests", where)), rel, e.get("why", "")))
    return mutants


def check_mutants(mutants: list[Mutant], root: Path = ROOT) -> list[str]:
    """Problems (empty if none): a mutated file or a test file that does not exist, an ``old`` text that does not
    occur exactly once in the current code, a mutant whose edits leave the file unchanged."""
    problems = []
    for m in mutants:
        path = Path(root) / m.file
        if not path.is_file():
            problems.append(f"mutant {m.name!r} ({m.source}): file {m.file} does not exist")
            continue
        for t in m.tests:
            test_file = t.split("::")[0]
            if test_file.endswith(".py") and not (Path(root) / test_file).is_file():
                problems.append(f"mutant {m.name!r} ({m.source}): test file {test_file} does not exist")
        try:
            m.apply(path.read_text())
        except MutantError as err:
            problems.append(str(err))
    return problems


def _copy_repo(root: Path, dest: Path) -> None:
    for name in COPY:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=_ignore)
        elif src.is_file():
            shutil.copy2(src, dest / name)


def _pytest(python: str, copy: Path, args: tuple[str, ...], timeout: float, runs: Path,
            plugins: bool = False) -> tuple[str, float, str]:
    """Run pytest in ``copy``; returns (outcome, seconds, last lines) with outcome 'pass', 'fail', 'timeout',
    'no tests' or 'error <status>'.

    One thread per process unless OMP_NUM_THREADS is set (small fits on a busy machine slow down by 10-50x when
    several processes each spin two threads), and unless ``plugins`` neither pytest's installed plugins nor
    tests/conftest.py are loaded (nbval and the book runner take seconds to import, once per mutant; the unit
    tests need neither: conftest.py only holds the smoke-book fixture of the notebook tests)."""
    env = dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1", CTCBOOK_RUNS=str(runs))
    env.setdefault("OMP_NUM_THREADS", "1")
    if not plugins:
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    cmd = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *([] if plugins else ["--noconftest"]), *args]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start, ""
    seconds = time.perf_counter() - start
    tail = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    summary = next((ln for ln in reversed(tail) if ln.startswith(("FAILED", "ERROR"))), tail[-1] if tail else "")
    outcome = {0: "pass", 1: "fail", 2: "fail", 5: "no tests"}.get(proc.returncode, f"error {proc.returncode}")
    return outcome, seconds, summary


def baseline_args(mutants: list[Mutant]) -> tuple[str, ...]:
    """One pytest selection covering every mutant's tests: all their test files, and ``-k`` the union of their
    expressions, where a mutant without ``-k`` contributes its files' module names (pytest's ``-k`` matches them),
    so one process checks the unmutated code instead of one per selection. It may select a few more tests than the
    mutants do; those must pass too. A mutant whose arguments are other than test paths and ``-k EXPR`` is run
    as given and left out of the union (its selection is then checked only by its own run)."""
    files, exprs = [], []
    for m in mutants:
        paths = [a for a in m.tests if not a.startswith("-")]
        if "-k" in m.tests:
            i = m.tests.index("-k")
            paths.remove(m.tests[i + 1])
            if len(m.tests) != len(paths) + 2:
                continue
            exprs.append(f"({m.tests[i + 1]})")
        else:
            if len(paths) != len(m.tests):
                continue
            exprs += [Path(p.split("::")[0]).stem for p in paths]
        files += paths
    return (*dict.fromkeys(files), "-k", " or ".join(dict.fromkeys(exprs)))


def _check_import(python: str, copy: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(copy))
    out = subprocess.run([python, "-c", "import ctcbook; print(ctcbook.__file__)"], cwd=copy, env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(copy.resolve()):
        raise SystemExit(f"{python} imports ctcbook from {out}, not from the copy {copy}: cannot mutate")


def run(mutants: list[Mutant], *, root: Path = ROOT, python: str = sys.executable, timeout: float = 600,
        plugins: bool = False, jobs: int = 1, out=None) -> int:
    """Baseline, then each mutant alone (``jobs`` at a time, each in its own copy); prints one line per mutant as it
    finishes and a summary to ``out`` (default stdout).
    Returns the exit status."""
    out = out if out is not None else sys.stdout
    problems = check_mutants(mutants, root)
    if problems:
        print("\n".join(problems), file=out)
        return 1
    with tempfile.TemporaryDirectory(prefix="ctcbook-mutate-") as tmp:
        copy, runs = Path(tmp) / "repo", Path(tmp) / "runs"
        copy.mkdir()
        _copy_repo(root, copy)
        _check_import(python, copy)
        args = baseline_args(mutants)
        outcome, seconds, summary = _pytest(python, copy, args, timeout * 3, runs, plugins)
        print(f"baseline (every selected test on the unmutated code): {outcome} ({seconds:.0f} s)", file=out,
              flush=True)
        if outcome != "pass":
            print(f"the unmutated code does not pass its tests: {summary}\n(pytest {' '.join(args)})", file=out)
            return 1
        copies = queue.SimpleQueue()
        copies.put(copy)
        for i in range(1, jobs):
            extra = Path(tmp) / f"repo{i}"
            shutil.copytree(copy, extra)
            copies.put(extra)
        width = max(len(m.name) for m in mutants)

        def one(m: Mutant) -> bool:
            where = copies.get()
            path = where / m.file
            original = path.read_text()
            path.write_text(m.apply(original))
            try:
                outcome, seconds, summary = _pytest(python, where, m.tests, timeout, where.parent / f"runs-{where.name}",
                                                    plugins)
            finally:
                path.write_text(original)
                copies.put(where)
            if outcome in ("fail", "timeout"):
                verdict = "caught" if outcome == "fail" else "caught (timeout)"
            else:
                verdict = "NOT CAUGHT" if outcome == "pass" else f"NOT CAUGHT ({outcome})"
            ok = verdict.startswith("caught")
            print(f"{m.name:<{width}}  {verdict:<16} {seconds:6.1f} s  {summary[:110] if ok else ''}", file=out,
                  flush=True)
            return ok

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            caught = list(pool.map(one, mutants))
    missed = [m.name for m, c in zip(mutants, caught) if not c]
    print(f"\n{sum(caught)} of {len(mutants)} mutants caught" + (f"; not caught: {', '.join(missed)}" if missed
                                                                   else ""), file=out)
    return 0 if not missed else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-k", dest="select", action="append", default=[],
                   help="run only mutants whose name contains this text (repeatable)")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    p.add_argument("--check", action="store_true", help="only check that every mutant applies to the current code")
    p.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this script's repository)")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs pytest (default: this one)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per pytest run (default 600)")
    p.add_argument("-j", "--jobs", type=int, default=1, help="mutants tested at once, each in its own copy (default 1)")
    p.add_argument("--with-plugins", action="store_true",
                   help="let pytest load its installed plugins and tests/conftest.py (off by default: the unit tests "
                        "need neither)")
    args = p.parse_args(argv)
    try:
        mutants = load_mutants(args.root)
    except (MutantError, tomllib.TOMLDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.select:
        mutants = [m for m in mutants if any(s in m.name for s in args.select)]
        if not mutants:
            print(f"error: no mutant name contains any of {args.select}", file=sys.stderr)
            return 1
    if args.list:
        for m in mutants:
            print(f"{m.name}  [{m.source}]  {m.file}  tests: {' '.join(m.tests)}")
        return 0
    if args.check:
        problems = check_mutants(mutants, args.root)
        print("\n".join(problems) or f"all {len(mutants)} mutants apply")
        return 1 if problems else 0
    return run(mutants, root=args.root, python=args.python, timeout=args.timeout, plugins=args.with_plugins,
               jobs=max(1, args.jobs))


if __name__ == "__main__":
    sys.exit(main())
