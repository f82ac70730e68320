"""Representation similarity: linear CKA (Kornblith et al., 2019) and minibatch CKA.

``linear_cka`` is the direct formula on two full feature matrices. ``MinibatchCKA``
(Nguyen, Raghu and Kornblith, 2021) never holds an n x n Gram matrix of all examples:
per batch it computes the unbiased HSIC estimator of every pair of layers and sums it,
and CKA is the normalised sum. The unbiased estimator divides by n (n - 3), so a batch
of fewer than four examples is an error (not a NaN). ``cka_matrix`` compares every layer
of one model with every layer of another on the same inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

from .hooks import Recorder, conv_layers

MIN_BATCH = 4


def centred(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1).double()
    return x - x.mean(0, keepdim=True)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two feature matrices (examples first, features flattened):
    ``||Y'X||_F^2 / (||X'X||_F ||Y'Y||_F)`` on column-centred X and Y."""
    if len(x) != len(y):
        raise ValueError(f"x and y: expected the same number of examples, got {len(x)} and {len(y)}")
    x, y = centred(x), centred(y)
    return float((y.T @ x).square().sum() / ((x.T @ x).norm() * (y.T @ y).norm()))


def gram_terms(features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For P layers' features (n examples each, any width), the zero-diagonal linear Gram
    matrices (P x n x n), their sums (P) and their row sums (P x n)."""
    grams = torch.stack([f @ f.T for f in (f.flatten(1).double() for f in features)])
    grams.diagonal(dim1=1, dim2=2).zero_()
    rows = grams.sum(2)
    return grams, rows.sum(1), rows


def unbiased_hsic(a: tuple, b: tuple, n: int) -> torch.Tensor:
    """The unbiased HSIC estimator (Song et al., 2012) of every pair (p, q) of Gram
    matrices in ``a`` and ``b`` (``gram_terms`` of each), as a P x Q tensor."""
    ka, sa, ra = a
    kb, sb, rb = b
    trace = torch.einsum("pij,qij->pq", ka, kb)
    return (trace + torch.outer(sa, sb) / ((n - 1) * (n - 2)) - 2 / (n - 2) * ra @ rb.T) / (n * (n - 3))


class MinibatchCKA:
    """Accumulates unbiased HSIC over batches for ``len(a)`` x ``len(b)`` pairs of layers:
    ``update(features_a, features_b)`` with one tensor per layer (the same examples in
    each), then ``compute()``."""

    def __init__(self) -> None:
        self.xy = self.xx = self.yy = None
        self.batches = 0

    def update(self, features_a: Sequence[torch.Tensor], features_b: Sequence[torch.Tensor]) -> None:
        n = len(features_a[0])
        if any(len(f) != n for f in [*features_a, *features_b]):
            raise ValueError("features: every layer must have the same number of examples")
        if n < MIN_BATCH:
            raise ValueError(f"batch of {n} examples: the unbiased HSIC estimator needs at least {MIN_BATCH}")
        a, b = gram_terms(features_a), gram_terms(features_b)
        xy = unbiased_hsic(a, b, n)
        xx = unbiased_hsic(a, a, n).diagonal()
        yy = unbiased_hsic(b, b, n).diagonal()
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
    if batch_size < MIN_BATCH:
        raise ValueError(f"batch_size: the unbiased HSIC estimator needs at least {MIN_BATCH}, got {batch_size}")
    if 0 < n % batch_size < MIN_BATCH:
        raise ValueError(f"batch_size: {n} inputs in batches of {batch_size} leave a last batch of "
                         f"{n % batch_size} (< {MIN_BATCH}); choose another batch size")


@torch.no_grad()
def cka_matrix(model_a: nn.Module, model_b: nn.Module, inputs: torch.Tensor,
               layers_a: Sequence[str] | None = None, layers_b: Sequence[str] | None = None,
               batch_size: int = 250) -> pd.DataFrame:
    """Minibatch CKA of every layer of ``model_a`` (rows) with every layer of ``model_b``
    (columns) on ``inputs``; the layers default to every conv layer, in order."""
    layers_a = conv_layers(model_a) if layers_a is None else list(layers_a)
    layers_b = conv_layers(model_b) if layers_b is None else list(layers_b)
    check_batches(len(inputs), batch_size)
    model_a.eval()
    model_b.eval()
    cka = MinibatchCKA()
    with Recorder(model_a, layers_a) as rec_a, Recorder(model_b, layers_b) as rec_b:
        for i in range(0, len(inputs), batch_size):
            x = inputs[i:i + batch_size]
            model_a(x)
            model_b(x)
            cka.update([rec_a.outputs[n] for n in layers_a], [rec_b.outputs[n] for n in layers_b])
    return pd.DataFrame(cka.compute().numpy(), index=pd.Index(layers_a, name="layer A"),
                        columns=pd.Index(layers_b, name="layer B"))
