"""Influential sets found elsewhere, for instance by the paper's authors on the same
checkpoint, read from their JSON file and set beside Algorithm 1's (``influence``), class
by class: chapter 4's ``reference_sets``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from . import influence
from .data import data_path
from .influence import InfluentialFeatures, PenultimateFeatures

__all__ = ["read_reference_sets", "set_agreement"]


def read_reference_sets(path: str | Path) -> torch.Tensor:
    """Influential sets found elsewhere, for instance by the paper's authors
    (``resnet20_cifar-10_indices.json`` of their repository): a JSON object, class index ->
    its feature indices, as many for every class.

    Args:
        path: the JSON file (a relative path is taken in the data folder).

    Returns:
        C x k feature indices, row c class c's, in the file's order.

    Raises:
        ValueError: naming the file and what it should hold.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        ...     _ = f.write('{"1": [3, 0], "0": [2, 5]}')
        >>> read_reference_sets(f.name)
        tensor([[2, 5],
                [3, 0]])
    """
    file = data_path(path)
    expected = "a JSON object class index -> list of feature indices, as many per class"
    try:
        sets = json.loads(file.read_text())
        rows = [sets[str(c)] for c in range(len(sets))]
        indices = torch.tensor(rows, dtype=torch.long)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{file}: expected {expected} ({err})") from None
    if indices.dim() != 2 or (indices < 0).any():
        raise ValueError(f"{file}: expected {expected}")
    return indices


def set_agreement(fc: nn.Linear, test: PenultimateFeatures, found: InfluentialFeatures,
                  reference: str | Path, classes: list[str]) -> pd.DataFrame:
    """Algorithm 1's sets beside sets found elsewhere (a file ``read_reference_sets``
    reads): per class,
    both sets, their Jaccard index and the decomposed layer's accuracy on the class's test
    images with each; a last row "all" holds the mean Jaccard and the overall accuracies.

    Args:
        fc: the final layer both decompose.
        test: its test features.
        found: Algorithm 1's sets.
        reference: the other sets' JSON file (as many per class as ``found``'s or not).
        classes: the C class names.

    Returns:
        One row per class and "all": "ours", "reference", "Jaccard", "accuracy, ours",
        "accuracy, reference".

    Example:
        >>> from subnets.decomposition import seeded_resnet
        >>> from subnets.influence import InfluentialFeatureSelection
        >>> net = seeded_resnet(8, 0, 1, 2)
        >>> f = PenultimateFeatures(torch.rand(8, 64), torch.arange(8) % 2)
        >>> sets = InfluentialFeatureSelection(net, k1=2, k2=2).select(f)
        >>> import json, tempfile
        >>> with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        ...     json.dump({c: row for c, row in enumerate(sets.indices.tolist())}, file)
        >>> set_agreement(net.fc, f, sets, file.name, ["a", "b"])["Jaccard"].tolist()
        [1.0, 1.0, 1.0]
    """
    file, reference = reference, read_reference_sets(reference)
    if reference.shape[0] != len(classes) or reference.max() >= fc.in_features:
        raise ValueError(f"{file}: expected {len(classes)} sets of indices below "
                         f"{fc.in_features}, got {tuple(reference.shape)} up to "
                         f"{reference.max().item()}")
    correct = {name: influence.layer_correct(influence.DecomposedLinear(fc, sets), test)
               for name, sets in (("ours", found.indices), ("reference", reference))}
    rows = {}
    for c, name in enumerate(classes):
        ours, theirs = set(found.indices[c].tolist()), set(reference[c].tolist())
        of_class = test.labels == c
        rows[name] = {"ours": sorted(ours), "reference": sorted(theirs),
                      "Jaccard": len(ours & theirs) / len(ours | theirs),
                      **{f"accuracy, {k}": v[of_class].mean().item()
                         for k, v in correct.items()}}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.loc["all"] = ["", "", table["Jaccard"].mean(),
                        *(v.mean().item() for v in correct.values())]
    return table
