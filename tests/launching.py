"""The two-process runs the multi-process tests compare with one process (gloo, spawned by torchrun)."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

from ctcbook import launch
from ctcbook.runs import Run, RunStore


def train_two_processes(config, root: Path) -> tuple[Run, str]:
    """The notebook's one call: :func:`ctcbook.launch.train` of ``config`` (a TrainConfig or FusionTrainConfig) with
    2 processes on CPU, runs in ``root/runs``; returns the run and the output it streamed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run = launch.train(config, nproc=2, store=RunStore(root / "runs"), device="cpu")
    return run, out.getvalue()
