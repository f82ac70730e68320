"""Chapter 4's measurements over depths and training seeds: the decomposed final layer
("Decomposing the Deep", ``influence``) and Class-Specific Gates (``gates``) measured on
every CIFAR ResNet the chapter trains and on its placebo, the same network at its
initialisation.

``resnet_study`` trains ``seeds`` networks per depth (cached) beside their placebos and
reads their penultimate features once; the functions after it sweep one measure over the
study's networks and return it per network, indexed by ("trained" | "placebo", seed), the
shape ``claims.Claim.trained`` and ``trained_claim`` judge. In a placebo run
(``placebo=True``) the trained networks are the placebos, measured once.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace

import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from . import claims, feature_noise, gates, influence, models, train
from .influence import InfluentialFeatures, PenultimateFeatures

__all__ = ["ResNetStudy", "GatedNetworks", "seeded_resnet", "penultimate_width",
           "resnet_study", "decomposition_statistics", "network_statistics",
           "NOISE_CONDITIONS", "noise_table", "diagonal_curves", "retraining_accuracies",
           "gated_networks", "trained_claim"]



def seeded_resnet(depth: int, seed: int, in_channels: int, num_classes: int,
                  shortcut: str = "identity") -> nn.Module:
    """The CIFAR ResNet that chapter 4 trains, at its initialisation from ``seed``.

    Args:
        depth: n of ResNet-n (6k + 2).
        seed: seeds the initial weights.
        in_channels: image channels.
        num_classes: classes of the final layer.
        shortcut: "identity" (He et al.'s option A) or "projection".

    Returns:
        ``models.cifar_resnet(depth, ...)`` built under ``train.seeded(seed)``.

    Example:
        >>> a, b = seeded_resnet(8, 0, 1, 10), seeded_resnet(8, 0, 1, 10)
        >>> torch.equal(a.fc.weight, b.fc.weight), a.fc.in_features
        (True, 64)
    """
    with train.seeded(seed):
        return models.cifar_resnet(depth, in_channels=in_channels, num_classes=num_classes,
                                   shortcut=shortcut)


def penultimate_width(depths: Iterable[int], shortcut: str = "identity",
                      **ks: int | list[int]) -> int:
    """The final layer's width D shared by the CIFAR ResNets of ``depths``, checking every
    depth (a depth that is not 6k + 2 fails here, before any training) and every k of
    ``ks`` against it (``influence.check_k``).

    Args:
        depths: the depths to check.
        shortcut: as for ``seeded_resnet``.
        **ks: k values (or lists of them) by parameter name, each to lie in 1..D.

    Returns:
        D (64 for every CIFAR ResNet).

    Example:
        >>> penultimate_width([8, 20], k1=5, k_grid=[1, 64])
        64
        >>> penultimate_width([8], k2=65)
        Traceback (most recent call last):
        ...
        ValueError: k2: expected an integer in 1..64 (the final layer's width), got 65
    """
    widths = {models.cifar_resnet(d, shortcut=shortcut).fc.in_features for d in sorted(depths)}
    if len(widths) != 1:
        raise ValueError(f"depths: expected networks of one final-layer width, got {widths}")
    width = widths.pop()
    influence.check_k(width, **ks)
    return width


@dataclass
class ResNetStudy:
    """Networks keyed (depth, seed), trained and placebo, with their penultimate features.

    Args:
        nets: the trained networks (the placebos in a placebo run).
        placebo_nets: the same networks at their initialisation.
        feats: per network, {"train": ..., "test": ...} ``PenultimateFeatures``.
        placebo_feats: the same for the placebos.
        histories: per trained network, its training history.
        placebo: whether this is a placebo run (nothing trained).

    Example:
        >>> from subnets import data
        >>> tiny = data.ImageSet(torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8),
        ...                      torch.arange(8) % 2, ["a", "b"], "tiny")
        >>> study = resnet_study(tiny, tiny, train.TrainConfig(), [8], [0], placebo=True)
        >>> study.seeds, list(study.per_seed(lambda n, f, s, untrained: s, 8).values())
        ([0], [0, 0])
        >>> list(study.accuracies().columns)
        ['final training accuracy', 'test accuracy', "placebo's test accuracy"]
    """

    nets: dict[tuple[int, int], nn.Module]
    placebo_nets: dict[tuple[int, int], nn.Module]
    feats: dict[tuple[int, int], dict[str, PenultimateFeatures]]
    placebo_feats: dict[tuple[int, int], dict[str, PenultimateFeatures]]
    histories: dict[tuple[int, int], pd.DataFrame]
    placebo: bool = False

    @property
    def seeds(self) -> list[int]:
        """The training seeds, in order."""
        return sorted({s for _, s in self.nets})

    def networks(self, kind: str) -> tuple[dict, dict]:
        """The networks of ``kind`` ("trained" or "placebo") and their features."""
        return (self.nets, self.feats) if kind == "trained" else (self.placebo_nets,
                                                                  self.placebo_feats)

    def per_seed(self, measure: Callable, depth: int) -> dict[tuple[str, int], object]:
        """``measure(network, its features, seed, untrained)`` of every seed's ResNet-
        ``depth``, trained and placebo, keyed (kind, seed); once each in a placebo run."""
        out = {("trained", s): measure(self.nets[depth, s], self.feats[depth, s], s,
                                       self.placebo) for s in self.seeds}
        return out | {("placebo", s): out["trained", s] if self.placebo else measure(
            self.placebo_nets[depth, s], self.placebo_feats[depth, s], s, True)
            for s in self.seeds}

    def accuracies(self) -> pd.DataFrame:
        """Per network: its final training accuracy, its test accuracy and its placebo's."""
        def test_accuracy(kind: str, key: tuple[int, int]) -> float:
            nets, feats = self.networks(kind)
            return influence.layer_correct(nets[key].fc, feats[key]["test"]).mean().item()

        return pd.DataFrame({f"ResNet-{d}, seed {s}": {
            "final training accuracy": self.histories[d, s]["train_accuracy"].iloc[-1],
            "test accuracy": test_accuracy("trained", (d, s)),
            "placebo's test accuracy": test_accuracy("placebo", (d, s))}
            for d, s in self.nets}).T


def resnet_study(train_set: Dataset, test_set: Dataset, config: train.TrainConfig,
                 depths: Iterable[int], seeds: Iterable[int], *, shortcut: str = "identity",
                 device: torch.device | str | None = None,
                 placebo: bool = False) -> ResNetStudy:
    """Train (or load from the cache) ResNet-d from seed s for every depth and seed, beside
    each its placebo, and read all their penultimate features (cached).

    Args:
        train_set: the training images (an ``ImageSet``: its shape and classes size the
            networks).
        test_set: the test images.
        config: the training; its seed is replaced by each network's.
        depths: the depths.
        seeds: the seeds.
        shortcut: as for ``seeded_resnet``.
        device: where the networks train (None: where they are built).
        placebo: train nothing: the trained networks are the placebos.

    Returns:
        ``ResNetStudy``.

    Example:
        >>> from subnets import data
        >>> tiny = data.ImageSet(torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8),
        ...                      torch.arange(8) % 2, ["a", "b"], "tiny")
        >>> study = resnet_study(tiny, tiny, train.TrainConfig(), [8], [0], placebo=True)
        >>> sorted(study.nets), study.feats[8, 0]["test"].features.shape
        ([(8, 0)], torch.Size([8, 64]))
    """
    def resnet(d: int, s: int, untrained: bool) -> train.Trained:
        model = seeded_resnet(d, s, train_set.shape[0], len(train_set.classes), shortcut)
        return train.fit(model.to(device) if device else model, train_set, replace(config, seed=s),
                         desc=f"ResNet-{d}, seed {s}", placebo=untrained)

    def features(networks: dict) -> dict:
        return {key: {split: influence.penultimate_features(n, ds)
                      for split, ds in (("train", train_set), ("test", test_set))}
                for key, n in networks.items()}

    keys = [(d, s) for d in sorted(set(depths)) for s in seeds]
    runs = {key: resnet(*key, placebo) for key in keys}
    nets = {key: r.model for key, r in runs.items()}
    # In a placebo run the networks are the placebos already.
    placebo_nets = nets if placebo else {key: resnet(*key, True).model for key in keys}
    feats = features(nets)
    return ResNetStudy(nets, placebo_nets, feats, feats if placebo else features(placebo_nets),
                       {key: r.history for key, r in runs.items()}, placebo)


@torch.no_grad()
def decomposition_statistics(fc: nn.Linear, train: PenultimateFeatures,
                             test: PenultimateFeatures, influential: InfluentialFeatures,
                             k_grid: Iterable[int], seed: int = 0) -> dict[str, float]:
    """What chapter 4 judges of one network's final layer, on its ``test`` features; a
    sweep over networks (``network_statistics``) calls it once each.

    Args:
        fc: the final layer.
        train: its training features (Fig. 3's sets, the noise's statistics).
        test: its test features.
        influential: its influential sets.
        k_grid: the values of k1 and k2 of Fig. 3's grid.
        seed: the random sets' and the noise's seed.

    Returns:
        The full layer's accuracy ("full"), the decomposed layer's on the ``influential``
        sets ("decomposed"), its ratio to the full one ("relative"), a decomposed layer's on
        as many random features per class ("random sets",
        ``influence.random_feature_sets(..., seed)``), Fig. 3's ``diagonal_margin`` over
        ``k_grid`` ("diagonal margin") and the accuracies of ``feature_noise.noise_ablation`` with
        each of ``feature_noise.NOISES`` ("<noise> noise: <condition>").

    Example:
        >>> from subnets.influence import InfluentialFeatureSelection
        >>> net = seeded_resnet(8, 0, 1, 2)
        >>> f = PenultimateFeatures(torch.rand(8, 64), torch.arange(8) % 2)
        >>> sets = InfluentialFeatureSelection(net, k1=2, k2=2).select(f)
        >>> stats = decomposition_statistics(net.fc, f, f, sets, [1, 2])
        >>> stats["relative"] == stats["decomposed"] / stats["full"]
        True
    """
    def accuracy(layer: nn.Module) -> float:
        return influence.layer_correct(layer, test).mean().item()

    full = accuracy(fc)
    decomposed = accuracy(influence.DecomposedLinear(fc, influential.indices))
    random_sets = influence.random_feature_sets(influential.num_classes, influential.dim,
                                                influential.k2, seed)
    grid = influence.relative_accuracy_grid(fc, train, test, k_grid, k_grid)
    noised = {f"{kind} noise: {name}": value for kind in feature_noise.NOISES
              for name, value in feature_noise.noise_ablation(
                  fc, train, test, influential, seed, kind).accuracies().items()}
    return {"full": full, "decomposed": decomposed, "relative": decomposed / full,
            "random sets": accuracy(influence.DecomposedLinear(fc, random_sets)),
            "diagonal margin": influence.diagonal_margin(grid), **noised}


def network_statistics(study: ResNetStudy, k1: int, k2: int,
                       k_grid: list[int]) -> pd.DataFrame:
    """``decomposition_statistics`` of every network, each with its own
    influential sets (Algorithm 1 with ``k1``, ``k2`` on its training features).

    Args:
        study: the networks.
        k1: top features per instance.
        k2: features kept per class.
        k_grid: the (k1, k2) grid of Fig. 3's margin.

    Returns:
        One row per network, indexed (network, depth, seed).

    Example:
        >>> from subnets import data
        >>> tiny = data.ImageSet(torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8),
        ...                      torch.arange(8) % 2, ["a", "b"], "tiny")
        >>> study = resnet_study(tiny, tiny, train.TrainConfig(), [8], [0], placebo=True)
        >>> table = network_statistics(study, 2, 2, [1, 2])
        >>> table.index.tolist(), bool(table.loc["trained", 8, 0]["full"] <= 1)
        ([('trained', 8, 0), ('placebo', 8, 0)], True)
    """
    def statistics(kind: str) -> pd.DataFrame:
        nets, feats = study.networks(kind)
        return pd.DataFrame([{"network": kind, "depth": d, "seed": s,
                              **decomposition_statistics(
                                  n.fc, feats[d, s]["train"], feats[d, s]["test"],
                                  influence.InfluentialFeatureSelection(n, k1=k1, k2=k2)
                                  .select(feats[d, s]["train"]), k_grid, s)}
                             for (d, s), n in nets.items()])

    trained = statistics("trained")
    placebo = trained.assign(network="placebo") if study.placebo else statistics("placebo")
    return pd.concat([trained, placebo]).set_index(["network", "depth", "seed"])


# The conditions of ``feature_noise.NoiseAblation``, in the order of its fields.
NOISE_CONDITIONS = tuple(f.name for f in fields(feature_noise.NoiseAblation))


def noise_table(statistics: pd.DataFrame) -> pd.DataFrame:
    """Table 8's accuracies under noise, mean over the seeds per network kind and depth,
    one column per noise kind and condition.

    Args:
        statistics: ``network_statistics``'s rows.

    Returns:
        Indexed (network, depth), columns (noise kind, condition).

    Example:
        >>> from subnets import data
        >>> tiny = data.ImageSet(torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8),
        ...                      torch.arange(8) % 2, ["a", "b"], "tiny")
        >>> study = resnet_study(tiny, tiny, train.TrainConfig(), [8], [0], placebo=True)
        >>> noise_table(network_statistics(study, 2, 2, [1, 2])).columns[1]
        ('feature noise', 'influential replaced')
    """
    names = dict(zip(NOISE_CONDITIONS, ["original", "influential replaced",
                                        "all others replaced", "as many random others replaced"]))
    table = statistics.groupby(["network", "depth"])[
        [f"{kind} noise: {c}" for kind in feature_noise.NOISES for c in NOISE_CONDITIONS]].mean()
    table.columns = pd.MultiIndex.from_tuples(
        [(f"{kind} noise", names[c]) for kind in feature_noise.NOISES for c in NOISE_CONDITIONS])
    return table


def diagonal_curves(study: ResNetStudy, depths: Iterable[int],
                    k_grid: list[int]) -> pd.DataFrame:
    """The k1 = k2 diagonal of Fig. 3 for every trained network of ``depths``.

    Args:
        study: the networks.
        depths: the depths to sweep.
        k_grid: the values of k1 = k2.

    Returns:
        The rows of ``influence.relative_accuracy_grid`` with k1 = k2, with the network's
        depth and seed.

    Example:
        >>> from subnets import data
        >>> tiny = data.ImageSet(torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8),
        ...                      torch.arange(8) % 2, ["a", "b"], "tiny")
        >>> study = resnet_study(tiny, tiny, train.TrainConfig(), [8], [0], placebo=True)
        >>> diagonal_curves(study, [8], [1, 2])[["k1", "k2", "depth"]].values.tolist()
        [[1, 1, 8], [2, 2, 8]]
    """
    return pd.concat([
        influence.relative_accuracy_grid(study.nets[d, s].fc, study.feats[d, s]["train"],
                                         study.feats[d, s]["test"], k_grid, k_grid)
        .table.query("k1 == k2").assign(depth=d, seed=s)
        for d in depths for s in study.seeds])


def retraining_accuracies(study: ResNetStudy, depth: int, train_set: Dataset,
                          test_set: Dataset, config: train.TrainConfig, k1: int,
                          k2: int) -> pd.DataFrame:
    """Section 5.2.3's retraining and its control, for every seed's ResNet-``depth``: the
    test accuracy of the network decomposed (its sets fixed) and retrained as a whole, and
    of the same network not decomposed, trained as long again. Placebos are decomposed but
    not retrained.

    Args:
        study: the networks.
        depth: the depth.
        train_set: the images to retrain on.
        test_set: the images to measure on.
        config: the retraining (its seed replaced by each network's).
        k1: top features per instance.
        k2: features kept per class.

    Returns:
        Columns "retrained" and "trained as long again", indexed (network, seed).

    Example:
        >>> from subnets import data
        >>> tiny = data.ImageSet(torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8),
        ...                      torch.arange(8) % 2, ["a", "b"], "tiny")
        >>> study = resnet_study(tiny, tiny, train.TrainConfig(), [8], [0], placebo=True)
        >>> retraining_accuracies(study, 8, tiny, tiny, train.TrainConfig(), 2, 2).shape
        (2, 2)
    """
    def retrained(n: nn.Module, f: dict, s: int, untrained: bool) -> float:
        sets = influence.InfluentialFeatureSelection(n, k1=k1, k2=k2).select(f["train"])
        model = train.fit(influence.decompose(n, sets.indices), train_set,
                          replace(config, seed=s), placebo=untrained,
                          desc=f"retraining the decomposed network, seed {s}").model
        return train.evaluate(model, test_set).accuracy

    def longer(n: nn.Module, _f: dict, s: int, untrained: bool) -> float:
        model = train.fit(copy.deepcopy(n), train_set, replace(config, seed=s),
                          placebo=untrained,
                          desc=f"training the full network as long again, seed {s}").model
        return train.evaluate(model, test_set).accuracy

    return pd.DataFrame({"retrained": study.per_seed(retrained, depth),
                         "trained as long again": study.per_seed(longer, depth)}
                        ).rename_axis(["network", "seed"])


@dataclass
class GatedNetworks:
    """Every seed's network fine-tuned with gates, keyed (kind, seed).

    Args:
        nets: the gated networks.
        feats: their penultimate features, {"train": ..., "test": ...}.
        statistics: ``gates.gate_statistics`` per network, indexed (network, seed).
    """

    nets: dict[tuple[str, int], gates.ClassSpecificGates]
    feats: dict[tuple[str, int], dict[str, PenultimateFeatures]]
    statistics: pd.DataFrame


def gated_networks(study: ResNetStudy, depth: int, train_set: Dataset, test_set: Dataset,
                   config: train.TrainConfig, gate_config: gates.GateConfig, k1: int,
                   k2: int) -> GatedNetworks:
    """Every seed's ResNet-``depth`` fine-tuned with Class-Specific Gates (a placebo: nothing
    trained, the gates at their initial value), measured by ``gates.gate_statistics``.

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
        >>> from subnets import data
        >>> tiny = data.ImageSet(torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8),
        ...                      torch.arange(8) % 2, ["a", "b"], "tiny")
        >>> study = resnet_study(tiny, tiny, train.TrainConfig(), [8], [0], placebo=True)
        >>> gated = gated_networks(study, 8, tiny, tiny, train.TrainConfig(),
        ...                        gates.GateConfig(), 2, 2)
        >>> float(gated.statistics.loc["placebo", 0]["by chance"])  # k2 * k2 / D
        0.0625
        >>> bool(gated.nets["placebo", 0].gates.eq(0.5).all())  # untrained: at their init
        True
    """
    def gated(n: nn.Module, _f: dict, s: int, untrained: bool) -> tuple:
        net = gates.fit_gates(copy.deepcopy(n), train_set, replace(config, seed=s),
                              gate_config, desc=f"training with gates, seed {s}",
                              placebo=untrained)
        feats = {split: influence.penultimate_features(net.model, ds)
                 for split, ds in (("train", train_set), ("test", test_set))}
        return net, feats, gates.gate_statistics(net, feats["train"], feats["test"],
                                                 k1=k1, k2=k2)

    out = study.per_seed(gated, depth)
    table = pd.DataFrame({key: stats for key, (*_, stats) in out.items()}).T
    return GatedNetworks({key: v[0] for key, v in out.items()},
                         {key: v[1] for key, v in out.items()},
                         table.rename_axis(["network", "seed"]))


def trained_claim(claim: str, paper: str, values: pd.Series, rule: claims.Rule | None,
                  **fields) -> claims.Claim:
    """A claim about what training produced, from a statistic per network.

    Args:
        claim: the paper's claim, in words.
        paper: the paper's value.
        values: the statistic, indexed (network, seed) with network "trained" or "placebo".
        rule: the rule that decides it.
        **fields: more ``claims.Claim`` fields (``control``, ``shown``, ...).

    Returns:
        ``claims.Claim.trained`` on the trained networks' values and their placebos'.

    Example:
        >>> values = pd.Series([0.9, 0.92, 0.5, 0.52], index=pd.MultiIndex.from_product(
        ...     [["trained", "placebo"], [0, 1]], names=["network", "seed"]))
        >>> row = trained_claim("better than chance", "0.9", values, claims.Rule(">", 0.6))
        >>> row.estimate.seeds, round(row.estimate.value, 2)
        (2, 0.91)
    """
    values = values.sort_index()
    return claims.Claim.trained(claim, paper, values.loc["trained"].to_numpy(),
                                values.loc["placebo"].to_numpy(), rule, **fields)
