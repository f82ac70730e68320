"""Important neurons by input resampling (Lengerich et al. 2017, chapter 5).

A test image is copied ``n_samples`` times, each copy with every pixel multiplied by
``1 + N(0, std)``; one batched forward pass records every conv channel ("neuron") on all
copies, and every neuron of every layer is scored at once:

- ``correlation``: |Pearson r| between the neuron's activation and the network output
  over the copies, at every position of its map, averaged over the positions where the
  activation varies (Eq. 2, aggregated as the public code does);
- ``precision``: the reciprocal of the neuron's variance over the copies, averaged over
  positions, for neurons whose activation magnitude reaches the threshold lambda (Eq. 3;
  see ``InputResampling`` for why the mean sits inside the reciprocal);
- APPLE's four single-image baselines on the unperturbed image: ``activation_sum`` and
  ``activation_variance`` of the map, ``weight_sum`` and ``weight_variance`` of the
  neuron's outgoing weights (``w^{l+1}``);
- ``random``: a seeded random score, the control that any metric should beat.

A neuron's activation z is, as in the paper's Eq. 1, the input of the nonlinearity (the
conv's output after batch norm, before the ReLU); ``after_relu=True`` reads the ReLU's
output instead, as the public code does. Every metric chooses among the same neurons of
an image (alive on it, so that it has a patch, and above lambda), so all metrics select
the same number. ``NeuronScores.top`` keeps the ``k`` best of each layer as boolean masks,
``metrics.jaccard`` compares two selections and ``chance_jaccard`` gives the overlap of two
random ones. ``switch_off_effects`` measures how much the output moves when a selection is
switched off. ``selection_boxes`` turns selected neurons into image patches with a
deconvnet (``attribution.Deconvnet``); ``NeuronSelection`` does all of it for a model and
images (cached) and returns a ``Selection``, read by metric name; ``patches`` cuts the
patches out, ``patch_accuracy`` trains the paper's secondary classifier on them,
``patch_table`` counts object pixels in each and the chance that a box of its size placed
at random would hit the object. ``cluttered`` builds the localisation test's images: one
object at a random place on a larger canvas with clutter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.stats import hypergeom
from torch import nn
from torch.utils.data import TensorDataset
from torchvision.ops import roi_align

from . import attribution, cache, devices, hooks, train
from .data import ImageSet, foreground
from .models import VGG

__all__ = ["METRICS", "CONSTANT_TOLERANCE", "perturb", "activation_input",
           "outgoing_weights", "output_log_odds", "NeuronScores", "top_mask", "chance_jaccard",
           "correlation_scores", "precision_scores", "InputResampling", "zero_variance_shares",
           "discarded_shares",
           "conv_names", "conv_blocks", "selection_boxes", "Selection", "NeuronSelection",
           "switch_off_effects", "patches", "patch_table", "box_chance", "PatchAccuracy",
           "patch_accuracy", "cluttered"]

METRICS = ("correlation", "precision", "activation_sum", "activation_variance",
           "weight_sum", "weight_variance", "random")
# A position whose activation varies over the copies by less than this share of its own
# root-mean-square (std / rms < 1e-5) counts as constant: float rounding must not make up
# a correlation.
CONSTANT_TOLERANCE = 1e-10


def perturb(inputs: torch.Tensor, n_samples: int = 50, std: float = 0.1,
            index_scaled: bool = False, seed: int = 0, centre: torch.Tensor | None = None
            ) -> torch.Tensor:
    """``n_samples`` noisy copies of each image (N x C x H x W -> N x n_samples x C x H x W).

    Every pixel is multiplied by ``1 + N(0, std)``, drawn afresh for every copy (the
    paper's text). ``index_scaled=True`` is the public code's variant instead: copy ``i``
    (from 0) is multiplied by ``1 + i * N(0, std)``, so copy 0 is the image itself and
    the last copies are mostly noise. ``centre`` (one value per channel) multiplies the
    pixels' distance from it instead, ``centre + (pixel - centre) * (1 + noise)``: the public
    code perturbs mean-subtracted pixels, so that a black pixel varies too. The noise is
    drawn on the CPU (the same on every device) and moved to the inputs' device.
    """
    if inputs.ndim != 4:
        raise ValueError(f"inputs: expected N x C x H x W, got shape {tuple(inputs.shape)}")
    if n_samples < 2:
        raise ValueError(f"n_samples: expected >= 2 (a correlation needs two copies), "
                         f"got {n_samples}")
    if std < 0:
        raise ValueError(f"std: expected >= 0, got {std}")
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(inputs), n_samples, *inputs.shape[1:]), generator=g) * std
    if index_scaled:
        noise = noise * torch.arange(n_samples, dtype=noise.dtype).view(1, -1, 1, 1, 1)
    if centre is None:
        return inputs.unsqueeze(1) * (1 + noise.to(inputs.device))
    centre = torch.as_tensor(centre, dtype=inputs.dtype, device=inputs.device)
    if centre.shape != (inputs.shape[1],):
        raise ValueError(f"centre: expected one value per channel ({inputs.shape[1]}), "
                         f"got shape {tuple(centre.shape)}")
    centre = centre.view(1, 1, -1, 1, 1)
    return centre + (inputs.unsqueeze(1) - centre) * (1 + noise.to(inputs.device))


def activation_input(model: nn.Module, conv: str) -> str:
    """The module whose output the activation after ``conv`` (``hooks.activation_after``)
    reads: Eq. 1's z (the batch norm after the conv, or the conv itself)."""
    names = [n for n, _ in model.named_modules()]
    before = names[names.index(hooks.activation_after(model, conv)) - 1]
    if not isinstance(hooks.layer(model, before), (nn.Conv2d, nn.BatchNorm2d)):
        raise ValueError(  # noqa: TRY004  (a bad `layers` value, not a bad argument type)
            f"layers: the activation after {conv!r} does not directly follow a conv or "
            f"batch norm ({before!r}); use after_relu=True")
    return before


def outgoing_weights(model: nn.Module, conv: str) -> torch.Tensor:
    """``w^{l+1}`` of every output channel of ``conv`` (channels x fan-out): the next conv's
    weights that read the channel, or, after the last conv, the first linear layer's
    columns for it (a flattened map or a pooled value per channel)."""
    modules = list(model.named_modules())
    names = [n for n, _ in modules]
    channels = hooks.layer(model, conv).out_channels
    for _, module in modules[names.index(conv) + 1:]:
        if isinstance(module, nn.Conv2d):
            return module.weight.detach().transpose(0, 1).reshape(channels, -1)
        if isinstance(module, nn.Linear) and module.in_features % channels == 0:
            w = module.weight.detach().view(module.out_features, channels, -1)
            return w.transpose(0, 1).reshape(channels, -1)
    raise ValueError(f"layers: no conv or linear layer reads the {channels} channels of "
                     f"{conv!r}")


def output_log_odds(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) of class ``target`` (per row): the logit difference for two classes;
    for a single (sigmoid) logit, the logit itself for target 1 and minus it for 0."""
    if logits.shape[1] == 1:
        return logits[:, 0] * (2 * target - 1)
    own = logits.gather(1, target.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, target.view(-1, 1), float("-inf")).logsumexp(1)
    return own - others


@dataclass
class NeuronScores:
    """Scores of every neuron: ``scores[layer]`` is N images x len(metrics) x channels,
    NaN where a metric is undefined (a constant neuron's correlation) or the neuron is
    discarded (precision below lambda). ``eligible[layer]`` (N x channels) marks the
    neurons every metric chooses from: alive on the image (a patch exists) and above
    lambda."""

    layers: list[str]
    scores: dict[str, torch.Tensor]
    eligible: dict[str, torch.Tensor] | None = None
    metrics: tuple[str, ...] = METRICS

    def __getitem__(self, layer: str) -> torch.Tensor:
        return self.scores[layer]

    def metric(self, name: str) -> dict[str, torch.Tensor]:
        """N x channels scores of metric ``name`` per layer."""
        i = _metric_index(name, self.metrics)
        return {layer: s[:, i] for layer, s in self.scores.items()}

    def top(self, k: int = 5) -> dict[str, torch.Tensor]:
        """Boolean masks (N x metrics x channels) of the ``k`` highest-scoring eligible
        neurons of every layer: every metric selects min(k, eligible) neurons."""
        if k < 1:
            raise ValueError(f"k: expected >= 1, got {k}")
        pools = self.eligible or {}
        return {layer: top_mask(s, k, None if layer not in pools else pools[layer].unsqueeze(1))
                for layer, s in self.scores.items()}


def _metric_index(name: str, metrics: Sequence[str] = METRICS) -> int:
    if name not in metrics:
        raise ValueError(f"metric: expected one of {list(metrics)}, got {name!r}")
    return list(metrics).index(name)


def top_mask(scores: torch.Tensor, k: int, eligible: torch.Tensor | None = None) -> torch.Tensor:
    """True at the ``k`` largest entries along the last dimension among the ``eligible``
    ones (default: the non-NaN ones); an eligible NaN ranks below every number, an
    ineligible entry is never selected, ties go to the lowest index."""
    if eligible is None:
        eligible = ~scores.isnan()
    big = torch.finfo(scores.dtype).max
    key = torch.nan_to_num(scores, nan=-big, posinf=big, neginf=-big)
    key = torch.where(eligible, key, float("-inf"))
    k = min(k, scores.shape[-1])
    # A stable descending sort makes ties deterministic (topk's order is unspecified).
    idx = key.sort(dim=-1, descending=True, stable=True).indices[..., :k]
    mask = torch.zeros_like(scores, dtype=torch.bool).scatter(-1, idx, True)
    return mask & eligible


def chance_jaccard(pool: torch.Tensor, k: int) -> torch.Tensor:
    """The expected Jaccard index of two independent uniformly random selections of
    min(k, n) neurons out of ``pool`` = n (elementwise; NaN where n = 0): the overlap
    that chance alone gives. The intersection is hypergeometric."""
    out = torch.full(pool.shape, float("nan"))
    for n in pool.unique().tolist():
        m = min(k, int(n))
        if m == 0:
            continue
        i = np.arange(m + 1)
        out[pool == n] = float((hypergeom(int(n), m, m).pmf(i) * i / (2 * m - i)).sum())
    return out


def correlation_scores(acts: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """Mean over positions of |Pearson r| between activations (N x S x C x P) and outputs
    (N x S), over the S copies; positions (or outputs) that do not vary are left out,
    and a neuron that never varies gets NaN."""
    a = acts - acts.mean(1, keepdim=True)
    o = output - output.mean(1, keepdim=True)
    cov = torch.einsum("nscp,ns->ncp", a, o)
    var_a = a.square().sum(1)
    var_o = o.square().sum(1).view(-1, 1, 1)
    varying = (var_a > CONSTANT_TOLERANCE * acts.square().sum(1)) & (var_o > 0)
    r = cov / (var_a * var_o).sqrt()
    return torch.where(varying, r.abs(), torch.nan).nanmean(-1)


def _above_threshold(acts: torch.Tensor, threshold: float, relative: bool) -> torch.Tensor:
    """N x C: neurons whose activation magnitude (mean |z| over copies and positions of
    N x S x C x P activations) reaches lambda: ``threshold`` itself, or, if ``relative``,
    ``threshold`` times the mean magnitude of the layer's neurons on that image."""
    magnitude = acts.abs().mean((1, 3))
    floor = threshold * magnitude.mean(1, keepdim=True) if relative else threshold
    return magnitude >= floor


def precision_scores(acts: torch.Tensor, threshold: float, relative: bool = True) -> torch.Tensor:
    """1 / (mean over positions of the variance over the copies) of activations
    (N x S x C x P); NaN for neurons below lambda (see ``_above_threshold``)."""
    precision = 1.0 / acts.var(1, unbiased=False).mean(-1)
    return torch.where(_above_threshold(acts, threshold, relative), precision, torch.nan)


class InputResampling:
    """Score every channel of the given conv layers on noisy copies of each image.

    ``InputResampling(model, layers).attribute(inputs, target=None)`` returns
    ``NeuronScores``; ``target`` is the class whose log-odds is the network output ``o``
    (default: the class predicted for the unperturbed image; for two classes |r| is the
    same for either class). Runs on the model's device; scores come back on the CPU.

    ``after_relu=False`` (default) reads Eq. 1's z, the ReLU's input; ``True`` the ReLU's
    output (the public code). Equation 3 averages the reciprocal variance over positions.
    Taken literally it is infinite for any neuron with one position that is the same on
    all copies (a ReLU map's zeros; z over a black background), so, like the public code,
    the variance is averaged first and the reciprocal taken after (``precision_scores``).
    lambda is ``threshold`` times the layer's mean activation magnitude on the image
    (``relative_threshold=True``, default) or ``threshold`` itself (the public code's
    0.1, meant for activations of 0-255 inputs without batch norm); ``discarded_shares``
    counts the neurons it discards. ``centre`` perturbs the pixels' distance from a
    per-channel centre (``perturb``).
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], n_samples: int = 50,
                 std: float = 0.1, index_scaled: bool = False, threshold: float = 0.1,
                 relative_threshold: bool = True, after_relu: bool = False, seed: int = 0,
                 centre: torch.Tensor | None = None, batch_size: int = 1024) -> None:
        if not layers:
            raise ValueError("layers: expected at least one conv layer name")
        if threshold < 0:
            raise ValueError(f"threshold: expected >= 0, got {threshold}")
        self.model = model
        self.layers = list(layers)
        relus = [hooks.activation_after(model, name) for name in self.layers]
        self.sources = relus if after_relu else [activation_input(model, n) for n in layers]
        # An in-place ReLU would overwrite a recorded pre-activation: record a copy.
        self.copy = not after_relu and any(getattr(hooks.layer(model, r), "inplace", False)
                                           for r in relus)
        self.n_samples, self.std, self.index_scaled = n_samples, std, index_scaled
        self.threshold, self.relative = threshold, relative_threshold
        self.seed, self.centre, self.batch_size = seed, centre, batch_size

    def _chunks(self, inputs: torch.Tensor):
        """Each input and its ``n_samples`` copies through the model in chunks of about
        ``batch_size`` inputs. Yields, per chunk of inputs, its first index, the logits
        (N' x (1 + S) x classes) and every layer's z (N' x (1 + S) x C x positions), the
        unperturbed input first (its single-image baselines are scored on it), on the
        model's device. Call it under ``torch.no_grad()``."""
        copies = perturb(inputs, self.n_samples, self.std, self.index_scaled, self.seed,
                         self.centre)
        batch = torch.cat([inputs.unsqueeze(1), copies], 1)
        s = batch.shape[1]
        self.model.eval()
        per_chunk = max(1, self.batch_size // s)
        with hooks.Recorder(self.model, self.sources, reduce=torch.clone if self.copy else None) \
                as rec:
            for start in range(0, len(batch), per_chunk):
                chunk = devices.to_model(self.model, batch[start:start + per_chunk])
                logits = self.model(chunk.flatten(0, 1)).view(len(chunk), s, -1)
                yield start, logits, {
                    layer: rec.outputs[src].view(len(chunk), s, *rec.outputs[src].shape[1:])
                    .flatten(3) for layer, src in zip(self.layers, self.sources)}

    @torch.no_grad()
    def attribute(self, inputs: torch.Tensor, target: torch.Tensor | int | None = None
                  ) -> NeuronScores:
        n = len(inputs)
        self.weights = {name: devices.to_host(outgoing_weights(self.model, name))
                        for name in self.layers}
        parts = {layer: [] for layer in self.layers}
        pools = {layer: [] for layer in self.layers}
        for start, logits, acts in self._chunks(inputs):
            chunk, s = logits.shape[:2]
            if target is None:
                t = train.predicted_labels(logits[:, 0])
            else:
                t = torch.as_tensor(target).expand(n)[start:start + chunk]
                t = devices.to_model(self.model, t)
            output = output_log_odds(logits.flatten(0, 1), t.repeat_interleave(s)).view(chunk, s)
            for layer in self.layers:
                scores, eligible = self._layer_scores(layer, acts[layer], output[:, 1:], start)
                parts[layer].append(scores)
                pools[layer].append(eligible)
        return NeuronScores(self.layers, {layer: torch.cat(p) for layer, p in parts.items()},
                            {layer: torch.cat(p) for layer, p in pools.items()})

    def _layer_scores(self, layer: str, acts: torch.Tensor, output: torch.Tensor, start: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """N x metrics x channels scores of one layer and its N x channels eligible
        neurons; ``acts`` is N x (1 + S) x C x P with the unperturbed image first,
        ``output`` the N x S outputs of the copies."""
        original, copies = acts[:, 0], acts[:, 1:]
        n, c = original.shape[:2]
        w = self.weights[layer]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.layers.index(layer))
        random = torch.rand((start + n, c), generator=g)[start:]
        measured = devices.to_host(torch.stack([
            correlation_scores(copies, output),
            precision_scores(copies, self.threshold, self.relative),
            original.sum(-1),
            original.var(-1, unbiased=False),
        ], 1))
        scores = torch.cat([measured, torch.stack([w.sum(1).expand(n, c),
                                                   w.var(1, unbiased=False).expand(n, c),
                                                   random], 1)], 1)
        alive = original.amax(-1) > 0  # the ReLU passes something: the deconvnet has a patch
        eligible = alive & _above_threshold(copies, self.threshold, self.relative)
        return scores, devices.to_host(eligible)

@torch.no_grad()
def zero_variance_shares(model: nn.Module, layers: Sequence[str], inputs: torch.Tensor,
                         **resampling) -> dict[str, float]:
    """Per layer, the share of neurons above lambda (over all ``inputs``) that have a
    position that is the same on every copy: where Eq. 3, which averages the reciprocal
    variance over positions, is infinite. ``resampling`` goes to ``InputResampling``."""
    method = InputResampling(model, layers, **resampling)
    active = dict.fromkeys(method.layers, 0)
    constant = dict.fromkeys(method.layers, 0)
    for _, _, acts in method._chunks(inputs):
        for layer in method.layers:
            copies = acts[layer][:, 1:]
            passing = _above_threshold(copies, method.threshold, method.relative)
            active[layer] += passing.sum().item()
            constant[layer] += ((copies.var(1) == 0).any(-1) & passing).sum().item()
    return {name: constant[name] / max(1, active[name]) for name in method.layers}


@torch.no_grad()
def discarded_shares(model: nn.Module, layers: Sequence[str], inputs: torch.Tensor,
                     **resampling) -> dict[str, float]:
    """Per layer, the share of the neurons alive on an input (their ReLU passes something)
    that lambda discards, over all ``inputs``: how much of the pool the threshold removes.
    ``resampling`` goes to ``InputResampling``."""
    method = InputResampling(model, layers, **resampling)
    alive = dict.fromkeys(method.layers, 0)
    dropped = dict.fromkeys(method.layers, 0)
    for _, _, acts in method._chunks(inputs):
        for layer in method.layers:
            on = acts[layer][:, 0].amax(-1) > 0
            below = ~_above_threshold(acts[layer][:, 1:], method.threshold, method.relative)
            alive[layer] += on.sum().item()
            dropped[layer] += (on & below).sum().item()
    return {name: dropped[name] / max(1, alive[name]) for name in method.layers}


def conv_names(model: nn.Module, indices: Sequence[int]) -> list[str]:
    """The conv layers at 1-based positions ``indices`` (the paper's "layers 3 to 9")."""
    convs = hooks.conv_layers(model)
    bad = [i for i in indices if not 1 <= i <= len(convs)]
    if bad or not indices:
        raise ValueError(f"layers: expected conv positions in 1..{len(convs)}, got {list(indices)}")
    return [convs[i - 1] for i in indices]


def conv_blocks(model: nn.Module, convs: Sequence[str]) -> list[int]:
    """The block (1-based: 1 + the number of max-pools before it) of each conv, the
    layer groups of the paper's Figure 4 for a VGG."""
    blocks, block = {}, 1
    for name in hooks.layer_names(model, (nn.Conv2d, nn.MaxPool2d)):
        if isinstance(hooks.layer(model, name), nn.MaxPool2d):
            block += 1
        else:
            blocks[name] = block
    return [blocks[c] for c in convs]


def _leading_part(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The part of ``model`` that computes layer ``name``, and the layer's name in it: for a
    VGG-style ``features`` sequence, the modules up to the layer (sharing their weights),
    so a deconvnet does not run the layers above it; otherwise the model itself."""
    features = getattr(model, "features", None)
    prefix = "features."
    if isinstance(features, nn.Sequential) and name.startswith(prefix) \
            and name[len(prefix):].isdigit():
        i = int(name[len(prefix):])
        return features[:i + 1], str(i)
    return model, name


def selection_boxes(model: nn.Module, masks: dict[str, torch.Tensor], inputs: torch.Tensor,
                    support_fraction: float = 0.1, batch_size: int = 256
                    ) -> dict[str, torch.Tensor]:
    """Patches of the selected neurons: for every layer, N x channels x 4 boxes (top,
    bottom, left, right; -1 for neurons no metric selected, or dead on that input) around
    the deconvnet projection of each neuron selected by any metric in ``masks`` (layer
    -> N x metrics x channels). The deconvnet starts at the ReLU after each conv (captum
    rectifies at ``nn.ReLU`` modules only)."""
    boxes = {}
    for layer, mask in masks.items():
        pairs = mask.any(1).nonzero()
        out = torch.full((*mask.shape[::2], 4), -1, dtype=torch.long)
        net, relu = _leading_part(model, hooks.activation_after(model, layer, kinds=(nn.ReLU,)))
        deconvnet = attribution.Deconvnet(net, relu)
        for chunk in pairs.split(batch_size):
            maps = deconvnet.attribute(inputs[chunk[:, 0]], target=chunk[:, 1])
            out[chunk[:, 0], chunk[:, 1]] = attribution.support_boxes(maps, support_fraction)
        boxes[layer] = out
    return boxes


@dataclass
class Selection:
    """What ``NeuronSelection`` found in N inputs, per conv layer: ``scores`` (N x metrics x
    channels, as in ``NeuronScores``), ``eligible`` (N x channels: the pool every metric
    chooses from), ``masks`` (N x metrics x channels: the ``top_k`` of each metric) and
    ``boxes`` (N x channels x 4 deconvnet patches, -1 where none was computed; None when
    no boxes were asked for). Read one metric by name with ``scores_of`` / ``mask_of``."""

    scores: dict[str, torch.Tensor]
    eligible: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    boxes: dict[str, torch.Tensor] | None = None
    metrics: tuple[str, ...] = METRICS

    @property
    def layers(self) -> list[str]:
        return list(self.scores)

    def scores_of(self, metric: str, layer: str) -> torch.Tensor:
        """N x channels scores of ``metric`` in ``layer``."""
        return self.scores[layer][:, _metric_index(metric, self.metrics)]

    def mask_of(self, metric: str, layer: str) -> torch.Tensor:
        """N x channels: the neurons of ``layer`` that ``metric`` selected."""
        return self.masks[layer][:, _metric_index(metric, self.metrics)]


class NeuronSelection:
    """Lengerich et al.'s important neurons and their patches (chapter 5), for a model and
    its conv ``layers``: every neuron scored by ``InputResampling``, the ``top_k`` of each
    layer and metric selected (``NeuronScores.top``) and, for the neurons of the metrics in
    ``boxes``, the deconvnet patch (``selection_boxes``, with ``support_fraction``).

    ``NeuronSelection(model, layers).attribute(inputs, target=None)`` returns a
    ``Selection``, cached by model weights, inputs, target and every setting. ``boxes``:
    True for the neurons of every metric, a list of metric names for theirs only (the
    deconvnet is the expensive part), False for none. ``resampling`` goes to
    ``InputResampling`` (n_samples, std, index_scaled, centre, threshold, relative_threshold,
    after_relu, seed, batch_size).
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], top_k: int = 5,
                 support_fraction: float = 0.1, boxes: bool | Sequence[str] = True,
                 **resampling) -> None:
        if top_k < 1:
            raise ValueError(f"top_k: expected >= 1, got {top_k}")
        self.boxed = list(METRICS) if boxes is True else list(boxes or [])
        self.which = [_metric_index(m) for m in self.boxed]
        self.method = InputResampling(model, layers, **resampling)
        self.model, self.layers, self.top_k = model, list(layers), top_k
        self.support_fraction, self.resampling = support_fraction, resampling

    def attribute(self, inputs: torch.Tensor, target: torch.Tensor | int | None = None
                  ) -> Selection:
        parts = {"model": self.model, "inputs": inputs, "target": target, "layers": self.layers,
                 "top_k": self.top_k, "boxed": self.boxed, "resampling": self.resampling,
                 "support_fraction": self.support_fraction if self.boxed else None}

        def compute() -> dict:
            scores = self.method.attribute(inputs, target)
            masks = scores.top(self.top_k)
            found = {"scores": scores.scores, "eligible": scores.eligible, "masks": masks}
            if self.boxed:
                found["boxes"] = selection_boxes(
                    self.model, {k: m[:, self.which] for k, m in masks.items()}, inputs,
                    self.support_fraction)
            return found

        return Selection(**cache.cached("resampling", parts, compute))


@torch.no_grad()
def switch_off_effects(model: nn.Module, masks: dict[str, torch.Tensor], inputs: torch.Tensor,
                       batch_size: int = 512) -> torch.Tensor:
    """N x metrics x layers: |change of the log-odds of the class predicted for each input|
    when the neurons that a metric selected in one layer (``masks``: conv layer -> N x
    metrics x channels) are switched off (the output of their activation,
    ``hooks.activation_after``, set to zero), one layer at a time. Tests whether a
    selection has "large influence over the network output"."""
    model.eval()
    x = devices.to_model(model, inputs)
    base_logits = model(x)
    target = train.predicted_labels(base_logits)
    base = output_log_odds(base_logits, target)
    out = []
    for layer, mask in masks.items():
        n, m, c = mask.shape
        keep = devices.to_model(model, (~mask).reshape(n * m, c).to(x.dtype))
        repeated, t = x.repeat_interleave(m, 0), target.repeat_interleave(m)
        module = hooks.layer(model, hooks.activation_after(model, layer))
        changed = []
        for start in range(0, n * m, batch_size):
            k = keep[start:start + batch_size, :, None, None]
            handle = module.register_forward_hook(lambda _m, _i, output, k=k: output * k)
            try:
                logits = model(repeated[start:start + batch_size])
            finally:
                handle.remove()
            changed.append(output_log_odds(logits, t[start:start + batch_size]))
        out.append((torch.cat(changed).view(n, m) - base.view(n, 1)).abs())
    return devices.to_host(torch.stack(out, -1))


def patches(masks: dict[str, torch.Tensor], boxes: dict[str, torch.Tensor], inputs: torch.Tensor,
            metric: str, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The patches of ``metric``'s selected neurons (``masks`` and ``boxes`` per layer, as in
    a ``Selection``), cut from ``inputs`` and resized to ``size`` x ``size`` (bilinear, by
    ``torchvision.ops.roi_align``), and the index of the input each came from. Neurons
    without a box (dead on the input) give no patch."""
    m = _metric_index(metric)
    rows = []
    for layer, mask in masks.items():
        picked = mask[:, m].nonzero()
        b = boxes[layer][picked[:, 0], picked[:, 1]]
        keep = b[:, 0] >= 0
        rows.append(torch.cat([picked[keep, :1], b[keep]], 1))
    rows = torch.cat(rows)
    # roi_align takes (image, x1, y1, x2, y2) in continuous pixel-edge coordinates.
    rois = rows[:, [0, 3, 1, 4, 2]].to(inputs.dtype)
    cut = roi_align(inputs, rois, output_size=size, spatial_scale=1.0, sampling_ratio=2,
                    aligned=True)
    return cut, rows[:, 0]


def _summed_area(objects: torch.Tensor) -> torch.Tensor:
    """N x (H + 1) x (W + 1) summed-area tables of N x 1 x H x W masks: any box's pixel
    count is four look-ups."""
    return nn.functional.pad(objects[:, 0].to(torch.long).cumsum(1).cumsum(2), (1, 0, 1, 0))


def box_chance(objects: torch.Tensor, image: torch.Tensor, height: torch.Tensor,
               width: torch.Tensor) -> torch.Tensor:
    """Per row: the probability that a ``height`` x ``width`` box placed uniformly at random
    inside image ``image[i]`` holds at least one pixel of its object mask (``objects``,
    N x 1 x H x W), the chance level of the paper's localisation test (NaN for an empty
    box)."""
    sat = _summed_area(objects)
    out = torch.full((len(image),), float("nan"))
    sizes, which = torch.stack([height, width], 1).unique(dim=0, return_inverse=True)
    for j, (h, w) in enumerate(sizes.tolist()):
        if h <= 0 or w <= 0:
            continue
        counts = sat[:, h:, w:] - sat[:, :-h, w:] - sat[:, h:, :-w] + sat[:, :-h, :-w]
        hit = (counts > 0).flatten(1).float().mean(1)
        rows = which == j
        out[rows] = hit[image[rows]]
    return out


def patch_table(masks: dict[str, torch.Tensor], boxes: dict[str, torch.Tensor],
                objects: torch.Tensor | None = None, metrics: Sequence[str] = METRICS):
    """One row per selected (image, layer, neuron, metric): the patch's box, its area and,
    given object masks (N x 1 x H x W), the number of object pixels inside it and the
    chance that a box of its size at a random place would hold one (``box_chance``)."""
    frames = []
    if objects is not None:
        sat = _summed_area(objects)
    for layer, mask in masks.items():
        picked = mask.nonzero()
        img, met, ch = picked.unbind(1)
        b = boxes[layer][img, ch]
        top, bottom, left, right = b.unbind(1)
        frame = {"image": img, "layer": [layer] * len(img),
                 "metric": [metrics[i] for i in met.tolist()], "neuron": ch, "top": top,
                 "bottom": bottom, "left": left, "right": right,
                 "area": ((bottom - top) * (right - left)).clamp(min=0)}
        if objects is not None:
            t, bo, le, r = (v.clamp(min=0) for v in (top, bottom, left, right))
            frame["object_pixels"] = (sat[img, bo, r] - sat[img, t, r] - sat[img, bo, le]
                                      + sat[img, t, le])
            frame["chance"] = box_chance(objects, img, bottom - top, right - left)
        frames.append(pd.DataFrame({k: v.numpy() if isinstance(v, torch.Tensor) else v
                                    for k, v in frame.items()}))
    table = pd.concat(frames, ignore_index=True)
    return table[table["top"] >= 0].reset_index(drop=True)


@dataclass
class PatchAccuracy:
    """The secondary classifier's accuracy over all test patches, and per image (the share
    of an image's patches classified right; NaN for training images and images without
    a patch), for paired comparisons between metrics over the same test images."""

    accuracy: float
    per_image: torch.Tensor


def patch_accuracy(masks: dict[str, torch.Tensor], boxes: dict[str, torch.Tensor],
                   inputs: torch.Tensor, target: torch.Tensor, train_images: torch.Tensor,
                   metric: str, size: int = 16, width: int = 64, epochs: int = 10, seed: int = 0,
                   precision: str = "fp32") -> PatchAccuracy:
    """The paper's secondary classifier: trained on the patches that ``metric`` selects in
    the inputs flagged by ``train_images`` (each patch labelled with its input's class in
    ``target``), tested on the patches of the other inputs. Three 3x3 conv layers of
    ``width`` channels with max-pooling in between (a ``VGG``), Adam in ``precision``
    (``train.TrainConfig``), cached by ``train.fit``; on the inputs' device."""
    cut, source = patches(masks, boxes, inputs, metric, size)
    is_train = train_images[source]
    if not is_train.any() or is_train.all():
        raise ValueError("train_images: the secondary classifier needs patches of training "
                         "and of test images")
    patch_labels = target[source]
    with train.seeded(seed):
        model = VGG((width, "M", width, "M", width), in_channels=inputs.shape[1],
                    num_classes=int(target.max()) + 1).to(inputs.device)
    config = train.TrainConfig(epochs=epochs, batch_size=64, lr=1e-3, seed=seed,
                               precision=precision)
    trained = train.fit(model, TensorDataset(cut[is_train], patch_labels[is_train]), config,
                        desc="patch classifier")
    test = TensorDataset(cut[~is_train], patch_labels[~is_train])
    right = (train.evaluate(trained.model, test).predictions == patch_labels[~is_train]).float()
    per_image = torch.full((len(inputs),), float("nan"))
    counts = torch.zeros(len(inputs)).index_add_(0, source[~is_train], torch.ones(len(right)))
    sums = torch.zeros(len(inputs)).index_add_(0, source[~is_train], right)
    has = counts > 0
    per_image[has] = sums[has] / counts[has]
    return PatchAccuracy(right.mean().item(), per_image)


def cluttered(data: ImageSet, canvas_size: int, n_clutter: int = 4, clutter_size: int = 8,
              seed: int = 0) -> tuple[ImageSet, torch.Tensor]:
    """The localisation test's images, as cluttered MNIST (Mnih et al. 2014): every image
    of ``data`` pasted at a uniformly random place on a black ``canvas_size`` square, over
    ``n_clutter`` pieces (``clutter_size`` squares cut at random from other images of the
    set) at random places; overlaps keep the brighter pixel. Returns the canvases (same
    labels and classes) and the object masks (N x 1 x S x S, bool): the pasted image's
    non-black pixels, or its whole square when the data has no black background."""
    n, c, h, w = data.images.shape
    if canvas_size < max(h, w):
        raise ValueError(f"canvas_size: expected >= the image size {max(h, w)}, got {canvas_size}")
    if not 1 <= clutter_size <= min(h, w):
        raise ValueError(f"clutter_size: expected 1..{min(h, w)}, got {clutter_size}")
    g = torch.Generator().manual_seed(seed)
    canvas = torch.zeros((n, c, canvas_size, canvas_size), dtype=torch.uint8)
    objects = torch.zeros((n, 1, canvas_size, canvas_size), dtype=torch.bool)
    span = canvas_size - clutter_size + 1
    source = torch.randint(0, n, (n, n_clutter), generator=g)
    cut = torch.randint(0, min(h, w) - clutter_size + 1, (n, n_clutter, 2), generator=g)
    place = torch.randint(0, span, (n, n_clutter, 2), generator=g)
    ty = torch.randint(0, canvas_size - h + 1, (n,), generator=g)
    tx = torch.randint(0, canvas_size - w + 1, (n,), generator=g)
    for i in range(n):
        for (s, (cy, cx), (py, px)) in zip(source[i].tolist(), cut[i].tolist(),
                                           place[i].tolist()):
            piece = data.images[s, :, cy:cy + clutter_size, cx:cx + clutter_size]
            region = canvas[i, :, py:py + clutter_size, px:px + clutter_size]
            torch.maximum(region, piece, out=region)
        y, x = ty[i].item(), tx[i].item()
        region = canvas[i, :, y:y + h, x:x + w]
        torch.maximum(region, data.images[i], out=region)
        objects[i, :, y:y + h, x:x + w] = (foreground(data.images[i:i + 1])[0]
                                           if data.black_background else True)
    return ImageSet(canvas, data.labels, data.classes, f"{data.name} on cluttered canvas",
                    black_background=False), objects
