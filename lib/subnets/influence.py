"""Class-specific influential features of the final layer (chapter 4: "Decomposing the
Deep", anonymous authors, 2023) and Class-Specific Gates (Liang et al. 2020) to compare them
with.

Algorithm 1 of the paper, on the penultimate features ``f`` (the input of the final linear
layer ``model.fc``) of the training set:

1. for every instance, the indices of its ``k1`` largest features by magnitude;
2. per class, the histogram of those indices over the class's instances;
3. per class, the ``k2`` most frequent indices: the class's influential features ``S_c``.

The *decomposed* final layer computes class c's logit from its own features only,
``z_c = sum_{j in S_c} W[c, j] f_j + b_c``, and its softmax over these logits is the
decomposed softmax. It reads ``k2 * C`` weights instead of ``D * C``, and computes only those.

The method is a class in captum's style, ``InfluentialFeatureSelection(model, k1=, k2=)
.attribute(data)`` (the model's final layer gives the width and the classes it checks
against). Its input is the model's ``PenultimateFeatures`` (features and labels, computed
once per network and dataset by ``penultimate_features`` and cached), or a dataset whose
features it computes that way: the chapter measures the decomposed layer, the (k1, k2) grid
and the noise ablation on the same features, so everything here after the features takes
them rather than the images.

Ties (equal feature values, equal histogram counts) go to the lower index, so the same
features always give the same sets. Every function that runs a model works on the model's
device and returns its results on the CPU.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from . import cache, devices, hooks, metrics, upsampling
from .devices import to_host, to_model
from .progress import bar
from .train import Objective, TrainConfig, config_key, data_identity, predicted_labels, run_training

__all__ = [
    "ClassSpecificGates",
    "DecomposedLinear",
    "DecompositionGrid",
    "GateAccuracy",
    "GateConfig",
    "InfluentialFeatureSelection",
    "InfluentialFeatures",
    "NoiseAblation",
    "PenultimateFeatures",
    "SetSummary",
    "channel_maps",
    "class_channel_maps",
    "check_k",
    "decompose",
    "decomposition_statistics",
    "diagonal_margin",
    "fit_gates",
    "foreground_share",
    "gate_accuracies",
    "gate_overlap",
    "gate_statistics",
    "index_histograms",
    "layer_correct",
    "linear_macs",
    "most_frequent",
    "NOISES",
    "noise_ablation",
    "noised_features",
    "non_influential_indices",
    "penultimate_features",
    "random_feature_sets",
    "relative_accuracy_grid",
    "top_k_indices",
    "top_k_mass_share",
]


def check_k(dim: int, **values: int | Iterable[int]) -> None:
    """Raise ``ValueError`` naming the parameter unless every k (or k in a list) is in 1..dim."""
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
    images' labels, on the CPU."""

    features: torch.Tensor  # N x D
    labels: torch.Tensor  # N

    def __post_init__(self) -> None:
        _check_features(self.features, self.labels)

    def dataset(self) -> TensorDataset:
        """(feature vector, label) pairs, to train a final layer on (``train.fit``)."""
        return TensorDataset(self.features, self.labels)


def penultimate_features(model: nn.Module, data: Dataset, batch_size: int = 500,
                         cached: bool = True) -> PenultimateFeatures:
    """What ``model.fc`` reads (``model.penultimate(x)``) for every image of ``data``, or the
    cached result for this model (architecture and weights) and data."""
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
    """N x k: per row, the indices of its ``k`` largest entries by magnitude, largest first."""
    check_k(features.shape[1], k1=k)
    # A stable sort keeps equal values in index order, so ties go to the lower index.
    return features.abs().sort(dim=1, descending=True, stable=True).indices[:, :k]


def index_histograms(features: torch.Tensor, labels: torch.Tensor, k1: int,
                     num_classes: int) -> torch.Tensor:
    """C x D counts: how often each feature index is among the top ``k1`` of an instance
    of each class."""
    _check_features(features, labels)
    dim = features.shape[1]
    top = top_k_indices(features, k1)
    flat = (labels[:, None] * dim + top).flatten()
    return torch.bincount(flat, minlength=num_classes * dim).view(num_classes, dim)


def most_frequent(histograms: torch.Tensor, k2: int) -> torch.Tensor:
    """C x k2: per class (row) the indices of the ``k2`` largest counts (or scores),
    largest first."""
    check_k(histograms.shape[1], k2=k2)
    return (-histograms).sort(dim=1, stable=True).indices[:, :k2]


@dataclass
class SetSummary:
    """How much of the final layer's width the influential sets take, and how separate the
    classes' sets are."""

    features_per_class: int  # k2
    fraction_of_width: float  # k2 / D
    union: int  # features influential for at least one class
    union_fraction: float  # union / D
    mean_pairwise_jaccard: float  # of two different classes' sets


@dataclass
class InfluentialFeatures:
    """The result of Algorithm 1: ``indices[c]`` are class c's ``k2`` influential features,
    ``histograms[c, j]`` how often feature j is among the top ``k1`` of class c's instances."""

    indices: torch.Tensor  # C x k2
    histograms: torch.Tensor  # C x D
    k1: int
    k2: int

    @property
    def num_classes(self) -> int:
        return self.histograms.shape[0]

    @property
    def dim(self) -> int:
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


class InfluentialFeatureSelection:
    """Algorithm 1 of chapter 4's paper ("Decomposing the Deep") on ``model``'s final layer
    ``fc``: per class, the ``k2`` features most often among the ``k1`` largest (by magnitude)
    of the class's instances. ``model`` needs ``penultimate(x)`` (what ``fc`` reads) and a
    linear ``fc``, whose width and number of classes ``k1``, ``k2`` and the labels must fit."""

    def __init__(self, model: nn.Module, *, k1: int, k2: int) -> None:
        fc = getattr(model, "fc", None)
        if not isinstance(fc, nn.Linear):
            raise TypeError(f"model: {type(model).__name__} needs a linear final layer fc")
        check_k(fc.in_features, k1=k1, k2=k2)
        self.model, self.k1, self.k2 = model, k1, k2
        self.dim, self.num_classes = fc.in_features, fc.out_features

    def attribute(self, data: PenultimateFeatures | Dataset) -> InfluentialFeatures:
        """The influential sets found on ``data``: the model's penultimate features with the
        instances' labels, or a dataset of (image, label) pairs to compute them on (cached)."""
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
        return InfluentialFeatures(most_frequent(hist, self.k2), hist, self.k1, self.k2)


def top_k_mass_share(features: torch.Tensor, k: int) -> torch.Tensor:
    """Per instance, the share of its features' L1 mass in its ``k`` largest (Section 4.4's
    "coverage" of k1); NaN for an all-zero feature vector."""
    mass = features.abs()
    total = mass.sum(1)
    top = mass.gather(1, top_k_indices(features, k)).sum(1)
    return torch.where(total > 0, top / total.clamp_min(1e-12), torch.full_like(total, math.nan))


# --- the decomposed final layer ----------------------------------------------------------

class DecomposedLinear(nn.Module):
    """A final layer in which class c's logit reads only the features ``indices[c]``:
    ``z_c = sum_i weight[c, i] * x[indices[c, i]] + bias[c]``, with the weights copied from
    ``fc``. ``forward`` gives these logits; ``probabilities`` the decomposed softmax."""

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
    ``indices`` (to retrain the whole network after decomposition, Section 5.2.3)."""
    if not isinstance(getattr(model, "fc", None), nn.Linear):
        raise TypeError(f"model: {type(model).__name__} needs a linear final layer fc")
    out = copy.deepcopy(model)
    out.fc = DecomposedLinear(model.fc, indices)
    return out


def linear_macs(fc: nn.Linear) -> int:
    """Multiply-accumulates per input of a full linear layer."""
    return fc.in_features * fc.out_features


def _correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per instance, 1.0 where the predicted label of ``logits`` is the label, else 0.0 (on
    the CPU)."""
    return to_host((predicted_labels(logits) == labels.to(logits.device)).float())


@torch.no_grad()
def layer_correct(layer: nn.Module, features: PenultimateFeatures) -> torch.Tensor:
    """Per instance of ``features``, 1.0 where the final ``layer`` (full, decomposed or
    retrained) predicts the label, else 0.0."""
    x, y = to_model(layer, features.features, features.labels)
    return _correct(layer(x), y)


@dataclass
class DecompositionGrid:
    """``table``: one row per (k1, k2) with the decomposed layer's test accuracy, the full
    layer's and their ratio (the paper's relative accuracy). ``correct``: N x rows, per
    test instance whether the decomposed layer of that row is right; ``full_correct``: N."""

    table: pd.DataFrame
    correct: torch.Tensor
    full_correct: torch.Tensor


@torch.no_grad()
def relative_accuracy_grid(fc: nn.Linear, train: PenultimateFeatures,
                           test: PenultimateFeatures, k1s: Iterable[int],
                           k2s: Iterable[int]) -> DecompositionGrid:
    """The decomposed layer for every (k1, k2), its sets found on the ``train`` features,
    measured on the ``test`` features."""
    x, y = to_model(fc, test.features, test.labels)
    full = _correct(fc(x), y)
    rows, hits = [], []
    for k1 in k1s:
        hist = index_histograms(train.features, train.labels, k1, fc.out_features)
        for k2 in k2s:
            hits.append(_correct(DecomposedLinear(fc, most_frequent(hist, k2))(x), y))
            acc = hits[-1].mean().item()
            rows.append({"k1": k1, "k2": k2, "accuracy": acc,
                         "full_accuracy": full.mean().item(),
                         "relative": acc / full.mean().item()})
    return DecompositionGrid(pd.DataFrame(rows), torch.stack(hits, 1), full)


def diagonal_margin(grid: DecompositionGrid) -> float:
    """Fig. 3's claim as one number: the median over k2 of the accuracy at k1 = k2 minus the
    best accuracy at any other k1 (> 0: k1 = k2 is best). ``grid`` has the same values for
    k1 and k2, at least two of them."""
    acc = grid.table.pivot(index="k1", columns="k2", values="accuracy")
    if list(acc.index) != list(acc.columns) or len(acc) < 2:
        raise ValueError("grid: expected the same k1 and k2 values, at least two")
    values = torch.tensor(acc.to_numpy())
    off = values.masked_fill(torch.eye(len(values), dtype=torch.bool), -math.inf).max(0).values
    return (values.diagonal() - off).quantile(0.5).item()  # as numpy's median


def random_feature_sets(num_classes: int, dim: int, k: int, seed: int = 0) -> torch.Tensor:
    """C x k: per class ``k`` distinct features drawn at random (seeded): the control for
    Algorithm 1's sets."""
    check_k(dim, k2=k)
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(dim, generator=g)[:k] for _ in range(num_classes)])


# --- Gaussian-noise ablation (Table 8) -----------------------------------------------------

# "feature": N(mean_j, std_j) of each feature on the training set; "standard": N(0, 1), as
# the authors' code draws it.
NOISES = ("feature", "standard")

def non_influential_indices(influential: InfluentialFeatures, seed: int = 0) -> torch.Tensor:
    """C x k2: per class, ``k2`` features drawn at random (seeded) from those not
    influential for that class."""
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


def noised_features(features: torch.Tensor, labels: torch.Tensor, replace: torch.Tensor,
                    mean: torch.Tensor, std: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A copy of ``features`` in which each instance's features ``replace[label]`` (a C x D
    boolean mask) are replaced by draws from N(mean_j, std_j) of each replaced feature j.
    The same ``seed`` gives the same draws, so two masks are compared on the same noise."""
    _check_features(features, labels)
    if replace.dtype != torch.bool or replace.shape[1] != features.shape[1]:
        raise ValueError(f"replace: expected a C x {features.shape[1]} boolean mask")
    g = torch.Generator().manual_seed(seed)
    noise = mean + std * torch.randn(features.shape, generator=g)
    return torch.where(replace[labels], noise, features)


@dataclass
class NoiseAblation:
    """Per test instance (1.0 right, 0.0 wrong): the full layer on the original features,
    with the instance's influential features replaced by noise, with all its other
    features replaced (Section 5.2.6), and with as many (``k2``) random others replaced."""

    original: torch.Tensor
    influential: torch.Tensor
    non_influential: torch.Tensor
    as_many_others: torch.Tensor

    def accuracies(self) -> dict[str, float]:
        return {name: value.mean().item() for name, value in vars(self).items()}


@torch.no_grad()
def noise_ablation(fc: nn.Linear, train: PenultimateFeatures, test: PenultimateFeatures,
                   influential: InfluentialFeatures, seed: int = 0,
                   noise: str = "feature") -> NoiseAblation:
    """The full final layer on ``test`` features whose features of the instance's (true)
    class are replaced by Gaussian noise: the ``influential`` ones, all the others (D - k2),
    or ``k2`` random others. ``noise`` (one of ``NOISES``): "feature", each feature's mean
    and standard deviation on ``train``; "standard", N(0, 1) (the authors' code)."""
    if noise not in NOISES:
        raise ValueError(f"noise: expected one of {NOISES}, got {noise!r}")
    mean, std = ((train.features.mean(0), train.features.std(0)) if noise == "feature"
                 else (torch.zeros(()), torch.ones(())))
    x, y = test.features, test.labels
    mask = influential.mask()
    as_many = metrics.index_mask(non_influential_indices(influential, seed), influential.dim)

    def hits(features: torch.Tensor) -> torch.Tensor:
        return _correct(fc(to_model(fc, features)), y)

    return NoiseAblation(
        original=hits(x),
        influential=hits(noised_features(x, y, mask, mean, std, seed)),
        non_influential=hits(noised_features(x, y, ~mask, mean, std, seed)),
        as_many_others=hits(noised_features(x, y, as_many, mean, std, seed)))


@torch.no_grad()
def decomposition_statistics(fc: nn.Linear, train: PenultimateFeatures,
                             test: PenultimateFeatures, influential: InfluentialFeatures,
                             k_grid: Iterable[int], seed: int = 0) -> dict[str, float]:
    """What the chapter judges of one network's final layer, on its ``test`` features:
    the full layer's accuracy ("full"), the decomposed layer's on the ``influential`` sets
    ("decomposed"), its ratio to the full one ("relative"), a decomposed layer's on as many
    random features per class ("random sets", ``random_feature_sets(..., seed)``), Fig. 3's
    ``diagonal_margin`` over ``k_grid`` (sets found on ``train``) and the accuracies of
    ``noise_ablation`` with each of ``NOISES`` ("<noise> noise: <condition>"). A sweep over
    networks calls it once each."""
    x, y = to_model(fc, test.features, test.labels)
    full = _correct(fc(x), y).mean().item()
    decomposed = _correct(DecomposedLinear(fc, influential.indices)(x), y).mean().item()
    random_sets = random_feature_sets(influential.num_classes, influential.dim,
                                      influential.k2, seed)
    grid = relative_accuracy_grid(fc, train, test, k_grid, k_grid)
    noised = {f"{noise} noise: {name}": value for noise in NOISES for name, value in
              noise_ablation(fc, train, test, influential, seed, noise).accuracies().items()}
    return {"full": full, "decomposed": decomposed, "relative": decomposed / full,
            "random sets": _correct(DecomposedLinear(fc, random_sets)(x), y).mean().item(),
            "diagonal margin": diagonal_margin(grid), **noised}


# --- activation maps of influential channels (Table 7) -------------------------------------

def channel_maps(maps: torch.Tensor, channels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """N x 1 x H x W: per image the mean of its ``channels`` (N x k) of the last conv
    layer's ``maps`` (N x K x h x w), bilinearly upsampled to ``size``."""
    if channels.shape[0] != maps.shape[0]:
        raise ValueError(f"channels: expected one row per map ({maps.shape[0]}), "
                         f"got {channels.shape[0]}")
    channels = channels.to(maps.device)
    picked = maps.gather(1, channels[:, :, None, None].expand(-1, -1, *maps.shape[2:]))
    return upsampling.bilinear(picked.mean(1, keepdim=True), size)


def class_channel_maps(model: nn.Module, layer: str, images: torch.Tensor,
                       labels: torch.Tensor, influential: InfluentialFeatures,
                       others: torch.Tensor) -> dict[str, torch.Tensor]:
    """Table 7's maps of ``images``: per image, the ``channel_maps`` of the output of
    ``model``'s ``layer`` (the last conv maps, whose spatial means are the penultimate
    features) over all its channels, over its class's influential channels and over its
    class's row of ``others`` (C x k channels: ``non_influential_indices``)."""
    maps = hooks.activations(model, images, [layer])[layer]
    n, size = len(images), tuple(images.shape[-2:])
    channel_sets = {"all channels": torch.arange(maps.shape[1]).expand(n, -1),
                    "influential": influential.indices[labels], "non-influential": others[labels]}
    return {name: channel_maps(maps, channels, size) for name, channels in channel_sets.items()}


def foreground_share(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per map, the share of its (non-negative) mass on the foreground ``masks``; NaN for an
    all-zero map."""
    mass = maps.clamp_min(0).flatten(1)
    inside = (mass * masks.flatten(1).to(mass)).sum(1)
    total = mass.sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-12), torch.full_like(total, math.nan))


# --- Class-Specific Gates (Liang et al. 2020) ------------------------------------------------

@dataclass(frozen=True)
class GateConfig:
    """How the gates are trained, after Liang et al.'s code (CSGCNN): the gate matrix G
    starts at ``init``; training alternates epochs, ``period - 1`` CSG epochs then one
    standard (STD) epoch; a CSG epoch minimises CE(CSG path) + ``sparsity_weight`` *
    max(0, ||G||_1 - ``density`` * C * D), and after every CSG step each feature's gates are
    divided by their largest (over classes) and clipped to [0, 1]. The gates take plain SGD
    steps of ``gate_lr`` (the weights take the training configuration's optimiser)."""

    sparsity_weight: float = 0.1
    density: float = 0.2
    gate_lr: float = 0.5
    init: float = 0.5
    period: int = 3

    def __post_init__(self) -> None:
        for name in ("sparsity_weight", "gate_lr"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        for name in ("density", "init"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}: expected a value in [0, 1], got {getattr(self, name)}")
        if not isinstance(self.period, int) or self.period < 1:
            raise ValueError(f"period: expected an integer >= 1, got {self.period!r}")

    def is_csg_epoch(self, epoch: int) -> bool:
        """Epochs count from 1; with ``period`` 1 every epoch is a CSG epoch."""
        return self.period == 1 or epoch % self.period != 0


class ClassSpecificGates(nn.Module):
    """A network with a learnable class x feature gate matrix ``gates`` (C x D, in [0, 1])
    on its penultimate features, used only in training. ``forward`` is the standard (STD)
    path, the network as it classifies new images; ``gated_logits`` the CSG path of
    training, which multiplies an instance's features by its label's gate row;
    ``label_free_logits`` reads class c's logit through class c's gates (no label needed).
    ``model`` needs ``penultimate(x)`` and a linear ``fc``."""

    def __init__(self, model: nn.Module, init: float = 0.5) -> None:
        super().__init__()
        if not hasattr(model, "penultimate") or not isinstance(getattr(model, "fc", None),
                                                                nn.Linear):
            raise TypeError(f"model: {type(model).__name__} needs penultimate(x) and a linear fc")
        self.model = model
        fc = model.fc
        self.gates = nn.Parameter(torch.full((fc.out_features, fc.in_features), float(init),
                                             device=fc.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def gated_logits(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """CSG path on penultimate ``features``: W (G_y * f) + b."""
        return self.model.fc(features * self.gates[labels])

    def label_free_logits(self, features: torch.Tensor) -> torch.Tensor:
        """z_c = w_c . (G_c * f) + b_c: every class through its own gates."""
        return nn.functional.linear(features, self.model.fc.weight * self.gates,
                                    self.model.fc.bias)

    @torch.no_grad()
    def clip_gates(self) -> None:
        """Liang et al.'s clipping: each feature's gates over the classes divided by their
        largest, then clipped to [0, 1]."""
        top = self.gates.max(0, keepdim=True).values.clamp_min(1e-12)
        self.gates.copy_((self.gates / top).clamp(0, 1))

    def open_gates(self, threshold: float = 0.5) -> torch.Tensor:
        """C x D booleans: gates above ``threshold`` (on the CPU)."""
        return to_host(self.gates) > threshold


def fit_gates(model: nn.Module, data: Dataset, config: TrainConfig | None = None,
              gates: GateConfig | None = None, desc: str = "training with gates",
              placebo: bool = False) -> ClassSpecificGates:
    """Train ``model`` (in place, from its current weights: a fresh model built under
    ``train.seeded``, or a trained one to fine-tune) with a gate matrix, alternating CSG
    and STD epochs as ``gates`` says; or load the cached result of that exact training.
    ``config``'s optimiser and schedule drive the weights in both kinds of epoch (defaults:
    ``TrainConfig()`` and ``GateConfig()``). The training is ``train.run_training``'s, on
    the gates' objective; ``history`` has one row per epoch: its path, its mean
    cross-entropy and sparsity hinge over the batches, and the gates' density after it.
    ``placebo``: train nothing (as ``train.fit(..., placebo=True)``): the model keeps its
    weights, the gates their initial value, and ``history`` is empty."""
    config = TrainConfig() if config is None else config
    gates = GateConfig() if gates is None else gates
    if config.loss != "cross_entropy":
        raise ValueError("config: gate training supports the cross_entropy loss")
    net = ClassSpecificGates(model, gates.init)
    if placebo:
        net.history = pd.DataFrame(columns=["epoch", "path", "loss", "sparsity", "density"])
        return net.eval()
    parts = {"model": net, "data": data_identity(data), "config": config_key(net, config),
             "gates": asdict(gates)}
    if devices.is_cuda(net):
        # On CUDA gate training takes the trainer's bf16 autocast and channels-last path;
        # entries made by the float32 loop it had of its own are not its results.
        parts["trainer"] = "run_training"
    entry = cache.cached("csg", parts, lambda: run_training(
        net, data, config, None, desc, objective=_GateObjective(net, config, gates)))
    net.load_state_dict(entry["state"])
    net.history = pd.DataFrame(entry["history"])
    return net.eval()


class _GateObjective(Objective):
    """Liang et al.'s alternating training as ``run_training``'s objective: in a CSG epoch
    CE(CSG path) + ``sparsity_weight`` * max(0, ||G||_1 - ``density`` * C * D), then a plain
    SGD step of the gates and their clipping after every step; in an STD epoch CE(STD path).
    ``config``'s optimiser trains the network's weights only."""

    def __init__(self, net: ClassSpecificGates, config: TrainConfig, gates: GateConfig) -> None:
        super().__init__(config)
        self.gates = gates
        # Plain SGD for the gates: momentum would carry them past the target density.
        self.gate_optimizer = torch.optim.SGD([net.gates], lr=gates.gate_lr)
        self.budget = gates.density * net.gates.numel()

    def parameters(self, model: ClassSpecificGates) -> list[nn.Parameter]:
        return super().parameters(model.model)

    def begin_epoch(self, model: ClassSpecificGates, epoch: int) -> str:
        self.path = "CSG" if self.gates.is_csg_epoch(epoch) else "STD"
        self.losses, self.hinges = [], []
        return f"epoch {epoch} ({self.path})"

    def loss(self, model: ClassSpecificGates, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.path == "STD":
            loss = self.criterion(model(x), y)
            hinge, total = loss.new_zeros(()), loss
        else:
            loss = self.criterion(model.gated_logits(model.model.penultimate(x), y), y)
            hinge = (model.gates.abs().sum() - self.budget).clamp_min(0)
            total = loss + self.gates.sparsity_weight * hinge
        self.losses.append(loss.detach())
        self.hinges.append(hinge.detach())
        return total

    def after_step(self, model: ClassSpecificGates) -> None:
        if self.path == "CSG":
            self.gate_optimizer.step()
            model.clip_gates()

    def end_epoch(self, model: ClassSpecificGates) -> dict:
        return {"path": self.path, "loss": _batch_mean(self.losses),
                "sparsity": _batch_mean(self.hinges),
                "density": model.gates.detach().mean().item()}


def _batch_mean(values: list[torch.Tensor]) -> float:
    """The mean of per-batch values, each divided by their number and added in batch order
    (float64), as the gates' history has always been summed."""
    total = 0.0
    for v in torch.stack(values).tolist():
        total += v / len(values)
    return total


@dataclass
class GateAccuracy:
    """Per test instance (1.0 right, 0.0 wrong): the gated network's STD path (how it
    classifies new images; the gates are used only in training) and its label-free gated
    read-out z_c = w_c . (G_c * f) + b_c."""

    std: torch.Tensor
    label_free: torch.Tensor


@torch.no_grad()
def gate_accuracies(net: ClassSpecificGates, test: PenultimateFeatures) -> GateAccuracy:
    """Both label-free read-outs of ``net`` on the penultimate features of ``net.model``."""
    x, y = to_model(net, test.features, test.labels)
    return GateAccuracy(std=_correct(net.model.fc(x), y),
                        label_free=_correct(net.label_free_logits(x), y))


def gate_overlap(net: ClassSpecificGates, influential: InfluentialFeatures) -> pd.DataFrame:
    """Per class: how many of its ``k2`` largest gates (ties to the lower index) are among
    its influential features, how many that would be by chance (``k2**2 / D``), the mean
    gate on its influential and on its other features, and its open gates (> 0.5)."""
    gates = to_host(net.gates)
    mask = influential.mask()
    if gates.shape != mask.shape:
        raise ValueError(f"influential: expected sets over {tuple(gates.shape)} "
                         "(classes x features)")
    k2, dim = influential.k2, influential.dim
    top = metrics.index_mask(most_frequent(gates, k2), dim)
    return pd.DataFrame({"top gates influential": (top & mask).sum(1).numpy(),
                         "by chance": k2 * k2 / dim,
                         "mean gate, influential": ((gates * mask).sum(1) / k2).numpy(),
                         "mean gate, others": ((gates * ~mask).sum(1) / (dim - k2)).numpy(),
                         "open gates": net.open_gates().sum(1).numpy()})


@torch.no_grad()
def gate_statistics(net: ClassSpecificGates, train: PenultimateFeatures,
                    test: PenultimateFeatures, *, k1: int, k2: int) -> dict[str, float]:
    """What the chapter judges of one gated network, on the penultimate features of
    ``net.model`` (``train`` to find its influential sets, ``test`` to measure): the
    accuracies of its STD path ("STD"), of its CSG path, which gates an image's features by
    its label's row ("CSG, label"), of its label-free gated read-out ("label-free") and of
    its decomposed layer (Algorithm 1 with ``k1``, ``k2``: "decomposed"), and how many of
    a class's ``k2`` largest gates are its influential features, mean over the classes
    ("top gates influential"), against chance ("by chance"). A sweep over networks calls it
    once each."""
    hits = gate_accuracies(net, test)
    found = InfluentialFeatureSelection(net.model, k1=k1, k2=k2).attribute(train)
    decomposed = layer_correct(DecomposedLinear(net.model.fc, found.indices), test)
    overlap = gate_overlap(net, found)
    x, y = to_model(net, test.features, test.labels)
    labelled = _correct(net.gated_logits(x, y), y)
    return {"STD": hits.std.mean().item(), "CSG, label": labelled.mean().item(),
            "label-free": hits.label_free.mean().item(),
            "decomposed": decomposed.mean().item(),
            "top gates influential": overlap["top gates influential"].mean(),
            "by chance": k2 * k2 / found.dim}
