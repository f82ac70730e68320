"""Attribution maps and per-unit relevance, built on captum, each method a
``methods.Attribution``: ``Method(model, layer | layers).attribute(inputs, target=None)``
(None: the predicted class), or, for the per-class relevance of every unit over a data set,
a ``methods.UnitScoring``: ``ClassRelevance(model, layers).score(data)``.

Saliency (Simonyan et al.) and Grad-CAM (Selvaraju et al.), chapter 1: captum's
``Saliency`` and ``LayerGradCam`` (gradient-weighted channel sum of a conv layer, then
ReLU), the latter upsampled bilinearly (``upsampling.bilinear``). The maps
are not normalised per image: an original and a pruned network keep their absolute
scales, and figures choose a shared colour scale instead (see ``plots``).
Per-unit conductance and relevance (Islam and Tushar), chapter 2; their ablation is in
``ablation``. Zeiler and
Fergus's deconvnet and its patch boxes, for Lengerich et al. (chapter 5).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import torch
from captum import attr as captum_attr
from torch import nn

from . import cache, hooks, upsampling
from .data import ImageSet, balanced_indices, foreground
from .devices import to_host, to_model
from .evaluation import predict, predicted_labels
from .hooks import activations
from .methods import Attribution, LayerScores, UnitScoring
from .progress import bar

__all__ = ["Saliency", "GradCAM", "Deconvnet", "support_boxes", "UnitConductance",
           "UnitRelevance", "upsampling_area", "layer_class_interaction", "ClassRelevance",
           "layer_relevance"]


def _targets(model: nn.Module, inputs: torch.Tensor, target):
    """``target``, or the model's predicted class of each input when it is None (0 for a
    single-output network, whose one output is the class captum attributes)."""
    if target is not None:
        return target
    logits = predict(model, inputs)
    return 0 if logits.shape[1] == 1 else predicted_labels(logits)


def _on_model(model: nn.Module, inputs: torch.Tensor, target):
    """``inputs`` and a tensor ``target`` moved to the model's device (captum gathers the
    target's outputs there)."""
    inputs = to_model(model, inputs)
    return inputs, to_model(model, target) if isinstance(target, torch.Tensor) else target


class Saliency(Attribution):
    """Simonyan et al.'s saliency (chapter 1): |d output[target] / d input|, max over
    colour channels.

    Args:
        model: the network.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3, 2))
        >>> Saliency(model).attribute(torch.rand(4, 3, 1, 1)).shape
        torch.Size([4, 1, 1, 1])
    """

    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor:
        """The saliency maps of ``inputs``, computed on the model's device.

        Args:
            inputs: N x C x H x W.
            target: a class index, one per input, 0 for a single-output network, or None
                (the predicted class).

        Returns:
            N x 1 x H x W maps on the CPU.
        """
        self.model.eval()
        inputs, target = _on_model(self.model, inputs, _targets(self.model, inputs, target))
        grads = captum_attr.Saliency(self.model).attribute(inputs.clone().requires_grad_(True),
                                                           target=target, abs=True)
        return to_host(grads.amax(dim=1, keepdim=True))


class GradCAM(Attribution):
    """Selvaraju et al.'s Grad-CAM (chapter 1) of the layer called ``layer``, bilinearly
    upsampled to the input size.

    Args:
        model: the network.
        layer: the name of a conv layer (or its activation).

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(),
        ...                       nn.Linear(2 * 16, 3))
        >>> GradCAM(model, "1").attribute(torch.rand(2, 1, 4, 4), target=[0, 2]).shape
        torch.Size([2, 1, 4, 4])
    """

    def __init__(self, model: nn.Module, layer: str) -> None:
        super().__init__(model, layer)
        self.layer = layer
        self._module = hooks.layer(model, layer)

    def attribute(self, inputs: torch.Tensor, target=None, relu: bool = True) -> torch.Tensor:
        """Unnormalised Grad-CAM maps of ``inputs``.

        Args:
            inputs: N x C x H x W.
            target: a class index, one per input, or None (the predicted class).
            relu: rectify the channel sum (Grad-CAM's ReLU).

        Returns:
            N x 1 x H x W maps on the CPU.
        """
        self.model.eval()
        inputs, target = _on_model(self.model, inputs, _targets(self.model, inputs, target))
        cam = captum_attr.LayerGradCam(self.model, self._module).attribute(
            inputs, target=target, relu_attributions=relu)
        size = tuple(inputs.shape[-2:])
        return to_host(upsampling.bilinear(cam, size))


# --- Deconvnet (Zeiler and Fergus), for Lengerich et al.'s patches (chapter 5) --------

class Deconvnet(Attribution):
    """Zeiler and Fergus's deconvnet: the strongest activation of one channel of the
    layer called ``layer`` (a ReLU, so the map is rectified), every other activation of
    the layer set to zero, projected back to the pixels of the input.

    captum's ``NeuronDeconvolution`` does the projection (unpooling through the recorded
    max locations, rectifying at every ReLU, filtering with the transposed convs). The
    selected neuron is half the square of the channel's maximum, whose gradient is that
    maximum at its position and zero elsewhere: the deconvnet's starting signal (a dead
    channel projects to zero).

    Args:
        model: the network.
        layer: the name of a ReLU whose channels are projected.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
        >>> Deconvnet(model, "1").attribute(torch.rand(2, 1, 5, 5), channel=[0, 1]).shape
        torch.Size([2, 1, 5, 5])
    """

    def __init__(self, model: nn.Module, layer: str) -> None:
        super().__init__(model, layer)
        self.layer = layer
        self._module = hooks.layer(model, layer)

    def attribute(self, inputs: torch.Tensor, target=None, channel=None) -> torch.Tensor:
        """The projection of channel ``channel[i]`` for ``inputs[i]``; runs on the model's
        device.

        Args:
            inputs: N x C x H x W.
            target: unused: a deconvnet projects a channel, not a class (must be None).
            channel: one channel of the layer per input.

        Returns:
            Maps shaped like ``inputs``, on the CPU.
        """
        if target is not None:
            raise ValueError("target: a deconvnet projects a channel, not a class; "
                             "give channel=")
        if channel is None:
            raise ValueError("channel: expected one channel per input, got None")
        channels = torch.as_tensor(channel, dtype=torch.long).view(-1)
        if len(channels) != len(inputs):
            raise ValueError(f"channel: expected one channel per input ({len(inputs)}), "
                             f"got {len(channels)}")
        inputs, channels, rows = to_model(self.model, inputs, channels, torch.arange(len(inputs)))

        def strongest(out: torch.Tensor) -> torch.Tensor:
            return out[rows, channels].flatten(1).amax(1).square() / 2

        self.model.eval()
        with warnings.catch_warnings():
            # captum announces its (temporary) ReLU hooks on every call.
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
            maps = captum_attr.NeuronDeconvolution(self.model, self._module).attribute(
                inputs.detach().clone().requires_grad_(), strongest)
        return to_host(maps)


def support_boxes(maps: torch.Tensor, fraction: float = 0.0) -> torch.Tensor:
    """The box around each map's support (N x 4: top, bottom, left, right; bottom and
    right exclusive): the pixels where the largest |value| over channels exceeds
    ``fraction`` of the map's maximum (0: every nonzero pixel). A zero map gets -1s.

    Args:
        maps: N x C x H x W (e.g. ``Deconvnet`` projections).
        fraction: the share of the maximum a pixel must exceed, in [0, 1).

    Returns:
        N x 4 long tensor.

    Example:
        >>> maps = torch.zeros(1, 1, 4, 4)
        >>> maps[0, 0, 1, 2] = 1.0
        >>> support_boxes(maps).tolist()
        [[1, 2, 2, 3]]
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction: expected a value in [0, 1), got {fraction}")
    strength = maps.abs().amax(1)
    support = strength > fraction * strength.flatten(1).amax(1).view(-1, 1, 1)
    rows, cols = support.any(2), support.any(1)
    h, w = strength.shape[1:]

    def span(hit: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        first = hit.float().argmax(1)
        last = size - hit.flip(1).float().argmax(1)
        return first, last

    (top, bottom), (left, right) = span(rows, h), span(cols, w)
    boxes = torch.stack([top, bottom, left, right], 1)
    return torch.where(rows.any(1, keepdim=True), boxes, -1)


# --- Per-unit class relevance (Islam and Tushar, chapter 2): conductance of every unit ---

class UnitConductance(Attribution):
    """Integrated Gradients of a class output, attributed to every unit of several layers
    along the input path: each unit's conductance (Dhamdhere et al., ICLR 2019) at every
    spatial position of its map: Islam and Tushar's per-unit map ``G_{i,c}(x)`` (chapter 2).

    The inputs ``x' + a_k (x - x')``, ``a_k = k / n_steps`` (k = 0..n_steps), run through
    the model as one batch; one backward pass gives dF/dy for every recorded layer output
    y, and ``G = sum_k dF/dy(a_k) * (y(a_{k+1}) - y(a_k))``. Summed over the units and
    positions of a layer that the whole signal crosses, it tends to the input-level
    Integrated Gradients total F(x) - F(x') as the steps grow (a Riemann sum with finitely
    many). This is captum's ``LayerConductance`` with ``method="riemann_trapezoid"`` (the
    same alphas and sum) for all layers in one pass; captum attributes one layer per call,
    hence this hand-written loop over layers.

    Args:
        model: the network.
        layers: names of the layers whose units are attributed to.
        output: "probability" (the paper's F: the softmax probability of the class) or
            "logit".

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))
        >>> maps = UnitConductance(model, ["1"]).attribute(torch.rand(2, 1, 4, 4), n_steps=4)
        >>> maps["1"].shape
        torch.Size([2, 3, 2, 2])
    """

    def __init__(self, model: nn.Module, layers: list[str], output: str = "probability") -> None:
        if output not in ("probability", "logit"):
            raise ValueError(f"output: expected 'probability' or 'logit', got {output!r}")
        super().__init__(model, layers)
        for name in self.layers:
            hooks.layer(model, name)
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's outputs as the attribution sees them (softmax or logits).

        Args:
            x: inputs.

        Returns:
            N x classes.
        """
        logits = self.model(x)
        return logits.softmax(1) if self.output == "probability" else logits

    def attribute(self, inputs: torch.Tensor, target=None, baselines: torch.Tensor | None = None,
                  n_steps: int = 32, internal_batch_size: int | None = None) -> LayerScores:
        """Every unit's conductance map, computed on the model's device.

        Args:
            inputs: N x C x H x W.
            target: a class index, one per input, or None (the predicted class).
            baselines: the path's start (default: black, zeros).
            n_steps: Riemann steps along the path.
            internal_batch_size: inputs per pass (default: all).

        Returns:
            Per layer, the N x U x h x w maps, on the host.
        """
        if n_steps < 1:
            raise ValueError(f"n_steps: expected >= 1, got {n_steps}")
        target = torch.as_tensor(_targets(self.model, inputs, target),
                                 dtype=torch.long).expand(len(inputs))
        baselines = torch.zeros_like(inputs) if baselines is None else baselines.expand_as(inputs)
        maps = self._maps(inputs, target, baselines, n_steps, internal_batch_size)
        return LayerScores({name: to_host(m) for name, m in maps.items()})

    def _maps(self, inputs, target, baselines, n_steps, internal_batch_size=None):
        """``attribute``'s maps, left on the model's device."""
        inputs, baselines, target = to_model(self.model, inputs, baselines, target)
        size = internal_batch_size or len(inputs)
        chunks = [self._chunk(inputs[i:i + size], baselines[i:i + size], target[i:i + size],
                              n_steps) for i in range(0, len(inputs), size)]
        return {name: torch.cat([c[name] for c in chunks]) for name in self.layers}

    def _chunk(self, x: torch.Tensor, baseline: torch.Tensor, target: torch.Tensor,
               n_steps: int) -> dict[str, torch.Tensor]:
        self.model.eval()
        n = len(x)
        alphas = torch.linspace(0, 1, n_steps + 1, device=x.device).view(-1, *[1] * x.dim())
        # (steps + 1) n inputs, step-major
        path = (baseline + alphas * (x - baseline)).flatten(0, 1).requires_grad_(True)
        with torch.enable_grad(), hooks.Recorder(self.model, self.layers, keep_graph=True) as rec:
            out = self.forward(path)
            picked = out[torch.arange(len(path), device=x.device), target.repeat(n_steps + 1)]
            grads = torch.autograd.grad(picked.sum(), [rec.outputs[name] for name in self.layers])
        maps = {}
        for name, grad in zip(self.layers, grads):
            act = rec.outputs[name].detach().view(n_steps + 1, n, *grad.shape[1:])
            grad = grad.view(n_steps + 1, n, *grad.shape[1:])
            maps[name] = (grad[:-1] * (act[1:] - act[:-1])).sum(0)
        return maps


class UnitRelevance(Attribution):
    """Islam and Tushar's eq. (3) (chapter 2), ``R(i, c)`` for every unit i of the named
    layers: the mean over the inputs (images of class c) of the sum over pixels of
    ``masks * bilinearUpsample(|G_{i,c}(x)|)``, with ``G`` the ``UnitConductance`` map
    (``output`` as there).

    The sum runs over input pixels, so a layer whose map is s times smaller per side has
    its units' relevances scaled by about s^2 against a full-size layer: compare units
    within a layer, or divide by ``upsampling_area`` to compare layers.

    Args:
        model: the network.
        layers: names of the layers whose units are scored.
        output: as ``UnitConductance``.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))
        >>> UnitRelevance(model, ["1"]).attribute(torch.rand(2, 1, 4, 4), 0, n_steps=4)["1"].shape
        torch.Size([3])
    """

    def __init__(self, model: nn.Module, layers: list[str], output: str = "probability") -> None:
        super().__init__(model, layers)
        self._conductance = UnitConductance(model, self.layers, output)

    def attribute(self, inputs: torch.Tensor, target=None, masks: torch.Tensor | None = None,
                  n_steps: int = 32, internal_batch_size: int = 16) -> LayerScores:
        """The units' relevance over ``inputs``.

        Args:
            inputs: N x C x H x W, images of one class.
            target: the class c, one per input, or None (the predicted class).
            masks: N x 1 x H x W object masks at input resolution (None: the whole image).
            n_steps: Riemann steps of the conductance.
            internal_batch_size: inputs per pass.

        Returns:
            Per layer, the U relevances, on the host.
        """
        if masks is None:
            masks = torch.ones_like(inputs[:, :1], dtype=torch.bool)
        if masks.shape[0] != len(inputs) or masks.shape[-2:] != inputs.shape[-2:]:
            raise ValueError(f"masks: expected {len(inputs)} x 1 x {tuple(inputs.shape[-2:])}, "
                             f"got {tuple(masks.shape)}")
        target = torch.as_tensor(_targets(self.model, inputs, target),
                                 dtype=torch.long).expand(len(inputs))
        size = tuple(inputs.shape[-2:])
        totals: dict[str, torch.Tensor] = {}
        for i in range(0, len(inputs), internal_batch_size):
            x = inputs[i:i + internal_batch_size]
            maps = self._conductance._maps(x, target[i:i + internal_batch_size],
                                           torch.zeros_like(x), n_steps)
            mask = to_model(self.model, masks[i:i + internal_batch_size].float())
            for name, g in maps.items():
                up = upsampling.bilinear(g.abs(), size)
                totals[name] = totals.get(name, 0) + (up * mask).sum((0, 2, 3))
        return LayerScores({name: to_host(totals[name] / len(inputs)) for name in self.layers})


def upsampling_area(map_size: tuple[int, int], input_size: tuple[int, int]) -> float:
    """Input pixels per map position: the factor by which eq. (3)'s sum over upsampled
    pixels inflates a layer's relevance (divide by it to compare layers per map pixel).

    Args:
        map_size: the layer's map, (h, w).
        input_size: the input, (H, W).

    Returns:
        H W / (h w).

    Example:
        >>> upsampling_area((7, 7), (28, 28))
        16.0
    """
    return (input_size[0] * input_size[1]) / (map_size[0] * map_size[1])


def layer_class_interaction(table) -> float:
    """How far classes differ in their profile of relevance over layers: the root mean
    square of the residual of the additive two-way fit of ``log(table)`` (layers x
    classes, positive), i.e. of the log factor by which a class's relevance in a layer
    departs from that layer's factor times that class's factor. It is 0 when every class
    has the same profile over layers up to a scale, and it does not change when a layer or
    a class is scaled (relevance per map position and eq. (3)'s sum over upsampled pixels
    give the same).

    Layers with a non-positive entry are left out; NaN when fewer than two layers or two
    classes remain.

    Args:
        table: layers x classes, positive (e.g. ``layer_relevance``).

    Returns:
        The root mean square log factor.

    Example:
        >>> round(layer_class_interaction([[1.0, 2.0], [10.0, 20.0]]), 12)
        0.0
        >>> round(layer_class_interaction([[1.0, 1.0], [1.0, math.e ** 4]]), 12)
        1.0
    """
    table = np.asarray(table, dtype=float)
    table = table[(table > 0).all(1)]
    if table.ndim != 2 or min(table.shape) < 2:
        return math.nan
    logs = np.log(table)
    residual = logs - logs.mean(0) - logs.mean(1, keepdims=True) + logs.mean()
    return float(np.sqrt((residual ** 2).mean()))


class ClassRelevance(UnitScoring):
    """``R(i, c)`` (``UnitRelevance``, Islam and Tushar, chapter 2) for every unit of the
    named layers and every class of a data set: per layer a units x classes tensor.

    Args:
        model: the network.
        layers: names of the layers whose units are scored.
        output: as ``UnitConductance``.

    Example:
        >>> from subnets.data import ImageSet
        >>> data = ImageSet(torch.randint(0, 255, (4, 1, 4, 4), dtype=torch.uint8),
        ...                 torch.tensor([0, 1, 0, 1]), ["a", "b"], "toy")
        >>> model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))
        >>> ClassRelevance(model, ["1"]).score(data, per_class=2, n_steps=2)["1"].shape
        torch.Size([3, 2])
    """

    def __init__(self, model: nn.Module, layers: list[str], output: str = "probability") -> None:
        super().__init__(model, layers)
        self.output = output
        self._relevance = UnitRelevance(model, self.layers, output)

    def score(self, data: ImageSet, target=None, per_class: int = 32, n_steps: int = 32,
              seed: int = 0, masks: torch.Tensor | None = None) -> LayerScores:
        """Every unit's relevance for every class of ``data``. Cached by model, layers,
        data, masks and settings.

        Args:
            data: labelled images.
            target: None: every class is scored (one column each).
            per_class: images of each class (chosen with ``seed``).
            n_steps: Riemann steps of the conductance.
            seed: which images.
            masks: N x 1 x H x W, one object mask per image of ``data`` (e.g. Broden's
                annotation of the class's object); None: their foreground for objects on
                black, else the whole image.

        Returns:
            Per layer, units x classes, on the host.
        """
        if target is not None:
            raise ValueError("target: ClassRelevance scores every class; expected None")
        if masks is not None and (masks.shape[0] != len(data)
                                  or masks.shape[-2:] != data.shape[-2:]):
            raise ValueError(f"masks: expected {len(data)} x 1 x {tuple(data.shape[-2:])}, "
                             f"got {tuple(masks.shape)}")
        layers = self.layers
        parts = {"model": self.model, "layers": layers, "data": data, "per_class": per_class,
                 "n_steps": n_steps, "seed": seed, "output": self.output, "masks": masks}

        def compute() -> dict:
            chosen = balanced_indices(data.labels, per_class, seed)
            columns = []
            for c in bar(range(data.num_classes), desc="relevance"):
                picked = chosen[data.labels[chosen] == c]
                x, _ = data.tensors(picked)
                if masks is not None:
                    mask = masks[picked].bool()
                elif data.black_background:
                    mask = foreground(x)
                else:
                    mask = None
                r = self._relevance.attribute(x, c, mask, n_steps)
                columns.append([r[name] for name in layers])
            return {"relevance": [torch.stack([col[j] for col in columns], 1)
                                  for j in range(len(layers))]}

        entry = cache.cached("class-relevance", parts, compute)
        return LayerScores(dict(zip(layers, entry["relevance"])))


def layer_relevance(relevance: LayerScores, model: nn.Module, image: torch.Tensor,
                    classes: list[str], per_position: bool = True) -> pd.DataFrame:
    """A layer's relevance for a class: the sum of ``R(i, c)`` over its units (the paper's
    Fig. 4), per map position (divided by ``upsampling_area``) or as eq. (3) sums it.

    Args:
        relevance: per layer, units x classes (``ClassRelevance.score``).
        model: the network, to read each layer's map size.
        image: one input (1 x C x H x W).
        classes: the classes' names.
        per_position: divide by the layer's upsampling area.

    Returns:
        Layers x classes.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2), nn.ReLU())
        >>> rel = LayerScores({"1": torch.ones(3, 2)})
        >>> layer_relevance(rel, model, torch.rand(1, 1, 6, 6), ["a", "b"]).round(3)
               a      b
        1  0.333  0.333
    """
    maps = activations(model, image, relevance.layers)
    image_size = tuple(image.shape[-2:])
    return pd.DataFrame({
        name: r.sum(0).numpy() / (upsampling_area(tuple(maps[name].shape[-2:]), image_size)
                                  if per_position else 1.0)
        for name, r in relevance.items()}, index=list(classes)).T
