"""The library's heavy steps on the CPU and on CUDA in the same run, and the speed-up.

Four steps, each timed once per device after an untimed warm-up on a small input (CUDA
context, cuDNN algorithm search, first-call allocations):
- training: one epoch of a CIFAR ResNet-20 (``models.cifar_resnet``) over Fashion-MNIST,
  batch 128, Adam (``train.fit``, not cached, precision "auto": on each device what the
  library picks, timed once in the warm-up; on CUDA also channels-last);
- relevance: one all-unit conductance pass (``attribution.UnitConductance`` over every
  unit layer of VGG11-small, ``n_steps`` 32);
- Lanczos: the top 20 Hessian eigenvalues of a ResNet-8 (``curvature.Hessian``);
- resampling: every channel's scores on 50 noisy copies of each image
  (``resampling.InputResampling`` over the conv layers of VGG11-small).
Untrained weights: speed does not depend on them. Prints seconds per device and the
ratio CPU / CUDA (goal for training: >= 20x). Without CUDA it prints the CPU times and
"cuda: not available"; the flags make the steps small enough for a quick check:

    .venv/bin/python benchmarks/gpu.py
    .venv/bin/python benchmarks/gpu.py --train-images 2000 --relevance-images 2 \
        --hessian-images 32 --k 5 --resampling-images 2
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from subnets import attribution, curvature, data, devices, models, resampling, train
from subnets.dissection import unit_layers
from subnets.hooks import conv_layers


def _sync(dev: torch.device) -> None:
    if devices.is_cuda(dev):
        torch.cuda.synchronize(dev)


def timed(dev: torch.device, fn) -> float:
    _sync(dev)
    start = time.perf_counter()
    fn()
    _sync(dev)
    return time.perf_counter() - start


def built(build, dev: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return build().to(dev).eval()


def training(dev, images, n):
    subset = images.subset(torch.arange(n))
    model = built(lambda: models.cifar_resnet(20, in_channels=1, num_classes=10), dev)
    config = train.TrainConfig(epochs=1, batch_size=128, precision="auto")
    return lambda: train.fit(model, subset, config, cached=False)


def relevance(dev, images, n, n_steps):
    model = built(lambda: models.vgg11_small(in_channels=1, num_classes=10), dev)
    x, y = images.tensors(torch.arange(n))
    method = attribution.UnitConductance(model, unit_layers(model))
    return lambda: method.attribute(x, y, n_steps=n_steps)


def lanczos(dev, images, n, k):
    model = built(lambda: models.cifar_resnet(8, in_channels=1, num_classes=10), dev)
    x, y = images.tensors(torch.arange(n))
    return lambda: curvature.Hessian(model, x, y).top_eigenvalues(k=k)


def scoring(dev, images, n, n_samples):
    model = built(lambda: models.vgg11_small(in_channels=1, num_classes=10), dev)
    x, _ = images.tensors(torch.arange(n))
    method = resampling.InputResampling(model, conv_layers(model), n_samples=n_samples)
    return lambda: method.score(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-images", type=int, default=60000)
    parser.add_argument("--relevance-images", type=int, default=16)
    parser.add_argument("--n-steps", type=int, default=32)
    parser.add_argument("--hessian-images", type=int, default=512)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--resampling-images", type=int, default=16)
    parser.add_argument("--n-samples", type=int, default=50)
    args = parser.parse_args()
    images = data.load("fashion-mnist", "train")
    steps = {  # name: (size, builder(dev, n)); warm-ups use small n
        "training (1 epoch, ResNet-20)":
            (args.train_images, lambda dev, n: training(dev, images, n)),
        "relevance (all units, VGG11-small)":
            (args.relevance_images, lambda dev, n: relevance(dev, images, n, args.n_steps)),
        f"Lanczos top-{args.k} (ResNet-8)":
            (args.hessian_images, lambda dev, n: lanczos(dev, images, n, args.k)),
        "resampling scoring (VGG11-small)":
            (args.resampling_images, lambda dev, n: scoring(dev, images, n, args.n_samples)),
    }
    have = devices.available()
    targets = [devices.device("cpu")] + ([devices.device("cuda")] if "cuda" in have else [])
    if "cuda" not in have:
        print("cuda: not available (CPU times only)")
    else:
        print(f"cuda: {torch.cuda.get_device_name()}")
    print(f"cpu threads: {torch.get_num_threads()}", flush=True)
    rows = []
    for name, (size, build) in steps.items():
        row = {"step": name, "images": size}
        for dev in targets:
            warm = max(2, min(size, 128))
            build(dev, warm)()
            row[f"{dev.type}_s"] = round(timed(dev, build(dev, size)), 3)
            print(row, flush=True)
        if "cuda_s" in row:
            row["ratio cpu/cuda"] = round(row["cpu_s"] / row["cuda_s"], 1)
        rows.append(row)
    print()
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
