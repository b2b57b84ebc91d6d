"""Images per second of the training engine with 1 and 2 processes (torchrun, gloo on the CPU), as a ratio.

This proves the data-parallel code path, not GPU speed: on a CPU both processes share the same cores (one thread
each here, so 2 processes may use 2 cores where 1 uses 1). Each setting trains the same small config (UCI digits,
ResNet-8 width 8, global batch 128) in a fresh run folder; images per second is the last epoch's
``images_per_second`` (training only, global images). Run: ``python benchmarks/ddp_scaling.py [--epochs 3]``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ctcbook.config import TrainConfig
from ctcbook.launch import torchrun_command
from ctcbook.runs import RunStore


def images_per_second(config: TrainConfig, nproc: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(config.to_dict()))
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
        subprocess.run(torchrun_command(path, Path(tmp) / "runs", nproc, "cpu"), env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run = RunStore(Path(tmp) / "runs").open(config.to_dict(), prefix=config.run_prefix)
        return run.metrics()[-1]["images_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    config = TrainConfig(source="digits", source_classes=None, train_size=None, depth=8, width=8, epochs=args.epochs,
                         batch_size=128, seed=0)
    one = images_per_second(config, 1)
    two = images_per_second(config, 2)
    print(f"1 process: {one:8.0f} images/s\n2 processes: {two:6.0f} images/s  ratio 2/1 = {two / one:4.2f}  "
          f"(CPU, gloo, one thread per process, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    sys.exit(main())
