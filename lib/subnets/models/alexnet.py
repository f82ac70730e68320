"""AlexNet-style networks (Islam and Tushar, chapter 2): five convs, three max-pools, three fully
connected layers, laid out as torchvision's ``alexnet`` (``features``, ``avgpool``,
``classifier``) so layer names read the same.

``AlexNet()`` with its defaults is Krizhevsky et al.'s architecture as torchvision builds
it (for 224 x 224 ImageNet images); ``alexnet_small`` keeps its shape (a large first
kernel, two pools before the three 3x3 convs) at a fraction of its width for 28 x 28
inputs on a CPU.
"""

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["AlexNet", "alexnet_small"]


class AlexNet(nn.Module):
    """conv1-ReLU-pool, conv2-ReLU-pool, conv3-5 with ReLUs, pool, adaptive average
    pool to ``pooled_size``, then dropout-FC-ReLU x 2 and the output FC.

    Args:
        in_channels: input channels.
        num_classes: outputs.
        widths: the five convs' channels.
        conv1_kernel: the first conv's kernel size.
        conv1_stride: its stride.
        conv1_padding: its padding.
        pool_kernel: the max-pools' kernel size (stride 2).
        pooled_size: the side of the adaptive average pool's output.
        hidden: the two hidden FC layers' width.
        dropout: dropout before each hidden FC layer.

    Raises:
        ValueError: unless ``widths`` has five entries.

    Example:
        >>> net = AlexNet(num_classes=5, widths=(8, 8, 8, 8, 8), pooled_size=1, hidden=16)
        >>> net(torch.rand(1, 3, 64, 64)).shape
        torch.Size([1, 5])
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        widths: Sequence[int] = (64, 192, 384, 256, 256),
        conv1_kernel: int = 11,
        conv1_stride: int = 4,
        conv1_padding: int = 2,
        pool_kernel: int = 3,
        pooled_size: int = 6,
        hidden: int = 4096,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"widths: expected five conv widths, got {tuple(widths)}")
        w1, w2, w3, w4, w5 = (int(w) for w in widths)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w1, conv1_kernel, stride=conv1_stride, padding=conv1_padding),
            nn.ReLU(),
            nn.MaxPool2d(pool_kernel, stride=2),
            nn.Conv2d(w1, w2, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(pool_kernel, stride=2),
            nn.Conv2d(w2, w3, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(w3, w4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(w4, w5, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(pool_kernel, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(pooled_size)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(w5 * pooled_size * pooled_size, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def alexnet_small(in_channels: int = 1, num_classes: int = 10, **kwargs) -> AlexNet:
    """AlexNet's shape at about a quarter of its width for 28 x 28 inputs: a 5x5 first
    conv at stride 1 and 2x2 pools, so the maps go 28 -> 14 -> 7 -> 3.

    Args:
        in_channels: input channels.
        num_classes: outputs.
        **kwargs: ``AlexNet``'s other options, overriding the small ones.

    Returns:
        The network.

    Example:
        >>> alexnet_small()(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    options = {"widths": (24, 64, 96, 96, 64), "conv1_kernel": 5, "conv1_stride": 1,
               "conv1_padding": 2, "pool_kernel": 2, "pooled_size": 3, "hidden": 256}
    options.update(kwargs)
    return AlexNet(in_channels=in_channels, num_classes=num_classes, **options)
