"""Important neurons by input resampling (Lengerich et al. 2017, paper 004).

A test image is copied ``n_samples`` times, each copy with every pixel multiplied by
``1 + N(0, std)``; one batched forward pass records every conv channel ("neuron") on all
copies, and every neuron of every layer is scored at once:

- ``correlation``: |Pearson r| between the neuron's activation and the network output
  over the copies, at every position of its map, averaged over the positions where the
  activation varies (Eq. 2, aggregated as the public code does);
- ``precision``: the reciprocal of the neuron's variance over the copies, averaged over
  positions, for neurons whose mean activation reaches ``threshold`` (Eq. 3; see
  ``InputResampling`` for why the mean sits inside the reciprocal);
- APPLE's four single-image baselines on the unperturbed image: ``activation_sum`` and
  ``activation_variance`` of the map, ``weight_sum`` and ``weight_variance`` of the
  neuron's outgoing weights (``w^{l+1}``);
- ``random``: a seeded random score, the control that any metric should beat.

A neuron's activation is the output of the ReLU that follows its conv. ``NeuronScores.top``
keeps the ``k`` best neurons of each layer as boolean masks and ``jaccard`` compares two
selections. ``selection_boxes`` turns selected neurons into image patches with a
deconvnet (``attribution.deconvnet``); ``analyse`` does all of it for a model and images
(cached); ``patches`` cuts the patches out, ``patch_accuracy`` trains the paper's
secondary classifier on them and ``patch_table`` counts object pixels in each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from torch.utils.data import TensorDataset
from torchvision.ops import roi_align

from . import attribution, cache, hooks, train
from .models import VGG

METRICS = ("correlation", "precision", "activation_sum", "activation_variance",
           "weight_sum", "weight_variance", "random")
# A position whose activation varies over the copies by less than this share of its own
# root-mean-square (std / rms < 1e-5) counts as constant: float rounding must not make up
# a correlation.
CONSTANT_TOLERANCE = 1e-10


def perturb(images: torch.Tensor, n_samples: int = 50, std: float = 0.1, index_scaled: bool = False,
            seed: int = 0) -> torch.Tensor:
    """``n_samples`` noisy copies of each image (N x C x H x W -> N x n_samples x C x H x W).

    Every pixel is multiplied by ``1 + N(0, std)``, drawn afresh for every copy (the
    paper's text). ``index_scaled=True`` is the public code's variant instead: copy ``i``
    (from 0) is multiplied by ``1 + i * N(0, std)``, so copy 0 is the image itself and
    the last copies are mostly noise.
    """
    if images.ndim != 4:
        raise ValueError(f"images: expected N x C x H x W, got shape {tuple(images.shape)}")
    if n_samples < 2:
        raise ValueError(f"n_samples: expected >= 2 (a correlation needs two copies), got {n_samples}")
    if std < 0:
        raise ValueError(f"std: expected >= 0, got {std}")
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(images), n_samples, *images.shape[1:]), generator=g) * std
    if index_scaled:
        noise = noise * torch.arange(n_samples, dtype=noise.dtype).view(1, -1, 1, 1, 1)
    return images.unsqueeze(1) * (1 + noise.to(images.device))


def activation_layer(model: nn.Module, conv: str) -> str:
    """The name of the ``nn.ReLU`` module that follows conv layer ``conv``."""
    names = [n for n, _ in model.named_modules()]
    hooks.layer(model, conv)
    for name in names[names.index(conv) + 1:]:
        module = hooks.layer(model, name)
        if isinstance(module, nn.ReLU):
            return name
        if isinstance(module, nn.Conv2d):
            break
    raise ValueError(f"layers: no nn.ReLU module follows conv {conv!r} before the next conv")


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
    raise ValueError(f"layers: no conv or linear layer reads the {channels} channels of {conv!r}")


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
    discarded (precision below the activation threshold)."""

    layers: list[str]
    scores: dict[str, torch.Tensor]
    metrics: tuple[str, ...] = METRICS

    def __getitem__(self, layer: str) -> torch.Tensor:
        return self.scores[layer]

    def metric(self, name: str) -> dict[str, torch.Tensor]:
        """N x channels scores of metric ``name`` per layer."""
        i = metric_index(name, self.metrics)
        return {layer: s[:, i] for layer, s in self.scores.items()}

    def top(self, k: int = 5) -> dict[str, torch.Tensor]:
        """Boolean masks (N x metrics x channels) of the ``k`` highest-scoring neurons of
        every layer; NaN scores are never selected, so a mask may hold fewer than ``k``."""
        if k < 1:
            raise ValueError(f"k: expected >= 1, got {k}")
        return {layer: top_mask(s, k) for layer, s in self.scores.items()}


def metric_index(name: str, metrics: Sequence[str] = METRICS) -> int:
    if name not in metrics:
        raise ValueError(f"metric: expected one of {list(metrics)}, got {name!r}")
    return list(metrics).index(name)


def top_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """True at the ``k`` largest non-NaN entries along the last dimension (ties: lowest index)."""
    finite = torch.nan_to_num(scores, nan=float("-inf"), posinf=torch.finfo(scores.dtype).max)
    k = min(k, scores.shape[-1])
    # A stable descending sort makes ties deterministic (topk's order is unspecified).
    idx = finite.sort(dim=-1, descending=True, stable=True).indices[..., :k]
    mask = torch.zeros_like(scores, dtype=torch.bool).scatter(-1, idx, True)
    return mask & ~scores.isnan()


def jaccard(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|A ∩ B| / |A ∪ B| of boolean set masks along the last dimension (NaN if both are
    empty). The paper's definition; the public code divides by |A| + |B| instead."""
    inter = (a & b).sum(-1).float()
    union = (a | b).sum(-1).float()
    return inter / union


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


def precision_scores(acts: torch.Tensor, threshold: float) -> torch.Tensor:
    """1 / (mean over positions of the variance over the copies) of activations
    (N x S x C x P); NaN for neurons whose mean activation is below ``threshold``."""
    precision = 1.0 / acts.var(1, unbiased=False).mean(-1)
    active = acts.mean((1, 3)) >= threshold
    return torch.where(active, precision, torch.nan)


def perturbed_activations(model: nn.Module, images: torch.Tensor, relus: Sequence[str], n_samples: int,
                          std: float, index_scaled: bool, seed: int, batch_size: int = 1024):
    """Run each image and its ``n_samples`` perturbed copies through ``model`` in chunks of
    about ``batch_size`` inputs. Yields, per chunk of images, its first index, the logits
    (N' x (1 + S) x classes) and every ReLU's output (N' x (1 + S) x C x positions), the
    unperturbed image first: its single-image baselines are scored on it. Call it under
    ``torch.no_grad()``; the hooks stay in place until the last chunk."""
    copies = perturb(images, n_samples, std, index_scaled, seed)
    batch = torch.cat([images.unsqueeze(1), copies], 1)
    s = batch.shape[1]
    model.eval()
    per_chunk = max(1, batch_size // s)
    with hooks.Recorder(model, relus) as rec:
        for start in range(0, len(batch), per_chunk):
            chunk = batch[start:start + per_chunk]
            logits = model(chunk.flatten(0, 1)).view(len(chunk), s, -1)
            yield start, logits, {relu: rec.outputs[relu].view(len(chunk), s, *rec.outputs[relu].shape[1:]).flatten(3)
                                  for relu in relus}


class InputResampling:
    """Score every channel of the given conv layers on noisy copies of each image.

    ``InputResampling(model, layers).attribute(images, target=None)`` returns
    ``NeuronScores``; ``target`` is the class whose log-odds is the network output ``o``
    (default: the class predicted for the unperturbed image; for two classes |r| is the
    same for either class).

    Equation 3 averages the reciprocal variance over positions. Taken literally it is
    infinite for nearly every ReLU map (any position that is zero on all copies has zero
    variance), so, like the public code, the variance is averaged first and the
    reciprocal taken after (``precision_scores``). The threshold is applied to the
    neuron's mean activation over copies and positions, as in the public code.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], n_samples: int = 50, std: float = 0.1,
                 index_scaled: bool = False, threshold: float = 0.1, seed: int = 0, batch_size: int = 1024) -> None:
        if not layers:
            raise ValueError("layers: expected at least one conv layer name")
        if threshold < 0:
            raise ValueError(f"threshold: expected >= 0, got {threshold}")
        self.model = model
        self.layers = list(layers)
        self.relus = [activation_layer(model, name) for name in self.layers]
        self.weights = {name: outgoing_weights(model, name) for name in self.layers}
        self.n_samples, self.std, self.index_scaled = n_samples, std, index_scaled
        self.threshold, self.seed, self.batch_size = threshold, seed, batch_size

    @torch.no_grad()
    def attribute(self, images: torch.Tensor, target: torch.Tensor | int | None = None) -> NeuronScores:
        n = len(images)
        parts: dict[str, list[torch.Tensor]] = {layer: [] for layer in self.layers}
        for start, logits, acts in perturbed_activations(self.model, images, self.relus, self.n_samples, self.std,
                                                         self.index_scaled, self.seed, self.batch_size):
            chunk, s = logits.shape[:2]
            if target is None:
                t = logits[:, 0].argmax(1) if logits.shape[-1] > 1 else (logits[:, 0, 0] > 0).long()
            else:
                t = torch.as_tensor(target).expand(n)[start:start + chunk]
            output = output_log_odds(logits.flatten(0, 1), t.repeat_interleave(s)).view(chunk, s)
            for layer, relu in zip(self.layers, self.relus):
                parts[layer].append(self.layer_scores(layer, acts[relu], output[:, 1:], start))
        return NeuronScores(self.layers, {layer: torch.cat(p) for layer, p in parts.items()})

    def layer_scores(self, layer: str, acts: torch.Tensor, output: torch.Tensor, start: int) -> torch.Tensor:
        """N x metrics x channels scores of one layer; ``acts`` is N x (1 + S) x C x P with
        the unperturbed image first, ``output`` the N x S outputs of the copies."""
        original, copies = acts[:, 0], acts[:, 1:]
        n, c = original.shape[:2]
        w = self.weights[layer]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.layers.index(layer))
        random = torch.rand((start + n, c), generator=g)[start:]
        return torch.stack([
            correlation_scores(copies, output),
            precision_scores(copies, self.threshold),
            original.sum(-1),
            original.var(-1, unbiased=False),
            w.sum(1).expand(n, c),
            w.var(1, unbiased=False).expand(n, c),
            random,
        ], 1)


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
    for name, module in model.named_modules():
        if isinstance(module, nn.MaxPool2d):
            block += 1
        elif isinstance(module, nn.Conv2d):
            blocks[name] = block
    return [blocks[c] for c in convs]


def leading_part(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The part of ``model`` that computes layer ``name``, and the layer's name in it: for a
    VGG-style ``features`` sequence, the modules up to the layer (sharing their weights),
    so a deconvnet does not run the layers above it; otherwise the model itself."""
    features = getattr(model, "features", None)
    prefix = "features."
    if isinstance(features, nn.Sequential) and name.startswith(prefix) and name[len(prefix):].isdigit():
        i = int(name[len(prefix):])
        return features[:i + 1], str(i)
    return model, name


def selection_boxes(model: nn.Module, images: torch.Tensor, masks: dict[str, torch.Tensor],
                    support_fraction: float = 0.1, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Patches of the selected neurons: for every layer, N x channels x 4 boxes (top,
    bottom, left, right; -1 for neurons no metric selected, or dead on that image) around
    the deconvnet projection of each neuron selected by any metric in ``masks`` (layer
    -> N x metrics x channels)."""
    boxes = {}
    for layer, mask in masks.items():
        pairs = mask.any(1).nonzero()
        out = torch.full((*mask.shape[::2], 4), -1, dtype=torch.long)
        net, relu = leading_part(model, activation_layer(model, layer))
        for chunk in pairs.split(batch_size):
            maps = attribution.deconvnet(net, images[chunk[:, 0]], relu, chunk[:, 1])
            out[chunk[:, 0], chunk[:, 1]] = attribution.support_boxes(maps, support_fraction)
        boxes[layer] = out
    return boxes


def analyse(model: nn.Module, images: torch.Tensor, layers: Sequence[str], top_k: int = 5,
            support_fraction: float = 0.1, boxes: bool = True, **resampling) -> dict:
    """Scores, top-``top_k`` masks and (if ``boxes``) deconvnet boxes of ``images``, cached by
    model weights, images and every setting: ``{"scores"|"masks"|"boxes": {layer: tensor}}``.
    ``resampling`` goes to ``InputResampling`` (n_samples, std, index_scaled, threshold,
    seed)."""
    parts = {"model": model, "images": images, "layers": list(layers), "top_k": top_k,
             "support_fraction": support_fraction if boxes else None, "resampling": resampling}

    def compute() -> dict:
        scores = InputResampling(model, layers, **resampling).attribute(images)
        masks = scores.top(top_k)
        result = {"scores": scores.scores, "masks": masks}
        if boxes:
            result["boxes"] = selection_boxes(model, images, masks, support_fraction)
        return result

    return cache.cached("resampling", parts, compute)


@torch.no_grad()
def zero_variance_shares(model: nn.Module, images: torch.Tensor, layers: Sequence[str], n_samples: int = 50,
                         std: float = 0.1, index_scaled: bool = False, threshold: float = 0.1,
                         seed: int = 0) -> dict[str, float]:
    """Per layer, the share of neurons that pass the precision threshold (over all images)
    yet have a position that is the same on every copy: where Eq. 3, which averages the
    reciprocal variance over positions, is infinite."""
    relus = {name: activation_layer(model, name) for name in layers}
    active = dict.fromkeys(layers, 0)
    constant = dict.fromkeys(layers, 0)
    for _, _, acts in perturbed_activations(model, images, list(relus.values()), n_samples, std, index_scaled, seed):
        for name, relu in relus.items():
            copies = acts[relu][:, 1:]
            passing = copies.mean((1, 3)) >= threshold
            active[name] += passing.sum().item()
            constant[name] += ((copies.var(1) == 0).any(-1) & passing).sum().item()
    return {name: constant[name] / max(1, active[name]) for name in layers}


def patches(images: torch.Tensor, masks: dict[str, torch.Tensor], boxes: dict[str, torch.Tensor],
            metric: str, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The patches of ``metric``'s selected neurons, cut from ``images`` and resized to
    ``size`` x ``size`` (bilinear, by ``torchvision.ops.roi_align``), and the index of the
    image each came from. Neurons without a box (dead on the image) give no patch."""
    m = metric_index(metric)
    rows = []
    for layer, mask in masks.items():
        picked = mask[:, m].nonzero()
        b = boxes[layer][picked[:, 0], picked[:, 1]]
        keep = b[:, 0] >= 0
        rows.append(torch.cat([picked[keep, :1], b[keep]], 1))
    rows = torch.cat(rows)
    # roi_align takes (image, x1, y1, x2, y2) in continuous pixel-edge coordinates.
    rois = rows[:, [0, 3, 1, 4, 2]].to(images.dtype)
    cut = roi_align(images, rois, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    return cut, rows[:, 0]


def patch_table(masks: dict[str, torch.Tensor], boxes: dict[str, torch.Tensor],
                foreground: torch.Tensor | None = None, metrics: Sequence[str] = METRICS):
    """One row per selected (image, layer, neuron, metric): the patch's box, its area and,
    given foreground masks (N x 1 x H x W), the number of object pixels inside it."""
    frames = []
    if foreground is not None:
        # A summed-area table gives every box's object-pixel count in one gather.
        fg = foreground[:, 0].to(torch.long)
        sat = torch.nn.functional.pad(fg.cumsum(1).cumsum(2), (1, 0, 1, 0))
    for layer, mask in masks.items():
        picked = mask.nonzero()
        img, met, ch = picked.unbind(1)
        b = boxes[layer][img, ch]
        top, bottom, left, right = b.unbind(1)
        frame = {"image": img, "layer": [layer] * len(img), "metric": [metrics[i] for i in met.tolist()],
                 "neuron": ch, "top": top, "bottom": bottom, "left": left, "right": right,
                 "area": ((bottom - top) * (right - left)).clamp(min=0)}
        if foreground is not None:
            t, bo, le, r = top.clamp(min=0), bottom.clamp(min=0), left.clamp(min=0), right.clamp(min=0)
            frame["object_pixels"] = sat[img, bo, r] - sat[img, t, r] - sat[img, bo, le] + sat[img, t, le]
        frames.append(pd.DataFrame({k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in frame.items()}))
    table = pd.concat(frames, ignore_index=True)
    return table[table["top"] >= 0].reset_index(drop=True)


def patch_accuracy(images: torch.Tensor, labels: torch.Tensor, train_images: torch.Tensor,
                   masks: dict[str, torch.Tensor], boxes: dict[str, torch.Tensor], metric: str, size: int = 16,
                   width: int = 64, epochs: int = 10, seed: int = 0) -> float:
    """The paper's secondary classifier: trained on the patches that ``metric`` selects in
    the images flagged by ``train_images`` (each patch labelled with its image's label),
    tested on the patches of the other images. Three 3x3 conv layers of ``width``
    channels with max-pooling in between (a ``VGG``), Adam, cached by ``train.fit``.
    Returns the test accuracy over patches."""
    cut, source = patches(images, masks, boxes, metric, size)
    is_train = train_images[source]
    if not is_train.any() or is_train.all():
        raise ValueError("train_images: the secondary classifier needs patches of training and of test images")
    patch_labels = labels[source]
    with train.seeded(seed):
        model = VGG((width, "M", width, "M", width), in_channels=images.shape[1], num_classes=int(labels.max()) + 1)
    config = train.TrainConfig(epochs=epochs, batch_size=64, lr=1e-3, seed=seed)
    trained = train.fit(model, TensorDataset(cut[is_train], patch_labels[is_train]), config, desc="patch classifier")
    test = TensorDataset(cut[~is_train], patch_labels[~is_train])
    return train.evaluate(trained.model, test).accuracy
