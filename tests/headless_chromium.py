"""Headless Debian Chromium through selenium, shared by the browser tests of the built book and of JupyterLab."""
from __future__ import annotations

import shutil

import pytest

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
#: Skip a test module, with the reason, where Chromium or its WebDriver is missing.
needs_chromium = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs chromium and chromium-driver (apt)")


def start_chromium(*extra_args: str, script_timeout: int = 60):
    """A headless Chromium WebDriver that keeps the browser console log (``driver.get_log("browser")``)."""
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", *extra_args):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.set_page_load_timeout(120)
    driver.set_script_timeout(script_timeout)
    return driver
