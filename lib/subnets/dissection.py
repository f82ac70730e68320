"""Network Dissection (Bau et al. 2017) as Islam and Tushar (chapter 2) use it: every unit is
a binary segmenter of its top-quantile activations, scored by IoU against the concept masks of
a ``probes.ProbeSet``. ``NetDissect(model, layers).dissect(probe)`` runs the method's two
passes: the threshold ``T_i`` with ``P(a_i > T_i) = quantile`` over every position of the
probe (exact, streaming: ``TopQuantile``), then the maps upsampled bilinearly to the mask
size, thresholded, and every unit's IoU with every concept in batched matrix products; the
``Dissection`` is read per layer, ``result[layer]`` being units x concepts IoU.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import cache, upsampling
from .devices import to_host, to_model
from .hooks import Recorder, activation_after, conv_layers, layer
from .methods import Dissector, LayerScores
from .probes import CATEGORIES, ProbeSet
from .progress import bar

__all__ = ["TopQuantile", "Thresholds", "Dissection", "NetDissect", "unit_layers",
           "unit_sites", "ranking_agreement", "detector_balance", "colour_shadow_share",
           "colour_gap", "detector_surge"]


class TopQuantile:
    """The upper ``quantile`` of each row of a stream of values, exactly as
    ``torch.quantile(all_values, 1 - quantile, dim=1)`` (linear interpolation) would give
    it, holding only the largest ``ceil(quantile * (total - 1)) + 1`` values of each row:
    about a ``quantile`` share of the stream instead of all of it.

    Args:
        quantile: the upper share, in (0, 1).
        total: the number of values each row will receive.

    Example:
        >>> values = torch.arange(10.0).view(1, 10)
        >>> top = TopQuantile(0.2, 10)
        >>> top.add(values[:, :6]); top.add(values[:, 6:])
        >>> top.value(), torch.quantile(values, 0.8, dim=1)
        (tensor([7.2000]), tensor([7.2000]))
    """

    def __init__(self, quantile: float, total: int) -> None:
        if not 0 < quantile < 1:
            raise ValueError(f"quantile: expected a value in (0, 1), got {quantile}")
        if total < 1:
            raise ValueError(f"total: expected >= 1, got {total}")
        position = (1 - quantile) * (total - 1)  # in ascending order, as torch.quantile
        self.low = math.floor(position)
        self.weight = position - self.low
        self.keep = total - self.low  # the values at ranks low and low + 1 are in the top `keep`
        self.total = total
        self.seen = 0
        self.top: torch.Tensor | None = None

    def add(self, values: torch.Tensor) -> None:
        """Take in more values.

        Args:
            values: rows x m.
        """
        merged = values if self.top is None else torch.cat([self.top, values], 1)
        self.top = merged.topk(min(self.keep, merged.shape[1]), dim=1).values
        self.seen += values.shape[1]

    def maximum(self) -> torch.Tensor:
        """Returns: each row's largest value so far."""
        return self.top[:, 0]

    def value(self) -> torch.Tensor:
        """Returns: each row's upper quantile, once all ``total`` values are in."""
        if self.seen != self.total:
            raise ValueError(f"TopQuantile expected {self.total} values per row, "
                             f"received {self.seen}")
        low = self.top[:, self.keep - 1]
        high = self.top[:, max(self.keep - 2, 0)]
        return low + self.weight * (high - low)


def _batches(n: int, batch_size: int, desc: str):
    return bar(range(0, n, batch_size), desc=desc, total=math.ceil(n / batch_size))


@dataclass
class Thresholds:
    """Per layer, each unit's top-quantile level ``T_i`` and whether its segmentation
    includes the level itself (``inclusive``): true for a unit whose quantile falls on its
    maximum, as a saturated ReLU6 does when more than the quantile of its positions sit at
    6; there ``S > T`` would be empty, so ``S >= T`` is used. A constant (dead) unit is
    never inclusive: it segments nothing.

    Args:
        level: per layer, each unit's ``T_i``.
        inclusive: per layer, whether each unit segments ``S >= T_i``.

    Example:
        >>> th = Thresholds({"l": torch.tensor([0.5])}, {"l": torch.tensor([False])})
        >>> th.segment("l", torch.tensor([[[[0.2, 0.7]]]])).tolist()
        [[[[False, True]]]]
    """

    level: dict[str, torch.Tensor]
    inclusive: dict[str, torch.Tensor]

    def segment(self, name: str, maps: torch.Tensor, units=slice(None)) -> torch.Tensor:
        """``M_i(x)``: the binary masks of upsampled maps.

        Args:
            name: the layer.
            maps: B x U x h x w.
            units: which of the layer's units ``maps`` holds.

        Returns:
            Booleans shaped like ``maps``.
        """
        level = self.level[name][units].to(maps.device)
        inclusive = self.inclusive[name][units].to(maps.device)
        # S >= T is S > (the float just below T): one comparison for both kinds of unit.
        level = torch.where(inclusive, torch.nextafter(level, torch.full_like(level, -math.inf)),
                            level)
        return maps > level.view(1, -1, 1, 1)


@dataclass
class Dissection(LayerScores):
    """What ``NetDissect.dissect`` returns, read per dissected layer: ``result[layer]`` is
    the units x concepts IoU; ``thresholds`` holds the units' levels ``T_i``.

    Args:
        scores: layer name -> units x concepts IoU.
        concepts: the probe's concept names.
        categories: each concept's category (one of ``probes.CATEGORIES``).
        thresholds: the units' levels, for ``unit_maps``.

    Example:
        >>> d = Dissection({"conv": torch.tensor([[0.1, 0.02], [0.0, 0.3]])},
        ...                ["cat", "red"], ["object", "color"])
        >>> d["conv"].shape, d.units().concept.tolist()
        (torch.Size([2, 2]), ['cat', 'red'])
    """

    concepts: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    thresholds: Thresholds | None = None

    def units(self) -> pd.DataFrame:
        """One row per unit: its top-1 concept, that concept's category and IoU, and its best
        colour concept and that IoU (NaN when the probe has no colour).

        Returns:
            A frame with columns layer, unit, concept, category, iou, colour, colour_iou.
        """
        colour = [k for k, c in enumerate(self.categories) if c == "color"]
        frames = []
        for name in self.layers:
            best, concept = self[name].max(1)
            frame = pd.DataFrame({
                "layer": name, "unit": np.arange(len(best)),
                "concept": [self.concepts[k] for k in concept.tolist()],
                "category": [self.categories[k] for k in concept.tolist()],
                "iou": best.numpy(), "colour": None, "colour_iou": np.nan})
            if colour:
                best_colour, which = self[name][:, colour].max(1)
                frame["colour"] = [self.concepts[colour[k]] for k in which.tolist()]
                frame["colour_iou"] = best_colour.numpy()
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def detectors(self, iou_threshold: float = 0.04) -> pd.DataFrame:
        """Per layer (rows) and category (columns): units whose top-1 IoU exceeds
        ``iou_threshold`` (Bau et al.'s 0.04 by default), i.e. the paper's Fig. 2.

        Args:
            iou_threshold: the detector cut.

        Returns:
            Counts, layers x ``probes.CATEGORIES``.
        """
        units = self.units()
        units = units[units.iou > iou_threshold]
        table = pd.crosstab(pd.Categorical(units.layer, categories=self.layers),
                            pd.Categorical(units.category, categories=CATEGORIES), dropna=False)
        table.index.name, table.columns.name = "layer", "category"
        return table

    def best_detectors(self, iou_threshold: float = 0.04) -> pd.DataFrame:
        """The detector with the highest top-1 IoU in each category that has one.

        Args:
            iou_threshold: the detector cut.

        Returns:
            ``units()``'s rows, indexed by category in ``CATEGORIES`` order.
        """
        units = self.units()
        return (units[units.iou > iou_threshold].sort_values("iou", ascending=False)
                .groupby("category", sort=False).head(1).set_index("category")
                .reindex(CATEGORIES).dropna(subset=["iou"]))

    def class_iou(self, names: list[str], category: str | None = "object") -> LayerScores:
        """Per layer, every unit's IoU with each named concept of ``category`` (None: any).

        Args:
            names: concept names, e.g. the object of each class.
            category: the concepts' category.

        Returns:
            Per layer, units x ``len(names)``; a column is NaN where the probe lacks the
            concept.

        Raises:
            KeyError: a name matches several concepts (give its category).
        """
        columns = []
        for concept in names:
            hit = [k for k, (n, c) in enumerate(zip(self.concepts, self.categories))
                   if n == concept and category in (None, c)]
            if len(hit) > 1:
                raise KeyError(f"concept {concept!r} (category {category}) matches "
                               f"{len(hit)} concepts")
            columns.append(hit[0] if hit else None)
        return LayerScores({
            name: torch.stack([iou[:, k] if k is not None
                               else torch.full((len(iou),), math.nan) for k in columns], 1)
            for name, iou in self.scores.items()})

    @torch.no_grad()
    def unit_maps(self, model: nn.Module, probe: ProbeSet, name: str, unit: int,
                  indices) -> tuple[torch.Tensor, torch.Tensor]:
        """For probe images at ``indices``: the unit's activation map upsampled to the mask
        size (``S_i(x)``) and its segmentation ``S_i(x) > T_i`` (``M_i(x)``).

        Args:
            model: the dissected network.
            probe: the probe set it was dissected on.
            name: a dissected layer.
            unit: the unit's index in that layer.
            indices: which probe images.

        Returns:
            The maps (B x h x w, float) and the segmentations (B x h x w, bool).
        """
        if name not in self.layers:
            raise KeyError(f"layer {name!r} was not dissected; layers are {self.layers}")
        model.eval()
        with Recorder(model, [name]) as rec:
            model(to_model(model, probe.tensors(indices)))
        maps = to_host(upsampling.bilinear(rec.outputs[name][:, unit:unit + 1], probe.mask_size))
        return maps[:, 0], self.thresholds.segment(name, maps, slice(unit, unit + 1))[:, 0]


class NetDissect(Dissector):
    """Network Dissection (Bau et al. 2017) of the named ``layers`` of ``model``, as Islam and
    Tushar use it in chapter 2. ``dissect(probe)`` runs the method's two passes over a
    ``ProbeSet``: every unit's top-``quantile`` threshold (``unit_thresholds``), then its
    IoU with every concept (``unit_iou``), ``batch_size`` probe images per forward pass;
    the result is cached by model, layers, probe and quantile.

    Args:
        model: the network.
        layers: names of the layers whose units are dissected.
        quantile: ``P(a_i > T_i)``, the share of positions a unit's segmentation holds.
        batch_size: probe images per forward pass.

    Example:
        >>> from subnets.synthetic_probes import synthetic_probe
        >>> probe = synthetic_probe(2, image_size=8, seed=0)
        >>> result = NetDissect(nn.Conv2d(3, 4, 3), [""], quantile=0.1).dissect(probe)
        >>> result[""].shape == (4, len(probe.concepts))
        True
    """

    def __init__(self, model: nn.Module, layers: list[str], quantile: float = 0.005,
                 batch_size: int = 64) -> None:
        if not 0 < quantile < 1:
            raise ValueError(f"quantile: expected a value in (0, 1), got {quantile}")
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        super().__init__(model, layers)
        for name in self.layers:
            layer(model, name)
        self.quantile = quantile
        self.batch_size = batch_size

    def dissect(self, probe: ProbeSet) -> Dissection:
        """The thresholds and the units x concepts IoU of every layer on ``probe``.

        Args:
            probe: the concept probe set.

        Returns:
            A ``Dissection``, read per layer.
        """
        layers = self.layers

        def compute() -> dict:
            thresholds = self.unit_thresholds(probe)
            iou = self.unit_iou(probe, thresholds)
            return {"level": [thresholds.level[n] for n in layers],
                    "inclusive": [thresholds.inclusive[n] for n in layers],
                    "iou": [iou[n] for n in layers]}

        entry = cache.cached("dissection", {"model": self.model, "layers": layers,
                                            "probe": probe, "quantile": self.quantile}, compute)
        thresholds = Thresholds(dict(zip(layers, entry["level"])),
                                dict(zip(layers, entry["inclusive"])))
        return Dissection(dict(zip(layers, entry["iou"])), list(probe.concepts),
                          list(probe.categories), thresholds)

    @torch.no_grad()
    def unit_thresholds(self, probe: ProbeSet) -> Thresholds:
        """Per layer, the threshold ``T_i`` of every unit with ``P(a_i > T_i) = quantile``
        over all spatial positions of all probe images (one streaming pass).

        Args:
            probe: the probe set.

        Returns:
            The units' ``Thresholds``.
        """
        model, layers, batch_size = self.model, self.layers, self.batch_size
        model.eval()
        tops: dict[str, TopQuantile] = {}
        lowest: dict[str, torch.Tensor] = {}
        with Recorder(model, layers) as rec:
            for start in _batches(len(probe), batch_size, "thresholds"):
                model(to_model(model, probe.tensors(slice(start, start + batch_size))))
                for name in layers:
                    values = rec.outputs[name].transpose(0, 1).flatten(1)
                    if name not in tops:
                        total = len(probe) * rec.outputs[name][0, 0].numel()
                        tops[name] = TopQuantile(self.quantile, total)
                        lowest[name] = values.amin(1)
                    tops[name].add(values)
                    lowest[name] = torch.minimum(lowest[name], values.amin(1))
        level = {name: to_host(tops[name].value()) for name in layers}
        inclusive = {name: to_host((tops[name].value() >= tops[name].maximum())
                                   & (tops[name].maximum() > lowest[name])) for name in layers}
        return Thresholds(level, inclusive)

    @torch.no_grad()
    def unit_iou(self, probe: ProbeSet, thresholds: Thresholds) -> dict[str, torch.Tensor]:
        """Per layer, the units x concepts IoU of the paper's eq. (1): activation maps
        upsampled bilinearly to the mask size, ``> T_i``, against every concept mask; the
        sums run over the images that carry a label of the concept's category.

        Args:
            probe: the probe set.
            thresholds: the units' levels (``unit_thresholds``).

        Returns:
            Per layer, units x concepts IoU.
        """
        model, layers, batch_size = self.model, self.layers, self.batch_size
        model.eval()
        concept_category = torch.tensor([CATEGORIES.index(c) for c in probe.categories],
                                        dtype=torch.long)
        presence = to_model(model, probe.presence().float())
        label_area = to_model(model, torch.zeros(len(probe.concepts), dtype=torch.float64))
        inter: dict[str, torch.Tensor] = {}
        active: dict[str, torch.Tensor] = {}
        with Recorder(model, layers) as rec:
            for start in _batches(len(probe), batch_size, "IoU"):
                idx = torch.arange(start, min(start + batch_size, len(probe)))
                model(to_model(model, probe.tensors(idx)))
                # B x K x P
                labels = to_model(model, probe.concept_masks(idx).flatten(2).float())
                label_area += labels.sum((0, 2)).double()
                for name in layers:
                    out = rec.outputs[name]
                    units = out.shape[1]
                    inter.setdefault(name, torch.zeros(units, len(probe.concepts),
                                                       dtype=torch.float64, device=out.device))
                    active.setdefault(name, torch.zeros(units, len(CATEGORIES),
                                                        dtype=torch.float64, device=out.device))
                    # Upsampled maps of a wide layer are large: a few images at a time.
                    chunk = max(1, 2 ** 24 // (units * labels.shape[-1]))
                    for i in range(0, len(idx), chunk):
                        maps = upsampling.bilinear(out[i:i + chunk], probe.mask_size)
                        fired = thresholds.segment(name, maps).flatten(2).float()
                        inter[name] += torch.bmm(
                            fired, labels[i:i + chunk].transpose(1, 2)).sum(0).double()
                        active[name] += (
                            fired.sum(2).T @ presence[idx[i:i + chunk].to(out.device)]).double()
        result = {}
        for name in layers:
            union = (to_host(active[name])[:, concept_category] + to_host(label_area)
                     - to_host(inter[name]))
            result[name] = (to_host(inter[name]) / union.clamp_min(1)).float()
        return result


def unit_layers(model: nn.Module) -> list[str]:
    """The activation that follows each main-path conv of ``model``
    (``hooks.activation_after`` of every ``nn.Conv2d``, projection shortcuts aside, that
    has one). These outputs are the units the paper dissects, ranks and ablates.

    Args:
        model: the network.

    Returns:
        Layer names, in the model's order.

    Example:
        >>> unit_layers(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.ReLU()))
        ['1', '3']
    """
    names = []
    for conv in conv_layers(model, shortcuts=False):
        # A conv whose activation is a shared module defined earlier (torchvision's
        # BasicBlock.conv2) has none after it and is left out.
        with contextlib.suppress(ValueError):
            names.append(activation_after(model, conv))
    return names


def unit_sites(model: nn.Module, names: list[str]) -> dict[str, str]:
    """For each unit layer of ``unit_layers``, the module whose output holds the unit's own
    conv branch: the normalisation right after its conv (or the conv itself). Switching a
    unit off there, not at the activation, leaves a residual block's skip path on: zero
    at the ReLU after ``out + shortcut`` would cut the identity too. For a plain
    conv-BN-ReLU unit both places give the same network output.

    Args:
        model: the network.
        names: unit layers (``unit_layers``).

    Returns:
        Unit layer -> the module where its units are switched off.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())
        >>> unit_sites(net, ["2"])
        {'2': '1'}
    """
    modules = list(model.named_modules())
    position = {name: i for i, (name, _) in enumerate(modules)}
    main_path = set(conv_layers(model, shortcuts=False))
    sites = {}
    for name in names:
        if name not in position:
            raise KeyError(f"layer {name!r} not in {type(model).__name__}")
        convs = [i for i in range(position[name]) if modules[i][0] in main_path]
        if not convs:
            raise ValueError(f"layer {name!r} follows no conv")
        after = modules[convs[-1] + 1] if convs[-1] + 1 < len(modules) else None
        is_norm = after is not None and isinstance(after[1], (nn.BatchNorm2d, nn.GroupNorm))
        sites[name] = after[0] if is_norm else modules[convs[-1]][0]
    return sites


def ranking_agreement(iou: Mapping[str, torch.Tensor], relevance: Mapping[str, torch.Tensor],
                      fraction: float = 0.1) -> pd.DataFrame:
    """How far two rankings of the units of each layer agree, per layer and class (the
    paper's Table I).

    ``error`` is the share of the top ``fraction`` of units by IoU (at least one) that are
    not among the top ``fraction`` by relevance: 0 when both pick the same units;
    ``chance`` is its mean for unrelated rankings, ``1 - k/U``. ``spearman`` is the rank
    correlation over all units (NaN where either ranking is constant or missing).

    Args:
        iou: per layer, units x classes (e.g. ``Dissection.class_iou``).
        relevance: per layer, units x classes (``attribution.ClassRelevance``).
        fraction: the top share of units compared.

    Returns:
        One row per layer and class, with columns layer, class, units, top_k, error,
        chance and spearman.

    Example:
        >>> scores = {"l": torch.tensor([[3.0], [2.0], [1.0]])}
        >>> ranking_agreement(scores, scores, fraction=0.3)[["error", "chance"]].round(3).values
        array([[0.   , 0.667]])
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction: expected a value in (0, 1], got {fraction}")
    from scipy.stats import spearmanr

    rows = []
    for name, scores in iou.items():
        rel = relevance[name]
        if rel.shape != scores.shape:
            raise ValueError(f"{name}: IoU is {tuple(scores.shape)} but relevance is "
                             f"{tuple(rel.shape)}")
        k = max(1, math.ceil(fraction * len(scores)))
        for c in range(scores.shape[1]):
            top_iou = set(torch.argsort(scores[:, c], descending=True, stable=True)[:k].tolist())
            top_rel = set(torch.argsort(rel[:, c], descending=True, stable=True)[:k].tolist())
            constant = scores[:, c].std() == 0 or rel[:, c].std() == 0
            rho = (float("nan") if constant
                   else spearmanr(scores[:, c].numpy(), rel[:, c].numpy()).statistic)
            rows.append({"layer": name, "class": c, "units": len(scores), "top_k": k,
                         "error": 1 - len(top_iou & top_rel) / k, "chance": 1 - k / len(scores),
                         "spearman": rho})
    return pd.DataFrame(rows)


def _detectors(result: Dissection, iou_threshold: float) -> pd.DataFrame:
    return result.units().pipe(lambda u: u.assign(detector=u.iou > iou_threshold))


def detector_balance(result: Dissection, iou_threshold: float = 0.04) -> float:
    """Per unit, the mean of +1 (an object or part detector), -1 (a colour detector) or 0:
    above 0 when object and part detectors outnumber colour ones (the paper's Fig. 2).

    Args:
        result: a dissection.
        iou_threshold: the detector cut.

    Returns:
        (object and part detectors - colour detectors) / units.

    Example:
        >>> d = Dissection({"l": torch.tensor([[0.5, 0.0], [0.0, 0.0]])}, ["cat", "red"],
        ...                ["object", "color"])
        >>> detector_balance(d)
        0.5
    """
    units = _detectors(result, iou_threshold)
    kind = units.category.isin(["object", "part"]).astype(int) - (units.category == "color")
    return float((units.detector * kind).mean())


def colour_shadow_share(result: Dissection, iou_threshold: float = 0.04) -> float:
    """The share of object and part detectors with a colour concept at half their IoU or
    more: object labels that follow a colour (the paper's Fig. 3, AlexNet unit 41).

    Args:
        result: a dissection.
        iou_threshold: the detector cut.

    Returns:
        The share, NaN where there is no object or part detector.

    Example:
        >>> d = Dissection({"l": torch.tensor([[0.5, 0.3], [0.4, 0.1]])}, ["cat", "red"],
        ...                ["object", "color"])
        >>> colour_shadow_share(d)
        0.5
    """
    units = _detectors(result, iou_threshold)
    pick = units[units.detector & units.category.isin(["object", "part"])]
    return float((pick.colour_iou >= pick.iou / 2).mean()) if len(pick) else math.nan


def colour_gap(result: Dissection, iou_threshold: float = 0.04) -> float:
    """The share of colour detectors among the first dissected layer's units minus that
    among the last's: above 0 when shallow layers hold more colour detectors.

    Args:
        result: a dissection of two layers or more.
        iou_threshold: the detector cut.

    Returns:
        The difference of the two shares.

    Example:
        >>> d = Dissection({"a": torch.tensor([[0.0, 0.5]]), "b": torch.tensor([[0.5, 0.0]])},
        ...                ["cat", "red"], ["object", "color"])
        >>> colour_gap(d)
        1.0
    """
    units = _detectors(result, iou_threshold)
    colour = units.detector & (units.category == "color")
    return float(colour[units.layer == result.layers[0]].mean()
                 - colour[units.layer == result.layers[-1]].mean())


def detector_surge(result: Dissection, layers: list[str], iou_threshold: float = 0.04) -> float:
    """How many more of the detectors sit in ``layers`` than their share of the units
    (the paper's Fig. 2c: ResNet18's detectors surge in its last two conv layers).

    Args:
        result: a dissection.
        layers: the layers looked at.
        iou_threshold: the detector cut.

    Returns:
        Their share of the detectors minus their share of the units; NaN without detectors.

    Example:
        >>> d = Dissection({"a": torch.tensor([[0.0], [0.0]]), "b": torch.tensor([[0.5], [0.0]])},
        ...                ["cat"], ["object"])
        >>> detector_surge(d, ["b"])
        0.5
    """
    units = _detectors(result, iou_threshold)
    inside, found = units.layer.isin(layers), units.detector.sum()
    return float(units.detector[inside].sum() / found - inside.mean()) if found else math.nan
