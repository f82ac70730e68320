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
    is 0 when nothing is predicted positive (present, absent).

    Args:
        predicted: the predictions (any shape; nonzero is positive).
        actual: the truth, same shape.

    Returns:
        Score name -> value.

    Example:
        >>> scores = binary_scores(torch.tensor([1, 1, 0, 0]), torch.tensor([1, 0, 0, 0]))
        >>> scores["precision"], scores["recall"], round(scores["balanced_accuracy"], 3)
        (0.5, 1.0, 0.833)
    """
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
    (``labels``: class indices into ``classes``), as a float32 mean per class.

    Args:
        correct: N booleans, one per image.
        labels: N class indices.
        classes: the class names, by index.

    Returns:
        A Series named "accuracy", indexed by class name, NaN for a class without images.

    Example:
        >>> accuracy_by_class(torch.tensor([True, False, True]), torch.tensor([0, 0, 1]),
        ...                   ["cat", "dog", "eel"]).tolist()
        [0.5, 1.0, nan]
    """
    values = [correct[labels == c].float().mean().item() for c in range(len(classes))]
    return pd.Series(values, index=pd.Index(classes, name="class"), name="accuracy")


def jaccard(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|A ∩ B| / |A ∪ B| of sets given as boolean masks along the last dimension (batched
    over the others, broadcasting), in the default float dtype. NaN where both sets are
    empty: the index is undefined there, and callers average with ``nanmean`` rather
    than count it as agreement. Lengerich et al.'s definition (chapter 5; their public
    code divides by |A| + |B| instead). For index sets, pass ``index_mask``'s masks.

    Args:
        a: boolean masks, ... x n.
        b: boolean masks, broadcastable against ``a``.

    Returns:
        The index per mask pair (the shape of ``a & b`` without its last dimension).

    Example:
        >>> jaccard(torch.tensor([True, True, False]), torch.tensor([True, False, True]))
        tensor(0.3333)
        >>> jaccard(torch.zeros(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool))
        tensor(nan)
    """
    return (a & b).sum(-1) / (a | b).sum(-1)


def index_mask(indices, size: int) -> torch.Tensor:
    """Boolean masks of length ``size``, True at ``indices``; for ``jaccard``.

    Args:
        indices: a 1-D index set (e.g. kept channels), or rows x k indices.
        size: the masks' length.

    Returns:
        One mask (``size``) or one per row (rows x ``size``).

    Example:
        >>> index_mask([0, 2], 4).tolist()
        [True, False, True, False]
        >>> jaccard(index_mask([[0, 1], [1, 2]], 4), index_mask([1, 2], 4))
        tensor([0.3333, 1.0000])
    """
    indices = torch.as_tensor(indices, dtype=torch.long)
    return torch.zeros(*indices.shape[:-1], size, dtype=torch.bool).scatter_(-1, indices, True)


def spearman(a, b) -> float:
    """Spearman's rank correlation of two sequences.

    Args:
        a: numbers.
        b: as many numbers.

    Returns:
        The correlation; NaN, without a warning, where it is undefined (a NaN in either,
        or either constant).

    Example:
        >>> round(spearman([1, 2, 3, 4], [10, 20, 40, 30]), 3), spearman([1, 2], [5, 5])
        (0.8, nan)
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if np.isnan(a).any() or np.isnan(b).any() or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def is_flat(maps: torch.Tensor) -> torch.Tensor:
    """Whether each map's pixels are all equal (no ranking, no top pixels).

    Args:
        maps: N x ... maps.

    Returns:
        N booleans.

    Example:
        >>> is_flat(torch.tensor([[0.0, 0.0], [0.0, 1.0]])).tolist()
        [True, False]
    """
    flat = maps.flatten(1)
    return flat.amax(1) == flat.amin(1)


def top_fraction_mask(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """Per map (first dim), its top ``fraction`` of pixels: those at least as large as the
    k-th largest value (ties included, so the choice is never arbitrary) and above the
    map's minimum (empty for a flat map).

    Args:
        maps: N x ... maps.
        fraction: the share of pixels wanted, in (0, 1].

    Returns:
        Boolean masks shaped as ``maps``.

    Raises:
        ValueError: for a ``fraction`` outside (0, 1].

    Example:
        >>> top_fraction_mask(torch.tensor([[0.0, 3.0, 2.0, 3.0]]), 0.25).tolist()
        [[False, True, False, True]]
    """
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
    silently dropped). Scale-free, so unnormalised maps compare fairly.

    Args:
        a: N x ... maps.
        b: N x ... maps, shaped as ``a``.
        top: the share of top pixels compared by IoU.

    Returns:
        One row per pair: spearman, top<percent>_iou, flat_a, flat_b.

    Example:
        >>> maps = torch.tensor([[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]])
        >>> map_agreement(maps, maps.flip(0), top=0.25).columns.tolist()
        ['spearman', 'top25_iou', 'flat_a', 'flat_b']
        >>> map_agreement(maps, 2 * maps, top=0.25).iloc[0, :2].tolist()
        [1.0, 1.0]
    """
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
    (``objects``, boolean, same shape).

    Args:
        top: N x ... boolean masks (``top_fraction_mask``).
        objects: N x ... boolean object masks.

    Returns:
        N shares (float64); NaN for an empty top mask (a flat map).

    Example:
        >>> object_share(torch.tensor([[True, True, False], [False, False, False]]),
        ...              torch.tensor([[True, False, False], [True, True, True]]))
        tensor([0.5000,    nan], dtype=torch.float64)
    """
    if top.shape != objects.shape:
        raise ValueError(f"masks differ in shape: {tuple(top.shape)} vs {tuple(objects.shape)}")
    top, objects = top.flatten(1), objects.flatten(1)
    count = top.sum(1).double()
    share = (top & objects).sum(1).double() / count
    return torch.where(count > 0, share, torch.full_like(share, float("nan")))


def foreground_share(objects: torch.Tensor) -> torch.Tensor:
    """Per image, the share of its pixels on the object: the object share that top pixels
    placed at random would reach (chance).

    Args:
        objects: N x ... boolean object masks.

    Returns:
        N shares (float64).

    Example:
        >>> foreground_share(torch.tensor([[True, False, False, False]]))
        tensor([0.2500], dtype=torch.float64)
    """
    return objects.flatten(1).double().mean(1)


def centred_blob(n: int, height: int, width: int, sigma: float = 0.25) -> torch.Tensor:
    """``n`` copies of a Gaussian blob centred in the image (N x 1 x H x W), standard
    deviation ``sigma`` times the side: a map that knows nothing of the image, and the
    control for "the map stays on the object" where objects sit in the middle.

    Args:
        n: how many copies.
        height: the image's height.
        width: the image's width.
        sigma: the standard deviation, as a share of the side.

    Returns:
        N x 1 x H x W, float64, peak 1 in the middle.

    Example:
        >>> blob = centred_blob(2, 3, 3)
        >>> blob.shape, blob[0, 0, 1, 1].item(), bool(blob[0, 0, 0, 0] < 1)
        (torch.Size([2, 1, 3, 3]), 1.0, True)
    """
    ys = (torch.arange(height, dtype=torch.float64) - (height - 1) / 2) / (sigma * height)
    xs = (torch.arange(width, dtype=torch.float64) - (width - 1) / 2) / (sigma * width)
    blob = torch.exp(-(ys.view(-1, 1) ** 2 + xs.view(1, -1) ** 2) / 2)
    return blob.expand(n, 1, height, width).clone()


def half_max_cover(maps: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Per map, the share of ``region``'s pixels (a boolean mask, same shape) at or above
    half the map's maximum; NaN for a map whose maximum is not positive (nothing
    highlighted) or an empty region. With the object as ``region`` and then the background,
    it tells a map that grows on the object from one that grows everywhere.

    Args:
        maps: N x ... maps.
        region: N x ... boolean masks.

    Returns:
        N shares (float64).

    Example:
        >>> maps = torch.tensor([[4.0, 2.0, 1.0, 0.0]])
        >>> half_max_cover(maps, torch.tensor([[True, True, True, False]]))
        tensor([0.6667], dtype=torch.float64)
    """
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
    focus is); NaN for a map whose maximum is not positive (nothing highlighted).

    Args:
        maps: N x ... maps.

    Returns:
        N shares (float64).

    Example:
        >>> half_max_area(torch.tensor([[4.0, 2.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
        tensor([0.5000,    nan], dtype=torch.float64)
    """
    return half_max_cover(maps, torch.ones_like(maps, dtype=torch.bool))
