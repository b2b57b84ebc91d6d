"""Data-parallel training under ``torchrun``: the process group, each rank's share of a batch, the collectives.

Without torchrun's ``RANK``/``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) nothing is initialised and every helper is the
identity. As in torchvision's references, ``batch_size`` is the *global* batch: each rank trains on
``batch_size / world_size`` images of it and DDP averages the gradients. BatchNorm statistics are per rank
(``SyncBatchNorm`` runs on GPUs only, so the CPU could not test it): the one way the numbers depend on the world size.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: ``rank`` in 0..world_size-1 (global), ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes the run folder and prints progress."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


SINGLE = Dist()


def from_env(environ: dict[str, str] | None = None) -> Dist:
    """The :class:`Dist` that torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` describe (single process without)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return SINGLE
    values = {}
    for name, default in (("RANK", None), ("WORLD_SIZE", None), ("LOCAL_RANK", "0")):
        raw = env.get(name, default)
        try:
            values[name] = int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"environment variable {name} must be an integer, got {raw!r} (set by torchrun)") from None
    if values["WORLD_SIZE"] < 1 or not 0 <= values["RANK"] < values["WORLD_SIZE"] or values["LOCAL_RANK"] < 0:
        raise ValueError(f"RANK must lie in 0..WORLD_SIZE-1 and LOCAL_RANK be >= 0, got RANK={values['RANK']}, "
                         f"WORLD_SIZE={values['WORLD_SIZE']}, LOCAL_RANK={values['LOCAL_RANK']}")
    return Dist(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])


def setup(device: torch.device | str | None = None) -> tuple[Dist, torch.device | None]:
    """Join torchrun's process group, if any (NCCL on CUDA, gloo otherwise), and return (this rank, its device:
    ``cuda:LOCAL_RANK`` by default under torchrun, None for a single process without ``device``)."""
    d = from_env()
    if not d.active:
        return d, (torch.device(device) if device is not None else None)
    if device is None:
        device = torch.device(f"cuda:{d.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # Keys prefixed with torchrun's restart count: after a restart, workers would otherwise read the dead
        # workers' addresses left in the shared store and fail to connect (gloo; pytorch/pytorch#167288: NCCL).
        store, _, _ = next(dist.rendezvous("env://"))
        store = dist.PrefixStore(f"ctcbook/attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=store, rank=d.rank,
                                world_size=d.world_size, timeout=timedelta(minutes=30),
                                **({"device_id": device} if device.type == "cuda" else {}))
    return d, device


def default_workers() -> int:
    """DataLoader processes per rank that read or decode images: ``$CTCBOOK_WORKERS`` or min(8, CPUs / local ranks)."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return int(os.environ.get("CTCBOOK_WORKERS", min(8, (os.cpu_count() or 1) // local)))


def per_rank_batch(batch_size: int, d: Dist) -> int:
    """``batch_size / world_size``; ValueError naming both when it does not divide."""
    if batch_size % d.world_size:
        raise ValueError(f"batch_size {batch_size} (the global batch) must be divisible by the world size "
                         f"{d.world_size}: each of the {d.world_size} processes trains on batch_size / world_size "
                         f"images per step; choose e.g. {d.world_size * max(1, round(batch_size / d.world_size))}")
    return batch_size // d.world_size


def shard(batch: torch.Tensor, d: Dist) -> torch.Tensor:
    """This rank's contiguous share of a global batch along dim 0 (its length must divide by the world size)."""
    n = batch.shape[0] // d.world_size
    return batch[d.rank * n:(d.rank + 1) * n]


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()


def broadcast_object(obj: Any, d: Dist) -> Any:
    """Rank 0's ``obj`` on every rank (pickled: other nodes need no shared disk)."""
    if not d.active:
        return obj
    box = [obj if d.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Concatenation along dim 0 of every rank's ``t`` (same shape on all ranks), in rank order; no gradient."""
    if not d.active:
        return t
    parts = [torch.empty_like(t) for _ in range(d.world_size)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def all_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Element-wise sum of ``t`` over ranks (in place; returns ``t``)."""
    if d.active:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def average_gradients(params, d: Dist) -> None:
    """Average the gradients of ``params`` (those outside the DDP-wrapped model, e.g. CTC's heads) over ranks."""
    for p in params:
        if d.active and p.grad is not None:
            all_sum(p.grad, d).div_(d.world_size)


def broadcast_buffers(model: torch.nn.Module, d: Dist) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every rank, so evaluation and checkpoint agree."""
    if not d.active:
        return
    for b in model.buffers():
        dist.broadcast(b, src=0)


def cleanup(d: Dist) -> None:
    """Leave the process group."""
    if d.active and dist.is_initialized():
        dist.destroy_process_group()
