"""Images per second of the engine's two input paths against a plain torchvision DataLoader pipeline, as ratios.

Same model (ResNet-8 width 4 of the book, 224 px inputs, SGD step per batch), same batch, same number of worker
processes. The three pipelines:

* ``plain``: ``torchvision.datasets.ImageFolder`` + RandomResizedCrop(224), flip, ToTensor, Normalize, in a
  DataLoader (the pattern of torchvision's references/classification), the reference (ratio 1.00);
* ``stream``: the engine's streaming loader (:class:`ctcbook.data.stream.StreamBatches`: uint8 batches, per-image
  seeded augmentation, normalisation in the model);
* ``resident``: the engine's device-resident path (:class:`ctcbook.data.loader.DeviceBatches`) on the same images
  decoded once and resized to 224 px in memory (random crop and flip on the device), what small datasets use.

A temporary tree of JPEG files is written first (``--images`` per class, 3 classes, 64..128 px a side), or pass
``--root`` with ``train/<class>/*`` folders. Run: ``python benchmarks/stream_vs_resident.py [--workers 2]``.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ctcbook.data import stream
from ctcbook.data.loader import DeviceBatches
from ctcbook.models import build_model


def write_tree(root: Path, per_class: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for k in range(3):
        folder = root / "train" / f"n{k:02d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            h, w = (int(v) for v in rng.integers(64, 129, 2))
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.JPEG")
    return root / "train"


def timed(batches, step, steps: int, warmup: int = 2) -> float:
    n, start = 0, None
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            start, n = time.perf_counter(), 0
        step(x, y)
        n += len(y)
        if i + 1 == warmup + steps:
            break
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default=None)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model("cifar_resnet", 3, in_channels=3, mean=list(stream.IMAGENET_MEAN),
                        std=list(stream.IMAGENET_STD), depth=8, width=4, stem_stride=2)
    plain_model = build_model("cifar_resnet", 3, in_channels=3, mean=[0.0] * 3, std=[1.0] * 3, depth=8, width=4,
                              stem_stride=2)  # the plain pipeline normalises in its transform
    results = {}

    def stepper(net):
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

        def step(x, y):
            loss = F.cross_entropy(net(x)[1], y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.root) / "train" if args.root else write_tree(Path(tmp), args.images)
        from torchvision import datasets, transforms as T

        plain = datasets.ImageFolder(folder, T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(),
                                                        T.ToTensor(), T.Normalize(stream.IMAGENET_MEAN,
                                                                                  stream.IMAGENET_STD)]))
        loader = torch.utils.data.DataLoader(plain, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                             num_workers=args.workers, persistent_workers=args.workers > 0)
        results["plain"] = timed(loader, stepper(plain_model), args.steps)
        ds = stream.StreamFolder(folder, stream.train_transform())
        sb = stream.StreamBatches(ds, batch_size=args.batch_size, workers=args.workers)
        results["stream"] = timed(((x, y) for x, y, _ in sb.epoch(1)), stepper(model), args.steps)
        evals = stream.StreamFolder(folder, stream.eval_transform(224, 224))
        images = torch.stack([evals[i][0] for i in range(len(evals))])
        db = DeviceBatches(images, evals.targets, batch_size=args.batch_size, device=torch.device("cpu"),
                           augment="crop_flip", crop_padding=16)
        results["resident"] = timed(((x, y) for e in range(1, 100) for x, y, _ in db.epoch(e)), stepper(model),
                                    args.steps)
    print(f"batch {args.batch_size}, {args.workers} workers, {args.steps} timed steps, torch {torch.__version__}")
    for name, ips in results.items():
        print(f"{name:9s}: {ips:7.1f} images/s  ratio to plain {ips / results['plain']:5.2f}")


if __name__ == "__main__":
    main()
