"""The one place that names a device: which one to use, and moving things to a model's.

Every other module reads the device off the model it is given (``model_device``) and
moves inputs there with ``to_model``; nothing else in the library names "cpu" or "cuda".
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["device", "available", "model_device", "to_model", "to_host", "is_cuda"]

CPU = torch.device("cpu")


def available() -> list[str]:
    """Device kinds this machine can run on, best first."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found + ["cpu"]


def device(spec: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; ``"cuda"``, ``"cuda:1"``, ``"mps"`` and
    ``"cpu"`` are taken as given when this machine has them. Anything else raises
    ``ValueError`` naming the value and what is available."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise ValueError(f"device: expected a string like 'auto', 'cpu' or 'cuda', got {spec!r}")
    have = available()
    if spec == "auto":
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
    """The device of the model's first parameter (or buffer); CPU for a model with neither."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return CPU


def to_model(model: nn.Module, *tensors: torch.Tensor):
    """``tensors`` moved to ``model``'s device (one tensor in, one out)."""
    dev = model_device(model)
    moved = tuple(t.to(dev, non_blocking=True) if isinstance(t, torch.Tensor) else t
                  for t in tensors)
    return moved[0] if len(moved) == 1 else moved


def to_host(*tensors: torch.Tensor):
    """``tensors`` detached and moved to the CPU, where results are returned (one in, one out)."""
    moved = tuple(t.detach().to(CPU) if isinstance(t, torch.Tensor) else t for t in tensors)
    return moved[0] if len(moved) == 1 else moved


def is_cuda(model: nn.Module) -> bool:
    return model_device(model).type == "cuda"
