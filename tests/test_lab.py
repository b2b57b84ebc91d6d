"""JupyterLab in a real browser: a smoke-executed chapter opened in ``jupyter lab`` (free local port, token), its
cells run, the live epoch explorer's slider moved with the keyboard; the image must change and no error may appear
in the outputs or the browser console. The server is shut down afterwards.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make test`` installs them); skipped, with the reason, where
they are missing."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from headless_chromium import needs_chromium, start_chromium

pytestmark = [pytest.mark.notebook, needs_chromium]
CHAPTER = "01_tradeoff"
EXPLORER = "explore.live_explorer("
# Not errors: resources JupyterLab asks for that an offline server does not have (favicons, news, extension
# manager listings).
NOT_ERRORS = ("favicon", "Failed to load resource", "net::ERR_")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(smoke_chapters, tmp_path_factory):
    """A running JupyterLab on a copy of the smoke-executed chapter, kernels using the smoke run store."""
    folder, errors = smoke_chapters
    assert errors[CHAPTER] is None, errors[CHAPTER]
    root, home = tmp_path_factory.mktemp("lab_root"), tmp_path_factory.mktemp("lab_home")
    shutil.copy(folder / f"{CHAPTER}.ipynb", root)
    settings = home / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # every cell rendered (no virtual scrolling), so the explorer's widgets exist in the page once run
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "CTCBOOK_RUNS": str(folder / "runs"), "JUPYTER_RUNTIME_DIR": str(home / "rt"),
           "JUPYTER_CONFIG_DIR": str(home / "config"), "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.expose_app_in_browser=True", f"--LabApp.user_settings_dir={home / 'settings'}",
           f"--LabApp.workspaces_dir={home / 'workspaces'}", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--ServerApp.terminals_enabled=False",
           "--ServerApp.jpserver_extensions={'jupyter_lsp': False}"]
    if os.geteuid() == 0:  # CI containers run as root
        cmd.append("--allow-root")
    log = open(home / "server.log", "w")
    proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"jupyter lab did not start:\n{(home / 'server.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield base, token
    finally:
        try:
            urllib.request.urlopen(urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST"),
                                   timeout=10)
            proc.wait(timeout=30)
        except Exception:
            proc.terminate()
            proc.wait(timeout=30)
        log.close()
    assert proc.returncode is not None


@pytest.fixture(scope="module")
def browser():
    driver = start_chromium("--window-size=1400,1000", script_timeout=600)
    yield driver
    driver.quit()


def wait_for(browser, script: str, what: str, timeout: float = 120, *args):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = browser.execute_script(script, *args)
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


NOTEBOOK = "const nb = window.jupyterapp && window.jupyterapp.shell.currentWidget;"


def test_live_explorer_in_jupyterlab(lab, browser):
    from selenium.webdriver.common.keys import Keys

    base, token = lab
    browser.get(f"{base}/lab/tree/{CHAPTER}.ipynb?token={token}&reset")
    wait_for(browser, NOTEBOOK + " return nb && nb.content && nb.sessionContext.session && "
             "nb.sessionContext.session.kernel && nb.sessionContext.session.kernel.status === 'idle';",
             "the notebook and an idle kernel")
    # clear the executed outputs, then run every cell (the explorer needs the runs and table of the cells above)
    ok = browser.execute_async_script(NOTEBOOK + """
        const done = arguments[arguments.length - 1];
        window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')
          .then(() => window.jupyterapp.commands.execute('notebook:run-all-cells'))
          .then(r => done(r === undefined ? true : r), e => done('error: ' + e));""")
    assert ok is True, ok
    wait_for(browser, NOTEBOOK + " return nb.sessionContext.session.kernel.status === 'idle' && "
             "nb.content.widgets.every(c => c.model.type !== 'code' || c.model.executionCount !== null);",
             "every cell to run", timeout=600)
    errors = browser.execute_script(NOTEBOOK + """
        return nb.content.widgets.filter(c => c.model.type === 'code').flatMap(c => c.model.outputs.toJSON())
          .filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue);""")
    assert not errors, errors
    index = browser.execute_script(NOTEBOOK + " return nb.content.widgets.findIndex("
                                   "c => c.model.sharedModel.getSource().includes(arguments[0]));", EXPLORER)
    assert index >= 0, f"no cell calls {EXPLORER}"
    cell = browser.execute_script(NOTEBOOK + " const n = nb.content.widgets[arguments[0]].node; "
                                  "n.scrollIntoView(); return n;", index)
    img_src = "return arguments[0].querySelector('img.widget-image') && " \
              "arguments[0].querySelector('img.widget-image').src;"
    before = wait_for(browser, img_src, "the explorer's image", 120, cell)
    readout = "return Array.from(arguments[0].querySelectorAll('.widget-readout')).map(r => r.textContent);"
    labels_before = browser.execute_script(readout, cell)
    handle = cell.find_elements("css selector", ".widget-slider .noUi-handle")
    assert handle, "the explorer shows no slider"
    browser.execute_script("arguments[0].focus();", handle[-1])  # the epoch slider (target, seed, epoch)
    handle[-1].send_keys(Keys.ARROW_LEFT)     # one saved epoch back
    after = wait_for(browser, "const s = arguments[0].querySelector('img.widget-image').src; "
                     "return s !== arguments[1] && s;", "the image to change after moving the slider", 120, cell,
                     before)
    assert after != before
    assert browser.execute_script(readout, cell) != labels_before, "the epoch readout did not move"
    stderr = browser.execute_script(NOTEBOOK + " return nb.content.widgets[arguments[0]].model.outputs.toJSON()"
                                    ".filter(o => o.output_type === 'error' || o.name === 'stderr')"
                                    ".map(o => o.text || o.evalue);", index)
    assert not stderr, stderr
    status = browser.execute_script("return Array.from(arguments[0].querySelectorAll('.widget-label'))"
                                    ".map(l => l.textContent);", cell)
    assert any("drawn in" in t for t in status) and not any("error" in t for t in status), status
    console = [e["message"] for e in browser.get_log("browser")
               if e["level"] == "SEVERE" and not any(n in e["message"] for n in NOT_ERRORS)]
    assert not console, console
