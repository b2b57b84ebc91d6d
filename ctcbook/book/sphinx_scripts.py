"""A Sphinx extension for the book build: drop repeated ``<script>`` entries from each page.

With Jupyter Book 1.x, sphinx-thebe registers its inline script twice and the second ``const THEBE_JS_URL`` raises
"already been declared" in the browser; keeping the first of identical entries fixes only that. Enabled in
``_config.yml`` (``extra_extensions``).
"""
from __future__ import annotations

#: Scripts that must come before others on a page: require.js defines ``define``, which the ipywidgets embed bundle
#: (embed-amd.js) calls as it loads.
_FIRST = ("require.js", "require.min.js")


def _key(script) -> tuple:
    """Identity of a script entry: its file (Sphinx stores an inline script's as None or "") and its attributes."""
    filename = str(getattr(script, "filename", script) or "")
    attributes = getattr(script, "attributes", {}) or {}
    return ("" if filename == "None" else filename), tuple(sorted((k, str(v)) for k, v in attributes.items()))


def _name(script) -> str:
    return str(getattr(script, "filename", script) or "").rsplit("/", 1)[-1]


def _first_of_each(scripts: list, key) -> list:
    """``scripts`` without those whose ``key`` an earlier one has."""
    seen = set()
    return [s for s in scripts if not (key(s) in seen or seen.add(key(s)))]


def dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if scripts:
        scripts[:] = _first_of_each(scripts, _key)


def widget_scripts_in_order(app, pagename, templatename, context, doctree) -> None:
    """Late pass, after MyST-NB adds the widget scripts (embed-amd.js before require.js, each twice: "define is not
    defined"): one entry per JavaScript file, require.js just before the embed bundle."""
    scripts = context.get("script_files")
    if not scripts:
        return
    kept = _first_of_each(scripts, lambda s: _name(s) if _name(s).endswith(".js") else _key(s))
    first = [s for s in kept if _name(s) in _FIRST]
    rest = [s for s in kept if _name(s) not in _FIRST]
    embed = [i for i, s in enumerate(rest) if _name(s) == "embed-amd.js"]
    if first and embed:
        kept = rest[:embed[0]] + first + rest[embed[0]:]
    scripts[:] = kept


def setup(app):
    # early: a theme handler that returns a value would stop later ones
    app.connect("html-page-context", dedupe_scripts, priority=100)
    app.connect("html-page-context", widget_scripts_in_order, priority=600)  # after MyST-NB's (500)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
