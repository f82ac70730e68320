"""Algorithm 1, the decomposed final layer, the noise ablation and
the CIFAR ResNet's option-A shortcut on tiny hand-checked inputs."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from subnets import decomposition, influence, models
from subnets.influence import PenultimateFeatures
from subnets.methods import LayerScores, UnitSelection
from subnets.models.resnet import _PadShortcut
from subnets.train import seeded


def tiny_fc() -> nn.Linear:
    fc = nn.Linear(4, 3)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0],
                                      [-1.0, 0.5, 0.0, 2.0],
                                      [0.0, -2.0, 1.0, 1.0]]))
        fc.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    return fc


class Head(nn.Module):
    """A network that is only its final layer: its penultimate features are its inputs."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, classes)

    def penultimate(self, x):
        return x

    def forward(self, x):
        return self.fc(x)


def select(features, labels, k1, k2, classes=None):
    """Algorithm 1 on ``features`` through a final layer of their width."""
    classes = int(labels.max()) + 1 if classes is None else classes
    method = influence.InfluentialFeatureSelection(Head(features.shape[1], classes), k1=k1, k2=k2)
    return method.select(PenultimateFeatures(features, labels))


def test_top_k_indices_by_magnitude_with_ties_to_lower_index():
    f = torch.tensor([[0.1, 3.0, -5.0, 3.0],
                      [0.0, 0.0, 0.0, 1.0]])
    assert influence.top_k_indices(f, 2).tolist() == [[2, 1], [3, 0]]
    assert influence.top_k_indices(f, 3).tolist() == [[2, 1, 3], [3, 0, 1]]


def test_histograms_and_algorithm_1_by_hand():
    # Class 0: tops (k1=2) are {1,2}, {1,3}, {1,2} -> counts [0,3,2,1]; class 1: {0,3}, {3,2}.
    f = torch.tensor([[0.0, 5.0, 4.0, 1.0],
                      [0.0, 5.0, 1.0, 4.0],
                      [0.2, 3.0, 2.0, 0.1],
                      [6.0, 0.0, 0.0, 7.0],
                      [0.0, 0.0, 2.0, 3.0]])
    y = torch.tensor([0, 0, 0, 1, 1])
    hist = influence.index_histograms(f, y, k1=2, num_classes=2)
    assert hist.tolist() == [[0, 3, 2, 1], [1, 0, 1, 2]]
    inf = select(f, y, k1=2, k2=2)
    assert (inf.k1, inf.k2, inf.num_classes, inf.dim) == (2, 2, 2, 4)
    assert torch.equal(inf.histograms, hist)
    # Class 1's second place is a tie between 0 and 2: the lower index wins.
    assert inf.indices.tolist() == [[1, 2], [3, 0]]
    assert inf.mask().tolist() == [[False, True, True, False], [True, False, False, True]]
    assert inf.overlap().tolist() == [[2, 0], [0, 2]]
    assert inf.union().tolist() == [0, 1, 2, 3]
    assert inf.summary() == influence.SetSummary(features_per_class=2, fraction_of_width=0.5,
                                                 union=4, union_fraction=1.0,
                                                 mean_pairwise_jaccard=0.0)


def test_selection_on_a_dataset_is_the_selection_on_its_features():
    data = two_blobs(40)
    with seeded(0):
        net = TinyNet()
    method = influence.InfluentialFeatureSelection(net, k1=3, k2=2)
    on_data = method.select(data)
    on_features = method.select(influence.penultimate_features(net, data))
    assert torch.equal(on_data.indices, on_features.indices)
    assert torch.equal(on_data.histograms, on_features.histograms)
    assert on_data.indices.shape == (2, 2) and on_data.histograms.sum() == 40 * 3


def test_selection_checks_its_model_k_and_data():
    with seeded(0):
        net = TinyNet()  # 6 features, 2 classes
    with pytest.raises(TypeError, match="fc"):
        influence.InfluentialFeatureSelection(nn.Linear(6, 2), k1=1, k2=1)
    with pytest.raises(ValueError, match="k1"):
        influence.InfluentialFeatureSelection(net, k1=7, k2=1)
    with pytest.raises(ValueError, match="k2"):
        influence.InfluentialFeatureSelection(net, k1=1, k2=0)
    method = influence.InfluentialFeatureSelection(net, k1=2, k2=2)
    with pytest.raises(ValueError, match="6 features"):
        method.select(PenultimateFeatures(torch.rand(4, 5), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(ValueError, match="labels in 0..1"):
        method.select(PenultimateFeatures(torch.rand(4, 6), torch.tensor([0, 1, 2, 0])))


def test_penultimate_features_are_a_dataclass_and_cached(isolated_cache):
    data = two_blobs(30)
    with seeded(0):
        net = TinyNet()
    feats = influence.penultimate_features(net, data)
    assert isinstance(feats, PenultimateFeatures)
    torch.testing.assert_close(feats.features, net.penultimate(data.tensors[0]))
    assert torch.equal(feats.labels, data.tensors[1])
    assert len(list(isolated_cache.glob("penultimate-features-*.pt"))) == 1
    again = influence.penultimate_features(net, data)
    assert torch.equal(again.features, feats.features)
    assert len(list(isolated_cache.glob("penultimate-features-*.pt"))) == 1
    fresh = influence.penultimate_features(net, data, cached=False)
    assert torch.equal(fresh.features, feats.features)
    x, y = feats.dataset().tensors
    assert torch.equal(x, feats.features) and torch.equal(y, feats.labels)
    with pytest.raises(TypeError, match="penultimate"):
        influence.penultimate_features(nn.Linear(2, 2), data)


def test_decomposed_layer_by_hand():
    fc = tiny_fc()
    layer = influence.DecomposedLinear(fc, torch.tensor([[3, 0], [1, 3], [2, 1]]))
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.0]])
    # Class 0 reads x3, x0: 4*4 + 1*1 + 0.1 = 17.1; class 1 reads x1, x3: 0.5*2 + 2*4 - 0.2 = 8.8;
    # class 2 reads x2, x1: 1*3 - 2*2 + 0.3 = -0.7.  Second row: 8.6, 3.3, 2.3.
    expected = torch.tensor([[17.1, 8.8, -0.7], [8.6, 3.3, 2.3]])
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer.probabilities(x), torch.softmax(expected, 1))
    assert layer.macs() == 6 and influence.linear_macs(fc) == 12


def test_decomposed_layer_computes_only_the_kept_weights():
    # A dense product with zeroed weights turns a NaN in an unread feature into NaN logits
    # (0 * nan); the decomposed layer never touches the features it does not keep.
    layer = influence.DecomposedLinear(tiny_fc(), torch.tensor([[3, 0], [1, 3], [3, 1]]))
    x = torch.tensor([[1.0, 2.0, math.nan, 4.0]])
    assert torch.isfinite(layer(x)).all()


def test_decompose_replaces_only_the_copy_s_final_layer():
    with seeded(0):
        net = TinyNet()
    idx = torch.tensor([[0, 1], [2, 3]])
    dec = influence.decompose(net, idx)
    assert isinstance(dec.fc, influence.DecomposedLinear) and isinstance(net.fc, nn.Linear)
    x = torch.randn(4, 2)
    torch.testing.assert_close(dec(x), influence.DecomposedLinear(net.fc, idx)(net.penultimate(x)))


def test_layer_correct_marks_each_instance():
    fc = tiny_fc()
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    # Logits: row 0 -> [30.1, 6.8, 3.3] (class 0), row 1 -> the biases (class 2).
    hits = influence.layer_correct(fc, PenultimateFeatures(x, torch.tensor([0, 0])))
    assert hits.tolist() == [1.0, 0.0]


def test_top_k_mass_share_by_hand():
    f = torch.tensor([[4.0, 3.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    share = influence.top_k_mass_share(f, 2)
    assert share[0].item() == pytest.approx(0.7) and torch.isnan(share[1])


def test_random_feature_sets_are_distinct_per_class_and_seeded():
    sets = influence.random_feature_sets(10, 64, 5, seed=3)
    assert sets.shape == (10, 5)
    assert all(len(set(row.tolist())) == 5 for row in sets)
    assert torch.equal(sets, influence.random_feature_sets(10, 64, 5, seed=3))
    assert not torch.equal(sets, influence.random_feature_sets(10, 64, 5, seed=4))


def test_decomposed_layer_with_every_feature_is_the_full_layer():
    fc = tiny_fc()
    layer = influence.DecomposedLinear(fc, torch.arange(4).repeat(3, 1).flip(1))
    x = torch.randn(5, 4)
    torch.testing.assert_close(layer(x), fc(x))


def test_decomposed_layer_rejects_bad_indices():
    with pytest.raises(ValueError, match="indices"):
        influence.DecomposedLinear(tiny_fc(), torch.tensor([[0, 4], [0, 1], [1, 2]]))
    with pytest.raises(ValueError, match="indices"):
        influence.DecomposedLinear(tiny_fc(), torch.tensor([[0, 1]]))


def test_bad_k_and_shapes_name_the_parameter():
    f, y = torch.rand(4, 3), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="k1"):
        select(f, y, k1=4, k2=1)
    with pytest.raises(ValueError, match="k2"):
        select(f, y, k1=1, k2=0)
    with pytest.raises(ValueError, match="labels"):
        PenultimateFeatures(f, y[:3])
    with pytest.raises(ValueError, match="features"):
        PenultimateFeatures(f[0], y)
    with pytest.raises(ValueError, match="k_grid"):
        influence.check_k(64, k1=5, k_grid=[1, 65])


def test_non_influential_indices_avoid_the_class_set_and_are_seeded():
    f = torch.rand(40, 8)
    y = torch.arange(40) % 2
    inf = select(f, y, k1=3, k2=3)
    others = influence.non_influential_indices(inf, seed=1)
    assert others.shape == (2, 3)
    for c in range(2):
        assert not set(others[c].tolist()) & set(inf.indices[c].tolist())
    assert torch.equal(others, influence.non_influential_indices(inf, seed=1))


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2, 6), nn.ReLU())
        self.fc = nn.Linear(6, 2)

    def penultimate(self, x):
        return self.body(x)

    def forward(self, x):
        return self.fc(self.penultimate(x))


def two_blobs(n=64):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = torch.randn(n, 2, generator=g) * 0.3 + (2.0 * y[:, None] - 1.0)
    return TensorDataset(x, y)


# --- the CIFAR ResNet of the paper: He et al.'s option-A shortcuts -------------------------

def test_cifar_resnet_defaults_to_option_a_shortcuts():
    net = models.cifar_resnet(20)
    # He et al. (2016), Table 6: ResNet-20 has 0.27 M parameters with option A.
    assert sum(p.numel() for p in net.parameters()) == 269_722
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in net.modules())
    projection = models.cifar_resnet(20, shortcut="projection")
    assert any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in projection.modules())
    with pytest.raises(ValueError, match="shortcut"):
        models.cifar_resnet(20, shortcut="B")


def test_option_a_shortcut_subsamples_and_zero_pads_channels():
    x = torch.randn(2, 16, 8, 8)
    out = _PadShortcut(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 4, 4)
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].eq(0).all() and out[:, 24:].eq(0).all()


# --- on CUDA, the same results as on the CPU -----------------------------------------------

@pytest.mark.gpu
def test_features_and_decomposition_on_cuda_match_cpu():
    # Tolerance: CUDA may sum a matrix product in another order (or in TF32), so the
    # features agree to 1e-3 relative; the decisions built on them are the same.
    data = two_blobs(200)
    with seeded(0):
        net = TinyNet()
    cpu = influence.penultimate_features(net, data)
    gpu = influence.penultimate_features(net.to("cuda"), data)
    torch.testing.assert_close(gpu.features, cpu.features, rtol=1e-3, atol=1e-4)
    assert gpu.features.device.type == "cpu"
    net_cpu = net.to("cpu")
    grid_cpu = decomposition.relative_accuracy_grid(net_cpu.fc, cpu, cpu, [2], [2])
    grid_gpu = decomposition.relative_accuracy_grid(net.to("cuda").fc, cpu, cpu, [2], [2])
    assert torch.equal(grid_cpu.correct, grid_gpu.correct)


def test_selection_is_a_unit_selection_read_as_layer_scores():
    found = select(torch.tensor([[3.0, 0.0, 1.0], [0.0, 2.0, 1.0]]), torch.tensor([0, 1]), 1, 1)
    assert isinstance(found, LayerScores) and found.layers == ["fc"]
    assert found["fc"].tolist() == [[True, False, False], [False, True, False]]
    method = influence.InfluentialFeatureSelection(Head(3, 2), k1=1, k2=1)
    assert isinstance(method, UnitSelection)
    with pytest.raises(ValueError, match="target"):
        method.select(PenultimateFeatures(torch.rand(2, 3), torch.tensor([0, 1])), target=0)
