"""Class-conditional channel pruning (Perna et al., chapter 1) and magnitude pruning
(Avendaño Muñoz, chapter 3; Kamath et al., chapter 5).

A channel of a conv layer is *active* for a set of images when the mean of its absolute
activation (the output of the activation module after the conv, ``hooks.activation_after``)
over those images and all positions exceeds a threshold. With one image and threshold 0
this is the paper's single-exemplar rule (absolute spatial sum > 0); with all class-C
training images and 0.05 it is the paper's class-mean rule.

``ClassSubnetwork`` builds S_C as a real, smaller network: a copy of f whose inactive
channels are removed structurally with torch-pruning's dependency graph (Fang et al.,
DepGraph): each conv's kept output channels, its batch norm, and the input channels (or
flattened feature columns) of whatever reads them are sliced, so S_C computes exactly what f
computes with the other channels switched off. Convs whose outputs are added (residual
blocks) share their channels: a channel goes only if it is inactive in all of them (the
union is kept). Supported are networks made of convs (not grouped), batch norm,
activations, pooling, dropout, flatten, residual additions and a head of linear layers;
anything else (a zero-padded identity shortcut, a concatenation) is refused with a
``ValueError`` naming the layer. Its one-logit head is f's own fully connected layers
(``"original"``), fresh layers left untrained (``"random"``, the paper's literal "the fully
connected layers are randomized") or fresh layers trained on C vs not C with the convs
frozen (``"trained"``, the book's reading of the paper).
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass

import torch
import torch_pruning
from torch import fx, nn
from torch.utils.data import TensorDataset

from . import cache, devices, hooks
from . import train as training
from .hooks import ACTIVATIONS, activation_after, activations, conv_layers, layer_names
from .methods import SubnetworkBuilder

__all__ = ["HEADS", "EXEMPLAR_THRESHOLD", "channel_activity", "active_channels", "SubNetwork",
           "ClassSubnetwork", "ablation_difference", "magnitude", "weight_sparsity"]

HEADS = ("trained", "random", "original")
EXEMPLAR_THRESHOLD = 0.0  # the single-exemplar rule: absolute spatial sum > 0


@torch.no_grad()
def channel_activity(model: nn.Module, layers: list[str] | None, inputs: torch.Tensor,
                     batch_size: int = 500) -> dict[str, torch.Tensor]:
    """Per conv layer in ``layers`` (None: every main-path conv), the mean |activation| of
    each channel after it (``hooks.activation_after``) over ``inputs`` and all spatial
    positions, on the CPU whatever the model's device.

    Args:
        model: the network.
        layers: conv layer names, or None for every main-path conv.
        inputs: N x C x H x W images.
        batch_size: images per forward pass.

    Returns:
        Conv name -> one mean |activation| per channel.

    Raises:
        ValueError: for no ``inputs``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
        >>> channel_activity(net, None, torch.rand(4, 1, 8, 8))["0"].shape
        torch.Size([2])
    """
    layers = conv_layers(model, shortcuts=False) if layers is None else list(layers)
    after = {conv: activation_after(model, conv) for conv in layers}
    recorded = list(dict.fromkeys(after.values()))
    if len(inputs) == 0:
        raise ValueError("inputs: expected at least one image to measure the channels on")
    sums = {name: 0.0 for name in recorded}
    for i in range(0, len(inputs), batch_size):
        batch = devices.to_model(model, inputs[i:i + batch_size])
        acts = activations(model, batch, recorded, batch_size=batch_size)
        for name in recorded:
            sums[name] = sums[name] + acts[name].abs().sum(dim=(0, 2, 3))
    positions = {name: len(inputs) * acts[name].shape[2] * acts[name].shape[3]
                 for name in recorded}
    return {conv: devices.to_host(sums[a]) / positions[a] for conv, a in after.items()}


def active_channels(activity: dict[str, torch.Tensor], threshold: float) -> dict[str, torch.Tensor]:
    """Indices of the channels whose activity exceeds ``threshold``, per layer. A layer
    with no active channel keeps its most active one, so that S_C stays a network.

    Args:
        activity: layer -> per-channel activity (``channel_activity``).
        threshold: the cut, >= 0 (``EXEMPLAR_THRESHOLD`` or the class-mean rule's 0.05).

    Returns:
        Layer -> indices of the kept channels, ascending.

    Example:
        >>> active_channels({"a": torch.tensor([0.0, 0.2, 0.1]),
        ...                  "b": torch.tensor([0.01, 0.03])}, 0.05)
        {'a': tensor([1, 2]), 'b': tensor([1])}
    """
    if threshold < 0:
        raise ValueError(f"threshold: expected >= 0, got {threshold}")
    kept = {}
    for name, a in activity.items():
        idx = torch.nonzero(a > threshold).flatten()
        kept[name] = idx if len(idx) else a.argmax().view(1)
    return kept


# What structural pruning can cut through: a channel of these maps to the same channel.
_CHANNELWISE = (nn.BatchNorm2d, *ACTIVATIONS, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                nn.Dropout, nn.Identity, nn.Flatten)
_FUNCTIONS = (operator.add, torch.add, torch.flatten, torch.relu, nn.functional.relu)
_METHODS = ("add", "flatten", "relu")


def _head_of(model: nn.Module) -> list[str]:
    """The modules from the first linear layer to the output, checking on the way that
    structural pruning can read ``model``: those modules form a chain (the head), and
    everything before them is made of convs and of what ``_CHANNELWISE``, ``_FUNCTIONS``
    and ``_METHODS`` name."""
    try:
        graph = fx.symbolic_trace(model).graph
    except fx.proxy.TraceError as err:
        raise ValueError(f"model: torch.fx cannot trace {type(model).__name__} ({err})") from None
    modules = dict(model.named_modules())
    head: list[fx.Node] = []
    for node in graph.nodes:
        where = list(node.meta.get("nn_module_stack", {})) or [node.name]
        module = modules.get(node.target) if node.op == "call_module" else None
        if head and node.op != "output":
            if node.op != "call_module" or node.args != (head[-1],):
                raise ValueError(f"layer {where[-1]!r}: expected the layers after "
                                 f"{head[0].target!r} to be a chain of modules (a linear head)")
            head.append(node)
        elif isinstance(module, nn.Linear):
            head = [node]
        elif not (node.op in ("placeholder", "output")
                  or isinstance(module, nn.Conv2d) and module.groups == 1
                  or isinstance(module, _CHANNELWISE)
                  or node.op == "call_function" and node.target in _FUNCTIONS
                  or node.op == "call_method" and node.target in _METHODS):
            what = type(module).__name__ if module is not None else node.target
            what = getattr(what, "__name__", what)
            raise ValueError(f"layer {where[-1]!r}: structural pruning cannot cut channels "
                             f"through {what} (supported: convs, batch norm, activations, "
                             "pooling, dropout, flatten, residual additions, a linear head)")
    if not head:
        raise ValueError(f"model: {type(model).__name__} has no linear head")
    return [node.target for node in head]


def _prune(model: nn.Module, kept: dict[str, torch.Tensor],
           example: torch.Tensor) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A copy of ``model`` without the channels of each conv in ``kept`` that it does not
    keep, and the channels each pruned conv keeps: coupled convs (added in a residual block)
    keep the union of their kept channels, and a conv coupled to one in ``kept`` is pruned
    with it."""
    pruned = copy.deepcopy(model)
    with torch.enable_grad():  # DepGraph traces the forward pass through autograd
        graph = torch_pruning.DependencyGraph().build_dependency(
            pruned, example_inputs=devices.to_model(model, example), verbose=False)
    names = {module: name for name, module in pruned.named_modules()}
    kept_after = {}
    for group in list(graph.get_all_groups(root_module_types=[nn.Conv2d])):
        convs = [names[dep.target.module] for dep, _ in group
                 if isinstance(dep.target.module, nn.Conv2d)
                 and graph.is_out_channel_pruning_fn(dep.handler)]
        chosen = [kept[c] for c in convs if c in kept]
        if not chosen:
            continue
        keep = torch.cat(chosen).unique().sort().values
        removed = sorted(set(range(group[0].dep.target.module.out_channels)) - set(keep.tolist()))
        if removed:
            group.prune(idxs=removed)
        kept_after.update({c: devices.to_host(keep) for c in convs})
    return pruned.eval(), {c: kept_after[c] for c in conv_layers(model) if c in kept_after}


class _ClassLogOdds(nn.Module):
    """f's last linear layer read out as one logit: the log-odds of f's softmax
    probability of ``target``."""

    def __init__(self, linear: nn.Linear, target: int) -> None:
        super().__init__()
        self.linear = linear
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.linear(x)
        others = torch.cat([logits[:, :self.target], logits[:, self.target + 1:]], dim=1)
        return (logits[:, self.target] - torch.logsumexp(others, dim=1)).unsqueeze(1)


def _fresh_head(pruned: nn.Module, head: list[str], seed: int) -> None:
    """Replace the linear layers of ``head`` in ``pruned`` by fresh ones of the same widths
    (initialised with ``seed``), the last with one output."""
    linears = [n for n in head if isinstance(pruned.get_submodule(n), nn.Linear)]
    with training.seeded(seed):
        for name in linears:
            old = pruned.get_submodule(name)
            out = 1 if name == linears[-1] else old.out_features
            # Made on the CPU and then moved: the same initial head on every device.
            fresh = nn.Linear(old.in_features, out, bias=old.bias is not None)
            pruned.set_submodule(name, fresh.to(old.weight.device))


def _head_inputs(model: nn.Module, head: list[str], images: torch.Tensor) -> torch.Tensor:
    """What the first layer of ``head`` reads for each image (on the CPU): ``model``'s
    forward pass cut before its head with torch.fx."""
    traced = fx.symbolic_trace(model)
    first = next(n for n in traced.graph.nodes if n.op == "call_module" and n.target == head[0])
    output = next(n for n in traced.graph.nodes if n.op == "output")
    output.args = (first.args[0],)
    traced.graph.eliminate_dead_code()
    traced.recompile()
    with torch.no_grad():
        return torch.cat([devices.to_host(traced(devices.to_model(model, chunk)))
                          for chunk in images.split(1000)])


def _train_head(model: nn.Module, head: list[str], images: torch.Tensor, labels: torch.Tensor,
                target: int, config: training.TrainConfig) -> None:
    """Train ``model``'s ``head`` in place on C vs not-C with the convs frozen. The frozen
    features are computed once and the head trains on them (the same result as freezing
    the convs, far cheaper); the whole step is cached, so a warm run computes no features
    at all."""
    layers = nn.Sequential(*[model.get_submodule(n) for n in head])

    def compute() -> dict:
        features = _head_inputs(model, head, images)
        binary = (labels == target).long()
        trained = training.fit(layers, TensorDataset(features, binary), config,
                               desc=f"head of S_{target}", cached=False)
        return {"state": layers.state_dict(), "history": trained.history.to_dict("list")}

    # Precision "auto" is timed on the head's batches: features of this shape.
    shape = (min(config.batch_size, len(images)), *_head_inputs(model, head, images[:1]).shape[1:])
    parts = {"sub": model, "images": images, "labels": labels, "target": target,
             "config": training.config_key(layers, config, shape)}
    entry = cache.cached("head", parts, compute)
    layers.load_state_dict(entry["state"])
    model.eval()


# --- magnitude pruning (Avendaño Muñoz, chapter 3) ------------------------------------

def _prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The ``weight`` of every conv and linear layer (biases and batch norm excluded)."""
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _global_magnitude(model: nn.Module, rate: float) -> nn.Module:
    """A copy of ``model`` with the fraction ``rate`` of its conv and linear weights of
    smallest magnitude, ranked across all those layers at once, set to zero: one-shot
    global magnitude pruning with ``torch.nn.utils.prune``. The copy keeps the masks
    (``weight = weight_orig * weight_mask``), so training it keeps the pruned weights at
    zero: fine-tuning with the mask kept."""
    from torch.nn.utils import prune

    if not 0 <= rate <= 1:
        raise ValueError(f"rate: expected a value in [0, 1], got {rate}")
    pruned = copy.deepcopy(model)
    weights = _prunable_weights(pruned)
    if not weights:
        raise ValueError(f"model: {type(model).__name__} has no conv or linear weights to prune")
    prune.global_unstructured(weights, pruning_method=prune.L1Unstructured, amount=float(rate))
    return pruned


def weight_sparsity(model: nn.Module) -> float:
    """The fraction of conv and linear weights that are zero.

    Args:
        model: the network (biases and batch norm are not counted).

    Returns:
        A share in [0, 1].

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2))
        >>> with torch.no_grad():
        ...     _ = net[2].weight.zero_()
        >>> weight_sparsity(net)  # the linear layer's 4 of 22 weights
        0.18181818181818182
    """
    weights = [getattr(m, name).detach() for m, name in _prunable_weights(model)]
    return sum((w == 0).sum().item() for w in weights) / sum(w.numel() for w in weights)


def _head_layer(model: nn.Module) -> str:
    """The name of the model's last linear layer (its classifier head)."""
    names = layer_names(model, (nn.Linear,))
    if not names:
        raise ValueError(f"model: {type(model).__name__} has no linear head")
    return names[-1]


def _layerwise_magnitude(model: nn.Module, rate: float, keep_head: bool = True) -> nn.Module:
    """A copy of ``model`` with the fraction ``rate`` of each conv and linear layer's
    weights, those of smallest magnitude in that layer, set to zero (one-shot layerwise
    magnitude pruning, masks kept as in ``_global_magnitude``). Every layer keeps at least
    one weight, so the output still depends on the input; ``keep_head`` leaves the last
    linear layer (``_head_layer``) dense. Global ranking can empty a whole layer whose
    weights are small (a wide last conv under a small head): the network is then constant,
    which says nothing about its representations."""
    from torch.nn.utils import prune

    if not 0 <= rate <= 1:
        raise ValueError(f"rate: expected a value in [0, 1], got {rate}")
    pruned = copy.deepcopy(model)
    head = _head_layer(pruned) if keep_head else None
    layers = [(n, m) for n, m in pruned.named_modules()
              if isinstance(m, (nn.Conv2d, nn.Linear)) and n != head]
    if not layers:
        raise ValueError(f"model: {type(model).__name__} has no conv or linear weights to prune")
    for _, m in layers:
        count = min(round(rate * m.weight.numel()), m.weight.numel() - 1)
        prune.l1_unstructured(m, "weight", amount=count)
    return pruned


_SCOPES = {"layerwise": _layerwise_magnitude, "global": _global_magnitude}


def magnitude(model: nn.Module, rate: float, scope: str = "layerwise") -> nn.Module:
    """One-shot magnitude pruning at ``rate``, ``scope`` "layerwise" (``_layerwise_magnitude``,
    head kept) or "global" (``_global_magnitude``, every conv and linear layer ranked together).

    Args:
        model: the network; it is left unchanged.
        rate: the fraction of weights set to zero, in [0, 1].
        scope: "layerwise" or "global".

    Returns:
        A pruned copy of ``model`` (its masks kept, so fine-tuning keeps the zeros).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4, 2))
        >>> round(weight_sparsity(magnitude(net, 0.5, scope="global")) * 44)  # of 36 + 8
        22
        >>> round(weight_sparsity(magnitude(net, 0.5)) * 44)  # the head kept: half the conv's
        18
    """
    if scope not in _SCOPES:
        raise ValueError(f"pruning_scope: expected one of {sorted(_SCOPES)}, got {scope!r}")
    return _SCOPES[scope](model, rate)


@dataclass
class SubNetwork:
    """S_C (``model``, a pruned copy of f with its one-logit head) with the channels each
    pruned conv keeps (``kept``, indices into f's channels) and the make-up of its head's
    training data: ``head_positives`` class-C and ``head_negatives`` other images (0 and 0
    for an untrained head). ``prior`` is the share of C the head saw, the prior that its 0.5
    cut-off on the sigmoid assumes.

    Args:
        model: S_C.
        kept: pruned conv -> indices of the channels it keeps.
        head_positives: class-C images the head was trained on.
        head_negatives: other images the head was trained on.

    Example:
        >>> sub = SubNetwork(nn.Linear(2, 1), {"conv1": torch.tensor([0, 3])}, 50, 150)
        >>> sub.prior, SubNetwork(nn.Linear(2, 1), {}).prior
        (0.25, nan)
    """

    model: nn.Module
    kept: dict[str, torch.Tensor]
    head_positives: int = 0
    head_negatives: int = 0

    @property
    def prior(self) -> float:
        total = self.head_positives + self.head_negatives
        return self.head_positives / total if total else float("nan")


class ClassSubnetwork(SubnetworkBuilder):
    """Perna et al.'s class-specific sub-network S_C of ``model`` (chapter 1): the channels of
    ``layers`` (conv names; None: every main-path conv) active on class C are kept, the
    rest removed structurally (see the module doc), and a one-logit ``head`` (one of
    ``HEADS``) decides C vs not C.

    ``threshold`` is the class-mean rule's cut on the mean |activation|. A ``"trained"``
    head is trained with ``train_config`` (a binary cross-entropy config) on a balanced
    set drawn with ``seed``: as many class-C as other images, ``n_head_train // 2`` of each
    or, when C has fewer images, all of C and as many others (the paper's "half C"); the
    fresh heads are initialised with ``seed``.

    Example:
        >>> import torch
        >>> from subnets import models
        >>> f = models.ThreeBlockCNN(in_channels=1, num_classes=3, image_size=8)
        >>> x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
        >>> method = ClassSubnetwork(f, threshold=0.0, head="original")
        >>> sub = method.build(x, target=1, labels=y)
        >>> sub.model(x).shape, sorted(sub.kept) == ["conv1", "conv2", "conv3"]
        (torch.Size([6, 1]), True)
    """

    def __init__(self, model: nn.Module, layers: list[str] | None = None, *,
                 threshold: float = 0.05, head: str = "trained",
                 train_config: training.TrainConfig | None = None, n_head_train: int = 1000,
                 seed: int = 0) -> None:
        if head not in HEADS:
            raise ValueError(f"head: expected one of {HEADS}, got {head!r}")
        if threshold < 0:
            raise ValueError(f"threshold: expected >= 0, got {threshold}")
        config = train_config or training.TrainConfig(loss="bce", seed=seed)
        if head == "trained" and config.loss != "bce":
            raise ValueError(f"train_config: a one-logit head trains with loss='bce', "
                             f"got {config.loss!r}")
        convs = conv_layers(model, shortcuts=False)
        layers = convs if layers is None else list(layers)
        unknown = [name for name in layers if name not in convs]
        if unknown:
            raise ValueError(f"layers: {unknown} are not main-path convs of "
                             f"{type(model).__name__}; they are: {convs}")
        super().__init__(model, layers)
        self.threshold, self.head = threshold, head
        self.train_config, self.n_head_train, self.seed = config, n_head_train, seed
        self.head_layers = _head_of(model)

    def kept_channels(self, inputs: torch.Tensor, target: int, labels: torch.Tensor,
                      exemplar: int | None = None) -> dict[str, torch.Tensor]:
        """The rule alone: per conv of ``layers``, the indices of the channels it keeps for
        class ``target`` (before coupled convs are joined; see ``build``).

        Args:
            inputs: training images (N x C x H x W).
            target: the class C.
            labels: the class of each input (N).
            exemplar: None for the class-mean rule (mean activity over all class-C inputs
                above ``threshold``); an index into ``inputs`` for the single-exemplar rule
                (activity on that image above ``EXEMPLAR_THRESHOLD`` = 0).

        Returns:
            Layer name -> kept channel indices. The activities are cached.

        Example:
            >>> import torch
            >>> from subnets import models
            >>> f = models.ThreeBlockCNN(in_channels=1, num_classes=2, image_size=8)
            >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])
            >>> kept = ClassSubnetwork(f, ["conv1"], threshold=1e9).kept_channels(x, 1, y)
            >>> len(kept["conv1"])  # nothing passes: the most active channel stays
            1
        """
        if not (labels == target).any():
            raise ValueError(f"target: no input is labelled {target}")
        single = exemplar is not None
        pick = inputs[exemplar:exemplar + 1] if single else inputs[labels == target]
        cut = EXEMPLAR_THRESHOLD if single else self.threshold
        return active_channels(cache.call(channel_activity, self.model, self.layers, pick), cut)

    def build(self, inputs: torch.Tensor, target: int, labels: torch.Tensor,
              exemplar: int | None = None) -> SubNetwork:
        """S_``target``: ``kept_channels``' channels (same arguments) cut out of a copy of
        the model, with its one-logit head.

        Args:
            inputs: training images (N x C x H x W); the trained head trains on a balanced
                draw of them.
            target: the class C.
            labels: the class of each input (N).
            exemplar: None for the class-mean rule, else the index of the one exemplar.

        Returns:
            The ``SubNetwork``: S_C (in eval mode) and the channels each pruned conv keeps.

        Example:
            >>> import torch
            >>> from subnets import models
            >>> f = models.ThreeBlockCNN(in_channels=1, num_classes=2, image_size=8)
            >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])
            >>> sub = ClassSubnetwork(f, head="random").build(x, 1, y, exemplar=1)
            >>> sub.model(x).shape, sub.prior != sub.prior  # untrained: no prior (NaN)
            (torch.Size([4, 1]), True)
        """
        kept = self.kept_channels(inputs, target, labels, exemplar)
        model, kept = _prune(self.model, kept, inputs[:1])
        if self.head == "original":
            last = self.head_layers[-1]
            model.set_submodule(last, _ClassLogOdds(model.get_submodule(last), target))
            return SubNetwork(model.eval(), kept)
        _fresh_head(model, self.head_layers, self.seed)
        if self.head == "random":
            return SubNetwork(model.eval(), kept)
        g = torch.Generator().manual_seed(self.seed)
        positives = torch.nonzero(labels == target).flatten()
        negatives = torch.nonzero(labels != target).flatten()
        half = min(self.n_head_train // 2, len(positives), len(negatives))
        chosen = torch.cat([positives[torch.randperm(len(positives), generator=g)[:half]],
                            negatives[torch.randperm(len(negatives), generator=g)[:half]]])
        chosen = chosen.sort().values
        _train_head(model, self.head_layers, inputs[chosen], labels[chosen], target,
                    self.train_config)
        return SubNetwork(model, kept, half, half)


def ablation_difference(model: nn.Module, sub: SubNetwork, inputs: torch.Tensor,
                        conv: str) -> float:
    """How exactly S_C computes what f computes with the channels it lacks switched off: the
    largest absolute difference between S_C's activation after ``conv`` and f's, with
    every removed channel of every pruned conv ablated (zeroed), on the kept channels.

    Args:
        model: f.
        sub: S_C, built from ``model``.
        inputs: images to compare on.
        conv: a conv that ``sub`` prunes; its activation (``hooks.activation_after``) is read.

    Returns:
        The largest absolute difference (0 up to float rounding when S_C is exact).

    Example:
        >>> import torch
        >>> from subnets import models
        >>> f = models.ThreeBlockCNN(in_channels=1, num_classes=2, image_size=8)
        >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])
        >>> sub = ClassSubnetwork(f, head="original").build(x, 1, y)
        >>> ablation_difference(f, sub, x, "conv3") < 1e-5
        True
    """
    if conv not in sub.kept:
        raise ValueError(f"conv: {conv!r} is not pruned in this S_C; it prunes {list(sub.kept)}")
    removed = {n: sorted(set(range(model.get_submodule(n).out_channels)) - set(k.tolist()))
               for n, k in sub.kept.items()}
    after = activation_after(model, conv)
    x = devices.to_model(model, inputs)
    with torch.no_grad(), hooks.Ablation(model, removed), \
            hooks.Recorder(model, [after]) as full, hooks.Recorder(sub.model, [after]) as pruned:
        model(x)
        sub.model(x)
    kept = full.outputs[after][:, devices.to_model(model, sub.kept[conv])]
    return (pruned.outputs[after] - kept).abs().max().item()
