"""One call from a notebook cell for a run on one or several devices: ``launch.train(config, nproc=8)`` runs
``torchrun --standalone --nproc_per_node=8 -m ctcbook train``, streams its output into the notebook and returns the
finished :class:`~ctcbook.runs.Run`; ``nproc`` 1 trains in this process. Several nodes start torchrun directly.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from . import train as engine
from .config import FusionTrainConfig, TrainConfig
from .runs import Run, RunStore


def torchrun_command(config_file: Path, runs: Path, nproc: int, device: str | None = None) -> list[str]:
    """The command line that trains ``config_file`` on ``nproc`` local processes (one per GPU, or gloo on CPUs)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "ctcbook", "train", "--config", str(config_file), "--runs", str(runs)]
    return cmd + (["--device", device] if device else [])


def train(config: TrainConfig | FusionTrainConfig, *, nproc: int = 1, store: RunStore | None = None,
          device: str | None = None, progress: bool = True) -> Run:
    """Train (or reuse, or resume) ``config`` on ``nproc`` local processes (CUDA devices, or gloo with
    ``device="cpu"``) and return its run, streaming the output to stdout line by line."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be an integer >= 1, got {nproc!r}")
    store = store or RunStore()
    if nproc == 1:
        return engine.train(config, store=store, device=device, progress=progress)
    if device != "cpu" and torch.cuda.device_count() < nproc:
        raise ValueError(f"nproc {nproc} needs {nproc} CUDA devices, this machine has {torch.cuda.device_count()} "
                         "(pass device='cpu' to run the processes on the CPU with gloo)")
    finished = store.open(config.to_dict(), prefix=config.run_prefix)
    if finished.done:  # reused without starting any process
        return finished
    store.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store.root, prefix=".launch-") as tmp:
        config_file = Path(tmp) / "config.json"
        config_file.write_text(json.dumps(config.to_dict()))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        repo = str(Path(__file__).resolve().parents[1])  # this checkout first, as in this process
        env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH", "")) if p)
        proc = subprocess.Popen(torchrun_command(config_file, store.root, nproc, device), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        tail: list[str] = []
        for line in proc.stdout:  # tqdm's carriage returns pass through: the bar updates in place
            if progress or not line.startswith(config.run_prefix):
                sys.stdout.write(line)
                sys.stdout.flush()
            tail = (tail + [line])[-60:]
        if proc.wait() != 0:
            raise RuntimeError(f"torchrun with {nproc} processes failed (exit code {proc.returncode}); the end of its "
                               "output:\n" + "".join(tail))
    return store.open(config.to_dict(), prefix=config.run_prefix)
