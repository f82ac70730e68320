"""Chapter 4's measurements over depths and training seeds: the decomposed final layer
("Decomposing the Deep", ``influence``), measured on every CIFAR ResNet the chapter trains
and on its placebo, the same network at its initialisation (Class-Specific Gates over the
same study: ``gates.gated_networks``).

``resnet_study`` trains ``seeds`` networks per depth (cached) beside their placebos and
reads their penultimate features once; the functions after it sweep one measure over the
study's networks and return it per network, indexed by ("trained" | "placebo", seed), the
shape ``claims.Claim.trained`` and ``trained_claim`` judge. In a placebo run
(``placebo=True``) the trained networks are the placebos, measured once.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace

import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from . import claims, evaluation, feature_noise, influence, models, train
from .influence import InfluentialFeatures, PenultimateFeatures
from .models.inputs import imagenet_statistics
from .weights import load_weights

__all__ = ["ResNetStudy", "seeded_resnet", "penultimate_width",
           "resnet_study", "decomposition_statistics", "network_statistics",
           "NOISE_CONDITIONS", "noise_table", "diagonal_curves", "retraining_accuracies",
           "trained_claim", "INPUT_NORMALISATIONS", "DecompositionGrid",
           "relative_accuracy_grid", "diagonal_margin"]



# What a network's inputs are normalised by, inside it (``models.ResNet(normalize=...)``).
INPUT_NORMALISATIONS = ("none", "imagenet")


def seeded_resnet(depth: int, seed: int, in_channels: int, num_classes: int,
                  shortcut: str = "identity", normalize=None) -> nn.Module:
    """The CIFAR ResNet that chapter 4 trains, at its initialisation from ``seed``.

    Args:
        depth: n of ResNet-n (6k + 2).
        seed: seeds the initial weights.
        in_channels: image channels.
        num_classes: classes of the final layer.
        shortcut: "identity" (He et al.'s option A) or "projection".
        normalize: (mean, std) of the inputs it reads, or None (``models.ResNet``).

    Returns:
        ``models.cifar_resnet(depth, ...)`` built under ``train.seeded(seed)``.

    Example:
        >>> a, b = seeded_resnet(8, 0, 1, 10), seeded_resnet(8, 0, 1, 10)
        >>> torch.equal(a.fc.weight, b.fc.weight), a.fc.in_features
        (True, 64)
    """
    with train.seeded(seed):
        return models.cifar_resnet(depth, in_channels=in_channels, num_classes=num_classes,
                                   shortcut=shortcut, normalize=normalize)


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


@dataclass
class DecompositionGrid:
    """The decomposed layer over a (k1, k2) grid (``relative_accuracy_grid``).

    Args:
        table: one row per (k1, k2) with the decomposed layer's test accuracy, the full
            layer's and their ratio (the paper's relative accuracy).
        correct: N x rows, per test instance whether the decomposed layer of that row is
            right.
        full_correct: N, whether the full layer is right.

    Example:
        >>> table = pd.DataFrame({"k1": [1], "k2": [1], "accuracy": [0.5],
        ...                       "full_accuracy": [1.0], "relative": [0.5]})
        >>> grid = DecompositionGrid(table, torch.tensor([[1.0], [0.0]]), torch.ones(2))
        >>> grid.table["relative"].item(), grid.correct.shape
        (0.5, torch.Size([2, 1]))
    """

    table: pd.DataFrame
    correct: torch.Tensor
    full_correct: torch.Tensor


@torch.no_grad()
def relative_accuracy_grid(fc: nn.Linear, train: PenultimateFeatures,
                           test: PenultimateFeatures, k1s: Iterable[int],
                           k2s: Iterable[int]) -> DecompositionGrid:
    """The decomposed layer of ``fc`` for every (k1, k2) of ``k1s`` x ``k2s``, its sets found
    on the ``train`` features, measured on the ``test`` features.

    Args:
        fc: the full final layer (C classes, D features).
        train: the features on which each (k1, k2)'s influential sets are found.
        test: the features on which the layers are measured.
        k1s: top features per instance, each in 1..D.
        k2s: features kept per class, each in 1..D.

    Returns:
        ``DecompositionGrid``.

    Example:
        >>> f = PenultimateFeatures(torch.eye(3), torch.arange(3))
        >>> grid = relative_accuracy_grid(nn.Linear(3, 3), f, f, [1, 3], [3])
        >>> grid.table["relative"].tolist()  # k2 = D keeps every feature
        [1.0, 1.0]
    """
    full = influence.layer_correct(fc, test)
    rows, hits = [], []
    for k1 in k1s:
        hist = influence.index_histograms(train.features, train.labels, k1, fc.out_features)
        for k2 in k2s:
            decomposed = influence.DecomposedLinear(fc, influence.most_frequent(hist, k2))
            hits.append(influence.layer_correct(decomposed, test))
            acc = hits[-1].mean().item()
            rows.append({"k1": k1, "k2": k2, "accuracy": acc,
                         "full_accuracy": full.mean().item(),
                         "relative": acc / full.mean().item()})
    return DecompositionGrid(pd.DataFrame(rows), torch.stack(hits, 1), full)


def diagonal_margin(grid: DecompositionGrid) -> float:
    """Fig. 3's claim as one number: the median over k2 of the accuracy at k1 = k2 minus the
    best accuracy at any other k1 (> 0: k1 = k2 is best). ``grid`` has the same values for
    k1 and k2, at least two of them.

    Args:
        grid: a ``relative_accuracy_grid`` result (only its ``table`` is read).

    Returns:
        The median margin.

    Example:
        >>> table = pd.DataFrame({"k1": [1, 1, 2, 2], "k2": [1, 2, 1, 2],
        ...                       "accuracy": [0.9, 0.5, 0.7, 0.8]})
        >>> round(diagonal_margin(DecompositionGrid(table, None, None)), 2)
        0.25
    """
    acc = grid.table.pivot(index="k1", columns="k2", values="accuracy")
    if list(acc.index) != list(acc.columns) or len(acc) < 2:
        raise ValueError("grid: expected the same k1 and k2 values, at least two")
    values = torch.tensor(acc.to_numpy())
    off = values.masked_fill(torch.eye(len(values), dtype=torch.bool), -math.inf).max(0).values
    return (values.diagonal() - off).quantile(0.5).item()  # as numpy's median


def resnet_study(train_set: Dataset, test_set: Dataset, config: train.TrainConfig,
                 depths: Iterable[int], seeds: Iterable[int], *, shortcut: str = "identity",
                 device: torch.device | str | None = None, placebo: bool = False,
                 weights: dict[int, str] | None = None,
                 input_normalisation: str = "none") -> ResNetStudy:
    """Train (or load from the cache) ResNet-d from seed s for every depth and seed, beside
    each its placebo, and read all their penultimate features (cached). A depth with
    ``weights`` is not trained: its network is that checkpoint (one per depth, so one seed),
    its placebo the same architecture at its initialisation.

    Args:
        train_set: the training images (an ``ImageSet``: its shape and classes size the
            networks).
        test_set: the test images.
        config: the training; its seed is replaced by each network's.
        depths: the depths.
        seeds: the seeds.
        shortcut: as for ``seeded_resnet``.
        device: where the networks train (None: where they are built).
        placebo: train nothing, load nothing: the trained networks are the placebos.
        weights: depth -> a checkpoint (file or URL, ``weights.load_weights``) of a trained
            ResNet-depth, or None.
        input_normalisation: what every network reads: "none" (images in [0, 1]) or
            "imagenet" (normalised by ImageNet's mean and std inside the network, as
            akamaster's checkpoints were trained).

    Returns:
        ``ResNetStudy``; a loaded network's history is one row, epoch 0, with its accuracy
        on the training images (unaugmented) as "train_accuracy".

    Raises:
        WeightsError: naming ``weights``, for a checkpoint that is missing, corrupt or does
            not fit.
        ValueError: for ``weights`` with more than one seed.

    Example:
        >>> from subnets import data
        >>> tiny = data.ImageSet(torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8),
        ...                      torch.arange(8) % 2, ["a", "b"], "tiny")
        >>> study = resnet_study(tiny, tiny, train.TrainConfig(), [8], [0], placebo=True)
        >>> sorted(study.nets), study.feats[8, 0]["test"].features.shape
        ([(8, 0)], torch.Size([8, 64]))
    """
    weights, seeds = weights or {}, list(seeds)
    if input_normalisation not in INPUT_NORMALISATIONS:
        raise ValueError(f"input_normalisation: expected one of {INPUT_NORMALISATIONS}, got "
                         f"{input_normalisation!r}")
    normalize = None if input_normalisation == "none" else imagenet_statistics(
        train_set.shape[0])
    if weights and len(seeds) > 1:
        raise ValueError(f"seeds: one checkpoint per depth is one network: expected 1 seed "
                         f"with weights, got {len(seeds)}")

    def resnet(d: int, s: int, untrained: bool) -> nn.Module:
        model = seeded_resnet(d, s, train_set.shape[0], len(train_set.classes), shortcut,
                              normalize)
        model = model.to(device) if device else model
        if d in weights and not untrained:
            return load_weights(model, weights[d], parameter=f"weights[{d}]")
        return train.fit(model, train_set, replace(config, seed=s),
                         desc=f"ResNet-{d}, seed {s}", placebo=untrained)

    def features(networks: dict) -> dict:
        return {key: {split: influence.penultimate_features(n, ds)
                      for split, ds in (("train", train_set), ("test", test_set))}
                for key, n in networks.items()}

    keys = [(d, s) for d in sorted(set(depths)) for s in seeds]
    runs = {key: resnet(*key, placebo) for key in keys}
    nets = {key: r if isinstance(r, nn.Module) else r.model for key, r in runs.items()}
    # In a placebo run the networks are the placebos already.
    placebo_nets = nets if placebo else {key: resnet(*key, True).model for key in keys}
    feats = features(nets)
    histories = {key: r.history if isinstance(r, train.Trained) else pd.DataFrame([{
        "epoch": 0, "train_accuracy": influence.layer_correct(
            r.fc, feats[key]["train"]).mean().item()}]) for key, r in runs.items()}
    return ResNetStudy(nets, placebo_nets, feats, feats if placebo else features(placebo_nets),
                       histories, placebo)


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
    grid = relative_accuracy_grid(fc, train, test, k_grid, k_grid)
    noised = {f"{kind} noise: {name}": value for kind in feature_noise.NOISES
              for name, value in feature_noise.noise_ablation(
                  fc, train, test, influential, seed, kind).accuracies().items()}
    return {"full": full, "decomposed": decomposed, "relative": decomposed / full,
            "random sets": accuracy(influence.DecomposedLinear(fc, random_sets)),
            "diagonal margin": diagonal_margin(grid), **noised}


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
        The rows of ``relative_accuracy_grid`` with k1 = k2, with the network's
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
        relative_accuracy_grid(study.nets[d, s].fc, study.feats[d, s]["train"],
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
        return evaluation.evaluate(model, test_set).accuracy

    def longer(n: nn.Module, _f: dict, s: int, untrained: bool) -> float:
        model = train.fit(copy.deepcopy(n), train_set, replace(config, seed=s),
                          placebo=untrained,
                          desc=f"training the full network as long again, seed {s}").model
        return evaluation.evaluate(model, test_set).accuracy

    return pd.DataFrame({"retrained": study.per_seed(retrained, depth),
                         "trained as long again": study.per_seed(longer, depth)}
                        ).rename_axis(["network", "seed"])


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
