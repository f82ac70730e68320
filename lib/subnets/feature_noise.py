"""Are a class's influential features essential? Chapter 4's Gaussian-noise ablation
(Section 5.2.6, Table 8 of "Decomposing the Deep"): the penultimate features of each test
image's class are replaced by noise, the influential ones, all the others or as many
random others, and the full final layer classifies the result.

The paper names neither the class whose features are replaced nor the noise; the authors'
code replaces the image's true class's features by N(0, 1) draws ("standard" noise). The
"feature" noise draws each feature from its own training mean and standard deviation, so
that a replaced feature keeps its typical scale and loses its information.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import metrics
from .influence import (
    InfluentialFeatures,
    PenultimateFeatures,
    layer_correct,
    non_influential_indices,
)

__all__ = ["NOISES", "NoiseAblation", "noise_ablation", "noised_features"]

# "feature": N(mean_j, std_j) of each feature on the training set; "standard": N(0, 1), as
# the authors' code draws it.
NOISES = ("feature", "standard")


def noised_features(features: torch.Tensor, labels: torch.Tensor, replace: torch.Tensor,
                    mean: torch.Tensor, std: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A copy of ``features`` with each instance's features ``replace[label]`` drawn anew.

    Args:
        features: N x D penultimate features.
        labels: N labels (which row of ``replace`` each instance takes).
        replace: C x D booleans, the features to replace per class.
        mean: the noise's mean, per feature (D) or one number.
        std: the noise's standard deviation, per feature (D) or one number.
        seed: the draws' seed; the same seed gives the same draws, so that two masks are
            compared on the same noise.

    Returns:
        N x D features, the replaced ones drawn from N(mean_j, std_j).

    Example:
        >>> f = torch.ones(2, 3)
        >>> replace = torch.tensor([[True, False, False], [False, False, False]])
        >>> noised_features(f, torch.tensor([0, 1]), replace, torch.zeros(()),
        ...                 torch.zeros(()))
        tensor([[0., 1., 1.],
                [1., 1., 1.]])
    """
    PenultimateFeatures(features, labels)  # checks the shapes
    if replace.dtype != torch.bool or replace.shape[1] != features.shape[1]:
        raise ValueError(f"replace: expected a C x {features.shape[1]} boolean mask")
    g = torch.Generator().manual_seed(seed)
    noise = mean + std * torch.randn(features.shape, generator=g)
    return torch.where(replace[labels], noise, features)


@dataclass
class NoiseAblation:
    """Per test instance (1.0 right, 0.0 wrong), the full final layer on its features as
    they are and with noise in three places (Section 5.2.6).

    Args:
        original: the features as they are.
        influential: its class's influential features replaced.
        non_influential: all its other features replaced.
        as_many_others: as many (``k2``) random others replaced.

    Example:
        >>> hits = NoiseAblation(original=torch.tensor([1.0, 1.0]),
        ...                      influential=torch.tensor([0.0, 1.0]),
        ...                      non_influential=torch.tensor([1.0, 1.0]),
        ...                      as_many_others=torch.tensor([1.0, 0.0]))
        >>> hits.accuracies()
        {'original': 1.0, 'influential': 0.5, 'non_influential': 1.0, 'as_many_others': 0.5}
    """

    original: torch.Tensor
    influential: torch.Tensor
    non_influential: torch.Tensor
    as_many_others: torch.Tensor

    def accuracies(self) -> dict[str, float]:
        """The accuracy of each condition, by its field's name."""
        return {name: value.mean().item() for name, value in vars(self).items()}


@torch.no_grad()
def noise_ablation(fc: nn.Linear, train: PenultimateFeatures, test: PenultimateFeatures,
                   influential: InfluentialFeatures, seed: int = 0,
                   noise: str = "feature") -> NoiseAblation:
    """The full final layer on ``test`` features of which the features of the instance's
    (true) class are replaced by Gaussian noise: the ``influential`` ones, all the others
    (D - k2), or ``k2`` random others (``influence.non_influential_indices``).

    Args:
        fc: the final layer.
        train: training features (the "feature" noise's means and deviations).
        test: the features to replace and classify.
        influential: the classes' influential sets.
        seed: the draws' seed, and the random others'.
        noise: one of ``NOISES``: "feature", each feature's mean and standard deviation
            on ``train``; "standard", N(0, 1) (the authors' code).

    Returns:
        ``NoiseAblation``, on the CPU.

    Example:
        >>> from subnets.influence import InfluentialFeatures
        >>> fc = nn.Linear(4, 2)
        >>> with torch.no_grad():
        ...     _ = fc.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
        ...     _ = fc.bias.zero_()
        >>> f = PenultimateFeatures(torch.eye(4)[:2] * 5, torch.tensor([0, 1]))
        >>> sets = InfluentialFeatures(indices=torch.tensor([[0], [1]]),
        ...                            histograms=torch.zeros(2, 4), k1=1, k2=1)
        >>> noise_ablation(fc, f, f, sets).as_many_others.tolist()  # fc ignores the others
        [1.0, 1.0]
    """
    if noise not in NOISES:
        raise ValueError(f"noise: expected one of {NOISES}, got {noise!r}")
    mean, std = ((train.features.mean(0), train.features.std(0)) if noise == "feature"
                 else (torch.zeros(()), torch.ones(())))
    x, y = test.features, test.labels
    mask = influential.mask()
    as_many = metrics.index_mask(non_influential_indices(influential, seed), influential.dim)

    def hits(features: torch.Tensor) -> torch.Tensor:
        return layer_correct(fc, PenultimateFeatures(features, y))

    return NoiseAblation(
        original=hits(x),
        influential=hits(noised_features(x, y, mask, mean, std, seed)),
        non_influential=hits(noised_features(x, y, ~mask, mean, std, seed)),
        as_many_others=hits(noised_features(x, y, as_many, mean, std, seed)))
