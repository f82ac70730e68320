"""Pretrained weights from a file or a URL, checked before any work: ``load_weights(model,
spec)``.

A chapter whose paper used a pretrained network takes a ``weights`` parameter: a local
file (relative paths resolve in the data folder, ``$SUBNETS_DATA``) or an ``http(s)`` URL,
which downloads once into torch's own hub cache (``torch.hub.get_dir()/checkpoints``) for
readers with a network. Its SHA-256 is checked when given, and else against the
hexadecimal prefix that torch hub's file names carry (``resnet20-12fca82f.th``). A missing,
corrupt or mismatched file is refused with an error that names the parameter, before any
training or analysis starts.

Checkpoints load with ``weights_only=True``; a ``{"state_dict": ...}`` wrapper and
DataParallel's ``module.`` prefix are unwrapped. Keys are matched by name when the names
agree, else by position when the order and every shape agree (ports from other code
bases, such as the TensorFlow EfficientNet-Lite0 or akamaster's CIFAR ResNets, name their
layers differently but keep their order).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from .data import data_path
from .devices import CPU

__all__ = ["WeightsError", "sha256_of", "weights_file", "load_state", "load_weights"]


class WeightsError(ValueError):
    """A weights file that is missing, corrupt, or does not fit the model.

    Example:
        >>> try:
        ...     weights_file("no/such/file.pt", parameter="weights_a")
        ... except WeightsError as err:  # a ValueError naming the chapter parameter
        ...     print(isinstance(err, ValueError), str(err).split(" (")[0])
        True weights_a: no file no/such/file.pt
    """


def sha256_of(path: str | Path) -> str:
    """The SHA-256 of a file, in hexadecimal.

    Args:
        path: the file.

    Returns:
        64 hexadecimal digits.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "empty"
        >>> _ = f.write_bytes(b"")
        >>> sha256_of(f)[:12]
        'e3b0c44298fc'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _hub_prefix(name: str) -> str | None:
    """The hash prefix in a torch-hub-style file name (``name-<hex>.ext``), if any."""
    match = re.search(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$", name)
    return match.group(1) if match else None


def weights_file(spec: str, sha256: str | None = None, parameter: str = "weights") -> Path:
    """The local file that ``spec`` names, downloaded first if it is a URL, its hash checked.

    Args:
        spec: a path (relative: inside the data folder) or an ``http(s)://`` URL.
        sha256: the expected SHA-256 (or a prefix of at least 8 digits); None: the prefix
            in a torch-hub-style file name, if it has one.
        parameter: the chapter parameter named in errors.

    Returns:
        The path of the checked file.

    Raises:
        WeightsError: the file is missing or its hash differs.

    Example:
        >>> weights_file("no/such/file.pt")
        Traceback (most recent call last):
        ...
        subnets.weights.WeightsError: weights: no file no/such/file.pt (looked in ...)
    """
    if urlparse(spec).scheme in ("http", "https"):
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        path = folder / Path(urlparse(spec).path).name
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            try:
                torch.hub.download_url_to_file(spec, str(path), progress=True)
            except OSError as err:
                raise WeightsError(f"{parameter}: could not download {spec} ({err}); "
                                   f"download it yourself and pass the file's path") from err
    else:
        path = data_path(spec)
        if not path.is_file():
            raise WeightsError(f"{parameter}: no file {spec} (looked in {path})")
    expected = (sha256 or _hub_prefix(path.name) or "").lower()
    if expected:
        if len(expected) < 8 or not re.fullmatch(r"[0-9a-f]+", expected):
            raise WeightsError(f"{parameter}: expected a SHA-256 of hexadecimal digits (at "
                               f"least 8), got {sha256!r}")
        actual = sha256_of(path)
        if not actual.startswith(expected):
            raise WeightsError(f"{parameter}: {path} has SHA-256 {actual}, expected "
                               f"{expected}: a corrupt or different file")
    return path


def load_state(path: str | Path, parameter: str = "weights") -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint, unwrapped: ``weights_only`` loading, a ``state_dict``
    entry taken out, DataParallel's ``module.`` prefix removed.

    Args:
        path: the checkpoint file.
        parameter: the chapter parameter named in errors.

    Returns:
        Name -> tensor, in the file's order.

    Example:
        >>> import tempfile, pathlib, torch
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "net.th"
        >>> torch.save({"state_dict": {"module.fc.weight": torch.ones(2, 3)}}, f)
        >>> list(load_state(f))
        ['fc.weight']
    """
    try:
        state = torch.load(path, map_location=CPU, weights_only=True)
    except Exception as err:  # a truncated zip, a pickle of arbitrary objects, ...
        raise WeightsError(f"{parameter}: {path} is not a readable checkpoint ({err})") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise WeightsError(f"{parameter}: {path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _by_position(model: nn.Module, state: dict[str, torch.Tensor],
                 parameter: str) -> dict[str, torch.Tensor]:
    """``state`` renamed to ``model``'s keys by position, every shape checked."""
    source = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    if len(source) != len(own):
        raise WeightsError(f"{parameter}: the file has {len(source)} tensors, "
                           f"{type(model).__name__} expects {len(own)}")
    mapped = {}
    for (key, value), (own_key, own_value) in zip(source, own.items()):
        if value.shape != own_value.shape:
            raise WeightsError(f"{parameter}: tensor {key} has shape {tuple(value.shape)}, "
                               f"the model's {own_key} expects {tuple(own_value.shape)}")
        mapped[own_key] = value
    return mapped


def load_weights(model: nn.Module, spec: str, sha256: str | None = None,
                 parameter: str = "weights") -> nn.Module:
    """``model`` with the weights that ``spec`` names (see ``weights_file``), matched by
    name, else by position with every shape checked.

    Args:
        model: the network, built with the architecture the weights were trained for.
        spec: a path (relative: inside the data folder) or an ``http(s)://`` URL.
        sha256: the file's expected SHA-256 (or a prefix of at least 8 digits).
        parameter: the chapter parameter named in errors.

    Returns:
        ``model`` itself, loaded, in eval mode.

    Raises:
        WeightsError: a missing, corrupt or mismatched file, or weights that do not fit.

    Example:
        >>> import tempfile, pathlib, torch
        >>> from torch import nn
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "linear.pt"
        >>> torch.save({"weight": torch.ones(2, 3), "bias": torch.zeros(2)}, f)
        >>> load_weights(nn.Linear(3, 2), str(f)).weight.sum().item()
        6.0
    """
    state = load_state(weights_file(spec, sha256, parameter), parameter)
    if _counted(state) != _counted(model.state_dict()):
        state = _by_position(model, state, parameter)
    try:
        # BN's batch counters, where the file lacks them, keep the model's values.
        model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise WeightsError(f"{parameter}: the weights do not fit {type(model).__name__} "
                           f"({err})") from err
    return model.eval()


def _counted(state: dict) -> set[str]:
    """The keys of a state dict but BN's batch counters."""
    return {k for k in state if not k.endswith("num_batches_tracked")}
