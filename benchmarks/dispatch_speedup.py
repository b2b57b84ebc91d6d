"""Wall time of 4 independent tiny runs: ``local`` with 2 workers against ``serial``, as a ratio.

Each backend trains the same 4 configs (seeds 0-3) into its own fresh run store, so nothing is reused. ``serial``
runs in this process at torch's default thread count (today's behaviour); ``local`` starts 2 spawned workers with
``cores // 2`` threads each. The local time includes starting the workers (a Python + torch import each). On a
multi-GPU box run it with ``--device cuda`` (one worker per GPU, ``--workers`` defaults to their count).
Run: ``python benchmarks/dispatch_speedup.py [--train-size 2000] [--epochs 3] [--width 8] [--device cpu]``.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ctcbook.config import TrainConfig
from ctcbook.dispatch import available_cores, dispatch
from ctcbook.runs import RunStore


def wall_seconds(configs: list[TrainConfig], root: Path, **kwargs) -> float:
    start = time.perf_counter()
    runs = dispatch(configs, store=RunStore(root), progress=False, **kwargs)
    assert all(r.done for r in runs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None, help="default 2 on the CPU, one per GPU on CUDA")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    workers = args.workers or (2 if device.type == "cpu" else torch.cuda.device_count())
    configs = [TrainConfig(train_size=args.train_size, epochs=args.epochs, width=args.width, depth=8, seed=s)
               for s in range(args.runs)]
    print(f"{args.runs} runs: ResNet-8 width {args.width}, {args.train_size} images, {args.epochs} epochs, on "
          f"{device}; {available_cores()} CPU cores, torch default threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        serial = wall_seconds(configs, Path(tmp) / "serial", backend="serial", device=device)
        local = wall_seconds(configs, Path(tmp) / "local", backend="local", workers=workers, device=device)
    print(f"serial:             {serial:7.1f} s")
    print(f"local, {workers} workers:   {local:7.1f} s")
    print(f"ratio local/serial: {local / serial:7.2f}  (speed-up {serial / local:.2f}x)")


if __name__ == "__main__":
    main()
