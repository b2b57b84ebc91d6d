"""Train many independent runs at once: ``dispatch(configs, backend=...)`` returns every config's finished run.

Every run goes through :func:`ctcbook.train.train`: finished runs are reused, interrupted ones resume, the run lock
keeps two dispatchers off the same run, and a config listed twice is trained once. Backends:

``serial``
    one run after the other in this process.
``local``
    one ``spawn``-ed worker process per slot (never ``fork``: torch's threads and CUDA do not survive it). On CUDA a
    slot is one visible GPU (default: one worker per GPU, round-robin beyond); on the CPU ``workers`` (default 1)
    each get ``cores // workers`` threads. One worker trains in this process, as ``serial``.
``slurm``
    one job per missing run through submitit (a pre-empted job is requeued and resumes); ``workers`` caps the jobs
    running at once. Settings: ``slurm`` or the JSON object in ``$CTCBOOK_SLURM``, submitit's ``update_parameters``
    plus ``cluster`` ("local"/"debug": no cluster) and ``folder`` (logs). The run store must be on a shared disk.

``local`` and ``slurm`` print each run's finished epochs (from its ``metrics.jsonl``) to stderr.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import sys
import time
from typing import Any, Callable, Iterable, Sequence

import submitit
import submitit.helpers
import torch

from .config import FusionTrainConfig, TrainConfig, config_from_dict
from . import launch
from .runs import Run, RunStore
from .train import default_device, train

Config = TrainConfig | FusionTrainConfig

BACKENDS = ("serial", "local", "slurm")

#: Seconds between two looks at the runs' metrics (progress lines) while workers or jobs train.
POLL_SECONDS = 1.0


class DispatchError(RuntimeError):
    """Some runs of a dispatch did not finish (the message names each and why); dispatching again resumes them."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def worker_slots(device: torch.device, workers: int | None) -> list[str | None]:
    """One entry per local worker: the GPU it is pinned to on CUDA (as ``CUDA_VISIBLE_DEVICES`` names it), or None."""
    if device.type != "cuda":
        return [None] * (workers or 1)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    listed = [i.strip() for i in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if i.strip()]
    gpus = listed[:count] if listed else [str(i) for i in range(count)]
    if not gpus:
        raise ValueError(f"device {device} was asked for but torch sees no CUDA GPU")
    return [gpus[i % len(gpus)] for i in range(workers or len(gpus))]


def dispatch(configs: Iterable[Config], *, backend: str = "serial", workers: int | None = None,
             store: RunStore | None = None, device: torch.device | str | None = None, progress: bool = True,
             threads: int | None = None, slurm: dict[str, Any] | None = None,
             on_epoch_end: Callable[[int, Any, Run], None] | None = None,
             log: Callable[[str], None] = _stderr, nproc: int = 1) -> list[Run]:
    """Train the missing runs of ``configs`` and return all runs, in order.

    ``threads``: intra-op threads of each ``local`` CPU worker or ``slurm`` job; ``on_epoch_end`` runs in the worker or
    job (it must pickle); ``nproc`` > 1: each run over that many devices with torchrun (``serial`` only). ``local`` and
    ``slurm`` raise :class:`DispatchError` naming every run that did not finish, after the others have; ``serial``
    raises ``train()``'s error at once."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive integer or None (one per visible GPU; 1 on the CPU), "
                         f"got {workers!r}")
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be an int >= 1 (processes per run), got {nproc!r}")
    if nproc > 1 and backend != "serial":
        raise ValueError(f"nproc {nproc} (one run over several devices) needs backend 'serial', got {backend!r}: "
                         "either spread each run over devices (nproc) or run independent runs side by side (backend)")
    configs = list(configs)
    for i, config in enumerate(configs):
        if not isinstance(config, (TrainConfig, FusionTrainConfig)):
            raise TypeError(f"configs[{i}] must be a TrainConfig or a FusionTrainConfig, got {type(config).__name__}")
    store = store or RunStore()
    runs = [store.open(c.to_dict(), prefix=c.run_prefix) for c in configs]
    unique: dict[str, tuple[Config, Run]] = {}
    for config, run in zip(configs, runs):
        unique.setdefault(run.name, (config, run))
    missing = [config for config, run in unique.values() if not run.done]
    if not missing:
        return runs
    if backend == "slurm":
        _run_slurm(missing, store, workers, threads, slurm, on_epoch_end, progress, log)
        return runs
    if nproc > 1:
        for config in missing:
            launch.train(config, nproc=nproc, store=store, device=None if device is None else str(device),
                         progress=progress)
        return runs
    device = torch.device(device) if device is not None else default_device()
    before = torch.get_num_threads()
    if backend == "local":
        # threads follow from the workers asked for, not the runs still missing, so a run's CPU numbers (which
        # depend on the thread count) are the same in a pool or alone after an interrupted dispatch.
        slots = worker_slots(device, workers)
        per_worker = threads or max(1, available_cores() // len(slots))
        if len(missing) > 1 and len(slots) > 1:
            _run_local(missing, store, device, slots[:len(missing)], per_worker, on_epoch_end, progress, log)
            return runs
        if device.type == "cpu":  # one worker trains in this process
            torch.set_num_threads(per_worker)
    try:
        for config in missing:
            train(config, store=store, device=device, progress=progress, on_epoch_end=on_epoch_end)
    finally:
        torch.set_num_threads(before)
    return runs


# --- local: a pool of spawned worker processes -------------------------------------------------------------------
def _init_worker(slots: Any, threads: int) -> None:
    """Pin this worker to one slot's GPU (before CUDA is first touched) and give it its share of the CPU threads."""
    gpu = slots.get()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    torch.set_num_threads(threads)


def _train_dict(config: dict[str, Any], root: str, device: str | None, on_epoch_end: Callable | None) -> str:
    """Train a config sent to a worker process or cluster job as a dict; return its run folder."""
    run = train(config_from_dict(config), store=RunStore(root), device=device, progress=False,
                on_epoch_end=on_epoch_end)
    return str(run.path)


def _run_local(missing: Sequence[Config], store: RunStore, device: torch.device, slots: list[str | None],
               threads: int, on_epoch_end: Callable | None, progress: bool, log: Callable[[str], None]) -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    for slot in slots:
        queue.put(slot)
    where = f"GPUs {slots}" if device.type == "cuda" else f"CPU, {threads} thread(s) each"
    watch = _Progress(missing, store, log if progress else None)
    log(f"[dispatch] {len(missing)} run(s) on {len(slots)} local workers ({where})")
    pool = cf.ProcessPoolExecutor(len(slots), mp_context=ctx, initializer=_init_worker, initargs=(queue, threads))
    errors: dict[str, str] = {}
    try:
        futures = {pool.submit(_train_dict, c.to_dict(), str(store.root), device.type, on_epoch_end): run.name
                   for c, run in zip(missing, watch.runs)}
        pending = set(futures)
        while pending:
            done, pending = cf.wait(pending, timeout=POLL_SECONDS, return_when=cf.FIRST_COMPLETED)
            watch.poll()
            for future in done:
                err = future.exception()
                if isinstance(err, cf.process.BrokenProcessPool):
                    errors[futures[future]] = ("a worker process died (killed, or out of memory) while this run "
                                               "was queued or training; its finished epochs are saved and the next "
                                               "dispatch resumes it")
                elif err is not None:
                    errors[futures[future]] = f"{type(err).__name__}: {err}"
    except BaseException:  # an interrupted notebook cell: stop the workers now (their runs resume next time)
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    _raise_errors(errors, store, len(missing))


# --- slurm (or any submitit cluster) -----------------------------------------------------------------------------
class TrainJob(submitit.helpers.Checkpointable):
    """One cluster job: ``train()`` one config; requeued on a time-out or pre-emption, it resumes."""

    def __call__(self, config: dict[str, Any], root: str, threads: int | None = None,
                 on_epoch_end: Callable | None = None) -> str:
        if threads is not None:
            torch.set_num_threads(threads)
        return _train_dict(config, root, None, on_epoch_end)


def slurm_settings(slurm: dict[str, Any] | None) -> dict[str, Any]:
    """The executor settings: ``slurm`` or the JSON object in ``$CTCBOOK_SLURM`` (empty when neither is set)."""
    if slurm is not None and not isinstance(slurm, dict):
        raise ValueError(f"slurm must be a dict of submitit executor settings, got {slurm!r}")
    if slurm is not None:
        return dict(slurm)
    text = os.environ.get("CTCBOOK_SLURM", "").strip()
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError as err:
        raise ValueError(f"$CTCBOOK_SLURM must be a JSON object of submitit settings, got {text!r}: {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f"$CTCBOOK_SLURM must be a JSON object of submitit settings, got {text!r}")
    return value


def _run_slurm(missing: Sequence[Config], store: RunStore, workers: int | None, threads: int | None,
               slurm: dict[str, Any] | None, on_epoch_end: Callable | None, progress: bool,
               log: Callable[[str], None]) -> None:
    settings = slurm_settings(slurm)
    cluster = settings.pop("cluster", None)
    folder = settings.pop("folder", store.root / ".submitit")
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params = {"timeout_min": 24 * 60, "name": "ctcbook", **settings}
    if workers is not None:
        params.setdefault("slurm_array_parallelism", workers)
    executor.update_parameters(**params)
    n = len(missing)
    jobs = executor.map_array(TrainJob(), [c.to_dict() for c in missing], [str(store.root)] * n, [threads] * n,
                              [on_epoch_end] * n)
    log(f"[dispatch] {n} run(s) submitted to {executor.cluster} as job(s) {', '.join(j.job_id for j in jobs)}; "
        f"logs in {folder}")
    watch = _Progress(missing, store, log if progress else None)
    errors: dict[str, str] = {}
    try:
        while not all(job.done() for job in jobs):
            watch.poll()
            time.sleep(POLL_SECONDS)
        watch.poll()
    except BaseException:
        for job in jobs:
            job.cancel(check=False)
        raise
    for run, job in zip(watch.runs, jobs):
        try:
            job.result()
        except Exception as err:  # submitit's FailedJobError carries the job's stderr tail
            errors[run.name] = f"job {job.job_id}: {err}"
    _raise_errors(errors, store, n)


# --- shared: progress lines, errors -------------------------------------------------------------------------------
def _raise_errors(errors: dict[str, str], store: RunStore, total: int) -> None:
    if errors:
        lines = "\n".join(f"  {name}: {why}" for name, why in errors.items())
        raise DispatchError(f"{len(errors)} of {total} run(s) did not finish (run store {store.root}):\n{lines}\n"
                            "Their finished epochs are saved; dispatching again resumes them.")


class _Progress:
    """Prints one line per newly finished epoch of each run, read from its metrics file, and one when it is done."""

    def __init__(self, configs: Sequence[Config], store: RunStore, log: Callable[[str], None] | None):
        self.runs = [store.open(c.to_dict(), prefix=c.run_prefix) for c in configs]
        self.epochs = {r.name: c.epochs for r, c in zip(self.runs, configs)}
        self.seen = {r.name: max((row["epoch"] for row in r.metrics()), default=0) for r in self.runs}
        self.finished: set[str] = set()
        self.log = log

    def poll(self) -> None:
        if self.log is None:
            return
        for run in self.runs:
            if run.name in self.finished:
                continue
            for row in run.metrics():
                if row["epoch"] > self.seen[run.name]:
                    self.seen[run.name] = row["epoch"]
                    self.log(f"[dispatch] {run.name} epoch {row['epoch']}/{self.epochs[run.name]}: train loss "
                             f"{row.get('train_loss', float('nan')):.4f}, test acc "
                             f"{row.get('test_acc', float('nan')):.4f} ({row.get('device', '?')})")
            if run.done:
                self.finished.add(run.name)
                self.log(f"[dispatch] {run.name} done ({len(self.finished)}/{len(self.runs)} runs)")
