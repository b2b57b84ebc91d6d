"""The training engine: one plain epoch loop for every run in the book.

``train(config)`` returns the finished run of ``config``: reused if done, resumed from its last complete epoch, or
trained. :class:`SourceTask` (a ``TrainConfig``) or ``FusionTask`` (a ``FusionTrainConfig``) supplies what differs.
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import distributed
from .config import FusionTrainConfig, TrainConfig
from .ctc_objective import CTCObjective
from .data import ImageSet, load_dataset, select_classes, stream, subsample
from .data.images import stratified_indices
from .data.loader import DeviceBatches
from .fusion_train import FusionTask
from .models import Classifier, build_model
from .runs import Run, RunFailedError, RunStore, atomic_write_json, config_hash


def default_device() -> torch.device:
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
    """The model of ``config`` with the data-dependent ``model_args`` of ``model.json``."""
    return build_model(config.arch, model_args["num_classes"], in_channels=model_args["in_channels"],
                       mean=model_args["mean"], std=model_args["std"], depth=config.depth, width=config.width,
                       stem_stride=config.stem_stride)


def load_model(run: Run, epoch: int | None = None, device: torch.device | str = "cpu") -> Classifier:
    """The run's model with the weights saved after ``epoch`` (default: the last saved), in eval mode."""
    config = TrainConfig.from_dict(run.config)
    model = model_for(config, run.model_args())
    epoch = run.saved_epochs()[-1] if epoch is None else epoch
    model.load_state_dict(run.load_checkpoint(epoch))
    return model.to(device).to(memory_format=memory_format(device)).eval()


CLEAN_TRAIN_IMAGES = 10_000


def clean_train_set(train_set: ImageSet) -> ImageSet:
    """The un-augmented training images of ``clean_train_acc``: at most :data:`CLEAN_TRAIN_IMAGES`, stratified."""
    return subsample(train_set, CLEAN_TRAIN_IMAGES, seed=0)


def lr_factor(config: TrainConfig | FusionTrainConfig, step: int, steps_per_epoch: int) -> float:
    """Multiplier of ``config.lr`` at optimiser step ``step`` (0-based): a linear warm-up (step + 1) / W over the
    first W steps, then cosine to 0, step decay, or two stages (cosine to 0 at the switch, then from ``lr_restart``);
    the ``paper_`` schedules are :func:`paper_lr_factor`'s, per epoch."""
    if config.schedule.startswith("paper_"):
        return paper_lr_factor(config, step // steps_per_epoch + 1)
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


def paper_lr_factor(config: TrainConfig, epoch: int) -> float:
    """The public code's per-epoch rate for ``epoch`` (1-based): warm-up epoch / W for the first W epochs, then
    ``lr_floor`` + (1 - ``lr_floor``) cosine over epochs + 1 (paper_cosine); paper_two_stage runs both for each stage
    (its floor is 0), stage 2 scaled by ``lr_restart``."""
    length, scale = config.epochs, 1.0
    if config.schedule == "paper_two_stage":
        length = config.stages.stage_two_epoch
        if epoch > length:
            epoch, length, scale = epoch - length, config.epochs - length, config.stages.lr_restart
    if epoch <= config.warmup_epochs:
        return scale * epoch / config.warmup_epochs
    cosine = 0.5 * (1 + math.cos(math.pi * epoch / (length + 1)))
    return scale * (config.lr_floor + (1 - config.lr_floor) * cosine)


def weight_decay_at(config: TrainConfig, epoch: int) -> float:
    """Weight decay during ``epoch`` (1-based): x ``weight_decay_coef`` in stage 1 of a two-stage schedule."""
    if config.stages is not None and epoch <= config.stages.stage_two_epoch:
        return config.weight_decay * config.stages.weight_decay_coef
    return config.weight_decay


def build_objective(config: TrainConfig, model: Classifier, labels: torch.Tensor) -> CTCObjective | None:
    """None for objective "ce", a :class:`~ctcbook.ctc_objective.CTCObjective` for "ctc"."""
    if config.objective == "ce":
        return None
    return CTCObjective(config.ctc, model.feature_dim, labels, config.stages.stage_two_epoch, config.seed)


def stream_data(config: TrainConfig) -> tuple[stream.StreamFolder, stream.StreamFolder]:
    """The (train, test) folders of a streamed source, with torchvision's training and evaluation transforms."""
    if config.source_classes is not None or config.train_size is not None:
        raise ValueError(f"source_classes and train_size must be None for the streamed dataset {config.source!r} "
                         f"(it is read from disk as it is), got {config.source_classes!r} and {config.train_size!r}")
    train_set = stream.StreamFolder(stream.find_split(config.source, "train"), stream.train_transform(),
                                    seed=config.seed, dataset=config.source)
    test_set = stream.StreamFolder(stream.find_split(config.source, "test"), stream.eval_transform(),
                                   dataset=config.source)
    if test_set.classes != train_set.classes:
        raise ValueError(f"dataset {config.source!r}: the test split's class folders ({len(test_set.classes)} "
                                f"under {test_set.folder}) differ from the train split's ({len(train_set.classes)} "
                                f"under {train_set.folder})")
    return train_set, test_set


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Iterable, *, amp: bool = False,
             d: distributed.Dist = distributed.SINGLE) -> tuple[float, float]:
    """(top-1 accuracy, mean cross-entropy in nats) over ``batches`` of (inputs, labels), summed over ranks."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=next(model.parameters()).device)
    for inputs, y in batches:
        with torch.autocast(y.device.type, dtype=torch.bfloat16, enabled=amp):
            _, logits = model(*inputs)
        sums += torch.stack([(logits.argmax(1) == y).sum().double(),
                             F.cross_entropy(logits.float(), y, reduction="sum").double(),
                             torch.tensor(float(len(y)), dtype=torch.float64, device=y.device)])
    model.train(was_training)
    sums = distributed.all_sum(sums, d)
    return (sums[0] / sums[2]).item(), (sums[1] / sums[2]).item()


def tensor_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024) -> Iterable:
    """:func:`evaluate`'s batches of uint8 images already on the model's device."""
    for i in range(0, len(labels), batch_size):
        x = images[i:i + batch_size].float().div_(255).contiguous(memory_format=memory_format(images.device))
        yield (x,), labels[i:i + batch_size]


def loader_batches(loader, device: torch.device) -> Iterable:
    """:func:`evaluate`'s batches of a streamed DataLoader."""
    for x, y, _ in loader:
        x = x.to(device, non_blocking=True).float().div_(255).contiguous(memory_format=memory_format(device))
        yield (x,), y.to(device, non_blocking=True)


class SourceTask:
    """A source run, in memory (each rank keeps its share of the global batch) or streamed (each reads its share)."""

    loss_device = None  # the training device

    def __init__(self, config: TrainConfig, d: distributed.Dist, device: torch.device, amp: bool,
                 workers: int | None, batch_size: int):
        self.config, self.d, self.device, self.amp, self.batch_size = config, d, device, amp, batch_size
        self.streamed = stream.is_streamed(config.source)
        if self.streamed:
            self.train_set, self.test_set = stream_data(config)
            self.model_args = {"num_classes": self.train_set.num_classes, "in_channels": 3,
                               "mean": list(stream.IMAGENET_MEAN), "std": list(stream.IMAGENET_STD),
                               "image_size": stream.CROP}
        else:
            self.train_set, self.test_set = source_data(config)
            mean, std = channel_stats(self.train_set.images)
            self.model_args = {"num_classes": self.train_set.num_classes,
                               "in_channels": self.train_set.images.shape[1], "mean": mean, "std": std}
        self.workers = distributed.default_workers() if workers is None else workers

    def build_model(self) -> Classifier:
        return model_for(self.config, self.model_args).to(self.device).to(memory_format=memory_format(self.device))

    def prepare(self, model: Classifier) -> None:
        """Batches, CTC objective, evaluation sets; after the model (CTC's heads draw from the global generator)."""
        config, d, device, fmt = self.config, self.d, self.device, memory_format(self.device)
        if self.streamed:
            self.batches = stream.StreamBatches(self.train_set, batch_size=self.batch_size, rank=d.rank,
                                                world_size=d.world_size, seed=config.seed, device=device,
                                                workers=self.workers, memory_format=fmt)
        else:
            self.batches = DeviceBatches(self.train_set.images, self.train_set.labels, batch_size=config.batch_size,
                                         device=device, augment=config.augment, crop_padding=config.crop_padding,
                                         seed=config.seed, memory_format=fmt)
        self.steps_per_epoch = len(self.batches)
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch_size {config.batch_size} exceeds the {len(self.train_set)} training images")
        self.objective = build_objective(config, model, self.batches.labels.to(device))
        self.parameters = list(model.parameters())
        if self.objective is not None:
            self.objective.gather = lambda t: distributed.all_gather(t, d)
            self.parameters += self.objective.trainable()
        if self.streamed:
            self.clean_folder = stream.StreamFolder(self.train_set.folder, stream.eval_transform(),
                                                    dataset=config.source)
            keep = stratified_indices(self.clean_folder.targets, self.clean_folder.num_classes, CLEAN_TRAIN_IMAGES,
                                      seed=0)
            self.test_eval = self._loader(self.test_set)
            self.clean_eval = self._loader(torch.utils.data.Subset(self.clean_folder, keep.tolist()))
        else:  # each rank measures every world_size-th image
            clean = clean_train_set(self.train_set)
            self.test_eval = tuple(t[d.rank::d.world_size].to(device) for t in (self.test_set.images,
                                                                                self.test_set.labels))
            self.clean_eval = tuple(t[d.rank::d.world_size].to(device) for t in (clean.images, clean.labels))

    def _loader(self, dataset):
        return stream.eval_loader(dataset, batch_size=max(self.batch_size, 64), rank=self.d.rank,
                                  world_size=self.d.world_size, device=self.device, workers=self.workers)

    def load_state(self, state: dict[str, Any], model: Classifier) -> None:
        if self.objective is not None:
            self.objective.load_state(state["objective"], model)

    def start_epoch(self, epoch: int) -> Iterable:
        self.aux_losses = torch.zeros(self.steps_per_epoch, device=self.device)
        self.correct = torch.zeros((), device=self.device)
        self.negatives = self.objective.generator(epoch) if self.objective is not None else None
        return self.batches.epoch(epoch)

    def loss(self, net: torch.nn.Module, batch, epoch: int, step: int) -> torch.Tensor:
        x, y, index = batch
        if self.d.active and not self.streamed:
            x, y, index = (distributed.shard(t, self.d) for t in (x, y, index))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            features, logits = net(x)
            loss = F.cross_entropy(logits.float(), y)
        if self.objective is not None:
            aux, self.aux_losses[step] = self.objective.loss(epoch, features, x, y, index, self.negatives,
                                                             amp=self.amp)
            loss = loss + aux
        self.correct += (logits.argmax(1) == y).sum()
        return loss

    def after_backward(self) -> None:
        if self.objective is not None:
            distributed.average_gradients(self.objective.trainable(), self.d)
            self.objective.update_memories()

    def train_metrics(self) -> dict[str, float]:
        correct = distributed.all_sum(self.correct, self.d)
        return {"train_acc": correct.item() / (self.steps_per_epoch * self.config.batch_size)}

    def eval_sets(self, epoch: int) -> dict[str, Iterable]:
        if epoch % self.config.test_every and epoch not in (1, self.config.epochs):
            return {}
        if self.streamed:
            return {"test": loader_batches(self.test_eval, self.device),
                    "clean_train": loader_batches(self.clean_eval, self.device)}
        return {"test": tensor_batches(*self.test_eval), "clean_train": tensor_batches(*self.clean_eval)}

    def end_epoch(self, model: Classifier, epoch: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """(CTC's extra metrics, its resume state), switching to stage 2 at its epoch."""
        if self.objective is None:
            return {}, {}
        aux_losses = distributed.all_sum(self.aux_losses, self.d) / self.d.world_size
        # train_loss is the total; aux_loss the unweighted CTC loss of the epoch's stage (nats).
        row = {"stage": self.objective.stage(epoch), "aux_loss": aux_losses.mean().item()}
        if epoch == self.config.stages.stage_two_epoch:
            self._switch(model)
        return row, {"objective": self.objective.state()}

    def _switch(self, model: Classifier) -> None:
        fmt = memory_format(self.device)
        if not self.streamed:
            self.objective.switch(model, self.batches.images, amp=self.amp, memory_format=fmt)
            return
        # the refill's images: this rank's share of the training set, evaluation transforms
        refill = ((x.to(self.device, non_blocking=True).float().div_(255).contiguous(memory_format=fmt),
                   i.to(self.device)) for x, _, i in self._loader(self.clean_folder))
        self.objective.switch(model, refill, amp=self.amp, memory_format=fmt,
                              reduce=lambda t: distributed.all_sum(t, self.d))


def train(config: TrainConfig | FusionTrainConfig, *, store: RunStore | None = None,
          device: torch.device | str | None = None, progress: bool = True,
          on_epoch_end: Callable[[int, torch.nn.Module, Run], None] | None = None, amp: bool | None = None,
          workers: int | None = None, wait: bool = True) -> Run:
    """Train (or reuse, or resume) the run of ``config`` and return it. One process trains a run, holding its writer
    lock; another waits, then reuses or resumes it (``wait=False``: raises ``RunLockedError``). Under torchrun every
    rank calls this (DDP) and rank 0 writes. ``amp``: bfloat16 autocast (default: CUDA only); ``workers``: image
    readers per rank; ``on_epoch_end`` runs on rank 0 per saved epoch."""
    d, rank_device = distributed.setup(device)
    store = store or RunStore()
    batch_size = distributed.per_rank_batch(config.batch_size, d)
    if d.main:
        run = store.open(config.to_dict(), prefix=config.run_prefix)
    else:  # the other ranks only name the folder and never write to it
        run = Run(store.root / f"{config.run_prefix}-{config_hash(config.to_dict())}", config.to_dict())
    distributed.barrier(d)
    if distributed.broadcast_object(run.done, d):
        return run
    # Only rank 0 locks: the other ranks never write and would wait forever; they wait in the broadcast below.
    with run.writer(wait=wait) if d.main else contextlib.nullcontext():
        done, failure = distributed.broadcast_object((run.done, run.failure), d)
        if done:  # finished by the process we waited for
            return run
        if failure is not None:
            raise RunFailedError(f"run {run.path} failed earlier: {failure}; change the config or delete the folder")
        device = rank_device if rank_device is not None else default_device()
        amp = device.type == "cuda" if amp is None else amp
        task_class = FusionTask if isinstance(config, FusionTrainConfig) else SourceTask
        task = task_class(config, d, device, amp, workers, batch_size)
        return _fit(run, config, task, d, progress=progress, on_epoch_end=on_epoch_end)


def _fit(run: Run, config, task, d: distributed.Dist, *, progress: bool,
         on_epoch_end: Callable[[int, torch.nn.Module, Run], None] | None) -> Run:
    """Train ``run`` from its last saved epoch to the end: checkpoint, metrics row, resume state after each epoch."""
    device = task.device
    if d.main and not (run.path / "model.json").exists():
        atomic_write_json(run.path / "model.json", task.model_args)
    torch.manual_seed(config.seed)
    model = task.build_model()
    net = model
    if d.active:  # gradients averaged over ranks during backward; BatchNorm statistics stay per rank
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    task.prepare(model)
    optimizer = torch.optim.SGD(task.parameters, lr=config.lr, momentum=config.momentum,
                                weight_decay=weight_decay_at(config, 1))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(config, s, task.steps_per_epoch))
    start = _resume(run, task, model, optimizer, scheduler, d)
    bar = tqdm(range(start + 1, config.epochs + 1), desc=run.name, disable=not progress or not d.main,
               initial=start, total=config.epochs, unit="epoch")
    for epoch in bar:
        t0 = time.perf_counter()
        losses = _train_epoch(run, config, task, net, optimizer, scheduler, epoch, d)
        seconds = time.perf_counter() - t0
        distributed.broadcast_buffers(model, d)  # rank 0's BatchNorm statistics: the ones its checkpoint saves
        row = {"epoch": epoch, "train_loss": losses.mean().item(), **task.train_metrics()}
        t0 = time.perf_counter()
        for name, batches in task.eval_sets(epoch).items():
            row[f"{name}_acc"], row[f"{name}_loss"] = evaluate(model, batches, amp=task.amp, d=d)
        row.update({"lr": optimizer.param_groups[0]["lr"], "train_seconds": seconds,
                    "eval_seconds": time.perf_counter() - t0,
                    "images_per_second": task.steps_per_epoch * config.batch_size / seconds, "device": str(device)})
        if d.active:
            row["world_size"] = d.world_size
        extra_row, extra_state = task.end_epoch(model, epoch)
        row.update(extra_row)
        if d.main:  # checkpoint, metrics row, resume state: in that order, by rank 0 only
            run.save_checkpoint(epoch, model.state_dict())
            run.append_metrics(row)
            run.save_state({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), **extra_state})
            if "test_acc" in row:  # else the last measured one stays (test_every)
                bar.set_postfix(loss=f"{row['train_loss']:.3f}", test_acc=f"{row['test_acc']:.4f}", refresh=False)
            if on_epoch_end is not None:
                on_epoch_end(epoch, model, run)
        distributed.barrier(d)
    if d.main:
        run.mark_done({"epochs": config.epochs, "test_acc": run.metrics()[-1]["test_acc"], "device": str(device),
                       "world_size": d.world_size})
    distributed.barrier(d)
    return run


def _resume(run: Run, task, model, optimizer, scheduler, d: distributed.Dist) -> int:
    """Load the run's resume state, if any, drop metrics rows past it and return its epoch (0: none)."""
    state = distributed.broadcast_object(run.load_state() if d.main else None, d)
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        task.load_state(state, model)
        start = state["epoch"]
    if d.main:
        run.truncate_metrics(start)
    return start


def _train_epoch(run: Run, config, task, net, optimizer, scheduler, epoch: int, d: distributed.Dist
                 ) -> torch.Tensor:
    """One epoch's steps; returns each step's loss. A non-finite loss marks the run FAILED and raises."""
    net.train()
    for group in optimizer.param_groups:
        group["weight_decay"] = weight_decay_at(config, epoch)
    batches = task.start_epoch(epoch)
    losses = torch.zeros(task.steps_per_epoch, device=task.loss_device or task.device)
    for step, batch in enumerate(batches):
        loss = task.loss(net, batch, epoch, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        task.after_backward()
        optimizer.step()
        scheduler.step()
        losses[step] = loss.detach()
    losses = distributed.all_sum(losses.to(task.device), d).to(losses.device) / d.world_size
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad):
        step = int(bad[0])
        if d.main:
            run.mark_failed(epoch, step, f"non-finite training loss {losses[step].item()}")
        raise RunFailedError(f"run {run.name}: loss became {losses[step].item()} at epoch {epoch}, step {step}")
    return losses
