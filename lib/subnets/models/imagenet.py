"""Islam and Tushar's networks (chapter 2) at ImageNet size: torchvision's AlexNet, VGG11 (no batch
norm, 7x7 average pool, three fully connected layers) and ResNet18 (7x7 stride-2 stem and max-pool),
each behind ImageNet input normalisation so that it takes images in [0, 1] (``ImageNetModel``,
which ``efficientnet_lite0`` shares).
ImageNet weights come from a local file in torchvision's format when the reader has
one (``load_imagenet_weights``); nothing is downloaded.

ResNet18's blocks get a second ReLU module for the block output: torchvision's
``BasicBlock`` calls one ``relu`` twice, so a hook on it could not tell the unit after the
first conv from the block output. The state dict is torchvision's, name for name.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import alexnet, vgg11
from torchvision.models.resnet import BasicBlock, ResNet

from ..data import data_path
from ..devices import model_device
from ..weights import weights_file
from .inputs import IMAGENET_MEAN, IMAGENET_STD, Normalize, imagenet_statistics
from .small import NETWORKS, small_network

__all__ = ["imagenet_network", "load_imagenet_weights", "NETWORKS", "ImageNetModel", "SCALES",
           "scaled_network"]


class ImageNetModel(nn.Module):
    """``normalize`` then ``net``: a network trained on normalised ImageNet inputs that
    takes images in [0, 1], so that a black image is a meaningful attribution baseline.

    Args:
        net: the network, reading normalised images.
        mean: per-channel mean of its inputs (ImageNet's by default).
        std: per-channel standard deviation of its inputs.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = ImageNetModel(nn.Identity())
        >>> model(torch.full((1, 3, 1, 1), 0.485)).flatten().tolist()[0]
        0.0
        >>> [name for name, _ in model.named_children()]
        ['normalize', 'net']
    """

    def __init__(self, net: nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


class _Block(BasicBlock):
    """torchvision's basic block with the output ReLU as a module of its own."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.relu_out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu_out(out + identity)


def _first_conv(net: nn.Module) -> tuple[nn.Module, str]:
    """The module holding the first conv and the conv's attribute name."""
    for name, module in net.named_modules():
        for child, m in module.named_children():
            if isinstance(m, nn.Conv2d):
                return module, child
    raise ValueError("network has no conv")


def imagenet_network(name: str, in_channels: int = 3, num_classes: int = 1000) -> ImageNetModel:
    """torchvision's ``name`` (one of ``NETWORKS``) with ``num_classes`` outputs, behind
    ImageNet normalisation (grey inputs: the mean of the three channels' statistics, and
    a first conv with ``in_channels`` inputs).

    Args:
        name: one of ``NETWORKS``.
        in_channels: 3, or 1 for grey images.
        num_classes: outputs.

    Returns:
        The ``ImageNetModel``, freshly initialised (``load_imagenet_weights`` loads
        weights).

    Raises:
        ValueError: naming ``network`` or ``in_channels``.

    Example:
        >>> net = imagenet_network("resnet18", in_channels=1, num_classes=10)
        >>> net.net.conv1.in_channels, net.net.fc.out_features, net.normalize.mean.flatten()
        (1, 10, tensor([0.4490]))
    """
    if name not in NETWORKS:
        raise ValueError(f"network: expected one of {NETWORKS}, got {name!r}")
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels: expected 1 or 3, got {in_channels}")
    if name == "resnet18":
        net = ResNet(_Block, [2, 2, 2, 2], num_classes=num_classes)
    else:
        net = {"alexnet": alexnet, "vgg11": vgg11}[name](weights=None, num_classes=num_classes)
    if in_channels == 1:
        parent, child = _first_conv(net)
        old = getattr(parent, child)
        setattr(parent, child, nn.Conv2d(1, old.out_channels, old.kernel_size, old.stride,
                                         old.padding, bias=old.bias is not None))
    return ImageNetModel(net, *imagenet_statistics(in_channels))


def load_imagenet_weights(model: ImageNetModel, path: str | Path) -> ImageNetModel:
    """Load a torchvision state dict (``alexnet-owt-*.pth``, ``vgg11-*.pth``,
    ``resnet18-*.pth``) into ``model.net`` by name. Tensors whose shapes differ (the
    1000-class output layer of a ten-class network) keep their fresh initialisation; a
    grey first conv gets the sum of the colour kernels; any other missing or unexpected
    name is an error.

    Args:
        model: an ``imagenet_network``.
        path: the state dict's file (relative: in the data folder).

    Returns:
        ``model``, its weights loaded.

    Raises:
        FileNotFoundError: naming a missing file.
        ValueError: when the file's names do not fit the network.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "colour.pth"
        >>> torch.save({"weight": torch.ones(2, 3, 1, 1), "bias": torch.zeros(2)}, path)
        >>> grey = ImageNetModel(nn.Conv2d(1, 2, 1), (0.5,), (0.25,))
        >>> load_imagenet_weights(grey, path).net.weight.flatten().tolist()
        [3.0, 3.0]
    """
    path = data_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"imagenet_weights: {path} is not a file")
    state = torch.load(path, map_location=model_device(model), weights_only=True)
    own = model.net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"imagenet_weights: {path.name} does not fit {type(model.net).__name__}: "
                         f"missing {missing[:4]}, unexpected {unexpected[:4]}")
    kept = {k: v for k, v in state.items() if v.shape == own[k].shape}
    for k, v in state.items():
        if v.ndim == 4 and own[k].shape == (v.shape[0], 1, *v.shape[2:]):
            kept[k] = v.sum(1, keepdim=True)  # a grey image is three equal channels
    model.net.load_state_dict({**own, **kept})
    return model


SCALES = ("small", "full")


def scaled_network(name: str, scale: str = "small", in_channels: int = 1, num_classes: int = 10,
                   weights: str = "") -> nn.Module:
    """Chapter 2's network ``name`` at ``scale``: ``small_network`` ("small", for 28 x 28
    inputs on a CPU) or ``imagenet_network`` ("full", torchvision's), the latter with
    torchvision's ImageNet weights from ``weights`` ("": none, a fresh initialisation).

    Args:
        name: one of ``NETWORKS``.
        scale: one of ``SCALES``.
        in_channels: 1 (grey) or 3.
        num_classes: outputs.
        weights: torchvision's checkpoint of this network, a file or a URL with its SHA-256
            prefix in the name (``weights.weights_file``; "full" only).

    Returns:
        The network, on the CPU.

    Example:
        >>> scaled_network("alexnet", "small", 1, 10)(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    if scale not in SCALES:
        raise ValueError(f"network_scale: expected one of {SCALES}, got {scale!r}")
    if weights and scale != "full":
        raise ValueError(f"weights[{name}]: ImageNet weights fit only network_scale='full'")
    if scale == "small":
        return small_network(name, in_channels, num_classes)
    net = imagenet_network(name, in_channels, num_classes)
    if weights:
        net = load_imagenet_weights(net, weights_file(weights, parameter=f"weights[{name}]"))
    return net
