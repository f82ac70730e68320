"""The CNN of Perna et al. (chapter 1): three conv-ReLU-maxpool blocks, then FC-ReLU-FC."""

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ThreeBlockCNN"]


class ThreeBlockCNN(nn.Module):
    """conv(3x3)-ReLU-maxpool(2) x 3 with ``widths`` channels, then FC-ReLU-FC.

    Layers are named ``conv1..conv3``, ``relu1..relu3``, ``pool1..pool3``, ``fc1``,
    ``relu4`` and ``fc2`` so that hooks and pruning can address them by name.

    Args:
        in_channels: input channels.
        num_classes: outputs.
        image_size: the input's side (>= 8: three 2x2 pools).
        widths: the three convs' channels.
        hidden: the hidden FC layer's width.

    Raises:
        ValueError: naming ``widths`` or ``image_size``.

    Example:
        >>> net = ThreeBlockCNN(widths=(4, 8, 8), hidden=16)
        >>> net(torch.rand(2, 1, 28, 28)).shape, net.features(torch.rand(2, 1, 28, 28)).shape
        (torch.Size([2, 10]), torch.Size([2, 72]))
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        widths: Sequence[int] = (32, 64, 128),
        hidden: int = 128,
    ) -> None:
        super().__init__()
        if len(widths) != 3:
            raise ValueError(f"widths: expected three conv widths, got {tuple(widths)}")
        if image_size < 8:  # three 2x2 poolings leave nothing of a smaller image
            raise ValueError(f"image_size: expected >= 8, got {image_size}")
        self.in_channels = in_channels
        self.image_size = image_size
        self.widths = tuple(widths)
        channels = (in_channels, *widths)
        for i in range(3):
            self.add_module(f"conv{i + 1}", nn.Conv2d(channels[i], channels[i + 1], 3, padding=1))
            self.add_module(f"relu{i + 1}", nn.ReLU())
            self.add_module(f"pool{i + 1}", nn.MaxPool2d(2))
        side = image_size // 8
        self.fc1 = nn.Linear(widths[-1] * side * side, hidden)
        self.relu4 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened output of the last conv block."""
        for i in range(1, 4):
            x = getattr(self, f"pool{i}")(getattr(self, f"relu{i}")(getattr(self, f"conv{i}")(x)))
        return torch.flatten(x, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu4(self.fc1(self.features(x))))
