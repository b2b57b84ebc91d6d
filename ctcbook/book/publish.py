"""Copy a built book to a folder any static web host can serve.

Copied beside the destination and renamed into place, so an interrupted publish never leaves half a book; a
``.nojekyll`` file keeps GitHub Pages from hiding ``_static/``.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MARKER = ".ctcbook-published"


def publish(dest: str | os.PathLike, html: str | os.PathLike = REPO / "_build" / "html") -> Path:
    """Copy the built book ``html`` to ``dest`` (new, empty, or an earlier publish, which is replaced)."""
    html, dest = Path(html).resolve(), Path(dest).resolve()
    if not (html / "index.html").is_file():
        raise FileNotFoundError(f"no built book at {html} (index.html missing): run `make book` or "
                                f"`ctcbook book` first")
    if dest == html or html in dest.parents:
        raise ValueError(f"publish destination {dest} must be outside the built book {html}")
    if dest.exists() and any(dest.iterdir()) and not (dest / MARKER).exists():
        raise ValueError(f"publish destination {dest} is not empty and holds no earlier publish ({MARKER}); "
                         f"choose an empty or new folder")
    tmp = dest.with_name(f".{dest.name}.publishing")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted publish; copytree refuses what is left
    shutil.copytree(html, tmp, ignore=shutil.ignore_patterns(".buildinfo", ".doctrees"))
    (tmp / ".nojekyll").touch()
    (tmp / MARKER).write_text(f"copied from {html}\n")
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest
