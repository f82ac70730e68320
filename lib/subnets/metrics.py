"""Numbers that chapters report: binary classification scores and agreement of maps."""

from __future__ import annotations

import pandas as pd
import torch
from scipy.stats import spearmanr


def binary_scores(predicted: torch.Tensor, actual: torch.Tensor) -> dict[str, float]:
    """Accuracy, precision, recall and F1 of boolean predictions against boolean truth.
    Precision (recall) is 0 when nothing is predicted (present) positive."""
    predicted, actual = predicted.bool(), actual.bool()
    tp = (predicted & actual).sum().item()
    fp = (predicted & ~actual).sum().item()
    fn = (~predicted & actual).sum().item()
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (predicted == actual).float().mean().item(), "precision": precision,
            "recall": recall, "f1": f1}


def accuracy_by_class(correct: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> pd.Series:
    """The share of ``correct`` among the images of each class."""
    values = [correct[labels == c].float().mean().item() for c in range(len(classes))]
    return pd.Series(values, index=pd.Index(classes, name="class"))


def jaccard(a, b) -> float:
    """|A ∩ B| / |A ∪ B| of two collections of indices (1.0 for two empty sets)."""
    a, b = set(torch.as_tensor(a).tolist()), set(torch.as_tensor(b).tolist())
    return len(a & b) / len(a | b) if a | b else 1.0


def top_fraction_mask(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """Per map (first dim), the pixels in its top ``fraction`` by value."""
    flat = maps.flatten(1)
    k = max(1, round(fraction * flat.shape[1]))
    idx = flat.topk(k, dim=1).indices
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True).view_as(maps)


def map_agreement(a: torch.Tensor, b: torch.Tensor, top: float = 0.2) -> pd.DataFrame:
    """Per pair of maps (N x ... each): Spearman rank correlation of their pixels and
    the IoU of their top-``top`` pixels. Scale-free, so unnormalised maps compare fairly."""
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    fa, fb = a.flatten(1).double(), b.flatten(1).double()
    rho = []
    for x, y in zip(fa.numpy(), fb.numpy()):
        # A constant map (a dead Grad-CAM) has no ranking: its correlation is undefined.
        rho.append(float("nan") if x.std() == 0 or y.std() == 0 else spearmanr(x, y).statistic)
    ma, mb = top_fraction_mask(fa, top), top_fraction_mask(fb, top)
    iou = (ma & mb).sum(1).double() / (ma | mb).sum(1).double()
    return pd.DataFrame({"spearman": rho, f"top{round(top * 100)}_iou": iou.numpy()})
