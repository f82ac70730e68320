import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from subnets import curvature


def tiny_net():
    """conv -> batch norm (with non-trivial running statistics) -> ReLU -> pool -> linear."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(),
                          nn.Linear(2 * 3 * 3, 3)).double()
    model.train()
    model(torch.randn(16, 1, 8, 8, dtype=torch.float64))
    return model.eval()


def explicit_hessian(model, x, y):
    """The full float64 Hessian of the mean cross-entropy in the flattened parameters."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(theta):
        parts = torch.split(theta, [s.numel() for s in shapes])
        params = {n: p.view(s) for n, p, s in zip(names, parts, shapes)}
        return nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    return torch.autograd.functional.hessian(loss, flat)


@pytest.fixture
def problem():
    model = tiny_net()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 1, 8, 8, dtype=torch.float64, generator=g)
    y = torch.randint(0, 3, (20,), generator=g)
    return model, x, y, explicit_hessian(model, x, y)


def test_hvp_is_the_explicit_hessian_times_v(problem):
    model, x, y, hessian = problem
    v = torch.randn(hessian.shape[0], dtype=torch.float64)
    for batch_size in (None, 7):
        h = curvature.Hessian(model, x, y, batch_size=batch_size)
        torch.testing.assert_close(h.hvp(v), hessian @ v, rtol=1e-10, atol=1e-12)
        assert h.hvps == 1


@pytest.mark.parametrize("which", ["largest", "magnitude"])
def test_lanczos_matches_the_explicit_eigenvalues(problem, which):
    model, x, y, hessian = problem
    exact = np.linalg.eigvalsh(hessian.numpy())
    order = np.argsort(-exact) if which == "largest" else np.argsort(-np.abs(exact))
    expected = np.sort(exact[order[:6]])[::-1]
    found = curvature.Hessian(model, x, y).top_eigenvalues(k=6, tol=0, which=which)
    np.testing.assert_allclose(found, expected, rtol=1e-8, atol=1e-10)


def test_deterministic_and_leaves_the_model_alone(problem):
    model, x, y, _ = problem
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    a = curvature.Hessian(model, x, y).top_eigenvalues(k=3, tol=1e-6, seed=3)
    b = curvature.Hessian(model, x, y, batch_size=7).top_eigenvalues(k=3, tol=1e-6, seed=3)
    np.testing.assert_allclose(a, b, rtol=1e-10)  # batching only regroups the sum
    np.testing.assert_array_equal(a, curvature.Hessian(model, x, y).top_eigenvalues(
        k=3, tol=1e-6, seed=3))
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))


def test_bad_arguments(problem):
    model, x, y, hessian = problem
    h = curvature.Hessian(model, x, y)
    with pytest.raises(ValueError, match="k: expected"):
        h.top_eigenvalues(k=hessian.shape[0])
    with pytest.raises(ValueError, match="which"):
        h.top_eigenvalues(k=2, which="smallest")
    with pytest.raises(ValueError, match="inputs and target"):
        curvature.Hessian(model, x, y[:3])
    with pytest.raises(ValueError, match="batch_size"):
        curvature.Hessian(model, x, y, batch_size=0)
    with pytest.raises(ValueError, match="tol"):
        h.top_eigenvalues(k=2, tol=-1)
    with pytest.raises(ValueError, match="v: expected shape"):
        h.hvp(torch.zeros(3, dtype=torch.float64))


@pytest.mark.gpu
def test_top_eigenvalues_on_cuda_match_the_cpu():
    model = tiny_net()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (12,), generator=g)
    cpu = curvature.Hessian(model, x, y).top_eigenvalues(k=3, tol=1e-8)
    cuda = curvature.Hessian(model.cuda(), x, y).top_eigenvalues(k=3, tol=1e-8)
    np.testing.assert_allclose(cuda, cpu, rtol=1e-6)  # float64 on both: rounding only


def test_spectra_rows_are_the_cached_top_eigenvalues(problem, tmp_path, monkeypatch):
    monkeypatch.setenv("SUBNETS_CACHE", str(tmp_path))
    model, x, y, _ = problem
    expected = curvature.Hessian(model, x, y).top_eigenvalues(k=3)
    frame = curvature.spectra({("net", 1, 0, "initialisation"): model}, x, y, k=3)
    np.testing.assert_allclose(frame.eigenvalue, expected, rtol=1e-6)
    assert frame["rank"].tolist() == [1, 2, 3]
    monkeypatch.setattr(curvature.Hessian, "top_eigenvalues", lambda *a, **k: pytest.fail())
    assert curvature.spectra({("net", 1, 0, "initialisation"): model}, x, y, k=3).equals(frame)
    moments = curvature.spectrum_moments(frame)
    assert moments.loc[("net", 1, 0, "initialisation"), "mean"] == pytest.approx(expected.mean())
