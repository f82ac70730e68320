"""Numbers that chapters report: binary classification scores and agreement of maps.

Maps are compared by their *top* pixels. A map that does not vary (a dead Grad-CAM, an
all-zero saliency) has no top pixels: its top mask is empty and every number read from
it is NaN, never an arbitrary set of pixels. Pixels tied with the map's minimum (the
zeros that a ReLU leaves) are never "top" either, so a map with few nonzero pixels has
a top mask smaller than the fraction asked for.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

__all__ = ["binary_scores", "accuracy_by_class", "jaccard", "spearman", "top_fraction_mask",
           "index_mask", "map_agreement", "is_flat", "object_share", "foreground_share",
           "centred_blob", "half_max_cover", "half_max_area"]


def binary_scores(predicted: torch.Tensor, actual: torch.Tensor) -> dict[str, float]:
    """Accuracy, precision, recall, specificity, balanced accuracy (the mean of recall and
    specificity: 0.5 for a classifier that ignores its input, whatever the class shares)
    and F1 of boolean predictions against boolean truth. Precision (recall, specificity)
    is 0 when nothing is predicted positive (present, absent)."""
    predicted, actual = predicted.bool(), actual.bool()
    tp = (predicted & actual).sum().item()
    fp = (predicted & ~actual).sum().item()
    fn = (~predicted & actual).sum().item()
    tn = (~predicted & ~actual).sum().item()
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    specificity = tn / (tn + fp) if tn + fp else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (predicted == actual).float().mean().item(), "precision": precision,
            "recall": recall, "specificity": specificity,
            "balanced_accuracy": (recall + specificity) / 2, "f1": f1}


def accuracy_by_class(correct: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> pd.Series:
    """The share of ``correct`` (boolean, one per image) among the images of each class
    (``labels``: class indices into ``classes``), as a float32 mean per class: a Series
    named "accuracy", indexed by class name, NaN for a class without images."""
    values = [correct[labels == c].float().mean().item() for c in range(len(classes))]
    return pd.Series(values, index=pd.Index(classes, name="class"), name="accuracy")


def jaccard(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|A ∩ B| / |A ∪ B| of sets given as boolean masks along the last dimension (batched
    over the others, broadcasting), in the default float dtype. NaN where both sets are
    empty: the index is undefined there, and callers average with ``nanmean`` rather
    than count it as agreement. Lengerich et al.'s definition (chapter 5; their public
    code divides by |A| + |B| instead). For index sets, pass ``index_mask``'s masks."""
    return (a & b).sum(-1) / (a | b).sum(-1)


def index_mask(indices, size: int) -> torch.Tensor:
    """Boolean masks of length ``size``, True at ``indices``: one mask for a 1-D index set
    (e.g. kept channels), one per row for rows x k indices; for ``jaccard``."""
    indices = torch.as_tensor(indices, dtype=torch.long)
    return torch.zeros(*indices.shape[:-1], size, dtype=torch.bool).scatter_(-1, indices, True)


def spearman(a, b) -> float:
    """Spearman's rank correlation of two sequences; NaN, without a warning, where it is
    undefined (a NaN in either, or either constant)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if np.isnan(a).any() or np.isnan(b).any() or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def is_flat(maps: torch.Tensor) -> torch.Tensor:
    """Per map (first dim), whether all its pixels are equal (no ranking, no top pixels)."""
    flat = maps.flatten(1)
    return flat.amax(1) == flat.amin(1)


def top_fraction_mask(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """Per map (first dim), its top ``fraction`` of pixels: those at least as large as the
    k-th largest value (ties included, so the choice is never arbitrary) and above the
    map's minimum (empty for a flat map)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction: expected a value in (0, 1], got {fraction}")
    flat = maps.flatten(1)
    k = max(1, round(fraction * flat.shape[1]))
    kth = flat.topk(k, dim=1).values[:, -1:]
    return ((flat >= kth) & (flat > flat.amin(1, keepdim=True))).view_as(maps)


def map_agreement(a: torch.Tensor, b: torch.Tensor, top: float = 0.2) -> pd.DataFrame:
    """Per pair of maps (N x ... each): Spearman rank correlation of their pixels, the IoU
    of their top-``top`` pixels, and whether each map is flat. Both numbers are NaN for
    a pair with a flat map (undefined, and counted by the ``flat_*`` columns rather than
    silently dropped). Scale-free, so unnormalised maps compare fairly."""
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    fa, fb = a.flatten(1).double(), b.flatten(1).double()
    flat_a, flat_b = is_flat(fa), is_flat(fb)
    rho = [float("nan") if fx or fy else spearmanr(x, y).statistic
           for x, y, fx, fy in zip(fa.numpy(), fb.numpy(), flat_a.tolist(), flat_b.tolist())]
    ma, mb = top_fraction_mask(fa, top), top_fraction_mask(fb, top)
    iou = (ma & mb).sum(1).double() / (ma | mb).sum(1).double()
    iou[flat_a | flat_b] = float("nan")
    return pd.DataFrame({"spearman": rho, f"top{round(top * 100)}_iou": iou.numpy(),
                         "flat_a": flat_a.numpy(), "flat_b": flat_b.numpy()})


def object_share(top: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
    """Per map, the share of its ``top`` pixels (a boolean mask) that lie on the object
    (``objects``, boolean, same shape); NaN for an empty top mask (a flat map)."""
    if top.shape != objects.shape:
        raise ValueError(f"masks differ in shape: {tuple(top.shape)} vs {tuple(objects.shape)}")
    top, objects = top.flatten(1), objects.flatten(1)
    count = top.sum(1).double()
    share = (top & objects).sum(1).double() / count
    return torch.where(count > 0, share, torch.full_like(share, float("nan")))


def foreground_share(objects: torch.Tensor) -> torch.Tensor:
    """Per image, the share of its pixels on the object: the object share that top pixels
    placed at random would reach (chance)."""
    return objects.flatten(1).double().mean(1)


def centred_blob(n: int, height: int, width: int, sigma: float = 0.25) -> torch.Tensor:
    """``n`` copies of a Gaussian blob centred in the image (N x 1 x H x W), standard
    deviation ``sigma`` times the side: a map that knows nothing of the image, and the
    control for "the map stays on the object" where objects sit in the middle."""
    ys = (torch.arange(height, dtype=torch.float64) - (height - 1) / 2) / (sigma * height)
    xs = (torch.arange(width, dtype=torch.float64) - (width - 1) / 2) / (sigma * width)
    blob = torch.exp(-(ys.view(-1, 1) ** 2 + xs.view(1, -1) ** 2) / 2)
    return blob.expand(n, 1, height, width).clone()


def half_max_cover(maps: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Per map, the share of ``region``'s pixels (a boolean mask, same shape) at or above
    half the map's maximum; NaN for a map whose maximum is not positive (nothing
    highlighted) or an empty region. With the object as ``region`` and then the background,
    it tells a map that grows on the object from one that grows everywhere."""
    if maps.shape != region.shape:
        raise ValueError(f"maps and region differ in shape: {tuple(maps.shape)} vs "
                         f"{tuple(region.shape)}")
    flat, region = maps.flatten(1).double(), region.flatten(1)
    peak = flat.amax(1, keepdim=True)
    size = region.sum(1).double()
    cover = ((flat >= peak / 2) & region).sum(1).double() / size
    return torch.where((peak[:, 0] > 0) & (size > 0), cover, torch.full_like(cover, float("nan")))


def half_max_area(maps: torch.Tensor) -> torch.Tensor:
    """Per map, the share of its pixels at or above half its maximum (how large the map's
    focus is); NaN for a map whose maximum is not positive (nothing highlighted)."""
    return half_max_cover(maps, torch.ones_like(maps, dtype=torch.bool))
