"""The built book in a real browser: headless Chromium opens each chapter page of a smoke-profile book, which must
load without JavaScript errors, show its figures, and have static epoch sliders that change the displayed frame.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make test`` installs them); skipped, with the reason, where
they are missing."""
from __future__ import annotations

import shutil

import pytest

import ctcbook.book.runner as runner

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [pytest.mark.notebook,
              pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs chromium and chromium-driver (apt)")]
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
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.set_page_load_timeout(120)
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
