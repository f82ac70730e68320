"""Receptive fields: from the layer arithmetic, and by gradient projection.

``receptive_field`` walks the model's traced graph (``torch.fx``) and applies the usual
recurrence to every conv and pool, ``size += (kernel - 1) * jump; jump *= stride``,
taking the larger field where paths merge (a residual add), so a ResNet's field is its
longest path's. It is the theoretical field: every input pixel that can reach the unit.

``GradientProjection`` is Avendaño Muñoz's importance map (chapter 3): a unit gradient at the centre
of every channel of a layer, projected back to the input (captum's ``NeuronGradient`` with a
selector that sums the centre units), as an absolute value. ``on_random_inputs`` runs the paper's
protocol (Tables 3 and 4: uniform random inputs, their mean map and per-input maxima); averaged over
inputs the map is the effective receptive field of Luo et al. (2016). ``gradient_support`` measures
the extent of the pixels it ever reaches, which the arithmetic must match.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
import torch.fx
from captum.attr import NeuronGradient
from torch import nn

from .devices import to_host, to_model
from .hooks import layer as find_layer
from .methods import Attribution
from .progress import bar

__all__ = ["Field", "receptive_field", "feature_layer", "GradientProjection", "Projection",
           "gradient_support", "projections", "maxima_frame", "maxima_table"]

_POOLS = (nn.MaxPool2d, nn.AvgPool2d)
_GLOBAL_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Linear, nn.Flatten)
_FUNCTIONAL_POOLS = (nn.functional.max_pool2d, nn.functional.avg_pool2d)
_GLOBAL_FUNCTIONS = (torch.flatten, nn.functional.adaptive_avg_pool2d,
                     nn.functional.adaptive_max_pool2d,
                     nn.functional.linear)
_GLOBAL_METHODS = ("flatten", "view", "reshape", "mean", "sum")


@dataclass(frozen=True)
class Field:
    """A unit's receptive field.

    Args:
        size: the input pixels on a side that can reach the unit.
        stride: the input pixels between neighbouring units of its layer.

    Example:
        >>> Field(5, 2).size
        5
    """

    size: int
    stride: int


def _square(value, what: str) -> int:
    if isinstance(value, (tuple, list)):
        if len(set(value)) != 1:
            raise ValueError(f"receptive_field: {what} {tuple(value)} is not square")
        return int(value[0])
    return int(value)


def _window(node: torch.fx.Node, modules: dict[str, nn.Module]) -> tuple[int, int] | None:
    """(effective kernel, stride) of a conv or pool node, (1, 1) for a pointwise node,
    None for a node whose output sees the whole input (global pooling, flatten, linear)."""
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, nn.Conv2d):
            k, d = _square(m.kernel_size, "kernel"), _square(m.dilation, "dilation")
            return d * (k - 1) + 1, _square(m.stride, "stride")
        if isinstance(m, _POOLS):
            k = _square(m.kernel_size, "kernel")
            d = _square(getattr(m, "dilation", 1), "dilation")
            return d * (k - 1) + 1, _square(m.stride if m.stride is not None else k, "stride")
        if isinstance(m, _GLOBAL_MODULES):
            return None
        if isinstance(m, nn.Conv1d | nn.Conv3d):
            raise ValueError(f"receptive_field: {node.target} is not a 2-d conv")
        return 1, 1
    if node.op == "call_function":
        if node.target in _FUNCTIONAL_POOLS:
            args = list(node.args) + [None] * 3
            k = _square(node.kwargs.get("kernel_size", args[1]), "kernel")
            s = node.kwargs.get("stride", args[2])
            return k, _square(s if s not in (None, []) else k, "stride")
        if node.target in _GLOBAL_FUNCTIONS:
            return None
        return 1, 1
    if node.op == "call_method" and node.target in _GLOBAL_METHODS:
        return None
    return 1, 1


@dataclass
class _Trace:
    """What one walk of the traced graph finds: the field of every module call's output by
    module name (``fields``), those names in execution order (``order``), and the node whose
    output feeds the first global operation (``feature``) with its field (``feature_field``)."""

    fields: dict[str, Field]
    order: list[str]
    feature: torch.fx.Node | None
    feature_field: Field | None


def _trace(model: nn.Module) -> _Trace:
    modules = dict(model.named_modules())
    graph = torch.fx.symbolic_trace(model).graph
    fields: dict[torch.fx.Node, Field | None] = {}
    by_name: dict[str, Field] = {}
    order: list[str] = []
    feature = None
    for node in graph.nodes:
        if node.op == "placeholder":
            fields[node] = Field(1, 1)
            continue
        inputs = [fields[a] for a in node.all_input_nodes if a in fields]
        if not inputs:
            continue
        spec = _window(node, modules)
        if any(f is None for f in inputs):
            fields[node] = None
            continue
        if spec is None:
            fields[node] = None
            if feature is None:
                feature = next((a for a in node.all_input_nodes if fields.get(a) is not None), None)
            continue
        strides = {f.stride for f in inputs}
        if len(strides) > 1:
            raise ValueError(f"receptive_field: {node.name} merges paths with strides "
                             f"{sorted(strides)}")
        size, jump = max(f.size for f in inputs), strides.pop()
        kernel, stride = spec
        fields[node] = Field(size + (kernel - 1) * jump, jump * stride)
        if node.op == "call_module":
            by_name[node.target] = fields[node]
            order.append(node.target)
    return _Trace(by_name, order, feature, None if feature is None else fields[feature])


def feature_layer(model: nn.Module) -> str:
    """The layer whose output the head reads: the last feature map.

    Args:
        model: a CNN that ``torch.fx`` can trace.

    Returns:
        The name of the module whose output feeds the first global pooling, flatten or
        linear layer.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
        >>> feature_layer(model)
        '1'
    """
    feature = _trace(model).feature
    if feature is None or feature.op != "call_module":
        raise ValueError(f"{type(model).__name__}: no module output feeds a global pool, "
                         "flatten or linear layer; name the layer explicitly")
    return feature.target


def receptive_field(model: nn.Module, layer: str | None = None) -> Field:
    """The receptive field of a unit of ``layer``'s output, by the layer arithmetic.

    Args:
        model: a CNN that ``torch.fx`` can trace.
        layer: a spatial layer's name (default: ``feature_layer``).

    Returns:
        The ``Field``, its size and stride in input pixels.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3),
        ...                       nn.Flatten(), nn.Linear(2, 2))
        >>> receptive_field(model)  # 3, then + 1 (pool), then + 2 * 2 (conv at stride 2)
        Field(size=8, stride=2)
    """
    trace = _trace(model)
    if layer is None:
        if trace.feature_field is None:
            raise ValueError(f"layer: {type(model).__name__} has no global pool, flatten or "
                             f"linear layer; name one of {trace.order}")
        return trace.feature_field
    if layer not in trace.fields:
        raise ValueError(f"layer: {layer!r} is not a spatial layer of {type(model).__name__} "
                         f"(or sees the whole input); spatial layers are: {trace.order}")
    return trace.fields[layer]


def _centre_units(output: torch.Tensor) -> torch.Tensor:
    """Per example, the sum over channels of the unit at the centre of the feature map."""
    if output.ndim != 4:
        raise ValueError(f"gradient projection needs a 4-d feature map, got shape "
                         f"{tuple(output.shape)}")
    return output[:, :, output.shape[2] // 2, output.shape[3] // 2].sum(1)


@dataclass
class Projection:
    """Gradient projections of random inputs (``GradientProjection.on_random_inputs``).

    Args:
        mean: their mean map (H x W, summed over input channels).
        maxima: each input's maximum (N).

    Example:
        >>> Projection(torch.zeros(4, 4), torch.ones(3)).maxima.mean().item()
        1.0
    """

    mean: torch.Tensor
    maxima: torch.Tensor


class GradientProjection(Attribution):
    """Avendaño Muñoz's importance map: per input, the absolute gradient of the sum over
    channels of ``layer``'s centre unit, i.e. a unit gradient at the centre of every channel
    projected to the input. The model is evaluated in eval mode (batch norm uses its running
    statistics), so every input's map is its own.

    Args:
        model: a CNN.
        layers: the one layer whose centre is projected (default: ``feature_layer``, the
            last feature map).

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(32, 2))
        >>> maps = GradientProjection(model).attribute(torch.rand(2, 1, 4, 4))
        >>> maps.shape, int((maps[0, 0] > 0).sum())  # the 3x3 field of the centre unit
        (torch.Size([2, 1, 4, 4]), 9)
    """

    def __init__(self, model: nn.Module, layers: str | list[str] | None = None) -> None:
        super().__init__(model, feature_layer(model) if layers is None else layers)
        if len(self.layers) != 1:
            raise ValueError(f"layers: gradient projection reads one layer, got {self.layers}")
        self.layer = self.layers[0]
        self.method = NeuronGradient(model, find_layer(model, self.layer))

    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor:
        """The absolute projected gradient of every input.

        Args:
            inputs: N x C x H x W.
            target: must be None: the projected unit is the layer's centre, not a class.

        Returns:
            The maps, shaped like ``inputs``, on the CPU.
        """
        if target is not None:
            raise ValueError("target: gradient projection projects the centre unit of its "
                             f"layer, not a class; got {target!r}")
        was_training = self.model.training
        self.model.eval()
        try:
            x = to_model(self.model, inputs.detach()).requires_grad_()
            grads = self.method.attribute(x, neuron_selector=_centre_units)
        finally:
            self.model.train(was_training)
        return to_host(grads.abs())

    def on_random_inputs(self, n_inputs: int = 50, input_size: int = 64, seed: int = 0,
                         batch_size: int = 25) -> Projection:
        """The paper's projection (Tables 3 and 4).

        Args:
            n_inputs: uniform random images (seeded by ``seed``).
            input_size: their side.
            seed: the generator's seed.
            batch_size: images per backward pass.

        Returns:
            The mean map and per-input maxima of the maps, each summed over input channels.
        """
        x = _random_inputs(n_inputs, _input_channels(self.model), input_size, seed)
        maps = torch.cat([self.attribute(x[i:i + batch_size]).sum(1)
                          for i in range(0, n_inputs, batch_size)])
        return Projection(maps.mean(0), maps.flatten(1).amax(1))


def _random_inputs(n_inputs: int, channels: int, input_size: int, seed: int) -> torch.Tensor:
    if n_inputs < 1 or input_size < 1:
        raise ValueError(f"n_inputs and input_size: expected >= 1, got {n_inputs} and {input_size}")
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n_inputs, channels, input_size, input_size, generator=g)


def _input_channels(model: nn.Module) -> int:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ValueError(f"{type(model).__name__} has no conv layer")
    return first.in_channels


def gradient_support(model: nn.Module, layer: str | None = None, input_size: int | None = None,
                     n_inputs: int = 16, seed: int = 0, batch_size: int = 4) -> int:
    """The measured receptive field: the side of the smallest square holding every pixel
    whose projected gradient is non-zero for any of ``n_inputs`` random inputs. A max pool
    passes gradient to one pixel per window and a ReLU only where it is active, so the
    union over inputs is taken.

    Args:
        model: a CNN.
        layer: the layer whose centre unit is projected (default: ``feature_layer``).
        input_size: the inputs' side (default: twice the analytic field plus one, so that
            zero padding does not clip the field).
        n_inputs: random inputs (seeded by ``seed``).
        seed: the generator's seed.
        batch_size: inputs per backward pass.

    Returns:
        The side, in pixels (0 if no pixel is reached).

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3),
        ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
        >>> gradient_support(model, n_inputs=2) == receptive_field(model).size
        True
    """
    field = receptive_field(model, layer)
    size = 2 * field.size + 1 if input_size is None else input_size
    x = _random_inputs(n_inputs, _input_channels(model), size, seed)
    method = GradientProjection(model, layer)
    reached = torch.zeros(size, size, dtype=torch.bool)
    for i in range(0, n_inputs, batch_size):
        reached |= method.attribute(x[i:i + batch_size]).sum((0, 1)) > 0
    rows = torch.nonzero(reached.any(1)).flatten()
    cols = torch.nonzero(reached.any(0)).flatten()
    if len(rows) == 0:
        return 0
    return int(max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1)


def projections(nets: dict[tuple, nn.Module], n_inputs: int = 50, input_size: int = 64,
                desc: str = "projections") -> dict[tuple, Projection]:
    """The paper's projection (``GradientProjection.on_random_inputs``) of every network.

    Args:
        nets: networks by key.
        n_inputs, input_size: as in ``on_random_inputs`` (the same random inputs for all).
        desc: the progress bar's label.

    Returns:
        ``{key: Projection}``.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2))
        >>> projections({"a": model}, n_inputs=3, input_size=4)["a"].maxima.shape
        torch.Size([3])
    """
    return {key: GradientProjection(m).on_random_inputs(n_inputs, input_size)
            for key, m in bar(nets.items(), desc=desc)}


def maxima_frame(found: dict[tuple, Projection],
                 names: tuple[str, ...] = ("architecture", "level", "seed", "state")):
    """Per projection, the mean and standard deviation of its inputs' maxima (the numbers
    of the paper's Tables 3 and 4).

    Args:
        found: ``projections``'s result, keyed by tuples.
        names: the columns the keys' entries go in.

    Returns:
        A ``pandas.DataFrame`` with the key's columns, "mean of maxima", "std of maxima".

    Example:
        >>> p = Projection(torch.zeros(2, 2), torch.tensor([1.0, 3.0]))
        >>> maxima_frame({("vgg", 1, 0, "trained"): p})["mean of maxima"].tolist()
        [2.0]
    """
    return pd.DataFrame([{**dict(zip(names, key)), "mean of maxima": p.maxima.mean().item(),
                          "std of maxima": p.maxima.std().item()} for key, p in found.items()])


def maxima_table(frame: pd.DataFrame, fields: pd.Series | None = None) -> pd.DataFrame:
    """Tables 3 and 4 of Avendaño Muñoz from ``maxima_frame``'s rows: per (architecture,
    level), the seed-0 maxima as mean ± standard deviation over inputs, one column per
    state, and the mean over seeds of the mean maximum at initialisation.

    Args:
        frame: ``maxima_frame`` with the columns architecture, level, seed and state.
        fields: the receptive field of each (architecture, level), shown first.

    Returns:
        One row per (architecture, level).

    Example:
        >>> p = Projection(torch.zeros(2, 2), torch.tensor([1.0, 3.0]))
        >>> frame = maxima_frame({("vgg", 1, 0, "initialisation"): p})
        >>> maxima_table(frame).iloc[0].tolist()
        ['2 ± 1.4', '2']
    """
    first = frame[frame.seed == 0]
    table = first.assign(shown=[f"{m:.3g} ± {s:.2g}" for m, s in zip(
        first["mean of maxima"], first["std of maxima"])]).pivot(
        index=["architecture", "level"], columns="state", values="shown")
    if fields is not None:
        table.insert(0, "receptive field", fields)
    init = frame[frame.state == "initialisation"]
    table["initialisation, mean over seeds"] = init.groupby(["architecture", "level"])[
        "mean of maxima"].mean().map("{:.3g}".format)
    return table
