"""Islam and Tushar's ablation (chapter 2): switch off the units a relevance ranks highest
(or lowest, or as many at random) in several layers at once, and measure what each class
loses.

``relevance_ablation`` runs every class, end and fraction and returns an ``AblationResult``
(per-image correctness); ``unit_quotas`` turns a fraction into whole units per layer,
``ranked_units`` picks them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import cache, hooks
from .data import ImageSet
from .evaluation import predict, predicted_labels
from .methods import LayerScores
from .metrics import accuracy_by_class
from .progress import bar

__all__ = ["ROUNDINGS", "unit_quotas", "ENDS", "ranked_units", "AblationResult",
           "relevance_ablation"]


ROUNDINGS = ("share", "ceil")


def unit_quotas(sizes: dict[str, int], fraction: float, rounding: str = "share") -> dict[str, int]:
    """How many units of each layer (``sizes``: layer -> units) ``fraction`` switches off.

    ``"share"``: ``round(fraction * all units)`` in total, split over the layers in
    proportion to their sizes by largest remainder (ties to the earlier layer), so every
    network loses the same share of its units, to one unit; a narrow layer may lose none.
    ``"ceil"``: ``ceil(fraction * U)`` in every layer, at least one unit per layer (then
    a network of many narrow layers loses a larger share: 2.2 % for "1 %" of a small
    ResNet18).

    Args:
        sizes: layer -> its number of units.
        fraction: the share switched off, in [0, 1].
        rounding: "share" or "ceil".

    Returns:
        Layer -> units switched off.

    Example:
        >>> unit_quotas({"a": 96, "b": 32}, 0.03), unit_quotas({"a": 96, "b": 32}, 0.03, "ceil")
        ({'a': 3, 'b': 1}, {'a': 3, 'b': 1})
        >>> unit_quotas({"a": 96, "b": 16}, 0.01), unit_quotas({"a": 96, "b": 16}, 0.01, "ceil")
        ({'a': 1, 'b': 0}, {'a': 1, 'b': 1})
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction: expected a value in [0, 1], got {fraction}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding: expected one of {ROUNDINGS}, got {rounding!r}")
    if rounding == "ceil":
        return {name: math.ceil(fraction * u) for name, u in sizes.items()}
    exact = {name: fraction * u for name, u in sizes.items()}
    quotas = {name: math.floor(x) for name, x in exact.items()}
    left = round(fraction * sum(sizes.values())) - sum(quotas.values())
    order = sorted(exact, key=lambda name: -(exact[name] - quotas[name]))  # stable: earlier first
    for name in order[:max(left, 0)]:
        quotas[name] += 1
    return quotas


ENDS = ("top", "bottom", "random")


def ranked_units(scores: torch.Tensor, count: int, end: str = "top",
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``count`` units with the highest (``end="top"``) or lowest (``"bottom"``) scores,
    ties broken by unit index, or ``count`` units drawn at random (``"random"``, from
    ``generator``: the control of the same size); sorted.

    Args:
        scores: one score per unit.
        count: how many units.
        end: "top", "bottom" or "random".
        generator: the random draw's generator ("random" only).

    Returns:
        The units' indices, ascending.

    Example:
        >>> ranked_units(torch.tensor([0.1, 0.5, 0.3, 0.5]), 2).tolist()
        [1, 3]
    """
    if not 0 <= count <= len(scores):
        raise ValueError(f"count: expected 0..{len(scores)}, got {count}")
    if end not in ENDS:
        raise ValueError(f"end: expected one of {ENDS}, got {end!r}")
    if end == "random":
        order = torch.randperm(len(scores), generator=generator)
    else:
        order = torch.argsort(scores, descending=end == "top", stable=True)
    return order[:count].sort().values


@dataclass
class AblationResult:
    """What ``relevance_ablation`` returns.

    Args:
        table: one row per class and setting (``end`` "none" is the intact network;
            ``draw`` numbers the random selections), with the accuracy on the class and on
            the others.
        correct: per row, which images of the data the network got right (rows x images,
            aligned with ``table``).
        labels: the images' labels.

    Example:
        See ``relevance_ablation``.
    """

    table: pd.DataFrame
    correct: torch.Tensor
    labels: torch.Tensor

    def drops(self, end: str, fraction: float, reference: str = "none") -> np.ndarray:
        """The loss of correctness on each image (1 when the ablation ranked for class c
        breaks it) from the ``reference`` setting to ``end`` at ``fraction`` (random
        selections averaged over draws).

        Args:
            end: "top", "bottom" or "random".
            fraction: one of the ablated fractions.
            reference: the setting compared with ("none": the intact network).

        Returns:
            Images x classes.
        """
        def correct_of(which: str) -> np.ndarray:
            t = self.table
            rows = t[t.end == which] if which == "none" else t[(t.end == which)
                                                              & (t.fraction == fraction)]
            columns = [self.correct[rows.index[rows["class"] == c]].float().mean(0)
                       for c in t["class"].unique()]
            return torch.stack(columns, 1).numpy()
        return correct_of(reference) - correct_of(end)

    def _class_means(self, end: str, fraction: float) -> np.ndarray:
        """Classes x ablations: the mean drop on the images of class k for the ablation
        ranked for class c (NaN for a class without images)."""
        drops, labels = self.drops(end, fraction), self.labels.numpy()
        onehot = (labels[:, None] == np.arange(drops.shape[1])).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            return onehot.T @ np.nan_to_num(drops) / onehot.sum(0)[:, None]

    def class_drop(self, end: str, fraction: float) -> float:
        """The mean over classes c of the drop on the images of c for the ablation ranked
        for c.

        Args:
            end: "top", "bottom" or "random".
            fraction: one of the ablated fractions.

        Returns:
            A drop in accuracy, 0 when nothing is lost, 1 when every image of the class is.
        """
        return float(np.nanmean(np.diag(self._class_means(end, fraction))))

    def other_drop(self, end: str, fraction: float) -> float:
        """The mean over classes c of the mean drop on the other classes' images.

        Args:
            end: "top", "bottom" or "random".
            fraction: one of the ablated fractions.

        Returns:
            A drop in accuracy.
        """
        means = self._class_means(end, fraction)
        off = ~np.eye(len(means), dtype=bool)
        return float(np.nanmean([np.nanmean(means[off[:, c], c])
                                 for c in range(means.shape[1])]))

    def specificity(self, end: str, fraction: float) -> float:
        """``class_drop`` minus ``other_drop``: how much more the ablation costs the class
        it was ranked for than the rest.

        Args:
            end: "top", "bottom" or "random".
            fraction: one of the ablated fractions.

        Returns:
            A difference of drops in accuracy.
        """
        return self.class_drop(end, fraction) - self.other_drop(end, fraction)

    def frame(self) -> pd.DataFrame:
        """The ablated rows of ``table`` with their drops from the intact network. No
        arguments.

        Returns:
            ``table`` without the intact rows, plus drop_class, drop_others and
            specificity (drop_class - drop_others).
        """
        intact = self.table[self.table.end == "none"].set_index("class")
        rows = self.table[self.table.end != "none"]
        drop_class = rows["class"].map(intact.accuracy_class) - rows.accuracy_class
        drop_others = rows["class"].map(intact.accuracy_others) - rows.accuracy_others
        return rows.assign(drop_class=drop_class, drop_others=drop_others,
                           specificity=drop_class - drop_others)


def relevance_ablation(model: nn.Module, layers: list[str], data: ImageSet, relevance: LayerScores,
                       fractions=(0.01, 0.02, 0.03), classes=None, ends=("top", "bottom"),
                       sites: dict[str, str] | None = None, rounding: str = "share",
                       random_draws: int = 1, seed: int = 0) -> AblationResult:
    """Islam and Tushar's ablation (chapter 2): for each class c, switch off the top or bottom
    ``fraction`` of the units of ``layers`` at once (``unit_quotas``: how ``rounding`` turns a
    fraction into units), ranked by column c of ``relevance`` (units x classes per layer, as
    ``ClassRelevance`` gives), or as many random units (``end="random"``, ``random_draws``
    selections from ``seed``), and record which images of ``data`` the network still
    classifies right.

    ``sites[layer]`` names the module whose output channels are switched off for the
    units of ``layer`` (default: the layer itself). For a residual block's output the
    site is the block's own conv branch before the addition (``dissection.unit_sites``),
    so the skip path stays on. Cached by model, rankings, data and settings.

    Args:
        model: the network.
        layers: the layers whose units are switched off.
        data: the images the accuracy is measured on.
        relevance: per layer, units x classes scores.
        fractions: shares of the units switched off.
        classes: the classes ranked for (None: all).
        ends: among ``ENDS``.
        sites: per layer, where its units are switched off.
        rounding: among ``ROUNDINGS`` (``unit_quotas``).
        random_draws: random selections per class and fraction.
        seed: seed of the random selections.

    Returns:
        An ``AblationResult``.

    Example:
        >>> data = ImageSet(torch.randint(0, 255, (4, 1, 4, 4), dtype=torch.uint8),
        ...                 torch.tensor([0, 1, 0, 1]), ["a", "b"], "toy")
        >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 2))
        >>> scores = LayerScores({"1": torch.rand(4, 2)})
        >>> result = relevance_ablation(model, ["1"], data, scores, fractions=[0.5])
        >>> sorted(result.table.end.unique()), result.correct.shape
        (['bottom', 'none', 'top'], torch.Size([6, 4]))
    """
    classes = list(range(data.num_classes)) if classes is None else list(classes)
    unknown = set(ends) - set(ENDS)
    if unknown:
        raise ValueError(f"ends: expected among {ENDS}, got {sorted(unknown)}")
    if random_draws < 1:
        raise ValueError(f"random_draws: expected >= 1, got {random_draws}")
    missing = [name for name in layers if name not in relevance]
    if missing:
        raise ValueError(f"relevance: no scores for layers {missing}")
    ranking = {name: relevance[name] for name in layers}
    sites = {name: (sites or {}).get(name, name) for name in ranking}
    for site in sites.values():
        hooks.layer(model, site)
    sizes = {name: r.shape[0] for name, r in ranking.items()}
    quotas = {f: unit_quotas(sizes, f, rounding) for f in fractions}
    parts = {"model": model, "relevance": ranking, "data": data, "fractions": list(fractions),
             "classes": classes, "ends": list(ends), "sites": sites, "rounding": rounding,
             "random_draws": random_draws, "seed": seed}

    def correct_with(channels: dict[str, torch.Tensor]) -> torch.Tensor:
        with hooks.Ablation(model, {sites[name]: idx for name, idx in channels.items()}):
            return predicted_labels(predict(model, data)) == data.labels

    def compute() -> dict:
        generator = torch.Generator().manual_seed(seed)
        intact = correct_with({})
        seen: dict[tuple, torch.Tensor] = {}
        rows, correct = [], []
        settings = [(c, e, f, d) for c in classes for e in ends for f in fractions
                    for d in range(random_draws if e == "random" else 1)]
        for c, end, fraction, draw in bar(settings, desc="ablation"):
            channels = {name: ranked_units(r[:, c], quotas[fraction][name], end, generator)
                        for name, r in ranking.items()}
            key = tuple(tuple(v.tolist()) for v in channels.values())
            if key not in seen:
                seen[key] = correct_with(channels)
            rows.append([c, fraction, ENDS.index(end), draw,
                         sum(len(v) for v in channels.values())])
            correct.append(seen[key])
        return {"intact": intact, "rows": torch.tensor(rows, dtype=torch.float64),
                "correct": torch.stack(correct) if correct else intact[:0]}

    def split(right: torch.Tensor, c: int) -> dict[str, float]:
        return _accuracy_split(accuracy_by_class(right, data.labels, data.classes), c)

    entry = cache.cached("relevance-ablation", parts, compute)
    names = data.classes
    records, correct = [], []
    total = sum(sizes.values())
    for c in classes:
        records.append({"class": names[c], "end": "none", "fraction": 0.0, "draw": 0,
                        "units": 0, "share": 0.0, **split(entry["intact"], c)})
        correct.append(entry["intact"])
    for (c, fraction, end, draw, units), right in zip(entry["rows"].tolist(), entry["correct"]):
        records.append({"class": names[int(c)], "end": ENDS[int(end)], "fraction": fraction,
                        "draw": int(draw), "units": int(units), "share": units / total,
                        **split(right, int(c))})
        correct.append(right)
    return AblationResult(pd.DataFrame(records), torch.stack(correct), data.labels.clone())


def _accuracy_split(per_class: pd.Series, c: int) -> dict[str, float]:
    """Accuracy on class ``c`` and the mean accuracy on the other classes (NaN if one of
    them has no images). The mean is taken in float32, the precision in which the
    per-class shares are computed."""
    accuracy = torch.tensor(per_class.to_numpy(), dtype=torch.float32)
    others = torch.cat([accuracy[:c], accuracy[c + 1:]])
    return {"accuracy_class": float(accuracy[c]), "accuracy_others": float(others.mean())}
