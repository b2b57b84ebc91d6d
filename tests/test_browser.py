"""The built book in a real browser: headless Chromium opens each chapter page of a smoke-profile book, which must
load without JavaScript errors, show its figures, have static epoch sliders that change the displayed frame and a
download button for its .ipynb; and a live-widget embed renders with the network off (the book serves the widget
JavaScript itself).

Needs Debian's ``chromium`` and ``chromium-driver`` (``make test`` installs them); skipped, with the reason, where
they are missing."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from headless_chromium import needs_chromium, start_chromium

import ctcbook.book.runner as runner

pytestmark = [pytest.mark.notebook, needs_chromium]
# Not JavaScript errors: resources an offline book cannot fetch (CDN fonts, require.js for live widgets), and the
# theme's console message on a first visit, when no light/dark mode is stored yet.
NOT_ERRORS = ("Failed to load resource", "net::ERR_", "Got invalid theme mode")


@pytest.fixture(scope="module")
def book(smoke_chapters, tmp_path_factory):
    folder, errors = smoke_chapters
    failed = {c: e for c, e in errors.items() if e}
    assert not failed, f"chapters failed in the smoke profile: {failed}"
    # warnings as errors: a broken cross-reference, figure or citation fails the build
    return runner.build_book(path_output=tmp_path_factory.mktemp("html"), chapters_dir=folder,
                             warnings_as_errors=True)


@pytest.fixture(scope="module")
def browser():
    driver = start_chromium(script_timeout=60)
    yield driver
    driver.quit()


@pytest.mark.parametrize("chapter", runner.chapters())
def test_chapter_page_loads_shows_figures_and_slides(chapter, book, browser):
    page = book / "chapters" / f"{chapter}.html"
    assert page.exists(), f"{page} was not built"
    browser.get(page.as_uri())
    browser.execute_script("return document.readyState")
    js_errors = [e["message"] for e in browser.get_log("browser")
                 if e["level"] == "SEVERE" and not any(n in e["message"] for n in NOT_ERRORS)]
    assert not js_errors, js_errors
    shown = browser.execute_script(
        "return Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0"
        " && !i.src.includes('logo')).length")
    assert shown >= 1, "no figure is displayed"
    sliders = browser.execute_script(
        "return Array.from(document.querySelectorAll('input[type=range]')).filter(s => s.id.startsWith('_anim_slider'))"
        ".map(s => s.id)")
    for slider in sliders:
        changed = browser.execute_script("""
            const s = document.getElementById(arguments[0]);
            const img = document.getElementById(s.id.replace('_anim_slider', '_anim_img'));
            const before = img.src;
            s.value = s.max; s.dispatchEvent(new Event('input'));
            return [before !== img.src, Number(s.max)];""", slider)
        assert changed[1] == 0 or changed[0], f"moving {slider} did not change the frame"
    download = browser.execute_script(
        "return Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href'))"
        ".filter(h => h && h.endsWith('_sources/chapters/' + arguments[0] + '.ipynb'))", chapter)
    assert download, "no download button for the chapter's .ipynb"
    assert (book / "_sources" / "chapters" / f"{chapter}.ipynb").is_file()


@pytest.fixture(scope="module")
def widget_book(tmp_path_factory):
    """A one-page book built with the project's _config.yml whose notebook displays a live IntSlider (executed by
    nbclient, widget state stored in the notebook)."""
    import subprocess
    import sys

    import nbformat
    from nbclient import NotebookClient

    root = tmp_path_factory.mktemp("widget_book")
    src = root / "book"
    shutil.copytree(runner.REPO / "book", src, ignore=shutil.ignore_patterns("chapters", "*.md", "_toc.yml"))
    (src / "index.md").write_text("# Widgets offline\n\n```{tableofcontents}\n```\n")
    (src / "_toc.yml").write_text("format: jb-book\nroot: index\nchapters:\n  - file: live\n")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# A live widget"),
                nbformat.v4.new_code_cell("import ipywidgets\nipywidgets.IntSlider(value=7, max=10, description='n')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, kernel_name="python3", store_widget_state=True).execute()
    nbformat.write(nb, src / "live.ipynb")
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(src), "--config",
           str(runner.REPO / "_config.yml"), "--toc", str(src / "_toc.yml"), "--path-output", str(root)]
    subprocess.run(cmd, check=True, capture_output=True)
    return root / "_build" / "html"


def test_live_widget_renders_with_the_network_off(widget_book, browser):
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["http://*", "https://*"]})  # only file:// loads
    try:
        browser.get((widget_book / "live.html").as_uri())
        rendered = browser.execute_async_script("""
            const done = arguments[arguments.length - 1], t0 = Date.now();
            (function poll() {
              const s = document.querySelector('.widget-hslider, .widget-slider');
              if (s || Date.now() - t0 > 30000) { done(s ? s.textContent : null); } else { setTimeout(poll, 200); }
            })();""")
    finally:
        browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
    assert rendered is not None, "the live IntSlider did not render offline"
    assert "n" in rendered and "7" in rendered
