import itertools

import numpy as np
import pytest
import torch
from torch import nn

from subnets import similarity


def features(n=40, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    noise = torch.randn(n, 5, generator=g, dtype=torch.float64)
    y = x @ torch.randn(d, 5, generator=g, dtype=torch.float64) + 0.5 * noise
    return x, y


def orthogonal(d, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


def hsic_u_statistic(k, l):
    """Song et al.'s unbiased HSIC as the U-statistic over ordered 4-tuples of distinct
    examples (their eq. 5), summed by brute force."""
    n = len(k)
    total = 0.0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
    return total / (n * (n - 1) * (n - 2) * (n - 3))


def unbiased(x, y):
    a, b = similarity._gram_terms([x]), similarity._gram_terms([y])
    return similarity._unbiased_hsic(a, b, len(x))[0, 0].item()


def test_linear_cka_matches_the_hsic_formula_with_a_centring_matrix():
    x, y = features()
    n = len(x)
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, l = x @ x.T, y @ y.T

    def hsic(a, b):
        return torch.trace(a @ h @ b @ h)

    expected = hsic(k, l) / torch.sqrt(hsic(k, k) * hsic(l, l))
    assert similarity.linear_cka(x, y) == pytest.approx(expected.item(), rel=1e-12)


def test_unbiased_hsic_matches_the_u_statistic():
    x, y = features(n=7)
    expected = hsic_u_statistic((x @ x.T).numpy(), (y @ y.T).numpy())
    assert unbiased(x, y) == pytest.approx(expected, rel=1e-10)


def test_one_batch_is_unbiased_cka_and_batches_accumulate():
    x, y = features(n=60)
    cka = similarity.MinibatchCKA()
    cka.update([x], [y])
    expected = unbiased(x, y) / np.sqrt(unbiased(x, x) * unbiased(y, y))
    assert cka.compute().item() == pytest.approx(expected, rel=1e-12)
    parts = [(x[i:i + 20], y[i:i + 20]) for i in (0, 20, 40)]
    batched = similarity.MinibatchCKA()
    for a, b in parts:
        batched.update([a, b], [b])
    xy = sum(unbiased(a, b) for a, b in parts)
    xx = sum(unbiased(a, a) for a, _ in parts)
    yy = sum(unbiased(b, b) for _, b in parts)
    result = batched.compute()
    assert result.shape == (2, 1) and batched.batches == 3
    assert result[0, 0].item() == pytest.approx(xy / np.sqrt(xx * yy), rel=1e-12)
    assert result[1, 0].item() == pytest.approx(1.0, rel=1e-12)


def test_invariant_to_orthogonal_transforms_and_isotropic_scaling_only():
    x, y = features(n=50)
    q = orthogonal(x.shape[1])
    base = similarity.linear_cka(x, y)
    assert similarity.linear_cka(x @ q, y) == pytest.approx(base, rel=1e-10)
    assert similarity.linear_cka(3.7 * x, y) == pytest.approx(base, rel=1e-10)
    assert similarity.linear_cka(x, x @ q) == pytest.approx(1.0, rel=1e-10)
    stretch = torch.diag(torch.tensor([10.0, 1, 1, 1, 1, 0.1], dtype=torch.float64))
    assert abs(similarity.linear_cka(x @ stretch, y) - base) > 1e-3  # not invariant to this

    def minibatch(a, b):
        cka = similarity.MinibatchCKA()
        for i in range(0, 50, 10):
            cka.update([a[i:i + 10]], [b[i:i + 10]])
        return cka.compute().item()

    mb = minibatch(x, y)
    assert minibatch(x @ q, 0.2 * y) == pytest.approx(mb, rel=1e-10)
    assert abs(minibatch(x @ stretch, y) - mb) > 1e-3


def test_too_small_a_batch_is_an_error_not_nan():
    x, y = features(n=3)
    with pytest.raises(ValueError, match="at least 4"):
        similarity.MinibatchCKA().update([x], [y])
    with pytest.raises(ValueError, match="no batch"):
        similarity.MinibatchCKA().compute()
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3))
    layers = ["0", "2"]
    with pytest.raises(ValueError,
                       match="batch_size: 10 inputs in batches of 4 leave a last batch of 2"):
        similarity.cka_matrix(model, layers, model, layers, torch.rand(10, 1, 8, 8), batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        similarity.cka_matrix(model, layers, model, layers, torch.rand(10, 1, 8, 8), batch_size=2)
    similarity.check_batches(12, 4)
    with pytest.raises(ValueError, match="last batch of 1"):
        similarity.check_batches(9, 4)


def test_cka_matrix_of_a_model_with_itself():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.ReLU(),
                          nn.Conv2d(4, 2, 3))
    layers = ["0", "2", "4"]
    table = similarity.cka_matrix(model, layers, model, layers, torch.rand(30, 1, 10, 10),
                                  batch_size=10)
    assert list(table.index) == layers and list(table.columns) == layers
    assert table.index.name == "layer A" and table.columns.name == "layer B"
    np.testing.assert_allclose(np.diag(table.to_numpy()), 1.0, rtol=1e-10)
    np.testing.assert_allclose(table.to_numpy(), table.to_numpy().T, rtol=1e-10)
    assert np.isfinite(table.to_numpy()).all()


def test_full_batch_cka_from_grams_equals_linear_cka_on_the_features():
    torch.manual_seed(0)
    def net():
        return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.ReLU(),
                             nn.Flatten(), nn.Linear(4 * 6 * 6, 5))

    model, other = net(), net()
    x = torch.rand(30, 1, 10, 10)
    layers = similarity.representation_layers(model)
    assert layers == ["0", "2", "5"]
    # Tiny max_bytes: one layer per pass; the result must not depend on the grouping.
    grams = similarity.gram_matrices(model, layers, x, batch_size=7, max_bytes=1)
    assert grams.shape == (3, 30, 30) and grams.dtype == torch.float64
    torch.testing.assert_close(grams, similarity.gram_matrices(model, layers, x))
    table = similarity.cka_matrix(model, layers, other, similarity.representation_layers(other),
                                  x, batch_size=None)
    assert table.shape == (3, 3)
    with torch.no_grad():
        feats_a = [model[:i + 1](x) for i in (0, 2, 5)]
        feats_b = [other[:i + 1](x) for i in (0, 2, 5)]
    expected = [[similarity.linear_cka(a, b) for b in feats_b] for a in feats_a]
    np.testing.assert_allclose(table.to_numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(similarity.cka_from_grams(grams, grams).diagonal(), 1.0, rtol=1e-10)


def test_representation_layers_skip_shortcuts_and_keep_the_head():
    from subnets.models import rf_model

    with torch.device("meta"):
        resnet50 = rf_model("resnet50", 1)
    layers = similarity.representation_layers(resnet50)
    assert len(layers) == 50 and layers[-1] == "fc"  # 49 convs and the fc, as the paper's ~50
    assert not any("shortcut" in name for name in layers)
    # The paper's red line, the 25th layer: stem 1 + 3 x 3 + 4 x 3 + the third of stage 3.
    assert layers[24] == "layers.2.0.conv3"


def two_small_nets():
    """Two differently initialised conv-ReLU-conv nets (layers "0" and "2")."""
    torch.manual_seed(0)
    return tuple(nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3))
                 for _ in range(2))


@pytest.mark.gpu
def test_full_and_minibatch_cka_on_cuda_match_the_cpu():
    model, other = two_small_nets()
    x = torch.rand(40, 1, 10, 10)
    layers = ["0", "2"]
    for batch_size in (None, 10):
        cpu = similarity.cka_matrix(model, layers, other, layers, x,
                                    batch_size=batch_size).to_numpy()
        cuda = similarity.cka_matrix(model.cuda(), layers, other.cuda(), layers, x,
                                     batch_size=batch_size)
        model.cpu(), other.cpu()
        # float32 features, TF32 allowed in CUDA matmuls: agreement to 1e-3.
        np.testing.assert_allclose(cuda.to_numpy(), cpu, atol=1e-3)


def _nets(n, seed=0):
    torch.manual_seed(seed)
    return [nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
            for _ in range(n)]


def test_seed_pair_cka_pairs_disjoint_seeds_and_both_estimators_agree(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBNETS_CACHE", str(tmp_path))
    nets = _nets(3)
    x = torch.rand(64, 1, 2, 2)
    full = similarity.seed_pair_cka(nets, x)
    assert full["cross"].shape == (1, 2, 2) and full["within"].shape == (3, 2, 2)
    layers = similarity.representation_layers(nets[0])
    expected = similarity.cka_matrix(nets[0], layers, nets[1], layers, x, None).to_numpy()
    np.testing.assert_allclose(full["cross"][0], expected, rtol=1e-6)
    np.testing.assert_allclose(np.diagonal(full["within"], axis1=1, axis2=2), 1.0, rtol=1e-6)
    mini = similarity.seed_pair_cka(nets, x, "minibatch", 32)
    assert mini["cross"].shape == (1, 2, 2)
    with pytest.raises(ValueError, match="cka_estimator"):
        similarity.seed_pair_cka(nets, x, "kernel")


def test_deep_layer_cka_reads_the_diagonal_and_the_lower_left_quarter():
    cross = np.arange(16, dtype=float).reshape(1, 4, 4)
    within = np.stack([np.arange(16, dtype=float).reshape(4, 4) * 2] * 3)
    rows = similarity.deep_layer_cka({("vgg", 1): {"cross": cross, "within": within}}, 3)
    # middle of 4 layers: the 2nd; deep layers 3 and 4 (indices 2, 3)
    assert rows["deep layers vs other seed"].tolist()[0] == (10 + 15) / 2
    assert np.isnan(rows["deep layers vs other seed"].tolist()[1:]).all()
    assert rows["deep layers vs rest of own network"].tolist() == [2 * (8 + 9 + 12 + 13) / 4] * 3
    summary = similarity.deep_layer_summary(rows, rows)
    assert summary.loc[("vgg", 1), ("placebo", "deep layers vs other seed")] == 12.5
    assert similarity.middle_layer(50) == 25 and similarity.middle_layer(51) == 26


def test_seed_cka_settings_are_checked_by_name():
    model = _nets(1)[0]
    with pytest.raises(ValueError, match="seeds"):
        similarity.check_seed_cka([model], 100, 1)
    with pytest.raises(ValueError, match="batch_size"):
        similarity.check_seed_cka([model], 10, 2, "minibatch", 3)
    with pytest.raises(ValueError, match="n_cka"):
        similarity.check_seed_cka([model], 200_000, 2)
    similarity.check_seed_cka([model], 1000, 2)
