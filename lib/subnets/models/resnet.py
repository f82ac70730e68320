"""ResNets with basic or bottleneck blocks: CIFAR ResNet-n (chapter 4), a small ResNet18 (Islam and
Tushar, chapter 2), and the receptive-field pool of Avendaño Muñoz (chapter 3) after the stem conv
(with a CIFAR-style ResNet50 of bottleneck blocks)."""

from collections.abc import Sequence

import torch
from torch import nn

from .inputs import Normalize

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "cifar_resnet", "resnet18_small"]

_SHORTCUTS = ("projection", "identity")


class _PadShortcut(nn.Module):
    """He et al.'s option A: the identity, subsampled by ``stride`` and zero-padded with the
    extra channels (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_channels - in_channels
        self.pad = (extra // 2, extra - extra // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, *self.pad))


def _shortcut(in_channels: int, out_channels: int, stride: int, kind: str) -> nn.Module:
    """The block's skip path: identity where shapes agree, else a 1x1 conv + BN projection
    (option B) or the zero-padded identity (option A, ``kind="identity"``)."""
    if stride == 1 and in_channels == out_channels:
        return nn.Sequential()
    if kind == "identity":
        return _PadShortcut(in_channels, out_channels, stride)
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """conv-BN-ReLU, conv-BN, plus the skip path, then ReLU (``relu2``, a module of its own
    so hooks can read the block's output).

    Args:
        in_channels: input channels.
        channels: the block's width (its output channels: ``expansion`` is 1).
        stride: the first conv's stride.
        shortcut: "projection" or "identity" where the skip path changes shape.

    Example:
        >>> BasicBlock(4, 8, stride=2)(torch.rand(1, 4, 8, 8)).shape
        torch.Size([1, 8, 4, 4])
    """

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1,
                 shortcut: str = "projection") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu2 = nn.ReLU()
        self.shortcut = _shortcut(in_channels, channels, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # A module of its own (not a functional relu) so hooks can read the block output.
        return self.relu2(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, as torchvision's ResNet50 v1.5), 1x1 expand
    to ``expansion`` times ``channels``, plus the skip path, then ReLU.

    Args:
        in_channels: input channels.
        channels: the bottleneck's width (output: 4 times it).
        stride: the 3x3 conv's stride.
        shortcut: "projection" or "identity" where the skip path changes shape.

    Example:
        >>> Bottleneck(8, 4)(torch.rand(1, 8, 5, 5)).shape
        torch.Size([1, 16, 5, 5])
    """

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1,
                 shortcut: str = "projection") -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu3 = nn.ReLU()
        self.shortcut = _shortcut(in_channels, out_channels, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + self.shortcut(x))


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """``stem`` (3x3 conv, BN, ReLU, optional receptive-field max-pool), one stage of
    ``blocks[i]`` blocks (``block``: "basic" or "bottleneck") per width (stride 2 from the
    second stage on), global average pool and a linear ``fc`` on the penultimate features.
    ``shortcut`` is how a block's skip path changes shape: "projection" (1x1 conv + BN) or
    "identity" (He et al.'s option A, zero-padded).

    Args:
        blocks: blocks per stage.
        widths: each stage's width.
        in_channels: input channels.
        num_classes: outputs.
        rf_pool: the receptive-field pool's kernel after the stem conv (1: none).
        rf_pool_stride: its stride.
        block: "basic" or "bottleneck".
        shortcut: "projection" or "identity".
        normalize: (mean, std) per input channel for a network trained on normalised
            images (akamaster's CIFAR ResNets: ImageNet's), so that it still takes images in
            [0, 1]; None: none. Not in the state dict: checkpoints load as they are.

    Raises:
        ValueError: naming ``block``, ``shortcut``, ``rf_pool``, or blocks and widths of
            different lengths.

    Example:
        >>> net = ResNet((1, 1), (4, 8), in_channels=1, num_classes=3)
        >>> net(torch.rand(2, 1, 8, 8)).shape, net.penultimate(torch.rand(2, 1, 8, 8)).shape
        (torch.Size([2, 3]), torch.Size([2, 8]))
    """

    def __init__(
        self,
        blocks: Sequence[int],
        widths: Sequence[int],
        in_channels: int = 3,
        num_classes: int = 10,
        rf_pool: int = 1,
        rf_pool_stride: int = 1,
        block: str = "basic",
        shortcut: str = "projection",
        normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        self.normalize = None if normalize is None else Normalize(*normalize, persistent=False)
        if block not in _BLOCKS:
            raise ValueError(f"block: expected one of {sorted(_BLOCKS)}, got {block!r}")
        if shortcut not in _SHORTCUTS:
            raise ValueError(f"shortcut: expected one of {list(_SHORTCUTS)}, got {shortcut!r}")
        if len(blocks) != len(widths):
            raise ValueError(f"blocks and widths differ in length: {blocks} vs {widths}")
        if rf_pool < 1:
            raise ValueError(f"rf_pool: expected a kernel size >= 1, got {rf_pool}")
        stem: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        ]
        if rf_pool > 1 or rf_pool_stride > 1:
            stem.append(nn.MaxPool2d(rf_pool, stride=rf_pool_stride, padding=rf_pool // 2))
        self.stem = nn.Sequential(*stem)
        stages = []
        channels = widths[0]
        for i, (count, width) in enumerate(zip(blocks, widths)):
            layers = []
            for j in range(count):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(_BLOCKS[block](channels, width, stride=stride, shortcut=shortcut))
                channels = width * _BLOCKS[block].expansion
            stages.append(nn.Sequential(*layers))
        self.layers = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """The globally pooled features that ``fc`` reads."""
        if self.normalize is not None:
            x = self.normalize(x)
        return torch.flatten(self.avgpool(self.layers(self.stem(x))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.penultimate(x))


def cifar_resnet(depth: int = 20, in_channels: int = 3, num_classes: int = 10,
                 shortcut: str = "identity", **kwargs) -> ResNet:
    """He et al.'s CIFAR ResNet-n: n = 6k + 2, three stages of k blocks, 16/32/64 wide, with
    their option-A (zero-padded identity) shortcuts unless ``shortcut="projection"``.

    Args:
        depth: n = 6k + 2 (20, 32, 44, 56, ...).
        in_channels: input channels.
        num_classes: outputs.
        shortcut: "identity" (option A) or "projection" (option B).
        **kwargs: ``ResNet``'s other options.

    Returns:
        The network.

    Raises:
        ValueError: naming a ``depth`` that is not 6k + 2.

    Example:
        >>> net = cifar_resnet(8)
        >>> net(torch.rand(1, 3, 32, 32)).shape, sum(p.numel() for p in net.parameters())
        (torch.Size([1, 10]), 75290)
    """
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth: expected 6k + 2 with k >= 1 (20, 32, 44, 56, ...), got {depth}")
    k = (depth - 2) // 6
    return ResNet((k, k, k), (16, 32, 64), in_channels=in_channels, num_classes=num_classes,
                  shortcut=shortcut, **kwargs)


def resnet18_small(in_channels: int = 1, num_classes: int = 10, **kwargs) -> ResNet:
    """ResNet18's 2-2-2-2 basic blocks at a quarter of its width, for 28x28 inputs.

    Args:
        in_channels: input channels.
        num_classes: outputs.
        **kwargs: ``ResNet``'s other options.

    Returns:
        The network.

    Example:
        >>> resnet18_small()(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    return ResNet((2, 2, 2, 2), (16, 32, 64, 128), in_channels=in_channels,
                  num_classes=num_classes, **kwargs)
