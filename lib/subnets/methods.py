"""The shapes of the library's methods: what each kind takes, and how its result is read.

Two kinds of method, each with one verb:

- An **attribution** gives one map per input: ``Method(model, layers).attribute(inputs,
  target=None)``, ``target`` the class of each input (None: the predicted class). It
  returns a tensor (N x ...) or, for several layers, ``LayerScores`` of per-input maps.
- What is not a per-input attribution has a named verb of its own, and returns
  ``LayerScores`` or a dataclass built on it:

  - ``UnitScoring.score(data, target=None)``: a score for every unit
    (``attribution.ClassRelevance``);
  - ``UnitSelection.select(data, target=None)``: a few units picked by a rule
    (``neuron_selection.NeuronSelection``, ``influence.InfluentialFeatureSelection``);
  - ``SubnetworkBuilder.build(inputs, target, labels)``: a smaller network for one class
    (``pruning.ClassSubnetwork``);
  - ``Dissector.dissect(probe)``: units against the concepts of a probe set
    (``dissection.NetDissect``).

Results are read one way: ``result[layer]``, a tensor whose last dimension indexes the
layer's units (or, for maps, whose second does). Similarity and curvature are measures of
a network, not of its units: ``similarity.MinibatchCKA`` keeps torchmetrics' ``update`` /
``compute``, ``curvature.Hessian`` its ``top_eigenvalues``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["LayerScores", "Attribution", "UnitScoring", "UnitSelection", "SubnetworkBuilder",
           "Dissector"]


@dataclass
class LayerScores(Mapping):
    """Per layer (by name), a tensor about that layer's units: the one way every method's
    result is read.

    Args:
        scores: layer name -> tensor, in the model's order.

    Example:
        >>> import torch
        >>> result = LayerScores({"conv1": torch.ones(4), "conv2": torch.zeros(8)})
        >>> result["conv2"].shape, result.layers
        (torch.Size([8]), ['conv1', 'conv2'])
        >>> result["fc"]
        Traceback (most recent call last):
        ...
        KeyError: "layer 'fc': this result has ['conv1', 'conv2']"
    """

    scores: dict[str, torch.Tensor] = field(default_factory=dict)

    def __getitem__(self, layer: str) -> torch.Tensor:
        if layer not in self.scores:
            raise KeyError(f"layer {layer!r}: this result has {list(self.scores)}")
        return self.scores[layer]

    def __iter__(self) -> Iterator[str]:
        return iter(self.scores)

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def layers(self) -> list[str]:
        """The layers' names, in order."""
        return list(self.scores)


class _Method(ABC):
    """A method bound to ``model`` and the ``layers`` it reads (None: the method's own
    choice, said in its docstring)."""

    def __init__(self, model: nn.Module, layers: list[str] | str | None = None) -> None:
        self.model = model
        self.layers = [layers] if isinstance(layers, str) else layers


class Attribution(_Method):
    """One map per input. Subclasses implement ``attribute``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> class InputTimesWeight(Attribution):
        ...     def attribute(self, inputs, target=None):
        ...         return inputs * self.model.weight[target].view(1, -1)
        >>> model = nn.Linear(3, 2, bias=False)
        >>> InputTimesWeight(model).attribute(torch.ones(5, 3), target=0).shape
        torch.Size([5, 3])
    """

    @abstractmethod
    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor | LayerScores:
        """The map of each input for ``target`` (a class, one per input, or None: the
        predicted class)."""


class UnitScoring(_Method):
    """A score for every unit of the named layers over a data set (not one per input).
    Subclasses implement ``score``.

    Example:
        >>> class WeightNorm(UnitScoring):
        ...     def score(self, data, target=None):
        ...         return LayerScores({name: self.model.get_submodule(name).weight.norm(dim=1)
        ...                             for name in self.layers})
        >>> WeightNorm(nn.Sequential(nn.Linear(3, 2)), ["0"]).score(None)["0"].shape
        torch.Size([2])
    """

    @abstractmethod
    def score(self, data, target=None) -> LayerScores:
        """Per layer, the units' scores over ``data`` (for ``target``, where the method
        takes a class)."""


class UnitSelection(_Method):
    """A few units of the named layers, picked by a rule over a data set. Subclasses
    implement ``select``.

    Example:
        >>> class MostActive(UnitSelection):
        ...     def select(self, data, target=None):
        ...         mean = self.model(data).mean(0)
        ...         return LayerScores({"out": mean == mean.max()})
        >>> model = nn.Linear(3, 4)
        >>> MostActive(model).select(torch.rand(5, 3))["out"].sum().item()  # one unit
        1
    """

    @abstractmethod
    def select(self, data, target=None):
        """The picked units: a dataclass read as ``LayerScores`` (a mask or indices per
        layer)."""


class SubnetworkBuilder(_Method):
    """A smaller network for one class, built from ``model``. Subclasses implement
    ``build``.

    Example:
        >>> class OneLogit(SubnetworkBuilder):
        ...     def build(self, inputs, target, labels):
        ...         return lambda x: self.model(x)[:, target:target + 1]
        >>> sub = OneLogit(nn.Linear(3, 2)).build(torch.rand(4, 3), 1, torch.tensor([0, 1] * 2))
        >>> sub(torch.rand(5, 3)).shape
        torch.Size([5, 1])
    """

    @abstractmethod
    def build(self, inputs: torch.Tensor, target: int, labels: torch.Tensor):
        """The sub-network for class ``target``, from ``inputs`` and their ``labels``."""


class Dissector(_Method):
    """Units against the concepts of a labelled probe set. Subclasses implement
    ``dissect``.

    Example:
        >>> class SignAgreement(Dissector):
        ...     def dissect(self, probe):
        ...         inputs, concepts = probe  # N x features, N x concepts booleans
        ...         on = self.model(inputs) > 0  # N x units
        ...         agree = (on[:, :, None] == concepts[:, None, :]).float().mean(0)
        ...         return LayerScores({"out": agree})
        >>> probe = (torch.rand(6, 3), torch.rand(6, 4) > 0.5)
        >>> SignAgreement(nn.Linear(3, 2)).dissect(probe)["out"].shape  # units x concepts
        torch.Size([2, 4])
    """

    @abstractmethod
    def dissect(self, probe):
        """Per layer, every unit's agreement with every concept of ``probe``."""
