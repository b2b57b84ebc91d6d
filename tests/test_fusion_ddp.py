"""End-to-end fusion training under torchrun (gloo on the CPU, 2 processes started as a subprocess, never forked).

Every rank draws the same plan of each global batch (order, crops, flips, mixup lambda and partners) and reads only
its positions and their partners, so the two shares together are exactly the single-process batch (checked without
processes below); with DDP averaging the two halves' gradients, 1 and 2 processes differ only through BatchNorm
(per-rank statistics). The process test trains the image-only network (no dropout, whose masks are drawn per rank)
and allows the tolerances of tests/test_distributed.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ctcbook import distributed
from ctcbook.config import FusionTrainConfig
from ctcbook.fusion_train import epoch_plan, fusion_splits, mixed_batches, rank_positions
from ctcbook.data.loader import random_crop, random_flip
from ctcbook.runs import RunStore
from ctcbook.train import train
from fusion_reference import epoch_batches, mixup
from launching import train_two_processes

META = {"seed": 0, "location_spread": 25.0, "date_spread": 45.0, "background": 0.3, "missing_fraction": 0.05,
        "interaction": 0.5, "groups": [[0, 2, 4, 6]], "draw_seed": 0}
HEAD = {"meta_width": 8, "embed_dim": 8, "reduced_dim": 8, "hidden_dim": 4, "num_blocks": 1}
CONFIG = FusionTrainConfig(train_size=200, test_size=200, width=4, epochs=2, batch_size=50, metadata=META, head=HEAD,
                           augment="crop_flip", crop_padding=2, method="image_only", lr=0.05)
LOSS_TOL, ACC_TOL = 0.03, 0.03


def test_the_ranks_shares_are_the_single_process_batch():
    train, _, _ = fusion_splits(CONFIG)
    plans = epoch_plan(len(train), CONFIG, 1)
    cpu = torch.device("cpu")
    whole = list(mixed_batches(train, CONFIG, plans, rank_positions(50, distributed.SINGLE), cpu))
    halves = [list(mixed_batches(train, CONFIG, plans, rank_positions(50, distributed.Dist(r, 2)), cpu))
              for r in range(2)]
    assert len(whole) == 4
    for step, full in enumerate(whole):
        for part, (a, b) in enumerate(zip(halves[0][step][:4], halves[1][step][:4])):
            assert torch.equal(torch.cat([a, b]), full[part])
        assert halves[0][step][4] == halves[1][step][4] == full[4]
    # and one process gets exactly what the loop trained on before batches were planned (so earlier runs keep their
    # numbers): the permutation, then per batch the loader's random crop and flip, then mixup
    gen = torch.Generator().manual_seed(CONFIG.seed * 100_003 + 1)
    order = torch.randperm(len(train), generator=gen)
    rng = np.random.default_rng([CONFIG.seed, 1])
    for b, ((xm, mm, y1, y2, lam), (xe, me, ye)) in enumerate(zip(whole, epoch_batches(train, CONFIG, 1, cpu))):
        idx = order[b * 50:(b + 1) * 50]
        x = random_flip(random_crop(train.images[idx].float().div_(255), 2, gen), gen)
        assert torch.equal(xe, x) and torch.equal(me, train.meta[idx]) and torch.equal(ye, train.labels[idx])
        x2, m2, perm, lam2 = mixup(x, train.meta[idx], CONFIG.mixup_alpha, rng)
        assert lam == lam2 and torch.equal(xm, x2) and torch.equal(mm, m2)
        assert torch.equal(y1, train.labels[idx]) and torch.equal(y2, train.labels[idx][perm])


def test_uneven_global_batch_is_refused_with_both_numbers():
    with pytest.raises(ValueError, match="batch_size 50 .* divisible by the world size 3"):
        rank_positions(50, distributed.Dist(0, 3))


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    return train_two_processes(CONFIG, tmp_path_factory.mktemp("e2e-ddp"))


def test_two_processes_match_one(two_process_run, tmp_path):
    ddp, out = two_process_run
    one = train(CONFIG, store=RunStore(tmp_path / "runs"), device="cpu", progress=False)
    assert one.name == ddp.name and ddp.done and ddp.saved_epochs() == [1, 2]
    rows1, rows2 = one.metrics(), ddp.metrics()
    assert [r["epoch"] for r in rows2] == [1, 2] and all(r["world_size"] == 2 for r in rows2)
    for a, b in zip(rows1, rows2):
        assert abs(a["train_loss"] - b["train_loss"]) < LOSS_TOL, (a, b)
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-9)
    assert abs(rows1[-1]["test_acc"] - rows2[-1]["test_acc"]) < ACC_TOL
    assert out.count(str(ddp.path)) == 1
