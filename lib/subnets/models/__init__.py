"""Models used by the chapters, in the plain style of torchvision's model files.

Every model takes images in [0, 1]; a model that needs input normalisation does it
itself, so that an all-zero (black) input is a meaningful attribution baseline.
"""

from .alexnet import AlexNet, alexnet_small
from .cnn import ThreeBlockCNN
from .efficientnet import efficientnet_lite0
from .resnet import ResNet, cifar_resnet, resnet18_small
from .rfpool import RF_ARCHITECTURES, check_rf_variants, rf_model, rf_pool_of
from .vgg import VGG, vgg11_small

__all__ = [
    "AlexNet",
    "alexnet_small",
    "ThreeBlockCNN",
    "VGG",
    "vgg11_small",
    "ResNet",
    "cifar_resnet",
    "resnet18_small",
    "efficientnet_lite0",
    "rf_model",
    "rf_pool_of",
    "RF_ARCHITECTURES",
    "check_rf_variants",
]
