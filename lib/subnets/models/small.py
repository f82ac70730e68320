"""Islam and Tushar's three networks (chapter 2) by name, at the size the book trains on a CPU:
AlexNet, VGG11 and ResNet18 at about a quarter of their width for 28 x 28 inputs
(``models.imagenet`` builds the same ``NETWORKS`` at ImageNet size)."""

from torch import nn

from .alexnet import alexnet_small
from .resnet import resnet18_small
from .vgg import vgg11_small

__all__ = ["NETWORKS", "small_network"]

NETWORKS = ("alexnet", "vgg11", "resnet18")
_BUILDERS = {"alexnet": alexnet_small, "vgg11": vgg11_small, "resnet18": resnet18_small}


def small_network(name: str, in_channels: int = 1, num_classes: int = 10,
                  **kwargs) -> nn.Module:
    """Network ``name`` at its small size: ``alexnet_small``, ``vgg11_small`` or
    ``resnet18_small``.

    Args:
        name: one of ``NETWORKS``.
        in_channels: input channels.
        num_classes: outputs.
        **kwargs: passed on to the builder.

    Returns:
        The network.

    Raises:
        ValueError: naming a ``network`` not in ``NETWORKS``.

    Example:
        >>> type(small_network("vgg11")).__name__
        'VGG'
    """
    if name not in NETWORKS:
        raise ValueError(f"network: expected one of {NETWORKS}, got {name!r}")
    return _BUILDERS[name](in_channels=in_channels, num_classes=num_classes, **kwargs)
