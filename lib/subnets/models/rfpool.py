"""Avendaño Muñoz's receptive-field variants (chapter 3): VGG- and ResNet-style networks that differ
only in the max-pool right after the first conv (no parameters, so every variant of an architecture
has the same parameter count).

Level ``s`` is a pool of kernel ``s + 1`` and stride ``s``; level 0 is no pool. The
paper's text says only the kernel changes, but its receptive-field column
(VGG 181/359/537/715, ResNet50 213/318/423) follows from the layer arithmetic only when
the stride grows with the kernel (kernel s + 1, stride s, s = 1..4), and its conclusion
notes that the feature maps shrank with the receptive field, which a stride-1 pool would
not do. ``subnets.receptive`` reproduces the column from these configurations.

Both architectures are initialised as torchvision initialises its VGG and ResNet
(``torchvision_init``; the ResNet does so itself).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import devices
from .resnet import ResNet
from .vgg import VGG, cfgs

__all__ = ["RF_ARCHITECTURES", "rf_pool_of", "rf_model", "check_rf_variants", "check_input_size",
           "vgg19_rf", "resnet50_rf", "vgg_small_rf", "resnet_small_rf", "torchvision_init"]


def rf_pool_of(level: int) -> tuple[int, int]:
    """The receptive-field pool at ``level``: kernel ``level + 1``, stride ``level``.

    Args:
        level: an integer >= 0 (0: no pool).

    Returns:
        (kernel, stride); (1, 1) at level 0.

    Raises:
        ValueError: naming a bad ``level``.

    Example:
        >>> [rf_pool_of(level) for level in range(4)]
        [(1, 1), (2, 1), (3, 2), (4, 3)]
    """
    if not isinstance(level, int) or level < 0:
        raise ValueError(f"level: expected an integer >= 0, got {level!r}")
    return (level + 1, level) if level else (1, 1)


def _scaled(cfg: tuple[int | str, ...], width: int) -> tuple[int | str, ...]:
    """A VGG layout written at width 64 with its first conv ``width`` wide."""
    return tuple(c if c == "M" else c * width // 64 for c in cfg)


def vgg19_rf(level: int, in_channels: int = 3, num_classes: int = 10, width: int = 64) -> VGG:
    """The paper's VGG (VGG19 layout, ``vgg.cfgs["vgg19_rf"]``) at receptive-field ``level``.

    Args:
        level: the receptive-field level (``rf_pool_of``).
        in_channels: input channels.
        num_classes: outputs.
        width: the first conv's channels (64: the paper's, 16: a sixteenth of its
            parameters).

    Returns:
        The network, initialised as torchvision's VGG.

    Example:
        >>> vgg19_rf(2, width=4)(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 10])
    """
    kernel, stride = rf_pool_of(level)
    return torchvision_init(VGG(_scaled(cfgs["vgg19_rf"], width), in_channels, num_classes,
                                rf_pool=kernel, rf_pool_stride=stride))


def resnet50_rf(level: int, in_channels: int = 3, num_classes: int = 10,
                width: int = 64) -> ResNet:
    """A CIFAR-style ResNet50 (3x3 stem, bottlenecks 3-4-6-3) at receptive-field
    ``level``.

    Args:
        level: the receptive-field level (``rf_pool_of``).
        in_channels: input channels.
        num_classes: outputs.
        width: the first stage's width; the others 2x, 4x, 8x (64: the paper's).

    Returns:
        The network.

    Example:
        >>> resnet50_rf(1, width=4).fc.in_features
        128
    """
    kernel, stride = rf_pool_of(level)
    return ResNet((3, 4, 6, 3), tuple(width * 2 ** i for i in range(4)), in_channels,
                  num_classes, rf_pool=kernel, rf_pool_stride=stride, block="bottleneck")


def vgg_small_rf(level: int, in_channels: int = 1, num_classes: int = 10, width: int = 8) -> VGG:
    """Six 3x3 convs (``width``, 2x, 4x wide; ``vgg.cfgs["vgg_small_rf"]``) with two 2x2
    pools: a 28x28 image still leaves a 1x1 map at level 4.

    Args:
        level: the receptive-field level (``rf_pool_of``).
        in_channels: input channels.
        num_classes: outputs.
        width: the first conv's channels.

    Returns:
        The network, initialised as torchvision's VGG.

    Example:
        >>> vgg_small_rf(4).eval()(torch.rand(1, 1, 28, 28)).shape
        torch.Size([1, 10])
    """
    kernel, stride = rf_pool_of(level)
    return torchvision_init(VGG(_scaled(cfgs["vgg_small_rf"], width), in_channels, num_classes,
                                rf_pool=kernel, rf_pool_stride=stride))


def resnet_small_rf(level: int, in_channels: int = 1, num_classes: int = 10,
                    width: int = 8) -> ResNet:
    """A ResNet8 (one basic block per stage, ``width``, 2x, 4x wide) at receptive-field
    ``level``.

    Args:
        level: the receptive-field level (``rf_pool_of``).
        in_channels: input channels.
        num_classes: outputs.
        width: the first stage's width.

    Returns:
        The network.

    Example:
        >>> resnet_small_rf(3).stem[-1]
        MaxPool2d(kernel_size=4, stride=3, padding=2, dilation=1, ceil_mode=False)
    """
    kernel, stride = rf_pool_of(level)
    return ResNet((1, 1, 1), (width, 2 * width, 4 * width), in_channels, num_classes,
                  rf_pool=kernel, rf_pool_stride=stride)


RF_ARCHITECTURES = {"vgg19": vgg19_rf, "resnet50": resnet50_rf, "vgg": vgg_small_rf,
                    "resnet": resnet_small_rf}


def rf_model(arch: str, level: int, in_channels: int = 3, num_classes: int = 10,
             width: int | None = None):
    """Architecture ``arch`` at receptive-field ``level``.

    Args:
        arch: one of ``RF_ARCHITECTURES``.
        level: the receptive-field level (``rf_pool_of``).
        in_channels: input channels.
        num_classes: outputs.
        width: its first stage's channels (None: the architecture's own).

    Returns:
        The network.

    Raises:
        ValueError: naming ``architectures``, ``rf_levels`` or ``width``.

    Example:
        >>> type(rf_model("vgg", 2, in_channels=1)).__name__
        'VGG'
    """
    check_rf_variants([arch], [level])
    if width is not None and (not isinstance(width, int) or width < 1):
        raise ValueError(f"width: expected an integer >= 1, got {width!r}")
    extra = {} if width is None else {"width": width}
    return RF_ARCHITECTURES[arch](level, in_channels=in_channels, num_classes=num_classes, **extra)


def check_rf_variants(architectures, levels) -> None:
    """Check the receptive-field variants asked for, before any work (builds nothing).

    Args:
        architectures: names that must be in ``RF_ARCHITECTURES``.
        levels: levels that must be integers >= 0.

    Raises:
        ValueError: naming ``architectures`` or ``rf_levels``.

    Example:
        >>> check_rf_variants(["vgg", "resnet"], [0, 1, 2])
        >>> check_rf_variants(["vgg"], [-1])
        Traceback (most recent call last):
        ...
        ValueError: rf_levels: expected integers >= 0, got [-1]
    """
    unknown = [a for a in architectures if a not in RF_ARCHITECTURES]
    if unknown or not architectures:
        raise ValueError(f"architectures: expected names from {sorted(RF_ARCHITECTURES)}, "
                         f"got {list(architectures)}")
    bad = [level for level in levels if not isinstance(level, int) or level < 0]
    if bad or not levels:
        raise ValueError(f"rf_levels: expected integers >= 0, got {list(levels)}")


def check_input_size(architectures, levels, in_channels: int, image_size: int,
                     width: int | None = None) -> None:
    """Check that every variant leaves a feature map on ``image_size``-square inputs
    (shapes only, on the meta device: no weights, no work).

    Args:
        architectures: names in ``RF_ARCHITECTURES``.
        levels: receptive-field levels.
        in_channels: input channels.
        image_size: the inputs' side.
        width: the first stage's channels (None: each architecture's own).

    Raises:
        ValueError: naming ``image_size`` where a variant's maps vanish.

    Example:
        >>> check_input_size(["vgg"], [4], 1, 28)
        >>> check_input_size(["vgg"], [4], 1, 8)
        Traceback (most recent call last):
        ...
        ValueError: image_size: 8x8 images leave no feature map in vgg at rf level 4; ...
    """
    for arch in architectures:
        for level in levels:
            with devices.META:
                model = rf_model(arch, level, in_channels, 2, width).eval()
                try:
                    model(torch.empty(1, in_channels, image_size, image_size))
                except RuntimeError:
                    raise ValueError(f"image_size: {image_size}x{image_size} images leave no "
                                     f"feature map in {arch} at rf level {level}; use larger "
                                     "images or lower levels") from None


def torchvision_init(model: nn.Module) -> nn.Module:
    """Initialise ``model`` in place as torchvision's VGG does: convs Kaiming-normal
    (fan out, ReLU gain) with zero bias, batch norm weight 1 and bias 0, linear layers
    N(0, 0.01) with zero bias. PyTorch's default initialisation shrinks the signal at
    every conv, so that a deep VGG's output at initialisation hardly depends on its input.

    Args:
        model: the network; changed in place.

    Returns:
        ``model``.

    Example:
        >>> net = torchvision_init(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(2, 2)))
        >>> net[0].bias.abs().sum().item(), net[1].bias.abs().sum().item()
        (0.0, 0.0)
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
    return model
