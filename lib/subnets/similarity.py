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

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import cache
from .devices import to_host, to_model
from .hooks import Recorder, layer_names

__all__ = ["linear_cka", "MinibatchCKA", "check_batches", "representation_layers",
           "gram_matrices", "cka_from_grams", "cka_matrix", "seed_pair_cka", "middle_layer",
           "deep_layer_cka", "check_gram_memory", "check_seed_cka", "deep_layer_summary"]

_MIN_BATCH = 4


def _centred(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1).double()
    return x - x.mean(0, keepdim=True)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two feature matrices: ``||Y'X||_F^2 / (||X'X||_F ||Y'Y||_F)`` on
    column-centred X and Y.

    Args:
        x, y: the same examples' features (examples first, the rest flattened).

    Returns:
        CKA, between 0 and 1.

    Example:
        >>> x = torch.randn(50, 8)
        >>> round(linear_cka(x, 3 * x @ torch.linalg.qr(torch.randn(8, 8))[0]), 6)
        1.0
    """
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
    """Minibatch CKA (Nguyen, Raghu and Kornblith, 2021): unbiased HSIC summed over batches
    for ``len(a)`` x ``len(b)`` pairs of layers. ``update(features_a, features_b)`` with one
    tensor per layer (the same examples in each), then ``compute()``.

    Example:
        >>> cka = MinibatchCKA()
        >>> x = torch.randn(20, 5)
        >>> cka.update([x, x[:, :2]], [x])
        >>> cka.compute().shape
        torch.Size([2, 1])
    """

    def __init__(self) -> None:
        self.xy = self.xx = self.yy = None
        self.batches = 0

    def update(self, features_a: Sequence[torch.Tensor],
               features_b: Sequence[torch.Tensor]) -> None:
        """Add one batch.

        Args:
            features_a: one tensor per layer of the first model (N x ...).
            features_b: one tensor per layer of the second, on the same N examples.

        Returns:
            None.
        """
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
        """CKA of every pair: summed HSIC(a, b) / sqrt(summed HSIC(a, a) * summed HSIC(b, b)).

        Returns:
            A ``len(a)`` x ``len(b)`` tensor.
        """
        if self.xy is None:
            raise ValueError("MinibatchCKA: no batch was added")
        return self.xy / torch.sqrt(torch.outer(self.xx, self.yy))


def check_batches(n: int, batch_size: int) -> None:
    """A ``ValueError`` naming ``batch_size`` unless minibatch CKA of ``n`` inputs in batches
    of ``batch_size`` gives every batch, the last one included, at least four examples.

    Args:
        n: the inputs.
        batch_size: the batch.

    Returns:
        None.

    Example:
        >>> check_batches(1000, 250)
        >>> check_batches(1002, 250)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: batch_size: 1002 inputs in batches of 250 leave a last batch of 2 (< 4); ...
    """
    if batch_size < _MIN_BATCH:
        raise ValueError(f"batch_size: the unbiased HSIC estimator needs at least {_MIN_BATCH}, "
                         f"got {batch_size}")
    if 0 < n % batch_size < _MIN_BATCH:
        raise ValueError(f"batch_size: {n} inputs in batches of {batch_size} leave a last batch of "
                         f"{n % batch_size} (< {_MIN_BATCH}); choose another batch size")


def representation_layers(model: nn.Module) -> list[str]:
    """The layers whose representations chapter 3 compares, in definition order: every conv
    layer except those on a residual shortcut, and every linear layer. Avendaño Muñoz does
    not list its layers; it marks the 25th as the middle one, which this choice gives in a
    ResNet50 (49 convs off the shortcuts and the fc: 50 layers).

    Args:
        model: the network.

    Returns:
        The layers' names.

    Example:
        >>> representation_layers(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(),
        ...                                     nn.Linear(2, 2)))
        ['0', '3']
    """
    return layer_names(model, (nn.Conv2d, nn.Linear), shortcuts=False)


@torch.no_grad()
def gram_matrices(model: nn.Module, layers: Sequence[str], inputs: torch.Tensor,
                  batch_size: int = 250, max_bytes: int = 2 ** 30) -> torch.Tensor:
    """The centred linear Gram matrices of ``layers`` on all ``inputs``, in eval mode.
    Layers are recorded in groups whose features for all inputs fit ``max_bytes``, one
    pass over the inputs per group.

    Args:
        model: the network.
        layers: the layers' names (e.g. ``representation_layers(model)``).
        inputs: the n inputs.
        batch_size: inputs per forward pass.
        max_bytes: the features held at once.

    Returns:
        L x n x n, float64, on the CPU.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> gram_matrices(model, ["1"], torch.rand(5, 1, 2, 2)).shape
        torch.Size([1, 5, 5])
    """
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
    """Linear CKA of every pair of layers from centred Gram matrices:
    <K, L>_F / (||K||_F ||L||_F).

    Args:
        grams_a: P x n x n (``gram_matrices``).
        grams_b: Q x n x n, on the same n inputs.

    Returns:
        P x Q.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> grams = gram_matrices(model, ["1"], torch.rand(5, 1, 2, 2))
        >>> round(cka_from_grams(grams, grams).item(), 6)
        1.0
    """
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
    """CKA of every layer of one model with every layer of another, on the same inputs.

    Args:
        model_a, layers_a: the first model and its layers (rows).
        model_b, layers_b: the second and its layers (columns).
        inputs: the images both see.
        batch_size: None: full-batch linear CKA (``gram_matrices``); a number: minibatch
            CKA in batches of ``batch_size`` (unbiased HSIC summed over batches).

    Returns:
        A ``pandas.DataFrame``, rows "layer A", columns "layer B".

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Linear(3, 2))
        >>> cka_matrix(model, ["1", "2"], model, ["2"], torch.rand(8, 1, 2, 2), None).shape
        (2, 1)
    """
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


def seed_pair_cka(nets: Sequence[nn.Module], inputs: torch.Tensor, estimator: str = "full",
                  batch_size: int = 250) -> dict[str, np.ndarray]:
    """CKA between the layers (``representation_layers``) of the disjoint seed pairs
    (0, 1), (2, 3), ... of one variant, and of each seed with itself (cached).

    Args:
        nets: the variant's networks, one per seed, in seed order.
        inputs: the images every network sees.
        estimator: "full" (linear CKA from Gram matrices) or "minibatch" (unbiased HSIC).
        batch_size: the minibatch estimator's batch.

    Returns:
        ``{"cross": pairs x L x L, "within": seeds x L x L}``, arrays of CKA values.

    Example:
        >>> nets = [nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Linear(3, 2))
        ...         for _ in range(2)]
        >>> cka = seed_pair_cka(nets, torch.rand(16, 1, 2, 2))
        >>> cka["cross"].shape, cka["within"].shape
        ((1, 2, 2), (2, 2, 2))
    """
    if estimator not in ("full", "minibatch"):
        raise ValueError(f"cka_estimator: expected 'full' or 'minibatch', got {estimator!r}")

    def compute():
        layers = representation_layers(nets[0])
        if estimator == "minibatch":
            def matrix(a, b):
                return torch.tensor(cka_matrix(a, layers, b, layers, inputs,
                                               batch_size).to_numpy())
        else:
            grams = {id(m): gram_matrices(m, layers, inputs) for m in nets}

            def matrix(a, b):
                return cka_from_grams(grams[id(a)], grams[id(b)])
        return {"cross": torch.stack([matrix(a, b) for a, b in zip(nets[::2], nets[1::2])]),
                "within": torch.stack([matrix(a, a) for a in nets])}
    parts = {"models": list(nets), "x": inputs, "estimator": estimator,
             "batch": batch_size if estimator == "minibatch" else None}
    return {k: v.numpy() for k, v in cache.cached("rf-cka-pairs", parts, compute).items()}


def middle_layer(n_layers: int) -> int:
    """The 1-based index of the middle one of ``n_layers`` layers, where Avendaño Muñoz draws
    a red line (the 25th of the 50 layers the book counts in a ResNet50).

    Args:
        n_layers: how many layers are compared.

    Returns:
        ``(n_layers + 1) // 2``; the layers after it are the "deep" ones.

    Example:
        >>> middle_layer(50), middle_layer(7)
        (25, 4)
    """
    return (n_layers + 1) // 2


def deep_layer_cka(matrices: dict[tuple, dict[str, np.ndarray]], seeds: int) -> pd.DataFrame:
    """Per variant and seed, the deep layers' (after ``middle_layer``) CKA with the same layer
    of the other seed of its pair (the diagonal of the cross matrix; on the pair's first
    seed, NaN on the others) and with the layers up to the middle one of its own network.

    Args:
        matrices: ``{(architecture, level): seed_pair_cka(...)}``.
        seeds: the seeds per variant.

    Returns:
        One row per variant and seed, with architecture, level, seed, "deep layers vs other
        seed", "deep layers vs rest of own network".

    Example:
        >>> m = np.eye(4)
        >>> pairs = {("vgg", 1): {"cross": m[None], "within": np.stack([m, m])}}
        >>> frame = deep_layer_cka(pairs, 2)
        >>> frame["deep layers vs other seed"].tolist()
        [1.0, nan]
    """
    rows = []
    for (arch, level), m in matrices.items():
        for s in range(seeds):
            within = m["within"][s]
            mid = middle_layer(len(within))
            cross = (np.diag(m["cross"][s // 2])[mid:].mean()
                     if s % 2 == 0 and s + 1 < seeds else np.nan)
            rows.append({"architecture": arch, "level": level, "seed": s,
                         "deep layers vs other seed": cross,
                         "deep layers vs rest of own network": within[mid:, :mid].mean()})
    return pd.DataFrame(rows)


def check_gram_memory(model: nn.Module, n_inputs: int, copies: int,
                      max_bytes: int = 8 * 2 ** 30) -> None:
    """A ``ValueError`` naming ``n_cka`` if full-batch CKA of ``n_inputs`` images over the
    ``representation_layers`` of ``model``, for ``copies`` networks, holds more than
    ``max_bytes`` of float64 Gram matrices (shapes only: the model may be on the meta device).

    Args:
        model: one of the networks compared.
        n_inputs: the images CKA runs on.
        copies: how many networks' Gram matrices are held at once (the seeds of a variant).
        max_bytes: the budget.

    Returns:
        None.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
        >>> check_gram_memory(model, 1000, 3)
        >>> check_gram_memory(model, 100_000, 3)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: n_cka: full-batch CKA of 100000 images needs 447 GiB of Gram matrices; ...
    """
    need = copies * len(representation_layers(model)) * n_inputs ** 2 * 8
    if need > max_bytes:
        raise ValueError(f"n_cka: full-batch CKA of {n_inputs} images needs {need / 2 ** 30:.0f} "
                         "GiB of Gram matrices; use fewer images or cka_estimator='minibatch'")


def check_seed_cka(models: Sequence[nn.Module], n_inputs: int, seeds: int,
                   estimator: str = "full", batch_size: int = 250) -> None:
    """A ``ValueError`` naming the parameter unless CKA between seed pairs can run: at
    least two ``seeds``, a known ``cka_estimator``, minibatches of at least four examples
    (``check_batches``) or Gram matrices that fit (``check_gram_memory``).

    Args:
        models: one network per architecture compared.
        n_inputs: the images CKA runs on.
        seeds: the networks per variant.
        estimator: "full" or "minibatch".
        batch_size: the minibatch estimator's batch.

    Returns:
        None.

    Example:
        >>> check_seed_cka([nn.Linear(4, 2)], 100, 1)
        Traceback (most recent call last):
        ...
        ValueError: seeds: CKA compares two seeds of each variant; expected >= 2, got 1
    """
    if seeds < 2:
        raise ValueError(f"seeds: CKA compares two seeds of each variant; expected >= 2, "
                         f"got {seeds}")
    if estimator not in ("full", "minibatch"):
        raise ValueError(f"cka_estimator: expected 'full' or 'minibatch', got {estimator!r}")
    if estimator == "minibatch":
        check_batches(n_inputs, batch_size)
        return
    for model in models:
        check_gram_memory(model, n_inputs, seeds)


def deep_layer_summary(trained: pd.DataFrame, placebo: pd.DataFrame,
                       fields: pd.Series | None = None) -> pd.DataFrame:
    """``deep_layer_cka``'s rows averaged over seeds per (architecture, level), for the
    trained networks beside the placebo.

    Args:
        trained: ``deep_layer_cka`` of the trained networks.
        placebo: the same of the placebo networks.
        fields: the receptive field of each (architecture, level), shown first.

    Returns:
        Columns ("trained" | "placebo", measure), one row per (architecture, level).

    Example:
        >>> m = np.eye(4)
        >>> rows = deep_layer_cka({("vgg", 1): {"cross": m[None], "within": np.stack([m, m])}}, 2)
        >>> deep_layer_summary(rows, rows).columns.tolist()[0]
        ('trained', 'deep layers vs other seed')
    """
    table = pd.concat({name: rows.groupby(["architecture", "level"]).mean().drop(columns="seed")
                       for name, rows in (("trained", trained), ("placebo", placebo))}, axis=1)
    if fields is not None:
        table.insert(0, ("receptive field", ""), fields)
    return table
