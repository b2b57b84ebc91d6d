"""Run store: one folder per training run, named by a hash of everything that changes its numbers.

Layout of a run folder ``<root>/<prefix>-<hash>/``::

    config.json          the run's config (written once, atomically)
    metrics.jsonl        append-only log, one JSON object per finished epoch
    checkpoints/e0001.pt model weights after each epoch (what the probes read)
    state.pt             full training state after the last complete epoch (model, optimiser, schedule, epoch)
    evals/               cached evaluations of the checkpoints (probes, information estimates)
    DONE                 completion marker, written last
    FAILED               written instead of DONE when training diverged (epoch, step, reason)

Every file is written to a temporary name in the same folder and renamed into place, so a crash never leaves a
half-written file under a real name.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import torch

#: Bump when a code change alters the numbers a run produces; it is part of every run's hash.
CODE_VERSION = 1


def default_root() -> Path:
    """``$CTCBOOK_RUNS`` if set, else ``./runs`` under the current directory."""
    return Path(os.environ.get("CTCBOOK_RUNS", "runs")).resolve()


def config_hash(config: dict[str, Any]) -> str:
    """12 hex digits of SHA-256 over the canonical JSON of ``config`` plus :data:`CODE_VERSION`."""
    blob = json.dumps({"config": config, "code_version": CODE_VERSION}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a torn last line (crash mid-append) is ignored."""
    if not Path(path).exists():
        return []
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON line and fsync it (a crash can tear only the last line, which :func:`read_jsonl` skips)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


class RunFailedError(RuntimeError):
    """A run is marked FAILED (its loss became NaN/inf); it is never reused as done."""


class Run:
    """One run folder. Create through :meth:`RunStore.open`."""

    def __init__(self, path: Path, config: dict[str, Any]):
        self.path = Path(path)
        self.config = config

    def __repr__(self) -> str:
        return f"Run({self.path.name}, done={self.done})"

    @property
    def name(self) -> str:
        return self.path.name

    # --- markers -------------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return (self.path / "DONE").exists()

    @property
    def failure(self) -> dict[str, Any] | None:
        f = self.path / "FAILED"
        return json.loads(f.read_text()) if f.exists() else None

    def mark_done(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.path / "DONE", {"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **summary})

    def mark_failed(self, epoch: int, step: int, reason: str) -> None:
        atomic_write_json(self.path / "FAILED", {"epoch": epoch, "step": step, "reason": reason})

    # --- metrics -------------------------------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def metrics(self) -> list[dict[str, Any]]:
        """Per-epoch rows (``epoch`` 1-based), in order."""
        return read_jsonl(self.metrics_path)

    def append_metrics(self, row: dict[str, Any]) -> None:
        append_jsonl(self.metrics_path, row)

    def truncate_metrics(self, last_epoch: int) -> None:
        """Drop rows after ``last_epoch`` (left by a crash between the log append and the state save)."""
        rows = [r for r in self.metrics() if r["epoch"] <= last_epoch]
        atomic_write_bytes(self.metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode())

    # --- checkpoints and state -----------------------------------------------------------------------------
    def checkpoint_path(self, epoch: int) -> Path:
        return self.path / "checkpoints" / f"e{epoch:04d}.pt"

    def saved_epochs(self) -> list[int]:
        """Epochs (1-based) with a saved checkpoint, ascending."""
        folder = self.path / "checkpoints"
        return sorted(int(p.stem[1:]) for p in folder.glob("e*.pt")) if folder.exists() else []

    def save_checkpoint(self, epoch: int, state_dict: dict[str, torch.Tensor]) -> None:
        atomic_torch_save({k: v.detach().cpu() for k, v in state_dict.items()}, self.checkpoint_path(epoch))

    def load_checkpoint(self, epoch: int) -> dict[str, torch.Tensor]:
        path = self.checkpoint_path(epoch)
        if not path.exists():
            raise FileNotFoundError(f"run {self.name} has no checkpoint for epoch {epoch}; saved: {self.saved_epochs()}")
        return torch.load(path, map_location="cpu", weights_only=True)

    @property
    def state_path(self) -> Path:
        return self.path / "state.pt"

    def save_state(self, state: dict[str, Any]) -> None:
        atomic_torch_save(state, self.state_path)

    def load_state(self) -> dict[str, Any] | None:
        return torch.load(self.state_path, map_location="cpu", weights_only=False) if self.state_path.exists() else None

    # --- cached evaluations --------------------------------------------------------------------------------
    def eval_path(self, kind: str, spec: dict[str, Any]) -> Path:
        """Where an evaluation of kind ``kind`` with settings ``spec`` is cached (a JSON-lines file)."""
        return self.path / "evals" / f"{kind}-{config_hash(spec)}.jsonl"


class RunStore:
    """A folder of runs. ``RunStore().open(config)`` returns the run for that config, creating its folder."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).resolve() if root is not None else default_root()

    def open(self, config: dict[str, Any], prefix: str = "run") -> Run:
        path = self.root / f"{prefix}-{config_hash(config)}"
        config_file = path / "config.json"
        if config_file.exists():
            stored = json.loads(config_file.read_text())
            if stored != config:
                raise RuntimeError(f"{config_file} holds a different config than its hash says; delete {path}")
        else:
            atomic_write_json(config_file, config)
        used = os.environ.get("CTCBOOK_RUNS_USED")
        if used:  # the book runner asks which runs a chapter opened (its up-to-date check compares them)
            with open(used, "a") as f:
                f.write(f"{path}\n")
        return Run(path, config)

    def runs(self) -> Iterable[Run]:
        for cfg in sorted(self.root.glob("*/config.json")):
            yield Run(cfg.parent, json.loads(cfg.read_text()))
