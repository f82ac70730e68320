"""Figures shared by the chapters (matplotlib and seaborn)."""

from __future__ import annotations

from collections.abc import Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from .devices import to_host
from .dissection import Dissection
from .probes import CATEGORIES, ProbeSet
from .progress import headless

__all__ = ["as_image", "map_comparison", "table_heatmap", "class_histograms", "gates_and_sets",
           "explorer", "probe_labels", "detector_bars", "unit_examples", "unit_class_bars",
           "ablation_bars", "agreement_by_layer", "claims_forest", "image_grid"]

sns.set_theme(context="notebook", style="white")


def as_image(x: torch.Tensor) -> np.ndarray:
    """An image tensor as ``imshow`` takes it.

    Args:
        x: C x H x W in [0, 1], on any device.

    Returns:
        H x W for one channel, else H x W x 3.

    Example:
        >>> as_image(torch.zeros(1, 4, 5)).shape, as_image(torch.zeros(3, 4, 5)).shape
        ((4, 5), (4, 5, 3))
    """
    x = to_host(x)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def map_comparison(images: torch.Tensor, maps: dict[str, torch.Tensor],
                   titles: list[str] | None = None, shared_scale: bool = True,
                   alpha: float = 0.55, cmap: str = "jet") -> plt.Figure:
    """One column per image: the image, then one row per entry of ``maps`` overlaid on it.

    With ``shared_scale`` every map of a column uses the same colour range (0 to the
    column's largest value), so a weaker map looks weaker; otherwise each map is
    stretched to its own maximum.

    Args:
        images: N x C x H x W in [0, 1].
        maps: row label -> N x 1 x H x W maps.
        titles: one title per image, or None.
        shared_scale: one colour range per column.
        alpha: the maps' opacity.
        cmap: the maps' colour map.

    Returns:
        The figure: ``len(maps) + 1`` rows, N columns.

    Example:
        >>> fig = map_comparison(torch.rand(3, 1, 8, 8), {"saliency": torch.rand(3, 1, 8, 8)})
        >>> len(fig.axes)
        6
        >>> plt.close(fig)
    """
    n, rows = len(images), len(maps) + 1
    fig, axes = plt.subplots(rows, n, figsize=(1.6 * n, 1.6 * rows), squeeze=False)
    for j in range(n):
        img = as_image(images[j])
        vmax = max(float(m[j].max()) for m in maps.values()) if shared_scale else None
        axes[0, j].imshow(img, cmap="gray", vmin=0, vmax=1)
        axes[0, j].set_title(titles[j] if titles else "", fontsize=8)
        for i, (name, m) in enumerate(maps.items(), start=1):
            axes[i, j].imshow(img, cmap="gray", vmin=0, vmax=1)
            top = vmax if shared_scale else float(m[j].max())
            axes[i, j].imshow(to_host(m[j, 0]).numpy(), cmap=cmap, alpha=alpha, vmin=0,
                              vmax=top or 1.0)
            if j == 0:
                axes[i, j].set_ylabel(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def table_heatmap(table: pd.DataFrame, title: str = "", fmt: str = ".2f", cmap: str = "viridis",
                  ax: plt.Axes | None = None, **kwargs) -> plt.Axes:
    """A DataFrame as a seaborn heatmap, annotated when it has at most 200 cells.

    Args:
        table: the numbers (index and columns label the axes).
        title: the title.
        fmt: the annotations' format.
        cmap: the colour map.
        ax: the axes to draw on (None: a new figure sized to the table).
        **kwargs: ``sns.heatmap``'s other options (``vmin``, ``vmax``, ...).

    Returns:
        The axes.

    Example:
        >>> ax = table_heatmap(pd.DataFrame([[0.1, 0.2], [0.3, 0.4]]), title="toy")
        >>> ax.get_title(), len(ax.texts)
        ('toy', 4)
        >>> plt.close(ax.figure)
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(0.6 * table.shape[1] + 2.5, 0.4 * table.shape[0] + 1.5))
    sns.heatmap(table, annot=table.size <= 200, fmt=fmt, cmap=cmap, ax=ax, **kwargs)
    ax.set_title(title)
    return ax


def class_histograms(histograms: torch.Tensor, kept: torch.Tensor, classes: list[str],
                     title: str = "", ylabel: str = "count") -> plt.Figure:
    """One bar chart per class (row of ``histograms``, C x D counts) over the feature
    index, the ``kept`` (C x D booleans) bars in red, the others grey (chapter 4, Fig. 2).

    Args:
        histograms: C x D counts.
        kept: C x D booleans.
        classes: the C class names.
        title: the figure's title.
        ylabel: the y axis's label.

    Returns:
        The figure.

    Example:
        >>> fig = class_histograms(torch.rand(3, 5), torch.rand(3, 5) > 0.5, ["a", "b", "c"])
        >>> [ax.get_title() for ax in fig.axes]
        ['0: a', '1: b', '2: c', '']
        >>> plt.close(fig)
    """
    n = len(classes)
    cols = min(n, (n + 1) // 2) if n > 2 else n
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.3 * rows), sharex=True,
                             sharey=True, squeeze=False)
    for c, ax in enumerate(axes.flat):
        if c >= n:
            ax.axis("off")
            continue
        counts = histograms[c].numpy()
        colours = np.where(kept[c].numpy(), "tab:red", "tab:gray")
        ax.bar(np.arange(len(counts)), counts, color=colours, width=1.0)
        ax.set_title(f"{c}: {classes[c]}" if n > 1 else classes[c], fontsize=9)
    fig.supxlabel("feature index")
    fig.supylabel(ylabel)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def gates_and_sets(gates: torch.Tensor, kept: torch.Tensor, classes: list[str],
                   title: str = "kept features") -> plt.Figure:
    """A gate matrix (C x D, in [0, 1]) beside a C x D boolean set matrix on the same
    feature axis, each with its colour bar (chapter 4: gates vs influential features).

    Args:
        gates: C x D gate values in [0, 1].
        kept: C x D booleans.
        classes: the C class names.
        title: the right panel's title.

    Returns:
        The figure.

    Example:
        >>> fig = gates_and_sets(torch.rand(2, 6), torch.rand(2, 6) > 0.5, ["a", "b"])
        >>> [ax.get_title() for ax in fig.axes[:2]]
        ['gate matrix G', 'kept features']
        >>> plt.close(fig)
    """
    fig, axes = plt.subplots(1, 2, figsize=(14, 0.3 * len(classes) + 1.6), sharey=True)
    sns.heatmap(pd.DataFrame(gates.numpy(), index=classes), ax=axes[0], cmap="viridis",
                vmin=0, vmax=1, cbar_kws={"label": "gate"})
    axes[0].set(title="gate matrix G", xlabel="feature")
    sns.heatmap(pd.DataFrame(kept.numpy().astype(float), index=classes), ax=axes[1],
                cmap="Reds", vmin=0, vmax=1, cbar_kws={"label": "in the set"})
    axes[1].set(title=title, xlabel="feature")
    fig.tight_layout()
    return fig


def explorer(function: Callable[..., None], controls: Callable[[], dict]) -> None:
    """``ipywidgets.interact(function, **controls())`` when a person runs the notebook; in
    a headless run (``subnets.progress.headless``: the book build, papermill, the tests)
    ``function()`` once with its own defaults instead, so that its code runs and no
    widget opens a comm. ``controls`` builds the widgets only when they are wanted.

    Args:
        function: draws one view; every argument has a default.
        controls: returns argument name -> widget (or anything ``interact`` takes).

    Example:
        >>> explorer(lambda unit=3: print("unit", unit), lambda: {"unit": (0, 7)})
        unit 3
    """
    if headless():
        function()
        return
    import ipywidgets

    ipywidgets.interact(function, **controls())


def probe_labels(probe: ProbeSet, n: int = 6) -> plt.Figure:
    """The first ``n`` images of a dissection probe set (chapter 2) and, one row per
    category, the label of every pixel: one colour per concept present in the image (its
    legend), unlabelled pixels white.

    Args:
        probe: the probe set.
        n: how many images.

    Returns:
        The figure: one row for the images and one per category, ``n`` columns.

    Example:
        >>> from subnets.synthetic_probes import synthetic_probe
        >>> fig = probe_labels(synthetic_probe(2, image_size=16), n=2)
        >>> len(fig.axes) == 2 * (len(CATEGORIES) + 1)
        True
        >>> plt.close(fig)
    """
    rows = CATEGORIES
    fig, axes = plt.subplots(len(rows) + 1, n, figsize=(1.6 * n, 1.9 * (len(rows) + 1)),
                             squeeze=False)
    cat_of = torch.tensor([0] + [rows.index(c) + 1 for c in probe.categories])
    colours = plt.get_cmap("tab10")
    for j in range(n):
        axes[0, j].imshow(as_image(probe.tensors([j])[0]), cmap="gray")
        seg = probe.segmentation[j].long()
        for i in range(1, len(rows) + 1):
            label = (seg * (cat_of[seg] == i)).amax(0)
            present = [k for k in label.unique().tolist() if k]
            shown = torch.full(label.shape, float("nan"))
            for rank, k in enumerate(present):
                shown[label == k] = rank
            axes[i, j].imshow(shown.numpy(), cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
            patches = [Patch(color=colours(rank), label=probe.concepts[k - 1])
                       for rank, k in enumerate(present)]
            if patches:
                axes[i, j].legend(handles=patches, fontsize=5, loc="upper center",
                                  bbox_to_anchor=(0.5, 0.0), frameon=False, handlelength=0.8,
                                  ncol=2, columnspacing=0.6)
    axes[0, 0].set_ylabel("image", fontsize=8)
    for i, cat in enumerate(rows, start=1):
        axes[i, 0].set_ylabel(cat, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def detector_bars(counts: pd.DataFrame, title: str = "", ax: plt.Axes | None = None,
                  legend: bool = True) -> plt.Axes:
    """Network Dissection's detector counts (chapter 2, Fig. 2; ``Dissection.detectors``:
    layers x categories) as bars stacked by category, one colour per category.

    Args:
        counts: layers x categories.
        title: the title.
        ax: the axes to draw on (None: a new figure).
        legend: draw the categories' legend.

    Returns:
        The axes.

    Example:
        >>> counts = pd.DataFrame({"colour": [3, 1], "object": [0, 2]}, index=["c1", "c2"])
        >>> ax = detector_bars(counts)
        >>> len(ax.patches), ax.get_ylabel()
        (4, 'detectors')
        >>> plt.close(ax.figure)
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.2))
    counts.plot.bar(stacked=True, ax=ax, color=sns.color_palette("Set2", len(counts.columns)),
                    width=0.8, legend=legend)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("layer")
    ax.set_ylabel("detectors")
    ax.tick_params(axis="x", rotation=60, labelsize=7)
    if legend:
        ax.legend(title="category", fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    return ax


def unit_examples(model: torch.nn.Module, probe: ProbeSet, result: Dissection,
                  units: list[tuple[str, int, str]], n: int = 4, pool: int = 256) -> plt.Figure:
    """Network Dissection's view of units (chapter 2, Fig. 3): one row per (layer, unit,
    concept) of ``units``, the ``n`` of the first ``pool`` probe images where the unit's
    segmentation ``M_i(x)`` overlaps the concept's mask most (only images with some
    overlap), everything outside the segmentation dimmed and the mask outlined in cyan.

    Args:
        model: the dissected network.
        probe: the probe set it was dissected on.
        result: the dissection (its thresholds, IoU and ``unit_maps``).
        units: (layer, unit, concept) per row.
        n: images per row.
        pool: how many of the first probe images to choose from.

    Returns:
        The figure: one row per unit, ``n`` columns. Chapter 2 draws it for its networks'
        best detectors.

    Example:
        >>> from torch import nn
        >>> from subnets import dissection, synthetic_probes
        >>> probe = synthetic_probes.synthetic_probe(4, image_size=16, mask_size=8, seed=0)
        >>> net = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU()).eval()
        >>> result = dissection.NetDissect(net, ["1"], quantile=0.1).dissect(probe)
        >>> fig = unit_examples(net, probe, result, [("1", 0, "circle"), ("1", 1, "red")], n=3)
        >>> len(fig.axes), fig.axes[3].get_ylabel().splitlines()[:2]
        (6, ['1', 'unit 1'])
        >>> plt.close(fig)
    """
    fig, axes = plt.subplots(len(units), n, figsize=(1.9 * n, 2.0 * len(units)), squeeze=False)
    idx = torch.arange(min(pool, len(probe)))
    for r, (name, unit, concept) in enumerate(units):
        _, seg = result.unit_maps(model, probe, name, unit, idx)
        label = probe.mask(concept)[idx]
        overlap = (seg & label).flatten(1).sum(1)
        best = overlap.argsort(descending=True)[:min(n, int((overlap > 0).sum()))]
        iou = result[name][unit, probe.concepts.index(concept)]
        m = label.shape[-1]
        for j, k in enumerate(best.tolist()):
            ax = axes[r, j]
            image = as_image(probe.tensors([int(idx[k])])[0])
            # in mask pixels, so that the segmentation and the outline lie on the image
            ax.imshow(image, cmap="gray", extent=(-0.5, m - 0.5, m - 0.5, -0.5))
            outside = torch.where(seg[k], float("nan"), 0.0).numpy()
            ax.imshow(outside, cmap=ListedColormap(["black"]), alpha=0.7, interpolation="nearest")
            ax.contour(label[k].float().numpy(), levels=[0.5], colors="cyan", linewidths=1.2)
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in axes[r, len(best):]:
            ax.axis("off")
        axes[r, 0].set_ylabel(f"{name}\nunit {unit}\n{concept} ({iou:.2f})", fontsize=7)
    fig.tight_layout()
    return fig


def unit_class_bars(relevance: torch.Tensor, iou: torch.Tensor, classes: list[str],
                    title: str = "") -> plt.Figure:
    """One unit's relevance ``R(i, c)`` and its IoU with each class's object, side by side
    (chapter 2's explorer).

    Args:
        relevance: one value per class.
        iou: one value per class.
        classes: the class names.
        title: the figure's title.

    Returns:
        The figure.

    Example:
        >>> fig = unit_class_bars(torch.rand(3), torch.rand(3), ["a", "b", "c"], "unit 0")
        >>> [ax.get_title() for ax in fig.axes]
        ['relevance R(i, c)', "IoU with the class's object"]
        >>> plt.close(fig)
    """
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    pd.Series(relevance.numpy(), index=classes).plot.bar(ax=axes[0], color="darkorange")
    axes[0].set_title("relevance R(i, c)")
    pd.Series(iou.numpy(), index=classes).plot.bar(ax=axes[1], color="teal")
    axes[1].set_title("IoU with the class's object")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def ablation_bars(ablation: pd.DataFrame, intact: pd.DataFrame, name: str) -> sns.FacetGrid:
    """Accuracy after switching off the units ranked for class ``name`` (chapter 2,
    Figs. 5 and 6): bars per share of units and end (top, bottom, random), one column per
    network, one row for the class's images and one for the others', with the intact
    network's accuracy dashed. ``ablation``: one row per network, class, end, fraction and
    draw with ``accuracy_class`` and ``accuracy_others``; ``intact``: the same accuracies
    indexed by (network, class).

    Args:
        ablation: columns network, class, end, fraction, draw, accuracy_class and
            accuracy_others.
        intact: accuracy_class and accuracy_others indexed by (network, class).
        name: the class whose ranking was ablated.

    Returns:
        The seaborn grid.

    Example:
        >>> ablation = pd.DataFrame({"network": "vgg11", "class": "cat", "draw": 0,
        ...                          "end": ["top", "random"], "fraction": 0.1,
        ...                          "accuracy_class": [0.2, 0.8], "accuracy_others": 0.9})
        >>> intact = pd.DataFrame({"accuracy_class": [0.9], "accuracy_others": [0.9]},
        ...                       index=pd.MultiIndex.from_tuples([("vgg11", "cat")]))
        >>> grid = ablation_bars(ablation, intact, "cat")
        >>> grid.axes.shape
        (2, 1)
        >>> plt.close(grid.figure)
    """
    rows = ablation[(ablation["class"] == name) & (ablation.draw == 0)].melt(
        id_vars=["network", "end", "fraction"], value_vars=["accuracy_class", "accuracy_others"],
        var_name="images", value_name="accuracy")
    rows["images"] = rows.images.map({"accuracy_class": name, "accuracy_others": "other classes"})
    grid = sns.catplot(rows, x="fraction", y="accuracy", hue="end", col="network", row="images",
                       kind="bar", height=2.4, aspect=1.2,
                       palette={"top": "firebrick", "bottom": "steelblue", "random": "grey"})
    for (images, net), ax in grid.axes_dict.items():
        column = "accuracy_class" if images == name else "accuracy_others"
        ax.axhline(intact.loc[(net, name), column], color="k", ls="--", lw=1)
    grid.set(ylim=(0, 1))
    grid.set_titles("{row_name} | {col_name}", size=9)
    grid.figure.suptitle(f"Ablation ranked for class {name} (dashed: intact network)", y=1.02)
    return grid


def agreement_by_layer(per_layer: pd.DataFrame) -> sns.FacetGrid:
    """How far IoU and relevance pick the same units (chapter 2, Table I), per layer: one
    panel per network, the ranking error as a line and its chance level dashed.

    Args:
        per_layer: columns network, layer, error and chance.

    Returns:
        The seaborn grid.

    Example:
        >>> rows = pd.DataFrame({"network": "vgg11", "layer": ["c1", "c2"],
        ...                      "error": [0.5, 0.3], "chance": 0.9})
        >>> grid = agreement_by_layer(rows)
        >>> grid.col_names
        ['vgg11']
        >>> plt.close(grid.figure)
    """
    grid = sns.relplot(per_layer, x="layer", y="error", col="network", kind="line", marker="o",
                       facet_kws={"sharex": False}, height=3, aspect=1.3)
    for name, ax in zip(grid.col_names, grid.axes.flat):
        rows = per_layer[per_layer.network == name]
        ax.plot(rows.layer, rows.chance, color="grey", ls="--", lw=1)
        ax.tick_params(axis="x", rotation=60, labelsize=7)
    grid.set(ylim=(0, 1.05))
    return grid


_VERDICT_COLOURS = {"held": "green", "not held": "firebrick", "not decided": "darkorange"}


def _claim_side(x: np.ndarray, op: str, threshold: float, margin: float) -> np.ndarray:
    """How far ``x`` lies on the claim's side of its rule's cut (negative: the other
    side): ``x - cut`` for ">", ``cut - x`` for "<", ``margin - |x - threshold|`` for
    "within"."""
    if op == ">":
        return x - (threshold + margin)
    if op == "<":
        return (threshold - margin) - x
    return margin - np.abs(x - threshold)


def _side_interval(value: float, low: float, high: float, op: str, threshold: float,
                   margin: float) -> tuple[float, float, float]:
    """The estimate and its interval on the claim's side (``_claim_side``); an absent
    interval stays NaN. For "within", the interval's nearest and farthest points from the
    threshold bound it."""
    point = float(_claim_side(np.array(value), op, threshold, margin))
    if np.isnan(low) or np.isnan(high):
        return point, np.nan, np.nan
    if op == "within":
        near = 0.0 if low <= threshold <= high else min(abs(low - threshold),
                                                        abs(high - threshold))
        far = max(abs(low - threshold), abs(high - threshold))
        return point, margin - far, margin - near
    ends = sorted(_claim_side(np.array([low, high]), op, threshold, margin).tolist())
    return point, ends[0], ends[1]


def claims_forest(rows: pd.DataFrame, width: int = 60) -> plt.Figure:
    """Every judged claim against its cut (the Scorecard): one line per row of ``rows``
    (``claim_tables.claims_frame(..., numbers=True)`` with a ``chapter`` column; settings are
    left out), its estimate and interval coloured by verdict, and where the row has one
    the placebo's (the same statistic on the untrained networks) beside it in grey.

    Rows measure different things, so the axis is each row's distance from its cut on
    the claim's side (``x - cut`` for ">", ``cut - x`` for "<", ``margin - |x - t|`` for
    "within"), divided by the row's largest such distance: right of 0 is the claim's side,
    and every row spans at most -1 to 1. An undefined estimate is written, not drawn.

    Args:
        rows: columns chapter, claim, verdict, value, low, high, op, threshold, margin,
            placebo_value, placebo_low, placebo_high.
        width: claims are cut to this many characters in the labels.

    Returns:
        The figure.

    Example:
        >>> rows = pd.DataFrame({"chapter": ["01"], "claim": ["x > 1"], "verdict": ["held"],
        ...     "value": [3.0], "low": [2.0], "high": [4.0], "op": [">"], "threshold": [1.0],
        ...     "margin": [0.0], "placebo_value": [0.0], "placebo_low": [np.nan],
        ...     "placebo_high": [np.nan]})
        >>> [t.get_text() for t in claims_forest(rows).axes[0].get_yticklabels()]
        ['01 · x > 1']
    """
    judged = rows[rows.op.isin([">", "<", "within"])].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(9, 0.34 * len(judged) + 1.4))
    labels = []
    for i, r in judged.iterrows():
        rule = (r.op, r.threshold, r.margin)
        ours = _side_interval(r.value, r.low, r.high, *rule)
        placebo = _side_interval(r.placebo_value, r.placebo_low, r.placebo_high, *rule)
        finite = np.abs([x for x in ours + placebo if not np.isnan(x)])
        scale = finite.max() if len(finite) and finite.max() > 0 else 1.0
        y = -i
        colour = _VERDICT_COLOURS.get(r.verdict, "grey")
        if np.isnan(ours[0]):
            ax.text(0.03, y, "undefined (nan)", va="center", fontsize=8, color=colour)
        else:
            ax.plot([ours[1] / scale, ours[2] / scale], [y, y], color=colour, lw=2.2)
            ax.plot(ours[0] / scale, y, "o", color=colour, ms=6)
        if not np.isnan(placebo[0]):
            ax.plot([placebo[1] / scale, placebo[2] / scale], [y - 0.3, y - 0.3],
                    color="grey", lw=1)
            ax.plot(placebo[0] / scale, y - 0.3, "D", mfc="white", mec="grey", ms=4)
        claim = r.claim if len(r.claim) <= width else r.claim[:width - 1] + "…"
        labels.append(f"{r.chapter} · {claim}")
    ax.axvline(0, color="k", lw=1)
    ax.set_yticks(-np.arange(len(judged)), labels, fontsize=8)
    ax.set_ylim(-len(judged) + 0.4, 0.6)
    ax.set_xlim(-1.1, 1.1)
    ax.set_xlabel("distance from the cut on the claim's side, per row / its largest "
                  "(right of 0: the claim's side)", fontsize=9)
    handles = [plt.Line2D([], [], color=c, marker="o", lw=2.2, label=v)
               for v, c in _VERDICT_COLOURS.items()]
    handles.append(plt.Line2D([], [], color="grey", marker="D", mfc="white", lw=1,
                              label="placebo (untrained)"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    sns.despine(ax=ax, left=True)
    fig.tight_layout()
    return fig


def image_grid(images: dict[tuple[int, int], np.ndarray], titles: dict[tuple[int, int], str],
               cmap: str = "inferno", vmin: float | None = None, vmax: float | None = None,
               cross: dict[tuple[int, int], float] | None = None, row_labels=None,
               size: float = 2.3) -> plt.Figure:
    """2-d arrays on a grid of panels, without ticks (chapter 3's CKA matrices and
    projection maps).

    Args:
        images: (row, column) -> a 2-d array; the grid spans the largest indices.
        titles: (row, column) -> the panel's title.
        cmap, vmin, vmax: the colour map and its range (None: each panel its own).
        cross: (row, column) -> where red lines cross the panel (both axes), if anywhere.
        row_labels: one label per row, on the first column.
        size: the side of a panel, in inches.

    Returns:
        The figure.

    Example:
        >>> fig = image_grid({(0, 0): np.eye(3), (0, 1): np.ones((3, 3))},
        ...                  {(0, 0): "a", (0, 1): "b"}, cross={(0, 0): 1.5})
        >>> len(fig.axes)
        2
    """
    rows, cols = (max(k[i] for k in images) + 1 for i in (0, 1))
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()  # until an image is drawn on it
    for (i, j), image in images.items():
        ax = axes[i, j]
        ax.set_axis_on()
        ax.imshow(np.asarray(image), cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set(xticks=[], yticks=[], ylabel=row_labels[i] if row_labels and j == 0 else "")
        ax.set_title(titles.get((i, j), ""), fontsize=8)
        if cross and (i, j) in cross:
            ax.axhline(cross[i, j], color="red", lw=1)
            ax.axvline(cross[i, j], color="red", lw=1)
    fig.tight_layout()
    return fig
