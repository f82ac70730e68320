"""The one place that names a device: which one to use, and moving things to a model's.

Every other module reads the device off the model it is given (``model_device``) and
moves inputs there with ``to_model``; nothing else in the library names "cpu" or "cuda".
What differs on CUDA is decided here too: tuned cuDNN kernels for training, pinned memory
and worker processes for loading, how much data may stay on the device, and the device
kind that a cache key records (none on the CPU). So is the arithmetic: ``precision``
resolves "auto" to bf16 autocast where the device runs it fast (CUDA with bf16, CPUs with
AVX-512 BF16 or AMX: about twice the training speed of float32), else to float32.
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

__all__ = ["device", "available", "model_device", "to_model", "to_host", "is_cuda", "upload",
           "PRECISIONS", "fast_bf16", "precision", "autocast", "tuned_kernels",
           "loader_options", "room_for", "key_kind", "CPU", "META"]

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


def precision(model: nn.Module, spec: str = "auto") -> str:
    """The arithmetic that ``spec`` means for ``model``'s device: "bf16" (autocast) or
    "fp32". "auto" is bf16 where it is fast (``fast_bf16``), fp32 elsewhere; "bf16" on a
    device without bf16 raises ``ValueError``.

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
        return "bf16" if fast_bf16(model) else "fp32"
    if spec == "bf16" and model_device(model).type == "mps":
        raise ValueError("precision: 'bf16' autocast is not supported on mps; use 'fp32'")
    return spec


def autocast(model: nn.Module, spec: str = "fp32"):
    """The autocast context of ``precision(model, spec)``: bf16 autocast on the model's
    device, or nothing (plain float32, bit for bit what it always was).

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
