"""Class-specific influential features of the final layer (chapter 4: "Decomposing the
Deep", anonymous authors, 2023) and the decomposed final layer they give.

Algorithm 1 of the paper, on the penultimate features ``f`` (the input of the final linear
layer ``model.fc``) of the training set:

1. for every instance, the indices of its ``k1`` largest features by magnitude;
2. per class, the histogram of those indices over the class's instances;
3. per class, the ``k2`` most frequent indices: the class's influential features ``S_c``.

The *decomposed* final layer computes class c's logit from its own features only,
``z_c = sum_{j in S_c} W[c, j] f_j + b_c``, and its softmax over these logits is the
decomposed softmax. It reads ``k2 * C`` weights instead of ``D * C``, and computes only those.

The method is a ``methods.UnitSelection``: ``InfluentialFeatureSelection(model, k1=, k2=)
.select(data)``, its result read as ``LayerScores`` (``result["fc"]``, the C x D mask). Its
input is the model's ``PenultimateFeatures`` (computed once per network and dataset by
``penultimate_features`` and cached), or a dataset whose features it computes that way:
everything here after the features takes them rather than the images. The noise ablation
is ``feature_noise``, Class-Specific Gates are ``gates``, and chapter 4's sweeps over
networks are ``decomposition``.

Ties (equal feature values, equal histogram counts) go to the lower index, so the same
features always give the same sets. Every function that runs a model works on the model's
device and returns its results on the CPU.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from . import cache, metrics
from .batches import data_identity
from .devices import to_host, to_model
from .evaluation import predicted_labels
from .methods import LayerScores, UnitSelection
from .progress import bar

__all__ = [
    "DecomposedLinear",
    "InfluentialFeatureSelection",
    "InfluentialFeatures",
    "PenultimateFeatures",
    "SetSummary",
    "check_k",
    "decompose",
    "index_histograms",
    "layer_correct",
    "linear_macs",
    "most_frequent",
    "non_influential_indices",
    "penultimate_features",
    "random_feature_sets",
    "top_k_indices",
    "top_k_mass_share",
]


def check_k(dim: int, **values: int | Iterable[int]) -> None:
    """Raise ``ValueError`` naming the parameter unless every k (or k in a list) is in 1..dim.

    Args:
        dim: the final layer's width D.
        **values: k values, or lists of them, by parameter name.

    Example:
        >>> check_k(64, k1=5, k_grid=[1, 64])
        >>> check_k(64, k2=0)
        Traceback (most recent call last):
        ...
        ValueError: k2: expected an integer in 1..64 (the final layer's width), got 0
    """
    for name, value in values.items():
        for k in (value if isinstance(value, (list, tuple)) else [value]):
            if not isinstance(k, int) or not 1 <= k <= dim:
                raise ValueError(f"{name}: expected an integer in 1..{dim} (the final layer's "
                                 f"width), got {k!r}")


def _check_features(features: torch.Tensor, labels: torch.Tensor) -> None:
    if features.ndim != 2:
        raise ValueError(f"features: expected N x D penultimate features, "
                         f"got shape {tuple(features.shape)}")
    if labels.shape != (len(features),):
        raise ValueError(f"labels: expected {len(features)} labels, "
                         f"got shape {tuple(labels.shape)}")


# --- penultimate features --------------------------------------------------------------

@dataclass
class PenultimateFeatures:
    """What a network's final layer ``fc`` reads for every image of a dataset, with the
    images' labels, on the CPU.

    Args:
        features: N x D.
        labels: N.

    Example:
        >>> len(PenultimateFeatures(torch.rand(3, 4), torch.tensor([0, 1, 0])).dataset())
        3
    """

    features: torch.Tensor  # N x D
    labels: torch.Tensor  # N

    def __post_init__(self) -> None:
        _check_features(self.features, self.labels)

    def dataset(self) -> TensorDataset:
        """(feature vector, label) pairs, to train a final layer on (``train.fit``)."""
        return TensorDataset(self.features, self.labels)


def penultimate_features(model: nn.Module, data: Dataset, batch_size: int = 500,
                         cached: bool = True) -> PenultimateFeatures:
    """What ``model.fc`` reads for every image of ``data``, or the cached result for this
    model (architecture and weights) and data.

    Args:
        model: a network with ``penultimate(x)``.
        data: (image, label) pairs.
        batch_size: images per forward pass.
        cached: False to compute without the cache.

    Returns:
        ``PenultimateFeatures`` on the CPU.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> from subnets import models
        >>> images = TensorDataset(torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 0]))
        >>> penultimate_features(models.cifar_resnet(8, 1, 2), images, cached=False
        ...                      ).features.shape
        torch.Size([3, 64])
    """
    if not hasattr(model, "penultimate"):
        raise TypeError(f"model: {type(model).__name__} has no penultimate(x) method")
    if cached:
        entry = cache.cached("penultimate-features",
                             {"model": model, "data": data_identity(data)},
                             lambda: _penultimate(model, data, batch_size))
    else:
        entry = _penultimate(model, data, batch_size)
    return PenultimateFeatures(**entry)


@torch.no_grad()
def _penultimate(model: nn.Module, data: Dataset, batch_size: int) -> dict[str, torch.Tensor]:
    model.eval()
    chunks, labels = [], []
    for x, y in bar(DataLoader(data, batch_size=batch_size), desc="penultimate features"):
        chunks.append(to_host(model.penultimate(to_model(model, x))))
        labels.append(y)
    return {"features": torch.cat(chunks), "labels": torch.cat(labels)}


# --- Algorithm 1 -------------------------------------------------------------------------

def top_k_indices(features: torch.Tensor, k: int) -> torch.Tensor:
    """Per row of ``features`` (N x D), the indices of its ``k`` largest entries by
    magnitude, largest first (ties to the lower index).

    Args:
        features: N x D values (penultimate features).
        k: indices kept per row, in 1..D.

    Returns:
        N x k indices into the rows.

    Example:
        >>> top_k_indices(torch.tensor([[1.0, -3.0, 2.0, 2.0]]), 3)
        tensor([[1, 2, 3]])
    """
    check_k(features.shape[1], k1=k)
    # A stable sort keeps equal values in index order, so ties go to the lower index.
    return features.abs().sort(dim=1, descending=True, stable=True).indices[:, :k]


def index_histograms(features: torch.Tensor, labels: torch.Tensor, k1: int,
                     num_classes: int) -> torch.Tensor:
    """C x D counts: how often each feature index is among the top ``k1`` of an instance
    of each class (``features`` N x D, ``labels`` N, in 0..``num_classes`` - 1).

    Args:
        features: N x D penultimate features.
        labels: N labels, in 0..``num_classes`` - 1.
        k1: top features per instance.
        num_classes: C, the rows of the result.

    Returns:
        C x D counts (row c sums to ``k1`` times the instances of class c).

    Example:
        >>> index_histograms(torch.tensor([[3.0, 1, 0], [0, 1, 2]]), torch.tensor([0, 0]), 1, 2)
        tensor([[1, 0, 1],
                [0, 0, 0]])
    """
    _check_features(features, labels)
    dim = features.shape[1]
    top = top_k_indices(features, k1)
    flat = (labels[:, None] * dim + top).flatten()
    return torch.bincount(flat, minlength=num_classes * dim).view(num_classes, dim)


def most_frequent(histograms: torch.Tensor, k2: int) -> torch.Tensor:
    """C x k2: per class (row of ``histograms``, C x D) the indices of its ``k2`` largest
    counts (or scores), largest first, ties to the lower index.

    Args:
        histograms: C x D counts (``index_histograms``) or scores (gates, say).
        k2: indices kept per class, in 1..D.

    Returns:
        C x k2 indices.

    Example:
        >>> most_frequent(torch.tensor([[0, 5, 5, 1]]), 2)
        tensor([[1, 2]])
    """
    check_k(histograms.shape[1], k2=k2)
    return (-histograms).sort(dim=1, stable=True).indices[:, :k2]


@dataclass
class SetSummary:
    """How much of the final layer's width the influential sets take, and how separate the
    classes' sets are (``InfluentialFeatures.summary``).

    Args:
        features_per_class: k2.
        fraction_of_width: k2 / D.
        union: the features influential for at least one class.
        union_fraction: union / D.
        mean_pairwise_jaccard: the mean Jaccard index of two different classes' sets.

    Example:
        >>> found = InfluentialFeatures(indices=torch.tensor([[0, 1], [1, 2]]),
        ...                             histograms=torch.zeros(2, 4), k1=2, k2=2)
        >>> summary = found.summary()
        >>> summary.union, summary.union_fraction, round(summary.mean_pairwise_jaccard, 3)
        (3, 0.75, 0.333)
    """

    features_per_class: int  # k2
    fraction_of_width: float  # k2 / D
    union: int  # features influential for at least one class
    union_fraction: float  # union / D
    mean_pairwise_jaccard: float  # of two different classes' sets


@dataclass(kw_only=True)
class InfluentialFeatures(LayerScores):
    """The result of Algorithm 1, read as ``LayerScores``: ``result["fc"]`` is the C x D
    mask of the features (the final layer ``fc``'s inputs) influential for each class.

    Args:
        indices: C x k2, class c's influential features, most frequent first.
        histograms: C x D, how often feature j is among the top ``k1`` of class c's
            instances.
        k1: top features per instance.
        k2: features kept per class.
        layer: the layer whose inputs the features are.

    Example:
        >>> found = InfluentialFeatures(indices=torch.tensor([[1], [0]]),
        ...                             histograms=torch.tensor([[0, 3, 1], [2, 0, 0]]),
        ...                             k1=1, k2=1)
        >>> found["fc"].int().tolist(), found.overlap().tolist()
        ([[0, 1, 0], [1, 0, 0]], [[1, 0], [0, 1]])
    """

    indices: torch.Tensor  # C x k2
    histograms: torch.Tensor  # C x D
    k1: int
    k2: int
    layer: str = "fc"

    def __post_init__(self) -> None:
        self.scores = {self.layer: self.mask()}

    @property
    def num_classes(self) -> int:
        """C, the number of classes (rows)."""
        return self.histograms.shape[0]

    @property
    def dim(self) -> int:
        """D, the final layer's width."""
        return self.histograms.shape[1]

    def mask(self) -> torch.Tensor:
        """C x D booleans: feature j is influential for class c."""
        return metrics.index_mask(self.indices, self.dim)

    def overlap(self) -> torch.Tensor:
        """C x C: how many influential features two classes share (the diagonal is ``k2``)."""
        m = self.mask().long()
        return m @ m.T

    def union(self) -> torch.Tensor:
        """The features influential for at least one class, sorted."""
        return torch.nonzero(self.mask().any(0)).flatten()

    def summary(self) -> SetSummary:
        """Features per class, their share of the width, the union, and the mean Jaccard
        index of two classes' sets."""
        m = self.mask()
        pairs = ~torch.eye(self.num_classes, dtype=torch.bool)
        jaccard = metrics.jaccard(m[:, None], m[None]).double()
        union = len(self.union())
        return SetSummary(features_per_class=self.k2, fraction_of_width=self.k2 / self.dim,
                          union=union, union_fraction=union / self.dim,
                          mean_pairwise_jaccard=jaccard[pairs].mean().item())


class InfluentialFeatureSelection(UnitSelection):
    """Algorithm 1 of chapter 4's paper ("Decomposing the Deep") on ``model``'s final layer
    ``fc``: per class, the ``k2`` features most often among the ``k1`` largest (by
    magnitude) of the class's instances.

    Args:
        model: a network with ``penultimate(x)`` (what ``fc`` reads) and a linear ``fc``,
            whose width and number of classes ``k1``, ``k2`` and the labels must fit.
        k1: top features per instance (the paper: 5).
        k2: most frequent features kept per class (the paper: 5).

    Example:
        >>> from subnets import models
        >>> net = models.cifar_resnet(8, 1, 2)
        >>> f = PenultimateFeatures(torch.rand(6, 64), torch.tensor([0, 1] * 3))
        >>> InfluentialFeatureSelection(net, k1=3, k2=2).select(f).indices.shape
        torch.Size([2, 2])
    """

    def __init__(self, model: nn.Module, *, k1: int, k2: int) -> None:
        fc = getattr(model, "fc", None)
        if not isinstance(fc, nn.Linear):
            raise TypeError(f"model: {type(model).__name__} needs a linear final layer fc")
        check_k(fc.in_features, k1=k1, k2=k2)
        super().__init__(model, "fc")
        self.k1, self.k2 = k1, k2
        self.dim, self.num_classes = fc.in_features, fc.out_features

    def select(self, data: PenultimateFeatures | Dataset, target=None) -> InfluentialFeatures:
        """The influential sets of every class, found on ``data``.

        Args:
            data: the model's penultimate features with the instances' labels, or a
                dataset of (image, label) pairs to compute them on (cached).
            target: must be None: Algorithm 1 finds every class's set at once, the classes
                being the labels of ``data``.

        Returns:
            ``InfluentialFeatures``.
        """
        if target is not None:
            raise ValueError("target: Algorithm 1 selects for every class of the labels at "
                             f"once; expected None, got {target!r}")
        if not isinstance(data, PenultimateFeatures):
            data = penultimate_features(self.model, data)
        if data.features.shape[1] != self.dim:
            raise ValueError(f"data: expected {self.dim} features (the width of model.fc), "
                             f"got {data.features.shape[1]}")
        labels = data.labels
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"data: expected labels in 0..{self.num_classes - 1} "
                             "(the classes of model.fc)")
        hist = index_histograms(data.features, data.labels, self.k1, self.num_classes)
        return InfluentialFeatures(indices=most_frequent(hist, self.k2), histograms=hist,
                                   k1=self.k1, k2=self.k2)


def top_k_mass_share(features: torch.Tensor, k: int) -> torch.Tensor:
    """Per instance (row of ``features``, N x D), the share of its L1 mass in its ``k``
    largest features (Section 4.4's "coverage" of k1); NaN for an all-zero row.

    Args:
        features: N x D penultimate features.
        k: the largest features (by magnitude) counted per row, in 1..D.

    Returns:
        N shares, in [0, 1] or NaN.

    Example:
        >>> top_k_mass_share(torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.0, 0.0]]), 1)
        tensor([0.7500,    nan])
    """
    mass = features.abs()
    total = mass.sum(1)
    top = mass.gather(1, top_k_indices(features, k)).sum(1)
    return torch.where(total > 0, top / total.clamp_min(1e-12), torch.full_like(total, math.nan))


# --- the decomposed final layer ----------------------------------------------------------

class DecomposedLinear(nn.Module):
    """A final layer in which class c's logit reads only the features ``indices[c]``:
    ``z_c = sum_i weight[c, i] * x[indices[c, i]] + bias[c]``, with the weights copied from
    ``fc``. ``forward`` gives these logits; ``probabilities`` the decomposed softmax.

    Args:
        fc: the full final layer.
        indices: C x k2 feature indices, one row per class.

    Example:
        >>> fc = nn.Linear(3, 2)
        >>> layer = DecomposedLinear(fc, torch.tensor([[0, 1, 2], [0, 1, 2]]))
        >>> x = torch.rand(4, 3)
        >>> torch.allclose(layer(x), fc(x)), layer.macs()  # all features: the full layer
        (True, 6)
    """

    def __init__(self, fc: nn.Linear, indices: torch.Tensor) -> None:
        super().__init__()
        if indices.ndim != 2 or indices.shape[0] != fc.out_features:
            raise ValueError(f"indices: expected {fc.out_features} rows (one per class), "
                             f"got shape {tuple(indices.shape)}")
        if indices.min() < 0 or indices.max() >= fc.in_features:
            raise ValueError(f"indices: expected feature indices in 0..{fc.in_features - 1}")
        self.in_features = fc.in_features
        indices = indices.detach().long().to(fc.weight.device)
        self.register_buffer("indices", indices.clone())
        self.weight = nn.Parameter(fc.weight.detach().gather(1, indices).clone())
        self.bias = None if fc.bias is None else nn.Parameter(fc.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Each class's k2 features gathered (N x C x k2) and dotted with its k2 weights:
        # k2 * C multiply-accumulates per instance, the cost that ``macs`` reports.
        z = (x[:, self.indices] * self.weight).sum(-1)
        return z if self.bias is None else z + self.bias

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """The decomposed softmax: p_c = exp(z_c) / sum_j exp(z_j) over decomposed logits."""
        return self.forward(x).softmax(-1)

    def macs(self) -> int:
        """Multiply-accumulates per input: one per kept weight."""
        return self.indices.numel()


def decompose(model: nn.Module, indices: torch.Tensor) -> nn.Module:
    """A copy of ``model`` whose final linear layer ``fc`` is a ``DecomposedLinear`` on
    ``indices`` (C x k2), to retrain the whole network after decomposition (Section 5.2.3).

    Args:
        model: a network with a linear final layer ``fc``; it is left unchanged.
        indices: C x k2 feature indices, one row per class (``InfluentialFeatures.indices``).

    Returns:
        The copy, its other layers' weights those of ``model``.

    Example:
        >>> from subnets import models
        >>> net = decompose(models.cifar_resnet(8, 1, 2), torch.tensor([[0], [1]]))
        >>> type(net.fc).__name__, net(torch.rand(1, 1, 8, 8)).shape
        ('DecomposedLinear', torch.Size([1, 2]))
    """
    if not isinstance(getattr(model, "fc", None), nn.Linear):
        raise TypeError(f"model: {type(model).__name__} needs a linear final layer fc")
    out = copy.deepcopy(model)
    out.fc = DecomposedLinear(model.fc, indices)
    return out


def linear_macs(fc: nn.Linear) -> int:
    """Multiply-accumulates per input of a full linear layer ``fc``.

    Args:
        fc: the layer.

    Returns:
        D x C, its inputs times its outputs (the cost ``DecomposedLinear.macs`` is set against).

    Example:
        >>> linear_macs(nn.Linear(64, 10))
        640
    """
    return fc.in_features * fc.out_features


def _correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per instance, 1.0 where the predicted label of ``logits`` is the label, else 0.0 (on
    the CPU)."""
    return to_host((predicted_labels(logits) == labels.to(logits.device)).float())


@torch.no_grad()
def layer_correct(layer: nn.Module, features: PenultimateFeatures) -> torch.Tensor:
    """Per instance of ``features``, 1.0 where the final ``layer`` (full, decomposed or
    retrained) predicts the label, else 0.0, on the CPU.

    Args:
        layer: a final layer that maps N x D features to N x C logits.
        features: the features it reads, with the labels to score against.

    Returns:
        N floats, 1.0 or 0.0.

    Example:
        >>> fc = nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = fc.weight.copy_(torch.eye(2))
        ...     _ = fc.bias.zero_()
        >>> layer_correct(fc, PenultimateFeatures(torch.eye(2), torch.tensor([0, 0])))
        tensor([1., 0.])
    """
    x, y = to_model(layer, features.features, features.labels)
    return _correct(layer(x), y)


def random_feature_sets(num_classes: int, dim: int, k: int, seed: int = 0) -> torch.Tensor:
    """C x k: per class (of ``num_classes``) ``k`` distinct features of ``dim`` drawn at
    random (seeded): the control for Algorithm 1's sets.

    Args:
        num_classes: C, the rows.
        dim: D, the final layer's width.
        k: features per class, in 1..D.
        seed: the draws' seed.

    Returns:
        C x k feature indices.

    Example:
        >>> random_feature_sets(2, 64, 5, seed=0).shape
        torch.Size([2, 5])
    """
    check_k(dim, k2=k)
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(dim, generator=g)[:k] for _ in range(num_classes)])


def non_influential_indices(influential: InfluentialFeatures, seed: int = 0) -> torch.Tensor:
    """C x k2: per class, ``k2`` features drawn at random (seeded) from those not
    influential for that class (``influential``).

    Args:
        influential: the classes' influential sets (with ``2 * k2 <= D``).
        seed: the draws' seed.

    Returns:
        C x k2 feature indices, each row disjoint from the class's influential set.

    Example:
        >>> sets = InfluentialFeatures(indices=torch.tensor([[0], [1]]),
        ...                            histograms=torch.zeros(2, 3), k1=1, k2=1)
        >>> bool((non_influential_indices(sets) != sets.indices).all())
        True
    """
    if 2 * influential.k2 > influential.dim:
        raise ValueError(f"k2: {influential.k2} influential features leave fewer than "
                         f"{influential.k2} others of {influential.dim}")
    g = torch.Generator().manual_seed(seed)
    mask = influential.mask()
    rows = []
    for c in range(influential.num_classes):
        others = torch.nonzero(~mask[c]).flatten()
        rows.append(others[torch.randperm(len(others), generator=g)[:influential.k2]])
    return torch.stack(rows)
