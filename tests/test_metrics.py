import math

import pytest
import torch

from subnets import metrics


def test_binary_scores_by_hand():
    predicted = torch.tensor([1, 1, 0, 0, 1, 0])
    actual = torch.tensor([1, 0, 1, 0, 1, 0])
    s = metrics.binary_scores(predicted, actual)
    # tp=2, fp=1, fn=1, tn=2
    assert s["accuracy"] == pytest.approx(4 / 6)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3)
    none = metrics.binary_scores(torch.zeros(3), torch.tensor([1, 0, 0]))
    assert none["precision"] == 0.0 and none["f1"] == 0.0


def test_accuracy_by_class():
    acc = metrics.accuracy_by_class(torch.tensor([True, False, True, True]), torch.tensor([0, 0, 1, 1]), ["a", "b"])
    assert acc.tolist() == [0.5, 1.0] and list(acc.index) == ["a", "b"]


def test_map_agreement_is_scale_free_and_detects_disagreement():
    a = torch.arange(16.0).view(1, 1, 4, 4)
    same = metrics.map_agreement(a, 10 * a + 3, top=0.25)
    assert same["spearman"].iloc[0] == pytest.approx(1.0) and same["top25_iou"].iloc[0] == 1.0
    flipped = metrics.map_agreement(a, -a, top=0.25)
    assert flipped["spearman"].iloc[0] == pytest.approx(-1.0) and flipped["top25_iou"].iloc[0] == 0.0
    dead = metrics.map_agreement(a, torch.zeros_like(a))
    assert math.isnan(dead["spearman"].iloc[0])
    with pytest.raises(ValueError, match="shape"):
        metrics.map_agreement(a, a[..., :2])


def test_top_fraction_mask_counts():
    maps = torch.tensor([[3.0, 1.0, 2.0, 0.0]])
    assert metrics.top_fraction_mask(maps, 0.5).tolist() == [[True, False, True, False]]


def test_jaccard_is_intersection_over_union():
    assert metrics.jaccard([1, 2, 3], torch.tensor([2, 3, 4, 5])) == pytest.approx(2 / 5)
    assert metrics.jaccard([], []) == 1.0 and metrics.jaccard([1], [2]) == 0.0
