"""The training engine: one plain loop over epochs for every supervised run in the book.

``train(config)`` returns the finished :class:`~ctcbook.runs.Run` for ``config``: reused if already done, resumed
from its last complete epoch if interrupted, trained from scratch otherwise. After every epoch it writes the model
weights, appends a metrics row and saves the full training state, in that order; a run whose loss becomes NaN or inf
is marked FAILED with the epoch and step and raises :class:`~ctcbook.runs.RunFailedError`.
On CUDA it trains in bfloat16 autocast with channels-last tensors; on the CPU in float32, contiguous (see
:func:`memory_format`).
The objective is cross-entropy (``"ce"``) or cross-entropy plus the losses of contrastive temporal coding
(``"ctc"``, :mod:`ctcbook.ctc_objective`): the same loop, with the stage switch, the snapshot and the memories
driven from here and saved with every resume point.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import distributed
from .config import TrainConfig
from .ctc_objective import CTCObjective
from .data import ImageSet, load_dataset, select_classes, subsample
from .data.images import stratified_indices
from .data import stream
from .data.loader import DeviceBatches
from .models import Classifier, build_model
from .runs import Run, RunFailedError, RunStore, atomic_write_json, config_hash


def default_device() -> torch.device:
    """CUDA if available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def memory_format(device: torch.device) -> torch.memory_format:
    """Channels-last on CUDA; contiguous elsewhere. On the CPU, channels-last is faster but its backward pass through
    strided 1x1 convolutions returned wrong, run-to-run varying gradients (and once a heap corruption) with torch
    2.14.1 here; ``tests/test_train.py`` checks that two identical CPU runs give identical weights."""
    return torch.channels_last if torch.device(device).type == "cuda" else torch.contiguous_format


def source_data(config: TrainConfig) -> tuple[ImageSet, ImageSet]:
    """The (train, test) image sets a config trains and is measured on."""
    train, test = load_dataset(config.source, "train"), load_dataset(config.source, "test")
    if config.source_classes is not None:
        train, test = select_classes(train, config.source_classes), select_classes(test, config.source_classes)
    return subsample(train, config.train_size, seed=0), test


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, C, H, W), in [0, 1] units."""
    x = images.float().div(255).transpose(0, 1).reshape(images.shape[1], -1)
    return x.mean(1).tolist(), x.std(1).tolist()


def model_for(config: TrainConfig, model_args: dict) -> Classifier:
    """Build the model of ``config`` with data-dependent ``model_args`` (num_classes, in_channels, mean, std)."""
    return build_model(config.arch, model_args["num_classes"], in_channels=model_args["in_channels"],
                       mean=model_args["mean"], std=model_args["std"], depth=config.depth, width=config.width,
                       stem_stride=config.stem_stride)


def load_model(run: Run, epoch: int | None = None, device: torch.device | str = "cpu") -> Classifier:
    """The run's model with the weights saved after ``epoch`` (default: the last saved), in eval mode."""
    config = TrainConfig.from_dict(run.config)
    model = model_for(config, json.loads((run.path / "model.json").read_text()))
    epoch = run.saved_epochs()[-1] if epoch is None else epoch
    model.load_state_dict(run.load_checkpoint(epoch))
    return model.to(device).to(memory_format=memory_format(device)).eval()


@torch.no_grad()
def test_accuracy(model: Classifier, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 1024,
                  amp: bool = False) -> tuple[float, float]:
    """(top-1 accuracy in [0, 1], mean cross-entropy in nats) of ``model`` on uint8 images already on its device."""
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(labels), batch_size):
        x = images[i:i + batch_size].float().div_(255).contiguous(memory_format=memory_format(images.device))
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            _, logits = model(x)
        y = labels[i:i + batch_size]
        loss += F.cross_entropy(logits.float(), y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    model.train(was_training)
    return correct / len(labels), loss / len(labels)


CLEAN_TRAIN_IMAGES = 10_000


def clean_train_set(train_set: ImageSet) -> ImageSet:
    """The un-augmented training images behind ``clean_train_acc``/``clean_train_loss``: all of ``train_set`` when it
    has at most :data:`CLEAN_TRAIN_IMAGES`, else a fixed stratified subset of that many (seed 0)."""
    return subsample(train_set, CLEAN_TRAIN_IMAGES, seed=0)


def lr_factor(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Multiplier of ``config.lr`` at optimiser step ``step`` (0-based): cosine to 0, step decay, or two stages
    (cosine from 1 to 0 over stage 1, then cosine from ``lr_restart`` to 0 over stage 2).

    With ``config.warmup_epochs`` = E > 0 the first W = E x ``steps_per_epoch`` steps rise linearly,
    (step + 1) / W: lr / W at step 0, lr at step W - 1 (torchvision's ``--lr-warmup-method linear``, starting from
    1 / W). The cosine then runs from 1 at step W to 0 at the end (for "two_stage": to 0 at the switch, stage 2
    unchanged); step decay keeps its milestones.
    """
    warm = config.warmup_epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    if config.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / (config.epochs * steps_per_epoch - warm)))
    if config.schedule == "two_stage":
        switch = config.stages.stage_two_epoch * steps_per_epoch
        if step < switch:
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / (switch - warm)))
        rest = (config.epochs - config.stages.stage_two_epoch) * steps_per_epoch
        return config.stages.lr_restart * 0.5 * (1 + math.cos(math.pi * (step - switch) / rest))
    epoch = step // steps_per_epoch + 1
    return config.gamma ** sum(epoch > m for m in config.milestones)


def weight_decay_at(config: TrainConfig, epoch: int) -> float:
    """Weight decay in force during ``epoch`` (1-based): x ``weight_decay_coef`` in stage 1 of a two-stage
    schedule, else ``config.weight_decay``."""
    if config.stages is not None and epoch <= config.stages.stage_two_epoch:
        return config.weight_decay * config.stages.weight_decay_coef
    return config.weight_decay


def build_objective(config: TrainConfig, model: Classifier, labels: torch.Tensor) -> CTCObjective | None:
    """The extra state of ``config.objective``: None for "ce", a :class:`~ctcbook.ctc_objective.CTCObjective` for
    "ctc"."""
    if config.objective == "ce":
        return None
    return CTCObjective(config.ctc, model.feature_dim, labels, config.stages.stage_two_epoch, config.seed)


class DataMismatchError(ValueError):
    """The splits of a streamed dataset do not share one list of classes."""


def stream_data(config: TrainConfig) -> tuple[stream.StreamFolder, stream.StreamFolder]:
    """The (train, test) streamed image folders of a config whose source is too large to keep in memory
    (:func:`ctcbook.data.stream.is_streamed`), with torchvision's training and evaluation transforms."""
    if config.source_classes is not None or config.train_size is not None:
        raise ValueError(f"source_classes and train_size must be None for the streamed dataset {config.source!r} "
                         f"(it is read from disk as it is), got {config.source_classes!r} and {config.train_size!r}")
    train_set = stream.StreamFolder(stream.find_split(config.source, "train"), stream.train_transform(),
                                    seed=config.seed, dataset=config.source)
    test_set = stream.StreamFolder(stream.find_split(config.source, "test"), stream.eval_transform(),
                                   dataset=config.source)
    if test_set.classes != train_set.classes:
        raise DataMismatchError(f"dataset {config.source!r}: the test split's class folders ({len(test_set.classes)} "
                                f"under {test_set.folder}) differ from the train split's ({len(train_set.classes)} "
                                f"under {train_set.folder})")
    return train_set, test_set


def _open_run(store: RunStore, config: TrainConfig, d: distributed.Dist) -> Run:
    """Rank 0 opens (creates) the run folder; the other ranks only name it and never write to it."""
    if d.main:
        return store.open(config.to_dict(), prefix=config.run_prefix)
    return Run(store.root / f"{config.run_prefix}-{config_hash(config.to_dict())}", config.to_dict())


@torch.no_grad()
def _stream_accuracy(model: Classifier, loader, device: torch.device, amp: bool) -> torch.Tensor:
    """(correct, summed cross-entropy in nats, count) over this rank's share of a streamed test set."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    for x, y, _ in loader:
        x = x.to(device, non_blocking=True).float().div_(255).contiguous(memory_format=memory_format(device))
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            _, logits = model(x)
        sums += torch.stack([(logits.argmax(1) == y).sum().double(),
                             F.cross_entropy(logits.float(), y, reduction="sum").double(),
                             torch.tensor(float(len(y)), dtype=torch.float64, device=device)])
    model.train(was_training)
    return sums


def _accuracy(model: Classifier, data, device: torch.device, amp: bool, d: distributed.Dist) -> tuple[float, float]:
    """(top-1 accuracy in [0, 1], mean cross-entropy in nats) over an evaluation set split across ranks: ``data`` is
    this rank's (uint8 images, labels) on the device, or its DataLoader of a streamed set; sums are added over ranks."""
    if isinstance(data, tuple):
        acc, loss = test_accuracy(model, *data, amp=amp)
        if not d.active:
            return acc, loss
        n = len(data[1])
        sums = torch.tensor([acc * n, loss * n, n], dtype=torch.float64, device=device)
    else:
        sums = _stream_accuracy(model, data, device, amp)
    sums = distributed.all_sum(sums, d)
    return (sums[0] / sums[2]).item(), (sums[1] / sums[2]).item()


def train(config: TrainConfig, *, store: RunStore | None = None, device: torch.device | str | None = None,
          progress: bool = True, on_epoch_end: Callable[[int, Classifier, Run], None] | None = None,
          amp: bool | None = None, workers: int | None = None, wait: bool = True) -> Run:
    """Train (or reuse, or resume) the run of ``config`` and return it.

    Only one process trains a run: this takes the run's writer lock (:meth:`~ctcbook.runs.Run.writer`). If another
    process holds it, it says who and waits, then reuses the run that process finished (or resumes it, if that
    process died); with ``wait=False`` it raises :class:`~ctcbook.runs.RunLockedError` at once. A finished run is
    returned without taking the lock.

    Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) every rank calls this: the model is wrapped in
    DistributedDataParallel, each rank trains on ``batch_size / world_size`` images of every global batch and only
    rank 0 writes the run folder (see :mod:`ctcbook.distributed`). The run's hash does not depend on the world size.

    Args:
        config: what to train.
        store: where runs live (default :class:`RunStore` at ``$CTCBOOK_RUNS`` or ``./runs``).
        device: default CUDA if available (``cuda:LOCAL_RANK`` under torchrun), else CPU.
        progress: show a progress bar over epochs (rank 0 only).
        on_epoch_end: called on rank 0 as ``f(epoch, model, run)`` after each epoch has been saved.
        amp: bfloat16 autocast; default on for CUDA, off elsewhere (the CPU supports it too, which lets CI run the
            GPU's mixed-precision code path).
        workers: DataLoader worker processes per rank for a streamed source (default ``$CTCBOOK_WORKERS`` or
            min(8, CPUs / local ranks)); it does not change the numbers (see :mod:`ctcbook.data.stream`).
        wait: wait for another process training the same run (True) or refuse at once (False).
    """
    d, rank_device = distributed.setup(device)
    store = store or RunStore()
    batch_size = distributed.per_rank_batch(config.batch_size, d)
    run = _open_run(store, config, d)
    distributed.barrier(d)
    if distributed.broadcast_object(run.done, d):
        return run
    # Only rank 0 takes the writer lock: the other ranks of the same job never write, and would wait for it forever
    # (they wait for rank 0 in the broadcast below instead).
    with run.writer(wait=wait) if d.main else contextlib.nullcontext():
        done, failure = distributed.broadcast_object((run.done, run.failure), d)
        if done:  # finished by the process we waited for
            return run
        if failure is not None:
            raise RunFailedError(f"run {run.path} failed earlier: {failure}; change the config or delete the folder")
        return _train_locked(run, config, d, rank_device, batch_size, progress=progress, on_epoch_end=on_epoch_end,
                             amp=amp, workers=workers)


def _train_locked(run: Run, config: TrainConfig, d: distributed.Dist, rank_device: torch.device | None,
                  batch_size: int, *, progress: bool, on_epoch_end: Callable[[int, Classifier, Run], None] | None,
                  amp: bool | None, workers: int | None) -> Run:
    """The body of :func:`train`, run while holding ``run``'s writer lock (rank 0) with ``batch_size`` images per
    rank."""
    device = rank_device if rank_device is not None else default_device()
    amp = device.type == "cuda" if amp is None else amp

    streamed = stream.is_streamed(config.source)
    if streamed:
        train_set, test_set = stream_data(config)
        model_args = {"num_classes": train_set.num_classes, "in_channels": 3, "mean": list(stream.IMAGENET_MEAN),
                      "std": list(stream.IMAGENET_STD), "image_size": stream.CROP}
    else:
        train_set, test_set = source_data(config)
        mean, std = channel_stats(train_set.images)
        model_args = {"num_classes": train_set.num_classes, "in_channels": train_set.images.shape[1],
                      "mean": mean, "std": std}
    if d.main and not (run.path / "model.json").exists():
        atomic_write_json(run.path / "model.json", model_args)

    torch.manual_seed(config.seed)
    model = model_for(config, model_args).to(device).to(memory_format=memory_format(device))
    net = model
    if d.active:  # gradients averaged over ranks during backward; BatchNorm statistics stay per rank
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if streamed:
        if workers is None:
            local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            workers = int(os.environ.get("CTCBOOK_WORKERS", min(8, (os.cpu_count() or 1) // local)))
        batches = stream.StreamBatches(train_set, batch_size=batch_size, rank=d.rank, world_size=d.world_size,
                                       seed=config.seed, device=device, workers=workers,
                                       memory_format=memory_format(device))
    else:  # every rank draws the whole global batch (same order and augmentation) and keeps its share
        batches = DeviceBatches(train_set.images, train_set.labels, batch_size=config.batch_size, device=device,
                                augment=config.augment, crop_padding=config.crop_padding, seed=config.seed,
                                memory_format=memory_format(device))
    steps_per_epoch = len(batches)
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {config.batch_size} exceeds the {len(train_set)} training images")
    objective = build_objective(config, model, batches.labels.to(device))
    if objective is not None:
        objective.gather = lambda t: distributed.all_gather(t, d)
    params = list(model.parameters()) + ([] if objective is None else objective.trainable())
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                weight_decay=weight_decay_at(config, 1))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(config, s, steps_per_epoch))
    # Evaluation sets, each split across ranks (the sums are added over ranks): the test split, and the training
    # images without augmentation (all of them, or a fixed stratified 10,000) for clean_train_acc.
    if streamed:
        test_eval = stream.eval_loader(test_set, batch_size=max(batch_size, 64), rank=d.rank,
                                       world_size=d.world_size, device=device, workers=workers)
        clean_folder = stream.StreamFolder(train_set.folder, stream.eval_transform(), dataset=config.source)
        keep = stratified_indices(clean_folder.targets, clean_folder.num_classes, CLEAN_TRAIN_IMAGES, seed=0)
        clean_eval = stream.eval_loader(torch.utils.data.Subset(clean_folder, keep.tolist()),
                                        batch_size=max(batch_size, 64), rank=d.rank, world_size=d.world_size,
                                        device=device, workers=workers)
    else:  # each rank measures every world_size-th image
        clean = clean_train_set(train_set)
        test_eval = tuple(t[d.rank::d.world_size].to(device) for t in (test_set.images, test_set.labels))
        clean_eval = tuple(t[d.rank::d.world_size].to(device) for t in (clean.images, clean.labels))

    start = 0
    # Rank 0 reads the resume state (falling back to state.prev.pt, with a warning, if state.pt is damaged).
    state = distributed.broadcast_object(run.load_state() if d.main else None, d)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = state["epoch"]
        if objective is not None:
            objective.load_state(state["objective"], model)
    if d.main:
        run.truncate_metrics(start)

    bar = tqdm(range(start + 1, config.epochs + 1), desc=run.name, disable=not progress or not d.main,
               initial=start, total=config.epochs, unit="epoch")
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        for group in optimizer.param_groups:
            group["weight_decay"] = weight_decay_at(config, epoch)
        losses = torch.zeros(steps_per_epoch, device=device)
        aux_losses = torch.zeros(steps_per_epoch, device=device)
        correct = torch.zeros((), device=device)
        negatives = objective.generator(epoch) if objective is not None else None
        for step, (x, y, index) in enumerate(batches.epoch(epoch)):
            if d.active and not streamed:
                x, y, index = distributed.shard(x, d), distributed.shard(y, d), distributed.shard(index, d)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                features, logits = net(x)
                loss = F.cross_entropy(logits.float(), y)
            if objective is not None:
                aux, aux_losses[step] = objective.loss(epoch, features, x, y, index, negatives, amp=amp)
                loss = loss + aux
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if objective is not None:
                distributed.average_gradients(objective.trainable(), d)
                objective.update_memories()
            optimizer.step()
            scheduler.step()
            losses[step] = loss.detach()
            correct += (logits.argmax(1) == y).sum()
        losses = distributed.all_sum(losses, d) / d.world_size  # each step's loss over the global batch
        aux_losses = distributed.all_sum(aux_losses, d) / d.world_size
        correct = distributed.all_sum(correct, d)
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            step = int(bad[0])
            if d.main:
                run.mark_failed(epoch, step, f"non-finite training loss {losses[step].item()}")
            raise RunFailedError(f"run {run.name}: loss became {losses[step].item()} at epoch {epoch}, step {step}")
        train_seconds = time.perf_counter() - t0
        distributed.broadcast_buffers(model, d)  # rank 0's BatchNorm statistics: the ones its checkpoint saves
        acc, test_loss = _accuracy(model, test_eval, device, amp, d)
        # Fit of the training set itself: eval mode, no augmentation (augmented-batch train_acc understates it).
        clean_acc, clean_loss = _accuracy(model, clean_eval, device, amp, d)
        row = {"epoch": epoch, "train_loss": losses.mean().item(),
               "train_acc": correct.item() / (steps_per_epoch * config.batch_size), "test_acc": acc,
               "test_loss": test_loss, "clean_train_acc": clean_acc, "clean_train_loss": clean_loss,
               "lr": optimizer.param_groups[0]["lr"], "train_seconds": train_seconds,
               "images_per_second": steps_per_epoch * config.batch_size / train_seconds, "device": str(device)}
        if d.active:
            row["world_size"] = d.world_size
        state = {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict()}
        if objective is not None:
            # train_loss is the total; aux_loss the unweighted CTC loss of the epoch's stage (nats).
            row.update(stage=objective.stage(epoch), aux_loss=aux_losses.mean().item())
            if epoch == config.stages.stage_two_epoch:
                if streamed:  # the refill's images: this rank's share of the training set, evaluation transforms
                    share = stream.eval_loader(clean_folder, batch_size=max(batch_size, 64), rank=d.rank,
                                               world_size=d.world_size, device=device, workers=workers)
                    refill = ((x.to(device, non_blocking=True).float().div_(255)
                               .contiguous(memory_format=memory_format(device)), i.to(device)) for x, _, i in share)
                    objective.switch(model, refill, amp=amp, memory_format=memory_format(device),
                                     reduce=lambda t: distributed.all_sum(t, d))
                else:
                    objective.switch(model, batches.images, amp=amp, memory_format=memory_format(device))
            state["objective"] = objective.state()
        if d.main:  # checkpoint, metrics row, resume state: in that order, by rank 0 only
            run.save_checkpoint(epoch, model.state_dict())
            run.append_metrics(row)
            run.save_state(state)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", test_acc=f"{acc:.4f}", refresh=False)
            if on_epoch_end is not None:
                on_epoch_end(epoch, model, run)
        distributed.barrier(d)
    if d.main:
        final = run.metrics()[-1]
        run.mark_done({"epochs": config.epochs, "test_acc": final["test_acc"], "device": str(device),
                       "world_size": d.world_size})
    distributed.barrier(d)
    return run
