"""Representation similarity (Avendaño Muñoz, chapter 3): linear CKA (Kornblith et al., 2019)
and minibatch CKA.

``linear_cka`` is the direct formula on two full feature matrices. ``gram_matrices``
holds one n x n linear Gram matrix per layer of a model on all n inputs (the features are
never held for every layer at once), and ``cka_from_grams`` gives full-batch linear CKA
of every pair of layers from them: the paper's estimator, and the same number as
``linear_cka``. ``MinibatchCKA`` (Nguyen, Raghu and Kornblith, 2021) holds no n x n
matrix at all: per batch it computes the unbiased HSIC estimator of every pair of layers
and sums it, and CKA is the normalised sum. The unbiased estimator divides by n (n - 3),
so a batch of fewer than four examples is an error (not a NaN). ``cka_matrix`` compares
every layer of one model with every layer of another on the same inputs, either way.
Every function that runs a model takes it with its layers first, then the inputs:
``gram_matrices(model, layers, inputs)``, ``cka_matrix(model_a, layers_a, model_b, layers_b,
inputs)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from .devices import to_host, to_model
from .hooks import Recorder, layer_names

__all__ = ["linear_cka", "MinibatchCKA", "check_batches", "representation_layers",
           "gram_matrices", "cka_from_grams", "cka_matrix"]

_MIN_BATCH = 4


def _centred(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1).double()
    return x - x.mean(0, keepdim=True)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two feature matrices (examples first, features flattened):
    ``||Y'X||_F^2 / (||X'X||_F ||Y'Y||_F)`` on column-centred X and Y."""
    if len(x) != len(y):
        raise ValueError(f"x and y: expected the same number of examples, got {len(x)} and "
                         f"{len(y)}")
    x, y = _centred(x), _centred(y)
    return float((y.T @ x).square().sum() / ((x.T @ x).norm() * (y.T @ y).norm()))


@dataclass
class _GramTerms:
    """For P layers' features (n examples each, any width): the zero-diagonal linear Gram
    matrices (P x n x n), their sums (P) and their row sums (P x n)."""

    grams: torch.Tensor
    sums: torch.Tensor
    rows: torch.Tensor


def _gram_terms(features: Sequence[torch.Tensor]) -> _GramTerms:
    grams = torch.stack([f @ f.T for f in (f.flatten(1).double() for f in features)])
    grams.diagonal(dim1=1, dim2=2).zero_()
    rows = grams.sum(2)
    return _GramTerms(grams, rows.sum(1), rows)


def _unbiased_hsic(a: _GramTerms, b: _GramTerms, n: int) -> torch.Tensor:
    """The unbiased HSIC estimator (Song et al., 2012) of every pair (p, q) of Gram
    matrices in ``a`` and ``b``, as a P x Q tensor."""
    trace = torch.einsum("pij,qij->pq", a.grams, b.grams)
    return (trace + torch.outer(a.sums, b.sums) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * a.rows @ b.rows.T) / (n * (n - 3))


class MinibatchCKA:
    """Accumulates unbiased HSIC over batches for ``len(a)`` x ``len(b)`` pairs of layers:
    ``update(features_a, features_b)`` with one tensor per layer (the same examples in
    each), then ``compute()``."""

    def __init__(self) -> None:
        self.xy = self.xx = self.yy = None
        self.batches = 0

    def update(self, features_a: Sequence[torch.Tensor],
               features_b: Sequence[torch.Tensor]) -> None:
        n = len(features_a[0])
        if any(len(f) != n for f in [*features_a, *features_b]):
            raise ValueError("features: every layer must have the same number of examples")
        if n < _MIN_BATCH:
            raise ValueError(f"batch of {n} examples: the unbiased HSIC estimator needs at "
                             f"least {_MIN_BATCH}")
        a, b = _gram_terms(features_a), _gram_terms(features_b)
        xy = _unbiased_hsic(a, b, n)
        xx = _unbiased_hsic(a, a, n).diagonal()
        yy = _unbiased_hsic(b, b, n).diagonal()
        if self.xy is None:
            self.xy, self.xx, self.yy = xy, xx, yy
        else:
            self.xy, self.xx, self.yy = self.xy + xy, self.xx + xx, self.yy + yy
        self.batches += 1

    def compute(self) -> torch.Tensor:
        """CKA of every pair: summed HSIC(a, b) / sqrt(summed HSIC(a, a) * summed HSIC(b, b))."""
        if self.xy is None:
            raise ValueError("MinibatchCKA: no batch was added")
        return self.xy / torch.sqrt(torch.outer(self.xx, self.yy))


def check_batches(n: int, batch_size: int) -> None:
    """A ``ValueError`` naming ``batch_size`` unless minibatch CKA of ``n`` inputs in batches
    of ``batch_size`` gives every batch, the last one included, at least four examples."""
    if batch_size < _MIN_BATCH:
        raise ValueError(f"batch_size: the unbiased HSIC estimator needs at least {_MIN_BATCH}, "
                         f"got {batch_size}")
    if 0 < n % batch_size < _MIN_BATCH:
        raise ValueError(f"batch_size: {n} inputs in batches of {batch_size} leave a last batch of "
                         f"{n % batch_size} (< {_MIN_BATCH}); choose another batch size")


def representation_layers(model: nn.Module) -> list[str]:
    """The layers whose representations Avendaño Muñoz (chapter 3) compares, in definition order:
    every conv layer except those on a residual shortcut, and every linear layer (ResNet50: 49 convs
    and the fc, about 50 layers)."""
    return layer_names(model, (nn.Conv2d, nn.Linear), shortcuts=False)


@torch.no_grad()
def gram_matrices(model: nn.Module, layers: Sequence[str], inputs: torch.Tensor,
                  batch_size: int = 250, max_bytes: int = 2 ** 30) -> torch.Tensor:
    """The centred linear Gram matrices (L x n x n, float64, on the CPU) of ``layers``
    (e.g. ``representation_layers(model)``) on all ``inputs``, in eval mode. Layers are
    recorded in groups whose features for all inputs fit ``max_bytes``, one pass over the
    inputs per group."""
    layers = list(layers)
    model.eval()
    n = len(inputs)
    with Recorder(model, layers) as rec:
        model(to_model(model, inputs[:1]))
        widths = [rec.outputs[name][0].numel() for name in layers]
    grams, group, held = [], [], 0
    for name, width in zip(layers, widths):
        if group and held + 4 * n * width > max_bytes:
            grams += _group_grams(model, group, inputs, batch_size)
            group, held = [], 0
        group.append(name)
        held += 4 * n * width
    grams += _group_grams(model, group, inputs, batch_size)
    return torch.stack([_centre(g) for g in grams])


def _group_grams(model: nn.Module, layers: list[str], inputs: torch.Tensor,
                 batch_size: int) -> list:
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    with Recorder(model, layers) as rec:
        for i in range(0, len(inputs), batch_size):
            model(to_model(model, inputs[i:i + batch_size]))
            for name in layers:
                chunks[name].append(rec.outputs[name].flatten(1))
    grams = []
    for name in layers:
        x = torch.cat(chunks.pop(name))
        grams.append(to_host(x @ x.T).double())  # float32 products, float64 centring
    return grams


def cka_from_grams(grams_a: torch.Tensor, grams_b: torch.Tensor) -> torch.Tensor:
    """Linear CKA of every pair of layers (P x Q) from centred Gram matrices (P x n x n
    and Q x n x n, ``gram_matrices``): <K, L>_F / (||K||_F ||L||_F)."""
    if grams_a.shape[1:] != grams_b.shape[1:]:
        raise ValueError(f"grams: expected the same n x n, got {tuple(grams_a.shape[1:])} and "
                         f"{tuple(grams_b.shape[1:])}")
    a = grams_a.flatten(1) / grams_a.flatten(1).norm(dim=1, keepdim=True)
    b = grams_b.flatten(1) / grams_b.flatten(1).norm(dim=1, keepdim=True)
    return a @ b.T


def _centre(grams: torch.Tensor) -> torch.Tensor:
    """H K H for every K of ``grams`` (... x n x n), H = I - 11'/n, without matrix products."""
    return (grams - grams.mean(-2, keepdim=True) - grams.mean(-1, keepdim=True)
            + grams.mean((-2, -1), keepdim=True))


@torch.no_grad()
def cka_matrix(model_a: nn.Module, layers_a: Sequence[str], model_b: nn.Module,
               layers_b: Sequence[str], inputs: torch.Tensor,
               batch_size: int | None = 250) -> pd.DataFrame:
    """CKA of every layer in ``layers_a`` of ``model_a`` (rows) with every layer in
    ``layers_b`` of ``model_b`` (columns) on ``inputs``. ``batch_size=None`` gives
    full-batch linear CKA (``gram_matrices``), a number minibatch CKA in batches of
    ``batch_size`` (unbiased HSIC summed over batches)."""
    layers_a, layers_b = list(layers_a), list(layers_b)
    index = pd.Index(layers_a, name="layer A")
    columns = pd.Index(layers_b, name="layer B")
    if batch_size is None:
        table = cka_from_grams(gram_matrices(model_a, layers_a, inputs),
                               gram_matrices(model_b, layers_b, inputs))
        return pd.DataFrame(table.numpy(), index=index, columns=columns)
    check_batches(len(inputs), batch_size)
    model_a.eval()
    model_b.eval()
    cka = MinibatchCKA()
    with Recorder(model_a, layers_a) as rec_a, Recorder(model_b, layers_b) as rec_b:
        for i in range(0, len(inputs), batch_size):
            x = inputs[i:i + batch_size]
            model_a(to_model(model_a, x))
            model_b(to_model(model_b, x))
            cka.update([to_host(rec_a.outputs[n]) for n in layers_a],
                       [to_host(rec_b.outputs[n]) for n in layers_b])
    return pd.DataFrame(cka.compute().numpy(), index=index, columns=columns)
