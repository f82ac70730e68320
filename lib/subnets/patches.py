"""Image patches of selected neurons (Lengerich et al. 2017, chapter 5): the deconvnet box
of each neuron, the patches cut out of the images, where they lie against object masks,
and the paper's secondary classifier trained on them.

``selection_boxes`` projects every selected neuron to pixels with a deconvnet
(``attribution.Deconvnet``) and keeps the box of its support; ``patch_images`` cuts and
resizes the boxes of one metric's neurons; ``patch_table`` counts object pixels in each box
and ``box_chance`` gives the chance that a box of its size placed at random would hit the
object; ``patch_accuracy`` trains the secondary classifier on the patches of training
images and tests it on those of test images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from torch.utils.data import TensorDataset
from torchvision.ops import roi_align

from . import attribution, evaluation, hooks, train
from .models import VGG

__all__ = ["selection_boxes", "patch_images", "box_chance", "patch_table", "PatchAccuracy",
           "patch_accuracy"]


def _leading_part(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The part of ``model`` that computes layer ``name``, and the layer's name in it: for a
    VGG-style ``features`` sequence, the modules up to the layer (sharing their weights),
    so a deconvnet does not run the layers above it; otherwise the model itself."""
    features = getattr(model, "features", None)
    prefix = "features."
    if isinstance(features, nn.Sequential) and name.startswith(prefix) \
            and name[len(prefix):].isdigit():
        i = int(name[len(prefix):])
        return features[:i + 1], str(i)
    return model, name


def selection_boxes(model: nn.Module, masks: Mapping[str, torch.Tensor], inputs: torch.Tensor,
                    support_fraction: float = 0.1, batch_size: int = 256
                    ) -> dict[str, torch.Tensor]:
    """Patches of the selected neurons: for every layer, N x channels x 4 boxes (top,
    bottom, left, right; -1 for neurons no metric selected, or dead on that input) around
    the deconvnet projection of each neuron selected by any metric in ``masks`` (layer
    -> N x metrics x channels). The deconvnet starts at the ReLU after each conv (captum
    rectifies at ``nn.ReLU`` modules only).

    Args:
        model: the network.
        masks: conv layer -> N x metrics x channels selected neurons.
        inputs: the N images.
        support_fraction: the box holds the pixels whose projection exceeds this share of
            its maximum.
        batch_size: neurons projected per batch.

    Returns:
        Layer -> N x channels x 4 boxes (top, bottom, left, right), -1 where none.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU())
        >>> masks = {"0": torch.tensor([[[True, False]]])}
        >>> boxes = selection_boxes(net, masks, torch.rand(1, 1, 6, 6))
        >>> tuple(boxes["0"].shape), boxes["0"][0, 1].tolist()
        ((1, 2, 4), [-1, -1, -1, -1])
    """
    boxes = {}
    for layer, mask in masks.items():
        pairs = mask.any(1).nonzero()
        out = torch.full((*mask.shape[::2], 4), -1, dtype=torch.long)
        net, relu = _leading_part(model, hooks.activation_after(model, layer, kinds=(nn.ReLU,)))
        deconvnet = attribution.Deconvnet(net, relu)
        for chunk in pairs.split(batch_size):
            maps = deconvnet.attribute(inputs[chunk[:, 0]], channel=chunk[:, 1])
            out[chunk[:, 0], chunk[:, 1]] = attribution.support_boxes(maps, support_fraction)
        boxes[layer] = out
    return boxes




def patch_images(masks: Mapping[str, torch.Tensor], boxes: Mapping[str, torch.Tensor],
                 inputs: torch.Tensor, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The patches of one metric's selected neurons, cut from the inputs and resized.

    Args:
        masks: layer -> N x channels, the neurons one metric selected
            (``Selection.metric(name)``).
        boxes: layer -> N x channels x 4 boxes (top, bottom, left, right; -1: none), as in
            ``Selection.boxes``.
        inputs: the N images (N x C x H x W).
        size: side of the resized patches (bilinear, by ``torchvision.ops.roi_align``).

    Returns:
        The patches (P x C x size x size) and the index of the input each came from (P).
        Neurons without a box (dead on the input) give no patch.

    Example:
        >>> import torch
        >>> masks = {"conv": torch.tensor([[True, False]])}
        >>> boxes = {"conv": torch.tensor([[[0, 2, 0, 2], [-1, -1, -1, -1]]])}
        >>> cut, source = patch_images(masks, boxes, torch.ones(1, 1, 4, 4), size=3)
        >>> tuple(cut.shape), source.tolist()
        ((1, 1, 3, 3), [0])
    """
    rows = []
    for layer, mask in masks.items():
        picked = mask.nonzero()
        b = boxes[layer][picked[:, 0], picked[:, 1]]
        keep = b[:, 0] >= 0
        rows.append(torch.cat([picked[keep, :1], b[keep]], 1))
    rows = torch.cat(rows)
    # roi_align takes (image, x1, y1, x2, y2) in continuous pixel-edge coordinates.
    rois = rows[:, [0, 3, 1, 4, 2]].to(inputs.dtype)
    cut = roi_align(inputs, rois, output_size=size, spatial_scale=1.0, sampling_ratio=2,
                    aligned=True)
    return cut, rows[:, 0]


def _summed_area(objects: torch.Tensor) -> torch.Tensor:
    """N x (H + 1) x (W + 1) summed-area tables of N x 1 x H x W masks: any box's pixel
    count is four look-ups."""
    return nn.functional.pad(objects[:, 0].to(torch.long).cumsum(1).cumsum(2), (1, 0, 1, 0))


def box_chance(objects: torch.Tensor, image: torch.Tensor, height: torch.Tensor,
               width: torch.Tensor) -> torch.Tensor:
    """Per row: the probability that a ``height`` x ``width`` box placed uniformly at random
    inside image ``image[i]`` holds at least one pixel of its object mask (``objects``,
    N x 1 x H x W), the chance level of the paper's localisation test (NaN for an empty
    box).

    Args:
        objects: N x 1 x H x W object masks.
        image: the image of each box (rows).
        height, width: each box's size.

    Returns:
        One probability per row.

    Example:
        >>> objects = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
        >>> objects[0, 0, 0, 0] = True  # one corner pixel
        >>> box_chance(objects, torch.tensor([0, 0]), torch.tensor([1, 4]), torch.tensor([1, 4]))
        tensor([0.0625, 1.0000])
    """
    sat = _summed_area(objects)
    out = torch.full((len(image),), float("nan"))
    sizes, which = torch.stack([height, width], 1).unique(dim=0, return_inverse=True)
    for j, (h, w) in enumerate(sizes.tolist()):
        if h <= 0 or w <= 0:
            continue
        counts = sat[:, h:, w:] - sat[:, :-h, w:] - sat[:, h:, :-w] + sat[:, :-h, :-w]
        hit = (counts > 0).flatten(1).float().mean(1)
        rows = which == j
        out[rows] = hit[image[rows]]
    return out


def patch_table(masks: Mapping[str, torch.Tensor], boxes: Mapping[str, torch.Tensor],
                metrics: Sequence[str], objects: torch.Tensor | None = None) -> pd.DataFrame:
    """One row per selected (image, layer, neuron, metric): the patch's box, its area and,
    given object masks (N x 1 x H x W), the number of object pixels inside it and the
    chance that a box of its size at a random place would hold one (``box_chance``).

    Args:
        masks: layer -> N x metrics x channels selected neurons (a ``Selection``).
        boxes: layer -> N x channels x 4 boxes (-1: none; those rows are dropped).
        metrics: the names of the metrics' dimension.
        objects: N x 1 x H x W object masks, or None.

    Returns:
        A DataFrame: image, layer, metric, neuron, top, bottom, left, right, area (and
        object_pixels, chance with object masks).

    Example:
        >>> masks = {"conv": torch.tensor([[[True], [False]]])}
        >>> boxes = {"conv": torch.tensor([[[0, 2, 0, 2]]])}
        >>> patch_table(masks, boxes, ["a", "b"], torch.ones(1, 1, 4, 4, dtype=torch.bool)
        ...             )[["metric", "area", "object_pixels"]].values.tolist()
        [['a', 4, 4]]
    """
    frames = []
    if objects is not None:
        sat = _summed_area(objects)
    for layer, mask in masks.items():
        picked = mask.nonzero()
        img, met, ch = picked.unbind(1)
        b = boxes[layer][img, ch]
        top, bottom, left, right = b.unbind(1)
        frame = {"image": img, "layer": [layer] * len(img),
                 "metric": [metrics[i] for i in met.tolist()], "neuron": ch, "top": top,
                 "bottom": bottom, "left": left, "right": right,
                 "area": ((bottom - top) * (right - left)).clamp(min=0)}
        if objects is not None:
            t, bo, le, r = (v.clamp(min=0) for v in (top, bottom, left, right))
            frame["object_pixels"] = (sat[img, bo, r] - sat[img, t, r] - sat[img, bo, le]
                                      + sat[img, t, le])
            frame["chance"] = box_chance(objects, img, bottom - top, right - left)
        frames.append(pd.DataFrame({k: v.numpy() if isinstance(v, torch.Tensor) else v
                                    for k, v in frame.items()}))
    table = pd.concat(frames, ignore_index=True)
    return table[table["top"] >= 0].reset_index(drop=True)


@dataclass
class PatchAccuracy:
    """The secondary classifier's accuracy over all test patches, and per image (the share
    of an image's patches classified right; NaN for training images and images without
    a patch), for paired comparisons between metrics over the same test images.

    Args:
        accuracy: the share of test patches classified right.
        per_image: N, per input the share of its patches classified right (NaN: none).

    Example:
        >>> result = PatchAccuracy(0.75, torch.tensor([float("nan"), 1.0, 0.5]))
        >>> result.accuracy, result.per_image.nanmean().item()
        (0.75, 0.75)
    """

    accuracy: float
    per_image: torch.Tensor


def patch_accuracy(masks: Mapping[str, torch.Tensor], boxes: Mapping[str, torch.Tensor],
                   inputs: torch.Tensor, target: torch.Tensor, train_images: torch.Tensor,
                   size: int = 16, width: int = 64, epochs: int = 10, seed: int = 0,
                   precision: str = "fp32") -> PatchAccuracy:
    """The paper's secondary classifier: trained on the patches of the neurons in ``masks``
    (layer -> N x channels: one metric's selection, ``Selection.metric(name)``) in the
    inputs flagged by ``train_images`` (each patch labelled with its input's class in
    ``target``), tested on the patches of the other inputs. Three 3x3 conv layers of
    ``width`` channels with max-pooling in between (a ``VGG``), Adam in ``precision``
    (``train.TrainConfig``), cached by ``train.fit``; on the inputs' device.

    Args:
        masks: layer -> N x channels, one metric's selected neurons.
        boxes: layer -> N x channels x 4 boxes.
        inputs: the N images; target: their N classes.
        train_images: N flags: the images whose patches train the classifier.
        size: side of the resized patches.
        width: channels of the classifier's three conv layers.
        epochs, seed, precision: its training.

    Returns:
        A ``PatchAccuracy``: over all test patches and per test image.

    Example:
        >>> masks = {"conv": torch.ones(4, 1, dtype=torch.bool)}  # one neuron per image
        >>> boxes = {"conv": torch.tensor([[[0, 8, 0, 8]]] * 4)}  # its box: the whole image
        >>> result = patch_accuracy(masks, boxes, torch.rand(4, 1, 8, 8), torch.tensor(
        ...     [0, 1, 0, 1]), torch.tensor([True, True, False, False]), size=4, width=2,
        ...     epochs=1)
        >>> result.per_image.isnan().tolist()  # training images have no test patch
        [True, True, False, False]
    """
    cut, source = patch_images(masks, boxes, inputs, size)
    is_train = train_images[source]
    if not is_train.any() or is_train.all():
        raise ValueError("train_images: the secondary classifier needs patches of training "
                         "and of test images")
    patch_labels = target[source]
    with train.seeded(seed):
        model = VGG((width, "M", width, "M", width), in_channels=inputs.shape[1],
                    num_classes=int(target.max()) + 1).to(inputs.device)
    config = train.TrainConfig(epochs=epochs, batch_size=64, lr=1e-3, seed=seed,
                               precision=precision)
    trained = train.fit(model, TensorDataset(cut[is_train], patch_labels[is_train]), config,
                        desc="patch classifier")
    test = TensorDataset(cut[~is_train], patch_labels[~is_train])
    predictions = evaluation.evaluate(trained.model, test).predictions
    right = (predictions == patch_labels[~is_train]).float()
    per_image = torch.full((len(inputs),), float("nan"))
    counts = torch.zeros(len(inputs)).index_add_(0, source[~is_train], torch.ones(len(right)))
    sums = torch.zeros(len(inputs)).index_add_(0, source[~is_train], right)
    has = counts > 0
    per_image[has] = sums[has] / counts[has]
    return PatchAccuracy(right.mean().item(), per_image)


