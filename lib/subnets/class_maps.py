"""What the influential channels look at (chapter 4, Section 5.2.5, Table 7 of
"Decomposing the Deep"): for a test image of class c, the mean last-conv map of its
class's influential channels, upsampled to the image, beside the mean map of as many
non-influential channels and of all channels; and, where the data have foreground masks
(Fashion-MNIST's objects sit on black), the share of each map's mass on the object, which
the paper reads by eye.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import nn

from . import hooks, influence, upsampling
from .decomposition import ResNetStudy
from .influence import InfluentialFeatures, PenultimateFeatures

__all__ = ["class_channel_maps", "map_mass_on_object", "influential_maps", "object_gains",
           "object_share_table", "channel_maps"]


def class_channel_maps(model: nn.Module, layer: str, images: torch.Tensor,
                       labels: torch.Tensor, influential: InfluentialFeatures,
                       others: torch.Tensor) -> dict[str, torch.Tensor]:
    """Table 7's maps of ``images``: per image, the ``channel_maps`` of the output of
    ``model``'s ``layer`` (the last conv maps, whose spatial means are the penultimate
    features) over all its channels, over its class's influential channels and over its
    class's row of ``others`` (C x k channels: ``influence.non_influential_indices``).

    Args:
        model: the network.
        layer: its last conv stage (a CIFAR ResNet's ``layers``).
        images: N x C x H x W images.
        labels: their N labels (which class's channels each map averages).
        influential: the classes' influential sets (channels of ``layer``).
        others: C x k other channels per class.

    Returns:
        N x 1 x H x W maps by channel set ("all channels", "influential", "non-influential").

    Example:
        >>> from subnets.decomposition import seeded_resnet
        >>> sets = InfluentialFeatures(indices=torch.tensor([[0], [1]]),
        ...                            histograms=torch.zeros(2, 64), k1=1, k2=1)
        >>> maps = class_channel_maps(seeded_resnet(8, 0, 1, 2), "layers",
        ...                           torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 0]), sets,
        ...                           influence.non_influential_indices(sets))
        >>> maps["influential"].shape
        torch.Size([3, 1, 8, 8])
    """
    maps = hooks.activations(model, images, [layer])[layer]
    n, size = len(images), tuple(images.shape[-2:])
    channel_sets = {"all channels": torch.arange(maps.shape[1]).expand(n, -1),
                    "influential": influential.indices[labels], "non-influential": others[labels]}
    return {name: channel_maps(maps, channels, size)
            for name, channels in channel_sets.items()}


def map_mass_on_object(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per map (N x ... ), the share of its (non-negative) mass on the foreground ``masks``
    (the same shape); NaN for an all-zero map.

    Args:
        maps: N x ... maps (negative values count as 0).
        masks: N x ... booleans, True on the object.

    Returns:
        N shares, in [0, 1] or NaN.

    Example:
        >>> maps = torch.tensor([[[1.0, 3.0]], [[0.0, 0.0]]])
        >>> map_mass_on_object(maps, torch.tensor([[[False, True]], [[False, True]]]))
        tensor([0.7500,    nan])
    """
    mass = maps.clamp_min(0).flatten(1)
    inside = (mass * masks.flatten(1).to(mass)).sum(1)
    total = mass.sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-12), torch.full_like(total, math.nan))


def influential_maps(net: nn.Module, train_features: PenultimateFeatures,
                     images: torch.Tensor, labels: torch.Tensor, k1: int, k2: int,
                     seed: int) -> dict[str, torch.Tensor]:
    """Table 7's maps of one network: ``class_channel_maps`` of its last conv
    stage (``layers``) with its influential sets and ``k2`` random others per class.

    Args:
        net: a CIFAR ResNet.
        train_features: its penultimate training features (to find its sets).
        images: the images to map.
        labels: their labels (which class's channels each map averages).
        k1: top features per instance.
        k2: features kept per class.
        seed: draws the non-influential channels.

    Returns:
        The maps, by channel set ("all channels", "influential", "non-influential").

    Example:
        >>> from subnets.decomposition import seeded_resnet
        >>> net, images = seeded_resnet(8, 0, 1, 2), torch.rand(4, 1, 8, 8)
        >>> f = PenultimateFeatures(net.penultimate(images).detach(), torch.tensor([0, 1] * 2))
        >>> maps = influential_maps(net, f, images, f.labels, k1=2, k2=2, seed=0)
        >>> sorted(maps), maps["influential"].shape
        (['all channels', 'influential', 'non-influential'], torch.Size([4, 1, 8, 8]))
    """
    sets = influence.InfluentialFeatureSelection(net, k1=k1, k2=k2).select(train_features)
    return class_channel_maps(net, "layers", images, labels, sets,
                                        influence.non_influential_indices(sets, seed))


def object_gains(study: ResNetStudy, depth: int, images: torch.Tensor, labels: torch.Tensor,
                 masks: torch.Tensor | None, k1: int, k2: int) -> pd.Series:
    """Per seed's ResNet-``depth``, trained and placebo: the mean over ``images`` of the
    share of its influential channels' map on the object minus that of as many
    non-influential channels (``map_mass_on_object``).

    Args:
        study: the networks.
        depth: the depth.
        images: the images to map.
        labels: their labels.
        masks: their foreground masks; None (no masks): every gain is NaN.
        k1: top features per instance.
        k2: features kept per class.

    Returns:
        The gains, indexed (network, seed).

    Example:
        >>> from subnets import data, train
        >>> from subnets.decomposition import resnet_study
        >>> tiny = data.ImageSet(torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8),
        ...                      torch.arange(8) % 2, ["a", "b"], "tiny")
        >>> study = resnet_study(tiny, tiny, train.TrainConfig(), [8], [0], placebo=True)
        >>> images, labels = tiny.tensors()
        >>> bool(object_gains(study, 8, images, labels, None, 2, 2).isna().all())  # no masks
        True
    """
    def gain(n: nn.Module, f: dict, s: int, _untrained: bool) -> float:
        if masks is None:
            return float("nan")
        maps = influential_maps(n, f["train"], images, labels, k1, k2, s)
        return (map_mass_on_object(maps["influential"], masks)
                - map_mass_on_object(maps["non-influential"], masks)).nanmean().item()

    return pd.Series(study.per_seed(gain, depth)).rename_axis(["network", "seed"])


def object_share_table(maps: dict[str, torch.Tensor], masks: torch.Tensor,
                       labels: torch.Tensor, classes: list[str]) -> pd.DataFrame:
    """Per class, the mean share of each map's mass on the object
    (``map_mass_on_object``), beside the object's share of the image (what a map
    spread evenly would score), with the mean over all images as the last column.

    Args:
        maps: per channel set, N x 1 x H x W maps (``influential_maps``).
        masks: the images' N x H x W (or N x 1 x H x W) foreground masks.
        labels: the images' labels.
        classes: the class names.

    Returns:
        One row per map (and "object's share of the image"), one column per class present
        and "mean".

    Example:
        >>> masks = torch.zeros(2, 1, 2, 2, dtype=torch.bool)
        >>> masks[:, :, 0, 0] = True
        >>> maps = {"all channels": torch.ones(2, 1, 2, 2)}
        >>> object_share_table(maps, masks, torch.tensor([0, 1]), ["a", "b"]).loc[
        ...     "all channels"].tolist()
        [0.25, 0.25, 0.25]
    """
    shares = pd.DataFrame({name: map_mass_on_object(m, masks).numpy()
                           for name, m in maps.items()})
    shares["object's share of the image"] = masks.flatten(1).float().mean(1).numpy()
    overall = shares.mean()
    shares["class"] = [classes[c] for c in labels.tolist()]
    return shares.groupby("class").mean().T.assign(mean=overall)


def channel_maps(maps: torch.Tensor, channels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """N x 1 x H x W: per image the mean of its ``channels`` (N x k) of the last conv
    layer's ``maps`` (N x K x h x w), bilinearly upsampled to ``size``.

    Args:
        maps: N x K x h x w activation maps of the last conv layer.
        channels: N x k channel indices, one row per map (its class's set, say).
        size: (H, W), the size of the images the maps are drawn over.

    Returns:
        N x 1 x H x W mean maps.

    Example:
        >>> maps = torch.arange(8.0).view(1, 2, 2, 2)  # channel 0: 0..3, channel 1: 4..7
        >>> channel_maps(maps, torch.tensor([[0, 1]]), (2, 2))
        tensor([[[[2., 3.],
                  [4., 5.]]]])
    """
    if channels.shape[0] != maps.shape[0]:
        raise ValueError(f"channels: expected one row per map ({maps.shape[0]}), "
                         f"got {channels.shape[0]}")
    channels = channels.to(maps.device)
    picked = maps.gather(1, channels[:, :, None, None].expand(-1, -1, *maps.shape[2:]))
    return upsampling.bilinear(picked.mean(1, keepdim=True), size)
