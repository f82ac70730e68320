"""VGG-style networks (chapters 2, 3 and 5), sized for small inputs.

``rf_pool`` and ``rf_pool_stride`` are Avendaño Muñoz's receptive-field knob (chapter 3): a
max-pool of that kernel and stride right after the first conv (``models.rfpool`` grows both with the
level). It has no parameters, so every variant has the same parameter count; ``rf_pool=1`` with
stride 1 means no pool.

``cfgs`` holds the layer layouts by name, as torchvision's ``vgg.py`` does: an integer is a 3x3
conv of that many channels, ``"M"`` a 2x2 max-pool. The receptive-field layouts are written at
the paper's width 64; ``models.rfpool`` scales them.
"""

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["VGG", "cfgs", "vgg11_small"]

cfgs: dict[str, tuple[int | str, ...]] = {
    # VGG11 at half its width without its last block: a fourth pool would leave 28x28 inputs
    # 1x1 maps (Islam and Tushar, chapter 2).
    "vgg11_small": (32, "M", 64, "M", 128, 128, "M", 256, 256),
    # The paper's VGG19 with three 2x2 pools after blocks 1-3 and none after the 512-wide
    # convs: with a stride-4 receptive-field pool a 32x32 image still leaves a 1x1 map
    # (Avendaño Muñoz, chapter 3).
    "vgg19_rf": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M") + (512,) * 8,
    # Six convs with two 2x2 pools: a 28x28 image still leaves a 1x1 map at level 4.
    "vgg_small_rf": (64, 64, "M", 128, 128, "M", 256, 256),
}


class VGG(nn.Module):
    """``features`` (3x3 convs per ``cfg``, ``"M"`` a 2x2 max-pool), global average
    pool, and a ``classifier`` of ``hidden`` fully connected layers.

    Args:
        cfg: the layout: an integer is a 3x3 conv of that many channels, "M" a 2x2
            max-pool (``cfgs``).
        in_channels: input channels.
        num_classes: outputs.
        batch_norm: a batch norm after every conv.
        rf_pool: the receptive-field pool's kernel after the first conv (1: none).
        rf_pool_stride: its stride.
        hidden: the widths of hidden FC layers before the output layer.
        dropout: dropout after each hidden FC layer.

    Raises:
        ValueError: naming ``rf_pool`` below 1.

    Example:
        >>> net = VGG((8, "M", 16), in_channels=1, rf_pool=3, rf_pool_stride=2)
        >>> net(torch.rand(2, 1, 16, 16)).shape, len(net.features)
        (torch.Size([2, 10]), 8)
    """

    def __init__(
        self,
        cfg: Sequence[int | str],
        in_channels: int = 3,
        num_classes: int = 10,
        batch_norm: bool = True,
        rf_pool: int = 1,
        rf_pool_stride: int = 1,
        hidden: Sequence[int] = (),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if rf_pool < 1:
            raise ValueError(f"rf_pool: expected a kernel size >= 1, got {rf_pool}")
        layers: list[nn.Module] = []
        channels = in_channels
        for i, item in enumerate(cfg):
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            layers.append(nn.Conv2d(channels, int(item), 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(int(item)))
            layers.append(nn.ReLU(inplace=False))
            channels = int(item)
            if i == 0 and (rf_pool > 1 or rf_pool_stride > 1):
                layers.append(nn.MaxPool2d(rf_pool, stride=rf_pool_stride, padding=rf_pool // 2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        head: list[nn.Module] = []
        for width in hidden:
            head += [nn.Linear(channels, width), nn.ReLU(), nn.Dropout(dropout)]
            channels = width
        head.append(nn.Linear(channels, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg11_small(in_channels: int = 1, num_classes: int = 10, **kwargs) -> VGG:
    """VGG11 at half its width, its last block dropped (six convs, three pools), for
    28x28 inputs on a CPU: a fourth pool would leave 1x1 maps.

    Args:
        in_channels: input channels.
        num_classes: outputs.
        **kwargs: ``VGG``'s other options.

    Returns:
        The network.

    Example:
        >>> vgg11_small()(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    return VGG(cfgs["vgg11_small"], in_channels=in_channels, num_classes=num_classes, **kwargs)
