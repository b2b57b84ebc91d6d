"""Training throughput of the chapter-1 model on this machine, and the ratios behind the default profile's choices.

Prints images per second for one configuration per line, and each one's speed relative to the first (the CIFAR
original: stem stride 1). Memory layout follows the engine (:func:`ctcbook.train.memory_format`: channels-last on
CUDA only). Random data of the source's shape; a few warm-up steps are not
timed. Run: ``python benchmarks/train_throughput.py [--device cuda] [--steps 20]``.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from ctcbook.models import build_model
from ctcbook.train import memory_format


def images_per_second(depth: int, width: int, stem_stride: int, *, device: torch.device,
                      batch_size: int, steps: int, warmup: int = 3) -> float:
    torch.manual_seed(0)
    model = build_model("cifar_resnet", 5, in_channels=1, mean=[0.5], std=[0.5], depth=depth, width=width,
                        stem_stride=stem_stride).to(device)
    fmt = memory_format(device)
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.rand(batch_size, 1, 28, 28, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 5, (batch_size,), device=device)
    amp = device.type == "cuda"
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x)[1].float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    device = torch.device(args.device)
    configs = [(8, 16, 1), (8, 16, 2), (14, 16, 2), (20, 16, 2), (20, 16, 1)]
    base = None
    print(f"device {device}, batch {args.batch_size}, {args.steps} timed steps, torch {torch.__version__}")
    for depth, width, stride in configs:
        ips = images_per_second(depth, width, stride, device=device, batch_size=args.batch_size, steps=args.steps)
        base = base or ips
        print(f"ResNet-{depth:<3} width {width:<3} stem stride {stride}: "
              f"{ips:8.0f} images/s  ratio {ips / base:5.2f}  (8,000-image epoch: {8000 / ips:6.1f} s)")


if __name__ == "__main__":
    main()
