"""The book's front matter (intro, GPU-box page) says what the chapters and profiles are: checked against them.

The intro's table "which chapter runs under which profile, and which chapters print a paper's own numbers" must match
:data:`ctcbook.book.profiles.PROFILES` and each notebook's "Beside the paper" section (read by
:func:`quotes_paper_numbers` below); its default row must match the default profile's values; every
``ctcbook run CHAPTER --profile P`` on the GPU-box page must name a profile the chapter has.
"""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import nbformat
import pytest

from ctcbook.book.profiles import PARAMETER_DEFAULTS, PROFILES

ROOT = Path(__file__).resolve().parents[1]
INTRO = ROOT / "book" / "intro.md"
GPU_BOX = ROOT / "book" / "gpu_box.md"
CHAPTERS = sorted(PARAMETER_DEFAULTS)


def chapter_profiles(chapter: str) -> list[str]:
    """The profiles ``chapter`` (e.g. ``"04_dynamic_mlp"``) runs under: ``default`` and every profile that lists it."""
    if chapter not in PARAMETER_DEFAULTS:
        raise ValueError(f"chapter must be one of {sorted(PARAMETER_DEFAULTS)}, got {chapter!r}")
    return ["default"] + sorted(p for p, chapters in PROFILES.items() if p != "default" and chapter in chapters)


def beside_the_paper(nb) -> list:
    """The cells of the "Beside the paper(s)" section, up to the next level-1 or 2 heading (ValueError if none)."""
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
QUOTED = r"\d+\.\d+\s?%"


def _imports(nb) -> dict:
    """The notebook's top-level imports, executed into a fresh namespace (nothing else of the notebook runs)."""
    ns: dict = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and not cell.source.lstrip().startswith("%"):
            for stmt in ast.parse(cell.source).body:
                if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                    exec(compile(ast.Module([stmt], []), "<imports>", "exec"), ns)  # noqa: S102 - its imports
    return ns


def _quotes_in_code(source: str, ns: dict) -> bool:
    """True when ``source`` names a ``PAPER_*`` constant, or calls a library function whose source names one."""
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.Name, ast.Attribute)):
            continue
        if (node.id if isinstance(node, ast.Name) else node.attr).startswith("PAPER_"):
            return True
        try:
            obj = eval(compile(ast.Expression(node), "<name>", "eval"), dict(ns))  # noqa: S307 - a dotted name
        except Exception:  # a variable of the notebook: not resolvable from its imports alone
            continue
        if callable(obj) and getattr(obj, "__module__", "").startswith("ctcbook"):
            try:
                if "PAPER_" in inspect.getsource(obj):
                    return True
            except (OSError, TypeError):
                continue
    return False


def quotes_paper_numbers(path: Path) -> bool:
    """Does the chapter notebook at ``path`` print a paper's own numbers in its "Beside the paper" section? Yes when
    the section's prose quotes an accuracy with decimals ("67.924%"), or its code shows a ``PAPER_*`` constant of the
    library (directly, or through a library function that reads one)."""
    nb = nbformat.read(str(path), as_version=4)
    cells = beside_the_paper(nb)
    if any(c.cell_type == "markdown" and re.search(QUOTED, c.source) for c in cells):
        return True
    ns = _imports(nb)
    return any(c.cell_type == "code" and _quotes_in_code(c.source, ns) for c in cells)


def _table_rows(text: str, first_header: str) -> list[list[str]]:
    """The body rows (cells stripped) of the markdown table whose header's first cell is ``first_header``."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_header:
            rows = []
            for body in lines[i + 2:]:
                if not body.startswith("|"):
                    break
                rows.append([c.strip() for c in body.strip().strip("|").split("|")])
            return rows
    raise AssertionError(f"no table with first column {first_header!r} in the intro")


def intro_chapter_claims(text: str) -> dict[str, tuple[list[str], bool]]:
    """chapter -> (profiles, quotes the papers' numbers?) as the intro's chapter table states them."""
    claims = {}
    for chapter, profiles, numbers in _table_rows(text, "chapter"):
        name = chapter.strip("`")
        said = numbers.split(":")[0].strip().lower()
        assert said in ("yes", "none"), f"{name}: the numbers column must start with 'yes' or 'none', got {numbers!r}"
        claims[name] = (re.findall(r"`([\w-]+)`", profiles), said == "yes")
    return claims


def test_intro_states_each_chapters_profiles_and_quoted_numbers_as_they_are():
    claims = intro_chapter_claims(INTRO.read_text())
    assert sorted(claims) == CHAPTERS
    for chapter in CHAPTERS:
        profiles, quotes = claims[chapter]
        assert sorted(profiles) == sorted(chapter_profiles(chapter)), chapter
        assert quotes == quotes_paper_numbers(ROOT / "notebooks" / f"{chapter}.ipynb"), (
            f"the intro says {chapter} {'quotes' if quotes else 'does not quote'} a paper's numbers; its 'Beside "
            f"the paper' section says otherwise")


def test_intro_default_row_matches_the_default_profile():
    rows = {r[0].split()[0].strip("`"): " ".join(r) for r in _table_rows(INTRO.read_text(), "profile")}
    d = PARAMETER_DEFAULTS["01_tradeoff"]
    row = rows["default"]
    assert f"{d['train_size']:,} train images" in row
    assert f"ResNet-{d['depth']}" in row and f"width {d['width']}," in row
    assert f"{d['epochs']} epochs" in row and f"{len(d['seeds'])} seeds" in row
    assert {"flip": "horizontal flips only", "crop_flip": "random crop + flip"}[d["augment"]] in row
    if "crop" in d["augment"]:
        assert f"({d['crop_padding']} px padding)" in row
    from ctcbook.book.profiles import PROFILES

    small = {**d, **PROFILES["small"]["01_tradeoff"]}
    assert f"{small['train_size']:,} train images" in rows["small"]
    assert f"width {small['width']}," in rows["small"] and f"{small['epochs']} epochs" in rows["small"]
    assert f"{len(small['seeds'])} seeds" in rows["small"]
    assert {"flip": "horizontal flips only", "crop_flip": "random crop + flip"}[small["augment"]] in rows["small"]
    for name in rows:
        assert name in PROFILES, f"the intro names a profile {name!r} that does not exist"
    fusion = PARAMETER_DEFAULTS["04_dynamic_mlp"]
    intro = " ".join(INTRO.read_text().split())
    assert (f"ResNet-{fusion['depth']} fusion networks trained end to end on {fusion['train_size']:,} Fashion-MNIST "
            "images of all ten classes") in intro
    assert (f"at {len(fusion['interactions'])} levels of an image-metadata interaction, {len(fusion['seeds'])} seeds "
            "each") in intro
    cifar = PROFILES["cifar100"]["01_tradeoff"]
    assert f"ResNet-{cifar['depth']}" in rows["cifar100"] and f"{cifar['epochs']} epochs" in rows["cifar100"]
    assert "in place of the paper's ResNeXt" in rows["cifar100"]


def _augmentation_words(d: dict) -> str:
    return {"flip": "horizontal flip only", "none": "no augmentation", "crop": f"random crop ({d['crop_padding']} px)",
            "crop_flip": f"random crop ({d['crop_padding']} px) + flip"}[d["augment"]]


def test_chapter_one_states_the_default_recipe_beside_the_papers():
    # the "Beside the paper" table's default column and the "Departures" paragraph are prose: they must follow the
    # default profile when it moves
    d = PARAMETER_DEFAULTS["01_tradeoff"]
    nb = nbformat.read(ROOT / "notebooks" / "01_tradeoff.ipynb", as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    schedule = [r for r in _table_rows(text, "") if r[0] == "schedule"]
    assert len(schedule) == 1, "chapter 1's comparison table has one 'schedule' row"
    ours = schedule[0][2]
    assert ours.startswith(f"{d['epochs']} epochs, SGD lr {d['lr']}, batch {d['batch_size']}")
    assert ours.endswith(_augmentation_words(d)), ours
    departures = " ".join(text.split("**Departures from the paper's recipe**")[1].split("\n\n")[0].split())
    assert f"{d['epochs']} epochs instead of 200" in departures
    assert f"ResNet-{d['depth']} of width {d['width']}" in departures
    assert f"{d['train_size']:,} training images" in departures
    if "crop" in d["augment"]:
        assert f"padded by {d['crop_padding']} px" in departures


def test_gpu_box_commands_name_profiles_the_chapters_have():
    commands = re.findall(r"ctcbook run (\w+) --profile (\w+)", GPU_BOX.read_text())
    assert len(commands) >= 5
    for chapter, profile in commands:
        assert profile in chapter_profiles(chapter), f"gpu_box.md runs {chapter} under {profile!r}"


# --- the readers of the notebooks, on constructed notebooks --------------------------------------------------

def _nb(*cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(s[3:]) if s.startswith("md:") else nbformat.v4.new_code_cell(s)
                for s in cells]
    return nb


def _write(tmp_path, nb) -> Path:
    path = tmp_path / "ch.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_quoted_numbers_are_read_from_the_beside_the_paper_section_only(tmp_path):
    # a percentage outside the section does not count; inside, it does
    outside = _nb("md:## Results\nwe reach 91.25% top-1", "md:## Beside the paper\nno number of theirs is quoted",
                  "md:## Cost\n12.5% of the time")
    assert not quotes_paper_numbers(_write(tmp_path, outside))
    inside = _nb("md:## Beside the papers\n| top-1 | 67.924% -> 78.751% |", "md:## Cost")
    assert quotes_paper_numbers(_write(tmp_path, inside))
    with pytest.raises(ValueError, match="Beside the paper"):
        quotes_paper_numbers(_write(tmp_path, _nb("md:## Results")))


def test_quoted_numbers_through_a_library_function_that_reads_a_paper_constant(tmp_path):
    shown = _nb("from ctcbook.chapters import ch4_fusion as ft", "md:## Beside the paper",
                "display(ft.paper_rows(results))", "md:## Cost of this chapter")
    assert quotes_paper_numbers(_write(tmp_path, shown))
    other = _nb("from ctcbook.chapters import ch4_fusion as ft", "md:## Beside the paper",
                "display(ft.sweep_table(results))")
    assert not quotes_paper_numbers(_write(tmp_path, other))
    direct = _nb("md:## Beside the paper", "print(PAPER_TABLE)")
    assert quotes_paper_numbers(_write(tmp_path, direct))


def test_chapter_profiles_refuses_an_unknown_chapter():
    assert chapter_profiles("04_dynamic_mlp")[0] == "default"
    with pytest.raises(ValueError, match="06_nothing"):
        chapter_profiles("06_nothing")
