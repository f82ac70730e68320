import itertools

import numpy as np
import pytest
import torch
from torch import nn

from subnets import similarity


def features(n=40, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ torch.randn(d, 5, generator=g, dtype=torch.float64) + 0.5 * torch.randn(n, 5, generator=g,
                                                                                     dtype=torch.float64)
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
    a, b = similarity.gram_terms([x]), similarity.gram_terms([y])
    return similarity.unbiased_hsic(a, b, len(x))[0, 0].item()


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
    with pytest.raises(ValueError, match="batch_size: 10 inputs in batches of 4 leave a last batch of 2"):
        similarity.cka_matrix(model, model, torch.rand(10, 1, 8, 8), batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        similarity.cka_matrix(model, model, torch.rand(10, 1, 8, 8), batch_size=2)


def test_cka_matrix_of_a_model_with_itself():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    table = similarity.cka_matrix(model, model, torch.rand(30, 1, 10, 10), batch_size=10)
    assert list(table.index) == ["0", "2", "4"] and list(table.columns) == ["0", "2", "4"]
    np.testing.assert_allclose(np.diag(table.to_numpy()), 1.0, rtol=1e-10)
    np.testing.assert_allclose(table.to_numpy(), table.to_numpy().T, rtol=1e-10)
    assert np.isfinite(table.to_numpy()).all()
