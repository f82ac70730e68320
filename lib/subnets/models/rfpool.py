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
    """(kernel, stride) of the receptive-field pool at ``level`` (0: no pool)."""
    if not isinstance(level, int) or level < 0:
        raise ValueError(f"level: expected an integer >= 0, got {level!r}")
    return (level + 1, level) if level else (1, 1)


def _scaled(cfg: tuple[int | str, ...], width: int) -> tuple[int | str, ...]:
    """A VGG layout written at width 64 with its first conv ``width`` wide."""
    return tuple(c if c == "M" else c * width // 64 for c in cfg)


def vgg19_rf(level: int, in_channels: int = 3, num_classes: int = 10, width: int = 64) -> VGG:
    """The paper's VGG (VGG19 layout, ``vgg.cfgs["vgg19_rf"]``) at receptive-field ``level``;
    ``width`` scales the channels (64: the paper's, 16: a sixteenth of its parameters)."""
    kernel, stride = rf_pool_of(level)
    return torchvision_init(VGG(_scaled(cfgs["vgg19_rf"], width), in_channels, num_classes,
                                rf_pool=kernel, rf_pool_stride=stride))


def resnet50_rf(level: int, in_channels: int = 3, num_classes: int = 10,
                width: int = 64) -> ResNet:
    """A CIFAR-style ResNet50 (3x3 stem, bottlenecks 3-4-6-3) at receptive-field
    ``level``, its stages ``width``, 2x, 4x, 8x wide (64: the paper's)."""
    kernel, stride = rf_pool_of(level)
    return ResNet((3, 4, 6, 3), tuple(width * 2 ** i for i in range(4)), in_channels,
                  num_classes, rf_pool=kernel, rf_pool_stride=stride, block="bottleneck")


def vgg_small_rf(level: int, in_channels: int = 1, num_classes: int = 10, width: int = 8) -> VGG:
    """Six 3x3 convs (``width``, 2x, 4x wide; ``vgg.cfgs["vgg_small_rf"]``) with two 2x2
    pools: a 28x28 image still leaves a 1x1 map at level 4."""
    kernel, stride = rf_pool_of(level)
    return torchvision_init(VGG(_scaled(cfgs["vgg_small_rf"], width), in_channels, num_classes,
                                rf_pool=kernel, rf_pool_stride=stride))


def resnet_small_rf(level: int, in_channels: int = 1, num_classes: int = 10,
                    width: int = 8) -> ResNet:
    """A ResNet8 (one basic block per stage, ``width``, 2x, 4x wide) at receptive-field
    ``level``."""
    kernel, stride = rf_pool_of(level)
    return ResNet((1, 1, 1), (width, 2 * width, 4 * width), in_channels, num_classes,
                  rf_pool=kernel, rf_pool_stride=stride)


RF_ARCHITECTURES = {"vgg19": vgg19_rf, "resnet50": resnet50_rf, "vgg": vgg_small_rf,
                    "resnet": resnet_small_rf}


def rf_model(arch: str, level: int, in_channels: int = 3, num_classes: int = 10,
             width: int | None = None):
    """Architecture ``arch`` (one of ``RF_ARCHITECTURES``) at receptive-field ``level``;
    ``width`` is its first stage's channels (None: the architecture's own)."""
    check_rf_variants([arch], [level])
    if width is not None and (not isinstance(width, int) or width < 1):
        raise ValueError(f"width: expected an integer >= 1, got {width!r}")
    extra = {} if width is None else {"width": width}
    return RF_ARCHITECTURES[arch](level, in_channels=in_channels, num_classes=num_classes, **extra)


def check_rf_variants(architectures, levels) -> None:
    """A ``ValueError`` naming ``architectures`` or ``rf_levels`` unless every name is in
    ``RF_ARCHITECTURES`` and every level an integer >= 0 (cheap: builds nothing)."""
    unknown = [a for a in architectures if a not in RF_ARCHITECTURES]
    if unknown or not architectures:
        raise ValueError(f"architectures: expected names from {sorted(RF_ARCHITECTURES)}, "
                         f"got {list(architectures)}")
    bad = [level for level in levels if not isinstance(level, int) or level < 0]
    if bad or not levels:
        raise ValueError(f"rf_levels: expected integers >= 0, got {list(levels)}")


def check_input_size(architectures, levels, in_channels: int, image_size: int,
                     width: int | None = None) -> None:
    """A ``ValueError`` naming ``image_size`` if any variant's feature maps vanish on
    ``image_size``-square inputs (shapes only, on the meta device: no weights, no work)."""
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
    every conv, so that a deep VGG's output at initialisation hardly depends on its input."""
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
