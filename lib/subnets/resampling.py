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
the same number. ``NeuronScores.top`` keeps the ``k`` best of each layer as boolean masks
and ``chance_jaccard`` gives the overlap of two random selections; ``neuron_selection``
selects, compares and switches off the neurons, ``patches`` projects them to pixels.

Every result is read one way, ``result[layer]`` (``methods.LayerScores``): N inputs x
metrics x channels; ``result.metric(name)`` is one metric's, again read by layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import hypergeom
from torch import nn

from . import devices, evaluation, hooks
from .methods import LayerScores, UnitScoring

__all__ = ["METRICS", "CONSTANT_TOLERANCE", "perturb", "activation_input",
           "outgoing_weights", "output_log_odds", "MetricScores", "NeuronScores", "top_mask",
           "chance_jaccard", "correlation_scores", "precision_scores", "InputResampling",
           "zero_variance_shares", "discarded_shares", "conv_names", "conv_blocks"]

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

    Args:
        inputs: N x C x H x W images.
        n_samples: copies per image (at least 2).
        std: standard deviation of the multiplicative noise.
        index_scaled: the public code's noise, growing with the copy's index.
        seed: seed of the noise.
        centre: one value per channel whose distance the noise multiplies, or None.

    Returns:
        N x n_samples x C x H x W copies.

    Example:
        >>> copies = perturb(torch.ones(2, 1, 3, 3), n_samples=4, std=0.1)
        >>> tuple(copies.shape), bool((copies - 1).abs().max() < 1)
        ((2, 4, 1, 3, 3), True)
        >>> perturb(torch.zeros(1, 1, 2, 2), 3).abs().max().item()  # black stays black
        0.0
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
    reads: Eq. 1's z (the batch norm after the conv, or the conv itself).

    Args:
        model: the network; conv: one of its conv layers.

    Returns:
        The module's name.

    Example:
        >>> from subnets.models import VGG
        >>> net = VGG((2, "M", 3), in_channels=1, num_classes=2).eval()
        >>> activation_input(net, "features.4")
        'features.5'
    """
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
    columns for it (a flattened map or a pooled value per channel).

    Args:
        model: the network; conv: one of its conv layers.

    Returns:
        Channels x fan-out weights.

    Example:
        >>> from subnets.models import VGG
        >>> net = VGG((2, "M", 3), in_channels=1, num_classes=2).eval()
        >>> outgoing_weights(net, "features.0").shape  # read by 3 filters of 3 x 3
        torch.Size([2, 27])
    """
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
    for a single (sigmoid) logit, the logit itself for target 1 and minus it for 0.

    Args:
        logits: N x classes (or N x 1 for a sigmoid output).
        target: N classes.

    Returns:
        N log-odds, the network output ``o`` of Eq. 2.

    Example:
        >>> output_log_odds(torch.tensor([[0.5, 2.0]]), torch.tensor([1]))
        tensor([1.5000])
    """
    if logits.shape[1] == 1:
        return logits[:, 0] * (2 * target - 1)
    own = logits.gather(1, target.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, target.view(-1, 1), float("-inf")).logsumexp(1)
    return own - others


def _metric_index(name: str, metrics: Sequence[str] = METRICS) -> int:
    if name not in metrics:
        raise ValueError(f"metric: expected one of {list(metrics)}, got {name!r}")
    return list(metrics).index(name)


@dataclass
class MetricScores(LayerScores):
    """Per layer, N inputs x len(``metrics``) x channels: ``result[layer]``, or one
    metric's N x channels per layer as ``result.metric(name)[layer]``.

    Example:
        >>> import torch
        >>> result = MetricScores({"conv": torch.zeros(2, len(METRICS), 3)})
        >>> result["conv"].shape, result.metric("precision")["conv"].shape
        (torch.Size([2, 7, 3]), torch.Size([2, 3]))
    """

    metrics: tuple[str, ...] = METRICS

    def metric(self, name: str) -> LayerScores:
        """Per layer, the N x channels values of metric ``name``."""
        i = _metric_index(name, self.metrics)
        return LayerScores({layer: s[:, i] for layer, s in self.scores.items()})


@dataclass
class NeuronScores(MetricScores):
    """Scores of every neuron, as ``InputResampling.score`` returns them: ``result[layer]``
    is N images x len(metrics) x channels, NaN where a metric is undefined (a constant
    neuron's correlation) or the neuron is discarded (precision below lambda).
    ``eligible[layer]`` (N x channels) marks the neurons every metric chooses from: alive
    on the image (a patch exists) and above lambda.

    Example:
        >>> import torch
        >>> scores = NeuronScores({"conv": torch.arange(7.0 * 4).view(1, 7, 4)})
        >>> scores.top(2)["conv"][0, 0].tolist()
        [False, False, True, True]
    """

    eligible: LayerScores = field(default_factory=LayerScores)

    def top(self, k: int = 5) -> LayerScores:
        """Boolean masks (N x metrics x channels) of the ``k`` highest-scoring eligible
        neurons of every layer: every metric selects min(k, eligible) neurons."""
        if k < 1:
            raise ValueError(f"k: expected >= 1, got {k}")
        pools = self.eligible
        return LayerScores({
            layer: top_mask(s, k, pools[layer].unsqueeze(1) if layer in pools else None)
            for layer, s in self.scores.items()})


def top_mask(scores: torch.Tensor, k: int, eligible: torch.Tensor | None = None) -> torch.Tensor:
    """True at the ``k`` largest entries along the last dimension among the ``eligible``
    ones (default: the non-NaN ones); an eligible NaN ranks below every number, an
    ineligible entry is never selected, ties go to the lowest index.

    Args:
        scores: ... x channels.
        k: entries kept per row.
        eligible: boolean, broadcastable to ``scores``, or None.

    Returns:
        A boolean mask shaped like ``scores``.

    Example:
        >>> top_mask(torch.tensor([1.0, float("nan"), 3.0, 3.0]), 2).tolist()
        [False, False, True, True]
    """
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
    that chance alone gives. The intersection is hypergeometric.

    Args:
        pool: pool sizes (any shape).
        k: neurons each selection takes.

    Returns:
        The expected Jaccard index per pool size, shaped like ``pool``.

    Example:
        >>> chance_jaccard(torch.tensor([2, 5, 0]), 2)
        tensor([1.0000, 0.3000,    nan])
    """
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
    and a neuron that never varies gets NaN.

    Args:
        acts: N inputs x S copies x C neurons x P positions.
        output: N x S network outputs.

    Returns:
        N x C correlations (Eq. 2 per position, averaged).

    Example:
        >>> o = torch.tensor([[0.0, 1.0, 2.0]])
        >>> acts = torch.stack([-o, torch.zeros_like(o)], -1).unsqueeze(-1)  # 1 x 3 x 2 x 1
        >>> correlation_scores(acts, o)
        tensor([[1., nan]])
    """
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
    (N x S x C x P); NaN for neurons below lambda (see ``_above_threshold``).

    Args:
        acts: N inputs x S copies x C neurons x P positions.
        threshold: lambda, or its share of the layer's mean magnitude (``relative``).
        relative: lambda relative to the layer's mean magnitude on the image.

    Returns:
        N x C precisions (Eq. 3, the mean variance inside the reciprocal).

    Example:
        >>> acts = torch.tensor([[1.0, 3.0], [3.0, 1.0]]).view(1, 2, 2, 1)  # two neurons
        >>> precision_scores(acts, threshold=0.5)
        tensor([[1., 1.]])
    """
    precision = 1.0 / acts.var(1, unbiased=False).mean(-1)
    return torch.where(_above_threshold(acts, threshold, relative), precision, torch.nan)


class InputResampling(UnitScoring):
    """Score every channel of the given conv layers on noisy copies of each image.

    ``InputResampling(model, layers).score(inputs, target=None)`` returns
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
    counts the neurons it discards. After batch norm a layer's magnitudes cluster around
    its mean, so the default 0.8 removes the low tail, the neurons that respond clearly
    more weakly than the rest (the paper's purpose for lambda); 0.1 removes none.
    ``centre`` perturbs the pixels' distance from a per-channel centre (``perturb``).

    Args:
        model: the network; layers: its conv layers to score.
        n_samples, std, index_scaled, seed, centre: the copies (``perturb``).
        threshold, relative_threshold: lambda.
        after_relu: read the ReLU's output instead of z.
        batch_size: images and copies per forward pass.

    Example:
        >>> from subnets.models import VGG
        >>> net = VGG((2, "M", 3), in_channels=1, num_classes=2).eval()
        >>> scores = InputResampling(net, ["features.4"], n_samples=5).score(torch.rand(2, 1, 8, 8))
        >>> scores["features.4"].shape, scores.eligible["features.4"].shape
        (torch.Size([2, 7, 3]), torch.Size([2, 3]))
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], n_samples: int = 50,
                 std: float = 0.1, index_scaled: bool = False, threshold: float = 0.8,
                 relative_threshold: bool = True, after_relu: bool = False, seed: int = 0,
                 centre: torch.Tensor | None = None, batch_size: int = 1024) -> None:
        if not layers:
            raise ValueError("layers: expected at least one conv layer name")
        if threshold < 0:
            raise ValueError(f"threshold: expected >= 0, got {threshold}")
        super().__init__(model, list(layers))
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
    def score(self, inputs: torch.Tensor, target: torch.Tensor | int | None = None
              ) -> NeuronScores:
        """Every neuron's scores on ``inputs`` (N x C x H x W), the output being the
        log-odds of ``target`` (a class, one per input, or None: the predicted class)."""
        n = len(inputs)
        self.weights = {name: devices.to_host(outgoing_weights(self.model, name))
                        for name in self.layers}
        parts = {layer: [] for layer in self.layers}
        pools = {layer: [] for layer in self.layers}
        for start, logits, acts in self._chunks(inputs):
            chunk, s = logits.shape[:2]
            if target is None:
                t = evaluation.predicted_labels(logits[:, 0])
            else:
                t = torch.as_tensor(target).expand(n)[start:start + chunk]
                t = devices.to_model(self.model, t)
            output = output_log_odds(logits.flatten(0, 1), t.repeat_interleave(s)).view(chunk, s)
            for layer in self.layers:
                scores, eligible = self._layer_scores(layer, acts[layer], output[:, 1:], start)
                parts[layer].append(scores)
                pools[layer].append(eligible)
        return NeuronScores({layer: torch.cat(p) for layer, p in parts.items()},
                            eligible=LayerScores({layer: torch.cat(p)
                                                  for layer, p in pools.items()}))

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
    variance over positions, is infinite. ``resampling`` goes to ``InputResampling``.

    Args:
        model: the network; layers: its conv layers; inputs: the images.
        resampling: ``InputResampling``'s settings.

    Returns:
        Layer -> share.

    Example:
        >>> from subnets.models import VGG
        >>> net = VGG((2, "M", 3), in_channels=1, num_classes=2).eval()
        >>> zero_variance_shares(net, ["features.4"], torch.zeros(1, 1, 8, 8), n_samples=4)
        {'features.4': 1.0}
    """
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
    ``resampling`` goes to ``InputResampling``.

    Args:
        model: the network; layers: its conv layers; inputs: the images.
        resampling: ``InputResampling``'s settings (``threshold`` among them).

    Returns:
        Layer -> share.

    Example:
        >>> from subnets.models import VGG
        >>> net = VGG((2, "M", 3), in_channels=1, num_classes=2).eval()
        >>> x = torch.rand(2, 1, 8, 8)
        >>> discarded_shares(net, ["features.4"], x, n_samples=4, threshold=0.0)
        {'features.4': 0.0}
    """
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
    """The conv layers at 1-based positions ``indices`` (the paper's "layers 3 to 9").

    Args:
        model: the network.
        indices: 1-based positions among its conv layers (``hooks.conv_layers``' order).

    Returns:
        The convs' names, in the order of ``indices``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3))
        >>> conv_names(net, [2, 1])
        ['2', '0']
    """
    convs = hooks.conv_layers(model)
    bad = [i for i in indices if not 1 <= i <= len(convs)]
    if bad or not indices:
        raise ValueError(f"layers: expected conv positions in 1..{len(convs)}, got {list(indices)}")
    return [convs[i - 1] for i in indices]


def conv_blocks(model: nn.Module, convs: Sequence[str]) -> list[int]:
    """The block (1-based: 1 + the number of max-pools before it) of each conv, the
    layer groups of the paper's Figure 4 for a VGG.

    Args:
        model: the network.
        convs: names of some of its conv layers.

    Returns:
        The block of each conv.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3))
        >>> conv_blocks(net, ["0", "2"])
        [1, 2]
    """
    blocks, block = {}, 1
    for name in hooks.layer_names(model, (nn.Conv2d, nn.MaxPool2d)):
        if isinstance(hooks.layer(model, name), nn.MaxPool2d):
            block += 1
        else:
            blocks[name] = block
    return [blocks[c] for c in convs]
