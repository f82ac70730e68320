"""Prunability (chapter 3): test accuracy after one-shot magnitude pruning, against the rate.

``pruned`` prunes one network one-shot (``pruning.magnitude``, layerwise or global) and,
optionally, re-estimates its batch-norm statistics, which were collected for the dense
weights. ``accuracy_curve`` sweeps every network of a dict over the pruning rates (each
network's accuracies cached), ``dense_and_pruned`` reads one rate off it as Tables 1 and 2 of
Avendaño Muñoz do, and ``emptied_layers`` counts the layers that pruning leaves without a
single weight (what global ranking does to a small network).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

from . import cache, claims, evaluation, pruning, train
from .progress import bar

__all__ = ["pruned", "pruned_accuracies", "accuracy_curve", "dense_and_pruned", "emptied_layers",
           "mean_std", "accuracy_table", "scope_comparison", "fine_tuned_table",
           "emptied_claim"]


def pruned(model: nn.Module, rate: float, scope: str = "layerwise",
           recalibration: torch.Tensor | None = None) -> nn.Module:
    """A copy of ``model`` pruned one-shot at ``rate``.

    Args:
        model: the dense network (left unchanged).
        rate: the fraction of conv and linear weights set to zero, smallest magnitude first.
        scope: "layerwise" (the rate in every layer, head kept) or "global" (all weights
            ranked together), as ``pruning.magnitude``.
        recalibration: training inputs on which batch norm is re-estimated after pruning
            (None: the dense statistics are kept).

    Returns:
        The pruned copy, with ``torch.nn.utils.prune``'s masks.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4, 2))
        >>> round(pruning.weight_sparsity(pruned(net, 0.5, "global")), 2)
        0.5
    """
    result = pruning.magnitude(model, rate, scope)
    if recalibration is not None and rate > 0:
        train.recalibrate_batch_norm(result, recalibration)
    return result


def pruned_accuracies(model: nn.Module, test_set, rates: Sequence[float],
                      scope: str = "layerwise",
                      recalibration: torch.Tensor | None = None) -> list[float]:
    """Test accuracy (%) of ``model`` pruned at every rate (cached on the model's weights,
    the test set, the rates, the scope and the recalibration inputs).

    Args:
        model: the dense network.
        test_set: an ``ImageSet`` (or dataset of pairs) to evaluate on.
        rates: pruning rates (0: the dense network).
        scope, recalibration: as in ``pruned``.

    Returns:
        One accuracy per rate, in percent.

    Example:
        >>> from subnets.data import ImageSet
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 2), nn.Flatten(), nn.Linear(2, 2))
        >>> images = ImageSet(torch.zeros(4, 1, 2, 2, dtype=torch.uint8),
        ...                   torch.tensor([0, 0, 0, 0]), ["a", "b"], "tiny")
        >>> len(pruned_accuracies(net, images, [0.0, 0.5]))
        2
    """
    rates = list(rates)

    def compute():
        return {"accuracy": [100 * evaluation.evaluate(pruned(model, r, scope, recalibration),
                                                  test_set).accuracy for r in rates]}
    parts = {"model": model, "data": test_set, "rates": rates, "scope": scope,
             "recalibration": recalibration}
    return cache.cached("rf-pruned-accuracy", parts, compute)["accuracy"]


def accuracy_curve(nets: dict[tuple, nn.Module], test_set, rates: Sequence[float],
                   scope: str = "layerwise", recalibration: torch.Tensor | None = None,
                   names: Sequence[str] = ("architecture", "level", "seed"),
                   desc: str = "pruning") -> pd.DataFrame:
    """Test accuracy of every network at every pruning rate.

    Args:
        nets: networks by key (a tuple, one entry per name in ``names``).
        test_set, rates, scope, recalibration: as in ``pruned_accuracies``.
        names: the columns the keys' entries go in.
        desc: the progress bar's label.

    Returns:
        One row per network and rate, with the key's columns, "rate" and "accuracy" (%).

    Example:
        >>> from subnets.data import ImageSet
        >>> images = ImageSet(torch.zeros(4, 1, 2, 2, dtype=torch.uint8),
        ...                   torch.tensor([0, 1, 0, 1]), ["a", "b"], "tiny")
        >>> nets = {("cnn", 1, 0): nn.Sequential(nn.Conv2d(1, 2, 2), nn.Flatten(), nn.Linear(2, 2))}
        >>> accuracy_curve(nets, images, [0.0, 0.5]).columns.tolist()
        ['architecture', 'level', 'seed', 'rate', 'accuracy']
    """
    return pd.DataFrame(
        [{**dict(zip(names, key)), "rate": r, "accuracy": acc}
         for key, m in bar(nets.items(), desc=desc)
         for r, acc in zip(rates, pruned_accuracies(m, test_set, rates, scope, recalibration))])


def dense_and_pruned(curve: pd.DataFrame, rate: float,
                     index: Sequence[str] = ("architecture", "level", "seed")) -> pd.DataFrame:
    """Per network: its dense accuracy, its accuracy pruned at ``rate`` and their difference
    (Tables 1 and 2 of Avendaño Muñoz).

    Args:
        curve: ``accuracy_curve``'s rows, rates 0 and ``rate`` among them.
        rate: the pruning rate read off.
        index: the key columns.

    Returns:
        Columns "dense", "pruned", "difference", indexed by ``index``.

    Example:
        >>> curve = pd.DataFrame({"net": [0, 0], "rate": [0.0, 0.9], "accuracy": [90.0, 40.0]})
        >>> dense_and_pruned(curve, 0.9, ["net"]).difference.tolist()
        [50.0]
    """
    table = curve.pivot_table(index=list(index), columns="rate", values="accuracy")
    for needed in (0.0, rate):
        if needed not in table.columns:
            raise ValueError(f"pruning_rate: {needed} is not among the curve's rates "
                             f"{list(table.columns)}")
    table = pd.DataFrame({"dense": table[0.0], "pruned": table[rate]})
    return table.assign(difference=table.dense - table.pruned)


def emptied_layers(model: nn.Module, rate: float, scope: str = "layerwise") -> int:
    """The conv and linear layers left without a single weight by pruning at ``rate``.

    Args:
        model: the dense network.
        rate, scope: as in ``pruned``.

    Returns:
        How many layers pruning emptied.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
        >>> _ = nn.init.constant_(net[0].weight, 0.001)
        >>> emptied_layers(net, 0.5, "global"), emptied_layers(net, 0.5, "layerwise")
        (1, 0)
    """
    result = pruning.magnitude(model, rate, scope)
    return sum(int((m.weight == 0).all()) for m in result.modules() if hasattr(m, "weight_mask"))


def mean_std(values: pd.Series) -> str:
    """``values`` as "mean ± standard deviation" (Bessel's correction), one decimal: the
    format of the paper's tables.

    Args:
        values: the values over seeds.

    Returns:
        The text.

    Example:
        >>> mean_std(pd.Series([90.0, 92.0]))
        '91.0 ± 1.4'
    """
    return f"{values.mean():.1f} ± {values.std():.1f}"


def accuracy_table(per_seed: pd.DataFrame, placebo: pd.DataFrame, rate: float,
                   fields: pd.Series | None = None) -> pd.DataFrame:
    """Tables 1 and 2 of Avendaño Muñoz: per variant, mean ± standard deviation over seeds
    of the dense and pruned accuracies and their difference, with the placebo's.

    Args:
        per_seed: ``dense_and_pruned`` of the trained networks.
        placebo: the same of the placebo networks.
        rate: the pruning rate (for the column names).
        fields: the receptive field of each (architecture, level), shown first.

    Returns:
        One row per (architecture, level).

    Example:
        >>> index = pd.MultiIndex.from_tuples([("vgg", 1, 0), ("vgg", 1, 1)],
        ...                                   names=["architecture", "level", "seed"])
        >>> frame = pd.DataFrame({"dense": [90.0, 92.0], "pruned": [10.0, 12.0]}, index)
        >>> frame["difference"] = frame.dense - frame.pruned
        >>> accuracy_table(frame, frame, 0.9).iloc[0, 0]
        '91.0 ± 1.4'
    """
    table = per_seed.groupby(["architecture", "level"])[["dense", "pruned", "difference"]].agg(
        mean_std)
    table.columns = ["dense test accuracy", f"pruned test accuracy ({rate:.0%})", "difference"]
    if fields is not None:
        table.insert(0, "receptive field", fields)
    untrained = placebo.groupby(["architecture", "level"]).agg(mean_std)
    table["placebo: dense / pruned"] = untrained.dense + " / " + untrained.pruned
    return table


def scope_comparison(nets: dict[tuple, nn.Module], test_set, rate: float,
                     recalibration: torch.Tensor) -> pd.DataFrame:
    """The two one-shot pruning variants side by side at ``rate``: layerwise ranking with
    batch norm re-estimated on ``recalibration``, and global ranking with the dense
    statistics, with the layers that global ranking empties.

    Args:
        nets: networks by (architecture, level, seed) key.
        test_set: the images to evaluate on.
        rate: the pruning rate.
        recalibration: training inputs for the layerwise variant's batch norm.

    Returns:
        One row per network, with "layerwise, recalibrated" and "global, dense statistics"
        accuracies (%), and "layers emptied (global)".

    Example:
        >>> from subnets.data import ImageSet
        >>> images = ImageSet(torch.zeros(4, 1, 2, 2, dtype=torch.uint8),
        ...                   torch.tensor([0, 1, 0, 1]), ["a", "b"], "tiny")
        >>> nets = {("cnn", 1, 0): nn.Sequential(nn.Conv2d(1, 2, 2), nn.Flatten(), nn.Linear(2, 2))}
        >>> scope_comparison(nets, images, 0.5, images.tensors()[0]).columns.tolist()[-1]
        'layers emptied (global)'
    """
    variants = {"layerwise, recalibrated": ("layerwise", recalibration),
                "global, dense statistics": ("global", None)}
    table = pd.concat({name: accuracy_curve(nets, test_set, [rate], scope, x, desc=name)
                       .set_index(["architecture", "level", "seed"]).accuracy
                       for name, (scope, x) in variants.items()}, axis=1)
    table["layers emptied (global)"] = [emptied_layers(m, rate, "global") for m in nets.values()]
    return table


def fine_tuned_table(per_seed: pd.DataFrame, tuned: dict[tuple, nn.Module],
                     test_set) -> pd.DataFrame:
    """The pruned networks after fine-tuning with their masks kept: per variant, mean ±
    standard deviation over seeds of the dense, pruned and fine-tuned test accuracies, and
    the mean weight sparsity of the fine-tuned networks (the masks held if it stays at the
    pruning rate).

    Args:
        per_seed: ``dense_and_pruned`` of the dense networks.
        tuned: the fine-tuned networks, by the same (architecture, level, seed) keys.
        test_set: the images to evaluate on.

    Returns:
        One row per (architecture, level).

    Example:
        >>> from subnets.data import ImageSet
        >>> images = ImageSet(torch.zeros(4, 1, 2, 2, dtype=torch.uint8),
        ...                   torch.tensor([0, 1, 0, 1]), ["a", "b"], "tiny")
        >>> net = pruned(nn.Sequential(nn.Conv2d(1, 2, 2), nn.Flatten(), nn.Linear(2, 2)), 0.5)
        >>> index = pd.MultiIndex.from_tuples([("cnn", 1, 0)], names=["architecture", "level",
        ...                                                           "seed"])
        >>> per_seed = pd.DataFrame({"dense": [50.0], "pruned": [50.0]}, index)
        >>> fine_tuned_table(per_seed, {("cnn", 1, 0): net}, images)["weight sparsity"].item()
        0.333
    """
    frame = per_seed[["dense", "pruned"]].assign(
        **{"fine-tuned": pd.Series({k: 100 * evaluation.evaluate(m, test_set).accuracy
                                    for k, m in tuned.items()}),
           "sparsity": pd.Series({k: pruning.weight_sparsity(m) for k, m in tuned.items()})})
    groups = frame.groupby(["architecture", "level"])
    table = groups[["dense", "pruned", "fine-tuned"]].agg(mean_std)
    table["weight sparsity"] = groups.sparsity.mean().round(3)
    return table


def emptied_claim(nets: dict[str, nn.Module], rate: float,
                  scope: str = "layerwise") -> claims.Claim:
    """The claims row (a setting: shown, not judged) counting the layers that pruning at
    ``rate`` empties in each network.

    Args:
        nets: one network per architecture, by name.
        rate, scope: as in ``pruned``.

    Returns:
        A ``claims.Claim`` without a rule.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
        >>> emptied_claim({"mlp": net}, 0.5).shown
        'mlp: 0'
    """
    emptied = {name: emptied_layers(model, rate, scope) for name, model in nets.items()}
    return claims.Claim(f"layers emptied by {scope} pruning at {rate:.0%} (largest field)",
                        "(not stated)", float(sum(emptied.values())),
                        shown=", ".join(f"{a}: {n}" for a, n in emptied.items()))
