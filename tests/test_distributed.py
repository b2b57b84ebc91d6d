"""DDP on the CPU: gloo, 2 processes started by ``torchrun --standalone`` as a subprocess (its workers are spawned
fresh interpreters, never forked from pytest).

Tolerance for 1-process vs 2-process equality: the global batch, its order and its augmentation are identical and
DDP averages the two halves' gradients, so the only difference is BatchNorm, which normalises over each rank's 32
images instead of all 64 (per-rank statistics, torchvision's default; SyncBatchNorm does not run on the CPU). Measured
here: per-epoch training loss within 0.0009 nats and test accuracy within 0.0067 (3 of 450 images); the test allows
0.03 nats and 0.02 (9 images). Mistakes this
catches (each put in by hand once): ranks keeping the whole global batch instead of their share (the 1-vs-2
comparison fails), every rank writing the run folder (two metrics rows per epoch), a duplicated shard (the unit
test of the shares), CTC memories updated from one rank's embeddings only (memories differ between ranks).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ctcbook import distributed, launch
from ctcbook.config import TrainConfig
from ctcbook.runs import RunStore
from ctcbook.train import train
from launching import train_two_processes

REPO = Path(__file__).resolve().parents[1]
CONFIG = TrainConfig(source="digits", source_classes=None, train_size=None, depth=8, width=4, stem_stride=2,
                     epochs=2, batch_size=64, lr=0.05, seed=0)
LOSS_TOL, ACC_TOL = 0.03, 0.02


def torchrun(args: list[str], tmp: Path, *, nproc: int = 2, extra: list[str] = (), wait: bool = True,
             timeout: int = 300):
    """``python -m torch.distributed.run --standalone --nproc_per_node=nproc [extra] args`` with this checkout first
    on the path, one thread per worker, runs in ``tmp/runs``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "CTCBOOK_RUNS": str(tmp / "runs")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *extra, *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    return out


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """The notebook's one call: ctcbook.launch.train starts torchrun with 2 processes and streams its output."""
    return train_two_processes(CONFIG, tmp_path_factory.mktemp("ddp2"))


def test_from_env_and_shares():
    assert distributed.from_env({}) == distributed.SINGLE
    d = distributed.from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert (d.rank, d.world_size, d.main, d.active) == (1, 2, False, True)
    with pytest.raises(ValueError, match="RANK must lie in 0..WORLD_SIZE-1.*RANK=2, WORLD_SIZE=2"):
        distributed.from_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer, got 'two'"):
        distributed.from_env({"RANK": "0", "WORLD_SIZE": "two"})
    with pytest.raises(ValueError, match="batch_size 130 .* divisible by the world size 4.*choose e.g. 128"):
        distributed.per_rank_batch(130, distributed.Dist(0, 4))
    batch = torch.arange(12)
    shares = [distributed.shard(batch, distributed.Dist(r, 3)) for r in range(3)]
    assert torch.equal(torch.cat(shares), batch)  # disjoint, in rank order, together the whole global batch


def test_two_processes_match_one(two_process_run, tmp_path):
    ddp, out = two_process_run
    one = train(CONFIG, store=RunStore(tmp_path / "runs"), progress=False, device="cpu")
    assert one.name == ddp.name  # the hash does not depend on the world size
    rows1, rows2 = one.metrics(), ddp.metrics()
    assert [r["epoch"] for r in rows2] == [1, 2]  # exactly one row per epoch: only rank 0 writes
    assert all(r["world_size"] == 2 for r in rows2) and "world_size" not in rows1[0]
    assert ddp.done and ddp.saved_epochs() == [1, 2]
    print("1 vs 2 processes, per epoch: train_loss difference",
          [round(abs(a["train_loss"] - b["train_loss"]), 5) for a, b in zip(rows1, rows2)], "test_acc difference",
          [round(abs(a["test_acc"] - b["test_acc"]), 4) for a, b in zip(rows1, rows2)])
    for a, b in zip(rows1, rows2):
        assert abs(a["train_loss"] - b["train_loss"]) < LOSS_TOL, (a, b)
        assert abs(a["test_acc"] - b["test_acc"]) < ACC_TOL, (a, b)
        assert abs(a["train_acc"] - b["train_acc"]) < ACC_TOL, (a, b)
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-9)  # same number of steps: the global batch is 64
    assert out.count(str(ddp.path)) == 1  # the run's path printed once, by rank 0
    assert "2/2" in out  # rank 0's progress bar reached the notebook


def test_launch_refuses_bad_nproc():
    with pytest.raises(ValueError, match="nproc must be an integer >= 1, got 0"):
        launch.train(CONFIG, nproc=0)
    if torch.cuda.device_count() < 2:
        with pytest.raises(ValueError, match="nproc 2 needs 2 CUDA devices, this machine has"):
            launch.train(CONFIG, nproc=2)


def _worker_pids(parent: int) -> dict[int, int]:
    """{RANK: pid} of the torchrun workers below ``parent`` (read from /proc)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        ranks = [e[5:] for e in env if e.startswith(b"RANK=")]
        if ppid == parent and ranks:
            found[int(ranks[0])] = int(proc.name)
    return found


def test_killed_rank_resumes_to_the_same_result(two_process_run, tmp_path):
    """SIGKILL rank 1 once epoch 1 is saved (it is then inside epoch 2); torchrun restarts both workers, which resume
    from epoch 1 and finish with the same metrics as the uninterrupted 2-process run."""
    ddp, _ = two_process_run
    config = CONFIG
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    proc = torchrun(["-m", "ctcbook", "train", "--config", "config.json", "--device", "cpu", "--runs", "runs"],
                    tmp_path, extra=["--max-restarts=1"], wait=False)
    run = RunStore(tmp_path / "runs").open(config.to_dict(), prefix=config.run_prefix)
    deadline = time.time() + 240
    killed = None
    while time.time() < deadline and proc.poll() is None:
        if len(run.metrics()) == 1 and not killed:
            pids = _worker_pids(proc.pid)
            if 1 in pids:
                os.kill(pids[1], signal.SIGKILL)
                killed = len(run.metrics())
                break
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=300)
    assert killed == 1, "rank 1 was not killed while epoch 2 was running"
    assert proc.returncode == 0, out[-5000:]
    assert run.done and [r["epoch"] for r in run.metrics()] == [1, 2]
    for a, b in zip(ddp.metrics(), run.metrics()):
        for key in ("train_loss", "train_acc", "test_acc", "test_loss"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (key, a, b)
    final = {k: v.float() for k, v in run.load_checkpoint(2).items()}
    ref = {k: v.float() for k, v in ddp.load_checkpoint(2).items()}
    assert all(torch.allclose(final[k], ref[k], atol=1e-5) for k in ref)


CTC_WORKER = """
import json, sys, torch
import ctcbook.train as engine
from ctcbook.config import TrainConfig
from ctcbook.runs import RunStore
from ctcbook import distributed

made = []
build = engine.build_objective
engine.build_objective = lambda *a: made.append(build(*a)) or made[-1]
config = TrainConfig.from_dict(json.loads(open(sys.argv[1]).read()))
run = engine.train(config, store=RunStore("runs"), device="cpu", progress=False)
d = distributed.from_env()
torch.save({k: v for k, v in made[0].state_dict().items()}, f"objective{d.rank}.pt")
distributed.cleanup(d)
"""


def test_ctc_memories_identical_on_both_ranks(tmp_path):
    config = CONFIG.replace(epochs=3, schedule="two_stage", objective="ctc",
                            stages={"stage_two_epoch": 1}, ctc={"instance_dim": 16, "nce_dim": 16, "nce_k": 32})
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    (tmp_path / "worker.py").write_text(CTC_WORKER)
    torchrun(["worker.py", "config.json"], tmp_path)
    a, b = (torch.load(tmp_path / f"objective{r}.pt") for r in (0, 1))
    for key in ("instance_memory", "memory", "snapshot_memory", "log_z"):
        assert torch.equal(a[key], b[key]), key
    assert torch.isfinite(a["log_z"]).all()  # stage 2 ran
    run = RunStore(tmp_path / "runs").open(config.to_dict(), prefix=config.run_prefix)
    saved = run.load_state()["objective"]["module"]
    assert torch.equal(saved["memory"], a["memory"]) and [r["stage"] for r in run.metrics()] == [1, 2, 2]
