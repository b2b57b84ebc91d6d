"""CTC on a streamed source: the stage switch refills both stage-2 memories with the snapshot's
embeddings of the un-augmented training images, streamed from disk in evaluation transforms by image index. The
runs are chapter 3's under the imagenet profile, shrunk, on a tiny ImageFolder of JPEGs standing in for ImageNet.

Reference: the same images decoded by the same evaluation transform and held in memory as one uint8 tensor, through
the in-memory path of :meth:`CTCObjective.switch`, with the run's epoch-S checkpoint as the snapshot and the heads
as the run saved them right after the switch (the resume state of epoch S). Tolerance 1e-5 per
coordinate of unit vectors: the two paths embed the images in batches of different sizes (36 at once in memory, the
loader's batches of 64 or of one rank's 18), which may change the float summation order; measured 0 in one
process.
Mistakes this catches (each put in by hand once): the refill skipping the streamed path (memories stay random: far
off), each rank keeping only its own share (the other rank's slots are zero: coverage error), the refill reading the
augmented training transform (values differ).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixture_writers import write_jpeg_tree

from ctcbook.book.parameters import resolve
from ctcbook.chapters.ch3_ctc import ctc_config
from ctcbook.config import TrainConfig
from ctcbook.ctc_objective import CTCObjective
from ctcbook.data import stream
from ctcbook.runs import RunStore
from ctcbook.train import load_model, train

REPO = Path(__file__).resolve().parents[1]


def imagenet_ctc_config() -> TrainConfig:
    """Chapter 3's CTC config under the imagenet profile (its parameters through the profile machinery and
    :func:`ctcbook.chapters.ch3_ctc.ctc_config`), shrunk as chapter 1's imagenet path test does: a width-4 CIFAR
    ResNet, 2 epochs with stage 2 from epoch 2, 12 images a batch, 8-d heads, 16 negatives."""
    p = resolve("03_ctc", {"profile": "imagenet"})
    base = TrainConfig(source=p["source"], source_classes=p["source_classes"], train_size=p["train_size"],
                       arch="cifar_resnet", depth=8, width=4, stem_stride=2, epochs=2, batch_size=12, lr=0.05,
                       weight_decay=p["weight_decay"], augment=p["augment"], seed=p["seeds"][0])
    return ctc_config(base, stage_two_epoch=1, weight_decay_coef=p["weight_decay_coef"], lr_restart=p["lr_restart"],
                      alpha=p["alpha"], beta=p["beta"], instance_dim=8, nce_dim=8, nce_k=16,
                      instance_t=p["instance_t"], instance_m=p["instance_m"], nce_t=p["nce_t"], nce_m=p["nce_m"],
                      refill=p["refill"], train_instance_head=p["train_instance_head"])


CONFIG = imagenet_ctc_config()
TOL = 1e-5


@pytest.fixture()
def tree(tmp_path, monkeypatch):
    root = write_jpeg_tree(tmp_path / "data" / "imagenet")
    monkeypatch.setenv("CTCBOOK_DATA", str(tmp_path / "data"))
    return root


def in_memory_refill(run, tree: Path, module: dict) -> CTCObjective:
    """The in-memory switch at the run's stage-2 epoch: its epoch-S checkpoint as the snapshot, the heads of
    ``module`` (the objective's state dict right after the switch), the training images in evaluation transforms
    stacked into one uint8 tensor."""
    config = TrainConfig.from_dict(run.config)
    folder = stream.StreamFolder(tree / "train", stream.eval_transform())
    images = torch.stack([folder[i][0] for i in range(len(folder))])
    model = load_model(run, config.stages.stage_two_epoch)
    ref = CTCObjective(config.ctc, model.feature_dim, folder.targets, config.stages.stage_two_epoch, config.seed)
    ref.load_state_dict(module)
    ref.switch(model, images)
    return ref


def test_streamed_ctc_run_refills_memories_as_in_memory(tree, tmp_path):
    at_switch = {}

    def keep_state(epoch, model, run):
        if epoch == CONFIG.stages.stage_two_epoch:
            at_switch.update(run.load_state()["objective"])

    run = train(CONFIG, store=RunStore(tmp_path / "runs"), progress=False, device="cpu", workers=0,
                on_epoch_end=keep_state)
    rows = run.metrics()
    assert run.done and [r["stage"] for r in rows] == [1, 2] and all(r["aux_loss"] > 0 for r in rows)
    assert all(0 <= r["test_acc"] <= 1 for r in rows)
    saved = at_switch
    snapshot = load_model(run, 1).state_dict()
    assert all(torch.equal(saved["snapshot"][k], snapshot[k]) for k in snapshot)
    ref = in_memory_refill(run, tree, saved["module"])
    for key in ("memory", "snapshot_memory"):
        assert (saved["module"][key] - ref.state_dict()[key]).abs().max() <= TOL, key
    assert not torch.allclose(saved["module"]["memory"], saved["module"]["snapshot_memory"], atol=0.1)


def test_refill_refuses_batches_that_miss_images():
    labels = torch.tensor([0, 1, 0, 1])
    obj = CTCObjective(CONFIG.ctc, 4, labels, 1, 0)
    class Net(torch.nn.Module):  # a stand-in snapshot: (features, logits)
        def forward(self, x):
            return x.flatten(1)[:, :4], None

    batches = [(torch.rand(2, 1, 2, 2), torch.tensor([0, 2]))]
    with pytest.raises(RuntimeError, match="each of the 4 training images once; 2 were never embedded and 0 more"):
        obj.switch(Net(), batches)


WORKER = """
import json, sys, torch
import ctcbook.train as engine
from ctcbook.book.parameters import resolve
from ctcbook.chapters.ch3_ctc import ctc_config
from ctcbook.config import TrainConfig
from ctcbook.runs import RunStore
from ctcbook import distributed

made, at_switch = [], []
build = engine.build_objective
engine.build_objective = lambda *a: made.append(build(*a)) or made[-1]
switch = engine.CTCObjective.switch


def switch_and_keep(self, *a, **k):
    switch(self, *a, **k)
    at_switch.append({key: v.clone() for key, v in self.state_dict().items()})


engine.CTCObjective.switch = switch_and_keep
run = engine.train(TrainConfig.from_dict(json.loads(open(sys.argv[1]).read())), store=RunStore("runs"), device="cpu", progress=False,
                   workers=0)
d = distributed.from_env()
torch.save({"final": made[0].state_dict(), "switch": at_switch[0]}, f"objective{d.rank}.pt")
distributed.cleanup(d)
"""


def test_streamed_ctc_two_processes(tree, tmp_path):
    """2 gloo processes (torchrun, spawned interpreters): each rank embeds its half of the training images at the
    switch; the summed memories are identical on both ranks and equal the in-memory refill."""
    (tmp_path / "config.json").write_text(json.dumps(CONFIG.to_dict()))
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "worker.py", "config.json"], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    a, b = (torch.load(tmp_path / f"objective{r}.pt") for r in (0, 1))
    for when in ("switch", "final"):
        for key in ("instance_memory", "memory", "snapshot_memory", "log_z"):
            torch.testing.assert_close(a[when][key], b[when][key], rtol=0, atol=0, equal_nan=True,
                                       msg=f"{when} {key}")  # log_z is NaN until stage 2
    run = RunStore(tmp_path / "runs").open(CONFIG.to_dict(), prefix=CONFIG.run_prefix)
    assert run.done and [r["world_size"] for r in run.metrics()] == [2, 2]
    ref = in_memory_refill(run, tree, a["switch"])
    for key in ("memory", "snapshot_memory"):
        assert (a["switch"][key] - ref.state_dict()[key]).abs().max() <= TOL, key
