"""Run store: one folder per training run, named by a hash of everything that changes its numbers.

Layout of a run folder ``<root>/<prefix>-<hash>/``::

    config.json          the run's config (written once, atomically)
    metrics.jsonl        append-only log, one JSON object per finished epoch
    checkpoints/e0001.pt model weights after each epoch (what the probes read)
    state.pt             full training state after the last complete epoch (model, optimiser, schedule, epoch)
    state.prev.pt        the resume point before it (used, with a warning, when state.pt is damaged)
    *.pt.sha256          beside every checkpoint and state: JSON {"sha256", "bytes", "epoch"}, checked on load
    evals/               cached evaluations of the checkpoints (probes, information estimates)
    writer.lock          OS lock (flock) held by the one process training the run; writer.json names it
    DONE                 completion marker, written last
    FAILED               written instead of DONE when training diverged (epoch, step, reason)

Guarantees:

* **Atomic files.** Every file is written to a temporary name in its folder and renamed into place, so a crash or
  a full disk never leaves a half-written file under a real name; a failed write raises :class:`StoreWriteError`.
* **One writer.** :meth:`Run.writer` holds an exclusive ``flock`` on ``writer.lock``; the kernel drops it when its
  process dies, so a crashed holder blocks no one. ``writer.json`` names the holder (a waiter opens the lock file
  too). Readers take no lock: they read only files that were renamed into place.
* **Verified files.** Checkpoints and resume states carry a SHA-256 sidecar written after the file; a load checks it
  and raises :class:`DamagedFileError` naming run, file and epoch. A file without a sidecar loads unverified.
* **Evaluation caches** (``evals/*.jsonl``): :func:`append_jsonl` with ``unique=`` locks the cache file around
  read-check-append, so two processes computing the same evaluation leave one row per key.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import io
import json
import os
import socket
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import filelock
import torch

#: Bump when a code change alters the numbers a run produces; it is part of every run's hash.
CODE_VERSION = 1


def config_hash(config: dict[str, Any]) -> str:
    """12 hex digits of SHA-256 over the canonical JSON of ``config`` plus :data:`CODE_VERSION`."""
    blob = json.dumps({"config": config, "code_version": CODE_VERSION}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


class StoreWriteError(OSError):
    """A file of the run store could not be written (disk full, read-only folder...); earlier files are intact."""


def _write_error(path: Path, err: OSError) -> StoreWriteError:
    reason = err.strerror or str(err)
    hint = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space (disk quota)",
            errno.EROFS: "the file system is read-only: point $CTCBOOK_RUNS (or --runs) at a writable folder",
            errno.EACCES: "make the folder writable or point $CTCBOOK_RUNS (or --runs) elsewhere"}.get(
        err.errno, "fix the folder")
    return StoreWriteError(err.errno, f"cannot write {path.name} in {path.parent}: {reason}; {hint}. Everything "
                                      f"written before is intact; run again to resume from the last complete epoch")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and an atomic rename; a failure leaves ``path`` as it was."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, StoreWriteError):
            raise _write_error(path, err) from err
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_torch_save(obj: Any, path: Path) -> bytes:
    """``torch.save`` ``obj`` to ``path`` atomically; returns the bytes written."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())
    return buf.getvalue()


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


def append_jsonl(path: Path, row: dict[str, Any], *, unique: Sequence[str] | None = None,
                 complete: Sequence[str] = ()) -> bool:
    """Append one JSON line and fsync it (a failed write is truncated away); with ``unique`` (key fields), under a lock
    on ``<path>.lock``, not if a row has the same values and every ``complete`` field. Returns whether it appended."""
    path = Path(path)
    lock = filelock.FileLock(f"{path}.lock") if unique else contextlib.nullcontext()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with lock:
            if unique and any(all(r.get(k) == row.get(k) for k in unique) and all(c in r for c in complete)
                              for r in read_jsonl(path)):
                return False
            with open(path, "a") as f:
                size = f.tell()
                try:
                    f.write(json.dumps(row, sort_keys=True) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                except OSError:
                    with contextlib.suppress(OSError):
                        f.truncate(size)
                    raise
    except OSError as err:  # nothing in the block raises a StoreWriteError itself
        raise _write_error(path, err) from err
    return True


def checksum_path(path: Path) -> Path:
    return Path(f"{path}.sha256")


def save_verified(obj: Any, path: Path, epoch: int) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically, then its sidecar ``{"sha256", "bytes", "epoch"}``."""
    data = atomic_torch_save(obj, path)
    atomic_write_json(checksum_path(path), {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                                            "epoch": epoch})


class RunFailedError(RuntimeError):
    """A run is marked FAILED (its loss became NaN/inf); it is never reused as done."""


class DamagedFileError(RuntimeError):
    """A checkpoint or resume state fails its SHA-256 or cannot be read; the message says how to re-create it."""

    def __init__(self, run: "Run", path: Path, epoch: int | None, problem: str):
        self.run, self.path, self.epoch, self.problem = run, Path(path), epoch, problem
        at = f" (epoch {epoch})" if epoch is not None else ""
        super().__init__(f"run {run.name}: {self.path.relative_to(run.path)}{at} is damaged: {problem}. "
                         f"Re-create it with: {run.recreate_command()}")


class RunLockedError(RuntimeError):
    """Another live process is training this run (raised when not waiting for it)."""


class Run:
    """One run folder. Create through :meth:`RunStore.open`."""

    def __init__(self, path: Path, config: dict[str, Any]):
        self.path = Path(path)
        self.config = config
        self.metrics_path = self.path / "metrics.jsonl"
        self.state_path = self.path / "state.pt"
        self.prev_state_path = self.path / "state.prev.pt"

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
    def model_args(self) -> dict[str, Any]:
        """The data-dependent arguments its model is built with (``model.json``: classes, channels, mean, std, ...)."""
        return json.loads((self.path / "model.json").read_text())

    def checkpoint_path(self, epoch: int) -> Path:
        return self.path / "checkpoints" / f"e{epoch:04d}.pt"

    def saved_epochs(self) -> list[int]:
        """Epochs (1-based) with a saved checkpoint, ascending."""
        folder = self.path / "checkpoints"
        return sorted(int(p.stem[1:]) for p in folder.glob("e*.pt")) if folder.exists() else []

    def save_checkpoint(self, epoch: int, state_dict: dict[str, torch.Tensor]) -> None:
        save_verified({k: v.detach().cpu() for k, v in state_dict.items()}, self.checkpoint_path(epoch), epoch)

    def load_checkpoint(self, epoch: int) -> dict[str, torch.Tensor]:
        """Weights after ``epoch``, verified against their sidecar; raises :class:`DamagedFileError`."""
        path = self.checkpoint_path(epoch)
        if not path.exists():
            raise FileNotFoundError(f"run {self.name} has no checkpoint for epoch {epoch}; saved: {self.saved_epochs()}")
        return self._load_verified(path, epoch, weights_only=True)

    def _load_verified(self, path: Path, epoch: int | None, *, weights_only: bool) -> Any:
        """``torch.load`` ``path``, checked against its SHA-256 sidecar if any; raises :class:`DamagedFileError`."""
        side = checksum_path(path)
        if side.exists():
            try:
                expected = json.loads(side.read_text())
                want, at = expected["sha256"], expected.get("epoch", epoch)
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise DamagedFileError(self, side, epoch, f"unreadable checksum file ({err})") from None
            with open(path, "rb") as f:
                got = hashlib.file_digest(f, "sha256").hexdigest()
            if got != want:
                raise DamagedFileError(self, path, at, f"SHA-256 {got[:12]}... of its {path.stat().st_size} bytes "
                                                       f"differs from the recorded {want[:12]}... "
                                                       f"({expected.get('bytes')} bytes)")
        try:
            return torch.load(path, map_location="cpu", weights_only=weights_only)
        except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError... for a cut-off file
            raise DamagedFileError(self, path, epoch, f"unreadable ({type(err).__name__}: "
                                                      f"{str(err).splitlines()[0] if str(err) else ''})") from None

    def recreate_command(self) -> str:
        """Shell command that re-trains this run, keeping the damaged folder aside."""
        return (f"mv {self.path} {self.path}.damaged && ctcbook train --config {self.path}.damaged/config.json "
                f"--runs {self.path.parent}")

    def save_state(self, state: dict[str, Any]) -> None:
        """Save the resume point ``state`` as ``state.pt``, the one before it renamed to ``state.prev.pt``."""
        for src, dst in ((self.state_path, self.prev_state_path),
                         (checksum_path(self.state_path), checksum_path(self.prev_state_path))):
            if src.exists():
                try:
                    os.replace(src, dst)
                except OSError as err:
                    raise _write_error(dst, err) from err
        save_verified(state, self.state_path, state.get("epoch"))

    def load_state(self) -> dict[str, Any] | None:
        """The latest intact resume state or None: ``state.pt``, else ``state.prev.pt`` (a warning), else raises."""
        damaged = []
        for path in (self.state_path, self.prev_state_path):
            if not path.exists():
                continue
            try:
                state = self._load_verified(path, None, weights_only=False)
            except DamagedFileError as err:
                damaged.append(err)
                continue
            for bad in damaged:
                at = f" (epoch {bad.epoch})" if bad.epoch is not None else ""
                warnings.warn(f"run {self.name}: {bad.path.name}{at} is damaged ({bad.problem}); resuming from "
                              f"{path.name} (epoch {state['epoch']}) instead, one more epoch to re-train", stacklevel=2)
            return state
        if damaged:
            raise damaged[-1] if len(damaged) == 1 else DamagedFileError(
                self, self.state_path, None, "state.pt and state.prev.pt are both damaged "
                                             f"({'; '.join(e.problem for e in damaged)})")
        return None

    def damaged_files(self) -> list[DamagedFileError]:
        """Every checkpoint and resume state that fails its SHA-256 or cannot be read (``ctcbook check``)."""
        found = []
        files = [(self.checkpoint_path(e), e, True) for e in self.saved_epochs()]
        files += [(p, None, False) for p in (self.state_path, self.prev_state_path) if p.exists()]
        for path, epoch, weights_only in files:
            try:
                self._load_verified(path, epoch, weights_only=weights_only)
            except DamagedFileError as err:
                found.append(err)
        return found

    # --- the one writer ------------------------------------------------------------------------------------
    def holder(self) -> dict[str, Any] | None:
        """Who holds (or last held) the writer lock: ``{"pid", "host", "started"}``, if known."""
        try:
            return json.loads((self.path / "writer.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None

    @contextlib.contextmanager
    def writer(self, *, wait: bool = True) -> Iterator["Run"]:
        """Hold this run's writer lock for the ``with`` block, waiting for another holder (or raising, without
        ``wait``); the caller re-checks :attr:`done` after."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(self.path / "writer.lock")
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            h = self.holder() or {}
            who = (f"process {h.get('pid', '?')} on {h.get('host', '?')} (since {h.get('started', '?')})"
                   if h else "another process")
            if not wait:
                raise RunLockedError(f"run {self.name} is being trained by {who}; wait for it or run again "
                                     f"without --no-wait to wait") from None
            print(f"[ctcbook] run {self.name} is being trained by {who}; waiting for it to finish")
            lock.acquire(timeout=-1)
        try:
            atomic_write_json(self.path / "writer.json", {
                "pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")})
            yield self
        finally:
            lock.release()

    # --- cached evaluations --------------------------------------------------------------------------------
    def eval_path(self, kind: str, spec: dict[str, Any]) -> Path:
        """Where an evaluation of kind ``kind`` with settings ``spec`` is cached (a JSON-lines file)."""
        return self.path / "evals" / f"{kind}-{config_hash(spec)}.jsonl"


class RunStore:
    """A folder of runs. ``RunStore().open(config)`` returns the run for that config, creating its folder."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root if root is not None else os.environ.get("CTCBOOK_RUNS", "runs")).resolve()

    def open(self, config: dict[str, Any], prefix: str = "run") -> Run:
        path = self.root / f"{prefix}-{config_hash(config)}"
        config_file = path / "config.json"
        if config_file.exists():
            if json.loads(config_file.read_text()) != config:
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
