"""Class-specific influential features of the final layer (paper 003) and Class-Specific
Gates (Liang et al. 2020) to compare them with.

Algorithm 1 of the paper, on the penultimate features ``f`` (the input of the final linear
layer) of the training set:

1. for every instance, the indices of its ``k1`` largest features by magnitude;
2. per class, the histogram of those indices over the class's instances;
3. per class, the ``k2`` most frequent indices: the class's influential features ``S_c``.

The *decomposed* final layer computes class c's logit from its own features only,
``z_c = sum_{j in S_c} W[c, j] f_j + b_c``, and its softmax over these logits is the
decomposed softmax. It costs ``k2 * C`` multiply-accumulates instead of ``D * C``.

Ties (equal feature values, equal histogram counts) go to the lower index, so the same
features always give the same sets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import cache
from .progress import bar
from .train import TrainConfig, data_identity


def check_k(dim: int, **values: int | Iterable[int]) -> None:
    """Raise ``ValueError`` naming the parameter unless every k (or k in a list) is in 1..dim."""
    for name, value in values.items():
        for k in (value if isinstance(value, (list, tuple)) else [value]):
            if not isinstance(k, int) or not 1 <= k <= dim:
                raise ValueError(f"{name}: expected an integer in 1..{dim} (the final layer's width), got {k!r}")


def check_features(features: torch.Tensor, labels: torch.Tensor) -> None:
    if features.ndim != 2:
        raise ValueError(f"features: expected N x D penultimate features, got shape {tuple(features.shape)}")
    if labels.shape != (len(features),):
        raise ValueError(f"labels: expected {len(features)} labels, got shape {tuple(labels.shape)}")


# --- penultimate features --------------------------------------------------------------

@torch.no_grad()
def penultimate_features(model: nn.Module, data: Dataset, batch_size: int = 500) -> dict[str, torch.Tensor]:
    """``{"features": N x D, "labels": N}``: what ``model.fc`` reads for every image of
    ``data`` (wrap in ``cache.call`` to keep them)."""
    if not hasattr(model, "penultimate"):
        raise TypeError(f"model: {type(model).__name__} has no penultimate(x) method")
    model.eval()
    chunks, labels = [], []
    for x, y in bar(DataLoader(data, batch_size=batch_size), desc="penultimate features"):
        chunks.append(model.penultimate(x))
        labels.append(y)
    return {"features": torch.cat(chunks), "labels": torch.cat(labels)}


# --- Algorithm 1 -------------------------------------------------------------------------

def top_k_indices(features: torch.Tensor, k: int) -> torch.Tensor:
    """N x k: per row, the indices of its ``k`` largest entries by magnitude, largest first."""
    check_k(features.shape[1], k1=k)
    # A stable sort keeps equal values in index order, so ties go to the lower index.
    return features.abs().sort(dim=1, descending=True, stable=True).indices[:, :k]


def index_histograms(features: torch.Tensor, labels: torch.Tensor, k1: int, num_classes: int) -> torch.Tensor:
    """C x D counts: how often each feature index is among the top ``k1`` of an instance of each class."""
    check_features(features, labels)
    dim = features.shape[1]
    top = top_k_indices(features, k1)
    flat = (labels[:, None] * dim + top).flatten()
    return torch.bincount(flat, minlength=num_classes * dim).view(num_classes, dim)


def most_frequent(histograms: torch.Tensor, k2: int) -> torch.Tensor:
    """C x k2: per class (row) the indices of the ``k2`` largest counts (or scores), largest first."""
    check_k(histograms.shape[1], k2=k2)
    return (-histograms).sort(dim=1, stable=True).indices[:, :k2]


@dataclass
class InfluentialFeatures:
    """The result of Algorithm 1: ``indices[c]`` are class c's ``k2`` influential features."""

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
        return torch.zeros(self.num_classes, self.dim, dtype=torch.bool).scatter_(1, self.indices, True)

    def overlap(self) -> torch.Tensor:
        """C x C: how many influential features two classes share (the diagonal is ``k2``)."""
        m = self.mask().long()
        return m @ m.T

    def union(self) -> torch.Tensor:
        """The features influential for at least one class, sorted."""
        return torch.nonzero(self.mask().any(0)).flatten()

    def summary(self) -> dict[str, float]:
        """Features per class and their share of the final width, the union's share, and
        the mean Jaccard index of two classes' sets."""
        inter = self.overlap().double()
        pairs = ~torch.eye(self.num_classes, dtype=torch.bool)
        jaccard = inter / (2 * self.k2 - inter)
        return {"features_per_class": self.k2, "fraction_of_width": self.k2 / self.dim,
                "union": len(self.union()), "union_fraction": len(self.union()) / self.dim,
                "mean_pairwise_jaccard": jaccard[pairs].mean().item()}


def influential_features(features: torch.Tensor, labels: torch.Tensor, k1: int, k2: int,
                         num_classes: int | None = None) -> InfluentialFeatures:
    """Algorithm 1 on penultimate ``features`` (N x D) of instances with ``labels``."""
    check_features(features, labels)
    check_k(features.shape[1], k1=k1, k2=k2)
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    hist = index_histograms(features, labels, k1, num_classes)
    return InfluentialFeatures(most_frequent(hist, k2), hist, k1, k2)


# --- the decomposed final layer ----------------------------------------------------------

class DecomposedLinear(nn.Module):
    """A final layer in which class c's logit reads only the features ``indices[c]``:
    ``z_c = sum_i weight[c, i] * x[indices[c, i]] + bias[c]``, with the weights copied from
    ``fc``. ``forward`` gives these logits; ``probabilities`` the decomposed softmax."""

    def __init__(self, fc: nn.Linear, indices: torch.Tensor) -> None:
        super().__init__()
        if indices.ndim != 2 or indices.shape[0] != fc.out_features:
            raise ValueError(f"indices: expected {fc.out_features} rows (one per class), got shape {tuple(indices.shape)}")
        if indices.min() < 0 or indices.max() >= fc.in_features:
            raise ValueError(f"indices: expected feature indices in 0..{fc.in_features - 1}")
        self.in_features = fc.in_features
        self.register_buffer("indices", indices.detach().clone().long())
        self.weight = nn.Parameter(fc.weight.detach().gather(1, self.indices).clone())
        self.bias = None if fc.bias is None else nn.Parameter(fc.bias.detach().clone())

    def dense_weight(self) -> torch.Tensor:
        """C x D: the kept weights in place, zeros elsewhere."""
        full = torch.zeros(self.weight.shape[0], self.in_features, dtype=self.weight.dtype, device=self.weight.device)
        return full.scatter(1, self.indices, self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The same sums as gathering each class's k2 features, but one small dense matrix
        # product is faster on a CPU than the gather (benchmarks/influence.py).
        return nn.functional.linear(x, self.dense_weight(), self.bias)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """The decomposed softmax: p_c = exp(z_c) / sum_j exp(z_j) over decomposed logits."""
        return self.forward(x).softmax(-1)

    def macs(self) -> int:
        """Multiply-accumulates per input: one per kept weight."""
        return self.indices.numel()


def linear_macs(fc: nn.Linear) -> int:
    """Multiply-accumulates per input of a full linear layer."""
    return fc.in_features * fc.out_features


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).float().mean().item()


@torch.no_grad()
def relative_accuracy_grid(fc: nn.Linear, train: dict[str, torch.Tensor], test: dict[str, torch.Tensor],
                           k1s: Iterable[int], k2s: Iterable[int]) -> pd.DataFrame:
    """One row per (k1, k2): test accuracy of the decomposed layer built from the training
    features, the full layer's accuracy and their ratio (the paper's relative accuracy).
    ``train`` and ``test`` are ``penultimate_features`` results."""
    full = accuracy(fc(test["features"]), test["labels"])
    rows = []
    for k1 in k1s:
        hist = index_histograms(train["features"], train["labels"], k1, fc.out_features)
        for k2 in k2s:
            layer = DecomposedLinear(fc, most_frequent(hist, k2))
            acc = accuracy(layer(test["features"]), test["labels"])
            rows.append({"k1": k1, "k2": k2, "accuracy": acc, "full_accuracy": full, "relative": acc / full})
    return pd.DataFrame(rows)


# --- Gaussian-noise ablation (Table 8) -----------------------------------------------------

def non_influential_indices(influential: InfluentialFeatures, seed: int = 0) -> torch.Tensor:
    """C x k2: per class, ``k2`` features drawn at random (seeded) from those not
    influential for that class."""
    if 2 * influential.k2 > influential.dim:
        raise ValueError(f"k2: {influential.k2} influential features leave fewer than {influential.k2} others "
                         f"of {influential.dim}")
    g = torch.Generator().manual_seed(seed)
    mask = influential.mask()
    rows = []
    for c in range(influential.num_classes):
        others = torch.nonzero(~mask[c]).flatten()
        rows.append(others[torch.randperm(len(others), generator=g)[:influential.k2]])
    return torch.stack(rows)


def noised_features(features: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor,
                    mean: torch.Tensor, std: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A copy of ``features`` in which each instance's features ``indices[label]`` are
    replaced by draws from N(mean_j, std_j) of each replaced feature j."""
    check_features(features, labels)
    g = torch.Generator().manual_seed(seed)
    noise = mean + std * torch.randn(features.shape, generator=g)
    replace = torch.zeros(indices.shape[0], features.shape[1], dtype=torch.bool).scatter_(1, indices, True)[labels]
    return torch.where(replace, noise, features)


@torch.no_grad()
def noise_ablation(fc: nn.Linear, influential: InfluentialFeatures, train: dict[str, torch.Tensor],
                   test: dict[str, torch.Tensor], seed: int = 0) -> dict[str, float]:
    """Test accuracy of the full final layer on the original features, with each test
    instance's influential features (of its class) replaced by Gaussian noise, and with as
    many of its non-influential features replaced. The noise has the mean and standard
    deviation of each feature over the training set."""
    mean, std = train["features"].mean(0), train["features"].std(0)
    x, y = test["features"], test["labels"]
    others = non_influential_indices(influential, seed)
    return {
        "original": accuracy(fc(x), y),
        "influential_noised": accuracy(fc(noised_features(x, y, influential.indices, mean, std, seed)), y),
        "non_influential_noised": accuracy(fc(noised_features(x, y, others, mean, std, seed)), y),
    }


# --- activation maps of influential channels (Table 7) -------------------------------------

def channel_maps(maps: torch.Tensor, channels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """N x 1 x H x W: per image the mean of its ``channels`` (N x k) of the last conv
    layer's ``maps`` (N x K x h x w), bilinearly upsampled to ``size``."""
    if channels.shape[0] != maps.shape[0]:
        raise ValueError(f"channels: expected one row per map ({maps.shape[0]}), got {channels.shape[0]}")
    picked = maps.gather(1, channels[:, :, None, None].expand(-1, -1, *maps.shape[2:]))
    return nn.functional.interpolate(picked.mean(1, keepdim=True), size=size, mode="bilinear", align_corners=False)


def foreground_share(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per map, the share of its (non-negative) mass on the foreground ``masks``; NaN for an all-zero map."""
    mass = maps.clamp_min(0).flatten(1)
    inside = (mass * masks.flatten(1).to(mass.dtype)).sum(1)
    total = mass.sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-12), torch.full_like(total, math.nan))


# --- Class-Specific Gates (Liang et al. 2020) ------------------------------------------------

@dataclass(frozen=True)
class GateConfig:
    """How the gates are trained: total loss = CE(STD path) + ``path_weight`` * CE(CSG path)
    + ``sparsity_weight`` * max(0, ||G||_1 - ``density`` * C * D). The gates start open (1),
    take plain SGD steps of ``gate_lr`` (momentum would carry them past the target density)
    and are clipped to [0, 1] after every step."""

    path_weight: float = 1.0
    sparsity_weight: float = 0.1
    density: float = 0.1
    gate_lr: float = 0.5

    def __post_init__(self) -> None:
        for name in ("path_weight", "sparsity_weight", "gate_lr"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        if not 0 <= self.density <= 1:
            raise ValueError(f"density: expected a value in [0, 1], got {self.density}")


class ClassSpecificGates(nn.Module):
    """A network with a learnable class x feature gate matrix ``gates`` (C x D, in [0, 1])
    on its penultimate features. ``forward`` is the standard (STD) path; ``gated_logits``
    the CSG path, which multiplies the features of an instance by its label's gate row;
    ``label_free_logits`` reads class c's logit through class c's gates (no label needed).
    ``model`` needs ``penultimate(x)`` and a linear ``fc``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not hasattr(model, "penultimate") or not isinstance(getattr(model, "fc", None), nn.Linear):
            raise TypeError(f"model: {type(model).__name__} needs penultimate(x) and a linear fc")
        self.model = model
        self.gates = nn.Parameter(torch.ones(model.fc.out_features, model.fc.in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def gated_logits(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """CSG path on penultimate ``features``: W (G_y * f) + b."""
        return self.model.fc(features * self.gates[labels])

    def label_free_logits(self, features: torch.Tensor) -> torch.Tensor:
        """z_c = w_c . (G_c * f) + b_c: every class through its own gates."""
        return nn.functional.linear(features, self.model.fc.weight * self.gates, self.model.fc.bias)

    def open_gates(self, threshold: float = 0.5) -> torch.Tensor:
        """C x D booleans: gates above ``threshold``."""
        return self.gates.detach() > threshold


def fit_gates(model: nn.Module, data: Dataset, config: TrainConfig = TrainConfig(),
              gates: GateConfig = GateConfig(), desc: str = "training with gates") -> ClassSpecificGates:
    """Train ``model`` (in place, from its current weights: a fresh model built under
    ``train.seeded``, or a trained one to fine-tune) and a gate matrix jointly on the STD
    and CSG paths, every batch through both; or load the cached result of that exact
    training."""
    if config.loss != "cross_entropy" or config.augment:
        raise ValueError("config: gate training supports the cross_entropy loss without augmentation")
    net = ClassSpecificGates(model)
    parts = {"model": net, "data": data_identity(data), "config": asdict(config), "gates": asdict(gates)}

    def compute() -> dict:
        g = torch.Generator().manual_seed(config.seed)
        loader = DataLoader(data, batch_size=config.batch_size, shuffle=True, generator=g)
        weights = [p for p in net.model.parameters() if p.requires_grad]
        if config.optimizer == "adam":
            opt = torch.optim.Adam(weights, lr=config.lr, weight_decay=config.weight_decay)
        else:
            opt = torch.optim.SGD(weights, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
        gate_opt = torch.optim.SGD([net.gates], lr=gates.gate_lr)
        budget = gates.density * net.gates.numel()
        steps = max(1, config.epochs * len(loader))
        sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if config.schedule == "cosine"
                 else torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0))
        history = []
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            for epoch in bar(range(1, config.epochs + 1), desc=desc):
                net.train()
                sums = {"std_loss": 0.0, "csg_loss": 0.0, "density": 0.0}
                for x, y in bar(loader, desc=f"epoch {epoch}"):
                    features = net.model.penultimate(x)
                    std = nn.functional.cross_entropy(net.model.fc(features), y)
                    csg = nn.functional.cross_entropy(net.gated_logits(features, y), y)
                    l1 = net.gates.abs().sum()
                    loss = std + gates.path_weight * csg + gates.sparsity_weight * (l1 - budget).clamp_min(0)
                    opt.zero_grad(set_to_none=True)
                    gate_opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    gate_opt.step()
                    sched.step()
                    with torch.no_grad():
                        net.gates.clamp_(0, 1)
                    for name, value in (("std_loss", std), ("csg_loss", csg), ("density", l1 / net.gates.numel())):
                        sums[name] += value.item() / len(loader)
                history.append({"epoch": epoch, **sums})
        net.eval()
        return {"state": {k: v.detach().clone() for k, v in net.state_dict().items()}, "history": history}

    entry = cache.cached("csg", parts, compute)
    net.load_state_dict(entry["state"])
    net.history = pd.DataFrame(entry["history"])
    return net.eval()


@torch.no_grad()
def gate_accuracies(net: ClassSpecificGates, test: dict[str, torch.Tensor]) -> dict[str, float]:
    """Test accuracy of the STD path, the CSG path (gates of the true label, as in
    training) and the label-free gated layer, on ``penultimate_features`` of ``net.model``."""
    x, y = test["features"], test["labels"]
    return {"std": accuracy(net.model.fc(x), y), "csg_true_label": accuracy(net.gated_logits(x, y), y),
            "csg_label_free": accuracy(net.label_free_logits(x), y)}


def gate_overlap(net: ClassSpecificGates, influential: InfluentialFeatures) -> pd.DataFrame:
    """Per class: how many of its ``k2`` largest gates (ties to the lower index) are among
    its influential features, how many that would be by chance (``k2**2 / D``), the mean
    gate on its influential and on its other features, and its open gates (> 0.5)."""
    gates = net.gates.detach()
    mask = influential.mask()
    if gates.shape != mask.shape:
        raise ValueError(f"influential: expected sets over {tuple(gates.shape)} (classes x features)")
    k2, dim = influential.k2, influential.dim
    top = torch.zeros_like(mask).scatter_(1, most_frequent(gates, k2), True)
    return pd.DataFrame({"top gates influential": (top & mask).sum(1).numpy(), "by chance": k2 * k2 / dim,
                         "mean gate, influential": ((gates * mask).sum(1) / k2).numpy(),
                         "mean gate, others": ((gates * ~mask).sum(1) / (dim - k2)).numpy(),
                         "open gates": net.open_gates().sum(1).numpy()})
