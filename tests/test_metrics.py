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
    correct, labels = torch.tensor([True, False, True, True]), torch.tensor([0, 0, 1, 1])
    acc = metrics.accuracy_by_class(correct, labels, ["a", "b", "c"])
    assert acc.tolist()[:2] == [0.5, 1.0] and list(acc.index) == ["a", "b", "c"]
    assert math.isnan(acc["c"]) and acc.name == "accuracy" and acc.index.name == "class"
    # float32 shares, as the per-class tables have always been computed
    thirds = metrics.accuracy_by_class(torch.tensor([True, False, False]),
                                       torch.zeros(3, dtype=torch.long), ["a"])
    assert thirds["a"] == torch.tensor(1 / 3).item() != 1 / 3


def test_map_agreement_is_scale_free_and_detects_disagreement():
    a = torch.arange(16.0).view(1, 1, 4, 4)
    same = metrics.map_agreement(a, 10 * a + 3, top=0.25)
    assert same["spearman"].iloc[0] == pytest.approx(1.0) and same["top25_iou"].iloc[0] == 1.0
    flipped = metrics.map_agreement(a, -a, top=0.25)
    assert flipped["spearman"].iloc[0] == pytest.approx(-1.0)
    assert flipped["top25_iou"].iloc[0] == 0.0
    dead = metrics.map_agreement(a, torch.zeros_like(a))
    assert math.isnan(dead["spearman"].iloc[0])
    with pytest.raises(ValueError, match="shape"):
        metrics.map_agreement(a, a[..., :2])


def test_top_fraction_mask_counts():
    maps = torch.tensor([[3.0, 1.0, 2.0, 0.0]])
    assert metrics.top_fraction_mask(maps, 0.5).tolist() == [[True, False, True, False]]


def test_jaccard_is_intersection_over_union():
    a = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    b = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    j = metrics.jaccard(a, b)
    assert j.shape == (3,) and j.dtype == torch.get_default_dtype()
    assert j[0].item() == pytest.approx(2 / 4)  # not 2 / (3 + 3), the public code's ratio
    assert j[1].item() == 1.0
    assert torch.isnan(j[2])  # two empty sets: undefined
    # Batched over leading dimensions, broadcasting.
    assert metrics.jaccard(a.view(3, 1, 5), b.view(1, 3, 5)).shape == (3, 3)


def test_jaccard_of_index_sets_through_index_mask():
    mask = metrics.index_mask(torch.tensor([1, 3]), 5)
    assert mask.tolist() == [False, True, False, True, False]
    assert not metrics.index_mask([], 3).any()
    a, b = metrics.index_mask([1, 2, 3], 6), metrics.index_mask(torch.tensor([2, 3, 4, 5]), 6)
    assert metrics.jaccard(a, b).item() == pytest.approx(2 / 5)
    assert math.isnan(metrics.jaccard(metrics.index_mask([], 4), metrics.index_mask([], 4)))


def test_binary_scores_separate_recall_and_specificity():
    predicted = torch.tensor([1, 1, 0, 0, 1, 0, 0, 0])
    actual = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0])
    s = metrics.binary_scores(predicted, actual)
    # tp=2, fn=1, fp=1, tn=4
    assert s["recall"] == pytest.approx(2 / 3) and s["specificity"] == pytest.approx(4 / 5)
    assert s["balanced_accuracy"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    # Saying "not C" to everything is 0.5 balanced accuracy, however rare C is.
    never = metrics.binary_scores(torch.zeros(100), torch.arange(100) < 10)
    assert never["accuracy"] == pytest.approx(0.9) and never["balanced_accuracy"] == 0.5


def test_flat_maps_have_no_top_pixels_and_nan_agreement():
    # The old top-k picked 20 % of a flat map's pixels anyway (the first ones), and a
    # dead map then had an IoU with anything.
    zero = torch.zeros(1, 1, 4, 4)
    assert not metrics.top_fraction_mask(zero, 0.2).any()
    a = torch.arange(16.0).view(1, 1, 4, 4)
    agree = metrics.map_agreement(torch.cat([a, a]), torch.cat([a, zero]), top=0.25)
    assert agree["top25_iou"].iloc[0] == 1.0 and math.isnan(agree["top25_iou"].iloc[1])
    assert agree["flat_b"].tolist() == [False, True] and not agree["flat_a"].any()
    with pytest.raises(ValueError, match="fraction"):
        metrics.top_fraction_mask(a, 0.0)


def test_top_mask_never_takes_the_zeros_of_a_sparse_map():
    # Two positive pixels of 16: top-25 % (4 pixels) is those two, not two arbitrary zeros.
    sparse = torch.zeros(1, 16)
    sparse[0, [3, 9]] = torch.tensor([1.0, 2.0])
    assert metrics.top_fraction_mask(sparse, 0.25).nonzero()[:, 1].tolist() == [3, 9]
    # Ties at the cut are all in: the choice is never arbitrary.
    tied = torch.tensor([[3.0, 1.0, 1.0, 0.0]])
    assert metrics.top_fraction_mask(tied, 0.5).tolist() == [[True, True, True, False]]


def test_object_share_foreground_share_and_blob_control():
    objects = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    objects[:, :, 1:3, 1:3] = True  # a centred 2x2 object: 1/4 of the image
    maps = torch.zeros(2, 1, 4, 4)
    maps[0, 0, 1, 1], maps[0, 0, 0, 0] = 2.0, 1.0  # one top pixel on, one off the object
    top = metrics.top_fraction_mask(maps, 2 / 16)
    share = metrics.object_share(top, objects)
    assert share[0] == 0.5 and math.isnan(share[1])  # map 1 is flat: undefined, not 0
    assert metrics.foreground_share(objects).tolist() == [0.25, 0.25]
    blob = metrics.centred_blob(2, 4, 4)
    assert blob.shape == (2, 1, 4, 4)
    # The blob's top quarter is the centre: a map that ignores the image sits on it.
    assert metrics.object_share(metrics.top_fraction_mask(blob, 0.25), objects).tolist() == [1, 1]


def test_half_max_area():
    maps = torch.zeros(3, 1, 2, 2)
    maps[0, 0, 0, 0] = 4.0
    maps[0, 0, 0, 1] = 2.0  # exactly half: in
    maps[1] = 1.0
    area = metrics.half_max_area(maps)
    assert area[0] == 0.5 and area[1] == 1.0 and math.isnan(area[2])


def test_half_max_cover_tells_growth_on_the_object_from_growth_everywhere():
    objects = torch.zeros(3, 1, 2, 2, dtype=torch.bool)
    objects[:, :, 0] = True  # the top row is the object
    maps = torch.zeros(3, 1, 2, 2)
    maps[0, 0, 0] = 1.0  # on the whole object, nothing else
    maps[1] = 1.0  # everywhere
    on, off = metrics.half_max_cover(maps, objects), metrics.half_max_cover(maps, ~objects)
    assert on[:2].tolist() == [1.0, 1.0] and off[:2].tolist() == [0.0, 1.0]
    assert math.isnan(on[2])  # nothing highlighted: undefined
    assert math.isnan(metrics.half_max_cover(maps, torch.zeros_like(objects))[0])  # no region


def test_spearman_is_nan_without_a_warning_where_undefined():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(metrics.spearman([1, 1, 1], [1, 2, 3]))
        assert math.isnan(metrics.spearman([1, float("nan"), 2], [1, 2, 3]))
    assert metrics.spearman([1, 2, 3], [10, 30, 20]) == 0.5
