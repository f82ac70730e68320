"""Forward hooks as context managers that remove themselves, in the style of
pytorch-grad-cam: record the outputs of named layers, or switch channels off.

Hooks run on the model's device: a ``Recorder`` keeps what it records there (callers
compute on it, or take gradients through it); ``activations`` returns CPU tensors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Self

import torch
from torch import nn

from . import devices

__all__ = ["ACTIVATIONS", "layer", "layer_names", "conv_layers", "is_shortcut", "activation_after",
           "Recorder", "Ablation", "activations"]

# The modules that count as a conv's activation (subclasses included, like the ReLU6 of
# ``models.efficientnet``, which is an ``nn.ReLU``).
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU)


def layer(model: nn.Module, name: str) -> nn.Module:
    """The sub-module called ``name``, or an error that lists the model's conv layers.

    Args:
        model: the network.
        name: a name as in ``model.named_modules()`` ("" is the model itself).

    Returns:
        The sub-module.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
        >>> layer(model, "1")
        ReLU()
        >>> layer(model, "conv9")
        Traceback (most recent call last):
        ...
        KeyError: "layer 'conv9' not in Sequential; conv layers are: ['0']"
    """
    modules = dict(model.named_modules())
    if name not in modules:
        raise KeyError(f"layer {name!r} not in {type(model).__name__}; conv layers are: "
                       f"{conv_layers(model)}")
    return modules[name]


def is_shortcut(name: str) -> bool:
    """Whether the module called ``name`` lies on a residual block's projection shortcut, not
    on its main path: one part of its dotted name is ``shortcut`` (the book's ResNets) or
    ``downsample`` (torchvision's).

    Args:
        name: a module name as in ``model.named_modules()``.

    Returns:
        True on a shortcut.

    Example:
        >>> is_shortcut("layer1.0.downsample.0"), is_shortcut("layers.1.0.shortcut.0")
        (True, True)
        >>> is_shortcut("layer1.0.conv1")
        False
    """
    return any(part in _SHORTCUTS for part in name.split("."))


_SHORTCUTS = ("shortcut", "downsample")


def layer_names(model: nn.Module, kinds: tuple[type[nn.Module], ...] = (nn.Conv2d,),
                shortcuts: bool = True) -> list[str]:
    """The names of ``model``'s modules of the given kinds, in definition order: the
    library's one walk over a network's layers.

    Args:
        model: the network.
        kinds: the module classes to keep (subclasses included).
        shortcuts: whether to keep the modules on residual projection shortcuts
            (``is_shortcut``); False gives the main path only.

    Returns:
        Module names, as in ``model.named_modules()``.

    Example:
        >>> from subnets import models
        >>> net = models.cifar_resnet(8, shortcut="projection")
        >>> layer_names(net)[:4]
        ['stem.0', 'layers.0.0.conv1', 'layers.0.0.conv2', 'layers.1.0.conv1']
        >>> len(layer_names(net)), len(layer_names(net, shortcuts=False))
        (9, 7)
        >>> layer_names(net, kinds=(nn.Linear,))
        ['fc']
    """
    return [n for n, m in model.named_modules()
            if isinstance(m, kinds) and (shortcuts or not is_shortcut(n))]


def conv_layers(model: nn.Module, shortcuts: bool = True) -> list[str]:
    """The names of ``model``'s ``nn.Conv2d`` layers, in definition order
    (``layer_names`` for convs).

    Args:
        model: the network.
        shortcuts: whether to keep the convs of projection shortcuts (False: main path).

    Returns:
        Conv layer names.

    Example:
        >>> from torch import nn
        >>> conv_layers(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3)))
        ['0', '2']
    """
    return layer_names(model, (nn.Conv2d,), shortcuts)


def activation_after(model: nn.Module, conv: str,
                     kinds: tuple[type[nn.Module], ...] = ACTIVATIONS) -> str:
    """The activation module that follows a conv: the first instance of one of ``kinds``
    after ``conv`` in definition order, before the next main-path conv. Projection
    shortcut convs in between are skipped, so in a residual block whose shortcut is
    defined after its last conv this is the activation after the addition.

    Args:
        model: the network.
        conv: the conv layer's name.
        kinds: the activation classes; pass ``(nn.ReLU,)`` where the method needs a
            rectifier (captum's deconvnet overrides the gradient of ``nn.ReLU`` modules
            only).

    Returns:
        The activation's name.

    Raises:
        ValueError: when no such activation follows ``conv`` before the next conv.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())
        >>> activation_after(model, "0")
        '2'
    """
    layer(model, conv)
    modules = list(model.named_modules())
    start = [n for n, _ in modules].index(conv) + 1
    for name, module in modules[start:]:
        if isinstance(module, kinds):
            return name
        if isinstance(module, nn.Conv2d) and not is_shortcut(name):
            break
    wanted = ", ".join(k.__name__ for k in kinds)
    raise ValueError(f"conv {conv!r}: no activation ({wanted}) follows it before the next conv")


class Recorder(contextlib.AbstractContextManager):
    """Inside ``with Recorder(model, names) as rec:``, every forward pass stores the
    output of each named layer in ``rec.outputs[name]``, on the model's device; the hooks
    go when the block ends.

    Args:
        model: the network.
        names: the layers to record (``layer`` names).
        reduce: maps an output before it is stored (e.g. a spatial sum), or None.
        keep_graph: keep the outputs in the autograd graph (to take gradients through
            them) instead of detaching them.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
        >>> with Recorder(model, ["1"], reduce=lambda out: out.sum(1)) as rec:
        ...     _ = model(torch.ones(4, 3))
        >>> rec.outputs["1"].shape, len(model[1]._forward_hooks)
        (torch.Size([4]), 0)
    """

    def __init__(self, model: nn.Module, names: Iterable[str], reduce=None,
                 keep_graph: bool = False) -> None:
        self.names = list(names)
        self.modules = [layer(model, n) for n in self.names]
        self.reduce = reduce
        self.keep_graph = keep_graph
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = []

    def __enter__(self) -> Self:
        for name, module in zip(self.names, self.modules):
            self.handles.append(module.register_forward_hook(self.store(name)))
        return self

    def store(self, name: str):
        def hook(_module, _inputs, output):
            out = output if self.keep_graph else output.detach()
            self.outputs[name] = self.reduce(out) if self.reduce else out
        return hook

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


class Ablation(contextlib.AbstractContextManager):
    """Inside ``with Ablation(model, {name: channels}):`` the given output channels of each
    named layer are replaced by ``value`` in every forward pass.

    Args:
        model: the network.
        channels: layer name -> the output channels to replace.
        value: what they become (zero: switched off).

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 3, 1), nn.ReLU())
        >>> with Ablation(model, {"0": [0, 2]}, value=-1.0):
        ...     out = model[0](torch.ones(1, 1, 2, 2))
        >>> out[0, :, 0, 0].tolist()[::2]
        [-1.0, -1.0]
    """

    def __init__(self, model: nn.Module, channels: Mapping[str, Iterable[int]],
                 value: float = 0.0) -> None:
        # Channel indices live where the model does, so the hook moves nothing per pass.
        self.targets = [(layer(model, n), devices.to_model(model, torch.as_tensor(
            list(c), dtype=torch.long))) for n, c in channels.items()]
        self.value = value
        self.handles = []

    def __enter__(self) -> Self:
        for module, idx in self.targets:
            self.handles.append(module.register_forward_hook(self.replace(idx)))
        return self

    def replace(self, idx: torch.Tensor):
        def hook(_module, _inputs, output):
            out = output.clone()
            out[:, idx] = self.value
            return out
        return hook

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


@torch.no_grad()
def activations(model: nn.Module, inputs: torch.Tensor, names: Iterable[str],
                batch_size: int = 500, reduce=None) -> dict[str, torch.Tensor]:
    """The outputs of the named layers for all ``inputs``, in eval mode, computed a batch
    at a time on the model's device.

    Args:
        model: the network.
        inputs: N inputs, on any device.
        names: the layers.
        batch_size: inputs per forward pass.
        reduce: maps each batch's output before it is kept (see ``Recorder``).

    Returns:
        Layer name -> N x ... outputs, concatenated on the CPU.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
        >>> activations(model, torch.rand(5, 1, 8, 8), ["1"], batch_size=2)["1"].shape
        torch.Size([5, 4, 6, 6])
    """
    names = list(names)
    chunks: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    model.eval()
    with Recorder(model, names, reduce=reduce) as rec:
        for i in range(0, len(inputs), batch_size):
            model(devices.to_model(model, inputs[i:i + batch_size]))
            for n in names:
                chunks[n].append(devices.to_host(rec.outputs[n]))
    return {n: torch.cat(c) for n, c in chunks.items()}
