"""A Sphinx extension for the book build: drop repeated ``<script>`` entries from each page.

With Jupyter Book 1.x here, sphinx-thebe registers its inline configuration script twice, and the second
``const THEBE_JS_URL = ...`` raises "Identifier 'THEBE_JS_URL' has already been declared" in the browser (found by
``tests/test_browser.py``). Keeping the first of identical script entries (same file, same inline body, same
attributes) removes the error without changing anything else. Enabled in ``_config.yml`` (``extra_extensions``).
"""
from __future__ import annotations


def _key(script) -> tuple:
    """Identity of a script entry: its file, or for an inline script (no file; Sphinx stores it as None or "")
    its body; plus its attributes."""
    filename = str(getattr(script, "filename", script) or "")
    attributes = getattr(script, "attributes", {}) or {}
    if filename in ("", "None"):
        filename = ""
    return filename, tuple(sorted((k, str(v)) for k, v in attributes.items()))


def dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            kept.append(script)
    scripts[:] = kept


def setup(app):
    app.connect("html-page-context", dedupe_scripts, priority=100)  # early: a theme handler that returns a value would stop later ones
    return {"parallel_read_safe": True, "parallel_write_safe": True}
