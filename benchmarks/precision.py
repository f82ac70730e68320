"""Training-step speed of each chapter's main network: plain float32 against bf16 autocast
and the other settings the CPU (or CUDA) offers, as ratios taken in one run.

The networks and batches are the chapters' at their defaults (CI scale), sizes read from
each chapter's parameters cell: chapter 1's ThreeBlockCNN, chapter 2's small AlexNet,
VGG11 and ResNet-18, chapter 3's rf VGG and ResNet (first and last rf level), chapter 4's
CIFAR ResNet-8 and ResNet-20 (SGD, augmentation), chapter 5's VGG on its canvases.
Untrained weights and random uint8 images: speed does not depend on them.

One step is what ``train.run_training`` does per batch: uint8 images to [0, 1] floats,
augmentation where the chapter uses it, forward and loss (under the precision's
autocast), backward, optimiser step. Every variant of a network is warmed up, then the
variants take turns, one step each, ``--repeats`` times (interleaved, so that other
processes on the machine slow them alike); a variant's time is its median step.

Variants (ratios: plain fp32 step time / the variant's, at ``--threads`` threads):
- bf16: autocast (the column "auto" says which precision ``TrainConfig(precision="auto")``
  trains the network in here: the library's timing verdict, ``devices.precision``);
- channels-last, fp32 and bf16;
- 1 thread (fp32 and bf16; the ratio is against fp32 at ``--threads``);
- torch.compile (inductor), fp32 and bf16, for chapter 4's ResNet-20 (all networks with
  ``--compile-all``); its compile time (first steps less a compiled step) beside it.
Also per network: the share of a plain step spent outside forward and backward (data,
augmentation, optimiser), and ``train.fit`` itself (one epoch, uncached, ``--fit-steps``
batches) per batch against the bare step, fp32 and bf16. And once: the augmentation on
the uint8 batch (then scaled) against on the float batch, the same images either way.

On CUDA (when present) the same networks: fp32 against bf16 and channels-last.
The last line is the speed-up of chapter 4's ResNet-20 step with the fastest settings the
library offers (``TrainConfig(precision="auto", compile=True)``) over plain fp32, at
``--threads`` threads (the issue's bar: >= 2.0), its compile time and the speed-up of
"auto" alone (the chapters' default, uncompiled) beside it. The machine's load average
is printed at the start and at the end. ``--headline`` measures only what that line
needs (plain fp32, "auto", "auto" compiled); ``--networks`` picks networks by name.

    .venv/bin/python benchmarks/precision.py [--threads 2] [--repeats 7] [--chapters 04]
    .venv/bin/python benchmarks/precision.py --chapters 04 --networks "4: ResNet-20" --headline
    .venv/bin/python benchmarks/precision.py --no-cpu   # CUDA only (on a GPU machine)

On a machine shared with other busy processes the two-thread times mostly measure how
long each thread waits for the other to be scheduled (seen: fp32 steps ten times slower
with two threads than with one); there, compare one-thread runs (``--threads 1`` with
``OMP_NUM_THREADS=1``), timed in the thread's CPU time (``--clock thread``), which the
other processes do not inflate, and repeat the run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from subnets import batches, data, devices, models, parameters, train

ROOT = Path(__file__).resolve().parents[1]
# What a step's time is read on: wall-clock, or (``--clock thread``, one thread only) the
# thread's CPU time, which other processes on a busy machine do not inflate.
CLOCK = [time.perf_counter]


def chapter_params(chapter: str) -> dict:
    path = next((ROOT / "notebooks").glob(f"{chapter}_*.md"))
    return parameters.read_chapter(path)[0]


def network(name: str, build, fields: dict, batch: int, shape=(1, 28, 28),
            classes: int = 10) -> dict:
    return {"name": name, "build": build, "fields": fields, "batch": batch, "shape": shape,
            "classes": classes}


def networks(chapters: list[str]) -> list[dict]:
    """Each chapter's main networks at its defaults: name, builder, TrainConfig fields,
    batch size, input shape and classes (Fashion-MNIST: 1 channel, 28 px)."""
    found = []
    for ch in chapters:
        p = chapter_params(ch)
        batch = p["batch_size"]
        if ch == "01":
            found.append(network("1: ThreeBlockCNN", partial(models.ThreeBlockCNN, 1, 10, 28),
                                 {"lr": p["lr"], "schedule": "cosine"}, batch))
        elif ch == "02":
            found += [network(f"2: {n} (small)", partial(models.small_network, n, 1, 10),
                              {"lr": p["lr"]}, batch) for n in p["networks"]]
        elif ch == "03":
            fields = {"lr": p["lr"], "optimizer": "sgd", "weight_decay": p["weight_decay"],
                      "schedule": "cosine", "augment": p["augment"],
                      "clip_grad_norm": p["clip_threshold"] or None}
            levels = sorted({min(p["rf_levels"]), max(p["rf_levels"])})
            found += [network(f"3: rf {a} level {lv}",
                              partial(models.rf_model, a, lv, 1, 10, p["width"]), fields, batch)
                      for a in p["architectures"] for lv in levels]
        elif ch == "04":
            fields = {"lr": p["lr"], "optimizer": p["optimizer"], "schedule": "cosine",
                      "weight_decay": p["weight_decay"], "augment": p["augment"]}
            found += [network(f"4: ResNet-{d}",
                              partial(models.cifar_resnet, d, 1, 10, shortcut=p["shortcut"]),
                              fields, batch)
                      for d in sorted({p["depth"], *p["depths"]})]
        elif ch == "05":
            cfg = [x for i, (w, d) in enumerate(zip(p["block_widths"], p["block_depths"]))
                   for x in [w] * d + ["M"] * (i < len(p["block_widths"]) - 1)]
            side = p["canvas_size"] if p["cluttered_canvas"] else p["image_size"]
            found.append(network("5: VGG-16 (canvas)",
                                 partial(models.VGG, cfg, 1, 2, batch_norm=p["batch_norm"]),
                                 {"lr": p["lr"]}, batch, (1, side, side), 2))
    return found


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class Step:
    """One training step of ``net`` on a fixed uint8 batch, as ``run_training`` takes it,
    with its phases timed: data (scaling, augmentation, layout), forward and backward,
    optimiser."""

    def __init__(self, net: dict, dev: torch.device, precision: str = "fp32",
                 channels_last: bool = False, compiled: bool = False, threads: int = 0):
        torch.manual_seed(0)
        self.model = net["build"]().to(dev).train()
        self.config = train.TrainConfig(batch_size=net["batch"], precision=precision,
                                        **net["fields"])
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if compiled else self.model
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (net["batch"], *net["shape"]), dtype=torch.uint8,
                                    generator=g).to(dev)
        self.labels = torch.randint(0, net["classes"], (net["batch"],), generator=g).to(dev)
        self.g = g
        c = self.config
        params = list(self.model.parameters())
        self.opt = (torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
                    if c.optimizer == "adam" else
                    torch.optim.SGD(params, lr=c.lr, momentum=c.momentum,
                                    weight_decay=c.weight_decay))
        self.dev, self.channels_last, self.threads = dev, channels_last, threads
        self.phases: list[tuple[float, float, float]] = []

    def __call__(self) -> float:
        if self.threads:
            torch.set_num_threads(self.threads)
        dev, c = self.dev, self.config
        sync(dev)
        t0 = CLOCK[0]()
        x = self.images.float().div_(255)
        if c.augment:
            x = batches.augment_batch(x, self.g)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        sync(dev)
        t1 = CLOCK[0]()
        with devices.autocast(self.model, c.precision):
            loss = train.loss_function(c.loss)(self.forward(x), self.labels)
        self.model.zero_grad(set_to_none=True)
        loss.backward()
        sync(dev)
        t2 = CLOCK[0]()
        if c.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), c.clip_grad_norm)
        self.opt.step()
        sync(dev)
        t3 = CLOCK[0]()
        self.phases.append((t1 - t0, t2 - t1, t3 - t2))
        return t3 - t0

    def median(self) -> float:
        return statistics.median(sum(p) for p in self.phases)

    def outside_share(self) -> float:
        """Median share of a step outside forward and backward."""
        return statistics.median((p[0] + p[2]) / sum(p) for p in self.phases)


def fit_per_batch(net: dict, dev: torch.device, precision: str, steps: int) -> float:
    """Seconds per batch of one uncached ``train.fit`` epoch over ``steps`` batches."""
    torch.manual_seed(0)
    model = net["build"]().to(dev)
    n = steps * net["batch"]
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, *net["shape"]), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, net["classes"], (n,), generator=g)
    subset = data.ImageSet(images, labels, [str(k) for k in range(net["classes"])], "random")
    config = train.TrainConfig(epochs=1, batch_size=net["batch"], precision=precision,
                               **net["fields"])
    sync(dev)
    start = CLOCK[0]()
    train.fit(model, subset, config, cached=False)
    sync(dev)
    return (CLOCK[0]() - start) / steps


def interleaved(steps: dict[str, Step], warmup: int, repeats: int) -> dict[str, float]:
    """Median step seconds of each variant, the variants taking turns after warm-up."""
    for step in steps.values():
        for _ in range(warmup):
            step()
        step.phases.clear()
    for _ in range(repeats):
        for step in steps.values():
            step()
    return {name: step.median() for name, step in steps.items()}


def compiled_variants(net: dict, dev: torch.device, threads: int, warmup: int,
                      precisions=("fp32", "bf16")) -> dict:
    """Compiled steps in each of ``precisions``, each with its compile time: the first
    ``warmup`` steps' time less as many compiled steps."""
    found = {}
    for prec in precisions:
        torch.set_num_threads(threads)
        step = Step(net, dev, prec, compiled=True, threads=threads)
        start = time.perf_counter()
        for _ in range(warmup):
            step()
        first = time.perf_counter() - start
        start = time.perf_counter()
        step()
        step.phases.clear()
        # Wall-clock whatever the clock: compilation runs in worker processes too.
        found[f"{prec}+compile"] = (step, first - warmup * (time.perf_counter() - start))
    return found


def auto_precision(net: dict, threads: int) -> str:
    """What ``TrainConfig(precision="auto")`` trains ``net`` in on the CPU at ``threads``
    threads: the library's cached timing verdict (``devices.precision``)."""
    torch.set_num_threads(threads)
    with train.seeded(0):
        model = net["build"]()
    return devices.precision(model, "auto", (net["batch"], *net["shape"]))


def cpu_table(nets: list[dict], args) -> tuple[pd.DataFrame, str]:
    dev = devices.CPU
    rows, headline = [], "speed-up nan"
    for net in nets:
        t = args.threads
        chosen = auto_precision(net, t)
        if args.headline:  # only what the last line needs
            steps = {p: Step(net, dev, p, threads=t) for p in dict.fromkeys(("fp32", chosen))}
        else:
            steps = {"fp32": Step(net, dev, "fp32", threads=t),
                     "bf16": Step(net, dev, "bf16", threads=t),
                     "fp32 channels-last": Step(net, dev, "fp32", True, threads=t),
                     "bf16 channels-last": Step(net, dev, "bf16", True, threads=t),
                     "fp32 1 thread": Step(net, dev, "fp32", threads=1),
                     "bf16 1 thread": Step(net, dev, "bf16", threads=1)}
        compile_s = {}
        if args.compile_all or (net["name"] == "4: ResNet-20" and not args.no_compile):
            precisions = (chosen,) if args.headline else ("fp32", "bf16")
            for name, (step, seconds) in compiled_variants(net, dev, t, args.warmup,
                                                           precisions).items():
                steps[name], compile_s[name] = step, seconds
        times = interleaved(steps, args.warmup, args.repeats)
        torch.set_num_threads(t)
        base = times["fp32"]
        row = {"network": net["name"], "batch": net["batch"], "auto": chosen,
               "fp32 ms": round(1000 * base, 1), "fp32 img/s": round(net["batch"] / base),
               "auto img/s": round(net["batch"] / times[chosen])}
        row.update({f"x {k}": round(base / v, 2) for k, v in times.items() if k != "fp32"})
        row.update({f"compile s ({k})": round(v, 1) for k, v in compile_s.items()})
        for name in ("fp32", "bf16"):
            if name in steps:
                row[f"outside fwd/bwd {name}"] = round(steps[name].outside_share(), 3)
        if not args.headline:
            fit_s = {p: fit_per_batch(net, dev, p, args.fit_steps) for p in ("fp32", "bf16")}
            row["fit/step fp32"] = round(fit_s["fp32"] / base, 2)
            row["fit/step bf16"] = round(fit_s["bf16"] / times["bf16"], 2)
            row["x fit bf16"] = round(fit_s["fp32"] / fit_s["bf16"], 2)
        print(row, flush=True)
        rows.append(row)
        if net["name"] == "4: ResNet-20":
            headline = (f"speed-up {base / times[chosen + '+compile']:.2f} ({chosen} + "
                        f"torch.compile, compile {compile_s[chosen + '+compile']:.0f} s; "
                        f"{chosen} alone {base / times[chosen]:.2f}; "
                        f"{round(net['batch'] / times[chosen + '+compile'])} img/s)"
                        if chosen + "+compile" in times else
                        f"speed-up {base / times[chosen]:.2f} ({chosen}; compile not measured)")
    return pd.DataFrame(rows), headline


def cuda_table(nets: list[dict], args) -> pd.DataFrame:
    dev = devices.device("cuda")
    rows = []
    for net in nets:
        steps = {"fp32": Step(net, dev, "fp32"), "bf16": Step(net, dev, "bf16"),
                 "fp32 channels-last": Step(net, dev, "fp32", True),
                 "bf16 channels-last": Step(net, dev, "bf16", True)}
        times = interleaved(steps, args.warmup, args.repeats)
        base = times["fp32"]
        with train.seeded(0):
            model = net["build"]().to(dev)
        row = {"network": net["name"],
               "auto": devices.precision(model, "auto", (net["batch"], *net["shape"])),
               "fp32 ms": round(1000 * base, 2),
               "fp32 img/s": round(net["batch"] / base),
               "bf16 img/s": round(net["batch"] / times["bf16"])}
        row.update({f"x {k}": round(base / v, 2) for k, v in times.items() if k != "fp32"})
        row["outside fwd/bwd fp32"] = round(steps["fp32"].outside_share(), 3)
        print(row, flush=True)
        rows.append(row)
    return pd.DataFrame(rows)


def uint8_augmentation(threads: int, repeats: int) -> dict:
    """Scale-then-augment (as ``run_training`` does) against augment-then-scale on a
    chapter 4 batch (64 images, 28 px): the same images either way."""
    torch.set_num_threads(threads)
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))

    def float_first():
        return batches.augment_batch(images.float().div_(255), torch.Generator().manual_seed(0))

    def uint8_first():
        out = batches.augment_batch(images, torch.Generator().manual_seed(0))
        return out.float().div_(255)

    assert torch.equal(float_first(), uint8_first())
    times = {"float": [], "uint8": []}
    for _ in range(repeats * 20):
        for name, fn in (("float", float_first), ("uint8", uint8_first)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    f, u = (statistics.median(times[k]) for k in ("float", "uint8"))
    return {"float ms": round(1000 * f, 3), "uint8 ms": round(1000 * u, 3),
            "x uint8": round(f / u, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--fit-steps", type=int, default=8)
    parser.add_argument("--chapters", nargs="*", default=["01", "02", "03", "04", "05"])
    parser.add_argument("--networks", nargs="*", default=None,
                        help="only these networks (names as in the table, e.g. '4: ResNet-20')")
    parser.add_argument("--compile-all", action="store_true")
    parser.add_argument("--no-compile", action="store_true", help="no compiled variants")
    parser.add_argument("--no-cpu", action="store_true", help="CUDA only")
    parser.add_argument("--clock", choices=["wall", "thread"], default="wall",
                        help="step times: wall-clock, or the thread's CPU time (--threads 1)")
    parser.add_argument("--batch", type=int, default=None,
                        help="every network's batch size (default: its chapter's)")
    parser.add_argument("--headline", action="store_true",
                        help="CPU: only plain fp32, what 'auto' picks, and it compiled")
    args = parser.parse_args()
    if args.clock == "thread":
        if args.threads != 1:
            parser.error("--clock thread: times one thread; use it with --threads 1")
        CLOCK[0] = time.thread_time
    nets = [{**n, "batch": args.batch or n["batch"]} for n in networks(args.chapters)
            if args.networks is None or n["name"] in args.networks]
    print(f"torch {torch.__version__}; cpu bf16 kernels: {devices.fast_bf16(devices.CPU)}; "
          f"threads {args.threads}; {args.clock} clock; median of {args.repeats} interleaved "
          f"steps; load "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    headline = "speed-up nan (no ResNet-20 on the CPU)"
    if not args.no_cpu:
        table, headline = cpu_table(nets, args)
        print()
        print(table.to_string(index=False))
        if not args.headline:
            print("augmentation on uint8:", uint8_augmentation(args.threads, args.repeats))
    if "cuda" in devices.available():
        print(f"\ncuda: {torch.cuda.get_device_name()}")
        print(cuda_table(nets, args).to_string(index=False))
    else:
        print("\ncuda: not available")
    print(f"load {os.getloadavg()[0]:.1f} at the end")
    print(headline)


if __name__ == "__main__":
    main()
