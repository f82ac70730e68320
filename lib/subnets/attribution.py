"""Attribution maps at input resolution, built on captum.

Grad-CAM: captum's ``LayerGradCam`` (gradient-weighted channel sum of a conv layer,
then ReLU), upsampled bilinearly with ``LayerAttribution.interpolate``. The maps are not
normalised per image: an original and a pruned network keep their absolute scales, and
figures choose a shared colour scale instead (see ``plots``).
"""

from __future__ import annotations

import math
import warnings

import pandas as pd
import torch
from captum.attr import LayerAttribution, LayerGradCam, NeuronDeconvolution, Saliency
from torch import nn
from torch.nn import functional as F

from . import cache
from .data import ImageSet, balanced_indices, foreground
from .hooks import Ablation, Recorder, layer
from .progress import bar
from .train import predict, predicted_labels


def saliency_maps(model: nn.Module, inputs: torch.Tensor, target) -> torch.Tensor:
    """Simonyan et al.'s saliency: |d output[target] / d input|, max over colour channels.

    ``target`` is a class index, one per input, or 0 for a single-output network.
    Returns N x 1 x H x W.
    """
    model.eval()
    grads = Saliency(model).attribute(inputs.clone().requires_grad_(True), target=target, abs=True)
    return grads.amax(dim=1, keepdim=True).detach()


def gradcam_maps(model: nn.Module, layer_name: str, inputs: torch.Tensor, target, relu: bool = True) -> torch.Tensor:
    """Grad-CAM of ``layer_name`` for ``target``, bilinearly upsampled to the input size.

    Returns N x 1 x H x W, unnormalised (ReLU applied unless ``relu=False``).
    """
    model.eval()
    cam = LayerGradCam(model, layer(model, layer_name)).attribute(inputs, target=target, relu_attributions=relu)
    return LayerAttribution.interpolate(cam, tuple(inputs.shape[-2:]), interpolate_mode="bilinear").detach()


# --- Deconvnet (Zeiler and Fergus), for paper 004's patches ------------------------------

def deconvnet(model: nn.Module, inputs: torch.Tensor, layer_name: str, channels) -> torch.Tensor:
    """Zeiler and Fergus's deconvnet: the strongest activation of channel ``channels[i]``
    of layer ``layer_name`` (a ReLU, so the map is rectified), every other activation of
    the layer set to zero, projected back to the pixels of ``inputs[i]``.

    captum's ``NeuronDeconvolution`` does the projection (unpooling through the recorded
    max locations, rectifying at every ReLU, filtering with the transposed convs). The
    selected neuron is half the square of the channel's maximum, whose gradient is that
    maximum at its position and zero elsewhere: the deconvnet's starting signal (a dead
    channel projects to zero). Returns a map shaped like ``inputs``.
    """
    channels = torch.as_tensor(channels, dtype=torch.long).view(-1)
    if len(channels) != len(inputs):
        raise ValueError(f"channels: expected one channel per input ({len(inputs)}), got {len(channels)}")
    rows = torch.arange(len(inputs))

    def strongest(out: torch.Tensor) -> torch.Tensor:
        return out[rows, channels].flatten(1).amax(1).square() / 2

    model.eval()
    with warnings.catch_warnings():
        # captum announces its (temporary) ReLU hooks on every call.
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        maps = NeuronDeconvolution(model, layer(model, layer_name)).attribute(
            inputs.detach().clone().requires_grad_(), strongest)
    return maps.detach()


def support_boxes(maps: torch.Tensor, fraction: float = 0.0) -> torch.Tensor:
    """The box around each map's support (N x 4: top, bottom, left, right; bottom and
    right exclusive): the pixels where the largest |value| over channels exceeds
    ``fraction`` of the map's maximum (0: every nonzero pixel). A zero map gets -1s."""
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


# --- Per-unit class relevance (paper 001): conductance of every unit of several layers ---

class UnitConductance:
    """Integrated Gradients of a class output, attributed to every unit of several layers
    along the input path: each unit's conductance (Dhamdhere et al., ICLR 2019) at every
    spatial position of its map, paper 001's per-unit map ``G_{i,c}(x)``.

    The inputs ``x' + a_k (x - x')``, ``a_k = k / n_steps`` (k = 0..n_steps), run through
    the model as one batch; one backward pass gives dF/dy for every recorded layer output
    y, and ``G = sum_k dF/dy(a_k) * (y(a_{k+1}) - y(a_k))``. Summed over a layer's units
    and positions it is the input-level Integrated Gradients total, F(x) - F(x').
    This is captum's ``LayerConductance`` with ``method="riemann_trapezoid"`` (the same
    alphas and sum) for all layers in one pass; captum attributes one layer per call,
    hence this hand-written loop over layers.

    ``output="probability"`` (the paper's F: the softmax probability of the class) or
    ``"logit"``.
    """

    def __init__(self, model: nn.Module, layers: list[str], output: str = "probability") -> None:
        if output not in ("probability", "logit"):
            raise ValueError(f"output: expected 'probability' or 'logit', got {output!r}")
        self.model = model
        self.layers = list(layers)
        for name in self.layers:
            layer(model, name)
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's outputs as the attribution sees them (softmax or logits)."""
        logits = self.model(x)
        return logits.softmax(1) if self.output == "probability" else logits

    def attribute(self, inputs: torch.Tensor, target, baselines: torch.Tensor | None = None,
                  n_steps: int = 32, internal_batch_size: int | None = None) -> dict[str, torch.Tensor]:
        """Per layer, the N x U x h x w conductance maps of every unit for ``target`` (a
        class index or one per input); baselines default to black (zeros)."""
        if n_steps < 1:
            raise ValueError(f"n_steps: expected >= 1, got {n_steps}")
        target = torch.as_tensor(target, dtype=torch.long).expand(len(inputs))
        baselines = torch.zeros_like(inputs) if baselines is None else baselines.expand_as(inputs)
        size = internal_batch_size or len(inputs)
        chunks = [self.chunk(inputs[i:i + size], baselines[i:i + size], target[i:i + size], n_steps)
                  for i in range(0, len(inputs), size)]
        return {name: torch.cat([c[name] for c in chunks]) for name in self.layers}

    def chunk(self, x: torch.Tensor, baseline: torch.Tensor, target: torch.Tensor,
              n_steps: int) -> dict[str, torch.Tensor]:
        self.model.eval()
        n = len(x)
        alphas = torch.linspace(0, 1, n_steps + 1).view(-1, *[1] * x.dim())
        path = (baseline + alphas * (x - baseline)).flatten(0, 1).requires_grad_(True)  # (steps + 1) n, step-major
        with torch.enable_grad(), Recorder(self.model, self.layers, keep_graph=True) as rec:
            out = self.forward(path)
            picked = out[torch.arange(len(path)), target.repeat(n_steps + 1)]
            grads = torch.autograd.grad(picked.sum(), [rec.outputs[name] for name in self.layers])
        maps = {}
        for name, grad in zip(self.layers, grads):
            act = rec.outputs[name].detach().view(n_steps + 1, n, *grad.shape[1:])
            grad = grad.view(n_steps + 1, n, *grad.shape[1:])
            maps[name] = (grad[:-1] * (act[1:] - act[:-1])).sum(0)
        return maps


def unit_relevance(model: nn.Module, layers: list[str], inputs: torch.Tensor, masks: torch.Tensor, target: int,
                   n_steps: int = 32, batch_size: int = 16, output: str = "probability") -> dict[str, torch.Tensor]:
    """Paper 001's eq. (3), ``R(i, c)`` for every unit i of the named layers and one class
    c: the mean over ``inputs`` (images of class c) of the sum over pixels of
    ``masks * bilinearUpsample(|G_{i,c}(x)|)``. ``masks`` (N x 1 x H x W) are the object
    masks at input resolution. Returns, per layer, a vector of U relevances."""
    if masks.shape[0] != len(inputs) or masks.shape[-2:] != inputs.shape[-2:]:
        raise ValueError(f"masks: expected {len(inputs)} x 1 x {tuple(inputs.shape[-2:])}, got {tuple(masks.shape)}")
    conductance = UnitConductance(model, layers, output)
    totals: dict[str, torch.Tensor] = {}
    for i in range(0, len(inputs), batch_size):
        maps = conductance.attribute(inputs[i:i + batch_size], target, n_steps=n_steps)
        mask = masks[i:i + batch_size].float()
        for name, g in maps.items():
            up = F.interpolate(g.abs(), size=tuple(inputs.shape[-2:]), mode="bilinear", align_corners=False)
            totals[name] = totals.get(name, 0) + (up * mask).sum((0, 2, 3))
    return {name: totals[name] / len(inputs) for name in layers}


def class_relevance(model: nn.Module, layers: list[str], data: ImageSet, per_class: int = 32, n_steps: int = 32,
                    seed: int = 0, output: str = "probability") -> dict[str, torch.Tensor]:
    """``R(i, c)`` for every unit of the named layers and every class of ``data``: per
    layer a units x classes tensor, from ``per_class`` images of each class (chosen with
    ``seed``), masked by their foreground (objects on black) or, for other data, by the
    whole image. Cached by model, layers, data and settings."""
    parts = {"model": model, "layers": list(layers), "data": data, "per_class": per_class,
             "n_steps": n_steps, "seed": seed, "output": output}

    def compute() -> dict:
        chosen = balanced_indices(data.labels, per_class, seed)
        columns = []
        for c in bar(range(data.num_classes), desc="relevance"):
            x, _ = data.tensors(chosen[data.labels[chosen] == c])
            masks = foreground(x) if data.black_background else torch.ones_like(x[:, :1], dtype=torch.bool)
            r = unit_relevance(model, layers, x, masks, c, n_steps, output=output)
            columns.append([r[name] for name in layers])
        return {"relevance": [torch.stack([col[j] for col in columns], 1) for j in range(len(layers))]}

    entry = cache.cached("class-relevance", parts, compute)
    return dict(zip(layers, entry["relevance"]))


def ranked_units(scores: torch.Tensor, fraction: float, end: str = "top") -> torch.Tensor:
    """The ``ceil(fraction * U)`` units with the highest (``end="top"``) or lowest
    (``"bottom"``) scores, ties broken by unit index."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction: expected a value in [0, 1], got {fraction}")
    if end not in ("top", "bottom"):
        raise ValueError(f"end: expected 'top' or 'bottom', got {end!r}")
    order = torch.argsort(scores, descending=end == "top", stable=True)
    return order[:math.ceil(fraction * len(scores))].sort().values


def relevance_ablation(model: nn.Module, relevance: dict[str, torch.Tensor], data: ImageSet,
                       fractions=(0.01, 0.02, 0.03), classes=None, ends=("top", "bottom")) -> pd.DataFrame:
    """Paper 001's ablation: for each class c, switch off the top or bottom ``fraction`` of
    the units of every layer in ``relevance`` (units x classes, ranked by column c) at
    once, and measure accuracy on ``data``'s images of class c and on the other classes
    (mean of their per-class accuracies). Rows with ``end="none"`` are the intact model.
    Cached by model, rankings and data."""
    classes = list(range(data.num_classes)) if classes is None else list(classes)
    parts = {"model": model, "relevance": relevance, "data": data, "fractions": list(fractions),
             "classes": classes, "ends": list(ends)}

    def per_class_accuracy(channels: dict[str, torch.Tensor]) -> torch.Tensor:
        with Ablation(model, channels):
            predicted = predicted_labels(predict(model, data))
        return torch.stack([(predicted[data.labels == k] == k).float().mean() for k in range(data.num_classes)])

    def compute() -> dict:
        intact = per_class_accuracy({})
        seen: dict[tuple, torch.Tensor] = {}
        rows = []
        settings = [(c, e, f) for c in classes for e in ends for f in fractions]
        for c, end, fraction in bar(settings, desc="ablation"):
            channels = {name: ranked_units(r[:, c], fraction, end) for name, r in relevance.items()}
            key = tuple(tuple(v.tolist()) for v in channels.values())
            if key not in seen:
                seen[key] = per_class_accuracy(channels)
            rows.append([c, fraction, ["top", "bottom"].index(end), sum(len(v) for v in channels.values()),
                         *seen[key].tolist()])
        return {"intact": intact, "rows": torch.tensor(rows, dtype=torch.float64)}

    entry = cache.cached("relevance-ablation", parts, compute)
    names = data.classes
    records = []
    for c in classes:
        records.append({"class": names[c], "end": "none", "fraction": 0.0, "units": 0,
                        **accuracy_split(entry["intact"], c)})
    for c, fraction, end, units, *accuracy in entry["rows"].tolist():
        records.append({"class": names[int(c)], "end": ["top", "bottom"][int(end)], "fraction": fraction,
                        "units": int(units), **accuracy_split(torch.tensor(accuracy), int(c))})
    return pd.DataFrame(records)


def accuracy_split(per_class: torch.Tensor, c: int) -> dict[str, float]:
    """Accuracy on class ``c`` and the mean accuracy on the other classes."""
    others = torch.cat([per_class[:c], per_class[c + 1:]])
    return {"accuracy_class": float(per_class[c]), "accuracy_others": float(others.mean())}
