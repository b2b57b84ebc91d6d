"""What the terminal shows while papermill executes a chapter: chapter, cell, and the kernel's progress lines.

Each piece of kernel output between ``\\r`` or newlines becomes one line ``[ctcbook] 03_ctc cell 5/25 | <text>``, so a
CI log gets whole lines, never thousands of tqdm updates; a cell silent for ``heartbeat_seconds`` gets a
``still running`` line.
"""
from __future__ import annotations

import re
import threading
import time
from typing import Callable

#: Kernel environment (tqdm reads ``TQDM_*`` as its defaults): a bar updates at most every 20 s, plus its final state.
KERNEL_ENV = {"TQDM_MININTERVAL": "20"}

_PIECES = re.compile(r"[\r\n]+")


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


class ChapterProgress:
    """Streams one chapter's execution to ``log`` (a ``print``-like callable); use as a context manager."""

    def __init__(self, chapter: str, n_cells: int, log: Callable[[str], None], heartbeat_seconds: float = 30.0):
        self.chapter, self.n_cells, self.log = chapter, n_cells, log
        self.heartbeat_seconds = heartbeat_seconds
        self.cell: int | None = None
        self.cell_start = self.last_line = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, name=f"progress-{chapter}", daemon=True)

    def _emit(self, text: str) -> None:
        where = f"cell {self.cell}/{self.n_cells}" if self.cell is not None else "start"
        with self._lock:
            self.last_line = time.monotonic()
            self.log(f"[ctcbook] {self.chapter} {where} | {text}")

    def cell_started(self, cell=None, cell_index: int | None = None, **_) -> None:
        """nbclient's ``on_cell_start`` hook (cell numbers are 1-based, like papermill's)."""
        if cell is None or cell.get("cell_type") != "code":
            return
        self.cell = (cell_index or 0) + 1
        self.cell_start = time.monotonic()
        first = next((line for line in cell.get("source", "").splitlines() if line.strip()), "")
        self._emit(f"running: {first[:90]}")

    def write(self, text: str) -> None:
        """A stream output of the kernel (papermill's ``stdout_file`` / ``stderr_file``)."""
        for piece in _PIECES.split(text):
            if piece.strip():
                self._emit(piece.rstrip())

    def flush(self) -> None:
        pass

    def _heartbeat(self) -> None:
        while not self._stop.wait(1.0):
            now = time.monotonic()
            if self.cell is not None and now - self.last_line >= self.heartbeat_seconds:
                self._emit(f"still running ({_duration(now - self.cell_start)} in this cell)")

    def __enter__(self) -> "ChapterProgress":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
