"""The one place that names a device: which one to use, and moving things to a model's.

Every other module reads the device off the model it is given (``model_device``) and
moves inputs there with ``to_model``; nothing else in the library names "cpu" or "cuda".
What differs on CUDA is decided here too: tuned cuDNN kernels for training, pinned memory
and worker processes for loading, how much data may stay on the device, and the device
kind that a cache key records (none on the CPU). So is the arithmetic: ``precision``
resolves "auto" to bf16 autocast where it trains the given network faster, else to
float32. Whether it does depends on the network, not only on the device: on one CPU with
AVX-512 BF16, bf16 made a ResNet-20 step 1.5x faster and a width-8 VGG's 2.5x slower. So
on a device with bf16 kernels (``fast_bf16``) "auto" times a few training steps of the
network in both precisions on its input shape, once: the verdict is cached by
architecture, input shape and processor, so later runs read it back. On the CPU the steps
run on one thread and are timed in that thread's CPU time: on a machine shared with busy
processes, wall-clock times of two threads mostly measure how long each waited for the
other (seen: a step 60x slower than on one thread), and would make the verdict chance.
"""

from __future__ import annotations

import contextlib
import copy
import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn

__all__ = ["device", "available", "model_device", "to_model", "to_host", "is_cuda", "upload",
           "PRECISIONS", "AUTO_SPEEDUP", "fast_bf16", "precision", "precision_timing", "autocast",
           "tuned_kernels", "loader_options", "room_for", "key_kind", "CPU", "META"]

CPU = torch.device("cpu")
# Shapes without weights or work: ``with devices.META: model = build(...)``.
META = torch.device("meta")


def available() -> list[str]:
    """The device kinds this machine can run on.

    Returns:
        Kinds, best first: "cuda", "mps", then always "cpu".

    Example:
        >>> available()[-1]
        'cpu'
    """
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found + ["cpu"]


def device(spec: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks cuda (under ``torchrun``, the process's ``LOCAL_RANK``-th GPU), then
    mps, then cpu; ``"cuda"``, ``"cuda:1"``, ``"mps"`` and
    ``"cpu"`` are taken as given when this machine has them.

    Args:
        spec: "auto", a device name, or a ``torch.device``.

    Returns:
        The device.

    Raises:
        ValueError: naming the value and what is available, for anything else.

    Example:
        >>> device("cpu")
        device(type='cpu')
        >>> device("tpu")
        Traceback (most recent call last):
        ...
        ValueError: device: unknown device 'tpu'; expected 'auto' or one of [...]
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise ValueError(  # noqa: TRY004  (documented: anything else raises ValueError)
            f"device: expected a string like 'auto', 'cpu' or 'cuda', got {spec!r}")
    have = available()
    if spec == "auto":
        if have[0] == "cuda" and "LOCAL_RANK" in os.environ:  # torchrun: a GPU per process
            return torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
        return torch.device(have[0])
    try:
        wanted = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"device: unknown device {spec!r}; expected 'auto' or one of {have}") \
            from None
    if wanted.type not in have:
        raise ValueError(f"device: {spec!r} is not available on this machine; available: {have}")
    if wanted.type == "cuda" and wanted.index is not None \
            and wanted.index >= torch.cuda.device_count():
        raise ValueError(f"device: {spec!r} does not exist; this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s)")
    return wanted


def model_device(model: nn.Module) -> torch.device:
    """The device a model runs on: that of its first parameter (or buffer).

    Args:
        model: the model.

    Returns:
        The device; CPU for a model with neither.

    Example:
        >>> model_device(nn.Linear(2, 2)), model_device(nn.ReLU())
        (device(type='cpu'), device(type='cpu'))
    """
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return CPU


def to_model(model: nn.Module, *tensors: torch.Tensor):
    """Tensors moved to ``model``'s device (asynchronously where the copy allows).

    Args:
        model: the model.
        *tensors: tensors (anything else passes through).

    Returns:
        The moved tensors as a tuple; one tensor in, one out.

    Example:
        >>> x, y = to_model(nn.Linear(2, 2), torch.zeros(2), torch.ones(2))
        >>> x.device == y.device == CPU
        True
    """
    dev = model_device(model)
    moved = tuple(t.to(dev, non_blocking=True) if isinstance(t, torch.Tensor) else t
                  for t in tensors)
    return moved[0] if len(moved) == 1 else moved


def to_host(*tensors: torch.Tensor):
    """Tensors detached and moved to the CPU, where results are returned.

    Args:
        *tensors: tensors (anything else passes through).

    Returns:
        The moved tensors as a tuple; one tensor in, one out.

    Example:
        >>> to_host(torch.ones(2, requires_grad=True))
        tensor([1., 1.])
    """
    moved = tuple(t.detach().to(CPU) if isinstance(t, torch.Tensor) else t for t in tensors)
    return moved[0] if len(moved) == 1 else moved


def is_cuda(where: nn.Module | torch.Tensor | torch.device) -> bool:
    """Whether a model, a tensor or a device is on CUDA.

    Args:
        where: a model, a tensor or a device.

    Returns:
        True on CUDA.

    Example:
        >>> is_cuda(CPU), is_cuda(torch.zeros(1)), is_cuda(nn.Linear(1, 1))
        (False, False, False)
    """
    if isinstance(where, nn.Module):
        where = model_device(where)
    elif isinstance(where, torch.Tensor):
        where = where.device
    return where.type == "cuda"


def upload(model: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """A tensor on ``model``'s device; a host tensor bound for CUDA goes through pinned
    memory, so the copy runs asynchronously.

    Args:
        model: the model.
        tensor: the tensor.

    Returns:
        The tensor on the model's device.

    Example:
        >>> upload(nn.Linear(2, 2), torch.zeros(3)).device
        device(type='cpu')
    """
    if is_cuda(model) and tensor.device.type == CPU.type:
        tensor = tensor.pin_memory()
    return to_model(model, tensor)


PRECISIONS = ("auto", "fp32", "bf16")


def fast_bf16(where: nn.Module | torch.device) -> bool:
    """Whether bf16 autocast runs faster than float32 on this device: CUDA with bf16
    support, or a CPU with AVX-512 BF16 or AMX tiles (where oneDNN has bf16 kernels).

    Args:
        where: a model or a device.

    Returns:
        True where "auto" precision means bf16.

    Example:
        >>> fast_bf16(META)
        False
    """
    dev = model_device(where) if isinstance(where, nn.Module) else where
    if dev.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if dev.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


# "auto" takes bf16 only when it makes a training step at least this much faster: below
# it the float32 computation (exact, and the same on every machine) is worth the time.
AUTO_SPEEDUP = 1.2


def precision(model: nn.Module, spec: str = "auto",
              shape: tuple[int, ...] | None = None) -> str:
    """The arithmetic that ``spec`` means for ``model`` on its device: "bf16" (autocast) or
    "fp32". "auto" is "fp32" on a device without bf16 kernels (``fast_bf16``); on one
    with them, it is "bf16" when ``precision_timing`` finds a bf16 training step of
    ``model`` on inputs of ``shape`` at least ``AUTO_SPEEDUP`` times faster.

    Args:
        model: the network to train, on its device.
        spec: "auto", "fp32" or "bf16".
        shape: the shape of a training batch (batch size first); "auto" needs it on a
            device with bf16 kernels.

    Returns:
        "fp32" or "bf16".

    Args:
        model: the model.
        spec: one of ``PRECISIONS``.

    Returns:
        "bf16" or "fp32".

    Raises:
        ValueError: naming ``precision``.

    Example:
        >>> precision(torch.nn.Linear(2, 2), "fp32")
        'fp32'
    """
    if spec not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {spec!r}")
    if spec == "auto":
        if not fast_bf16(model):
            return "fp32"
        if shape is None:
            raise ValueError("precision: 'auto' times the model on its inputs here (the device "
                             "has bf16 kernels); pass shape, the shape of a training batch")
        timing = precision_timing(model, shape)
        return "bf16" if timing["fp32"] >= AUTO_SPEEDUP * timing["bf16"] else "fp32"
    if spec == "bf16" and model_device(model).type == "mps":
        raise ValueError("precision: 'bf16' autocast is not supported on mps; use 'fp32'")
    return spec


def _processor(dev: torch.device) -> str:
    """The name of the processor that runs ``dev``'s work."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.is_file() else []
    return names[0] if names else dev.type


def _step_seconds(model: nn.Module, x: torch.Tensor, bf16: bool) -> float:
    """Seconds of one forward and backward pass of ``model`` on ``x``: wall-clock on CUDA,
    the calling thread's CPU time elsewhere."""
    clock = time.perf_counter if is_cuda(model) else time.thread_time
    if is_cuda(model):
        torch.cuda.synchronize(x.device)
    start = clock()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = model(x)
    model.zero_grad(set_to_none=True)
    out.float().sum().backward()
    if is_cuda(model):
        torch.cuda.synchronize(x.device)
    return clock() - start


def precision_timing(model: nn.Module, shape: tuple[int, ...], steps: int = 3,
                     cached: bool = True) -> dict:
    """Median seconds of a training step (forward and backward) of ``model`` on a batch of
    ``shape`` in each precision, on a copy of it (the model, its batch-norm statistics
    and the random state are left as they were): one warm-up step each, then ``steps``
    rounds in which the precisions take turns, so that a load on the machine slows both
    alike. On the CPU: one thread, timed in CPU time (what a step costs, not how long it
    waited for a core); on CUDA: wall-clock. Cached by architecture, input shape,
    processor and torch version: measured once, read back after (so "auto" decides the
    same way every time).

    Args:
        model: the network, on its device.
        shape: a training batch's shape, batch size first.
        steps: timed steps per precision.
        cached: False to measure without reading or writing the cache.

    Returns:
        ``{"fp32": seconds, "bf16": seconds}``.

    Example:
        >>> sorted(precision_timing(torch.nn.Linear(3, 2), (4, 3), steps=1, cached=False))
        ['bf16', 'fp32']
    """
    from . import cache  # cache keys name devices through this module

    dev = model_device(model)
    parts = {"architecture": repr(model),
             "parameters": [list(p.shape) for p in model.parameters()],
             "shape": list(shape), "device": dev.type, "processor": _processor(dev),
             "clock": "wall" if is_cuda(model) else "thread CPU time, 1 thread",
             "torch": torch.__version__, "steps": steps}

    def measure() -> dict:
        trial = copy.deepcopy(model).train()
        x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(dev)
        found = {"fp32": [], "bf16": []}
        threads = torch.get_num_threads()
        if not is_cuda(model):
            torch.set_num_threads(1)
        try:
            with torch.random.fork_rng(devices=[dev] if is_cuda(model) else []):
                for round_ in range(steps + 1):
                    for name, times in found.items():
                        seconds = _step_seconds(trial, x, name == "bf16")
                        if round_:  # the first round warms up
                            times.append(seconds)
        finally:
            torch.set_num_threads(threads)
        return {name: statistics.median(times) for name, times in found.items()}

    return cache.cached("precision", parts, measure) if cached else measure()


def autocast(model: nn.Module, spec: str = "fp32"):
    """The autocast context of the precision ``spec`` ("fp32" or "bf16"; "auto" as
    ``precision`` resolves it without a shape): bf16 autocast on the model's device, or
    nothing (plain float32, bit for bit what it always was).

    Args:
        model: the model.
        spec: one of ``PRECISIONS``.

    Returns:
        A context manager.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> with autocast(net, "fp32"):
        ...     net(torch.ones(1, 2)).dtype
        torch.float32
    """
    if precision(model, spec) == "bf16":
        return torch.autocast(model_device(model).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def tuned_kernels(model: nn.Module):
    """On CUDA, cuDNN picks the fastest convolution algorithms inside the block (possibly
    non-deterministic ones); nothing changes on other devices.

    Args:
        model: the model trained inside the block.

    Example:
        >>> with tuned_kernels(nn.Linear(2, 2)):
        ...     torch.backends.cudnn.benchmark
        False
    """
    if not is_cuda(model):
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def loader_options(model: nn.Module) -> dict:
    """``DataLoader`` options that feed ``model``'s device: pinned memory and worker
    processes for CUDA, none (today's single-process loading) elsewhere.

    Args:
        model: the model the loader feeds.

    Returns:
        Keyword arguments for ``DataLoader``.

    Example:
        >>> loader_options(nn.Linear(2, 2))
        {}
    """
    if not is_cuda(model):
        return {}
    workers = min(4, (os.cpu_count() or 1) - 1)
    return {"pin_memory": True, "num_workers": max(workers, 0), "persistent_workers": workers > 0}


def room_for(model: nn.Module, nbytes: int) -> bool:
    """Whether ``nbytes`` of data may stay on ``model``'s device for a whole run: always on
    the CPU (nothing is copied), on CUDA while it takes at most a quarter of the free
    memory, on other accelerators up to 1 GiB.

    Args:
        model: the model.
        nbytes: the data's size in bytes.

    Returns:
        True if the data may stay.

    Example:
        >>> room_for(nn.Linear(2, 2), 2**40)
        True
    """
    dev = model_device(model)
    if dev.type == CPU.type:
        return True
    if is_cuda(model):
        free, _ = torch.cuda.mem_get_info(dev)
        return nbytes <= free // 4
    return nbytes <= 2**30


def key_kind(value: torch.Tensor | nn.Module) -> str | None:
    """The device kind a cache key records for a tensor or module: None on the CPU (CPU
    keys stay device-free), else the kind ("cuda", "mps"), whose results may differ from
    the CPU's (bf16 autocast, non-deterministic kernels).

    Args:
        value: a tensor or a module.

    Returns:
        The kind, or None on the CPU.

    Example:
        >>> key_kind(torch.zeros(1)), key_kind(torch.zeros(1, device=META))
        (None, 'meta')
    """
    dev = value.device if isinstance(value, torch.Tensor) else model_device(value)
    return None if dev.type == CPU.type else dev.type
