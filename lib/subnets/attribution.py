"""Attribution maps and per-unit relevance, built on captum, each method a class in
captum's style: ``Method(model, layer | layers).attribute(inputs, target)``.

Saliency (Simonyan et al.) and Grad-CAM (Selvaraju et al.), chapter 1: captum's
``Saliency`` and ``LayerGradCam`` (gradient-weighted channel sum of a conv layer, then
ReLU), the latter upsampled bilinearly (``upsampling.bilinear``). The maps
are not normalised per image: an original and a pruned network keep their absolute
scales, and figures choose a shared colour scale instead (see ``plots``).
Per-unit conductance, relevance and ablation (Islam and Tushar), chapter 2. Zeiler and
Fergus's deconvnet and its patch boxes, for Lengerich et al. (chapter 5).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from captum import attr as captum_attr
from torch import nn

from . import cache, hooks, upsampling
from .data import ImageSet, balanced_indices, foreground
from .devices import to_host, to_model
from .metrics import accuracy_by_class
from .progress import bar
from .train import predict, predicted_labels

__all__ = ["Saliency", "GradCAM", "Deconvnet", "support_boxes", "LayerMaps", "UnitConductance",
           "Relevance", "UnitRelevance", "upsampling_area", "layer_class_interaction",
           "ClassRelevance", "ROUNDINGS",
           "unit_quotas", "ENDS", "ranked_units", "AblationResult", "class_drop", "other_drop",
           "relevance_ablation"]


def _on_model(model: nn.Module, inputs: torch.Tensor, target):
    """``inputs`` and a tensor ``target`` moved to the model's device (captum gathers the
    target's outputs there)."""
    inputs = to_model(model, inputs)
    return inputs, to_model(model, target) if isinstance(target, torch.Tensor) else target


class Saliency:
    """Simonyan et al.'s saliency (chapter 1): |d output[target] / d input|, max over
    colour channels."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def attribute(self, inputs: torch.Tensor, target) -> torch.Tensor:
        """N x 1 x H x W maps on the CPU, whatever the model's device; ``target`` is a
        class index, one per input, or 0 for a single-output network."""
        self.model.eval()
        inputs, target = _on_model(self.model, inputs, target)
        grads = captum_attr.Saliency(self.model).attribute(inputs.clone().requires_grad_(True),
                                                           target=target, abs=True)
        return to_host(grads.amax(dim=1, keepdim=True))


class GradCAM:
    """Selvaraju et al.'s Grad-CAM (chapter 1) of the layer called ``layer``, bilinearly
    upsampled to the input size."""

    def __init__(self, model: nn.Module, layer: str) -> None:
        self.model = model
        self.layer = layer
        self._module = hooks.layer(model, layer)

    def attribute(self, inputs: torch.Tensor, target, relu: bool = True) -> torch.Tensor:
        """N x 1 x H x W maps on the CPU, unnormalised, for ``target`` (a class index or
        one per input); ReLU applied unless ``relu=False``."""
        self.model.eval()
        inputs, target = _on_model(self.model, inputs, target)
        cam = captum_attr.LayerGradCam(self.model, self._module).attribute(
            inputs, target=target, relu_attributions=relu)
        size = tuple(inputs.shape[-2:])
        return to_host(upsampling.bilinear(cam, size))


# --- Deconvnet (Zeiler and Fergus), for Lengerich et al.'s patches (chapter 5) --------

class Deconvnet:
    """Zeiler and Fergus's deconvnet: the strongest activation of one channel of the
    layer called ``layer`` (a ReLU, so the map is rectified), every other activation of
    the layer set to zero, projected back to the pixels of the input.

    captum's ``NeuronDeconvolution`` does the projection (unpooling through the recorded
    max locations, rectifying at every ReLU, filtering with the transposed convs). The
    selected neuron is half the square of the channel's maximum, whose gradient is that
    maximum at its position and zero elsewhere: the deconvnet's starting signal (a dead
    channel projects to zero).
    """

    def __init__(self, model: nn.Module, layer: str) -> None:
        self.model = model
        self.layer = layer
        self._module = hooks.layer(model, layer)

    def attribute(self, inputs: torch.Tensor, target) -> torch.Tensor:
        """The projection of channel ``target[i]`` for ``inputs[i]`` (one channel per
        input), a map shaped like ``inputs`` on the CPU; runs on the model's device."""
        channels = torch.as_tensor(target, dtype=torch.long).view(-1)
        if len(channels) != len(inputs):
            raise ValueError(f"target: expected one channel per input ({len(inputs)}), "
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


# --- Per-unit class relevance (Islam and Tushar, chapter 2): conductance of every unit ---

@dataclass
class LayerMaps:
    """Per layer (by name), the N x U x h x w maps of every unit of the layer."""

    maps: dict[str, torch.Tensor]

    def __getitem__(self, layer: str) -> torch.Tensor:
        return self.maps[layer]


class UnitConductance:
    """Integrated Gradients of a class output, attributed to every unit of several layers
    along the input path: each unit's conductance (Dhamdhere et al., ICLR 2019) at every
    spatial position of its map: Islam and Tushar's per-unit map ``G_{i,c}(x)`` (chapter 2).

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
            hooks.layer(model, name)
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's outputs as the attribution sees them (softmax or logits)."""
        logits = self.model(x)
        return logits.softmax(1) if self.output == "probability" else logits

    def attribute(self, inputs: torch.Tensor, target, baselines: torch.Tensor | None = None,
                  n_steps: int = 32, internal_batch_size: int | None = None) -> LayerMaps:
        """Per layer, the N x U x h x w conductance maps of every unit for ``target`` (a
        class index or one per input); baselines default to black (zeros). Runs on the
        model's device, ``internal_batch_size`` inputs at a time (default: all); the maps
        come back on the host."""
        if n_steps < 1:
            raise ValueError(f"n_steps: expected >= 1, got {n_steps}")
        target = torch.as_tensor(target, dtype=torch.long).expand(len(inputs))
        baselines = torch.zeros_like(inputs) if baselines is None else baselines.expand_as(inputs)
        maps = self._maps(inputs, target, baselines, n_steps, internal_batch_size)
        return LayerMaps({name: to_host(m) for name, m in maps.items()})

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


@dataclass
class Relevance:
    """Islam and Tushar's ``R(i, c)`` (chapter 2) per layer (by name): a vector of U
    relevances for one class (``UnitRelevance``), or units x classes (``ClassRelevance``)."""

    scores: dict[str, torch.Tensor]

    def __getitem__(self, layer: str) -> torch.Tensor:
        return self.scores[layer]


class UnitRelevance:
    """Islam and Tushar's eq. (3) (chapter 2), ``R(i, c)`` for every unit i of the named
    layers: the mean over the inputs (images of class c) of the sum over pixels of
    ``masks * bilinearUpsample(|G_{i,c}(x)|)``, with ``G`` the ``UnitConductance`` map
    (``output`` as there).

    The sum runs over input pixels, so a layer whose map is s times smaller per side has
    its units' relevances scaled by about s^2 against a full-size layer: compare units
    within a layer, or divide by ``upsampling_area`` to compare layers."""

    def __init__(self, model: nn.Module, layers: list[str], output: str = "probability") -> None:
        self.model = model
        self.layers = list(layers)
        self._conductance = UnitConductance(model, self.layers, output)

    def attribute(self, inputs: torch.Tensor, target, masks: torch.Tensor, n_steps: int = 32,
                  internal_batch_size: int = 16) -> Relevance:
        """Per layer, the U relevances (on the host) for ``target`` (the class c, or one
        per input) with ``masks`` (N x 1 x H x W), the object masks at input resolution;
        ``internal_batch_size`` inputs at a time."""
        if masks.shape[0] != len(inputs) or masks.shape[-2:] != inputs.shape[-2:]:
            raise ValueError(f"masks: expected {len(inputs)} x 1 x {tuple(inputs.shape[-2:])}, "
                             f"got {tuple(masks.shape)}")
        target = torch.as_tensor(target, dtype=torch.long).expand(len(inputs))
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
        return Relevance({name: to_host(totals[name] / len(inputs)) for name in self.layers})


def upsampling_area(map_size: tuple[int, int], input_size: tuple[int, int]) -> float:
    """Input pixels per map position: the factor by which eq. (3)'s sum over upsampled
    pixels inflates a layer's relevance (divide by it to compare layers per map pixel)."""
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


class ClassRelevance:
    """``R(i, c)`` (``UnitRelevance``, Islam and Tushar, chapter 2) for every unit of the
    named layers and every class of a data set: per layer a units x classes tensor."""

    def __init__(self, model: nn.Module, layers: list[str], output: str = "probability") -> None:
        self.model = model
        self.layers = list(layers)
        self.output = output
        self._relevance = UnitRelevance(model, self.layers, output)

    def attribute(self, data: ImageSet, per_class: int = 32, n_steps: int = 32, seed: int = 0,
                  masks: torch.Tensor | None = None) -> Relevance:
        """From ``per_class`` images of each class of ``data`` (chosen with ``seed``),
        masked by ``masks`` (N x 1 x H x W, one object mask per image of ``data``, e.g.
        Broden's annotation of the class's object), else by their foreground (objects on
        black), else by the whole image. Cached by model, layers, data, masks and
        settings."""
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
                    mask = torch.ones_like(x[:, :1], dtype=torch.bool)
                r = self._relevance.attribute(x, c, mask, n_steps)
                columns.append([r[name] for name in layers])
            return {"relevance": [torch.stack([col[j] for col in columns], 1)
                                  for j in range(len(layers))]}

        entry = cache.cached("class-relevance", parts, compute)
        return Relevance(dict(zip(layers, entry["relevance"])))


ROUNDINGS = ("share", "ceil")


def unit_quotas(sizes: dict[str, int], fraction: float, rounding: str = "share") -> dict[str, int]:
    """How many units of each layer (``sizes``: layer -> units) ``fraction`` switches off.

    ``"share"``: ``round(fraction * all units)`` in total, split over the layers in
    proportion to their sizes by largest remainder (ties to the earlier layer), so every
    network loses the same share of its units, to one unit; a narrow layer may lose none.
    ``"ceil"``: ``ceil(fraction * U)`` in every layer, at least one unit per layer (then
    a network of many narrow layers loses a larger share: 2.2 % for "1 %" of a small
    ResNet18)."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction: expected a value in [0, 1], got {fraction}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding: expected one of {ROUNDINGS}, got {rounding!r}")
    if rounding == "ceil":
        return {name: math.ceil(fraction * u) for name, u in sizes.items()}
    exact = {name: fraction * u for name, u in sizes.items()}
    quotas = {name: math.floor(x) for name, x in exact.items()}
    left = round(fraction * sum(sizes.values())) - sum(quotas.values())
    order = sorted(exact, key=lambda name: -(exact[name] - quotas[name]))  # stable: earlier first
    for name in order[:max(left, 0)]:
        quotas[name] += 1
    return quotas


ENDS = ("top", "bottom", "random")


def ranked_units(scores: torch.Tensor, count: int, end: str = "top",
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``count`` units with the highest (``end="top"``) or lowest (``"bottom"``) scores,
    ties broken by unit index, or ``count`` units drawn at random (``"random"``, from
    ``generator``: the control of the same size); sorted."""
    if not 0 <= count <= len(scores):
        raise ValueError(f"count: expected 0..{len(scores)}, got {count}")
    if end not in ENDS:
        raise ValueError(f"end: expected one of {ENDS}, got {end!r}")
    if end == "random":
        order = torch.randperm(len(scores), generator=generator)
    else:
        order = torch.argsort(scores, descending=end == "top", stable=True)
    return order[:count].sort().values


@dataclass
class AblationResult:
    """``table``: one row per class and setting (``end`` "none" is the intact network;
    ``draw`` numbers the random selections); ``correct``: per row, which images of the
    data the network got right (rows x images, aligned with ``table``); ``labels``."""

    table: pd.DataFrame
    correct: torch.Tensor
    labels: torch.Tensor

    def drops(self, end: str, fraction: float, reference: str = "none") -> np.ndarray:
        """Images x classes: the loss of correctness on each image (1 - 0 when the
        ablation ranked for class c breaks it) from the ``reference`` setting to ``end``
        at ``fraction`` (random selections averaged over draws)."""
        def correct_of(which: str) -> np.ndarray:
            t = self.table
            rows = t[t.end == which] if which == "none" else t[(t.end == which)
                                                              & (t.fraction == fraction)]
            columns = [self.correct[rows.index[rows["class"] == c]].float().mean(0)
                       for c in t["class"].unique()]
            return torch.stack(columns, 1).numpy()
        return correct_of(reference) - correct_of(end)


def _class_means(drops: np.ndarray, labels) -> np.ndarray:
    """Classes x ablations: the mean drop on the images of class k for the ablation
    ranked for class c (NaN for a class without images)."""
    labels = np.asarray(labels)
    onehot = (labels[:, None] == np.arange(drops.shape[1])).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return onehot.T @ np.nan_to_num(drops) / onehot.sum(0)[:, None]


def class_drop(drops: np.ndarray, labels) -> float:
    """Mean over classes c of the mean drop on the images of c for the ablation ranked for
    c (``drops``: images x classes, as ``AblationResult.drops``)."""
    return float(np.nanmean(np.diag(_class_means(drops, labels))))


def other_drop(drops: np.ndarray, labels) -> float:
    """Mean over classes c of the mean per-class drop on the other classes' images."""
    means = _class_means(drops, labels)
    off = ~np.eye(len(means), dtype=bool)
    return float(np.nanmean([np.nanmean(means[off[:, c], c]) for c in range(means.shape[1])]))


def relevance_ablation(model: nn.Module, layers: list[str], data: ImageSet, relevance: Relevance,
                       fractions=(0.01, 0.02, 0.03), classes=None, ends=("top", "bottom"),
                       sites: dict[str, str] | None = None, rounding: str = "share",
                       random_draws: int = 1, seed: int = 0) -> AblationResult:
    """Islam and Tushar's ablation (chapter 2): for each class c, switch off the top or bottom
    ``fraction`` of the units of ``layers`` at once (``unit_quotas``: how ``rounding`` turns a
    fraction into units), ranked by column c of ``relevance`` (units x classes per layer, as
    ``ClassRelevance`` gives), or as many random units (``end="random"``, ``random_draws``
    selections from ``seed``), and record which images of ``data`` the network still
    classifies right.

    ``sites[layer]`` names the module whose output channels are switched off for the
    units of ``layer`` (default: the layer itself). For a residual block's output the
    site is the block's own conv branch before the addition (``dissection.unit_sites``),
    so the skip path stays on. Cached by model, rankings, data and settings."""
    classes = list(range(data.num_classes)) if classes is None else list(classes)
    unknown = set(ends) - set(ENDS)
    if unknown:
        raise ValueError(f"ends: expected among {ENDS}, got {sorted(unknown)}")
    if random_draws < 1:
        raise ValueError(f"random_draws: expected >= 1, got {random_draws}")
    missing = [name for name in layers if name not in relevance.scores]
    if missing:
        raise ValueError(f"relevance: no scores for layers {missing}")
    ranking = {name: relevance[name] for name in layers}
    sites = {name: (sites or {}).get(name, name) for name in ranking}
    for site in sites.values():
        hooks.layer(model, site)
    sizes = {name: r.shape[0] for name, r in ranking.items()}
    quotas = {f: unit_quotas(sizes, f, rounding) for f in fractions}
    parts = {"model": model, "relevance": ranking, "data": data, "fractions": list(fractions),
             "classes": classes, "ends": list(ends), "sites": sites, "rounding": rounding,
             "random_draws": random_draws, "seed": seed}

    def correct_with(channels: dict[str, torch.Tensor]) -> torch.Tensor:
        with hooks.Ablation(model, {sites[name]: idx for name, idx in channels.items()}):
            return predicted_labels(predict(model, data)) == data.labels

    def compute() -> dict:
        generator = torch.Generator().manual_seed(seed)
        intact = correct_with({})
        seen: dict[tuple, torch.Tensor] = {}
        rows, correct = [], []
        settings = [(c, e, f, d) for c in classes for e in ends for f in fractions
                    for d in range(random_draws if e == "random" else 1)]
        for c, end, fraction, draw in bar(settings, desc="ablation"):
            channels = {name: ranked_units(r[:, c], quotas[fraction][name], end, generator)
                        for name, r in ranking.items()}
            key = tuple(tuple(v.tolist()) for v in channels.values())
            if key not in seen:
                seen[key] = correct_with(channels)
            rows.append([c, fraction, ENDS.index(end), draw,
                         sum(len(v) for v in channels.values())])
            correct.append(seen[key])
        return {"intact": intact, "rows": torch.tensor(rows, dtype=torch.float64),
                "correct": torch.stack(correct) if correct else intact[:0]}

    def split(right: torch.Tensor, c: int) -> dict[str, float]:
        return _accuracy_split(accuracy_by_class(right, data.labels, data.classes), c)

    entry = cache.cached("relevance-ablation", parts, compute)
    names = data.classes
    records, correct = [], []
    total = sum(sizes.values())
    for c in classes:
        records.append({"class": names[c], "end": "none", "fraction": 0.0, "draw": 0,
                        "units": 0, "share": 0.0, **split(entry["intact"], c)})
        correct.append(entry["intact"])
    for (c, fraction, end, draw, units), right in zip(entry["rows"].tolist(), entry["correct"]):
        records.append({"class": names[int(c)], "end": ENDS[int(end)], "fraction": fraction,
                        "draw": int(draw), "units": int(units), "share": units / total,
                        **split(right, int(c))})
        correct.append(right)
    return AblationResult(pd.DataFrame(records), torch.stack(correct), data.labels.clone())


def _accuracy_split(per_class: pd.Series, c: int) -> dict[str, float]:
    """Accuracy on class ``c`` and the mean accuracy on the other classes (NaN if one of
    them has no images). The mean is taken in float32, the precision in which the
    per-class shares are computed."""
    accuracy = torch.tensor(per_class.to_numpy(), dtype=torch.float32)
    others = torch.cat([accuracy[:c], accuracy[c + 1:]])
    return {"accuracy_class": float(accuracy[c]), "accuracy_others": float(others.mean())}
