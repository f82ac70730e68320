"""The Gaussian-noise ablation of chapter 4 (Table 8) on tiny hand-checked features."""

import pytest
import torch
from test_influence import select
from torch import nn

from subnets import feature_noise, influence
from subnets.influence import PenultimateFeatures


def test_noise_replaces_only_the_chosen_features_of_each_label():
    x = torch.arange(12.0).view(3, 4)
    y = torch.tensor([0, 1, 0])
    replace = torch.tensor([[False, True, False, False], [False, False, False, True]])
    mean, std = torch.full((4,), -1.0), torch.zeros(4)  # zero spread: the noise is the mean
    out = feature_noise.noised_features(x, y, replace, mean, std)
    assert out.tolist() == [[0, -1, 2, 3], [4, 5, 6, -1], [8, -1, 10, 11]]
    with pytest.raises(ValueError, match="replace"):
        feature_noise.noised_features(x, y, torch.tensor([[1], [3]]), mean, std)


def test_noise_ablation_of_features_the_layer_ignores_changes_nothing():
    # The layer reads only features 0 and 1; if they are each class's influential ones,
    # noising the others (2..5) cannot change a prediction, and noising 0/1 does.
    fc = nn.Linear(6, 2)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[3.0, -3.0, 0, 0, 0, 0], [-3.0, 3.0, 0, 0, 0, 0]]))
        fc.bias.zero_()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 6, generator=g)
    x[:, 2:] *= 0.1  # features 2..5 are small, so 0 and 1 top every instance
    y = fc(x).argmax(1)
    data = PenultimateFeatures(x, y)
    inf = select(x, y, k1=2, k2=2)
    assert sorted(inf.indices[0].tolist()) == [0, 1] and sorted(inf.indices[1].tolist()) == [0, 1]
    result = feature_noise.noise_ablation(fc, data, data, inf, seed=0).accuracies()
    assert result["original"] == 1.0 and result["non_influential"] == 1.0
    assert result["as_many_others"] == 1.0
    assert result["influential"] < 0.8


def test_standard_noise_is_n01_whatever_the_features_scale():
    # Class 0 wins while feature 0 (~1000, its influential feature) exceeds 500: noise with
    # the feature's own statistics keeps it there, the authors' N(0, 1) does not.
    fc = nn.Linear(4, 2)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0]]))
        fc.bias.copy_(torch.tensor([0.0, 500.0]))
    x = torch.rand(200, 4, generator=torch.Generator().manual_seed(0)) + 100
    x[:, 0] += 900
    data = PenultimateFeatures(x, torch.zeros(200, dtype=torch.long))
    inf = select(x, data.labels, k1=1, k2=1)
    assert inf.indices.tolist() == [[0]]
    feature = feature_noise.noise_ablation(fc, data, data, inf, noise="feature").accuracies()
    standard = feature_noise.noise_ablation(fc, data, data, inf, noise="standard").accuracies()
    assert feature["influential"] == 1.0 and standard["influential"] == 0.0
    assert standard["original"] == 1.0
    with pytest.raises(ValueError, match="noise"):
        feature_noise.noise_ablation(fc, data, data, inf, noise="uniform")


def test_noise_ablation_replaces_all_non_influential_features():
    # Section 5.2.6 noises every feature outside S_c (D - k2 of them), not k2 random ones:
    # a layer that reads only feature 5 (never influential here) loses its information in
    # the paper's ablation on every instance, and only where 5 is drawn in the control.
    fc = nn.Linear(6, 2)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[0, 0, 0, 0, 0, -10.0], [0, 0, 0, 0, 0, 10.0]]))
        fc.bias.zero_()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(400, 6, generator=g) * 0.1
    x[:, :2] += 5.0  # features 0 and 1 top every instance: S_c = {0, 1} for both classes
    x[:, 5] = torch.where(torch.rand(400, generator=g) < 0.5, 0.02, 0.09)
    with torch.no_grad():
        fc.bias.fill_(0.0)
        fc.bias[0] = 0.55  # class 1 when x5 > 0.055
    y = fc(x).argmax(1)
    data = PenultimateFeatures(x, y)
    inf = select(x, y, k1=2, k2=2, classes=2)
    res = feature_noise.noise_ablation(fc, data, data, inf, seed=0)
    assert res.original.mean() == 1.0 and res.influential.mean() == 1.0
    assert res.non_influential.mean() < 0.8  # feature 5 always replaced
    # The control replaces feature 5 only for classes whose two random others include it.
    others = influence.non_influential_indices(inf, seed=0)
    hit = torch.tensor([5 in others[c].tolist() for c in range(2)])[y]
    assert res.as_many_others[~hit].eq(1.0).all()


