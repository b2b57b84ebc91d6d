"""The run dispatcher: parallel runs identical to serial ones, resume after a killed worker, no run trained twice,
the slurm code path through submitit's local executor."""
import functools
import multiprocessing as mp
import os
import signal
from pathlib import Path

import pytest
import torch

from ctcbook.config import TrainConfig
from ctcbook.dispatch import DispatchError, dispatch
from ctcbook.runs import RunStore
from ctcbook.train import train

TINY = TrainConfig(train_size=200, epochs=2, width=4, depth=8, batch_size=50)


# Hooks run inside worker processes (spawn imports this module there by name): module-level and picklable.
def record_epoch(log_file: str, epoch: int, model, run) -> None:
    """Append "<run name> <epoch> <pid>" to ``log_file``: which process trained which epoch."""
    with open(log_file, "a") as f:
        f.write(f"{run.name} {epoch} {os.getpid()}\n")


def kill_worker_after_epoch_2_of_seed_1(epoch: int, model, run) -> None:
    if run.config["seed"] == 1 and epoch == 2:
        os.kill(os.getpid(), signal.SIGKILL)


def trained_epochs(log_file: Path) -> list[tuple[str, int]]:
    if not log_file.exists():
        return []
    return [(name, int(epoch)) for name, epoch, _ in (line.split() for line in log_file.read_text().splitlines())]


def serial_weights(configs, root: Path, threads: int) -> list[dict]:
    """Final weights of ``configs`` trained one after the other in this process at ``threads`` intra-op threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return [train(c, store=RunStore(root), device="cpu", progress=False).load_checkpoint(c.epochs)
                for c in configs]
    finally:
        torch.set_num_threads(before)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_options_name_the_parameter(tmp_path):
    with pytest.raises(ValueError, match=r"backend must be one of \['serial', 'local', 'slurm'\], got 'mpi'"):
        dispatch([TINY], backend="mpi", store=RunStore(tmp_path))
    with pytest.raises(ValueError, match="workers must be a positive integer or None.*got 0"):
        dispatch([TINY], backend="local", workers=0, store=RunStore(tmp_path))
    with pytest.raises(TypeError, match=r"configs\[1\] must be a TrainConfig or a FusionTrainConfig, got dict"):
        dispatch([TINY, TINY.to_dict()], store=RunStore(tmp_path))
    with pytest.raises(ValueError, match=r"CTCBOOK_SLURM must be a JSON object"):
        os.environ["CTCBOOK_SLURM"] = "partition=gpu"
        try:
            dispatch([TINY], backend="slurm", store=RunStore(tmp_path))
        finally:
            del os.environ["CTCBOOK_SLURM"]


def test_local_workers_match_serial_training_bit_for_bit(tmp_path):
    """Two CPU workers at one thread each train 4 runs exactly as one process at one thread does; a config listed
    twice is trained once; finished runs are then reused without starting a worker; progress names every epoch."""
    configs = [TINY.replace(seed=s) for s in range(4)]
    lines = []
    log_file = tmp_path / "epochs.log"
    runs = dispatch(configs + [configs[0]], backend="local", workers=2, device="cpu", store=RunStore(tmp_path / "p"),
                    on_epoch_end=functools.partial(record_epoch, str(log_file)), log=lines.append)
    assert [r.config["seed"] for r in runs] == [0, 1, 2, 3, 0] and runs[4].path == runs[0].path
    assert all(r.done for r in runs)
    assert sorted(trained_epochs(log_file)) == sorted((r.name, e) for r in runs[:4] for e in (1, 2))
    assert len({pid for *_, pid in (line.split() for line in log_file.read_text().splitlines())}) == 2
    assert any("2 local workers (CPU, 1 thread(s) each)" in line for line in lines)
    for run in runs[:4]:
        assert any(f"{run.name} epoch 2/2" in line for line in lines), lines
        assert any(f"{run.name} done" in line for line in lines), lines

    reference = serial_weights(configs, tmp_path / "s", threads=1)
    for run, weights in zip(runs, reference):
        assert same_weights(run.load_checkpoint(2), weights), run.name

    again = dispatch(configs, backend="local", workers=2, device="cpu", store=RunStore(tmp_path / "p"),
                     on_epoch_end=functools.partial(record_epoch, str(log_file)), log=lines.append)
    assert [r.path for r in again] == [r.path for r in runs[:4]]
    assert len(trained_epochs(log_file)) == 8  # nothing trained again


def test_killed_worker_is_resumed_by_the_next_dispatch(tmp_path):
    configs = [TINY.replace(seed=s, epochs=3) for s in range(2)]
    store = RunStore(tmp_path / "p")
    with pytest.raises(DispatchError, match=r"worker process died.*\n.*dispatching again resumes them") as err:
        dispatch(configs, backend="local", workers=2, device="cpu", store=store,
                 on_epoch_end=kill_worker_after_epoch_2_of_seed_1, log=lambda _: None)
    killed = store.open(configs[1].to_dict(), prefix=configs[1].run_prefix)
    assert killed.name in str(err.value)
    assert not killed.done and killed.saved_epochs() == [1, 2]

    log_file = tmp_path / "epochs.log"
    runs = dispatch(configs, backend="local", workers=2, device="cpu", store=store,
                    on_epoch_end=functools.partial(record_epoch, str(log_file)), log=lambda _: None)
    assert all(r.done for r in runs)
    assert (killed.name, 3) in trained_epochs(log_file)
    assert (killed.name, 1) not in trained_epochs(log_file) and (killed.name, 2) not in trained_epochs(log_file)
    assert [row["epoch"] for row in runs[1].metrics()] == [1, 2, 3]
    reference = serial_weights(configs, tmp_path / "s", threads=1)
    for run, weights in zip(runs, reference):
        assert same_weights(run.load_checkpoint(3), weights), run.name


def _dispatch_in_process(configs, root, log_file, start):
    torch.set_num_threads(1)  # two processes at torch's default threads each crawl on a 2-core machine
    start.wait(timeout=60)
    dispatch(configs, backend="serial", store=RunStore(root), device="cpu", progress=False,
             on_epoch_end=functools.partial(record_epoch, log_file))


def test_two_dispatchers_at_once_train_each_run_once(tmp_path):
    shared, a, b = (TINY.replace(seed=s, epochs=3) for s in (7, 8, 9))
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(2)
    log_file = str(tmp_path / "epochs.log")
    procs = [ctx.Process(target=_dispatch_in_process, args=(cs, str(tmp_path / "runs"), log_file, start))
             for cs in ([shared, a], [shared, b])]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    store = RunStore(tmp_path / "runs")
    names = [store.open(c.to_dict(), prefix=c.run_prefix).name for c in (shared, a, b)]
    assert sorted(trained_epochs(Path(log_file))) == sorted((n, e) for n in names for e in (1, 2, 3))


def test_slurm_backend_through_submitits_local_executor(tmp_path):
    """The slurm code path (submitit job array, progress from the run folders, results) with submitit's local
    executor standing in for the cluster; the jobs at one thread match serial training at one thread."""
    configs = [TINY.replace(seed=s) for s in (0, 1)]
    lines = []
    runs = dispatch(configs, backend="slurm", workers=2, threads=1, store=RunStore(tmp_path / "p"), log=lines.append,
                    slurm={"cluster": "local", "folder": str(tmp_path / "jobs"), "timeout_min": 10})
    assert all(r.done for r in runs)
    assert any("submitted to local" in line for line in lines)
    assert any(f"{runs[0].name} done" in line for line in lines), lines
    for run, weights in zip(runs, serial_weights(configs, tmp_path / "s", threads=1)):
        assert same_weights(run.load_checkpoint(2), weights), run.name


def test_slurm_backend_reports_a_failed_job(tmp_path):
    bad = TINY.replace(batch_size=500)  # more than the 200 training images: train() raises ValueError in the job
    with pytest.raises(DispatchError, match=r"(?s)1 of 1 run\(s\) did not finish.*job .*batch_size 500 exceeds"):
        dispatch([bad], backend="slurm", store=RunStore(tmp_path / "p"), log=lambda _: None,
                 slurm={"cluster": "local", "folder": str(tmp_path / "jobs"), "timeout_min": 10})


def test_gpu_workers_are_pinned_one_visible_gpu_each(monkeypatch):
    """On CUDA each local worker gets one of the visible GPUs (round-robin past their count) and sets
    CUDA_VISIBLE_DEVICES to it before touching CUDA; on the CPU no GPU is named. (CUDA faked: CI has no GPU.)"""
    import queue

    import ctcbook.dispatch as d

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    assert d.worker_slots(torch.device("cuda"), None) == ["5", "7"]
    assert d.worker_slots(torch.device("cuda"), 3) == ["5", "7", "5"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert d.worker_slots(torch.device("cuda"), None) == ["0", "1"]
    assert d.worker_slots(torch.device("cpu"), 2) == [None, None]
    slots = queue.Queue()
    slots.put("7")
    before = torch.get_num_threads()
    try:
        d._init_worker(slots, 1)
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "7" and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
