"""Avendaño Muñoz's receptive-field variants (chapter 3): VGG- and ResNet-style networks that differ
only in the max-pool right after the first conv (no parameters, so every variant of an architecture
has the same parameter count).

Level ``s`` is a pool of kernel ``s + 1`` and stride ``s``; level 0 is no pool. The
paper's text says only the kernel changes, but its receptive-field column
(VGG 181/359/537/715, ResNet50 213/318/423) follows from the layer arithmetic only when
the stride grows with the kernel (kernel s + 1, stride s, s = 1..4), and its conclusion
notes that the feature maps shrank with the receptive field, which a stride-1 pool would
not do. ``subnets.receptive`` reproduces the column from these configurations.

Both architectures are initialised as torchvision initialises its VGG and ResNet
(``torchvision_init``; the ResNet does so itself).
"""

from __future__ import annotations

import copy
import itertools

import pandas as pd
import torch
from torch import nn

from .. import claims, devices, hooks, receptive, train
from .resnet import ResNet
from .vgg import VGG, cfgs

__all__ = ["RF_ARCHITECTURES", "rf_pool_of", "rf_model", "check_rf_variants", "check_input_size",
           "vgg19_rf", "resnet50_rf", "vgg_small_rf", "resnet_small_rf", "torchvision_init",
           "variant_networks", "pytorch_init", "input_dependence", "PAPER_RECEPTIVE_FIELDS",
           "paper_receptive_fields", "variant_table", "PAPER_ACCURACY", "PAPER_PROJECTION",
           "FAMILY", "initialisation_spread", "construction_claims", "train_config",
           "trained_networks"]


def rf_pool_of(level: int) -> tuple[int, int]:
    """The receptive-field pool at ``level``: kernel ``level + 1``, stride ``level``.

    Args:
        level: an integer >= 0 (0: no pool).

    Returns:
        (kernel, stride); (1, 1) at level 0.

    Raises:
        ValueError: naming a bad ``level``.

    Example:
        >>> [rf_pool_of(level) for level in range(4)]
        [(1, 1), (2, 1), (3, 2), (4, 3)]
    """
    if not isinstance(level, int) or level < 0:
        raise ValueError(f"level: expected an integer >= 0, got {level!r}")
    return (level + 1, level) if level else (1, 1)


def _scaled(cfg: tuple[int | str, ...], width: int) -> tuple[int | str, ...]:
    """A VGG layout written at width 64 with its first conv ``width`` wide."""
    return tuple(c if c == "M" else c * width // 64 for c in cfg)


def vgg19_rf(level: int, in_channels: int = 3, num_classes: int = 10, width: int = 64) -> VGG:
    """The paper's VGG (VGG19 layout, ``vgg.cfgs["vgg19_rf"]``) at receptive-field ``level``.

    Args:
        level: the receptive-field level (``rf_pool_of``).
        in_channels: input channels.
        num_classes: outputs.
        width: the first conv's channels (64: the paper's, 16: a sixteenth of its
            parameters).

    Returns:
        The network, initialised as torchvision's VGG.

    Example:
        >>> vgg19_rf(2, width=4)(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 10])
    """
    kernel, stride = rf_pool_of(level)
    return torchvision_init(VGG(_scaled(cfgs["vgg19_rf"], width), in_channels, num_classes,
                                rf_pool=kernel, rf_pool_stride=stride))


def resnet50_rf(level: int, in_channels: int = 3, num_classes: int = 10,
                width: int = 64) -> ResNet:
    """A CIFAR-style ResNet50 (3x3 stem, bottlenecks 3-4-6-3) at receptive-field
    ``level``.

    Args:
        level: the receptive-field level (``rf_pool_of``).
        in_channels: input channels.
        num_classes: outputs.
        width: the first stage's width; the others 2x, 4x, 8x (64: the paper's).

    Returns:
        The network.

    Example:
        >>> resnet50_rf(1, width=4).fc.in_features
        128
    """
    kernel, stride = rf_pool_of(level)
    return ResNet((3, 4, 6, 3), tuple(width * 2 ** i for i in range(4)), in_channels,
                  num_classes, rf_pool=kernel, rf_pool_stride=stride, block="bottleneck")


def vgg_small_rf(level: int, in_channels: int = 1, num_classes: int = 10, width: int = 8) -> VGG:
    """Six 3x3 convs (``width``, 2x, 4x wide; ``vgg.cfgs["vgg_small_rf"]``) with two 2x2
    pools: a 28x28 image still leaves a 1x1 map at level 4.

    Args:
        level: the receptive-field level (``rf_pool_of``).
        in_channels: input channels.
        num_classes: outputs.
        width: the first conv's channels.

    Returns:
        The network, initialised as torchvision's VGG.

    Example:
        >>> vgg_small_rf(4).eval()(torch.rand(1, 1, 28, 28)).shape
        torch.Size([1, 10])
    """
    kernel, stride = rf_pool_of(level)
    return torchvision_init(VGG(_scaled(cfgs["vgg_small_rf"], width), in_channels, num_classes,
                                rf_pool=kernel, rf_pool_stride=stride))


def resnet_small_rf(level: int, in_channels: int = 1, num_classes: int = 10,
                    width: int = 8) -> ResNet:
    """A ResNet8 (one basic block per stage, ``width``, 2x, 4x wide) at receptive-field
    ``level``.

    Args:
        level: the receptive-field level (``rf_pool_of``).
        in_channels: input channels.
        num_classes: outputs.
        width: the first stage's width.

    Returns:
        The network.

    Example:
        >>> resnet_small_rf(3).stem[-1]
        MaxPool2d(kernel_size=4, stride=3, padding=2, dilation=1, ceil_mode=False)
    """
    kernel, stride = rf_pool_of(level)
    return ResNet((1, 1, 1), (width, 2 * width, 4 * width), in_channels, num_classes,
                  rf_pool=kernel, rf_pool_stride=stride)


RF_ARCHITECTURES = {"vgg19": vgg19_rf, "resnet50": resnet50_rf, "vgg": vgg_small_rf,
                    "resnet": resnet_small_rf}


def rf_model(arch: str, level: int, in_channels: int = 3, num_classes: int = 10,
             width: int | None = None):
    """Architecture ``arch`` at receptive-field ``level``.

    Args:
        arch: one of ``RF_ARCHITECTURES``.
        level: the receptive-field level (``rf_pool_of``).
        in_channels: input channels.
        num_classes: outputs.
        width: its first stage's channels (None: the architecture's own).

    Returns:
        The network.

    Raises:
        ValueError: naming ``architectures``, ``rf_levels`` or ``width``.

    Example:
        >>> type(rf_model("vgg", 2, in_channels=1)).__name__
        'VGG'
    """
    check_rf_variants([arch], [level])
    if width is not None and (not isinstance(width, int) or width < 1):
        raise ValueError(f"width: expected an integer >= 1, got {width!r}")
    extra = {} if width is None else {"width": width}
    return RF_ARCHITECTURES[arch](level, in_channels=in_channels, num_classes=num_classes, **extra)


def check_rf_variants(architectures, levels) -> None:
    """Check the receptive-field variants asked for, before any work (builds nothing).

    Args:
        architectures: names that must be in ``RF_ARCHITECTURES``.
        levels: levels that must be integers >= 0.

    Raises:
        ValueError: naming ``architectures`` or ``rf_levels``.

    Example:
        >>> check_rf_variants(["vgg", "resnet"], [0, 1, 2])
        >>> check_rf_variants(["vgg"], [-1])
        Traceback (most recent call last):
        ...
        ValueError: rf_levels: expected integers >= 0, got [-1]
    """
    unknown = [a for a in architectures if a not in RF_ARCHITECTURES]
    if unknown or not architectures:
        raise ValueError(f"architectures: expected names from {sorted(RF_ARCHITECTURES)}, "
                         f"got {list(architectures)}")
    bad = [level for level in levels if not isinstance(level, int) or level < 0]
    if bad or not levels:
        raise ValueError(f"rf_levels: expected integers >= 0, got {list(levels)}")


def check_input_size(architectures, levels, in_channels: int, image_size: int,
                     width: int | None = None) -> None:
    """Check that every variant leaves a feature map on ``image_size``-square inputs
    (shapes only, on the meta device: no weights, no work).

    Args:
        architectures: names in ``RF_ARCHITECTURES``.
        levels: receptive-field levels.
        in_channels: input channels.
        image_size: the inputs' side.
        width: the first stage's channels (None: each architecture's own).

    Raises:
        ValueError: naming ``image_size`` where a variant's maps vanish.

    Example:
        >>> check_input_size(["vgg"], [4], 1, 28)
        >>> check_input_size(["vgg"], [4], 1, 8)
        Traceback (most recent call last):
        ...
        ValueError: image_size: 8x8 images leave no feature map in vgg at rf level 4; ...
    """
    for arch in architectures:
        for level in levels:
            with devices.META:
                model = rf_model(arch, level, in_channels, 2, width).eval()
                try:
                    model(torch.empty(1, in_channels, image_size, image_size))
                except RuntimeError:
                    raise ValueError(f"image_size: {image_size}x{image_size} images leave no "
                                     f"feature map in {arch} at rf level {level}; use larger "
                                     "images or lower levels") from None


def torchvision_init(model: nn.Module) -> nn.Module:
    """Initialise ``model`` in place as torchvision's VGG does: convs Kaiming-normal
    (fan out, ReLU gain) with zero bias, batch norm weight 1 and bias 0, linear layers
    N(0, 0.01) with zero bias. PyTorch's default initialisation shrinks the signal at
    every conv, so that a deep VGG's output at initialisation hardly depends on its input.

    Args:
        model: the network; changed in place.

    Returns:
        ``model``.

    Example:
        >>> net = torchvision_init(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(2, 2)))
        >>> net[0].bias.abs().sum().item(), net[1].bias.abs().sum().item()
        (0.0, 0.0)
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
    return model


def variant_networks(architectures, levels, seeds: int = 1, in_channels: int = 3,
                     num_classes: int = 10, width: int | None = None,
                     device: torch.device | str | None = None) -> dict[tuple, nn.Module]:
    """Every receptive-field variant, from the initial weights of every seed: the networks
    that chapter 3 trains (and that its paper-preset test builds).

    Args:
        architectures: names from ``RF_ARCHITECTURES``.
        levels: receptive-field levels (``rf_pool_of``).
        seeds: seeds 0 .. seeds - 1; seed ``s`` seeds torch's generator while the network
            is built, so a variant's seed-``s`` network does not depend on the others built.
        in_channels, num_classes, width: as in ``rf_model``.
        device: where the networks are put, a ``subnets.device`` spec such as "auto"
            (None: where they were built).

    Returns:
        ``{(architecture, level, seed): network}``, architectures outermost.

    Example:
        >>> nets = variant_networks(["vgg"], [1, 2], seeds=2, in_channels=1, width=4)
        >>> list(nets)
        [('vgg', 1, 0), ('vgg', 1, 1), ('vgg', 2, 0), ('vgg', 2, 1)]
    """
    check_rf_variants(architectures, levels)
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds: expected an integer >= 1, got {seeds!r}")
    nets = {}
    for arch, level, seed in itertools.product(architectures, levels, range(seeds)):
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            nets[arch, level, seed] = rf_model(arch, level, in_channels, num_classes, width)
        finally:
            torch.random.set_rng_state(state)
        if device is not None:
            nets[arch, level, seed] = nets[arch, level, seed].to(devices.device(device))
    return nets


def pytorch_init(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-initialise ``model`` in place as PyTorch initialises its layers by default
    (``reset_parameters`` of every module that has one): the initialisation that
    ``torchvision_init`` replaces, kept to measure what it changes.

    Args:
        model: any network.
        seed: seeds the draw, so that it does not depend on what drew from torch's global
            generator before (a chapter that read its networks from the cache drew less).

    Returns:
        ``model`` itself.

    Example:
        >>> conv = torchvision_init(nn.Sequential(nn.Conv2d(1, 4, 3)))[0]
        >>> before = conv.weight.std().item()
        >>> after = pytorch_init(nn.Sequential(conv))[0].weight.std().item()
        >>> after < before
        True
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in model.modules():
            if m is not model and hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return model


@torch.no_grad()
def input_dependence(model: nn.Module, inputs: torch.Tensor) -> float:
    """How much ``model``'s output depends on its input, in eval mode: the standard
    deviation of each logit over ``inputs``, averaged, relative to the logits' mean size.

    Args:
        model: a classifier.
        inputs: a batch of at least two inputs (N x C x H x W).

    Returns:
        Near 0 when every input gets the same logits; of order 1 when they differ as much
        as their size.

    Example:
        >>> constant = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> _ = nn.init.zeros_(constant[1].weight), nn.init.ones_(constant[1].bias)
        >>> input_dependence(constant, torch.rand(8, 1, 2, 2))
        0.0
    """
    if len(inputs) < 2:
        raise ValueError(f"inputs: expected at least 2, got {len(inputs)}")
    was_training = model.training
    try:
        logits = model.eval()(devices.to_model(model, inputs))
    finally:
        model.train(was_training)
    return (logits.std(0).mean() / logits.abs().mean()).item()


# The paper's receptive-field column (Tables 1 and 2), levels 1 to 4.
PAPER_RECEPTIVE_FIELDS = {"vgg19": [181, 359, 537, 715], "resnet50": [110, 213, 318, 423]}


def paper_receptive_fields() -> pd.DataFrame:
    """The paper's receptive-field column beside the layer arithmetic of this module's
    VGG19 and ResNet50 variants (built on the meta device: no weights allocated).

    Returns:
        One row per architecture and level, with "pool (kernel, stride)", "paper", "layer
        arithmetic" (``receptive.receptive_field``), "parameters".

    Example:
        >>> paper_receptive_fields().query("architecture == 'vgg19'")["layer arithmetic"].tolist()
        [181, 359, 537, 715]
    """
    rows = []
    for arch, sizes in PAPER_RECEPTIVE_FIELDS.items():
        for level, size in enumerate(sizes, start=1):
            with devices.META:
                model = rf_model(arch, level)
            rows.append({"architecture": arch, "level": level,
                         "pool (kernel, stride)": rf_pool_of(level), "paper": size,
                         "layer arithmetic": receptive.receptive_field(model).size,
                         "parameters": sum(p.numel() for p in model.parameters())})
    return pd.DataFrame(rows)


def variant_table(nets: dict[tuple, nn.Module], inputs: torch.Tensor,
                  max_support: int = 512) -> pd.DataFrame:
    """Per variant (the seed-0 network of each architecture and level): its pool, its
    receptive field by the layer arithmetic and by gradient support (measured where the
    input it needs is at most ``max_support`` pixels wide), its last feature map, its
    parameters, and how much its output depends on its input (``input_dependence``).

    Args:
        nets: ``variant_networks``'s result.
        inputs: a few images (at least two) for ``input_dependence`` and the feature map.
        max_support: the widest input on which the gradient support is measured.

    Returns:
        One row per architecture and level.

    Example:
        >>> nets = variant_networks(["vgg"], [1], in_channels=1, width=4)
        >>> variant_table(nets, torch.rand(4, 1, 28, 28))["receptive field"].tolist()
        [33]
    """
    rows = []
    for (arch, level, seed), model in nets.items():
        if seed != 0:
            continue
        layer = receptive.feature_layer(model)
        last = hooks.activations(model, inputs[:1], [layer])[layer]
        field = receptive.receptive_field(model).size
        support = (receptive.gradient_support(model, n_inputs=4)
                   if 2 * field + 1 <= max_support else float("nan"))
        rows.append({"architecture": arch, "level": level,
                     "pool (kernel, stride)": rf_pool_of(level), "receptive field": field,
                     "gradient support": support,
                     "last feature map": f"{last.shape[-2]}x{last.shape[-1]}",
                     "parameters": sum(p.numel() for p in model.parameters()),
                     "input dependence at initialisation": input_dependence(model, inputs)})
    return pd.DataFrame(rows)


# The paper's means (Tables 1 and 2), smallest to largest field; ResNet50 has no level 1
# in Table 2.
PAPER_ACCURACY = {
    "Table 1 (CIFAR-10)": {
        "VGG": {"dense": "93.5 / 91.1 / 87.8 / 85.8", "pruned": "10.9 / 32.4 / 87.6 / 85.8",
                "difference": "82.6 / 58.7 / 0.18 / 0.07"},
        "ResNet50": {"dense": "94.8 / 94.0 / 92.2 / 90.4", "pruned": "56 / 91.7 / 91.4 / 90.2",
                     "difference": "38.7 / 2.25 / 0.85 / 0.18"}},
    "Table 2 (Tiny ImageNet)": {
        "VGG": {"dense": "61.5 / 53.2 / 41.0 / 38.5", "pruned": "0.75 / 0.63 / 16.7 / 21.8",
                "difference": "60.8 / 52.6 / 24.3 / 16.7"},
        "ResNet50": {"dense": "— / 61.8 / 59.1 / 56.5", "pruned": "— / 5.91 / 8.56 / 21.4",
                     "difference": "— / 55.9 / 50.5 / 35.0"}}}
# The paper's Tables 3 and 4: mean maximum of the projected gradient, levels 1 to 4.
PAPER_PROJECTION = {"VGG": "Table 3: 1.24e-05 / 2.48e-06 / 1.32e-07 / 7.26e-08",
                    "ResNet50": "Table 4: 0.322 / 0.179 / 0.111 / 0.064"}
# The paper's family of each architecture name.
FAMILY = {"vgg": "VGG", "vgg19": "VGG", "resnet": "ResNet50", "resnet50": "ResNet50"}


def initialisation_spread(nets: dict[tuple, nn.Module], inputs: torch.Tensor) -> pd.DataFrame:
    """``input_dependence`` of every seed-0 network as built (torchvision's initialisation)
    and re-initialised as PyTorch initialises its layers by default (``pytorch_init``, on a
    copy).

    Args:
        nets: ``variant_networks``'s result.
        inputs: at least two images.

    Returns:
        One row per (architecture, level), with "torchvision" and "PyTorch default".

    Example:
        >>> nets = variant_networks(["vgg"], [1], in_channels=1, width=4)
        >>> initialisation_spread(nets, torch.rand(4, 1, 28, 28)).columns.tolist()
        ['torchvision', 'PyTorch default']
    """
    rows = {(a, lv): {"torchvision": input_dependence(m, inputs),
                      "PyTorch default": input_dependence(pytorch_init(copy.deepcopy(m)), inputs)}
            for (a, lv, s), m in nets.items() if s == 0}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["architecture", "level"])


def construction_claims(paper_table: pd.DataFrame, variants: pd.DataFrame) -> list:
    """The settings of this construction, as claims rows shown but not judged: the
    paper's receptive fields from the layer arithmetic (per architecture), the gradient
    support against the arithmetic, and equal parameter counts across levels.

    Args:
        paper_table: ``paper_receptive_fields()``.
        variants: ``variant_table(...)`` of the networks at hand.

    Returns:
        A list of ``claims.Claim`` without a rule.

    Example:
        >>> nets = variant_networks(["vgg"], [1, 2], in_channels=1, width=4)
        >>> rows = construction_claims(paper_receptive_fields(),
        ...                            variant_table(nets, torch.rand(2, 1, 28, 28)))
        >>> [r.shown for r in rows][2:]
        ['2 of 2 measured', 'vgg: 4,838']
    """
    rows = []
    for arch, ours in paper_table.groupby("architecture", sort=False):
        rows.append(claims.Claim(
            f"{FAMILY[arch]} receptive fields from the layer arithmetic (kernel s+1, stride s)",
            " / ".join(map(str, ours.paper)),
            float((ours.paper == ours["layer arithmetic"]).sum()),
            shown=" / ".join(map(str, ours["layer arithmetic"]))))
    measured = variants.dropna(subset=["gradient support"])
    matched = int((measured["gradient support"] == measured["receptive field"]).sum())
    rows.append(claims.Claim(
        "gradient support = layer arithmetic (this book's variants)", "(a gradient library)",
        float(matched), shown=f"{matched} of {len(measured)} measured"))
    counts = variants.groupby("architecture", sort=False).parameters
    rows.append(claims.Claim(
        "every receptive-field variant has the same parameters", "yes (pool only)",
        float(counts.nunique().eq(1).all()),
        shown=", ".join(f"{a}: {n:,}" for a, n in counts.first().items())))
    return rows


_TRAINING = ("epochs", "batch_size", "lr", "weight_decay", "clip_mode", "clip_threshold",
             "augment", "precision")


def train_config(params: dict, seed: int, **changes):
    """The training recipe of chapter 3 (the paper's: SGD with momentum 0.9, weight decay,
    a cosine schedule, gradient clipping) from the chapter's parameters.

    Args:
        params: the chapter's parameters (``parameters.check_chapter``'s result, or a preset's):
            epochs, batch_size, lr, weight_decay, clip_mode ("norm" or "value"),
            clip_threshold (0: no clipping), augment, precision.
        seed: the training seed (batch order, augmentation).
        **changes: parameters replaced for this one configuration (fine-tuning, a
            clipping rule).

    Returns:
        A ``train.TrainConfig``.

    Example:
        >>> p = {"epochs": 2, "batch_size": 64, "lr": 0.05, "weight_decay": 5e-5,
        ...      "clip_mode": "value", "clip_threshold": 0.1, "augment": False,
        ...      "precision": "fp32"}
        >>> config = train_config(p, 0, lr=1e-4)
        >>> config.lr, config.clip_grad_value, config.clip_grad_norm
        (0.0001, 0.1, None)
    """
    unknown = sorted(set(changes) - set(_TRAINING))
    if unknown:
        raise ValueError(f"changes: {unknown} are not training parameters; expected {_TRAINING}")
    p = {**params, **changes}
    if p["clip_mode"] not in ("norm", "value"):
        raise ValueError(f"clip_mode: expected 'norm' or 'value', got {p['clip_mode']!r}")
    return train.TrainConfig(epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"],
                             optimizer="sgd", momentum=0.9, weight_decay=p["weight_decay"],
                             schedule="cosine", augment=p["augment"], precision=p["precision"],
                             seed=seed, **{f"clip_grad_{p['clip_mode']}": p["clip_threshold"]
                                           or None})


def trained_networks(nets: dict[tuple, nn.Module], data, params: dict, untrained: bool = False,
                     desc: str = "training", **changes) -> dict[tuple, nn.Module]:
    """A trained copy of every network, each with its seed's ``train_config`` (the seed is
    the key's last entry), or with ``untrained`` its placebo: the same network untrained,
    batch-norm statistics re-estimated on training images (``train.fit(placebo=True)``).
    Trainings are cached (``train.fit``).

    Args:
        nets: networks by (architecture, level, seed) key (left unchanged).
        data: the training set.
        params: the chapter's parameters, as in ``train_config``.
        untrained: return the placebos instead.
        desc: the progress bars' label, followed by each key.
        **changes: as in ``train_config``.

    Returns:
        ``{key: trained copy}``, in eval mode.

    Example:
        >>> from subnets.data import ImageSet
        >>> images = ImageSet(torch.zeros(4, 1, 28, 28, dtype=torch.uint8),
        ...                   torch.tensor([0, 1, 0, 1]), ["a", "b"], "tiny")
        >>> nets = variant_networks(["vgg"], [1], in_channels=1, num_classes=2, width=4)
        >>> p = {"epochs": 1, "batch_size": 4, "lr": 0.01, "weight_decay": 0.0,
        ...      "clip_mode": "norm", "clip_threshold": 0.0, "augment": False,
        ...      "precision": "fp32"}
        >>> list(trained_networks(nets, images, p, untrained=True))
        [('vgg', 1, 0)]
    """
    return {key: train.fit(copy.deepcopy(model), data, train_config(params, key[-1], **changes),
                           desc=f"{desc} {' '.join(map(str, key))}", placebo=untrained).model
            for key, model in nets.items()}
