"""Islam and Tushar's study (chapter 2) over networks, seeds and placebos: the sweep that
computes a result for every trained network and its untrained placebo, and the claims of the
paper judged on those results.

A result set is ``{"trained": {(network, seed): value}, "placebo": {...}}`` (``over_networks``).
Each ``*_claims`` function turns the results of one section of the chapter into its rows of
"Paper vs this book": every statistic is measured on each seed's trained network and on its
placebo (``claims.Claim.trained``), with the rule and margin the chapter states.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import claims, train
from .ablation import ENDS, AblationResult, relevance_ablation
from .attribution import ClassRelevance, layer_class_interaction
from .claims import Claim, Rule
from .data import ImageSet
from .dissection import (
    Dissection,
    colour_gap,
    colour_shadow_share,
    detector_balance,
    detector_surge,
)
from .models.efficientnet import class_subset, efficientnet_lite0

__all__ = ["STATES", "over_networks", "trained_claim", "accuracy_claims", "detector_claims",
           "colour_gap_claim", "interaction_claims", "PAPER_TABLE1", "agreement_table",
           "agreement_claims", "ablation_frames", "ablation_claims", "lite0_networks", "photo_set",
           "photo_ablations", "described"]

STATES = ("trained", "placebo")
Results = dict[str, dict[tuple[str, int], Any]]


def over_networks(compute: Callable[[str, str, int], Any], runs: Sequence[tuple[str, int]],
                  placebo_run: bool = False) -> Results:
    """``compute(state, network, seed)`` for every run, trained and placebo.

    Args:
        compute: the result of one network.
        runs: (network, seed) pairs.
        placebo_run: the chapter's ``placebo``: its trained networks are placebos
            already, so each result is computed once and serves both states.

    Returns:
        ``{"trained": {(network, seed): result}, "placebo": {...}}``.

    Example:
        >>> over_networks(lambda state, n, s: f"{state} {n}{s}", [("a", 0)])
        {'trained': {('a', 0): 'trained a0'}, 'placebo': {('a', 0): 'placebo a0'}}
    """
    trained = {k: compute("trained", *k) for k in runs}
    return {"trained": trained,
            "placebo": trained if placebo_run else {k: compute("placebo", *k) for k in runs}}


def trained_claim(claim: str, paper: str, statistic: Callable[[str, int], float],
                  seeds: Sequence[int], rule: Rule | None, **fields) -> Claim:
    """A claim about training: ``statistic(state, seed)`` of every seed's trained network
    and of its placebo.

    Args:
        claim: the row's wording.
        paper: what the paper reports.
        statistic: the number of one network.
        seeds: the seeds.
        rule: the verdict's rule.
        **fields: further ``Claim`` fields (control, shown, note).

    Returns:
        The row.

    Example:
        >>> row = trained_claim("trained beats placebo", "yes", lambda state, s: float(
        ...     state == "trained") + s / 10, [0, 1], Rule(">", 0.5))
        >>> row.estimate.value, row.placebo.value
        (1.05, 0.05)
    """
    return Claim.trained(claim, paper, [statistic("trained", s) for s in seeds],
                         [statistic("placebo", s) for s in seeds], rule, **fields)


def _networks(results: Results) -> list[str]:
    return list(dict.fromkeys(n for n, _ in results["trained"]))


def accuracy_claims(accuracy: Results, seeds: Sequence[int]) -> list[Claim]:
    """The setting's rows: each network's test accuracy over the seeds (no rule).

    Args:
        accuracy: test accuracy per network.
        seeds: the seeds.

    Returns:
        One row per network.

    Example:
        >>> acc = {"trained": {("vgg11", 0): 0.9, ("vgg11", 1): 0.8},
        ...        "placebo": {("vgg11", 0): 0.1, ("vgg11", 1): 0.1}}
        >>> accuracy_claims(acc, [0, 1])[0].shown.split(";")[1]
        ' untrained 0.100'
    """
    rows = []
    for n in _networks(accuracy):
        interval = claims.seed_interval([accuracy["trained"][n, s] for s in seeds])
        untrained = np.mean([accuracy["placebo"][n, s] for s in seeds])
        rows.append(Claim(f"{n}: test accuracy", "ImageNet-trained (top-1 not given)", interval,
                          rule=None, shown=f"{interval.format()}; untrained {untrained:.3f}"))
    return rows


def _detectors_in(result: Dissection, iou_threshold: float) -> str:
    d = result.detectors(iou_threshold).sum()
    return f"{d['object'] + d['part']} object+part vs {d['color']} colour"


def detector_claims(dissections: Results, seeds: Sequence[int], iou_threshold: float,
                    surge_layers: Sequence[str] = ()) -> list[Claim]:
    """Figs. 2 and 3: more object and part than colour detectors (``detector_balance``),
    object detectors that follow a colour (``colour_shadow_share``), and, given ResNet18's
    last two unit layers, its detectors' surge there (``detector_surge``).

    Args:
        dissections: a ``Dissection`` per network.
        seeds: the seeds.
        iou_threshold: the detector cut.
        surge_layers: ResNet18's last two unit layers (empty: no ResNet18 row).

    Returns:
        Two rows per network, and the ResNet18 row.

    Example:
        >>> import torch
        >>> def dissected(iou):  # unit 0: an object detector (or none); unit 1: colour
        ...     return Dissection({"l": torch.tensor([[iou, 0.0], [0.0, 0.5]])},
        ...                       ["cat", "red"], ["object", "color"])
        >>> results = {"trained": {("alexnet", 0): dissected(0.5)},
        ...            "placebo": {("alexnet", 0): dissected(0.0)}}
        >>> balance, shadow = detector_claims(results, [0], 0.04)
        >>> balance.estimate.value, balance.placebo.value  # (object+part - colour) per unit
        (0.0, -0.5)
    """
    rows = []
    for n in _networks(dissections):
        def of(statistic, n=n):
            return lambda state, s: statistic(dissections[state][n, s], iou_threshold)
        first = {kind: _detectors_in(dissections[kind][n, seeds[0]], iou_threshold)
                 for kind in STATES}
        rows.append(trained_claim(
            f"{n}: more object and part than colour detectors (Fig. 2)",
            "yes, all three networks", of(detector_balance), seeds, Rule(">", 0.0, 0.02),
            control=f"first seed: trained {first['trained']}; placebo {first['placebo']}",
            shown="(object+part - colour detectors) per unit"))
        rows.append(trained_claim(
            f"{n}: object/part detectors that follow a colour (share)",
            "qualitative (Fig. 3, AlexNet unit 41)", of(colour_shadow_share), seeds,
            Rule(">", 0.0),
            control="undefined (not decided) where a network has no object/part detector"))
    if surge_layers:
        widest = dissections["trained"]["resnet18", seeds[0]].units().layer.isin(
            surge_layers).mean()
        rows.append(trained_claim(
            "ResNet18: detectors surge in the last two conv layers (share of detectors minus "
            "share of units)", "yes (Fig. 2c)", lambda state, s: detector_surge(
                dissections[state]["resnet18", s], list(surge_layers), iou_threshold),
            seeds, Rule(">", 0.0, 0.02), control=f"the two layers hold {widest:.0%} of the units"))
    return rows


def colour_gap_claim(trained: Dissection, placebo: Dissection,
                     iou_threshold: float = 0.04) -> Claim:
    """The paper's conclusion that shallow layers hold more colour detectors than deep ones,
    on one ImageNet-trained network and its untrained placebo (``dissection.colour_gap``).

    Args:
        trained: the trained network's dissection.
        placebo: the untrained network's, on the same probe and layers.
        iou_threshold: the detector cut.

    Returns:
        The row; with one network it is never decided about training.

    Example:
        >>> import torch
        >>> def dissected(first, last):  # one unit per layer, each a cat or a red detector
        ...     return Dissection({"a": torch.tensor([first]), "b": torch.tensor([last])},
        ...                       ["cat", "red"], ["object", "color"])
        >>> row = colour_gap_claim(dissected([0.0, 0.5], [0.5, 0.0]),
        ...                        dissected([0.5, 0.0], [0.5, 0.0]))
        >>> row.estimate.value, row.placebo.value, row.decide().outcome
        (1.0, 0.0, 'not decided')
    """
    first, last = trained.layers[0], trained.layers[-1]
    return Claim.trained(
        "shallow layers hold more colour detectors than deep ones (EfficientNet-Lite0)",
        "yes (conclusion)", [colour_gap(trained, iou_threshold)],
        [colour_gap(placebo, iou_threshold)], Rule(">", 0.0, 0.02),
        note="one ImageNet-trained network, no seeds",
        shown=f"colour detectors' share of {first}'s units minus {last}'s")


def interaction_claims(layer_tables: Results, seeds: Sequence[int]) -> list[Claim]:
    """Fig. 4: classes differ in which layers carry their relevance, beyond each layer's
    scale (``layer_class_interaction`` of each layers x classes table).

    Args:
        layer_tables: a layers x classes relevance table (``layer_relevance``) per network.
        seeds: the seeds.

    Returns:
        One row per network.

    Example:
        >>> crossed = pd.DataFrame([[1.0, 4.0], [4.0, 1.0]], index=["l1", "l2"],
        ...                        columns=["a", "b"])
        >>> scaled = pd.DataFrame([[1.0, 1.0], [2.0, 2.0]], index=["l1", "l2"],
        ...                       columns=["a", "b"])  # layer x class product: no interaction
        >>> row, = interaction_claims({"trained": {("vgg11", 0): crossed},
        ...                            "placebo": {("vgg11", 0): scaled}}, [0])
        >>> round(row.estimate.value, 3), row.placebo.value  # log 2 off the product
        (0.693, 0.0)
    """
    rows = []
    for n in _networks(layer_tables):
        peaks = {kind: layer_tables[kind][n, seeds[0]].idxmax().nunique() for kind in STATES}
        rows.append(trained_claim(
            f"{n}: classes differ in which layers carry their relevance, beyond each layer's "
            "scale (Fig. 4)", "yes", lambda state, s, n=n: layer_class_interaction(
                layer_tables[state][n, s].to_numpy()), seeds, Rule(">", 0.0, 0.05),
            shown="RMS log factor off the layer x class product",
            control=f"layers where some class peaks (first seed): trained {peaks['trained']}, "
                    f"placebo {peaks['placebo']}"))
    return rows


# Table I of the paper: mean error and its deviation over layers, per network.
PAPER_TABLE1 = {"alexnet": (0.0756, 0.0268), "vgg11": (0.0621, 0.0196),
                "resnet18": (0.0958, 0.0511)}


def agreement_table(agreement: Results, seed: int) -> pd.DataFrame:
    """Table I per network for one seed: mean error, its deviation over layers, chance
    error, mean Spearman correlation, cells, and the placebo's mean error.

    Args:
        agreement: the agreement cells (layer x class, ``dissection.ranking_agreement``).
        seed: the seed shown.

    Returns:
        One row per network.

    Example:
        >>> cells = pd.DataFrame({"layer": ["l"], "error": [0.2], "chance": [0.9],
        ...                       "spearman": [0.5]})
        >>> agreement_table({"trained": {("a", 0): cells}, "placebo": {("a", 0): cells}},
        ...                 0)["mean error"].tolist()
        [0.2]
    """
    rows = {}
    for n in _networks(agreement):
        a = agreement["trained"][n, seed]
        rows[n] = {"mean error": a.error.mean(),
                   "layer deviation": a.groupby("layer", sort=False).error.mean().std(),
                   "chance error": a.chance.mean(), "mean Spearman": a.spearman.mean(),
                   "layer x class cells": len(a),
                   "placebo: mean error": agreement["placebo"][n, seed].error.mean()}
    return pd.DataFrame(rows).T


def agreement_claims(agreement: Results, seeds: Sequence[int]) -> list[Claim]:
    """Table I: the error of IoU against relevance (``dissection.ranking_agreement``) at
    most the paper's mean plus its layer deviation, and below chance by 10 points.

    Args:
        agreement: the agreement cells (layer x class) per network.
        seeds: the seeds.

    Returns:
        Two rows per network.

    Example:
        >>> cells = pd.DataFrame({"layer": ["l", "l"], "error": [0.0, 0.2],
        ...                       "chance": [0.9, 0.9]})
        >>> error, chance = agreement_claims({s: {("vgg11", 0): cells} for s in STATES}, [0])
        >>> error.estimate.value, error.rule.threshold, round(chance.estimate.value, 3)
        (0.1, 0.0817, 0.8)
    """
    rows = []
    for n in _networks(agreement):
        mean, deviation = PAPER_TABLE1[n]
        chance = f"chance error {agreement['trained'][n, seeds[0]].chance.mean():.0%}"
        rows.append(trained_claim(
            f"{n}: IoU and IG pick almost the same units: error at most the paper's mean plus "
            "its layer deviation (Table I)", f"error {mean:.2%} ± {deviation:.2%}",
            lambda state, s, n=n: agreement[state][n, s].error.mean(), seeds,
            Rule("<", mean + deviation), control=chance, shown="mean error"))
        rows.append(trained_claim(
            f"{n}: IoU and IG share more units than chance (judges only 'better than chance', "
            "not the paper's error)", "error far below chance (Table I)",
            lambda state, s, n=n: (agreement[state][n, s].chance
                                   - agreement[state][n, s].error).mean(), seeds,
            Rule(">", 0.0, 0.1), control=chance, shown="chance error minus error"))
    return rows


def ablation_frames(ablations: Results, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The trained networks' ablations for one seed, as the chapter's tables and
    ``plots.ablation_bars`` read them.

    Args:
        ablations: an ``AblationResult`` per network.
        seed: the seed shown.

    Returns:
        The ablated rows with their drops (``AblationResult.frame``) and a network column,
        and the intact networks' accuracies indexed by (network, class).

    Example:
        >>> import torch
        >>> from subnets.ablation import AblationResult
        >>> table = pd.DataFrame([{"class": c, "end": e, "fraction": 0.0 if e == "none" else 0.5,
        ...                        "draw": 0, "units": 1, "share": 0.5,
        ...                        "accuracy_class": float(e != "top"), "accuracy_others": 1.0}
        ...                       for c in "ab" for e in ("none", "top", "bottom", "random")])
        >>> result = AblationResult(table, torch.ones(8, 2, dtype=torch.bool), torch.tensor([0, 1]))
        >>> ablated, intact = ablation_frames({s: {("alexnet", 0): result} for s in STATES}, 0)
        >>> ablated[ablated.end == "top"].drop_class.tolist(), intact.index.tolist()
        ([1.0, 1.0], [('alexnet', 'a'), ('alexnet', 'b')])
    """
    networks = _networks(ablations)
    ablated = pd.concat({n: ablations["trained"][n, seed].frame() for n in networks},
                        names=["network"]).reset_index(level=0)
    intact = pd.concat({n: ablations["trained"][n, seed].table.query("end == 'none'")
                        .set_index("class") for n in networks}, names=["network"])
    return ablated, intact


def ablation_claims(ablations: Results, seeds: Sequence[int], fraction: float) -> list[Claim]:
    """Figs. 5 and 6 at ``fraction``: the share of units switched off (no rule); per
    network, the top units hurt the class more than as many random units, the bottom ones
    less, and the top ablation is specific to its class; ResNet18 suffers most.

    Args:
        ablations: an ``AblationResult`` per network.
        seeds: the seeds.
        fraction: the ablated fraction judged (the chapter: the largest).

    Returns:
        The rows.

    Example:
        >>> import torch
        >>> from subnets.ablation import AblationResult
        >>> table = pd.DataFrame([{"class": c, "end": e, "fraction": 0.0 if e == "none" else 0.5,
        ...                        "draw": 0, "units": 1, "share": 0.5, "accuracy_class": 1.0,
        ...                        "accuracy_others": 1.0}
        ...                       for c in "ab" for e in ("none", "top", "bottom", "random")])
        >>> correct = torch.ones(8, 2, dtype=torch.bool)  # rows x images (labels 0, 1)
        >>> correct[1, 0] = correct[5, 1] = False  # each top ablation breaks its class's image
        >>> result = AblationResult(table, correct, torch.tensor([0, 1]))
        >>> rows = ablation_claims({s: {("alexnet", 0): result} for s in STATES}, [0], 0.5)
        >>> len(rows), rows[0].estimate.value, rows[1].estimate.value  # share; top - random
        (4, 0.5, 1.0)
    """
    networks = _networks(ablations)

    def result(state: str, n: str, s: int) -> AblationResult:
        return ablations[state][n, s]

    def drop(state, n, s, end):
        return result(state, n, s).class_drop(end, fraction)

    def specific(state, n, s, end):
        return result(state, n, s).specificity(end, fraction)

    share = {}
    for n in networks:
        table = result("trained", n, seeds[0]).table
        share[n] = float(table[(table.end == "top") & (table.fraction == fraction)].share.iloc[0])
    rows = [Claim(f"units switched off at {fraction:.0%}, share of the ablated layers",
                  f"{fraction:.0%} of each layer", float(np.mean(list(share.values()))),
                  rule=None, shown=", ".join(f"{n} {v:.2%}" for n, v in share.items()))]
    for n in networks:
        first = ", ".join(f"{end} {drop('trained', n, seeds[0], end):.3f}"
                          for end in ("top", "bottom", "random"))
        rows += [
            trained_claim(f"{n}: switching off the top {fraction:.0%} hurts the class more than "
                          "as many random units (Figs. 5-6)", "large drop",
                          lambda state, s, n=n: drop(state, n, s, "top")
                          - drop(state, n, s, "random"), seeds, Rule(">", 0.0, 0.02),
                          control=f"first seed: drop {first}"),
            trained_claim(f"{n}: switching off the bottom {fraction:.0%} hurts the class less "
                          "than as many random units (Figs. 5-6: 'negligible')",
                          "negligible drop", lambda state, s, n=n: drop(state, n, s, "random")
                          - drop(state, n, s, "bottom"), seeds, Rule(">", 0.0, 0.01),
                          control=f"first seed: drop {first}"),
            trained_claim(f"{n}: the top units' ablation is specific to its class (drop on the "
                          "class minus on the others, beyond random units)", "class-wise effect",
                          lambda state, s, n=n: specific(state, n, s, "top")
                          - specific(state, n, s, "random"), seeds, Rule(">", 0.0, 0.02),
                          control=f"first seed, random units: specificity "
                                  f"{specific('trained', n, seeds[0], 'random'):.3f}")]
    if "resnet18" in networks and len(networks) > 1:
        others = [n for n in networks if n != "resnet18"]
        rows.append(trained_claim(
            "ResNet18 suffers most from the top ablation, at the same share of units "
            "(Figs. 5c, 6c)", "yes", lambda state, s: drop(state, "resnet18", s, "top")
            - max(drop(state, n, s, "top") for n in others), seeds, Rule(">", 0.0, 0.02),
            control=f"the same {fraction:.0%} of each network's ablated units; first seed's "
                    "top drops: " + ", ".join(f"{n} {drop('trained', n, seeds[0], 'top'):.3f}"
                                              for n in networks)))
    return rows


def lite0_networks(probe_images: torch.Tensor, seed: int = 0, placebo: bool = False,
                   device: torch.device | None = None) -> tuple[nn.Module, nn.Module]:
    """The ImageNet-pretrained EfficientNet-Lite0 and its placebo: the same network at timm's
    initialisation (drawn with ``seed``), its batch-norm statistics re-estimated on
    ``probe_images`` since no ImageNet images are at hand. Both in channels-last memory,
    which runs depthwise convolutions faster on a CPU.

    Args:
        probe_images: N x 3 x H x W in [0, 1] (the first ``train.PLACEBO_IMAGES`` are used).
        seed: the placebo's initialisation.
        placebo: the chapter's placebo run: the "trained" network is untrained too.
        device: where the networks go (None: they stay where they are built).

    Returns:
        The network and its placebo.

    Example:
        >>> lite0, lite0_placebo = lite0_networks(torch.rand(4, 3, 32, 32), placebo=True)
        >>> lite0(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 1000])
    """
    def network(pretrained: bool) -> nn.Module:
        with train.seeded(seed):
            net = efficientnet_lite0(pretrained=pretrained)
        if not pretrained:
            train.recalibrate_batch_norm(net, probe_images[:train.PLACEBO_IMAGES])
        return net.to(device, memory_format=torch.channels_last)

    return network(pretrained=not placebo), network(pretrained=False)


def photo_set(images: torch.Tensor, labels: torch.Tensor, n_classes: int,
              seed: int = 0) -> ImageSet:
    """Labelled ImageNet photos (``models.efficientnet.imagenet_photos``) as a data set of
    ``n_classes`` of their classes, drawn with ``seed`` when there are more; its labels
    count from 0 in ImageNet's order and ``classes`` holds the ImageNet indices.

    Args:
        images: N x 3 x H x W in [0, 1].
        labels: their ImageNet classes.
        n_classes: how many classes to keep.
        seed: which classes.

    Returns:
        The ``ImageSet`` of the kept classes' photos.

    Example:
        >>> photos = photo_set(torch.rand(3, 3, 4, 4), torch.tensor([7, 3, 7]), 5)
        >>> photos.classes, photos.labels.tolist()
        (['3', '7'], [1, 0, 1])
    """
    present = labels.unique()
    if len(present) > n_classes:
        drawn = torch.randperm(len(present), generator=torch.Generator().manual_seed(seed))
        present = present[drawn[:n_classes]].sort().values
    keep = torch.isin(labels, present)
    return ImageSet((images[keep] * 255).round().to(torch.uint8),
                    torch.searchsorted(present, labels[keep]),
                    [str(int(c)) for c in present], "imagenet-photos")


def photo_ablations(networks: tuple[nn.Module, nn.Module], photos: ImageSet, layers: list[str],
                    fraction: float, n_steps: int, random_draws: int = 1, seed: int = 0,
                    rounding: str = "share") -> Results:
    """The paper's relevance and ablation on an ImageNet network and labelled photos: each
    network, read as a classifier of the photos' classes (``class_subset``), gets ``R(i, c)``
    from every photo of class c (the whole image: photos carry no object mask), and the top,
    bottom and random ``fraction`` of its units are switched off per class. The accuracy is
    measured on the same photos: with one photo a class, relevance and ablation are
    in-sample.

    Args:
        networks: an ImageNet network and its placebo (``lite0_networks``).
        photos: ``photo_set``'s photos (their ``classes`` are ImageNet indices).
        layers: the layers whose units are scored and switched off.
        fraction: the share of the units switched off.
        n_steps: Riemann steps of the conductance.
        random_draws: random selections per class.
        seed: the seed of the random selections (and the row key).
        rounding: as ``ablation.unit_quotas``.

    Returns:
        Per state, ``{("efficientnet_lite0", seed): AblationResult}``, as ``ablation_claims``
        takes it.

    Example:
        >>> from subnets.models.efficientnet import efficientnet_lite0
        >>> net = efficientnet_lite0(pretrained=False)
        >>> photos = photo_set(torch.rand(2, 3, 32, 32), torch.tensor([4, 9]), 2)
        >>> found = photo_ablations((net, net), photos, ["net.blocks.1"], 0.5, n_steps=2)
        >>> sorted(found["trained"][("efficientnet_lite0", 0)].table.end.unique())
        ['bottom', 'none', 'random', 'top']
    """
    classes = [int(c) for c in photos.classes]

    def ablated(net: nn.Module) -> AblationResult:
        net = class_subset(net, classes)
        relevance = ClassRelevance(net, layers).score(photos, per_class=len(photos),
                                                       n_steps=n_steps, seed=seed)
        return relevance_ablation(net, layers, photos, relevance, fractions=[fraction],
                                  ends=ENDS, rounding=rounding, random_draws=random_draws,
                                  seed=seed)

    return {state: {("efficientnet_lite0", seed): ablated(net)}
            for state, net in zip(STATES, networks)}


def described(rows: Sequence[Claim]) -> list[Claim]:
    """The rows as the chapter's table shows them: where a row has a rule and a
    description (``shown``), its estimate and interval first, then the description.

    Args:
        rows: the chapter's claims.

    Returns:
        The same rows, described.

    Example:
        >>> row = Claim.trained("c", "p", [1.0, 1.2], [0.0, 0.1], Rule(">", 0.5), shown="a share")
        >>> described([row])[0].shown
        '1.100 [...]: a share'
    """
    return [dataclasses.replace(r, shown=f"{r.estimate.format(r.fmt)}: {r.shown}")
            if r.shown is not None and r.rule is not None else r for r in rows]

