"""Class-Specific Gates (Liang et al. 2020), the supervised counterpart of chapter 4's
influential features: a learnt class x feature gate matrix on a network's penultimate
features, trained by alternating a gated (CSG) path and the standard (STD) path.

The gates act only in training: a network classifies a new image by its STD path, since
the label that would pick an image's gates is what it has to find. ``gate_statistics``
reads one gated network the way chapter 4 judges it, beside the influential features of
``influence`` (Algorithm 1 of "Decomposing the Deep").
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from . import cache, devices, influence, metrics
from .batches import data_identity
from .devices import to_host, to_model
from .evaluation import predicted_labels
from .influence import (
    DecomposedLinear,
    InfluentialFeatures,
    InfluentialFeatureSelection,
    PenultimateFeatures,
    layer_correct,
    most_frequent,
)
from .train import Objective, TrainConfig, batch_shape, config_key, run_training

if TYPE_CHECKING:  # decomposition's sweeps come first; this module only reads them
    from . import decomposition

__all__ = ["ClassSpecificGates", "GateAccuracy", "GateConfig", "fit_gates", "gate_accuracies",
           "gate_overlap", "gate_statistics", "GatedNetworks", "gated_networks"]


@dataclass(frozen=True)
class GateConfig:
    """How the gates are trained, after Liang et al.'s code (CSGCNN).

    Training alternates epochs, ``period - 1`` CSG epochs then one standard (STD) epoch; a
    CSG epoch minimises CE(CSG path) + ``sparsity_weight`` * max(0, ||G||_1 - ``density`` *
    C * D), and after every CSG step each feature's gates are divided by their largest
    (over classes) and clipped to [0, 1]. The gates take plain SGD steps of ``gate_lr``
    (the weights take the training configuration's optimiser).

    Args:
        sparsity_weight: weight of the L1 hinge (Liang et al.: 0.001).
        density: the gates' target density (Liang et al.: 0.2).
        gate_lr: the gates' SGD step.
        init: the gates' initial value.
        period: epochs per cycle, the last of them an STD epoch (1: CSG epochs only).

    Example:
        >>> [GateConfig(period=3).is_csg_epoch(e) for e in (1, 2, 3, 4)]
        [True, True, False, True]
        >>> GateConfig(density=2)
        Traceback (most recent call last):
        ...
        ValueError: density: expected a value in [0, 1], got 2
    """

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
        """Whether ``epoch`` (counted from 1) trains the CSG path; with ``period`` 1 every
        epoch does."""
        return self.period == 1 or epoch % self.period != 0


class ClassSpecificGates(nn.Module):
    """A network with a learnable class x feature gate matrix ``gates`` (C x D, in [0, 1])
    on its penultimate features, used only in training.

    ``forward`` is the standard (STD) path, the network as it classifies new images;
    ``gated_logits`` the CSG path of training, which multiplies an instance's features by
    its label's gate row; ``label_free_logits`` reads class c's logit through class c's
    gates (no label needed).

    Args:
        model: a network with ``penultimate(x)`` and a linear final layer ``fc``.
        init: the gates' initial value.

    Example:
        >>> class Head(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc = nn.Linear(4, 3)
        ...     def penultimate(self, x):
        ...         return x
        ...     def forward(self, x):
        ...         return self.fc(x)
        >>> net = ClassSpecificGates(Head(), init=1.0)
        >>> x = torch.rand(2, 4)
        >>> torch.allclose(net.label_free_logits(x), net(x))  # open gates change nothing
        True
    """

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
    """Train ``model`` with a gate matrix, alternating CSG and STD epochs, or load the
    cached result of that exact training.

    The training is ``train.run_training``'s, on the gates' objective; ``config``'s
    optimiser and schedule drive the weights in both kinds of epoch.

    Args:
        model: trained in place from its current weights (a fresh model built under
            ``train.seeded``, or a trained one to fine-tune); needs ``penultimate(x)`` and
            a linear ``fc``.
        data: the training set of (image, label) pairs.
        config: the weights' training (default ``TrainConfig()``); its loss must be
            cross-entropy.
        gates: the gates' training (default ``GateConfig()``).
        desc: the progress bar's label.
        placebo: train nothing (as ``train.fit(..., placebo=True)``): the model keeps its
            weights, the gates their initial value, and the history is empty.

    Returns:
        The gated network, in eval mode; ``history`` has one row per epoch: its path, its
        mean cross-entropy and sparsity hinge over the batches, and the gates' density
        after it.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> from subnets import models
        >>> net = fit_gates(models.cifar_resnet(8, 1, 2), TensorDataset(
        ...     torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])), placebo=True)
        >>> net.gates.shape, len(net.history)
        (torch.Size([2, 64]), 0)
    """
    config = TrainConfig() if config is None else config
    gates = GateConfig() if gates is None else gates
    if config.loss != "cross_entropy":
        raise ValueError("config: gate training supports the cross_entropy loss")
    net = ClassSpecificGates(model, gates.init)
    if placebo:
        net.history = pd.DataFrame(columns=["epoch", "path", "loss", "sparsity", "density"])
        return net.eval()
    parts = {"model": net, "data": data_identity(data),
             "config": config_key(net, config, batch_shape(data, config.batch_size)),
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


def _hits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per instance, 1.0 where the predicted label is ``labels``', else 0.0 (on the CPU)."""
    return to_host((predicted_labels(logits) == labels.to(logits.device)).float())


@dataclass
class GateAccuracy:
    """Per test instance (1.0 right, 0.0 wrong), the two read-outs of a gated network that
    need no label.

    Args:
        std: its STD path (how it classifies new images; the gates act only in training).
        label_free: its label-free gated read-out z_c = w_c . (G_c * f) + b_c.

    Example:
        >>> hits = GateAccuracy(std=torch.tensor([1.0, 0.0]), label_free=torch.tensor([1.0, 1.0]))
        >>> hits.std.mean().item(), hits.label_free.mean().item()
        (0.5, 1.0)
    """

    std: torch.Tensor
    label_free: torch.Tensor


@torch.no_grad()
def gate_accuracies(net: ClassSpecificGates, test: PenultimateFeatures) -> GateAccuracy:
    """Both label-free read-outs of ``net``, right or wrong per instance.

    Args:
        net: the gated network.
        test: penultimate features of ``net.model`` with their labels (used only to score).

    Returns:
        ``GateAccuracy`` on the CPU.

    Example:
        >>> from subnets import models
        >>> net = ClassSpecificGates(models.cifar_resnet(8, 1, 2), init=1.0)
        >>> f = PenultimateFeatures(torch.rand(3, 64), torch.tensor([0, 1, 1]))
        >>> hits = gate_accuracies(net, f)
        >>> torch.equal(hits.std, hits.label_free)  # open gates: the same read-out
        True
    """
    x, y = to_model(net, test.features, test.labels)
    return GateAccuracy(std=layer_correct(net.model.fc, test),
                        label_free=_hits(net.label_free_logits(x), y))


def gate_overlap(net: ClassSpecificGates, influential: InfluentialFeatures) -> pd.DataFrame:
    """Per class, how the gates meet the influential features.

    Args:
        net: the gated network.
        influential: the influential sets of ``net.model`` (one per class of its gates).

    Returns:
        One row per class, with how many of its ``k2`` largest gates (ties to the lower index)
        are among its influential features ("top gates influential"), how many that would
        be by chance ("by chance", ``k2**2 / D``), the mean gate on its influential and on
        its other features, and its open gates (> 0.5).

    Example:
        >>> from subnets import models
        >>> from subnets.influence import InfluentialFeatures
        >>> net = ClassSpecificGates(models.cifar_resnet(8, 1, 2))
        >>> sets = InfluentialFeatures(indices=torch.tensor([[0], [1]]),
        ...                            histograms=torch.zeros(2, 64), k1=1, k2=1)
        >>> gate_overlap(net, sets)["top gates influential"].tolist()  # gates tie: index 0
        [1, 0]
    """
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
    """What chapter 4 judges of one gated network; a sweep over networks calls it once each.

    Args:
        net: the gated network.
        train: penultimate features of ``net.model`` on which to find its influential sets.
        test: its penultimate features on which to measure.
        k1: Algorithm 1's top features per instance.
        k2: Algorithm 1's features kept per class.

    Returns:
        The accuracies of its STD path ("STD"), of its CSG path, which gates an image's
        features by its label's row ("CSG, label"), of its label-free gated read-out
        ("label-free") and of its decomposed layer ("decomposed"), and how many of a
        class's ``k2`` largest gates are its influential features, mean over the classes
        ("top gates influential"), against chance ("by chance").

    Example:
        >>> from subnets import models
        >>> net = ClassSpecificGates(models.cifar_resnet(8, 1, 2))
        >>> f = PenultimateFeatures(torch.rand(6, 64), torch.tensor([0, 1] * 3))
        >>> sorted(gate_statistics(net, f, f, k1=2, k2=2))[:3]
        ['CSG, label', 'STD', 'by chance']
    """
    hits = gate_accuracies(net, test)
    found = InfluentialFeatureSelection(net.model, k1=k1, k2=k2).select(train)
    decomposed = layer_correct(DecomposedLinear(net.model.fc, found.indices), test)
    overlap = gate_overlap(net, found)
    x, y = to_model(net, test.features, test.labels)
    labelled = _hits(net.gated_logits(x, y), y)
    return {"STD": hits.std.mean().item(), "CSG, label": labelled.mean().item(),
            "label-free": hits.label_free.mean().item(),
            "decomposed": decomposed.mean().item(),
            "top gates influential": overlap["top gates influential"].mean(),
            "by chance": k2 * k2 / found.dim}


# --- chapter 4's sweep: every seed's network, trained and placebo, with gates ------------

@dataclass
class GatedNetworks:
    """Every seed's network fine-tuned with gates, keyed (kind, seed) (``gated_networks``).

    Args:
        nets: the gated networks.
        feats: their penultimate features, {"train": ..., "test": ...}.
        statistics: ``gate_statistics`` per network, indexed (network, seed).

    Example:
        >>> from subnets import models
        >>> net = ClassSpecificGates(models.cifar_resnet(8, 1, 2))
        >>> f = PenultimateFeatures(torch.rand(4, 64), torch.tensor([0, 1] * 2))
        >>> stats = pd.DataFrame({("placebo", 0): gate_statistics(net, f, f, k1=2, k2=2)})
        >>> gated = GatedNetworks({("placebo", 0): net}, {("placebo", 0): {"train": f, "test": f}},
        ...                       stats.T.rename_axis(["network", "seed"]))
        >>> float(gated.statistics.loc["placebo", 0]["by chance"])  # k2 * k2 / D
        0.0625
    """

    nets: dict[tuple[str, int], ClassSpecificGates]
    feats: dict[tuple[str, int], dict[str, PenultimateFeatures]]
    statistics: pd.DataFrame


def gated_networks(study: decomposition.ResNetStudy, depth: int, train_set: Dataset,
                   test_set: Dataset, config: TrainConfig, gate_config: GateConfig, k1: int,
                   k2: int) -> GatedNetworks:
    """Every seed's ResNet-``depth`` fine-tuned with Class-Specific Gates (a placebo: nothing
    trained, the gates at their initial value), measured by ``gate_statistics``.

    Args:
        study: the networks.
        depth: the depth.
        train_set: the images to fine-tune on.
        test_set: the images to measure on.
        config: the fine-tuning of the weights (its seed replaced by each network's).
        gate_config: the gates' training.
        k1: top features per instance.
        k2: features kept per class.

    Returns:
        ``GatedNetworks``.

    Example:
        >>> from subnets import data, decomposition
        >>> tiny = data.ImageSet(torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8),
        ...                      torch.arange(8) % 2, ["a", "b"], "tiny")
        >>> study = decomposition.resnet_study(tiny, tiny, TrainConfig(), [8], [0], placebo=True)
        >>> gated = gated_networks(study, 8, tiny, tiny, TrainConfig(),
        ...                        GateConfig(), 2, 2)
        >>> float(gated.statistics.loc["placebo", 0]["by chance"])  # k2 * k2 / D
        0.0625
        >>> bool(gated.nets["placebo", 0].gates.eq(0.5).all())  # untrained: at their init
        True
    """
    def gated(n: nn.Module, _f: dict, s: int, untrained: bool) -> tuple:
        net = fit_gates(copy.deepcopy(n), train_set, replace(config, seed=s),
                              gate_config, desc=f"training with gates, seed {s}",
                              placebo=untrained)
        feats = {split: influence.penultimate_features(net.model, ds)
                 for split, ds in (("train", train_set), ("test", test_set))}
        return net, feats, gate_statistics(net, feats["train"], feats["test"],
                                                 k1=k1, k2=k2)

    out = study.per_seed(gated, depth)
    table = pd.DataFrame({key: stats for key, (*_, stats) in out.items()}).T
    return GatedNetworks({key: v[0] for key, v in out.items()},
                         {key: v[1] for key, v in out.items()},
                         table.rename_axis(["network", "seed"]))
