"""Figures shared by the chapters (matplotlib and seaborn)."""

from __future__ import annotations

from collections.abc import Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from .devices import to_host
from .progress import headless

sns.set_theme(context="notebook", style="white")


def as_image(x: torch.Tensor) -> np.ndarray:
    """C x H x W in [0, 1] to what imshow takes (H x W grey or H x W x 3)."""
    x = to_host(x)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def map_comparison(images: torch.Tensor, maps: dict[str, torch.Tensor],
                   titles: list[str] | None = None, shared_scale: bool = True,
                   alpha: float = 0.55, cmap: str = "jet") -> plt.Figure:
    """One column per image: the image, then one row per entry of ``maps`` overlaid on it.

    With ``shared_scale`` every map of a column uses the same colour range (0 to the
    column's largest value), so a weaker map looks weaker; otherwise each map is
    stretched to its own maximum.
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
    """A DataFrame as an annotated seaborn heatmap."""
    if ax is None:
        _, ax = plt.subplots(figsize=(0.6 * table.shape[1] + 2.5, 0.4 * table.shape[0] + 1.5))
    sns.heatmap(table, annot=table.size <= 200, fmt=fmt, cmap=cmap, ax=ax, **kwargs)
    ax.set_title(title)
    return ax


def class_histograms(histograms: torch.Tensor, kept: torch.Tensor, classes: list[str],
                     title: str = "", ylabel: str = "count") -> plt.Figure:
    """One bar chart per class (row of ``histograms``, C x D counts) over the feature
    index, the ``kept`` (C x D booleans) bars in red, the others grey (chapter 4, Fig. 2)."""
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
    feature axis, each with its colour bar (chapter 4: gates vs influential features)."""
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
    widget opens a comm. ``controls`` builds the widgets only when they are wanted."""
    if headless():
        function()
        return
    import ipywidgets

    ipywidgets.interact(function, **controls())
