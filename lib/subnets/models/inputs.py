"""Input normalisation as a module: models take images in [0, 1] and normalise them
themselves, so that a black image is a meaningful attribution baseline.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "imagenet_statistics", "Normalize"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_statistics(channels: int = 3) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet's per-channel mean and standard deviation, for colour or grey inputs.

    Args:
        channels: 3, or 1 for grey images (each statistic averaged over the colours).

    Returns:
        (mean, std), one value per channel.

    Raises:
        ValueError: for another number of channels.

    Example:
        >>> [round(v, 3) for v in imagenet_statistics(1)[0]]
        [0.449]
    """
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    if channels == 1:
        return (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,)
    raise ValueError(f"in_channels: expected 1 or 3 for ImageNet's statistics, got {channels}")


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as a module, so that models take images in [0, 1].

    Args:
        mean: one value per channel.
        std: one value per channel.
        persistent: keep mean and std in the state dict (False: a network loaded from a
            checkpoint of its other layers, such as ``ResNet(normalize=...)``).

    Example:
        >>> import torch
        >>> Normalize((0.5,), (0.25,))(torch.tensor([[[[0.0, 1.0]]]]))
        tensor([[[[-2.,  2.]]]])
    """

    def __init__(self, mean, std, persistent: bool = True) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
