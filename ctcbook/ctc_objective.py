"""Contrastive temporal coding (CTC): the heads, memories and frozen snapshot that the training engine drives.

Stage 1 (epochs 1..S): ``alpha`` x instance discrimination of the projected, L2-normalised features against a memory
with one slot per training image. At the switch the network is copied and frozen (the snapshot) and, with ``refill``,
both stage-2 memories take the snapshot's embeddings of the un-augmented training images. Stage 2: ``beta`` x the NCE
loss between the network's and the snapshot's features of the same image through two heads, each scored against the
other side's memory with ``nce_k`` negatives from other classes, in both directions (:mod:`ctcbook.losses`).
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import CTCConfig
from .losses import instance_discrimination_loss, log_normaliser, momentum_update, nce_loss, pair_scores

_SEED_OFFSET = 7_919  # keeps the negatives' random stream apart from the batches' (seed * 100_003 + epoch)


def random_memory(n: int, dim: int, generator: torch.Generator, device) -> torch.Tensor:
    """(n, dim) initial memory, uniform in +-sqrt(3 / dim) (the public code's; each slot has norm close to 1)."""
    bound = math.sqrt(3 / dim)
    return (torch.rand(n, dim, generator=generator, device=device) * 2 - 1) * bound


class OtherClassSampler:
    """Draws, for each anchor, K training-set indices uniformly (with replacement) among images of *other* classes
    (the public code's ``mode="exact"`` negatives) and puts the anchor's own index in column 0."""

    def __init__(self, labels: torch.Tensor, k: int):
        self.k, self.n = k, len(labels)
        self.order = torch.argsort(labels, stable=True)
        self.count = torch.bincount(labels)
        self.start = torch.cumsum(self.count, 0) - self.count
        if int((self.n - self.count[labels]).min()) < 1:
            raise ValueError("CTC's stage-2 negatives need at least two classes in the training set")

    def __call__(self, index: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        others = self.n - self.count[labels]
        u = torch.rand(len(index), self.k, generator=generator, device=index.device)
        pos = torch.minimum(u.mul_(others[:, None]).long(), others[:, None] - 1)
        start, count = self.start[labels][:, None], self.count[labels][:, None]
        pos = pos + (pos >= start) * count  # skip the anchor's own class block
        return torch.cat([index[:, None], self.order[pos]], dim=1)


class CTCObjective(nn.Module):
    """Heads and memories of one CTC run: :meth:`loss` every step, :meth:`update_memories` after its backward pass
    (memories move after the gradient used their old values, as in the public code), :meth:`switch` after the last
    stage-1 epoch, :meth:`state` with every resume point. ``log_z`` is NaN until the first stage-2 step sets it."""

    def __init__(self, config: CTCConfig, feature_dim: int, labels: torch.Tensor, stage_two_epoch: int, seed: int):
        super().__init__()
        self.config, self.stage_two_epoch, self.seed = config, stage_two_epoch, seed
        device = labels.device
        self.n = len(labels)
        self.instance_head = nn.Linear(feature_dim, config.instance_dim)
        self.head = nn.Linear(feature_dim, config.nce_dim)
        self.snapshot_head = nn.Linear(feature_dim, config.nce_dim)
        if not config.train_instance_head:
            self.instance_head.requires_grad_(False)
        gen = torch.Generator(device=device).manual_seed(seed * 100_003 + _SEED_OFFSET)
        self.register_buffer("instance_memory", random_memory(self.n, config.instance_dim, gen, device))
        self.register_buffer("memory", random_memory(self.n, config.nce_dim, gen, device))
        self.register_buffer("snapshot_memory", random_memory(self.n, config.nce_dim, gen, device))
        self.register_buffer("log_z", torch.full((2,), float("nan"), device=device))
        self.to(device)
        self.labels = labels
        self.sampler = OtherClassSampler(labels, config.nce_k)
        self._set_snapshot(None)
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]] = []
        # Under DDP, memory updates and CRD's normaliser use every rank's (index, embedding) gathered in rank order
        # (the engine sets distributed.all_gather), so memories match one process's with the same global batch.
        self.gather = lambda t: t

    # --- what the engine calls ------------------------------------------------------------------------------
    def stage(self, epoch: int) -> int:
        return 1 if epoch <= self.stage_two_epoch else 2

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def generator(self, epoch: int) -> torch.Generator:
        """The stream of stage-2 negatives of ``epoch`` (seeded per epoch, so a resumed run draws the same)."""
        return torch.Generator(device=self.labels.device).manual_seed(
            self.seed * 100_003 + epoch + 2 * _SEED_OFFSET)

    def loss(self, epoch: int, features: torch.Tensor, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
             generator: torch.Generator, amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(weighted auxiliary loss, unweighted loss) of one batch (``x`` is the snapshot's input in stage 2)."""
        if self.stage(epoch) == 1:
            raw = self.stage_one(features, index)
            return self.config.alpha * raw, raw.detach()
        if self.snapshot is None:
            raise RuntimeError(f"epoch {epoch} is in stage 2 but no snapshot was taken; call switch() first")
        with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            snap_features, _ = self.snapshot(x)
        raw = self.stage_two(features, snap_features.float(), y, index, generator)
        return self.config.beta * raw, raw.detach()

    def stage_one(self, features: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Instance discrimination of the batch against the memory; queues the momentum update of its slots."""
        z = F.normalize(self.instance_head(features.float()), dim=1)
        loss = instance_discrimination_loss(z, self.instance_memory, index, self.config.instance_t)
        self._pending.append((self.instance_memory, index, z.detach(), self.config.instance_m))
        return loss

    def stage_two(self, features: torch.Tensor, snap_features: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                  generator: torch.Generator) -> torch.Tensor:
        """Both directions of the NCE loss between the network (v1, against the snapshot's memory) and its snapshot
        (v2, against the network's), with the same 1 + K candidates; queues both memories' updates."""
        c = self.config
        v1 = F.normalize(self.head(features.float()), dim=1)
        v2 = F.normalize(self.snapshot_head(snap_features.detach()), dim=1)
        candidates = self.sampler(index, y, generator)
        s1 = pair_scores(v1, self.snapshot_memory, candidates, c.nce_t)
        s2 = pair_scores(v2, self.memory, candidates, c.nce_t)
        if torch.isnan(self.log_z).any():  # CRD's one-time normalisation constants, from the first stage-2 batch
            with torch.no_grad():
                self.log_z.copy_(torch.stack([log_normaliser(self.gather(s1.detach()), self.n),
                                              log_normaliser(self.gather(s2.detach()), self.n)]))
        loss = nce_loss(s1, self.log_z[0], self.n) + nce_loss(s2, self.log_z[1], self.n)
        self._pending += [(self.memory, index, v1.detach(), c.nce_m),
                          (self.snapshot_memory, index, v2.detach(), c.nce_m)]
        return loss

    def update_memories(self) -> None:
        """Apply the momentum updates queued by the last :meth:`loss` (call after the backward pass)."""
        for memory, index, z, m in self._pending:
            momentum_update(memory, self.gather(index), self.gather(z), m)
        self._pending = []

    @torch.no_grad()
    def switch(self, model: nn.Module, images, *, batch_size: int = 1024, amp: bool = False,
               memory_format: torch.memory_format = torch.contiguous_format,
               reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """End of stage 1: copy and freeze ``model`` as the snapshot; with ``refill``, fill both stage-2 memories
        with its embeddings of the un-augmented training ``images`` (uint8 in memory, or streamed ``(x, index)``
        batches of this rank's share: each rank fills zeroed copies and ``reduce``, a sum over ranks, joins them)."""
        self._pending = []
        self._set_snapshot(copy.deepcopy(model).eval().requires_grad_(False))
        if not self.config.refill:
            return
        if isinstance(images, torch.Tensor):  # in memory: all of them, on every rank
            images = ((x.float().div_(255).contiguous(memory_format=memory_format),
                       torch.arange(k * batch_size, k * batch_size + len(x), device=x.device))
                      for k, x in enumerate(images.split(batch_size)))
        memory, snapshot_memory = torch.zeros_like(self.memory), torch.zeros_like(self.snapshot_memory)
        seen = torch.zeros(self.n, device=self.memory.device)
        for x, index in images:
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
                f, _ = self.snapshot(x)
            f = f.float()
            # momentum 0: the slot becomes the embedding
            momentum_update(memory, index, F.normalize(self.head(f), dim=1), 0.0)
            momentum_update(snapshot_memory, index, F.normalize(self.snapshot_head(f), dim=1), 0.0)
            seen.index_add_(0, index, torch.ones(len(index), device=seen.device))
        if reduce is not None:
            memory, snapshot_memory, seen = reduce(memory), reduce(snapshot_memory), reduce(seen)
        if not bool((seen == 1).all()):
            missing, twice = int((seen == 0).sum()), int((seen > 1).sum())
            raise RuntimeError(f"CTC's refill must embed each of the {self.n} training images once; {missing} were "
                               f"never embedded and {twice} more than once (the refill batches must cover the "
                               "training set, each index on exactly one rank)")
        self.memory.copy_(memory)
        self.snapshot_memory.copy_(snapshot_memory)

    # --- resume ---------------------------------------------------------------------------------------------
    def state(self) -> dict:
        """Heads, memories, normalisers and the snapshot's weights (None before the switch), on the CPU."""
        cpu = (lambda m: {k: v.detach().cpu() for k, v in m.state_dict().items()})
        return {"module": cpu(self), "snapshot": None if self.snapshot is None else cpu(self.snapshot)}

    def load_state(self, state: dict, model: nn.Module) -> None:
        """Restore :meth:`state`; ``model`` is the template of the snapshot."""
        self.load_state_dict(state["module"])
        if state["snapshot"] is None:
            self._set_snapshot(None)
        else:
            snap = copy.deepcopy(model)
            snap.load_state_dict(state["snapshot"])
            self._set_snapshot(snap.eval().requires_grad_(False))

    def _set_snapshot(self, snapshot: nn.Module | None) -> None:
        """Keep the snapshot out of the submodules: saved apart, never given to an optimiser."""
        object.__setattr__(self, "snapshot", snapshot)

