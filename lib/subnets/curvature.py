"""The top eigenvalues of a loss Hessian, by Lanczos on Hessian-vector products
(Avendaño Muñoz, chapter 3, after PyHessian of Yao et al., 2020).

``Hessian(model, inputs, target)`` is the Hessian of the mean cross-entropy of the
model on those examples with respect to all its trainable parameters, never formed:
``hvp(v)`` differentiates the gradient (built once with ``create_graph``) along ``v``.
``Hessian(...).top_eigenvalues(k)`` hands that product to ARPACK's implicitly restarted Lanczos
(``scipy.sparse.linalg.eigsh``), which gets all k eigenvalues from one Krylov space,
where PyHessian's power iteration with deflation spends a separate run of products on
each (``benchmarks/curvature.py`` counts both).

As in PyHessian the model is evaluated in eval mode: batch norm uses its running
statistics, so the loss is a plain mean over examples and splitting them into batches
does not change it.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import nn

from . import cache
from .devices import to_host, to_model
from .progress import bar

__all__ = ["Hessian", "top_eigenvalues", "spectra", "spectrum_moments"]

_WHICH = {"magnitude": "LM", "largest": "LA"}


class Hessian:
    """The Hessian of ``loss(model(inputs), target)`` (mean over examples) in the
    model's trainable parameters, as a linear operator on flat vectors.

    Args:
        model: the network (copied: the caller's keeps its mode and gradients).
        inputs, target: the examples of the loss.
        loss: the loss function (mean over a batch).
        batch_size: splits the examples: with one batch (None) the gradient graph is
            built once and reused by every product; with several, each product rebuilds it
            batch by batch (PyHessian's data-loader mode), trading time for memory.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> hessian = Hessian(model, torch.rand(8, 1, 2, 2), torch.tensor([0, 1] * 4))
        >>> hessian.dim, hessian.hvp(torch.zeros(10)).abs().sum().item()
        (10, 0.0)
    """

    def __init__(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor,
                 loss=nn.functional.cross_entropy, batch_size: int | None = None) -> None:
        if len(inputs) != len(target) or len(inputs) == 0:
            raise ValueError(f"inputs and target: expected the same non-zero length, got "
                             f"{len(inputs)} and {len(target)}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        # A copy, so the caller's model keeps its mode and its parameters' .grad.
        self.model = copy.deepcopy(model).eval()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("model: no trainable parameters")
        self.dtype = self.params[0].dtype
        self.dim = sum(p.numel() for p in self.params)
        self.loss = loss
        size = len(inputs) if batch_size is None else batch_size
        inputs, target = to_model(self.model, inputs, target)
        self.batches = [(inputs[i:i + size], target[i:i + size])
                        for i in range(0, len(inputs), size)]
        self.n = len(inputs)
        self.graph = [self.gradient(*self.batches[0])] if len(self.batches) == 1 else None
        self.hvps = 0

    def gradient(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The batch's share of the mean loss's gradient, with its graph kept.

        Args:
            x, y: one batch of the examples.

        Returns:
            One gradient per trainable parameter.
        """
        loss = self.loss(self.model(x), y) * (len(x) / self.n)
        return torch.autograd.grad(loss, self.params, create_graph=True)

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        """The Hessian-vector product.

        Args:
            v: a flat vector of length ``dim``.

        Returns:
            H v, flat, on the CPU.
        """
        if v.shape != (self.dim,):
            raise ValueError(f"v: expected shape ({self.dim},), got {tuple(v.shape)}")
        sizes = [p.numel() for p in self.params]
        parts = list(torch.split(to_model(self.model, v.to(self.dtype)), sizes))
        parts = [part.view_as(p) for part, p in zip(parts, self.params)]
        total = self.params[0].new_zeros(self.dim)
        grads = self.graph if self.graph is not None else (self.gradient(x, y)
                                                            for x, y in self.batches)
        for g in grads:
            hv = torch.autograd.grad(g, self.params, grad_outputs=parts,
                                     retain_graph=self.graph is not None,
                                     allow_unused=True)
            total += torch.cat([(h if h is not None else torch.zeros_like(p)).reshape(-1)
                                for h, p in zip(hv, self.params)])
        self.hvps += 1
        return to_host(total)

    def operator(self) -> LinearOperator:
        """The Hessian for scipy.

        Returns:
            A ``LinearOperator`` (float64 vectors in and out).
        """
        def matvec(v: np.ndarray) -> np.ndarray:
            flat = torch.from_numpy(np.asarray(v, dtype=np.float64).reshape(-1))
            return self.hvp(flat).double().numpy()
        return LinearOperator((self.dim, self.dim), matvec=matvec, dtype=np.float64)

    def top_eigenvalues(self, k: int = 20, tol: float = 1e-3, which: str = "magnitude",
                        seed: int = 0) -> np.ndarray:
        """The top eigenvalues, by Lanczos (ARPACK).

        Args:
            k: how many.
            tol: ARPACK's relative accuracy.
            which: "magnitude" (largest in magnitude, PyHessian's choice: power iteration
                finds those) or "largest" (largest value).
            seed: seeds the start vector, so results repeat.

        Returns:
            The ``k`` eigenvalues, in decreasing order.
        """
        if which not in _WHICH:
            raise ValueError(f"which: expected one of {sorted(_WHICH)}, got {which!r}")
        if not 1 <= k < self.dim:
            raise ValueError(f"k: expected 1 <= k < {self.dim} (the number of parameters), got {k}")
        if tol < 0:
            raise ValueError(f"tol: expected >= 0, got {tol}")
        v0 = np.random.default_rng(seed).standard_normal(self.dim)
        values = eigsh(self.operator(), k=k, which=_WHICH[which], tol=tol, v0=v0,
                       return_eigenvectors=False)
        return np.sort(values)[::-1]



def top_eigenvalues(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, k: int = 20,
                    tol: float = 1e-3) -> np.ndarray:
    """``Hessian(model, inputs, target).top_eigenvalues(k, tol)``, cached on the model's
    weights, the examples, ``k`` and ``tol``.

    Args:
        model: the network (left unchanged).
        inputs, target: the examples of the loss.
        k, tol: as in ``Hessian.top_eigenvalues``.

    Returns:
        The ``k`` eigenvalues of largest magnitude, in decreasing order.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> top_eigenvalues(model, torch.rand(8, 1, 2, 2), torch.tensor([0, 1] * 4), k=2).shape
        (2,)
    """
    def compute():
        values = Hessian(model, inputs, target).top_eigenvalues(k=k, tol=tol)
        return {"eigenvalues": torch.from_numpy(values.copy())}
    parts = {"model": model, "x": inputs, "y": target, "k": k, "tol": tol}
    return cache.cached("rf-hessian", parts, compute)["eigenvalues"].numpy()


def spectra(nets: dict[tuple, nn.Module], inputs: torch.Tensor, target: torch.Tensor,
            k: int = 20, tol: float = 1e-3,
            names: tuple[str, ...] = ("architecture", "level", "seed", "state"),
            desc: str = "Hessians") -> pd.DataFrame:
    """The top ``k`` Hessian eigenvalues of every network, as rows.

    Args:
        nets: networks by key (a tuple, one entry per name in ``names``).
        inputs, target, k, tol: as in ``top_eigenvalues``.
        names: the columns the keys' entries go in.
        desc: the progress bar's label.

    Returns:
        One row per network and eigenvalue, with the key's columns, "rank" (1 the largest)
        and "eigenvalue".

    Example:
        >>> nets = {("mlp", 1, 0, "initialisation"): nn.Sequential(nn.Flatten(), nn.Linear(4, 2))}
        >>> frame = spectra(nets, torch.rand(8, 1, 2, 2), torch.tensor([0, 1] * 4), k=2)
        >>> frame["rank"].tolist()
        [1, 2]
    """
    return pd.DataFrame([{**dict(zip(names, key)), "rank": i + 1, "eigenvalue": v}
                         for key, model in bar(nets.items(), desc=desc)
                         for i, v in enumerate(top_eigenvalues(model, inputs, target, k, tol))])


def spectrum_moments(frame: pd.DataFrame) -> pd.DataFrame:
    """The first two moments of each network's top eigenvalues (``spectra``'s rows): their
    mean (how large they are) and standard deviation (how wide the spectrum is).

    Args:
        frame: ``spectra``'s rows.

    Returns:
        Columns "mean" and "std", indexed by every key column of ``frame``.

    Example:
        >>> frame = pd.DataFrame({"net": [0, 0], "rank": [1, 2], "eigenvalue": [3.0, 1.0]})
        >>> spectrum_moments(frame).loc[0].tolist()
        [2.0, 1.4142135623730951]
    """
    keys = [c for c in frame.columns if c not in ("rank", "eigenvalue")]
    return frame.groupby(keys).eigenvalue.agg(["mean", "std"])
