"""Class-conditional channel pruning (Perna et al., chapter 1) and structural sub-networks.

A channel of a conv layer is *active* for a set of images when the mean of its absolute
post-ReLU activation over those images and all positions exceeds a threshold. With one
image and threshold 0 this is the paper's single-exemplar rule (absolute spatial sum
> 0); with all class-C training images and 0.05 it is the paper's class-mean rule.

``subnetwork`` builds S_C as a real, smaller network: the kept channels' conv weights
are copied and the next conv's input channels sliced, so S_C computes exactly what f
computes with the other channels switched off. Its one-logit head is f's own fully
connected layers (``"original"``), fresh layers left untrained (``"random"``, the
paper's literal "the fully connected layers are randomized") or fresh layers trained on
C vs not C with the convs frozen (``"trained"``, the book's reading of the paper).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import asdict, dataclass

import pandas as pd
import torch
from torch import nn
from torch.utils.data import TensorDataset

from . import cache, devices
from . import train as training
from .hooks import activations
from .models import ThreeBlockCNN

__all__ = ["channel_activity", "active_channels", "subnetwork", "train_head",
           "class_subnetwork", "SubNetwork", "OriginalHead", "PrunedCNN", "HEADS",
           "EXEMPLAR_THRESHOLD", "global_magnitude", "layerwise_magnitude", "magnitude",
           "recalibrate_batch_norm", "prunable_weights", "weight_sparsity", "head_layer"]

BLOCKS = ("1", "2", "3")
HEADS = ("trained", "random", "original")
EXEMPLAR_THRESHOLD = 0.0  # the single-exemplar rule: absolute spatial sum > 0


@torch.no_grad()
def channel_activity(model: ThreeBlockCNN, images: torch.Tensor,
                     batch_size: int = 500) -> dict[str, torch.Tensor]:
    """Per conv layer (``conv1..conv3``), the mean |ReLU output| of each channel over
    ``images`` and all spatial positions (on the CPU, whatever the model's device)."""
    relus = [f"relu{b}" for b in BLOCKS]
    sums = {r: 0.0 for r in relus}
    for i in range(0, len(images), batch_size):
        batch = devices.to_model(model, images[i:i + batch_size])
        acts = activations(model, batch, relus, batch_size=batch_size)
        for r in relus:
            sums[r] = sums[r] + acts[r].abs().sum(dim=(0, 2, 3))
    positions = {r: len(images) * acts[r].shape[2] * acts[r].shape[3] for r in relus}
    return {f"conv{r[-1]}": devices.to_host(sums[r]) / positions[r] for r in relus}


def active_channels(activity: dict[str, torch.Tensor], threshold: float) -> dict[str, torch.Tensor]:
    """Indices of the channels whose activity exceeds ``threshold``, per layer. A layer
    with no active channel keeps its most active one, so that S_C stays a network."""
    if threshold < 0:
        raise ValueError(f"threshold: expected >= 0, got {threshold}")
    kept = {}
    for name, a in activity.items():
        idx = torch.nonzero(a > threshold).flatten()
        kept[name] = idx if len(idx) else a.argmax().view(1)
    return kept


class OriginalHead(nn.Module):
    """f's own fully connected layers on the kept features; the binary logit is the
    log-odds of f's softmax probability of ``target_class``."""

    def __init__(self, fc1: nn.Linear, fc2: nn.Linear, target_class: int) -> None:
        super().__init__()
        self.fc1, self.relu, self.fc2 = fc1, nn.ReLU(), fc2
        self.target_class = target_class

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc2(self.relu(self.fc1(x)))
        others = torch.cat([logits[:, :self.target_class], logits[:, self.target_class + 1:]],
                           dim=1)
        return (logits[:, self.target_class] - torch.logsumexp(others, dim=1)).unsqueeze(1)


class PrunedCNN(nn.Module):
    """S_C: the pruned conv blocks (``conv1..conv3`` etc., as in f) and a one-logit head."""

    def __init__(self, blocks: nn.Module, head: nn.Module) -> None:
        super().__init__()
        for name, module in blocks.named_children():
            self.add_module(name, module)
        self.head = head
        self.block_names = [n for n, _ in blocks.named_children()]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.block_names:
            x = getattr(self, name)(x)
        return torch.flatten(x, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _sliced_conv(conv: nn.Conv2d, out_idx: torch.Tensor, in_idx: torch.Tensor | None) -> nn.Conv2d:
    weight = conv.weight.detach()[out_idx.to(conv.weight.device)]
    if in_idx is not None:
        weight = weight[:, in_idx.to(conv.weight.device)]
    new = nn.Conv2d(weight.shape[1], weight.shape[0], conv.kernel_size, conv.stride, conv.padding)
    new.weight.data.copy_(weight)
    new.bias.data.copy_(conv.bias.detach()[out_idx.to(conv.bias.device)])
    return new


def _pruned_blocks(model: ThreeBlockCNN, kept: dict[str, torch.Tensor]) -> nn.Sequential:
    """f's conv-ReLU-pool blocks with only the ``kept`` output channels of each conv."""
    modules = {}
    previous = None
    for b in BLOCKS:
        idx = kept[f"conv{b}"]
        modules[f"conv{b}"] = _sliced_conv(getattr(model, f"conv{b}"), idx, previous)
        modules[f"relu{b}"] = nn.ReLU()
        modules[f"pool{b}"] = copy.deepcopy(getattr(model, f"pool{b}"))
        previous = idx
    return nn.Sequential(OrderedDict(modules))


def _kept_feature_index(model: ThreeBlockCNN, kept_last: torch.Tensor) -> torch.Tensor:
    """Columns of ``fc1`` that read the kept channels of the last conv (flattened C x H x W)."""
    side = model.image_size // 8
    first = devices.to_host(kept_last).view(-1, 1) * side * side
    return (first + torch.arange(side * side)).flatten()


def subnetwork(model: ThreeBlockCNN, kept: dict[str, torch.Tensor], target_class: int,
               head: str = "trained", seed: int = 0) -> PrunedCNN:
    """S_C for ``target_class``, on ``model``'s device. ``head="trained"`` and
    ``"random"``: fresh FC layers (initialised with ``seed``) with one sigmoid output;
    ``"trained"`` is meant to be trained with ``train_head``, ``"random"`` stays as
    initialised. ``head="original"``: f's FC weights of the kept features, no training
    (see ``OriginalHead``)."""
    if head not in HEADS:
        raise ValueError(f"head: expected one of {HEADS}, got {head!r}")
    blocks = _pruned_blocks(model, kept)
    columns = _kept_feature_index(model, kept["conv3"])
    if head == "original":
        fc1 = nn.Linear(len(columns), model.fc1.out_features)
        fc1.weight.data.copy_(model.fc1.weight.detach()[:, columns.to(model.fc1.weight.device)])
        fc1.bias.data.copy_(model.fc1.bias.detach())
        new_head = OriginalHead(fc1, copy.deepcopy(model.fc2), target_class)
    else:
        with training.seeded(seed):
            new_head = nn.Sequential(nn.Linear(len(columns), model.fc1.out_features), nn.ReLU(),
                                     nn.Linear(model.fc1.out_features, 1))
    return PrunedCNN(blocks, new_head).to(devices.model_device(model)).eval()


def train_head(sub: PrunedCNN, images: torch.Tensor, labels: torch.Tensor, target_class: int,
               config: training.TrainConfig) -> pd.DataFrame:
    """Train S_C's head in place on C vs not-C with the convs frozen; returns the training
    history. The frozen features are computed once and the head trains on them (the same
    result as freezing the convs, far cheaper); the whole step is cached, so a warm run
    computes no features at all."""

    def compute() -> dict:
        with torch.no_grad():
            feats = torch.cat([devices.to_host(sub.features(devices.to_model(sub, chunk)))
                               for chunk in images.split(1000)])
        binary = (labels == target_class).long()
        trained = training.fit(sub.head, TensorDataset(feats, binary), config,
                               desc=f"head of S_{target_class}", cached=False)
        return {"state": sub.head.state_dict(), "history": trained.history.to_dict("list")}

    parts = {"sub": sub, "images": images, "labels": labels, "target": target_class,
             "config": asdict(config)}
    entry = cache.cached("head", parts, compute)
    sub.head.load_state_dict(entry["state"])
    sub.eval()
    return pd.DataFrame(entry["history"])


# --- global magnitude pruning (Avendaño Muñoz, chapter 3) -----------------------------

def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The ``weight`` of every conv and linear layer (biases and batch norm excluded)."""
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def global_magnitude(model: nn.Module, rate: float) -> nn.Module:
    """A copy of ``model`` with the fraction ``rate`` of its conv and linear weights of
    smallest magnitude, ranked across all those layers at once, set to zero: one-shot
    global magnitude pruning with ``torch.nn.utils.prune``. The copy keeps the masks
    (``weight = weight_orig * weight_mask``), so training it keeps the pruned weights at
    zero: fine-tuning with the mask kept."""
    from torch.nn.utils import prune

    if not 0 <= rate <= 1:
        raise ValueError(f"rate: expected a value in [0, 1], got {rate}")
    pruned = copy.deepcopy(model)
    weights = prunable_weights(pruned)
    if not weights:
        raise ValueError(f"model: {type(model).__name__} has no conv or linear weights to prune")
    prune.global_unstructured(weights, pruning_method=prune.L1Unstructured, amount=float(rate))
    return pruned


def weight_sparsity(model: nn.Module) -> float:
    """The fraction of conv and linear weights that are zero."""
    weights = [getattr(m, name).detach() for m, name in prunable_weights(model)]
    return sum((w == 0).sum().item() for w in weights) / sum(w.numel() for w in weights)


def head_layer(model: nn.Module) -> str:
    """The name of the model's last linear layer (its classifier head)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"model: {type(model).__name__} has no linear head")
    return names[-1]


def layerwise_magnitude(model: nn.Module, rate: float, keep_head: bool = True) -> nn.Module:
    """A copy of ``model`` with the fraction ``rate`` of each conv and linear layer's
    weights, those of smallest magnitude in that layer, set to zero (one-shot layerwise
    magnitude pruning, masks kept as in ``global_magnitude``). Every layer keeps at least
    one weight, so the output still depends on the input; ``keep_head`` leaves the last
    linear layer (``head_layer``) dense. Global ranking can empty a whole layer whose
    weights are small (a wide last conv under a small head): the network is then constant,
    which says nothing about its representations."""
    from torch.nn.utils import prune

    if not 0 <= rate <= 1:
        raise ValueError(f"rate: expected a value in [0, 1], got {rate}")
    pruned = copy.deepcopy(model)
    head = head_layer(pruned) if keep_head else None
    layers = [(n, m) for n, m in pruned.named_modules()
              if isinstance(m, (nn.Conv2d, nn.Linear)) and n != head]
    if not layers:
        raise ValueError(f"model: {type(model).__name__} has no conv or linear weights to prune")
    for _, m in layers:
        count = min(round(rate * m.weight.numel()), m.weight.numel() - 1)
        prune.l1_unstructured(m, "weight", amount=count)
    return pruned


PRUNING_SCOPES = {"layerwise": layerwise_magnitude, "global": global_magnitude}


def magnitude(model: nn.Module, rate: float, scope: str = "layerwise") -> nn.Module:
    """One-shot magnitude pruning at ``rate``, ``scope`` "layerwise" (``layerwise_magnitude``,
    head kept) or "global" (``global_magnitude``, every conv and linear layer ranked together)."""
    if scope not in PRUNING_SCOPES:
        raise ValueError(f"pruning_scope: expected one of {sorted(PRUNING_SCOPES)}, got {scope!r}")
    return PRUNING_SCOPES[scope](model, rate)


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, inputs: torch.Tensor,
                           batch_size: int = 500) -> nn.Module:
    """Re-estimate every batch-norm layer's running mean and variance in place as the plain
    average over ``inputs`` (batches of ``batch_size``), the rest of the model in eval mode.
    Pruning changes the statistics that the running averages were collected for."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training = model.training
    model.eval()
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
        m.train()
    try:
        for i in range(0, len(inputs), batch_size):
            model(devices.to_model(model, inputs[i:i + batch_size]))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    return model


@dataclass
class SubNetwork:
    """S_C with the kept channel indices and the make-up of its head's training data:
    ``head_positives`` class-C and ``head_negatives`` other images (0 and 0 for an
    untrained head). ``prior`` is the share of C the head saw, the prior that its 0.5
    cut-off on the sigmoid assumes."""

    model: PrunedCNN
    kept: dict[str, torch.Tensor]
    head_positives: int = 0
    head_negatives: int = 0

    @property
    def prior(self) -> float:
        total = self.head_positives + self.head_negatives
        return self.head_positives / total if total else float("nan")


def class_subnetwork(model: ThreeBlockCNN, images: torch.Tensor, labels: torch.Tensor,
                     target_class: int, threshold: float, head: str,
                     config: training.TrainConfig, n_head_train: int,
                     exemplar: int | None = None, seed: int = 0) -> SubNetwork:
    """S_C from training ``images``: the channels whose mean activity over all class-C
    images exceeds ``threshold`` (the paper's class-mean rule) or, with ``exemplar`` (an
    index into ``images``), the channels active on that one image at all (activity >
    ``EXEMPLAR_THRESHOLD`` = 0, the paper's single-exemplar rule; ``threshold`` is not
    used). A ``"trained"`` head then trains on a balanced set drawn with ``seed``: as
    many class-C as other images, ``n_head_train // 2`` of each or, when C has fewer
    images, all of C and as many others (the paper's "half C")."""
    single = exemplar is not None
    pick = images[exemplar:exemplar + 1] if single else images[labels == target_class]
    cut = EXEMPLAR_THRESHOLD if single else threshold
    kept = active_channels(cache.call(channel_activity, model, pick), cut)
    sub = subnetwork(model, kept, target_class, head=head, seed=seed)
    if head != "trained":
        return SubNetwork(sub, kept)
    g = torch.Generator().manual_seed(seed)
    positives = torch.nonzero(labels == target_class).flatten()
    negatives = torch.nonzero(labels != target_class).flatten()
    half = min(n_head_train // 2, len(positives), len(negatives))
    chosen = torch.cat([positives[torch.randperm(len(positives), generator=g)[:half]],
                        negatives[torch.randperm(len(negatives), generator=g)[:half]]])
    chosen = chosen.sort().values
    train_head(sub, images[chosen], labels[chosen], target_class, config)
    return SubNetwork(sub, kept, half, half)
