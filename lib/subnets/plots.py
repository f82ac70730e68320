"""Figures shared by the chapters (matplotlib and seaborn)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

sns.set_theme(context="notebook", style="white")


def as_image(x: torch.Tensor) -> np.ndarray:
    """C x H x W in [0, 1] to what imshow takes (H x W grey or H x W x 3)."""
    x = x.detach().cpu()
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def map_comparison(images: torch.Tensor, maps: dict[str, torch.Tensor], titles: list[str] | None = None,
                   shared_scale: bool = True, alpha: float = 0.55, cmap: str = "jet") -> plt.Figure:
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
            axes[i, j].imshow(m[j, 0].cpu().numpy(), cmap=cmap, alpha=alpha, vmin=0, vmax=top or 1.0)
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
