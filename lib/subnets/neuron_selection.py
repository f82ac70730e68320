"""The neurons that input resampling selects (Lengerich et al. 2017, chapter 5), and what
they do.

``NeuronSelection`` scores every neuron with ``resampling.InputResampling``, keeps the
``top_k`` of each layer and metric and projects them to image patches
(``patches.selection_boxes``); its ``Selection`` is read one way, ``selection[layer]``
(N inputs x metrics x channels masks), or one metric's as ``selection.metric(name)[layer]``.
``selection_jaccard`` compares two selections, ``pool_sizes`` says how large a share of a
layer ``top_k`` is, and ``switch_off_effects`` measures how much the output moves when a
selection is switched off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn

from . import cache, devices, evaluation, hooks, metrics
from .methods import LayerScores, UnitSelection
from .patches import selection_boxes
from .resampling import (
    METRICS,
    InputResampling,
    MetricScores,
    NeuronScores,
    _metric_index,
    chance_jaccard,
    output_log_odds,
)

__all__ = ["Selection", "NeuronSelection", "selection_jaccard", "pool_sizes",
           "switch_off_effects"]


@dataclass
class Selection(MetricScores):
    """What ``NeuronSelection.select`` found in N inputs: ``result[layer]`` is the N x
    metrics x channels mask of the ``top_k`` neurons of each metric (one metric's, N x
    channels: ``result.metric(name)[layer]``); ``neurons`` the ``NeuronScores`` they were
    picked by (with the pools, ``neurons.eligible``); ``boxes[layer]`` N x channels x 4
    deconvnet patches (-1 where none was computed; None when no boxes were asked for).

    Args:
        scores: layer -> N x metrics x channels masks.
        neurons: the scores the masks were picked by.
        boxes: layer -> N x channels x 4 boxes, or None.

    Example:
        >>> masks = torch.zeros(2, len(METRICS), 3, dtype=torch.bool)
        >>> masks[:, METRICS.index("precision"), 0] = True
        >>> chosen = Selection({"conv": masks})
        >>> chosen["conv"].shape, chosen.metric("precision")["conv"][:, 0].tolist()
        (torch.Size([2, 7, 3]), [True, True])
    """

    neurons: NeuronScores = field(default_factory=NeuronScores)
    boxes: LayerScores | None = None


class NeuronSelection(UnitSelection):
    """Lengerich et al.'s important neurons and their patches (chapter 5), for a model and
    its conv ``layers``: every neuron scored by ``InputResampling``, the ``top_k`` of each
    layer and metric selected (``NeuronScores.top``) and, for the neurons of the metrics in
    ``boxes``, the deconvnet patch (``patches.selection_boxes``, with ``support_fraction``).

    ``NeuronSelection(model, layers).select(inputs, target=None)`` returns a ``Selection``,
    cached by model weights, inputs, target and every setting. ``boxes``: True for the
    neurons of every metric, a list of metric names for theirs only (the deconvnet is the
    expensive part), False for none. ``resampling`` goes to ``InputResampling``
    (n_samples, std, index_scaled, centre, threshold, relative_threshold, after_relu,
    seed, batch_size).

    Args:
        model: the network; layers: its conv layers.
        top_k: neurons selected per layer and metric.
        support_fraction: where a deconvnet patch ends (``patches.selection_boxes``).
        boxes: the metrics whose neurons get patches (True: all, False: none).
        resampling: ``InputResampling``'s settings.

    Example:
        >>> from subnets.models import VGG
        >>> net = VGG((2, "M", 3), in_channels=1, num_classes=2).eval()
        >>> chosen = NeuronSelection(net, ["features.4"], top_k=1, boxes=False,
        ...                          n_samples=4).select(torch.rand(2, 1, 8, 8))
        >>> chosen["features.4"].sum(-1).tolist()  # one neuron per image and metric
        [[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]]
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], top_k: int = 5,
                 support_fraction: float = 0.1, boxes: bool | Sequence[str] = True,
                 **resampling) -> None:
        if top_k < 1:
            raise ValueError(f"top_k: expected >= 1, got {top_k}")
        super().__init__(model, list(layers))
        self.boxed = list(METRICS) if boxes is True else list(boxes or [])
        self.which = [_metric_index(m) for m in self.boxed]
        self.method = InputResampling(model, layers, **resampling)
        self.top_k, self.support_fraction, self.resampling = top_k, support_fraction, resampling

    def select(self, inputs: torch.Tensor, target: torch.Tensor | int | None = None
               ) -> Selection:
        """The ``top_k`` neurons of every layer and metric on each of ``inputs``, for the
        log-odds of ``target`` (None: the predicted class), and their patches."""
        parts = {"model": self.model, "inputs": inputs, "target": target, "layers": self.layers,
                 "top_k": self.top_k, "boxed": self.boxed, "resampling": self.resampling,
                 "support_fraction": self.support_fraction if self.boxed else None}

        def compute() -> dict:
            scores = self.method.score(inputs, target)
            masks = scores.top(self.top_k)
            found = {"scores": scores.scores, "eligible": scores.eligible.scores,
                     "masks": masks.scores}
            if self.boxed:
                found["boxes"] = selection_boxes(
                    self.model, {k: m[:, self.which] for k, m in masks.items()}, inputs,
                    self.support_fraction)
            return found

        found = cache.cached("resampling", parts, compute)
        neurons = NeuronScores(found["scores"], eligible=LayerScores(found["eligible"]))
        boxes = LayerScores(found["boxes"]) if found.get("boxes") is not None else None
        return Selection(found["masks"], neurons=neurons, boxes=boxes)


def selection_jaccard(a: Selection, b: Selection, metric_a: str, metric_b: str
                      ) -> torch.Tensor:
    """N x layers: the Jaccard index of ``metric_a``'s selection in ``a`` and ``metric_b``'s
    in ``b`` (the same inputs), per input and layer (NaN where both are empty).

    Args:
        a: one selection.
        b: another, of the same inputs and layers (or ``a`` itself).
        metric_a: the metric of ``a`` compared (one of ``METRICS``).
        metric_b: the metric of ``b`` compared.

    Returns:
        N x layers Jaccard indices, layers in ``a``'s order.

    Example:
        >>> import torch
        >>> masks = torch.zeros(1, len(METRICS), 4, dtype=torch.bool)
        >>> masks[0, 0, :2] = masks[0, 1, 1:3] = True
        >>> selection = Selection({"conv": masks})
        >>> selection_jaccard(selection, selection, "correlation", "precision")
        tensor([[0.3333]])
    """
    pa, pb = a.metric(metric_a), b.metric(metric_b)
    return torch.stack([metrics.jaccard(pa[layer], pb[layer]) for layer in a.layers], 1)


def pool_sizes(selection: Selection, top_k: int) -> pd.DataFrame:
    """How large a share of each layer ``top_k`` is, and the overlap it gives by chance.

    Args:
        selection: a ``NeuronSelection.select`` result.
        top_k: the neurons selected per layer and metric.

    Returns:
        Per layer (rows): its channels, the share ``top_k`` of them is, the mean size of
        the pool every metric chooses from (eligible neurons) and the mean chance Jaccard
        of two random selections from it (``chance_jaccard``).

    Example:
        >>> import torch
        >>> masks = torch.zeros(1, len(METRICS), 4, dtype=torch.bool)
        >>> pools = LayerScores({"conv": torch.tensor([[True, True, True, False]])})
        >>> selection = Selection({"conv": masks}, neurons=NeuronScores(eligible=pools))
        >>> pool_sizes(selection, 2).loc["conv"].round(3).tolist()
        [4.0, 0.5, 3.0, 0.556]
    """
    pools = selection.neurons.eligible
    return pd.DataFrame({
        "channels": [pools[c].shape[-1] for c in selection.layers],
        "top_k share": [min(top_k, pools[c].shape[-1]) / pools[c].shape[-1]
                        for c in selection.layers],
        "eligible (mean)": [pools[c].sum(-1).float().mean().item() for c in selection.layers],
        "chance Jaccard": [chance_jaccard(pools[c].sum(-1), top_k).nanmean().item()
                           for c in selection.layers]}, index=selection.layers)


@torch.no_grad()
def switch_off_effects(model: nn.Module, masks: dict[str, torch.Tensor], inputs: torch.Tensor,
                       batch_size: int = 512) -> torch.Tensor:
    """N x metrics x layers: |change of the log-odds of the class predicted for each input|
    when the neurons that a metric selected in one layer (``masks``: conv layer -> N x
    metrics x channels) are switched off (the output of their activation,
    ``hooks.activation_after``, set to zero), one layer at a time. Tests whether a
    selection has "large influence over the network output".

    Args:
        model: the network.
        masks: conv layer -> N x metrics x channels (a ``Selection``).
        inputs: the N images.
        batch_size: inputs per forward pass.

    Returns:
        N x metrics x layers |changes of log-odds|, on the CPU.

    Example:
        >>> from subnets.models import VGG
        >>> net = VGG((2, "M", 3), in_channels=1, num_classes=2).eval()
        >>> masks = {"features.4": torch.zeros(2, 1, 3, dtype=torch.bool)}  # nothing off
        >>> switch_off_effects(net, masks, torch.rand(2, 1, 8, 8)).abs().max().item()
        0.0
    """
    model.eval()
    x = devices.to_model(model, inputs)
    base_logits = model(x)
    target = evaluation.predicted_labels(base_logits)
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


