"""Models used by the chapters, in the plain style of torchvision's model files.

Every model takes images in [0, 1]; a model that needs input normalisation does it
itself, so that an all-zero (black) input is a meaningful attribution baseline.

Each architecture has a class (``AlexNet``, ``VGG``, ``ResNet``, ``ThreeBlockCNN``) and named
builders for the configurations the chapters use, in torchvision's style (``vgg.cfgs`` holds
the VGG layouts): ``small_network(name)`` and ``imagenet.imagenet_network(name)`` for
chapter 2's three ``NETWORKS``, ``cifar_resnet(depth)`` for chapter 4 and
``rf_model(arch, level)`` for chapter 3's receptive-field variants (``RF_ARCHITECTURES``).
"""

from .alexnet import AlexNet, alexnet_small
from .cnn import ThreeBlockCNN
from .efficientnet import efficientnet_lite0
from .resnet import ResNet, cifar_resnet, resnet18_small
from .rfpool import RF_ARCHITECTURES, check_rf_variants, rf_model, rf_pool_of
from .small import NETWORKS, small_network
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
    "NETWORKS",
    "small_network",
    "rf_model",
    "rf_pool_of",
    "RF_ARCHITECTURES",
    "check_rf_variants",
]
