"""A content-addressed cache of computed tensors (checkpoints, expensive statistics).

An entry's key is a hash of everything that determines it; entries are written
atomically (temp file, then rename) and read with ``torch.load(weights_only=True)``.
An entry that does not load, or whose stored key differs, is recomputed, never used.
Entries hold CPU tensors; a tensor or module on another device enters a key with its
device kind, since results computed there may differ (CPU keys carry no device).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import __version__, devices
from .data import data_dir

__all__ = ["cache_dir", "cached", "call", "key_of", "canonical", "tensor_digest",
           "module_digest", "save_atomic", "read"]


def cache_dir() -> Path:
    """The cache folder: ``$SUBNETS_CACHE`` if set, else ``cache/`` in the data folder
    (``data.data_dir``).

    Returns:
        The folder (it may not exist yet).

    Example:
        >>> import os
        >>> cache_dir() == Path(os.environ["SUBNETS_CACHE"])
        True
    """
    return Path(os.environ.get("SUBNETS_CACHE", data_dir() / "cache")).expanduser()


def tensor_digest(t: torch.Tensor) -> str:
    """A hash of a tensor's dtype, shape and values (not its device).

    Args:
        t: any tensor.

    Returns:
        16 hex digits.

    Example:
        >>> tensor_digest(torch.zeros(3)) == tensor_digest(torch.zeros(3))
        True
        >>> tensor_digest(torch.zeros(3)) == tensor_digest(torch.zeros(3, dtype=torch.int64))
        False
    """
    t = devices.to_host(t).contiguous()
    head = str((t.dtype, tuple(t.shape))).encode()
    return hashlib.sha256(head + t.numpy().tobytes()).hexdigest()[:16]


def module_digest(module: torch.nn.Module) -> str:
    """A hash of a module's architecture (its ``repr``) and current parameters and buffers.

    Args:
        module: any module.

    Returns:
        16 hex digits.

    Example:
        >>> net = torch.nn.Linear(2, 1)
        >>> before = module_digest(net)
        >>> with torch.no_grad():
        ...     _ = net.bias.add_(1)
        >>> module_digest(net) == before
        False
    """
    h = hashlib.sha256(repr(module).encode())
    for name, value in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor_digest(value).encode())
    return h.hexdigest()[:16]


def canonical(value: Any) -> Any:
    """A JSON-able stand-in for ``value``: tensors and modules by digest (and device kind
    off the CPU), datasets by fingerprint, dataclasses by their fields.

    Args:
        value: tensors, modules, objects with a ``fingerprint()``, dataclasses, and dicts,
            lists and tuples of them, strings, numbers, booleans and None.

    Returns:
        The stand-in, which ``json.dumps`` takes.

    Raises:
        TypeError: for anything else.

    Example:
        >>> canonical({"lr": 0.1, "w": torch.zeros(2)})
        {'lr': 0.1, 'w': {'tensor': '...'}}
        >>> canonical(object())
        Traceback (most recent call last):
        ...
        TypeError: cache key: cannot hash a object
    """
    if isinstance(value, torch.Tensor):
        return _on_device({"tensor": tensor_digest(value)}, value)
    if isinstance(value, torch.nn.Module):
        return _on_device({"module": module_digest(value)}, value)
    if hasattr(value, "fingerprint"):
        return {"data": value.fingerprint()}
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {type(value).__name__: canonical(vars(value))}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    raise TypeError(f"cache key: cannot hash a {type(value).__name__}")


def _on_device(digest: dict, value: torch.Tensor | torch.nn.Module) -> dict:
    kind = devices.key_kind(value)
    return digest if kind is None else {**digest, "device": kind}


def key_of(kind: str, parts: dict[str, Any]) -> str:
    """The cache key of what ``kind`` computes from ``parts``.

    Args:
        kind: what is computed (the key's prefix, e.g. "fit").
        parts: everything that determines the result (``canonical`` values).

    Returns:
        ``kind-`` and 24 hex digits.

    Example:
        >>> key = key_of("fit", {"epochs": 2})
        >>> key.startswith("fit-"), key == key_of("fit", {"epochs": 3})
        (True, False)
    """
    # The library version is part of every key: a release that changes how something
    # is computed must not read what an older one stored.
    blob = json.dumps({"kind": kind, "version": __version__, "parts": canonical(parts)},
                      sort_keys=True)
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:24]}"


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically: a reader sees the old file or the whole
    new one, never a part (a temporary file in the same folder, then a rename).

    Args:
        obj: what ``torch.save`` takes.
        path: the file; its folder is created if missing.

    Example:
        >>> path = cache_dir() / "example.pt"
        >>> save_atomic({"key": "k", "value": {"x": torch.ones(2)}}, path)
        >>> read(path, "k")
        {'x': tensor([1., 1.])}
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read(path: Path, key: str) -> dict | None:
    """The value of the cache entry at ``path`` if it loads and carries ``key``.

    Args:
        path: an entry written by ``save_atomic`` as ``{"key": key, "value": value}``.
        key: the key it must carry.

    Returns:
        The value on the CPU; None if the file is missing, and None with a warning if it
        does not load or carries another key.

    Example:
        >>> read(cache_dir() / "missing.pt", "k") is None
        True
    """
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, map_location=devices.CPU, weights_only=True)
    except Exception as err:  # noqa: BLE001  truncated, corrupt or foreign file: recompute
        warnings.warn(f"cache entry {path.name} is unreadable ({type(err).__name__}); "
                      "recomputing", stacklevel=3)
        return None
    if not isinstance(entry, dict) or entry.get("key") != key:
        warnings.warn(f"cache entry {path.name} does not match its key; recomputing", stacklevel=3)
        return None
    return entry["value"]


def cached(kind: str, parts: dict[str, Any], compute: Callable[[], dict]) -> dict:
    """``compute()``'s result, from the cache when an entry for ``(kind, parts)`` exists,
    else computed and stored.

    Args:
        kind: what is computed (see ``key_of``).
        parts: everything that determines the result.
        compute: returns a dict of tensors, numbers, lists and strings.

    Returns:
        The dict; its tensors on the CPU either way, as they are stored.

    Example:
        >>> calls = []
        >>> def compute():
        ...     calls.append(1)
        ...     return {"total": torch.arange(4).sum()}
        >>> cached("sum", {"n": 4}, compute), cached("sum", {"n": 4}, compute)
        ({'total': tensor(6)}, {'total': tensor(6)})
        >>> len(calls)
        1
    """
    key = key_of(kind, parts)
    path = cache_dir() / f"{key}.pt"
    value = read(path, key)
    if value is None:
        value = _on_host(compute())
        # A process given a share of the seeds (distributed.in_seed_share) stores its trainings
        # only: the rest of what it computes may rest on other seeds' untrained stand-ins.
        if kind == "fit" or not os.environ.get("SUBNETS_SEED_SHARE"):
            save_atomic({"key": key, "value": value}, path)
    return value


def _on_host(value: Any) -> Any:
    """``value`` with every tensor that is not on the CPU moved there; a value with none
    comes back as it is (the same object)."""
    if isinstance(value, torch.Tensor):
        return value if devices.key_kind(value) is None else devices.to_host(value)
    if isinstance(value, dict):
        moved = {k: _on_host(v) for k, v in value.items()}
        return value if all(moved[k] is v for k, v in value.items()) else moved
    if type(value) in (list, tuple):
        moved = [_on_host(v) for v in value]
        return value if all(m is v for m, v in zip(moved, value)) else type(value)(moved)
    return value


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, cached by the function's name and its arguments' content.

    Args:
        fn: a function of tensors, modules, datasets and plain values that returns tensors
            (or dicts and lists of them).
        *args: its positional arguments.
        **kwargs: its keyword arguments.

    Returns:
        What ``fn`` returns (tensors on the CPU), computed at most once per content.

    Example:
        >>> call(torch.outer, torch.ones(2), torch.arange(3.0))
        tensor([[0., 1., 2.],
                [0., 1., 2.]])
    """
    kind = f"{fn.__module__}.{fn.__qualname__}".replace("subnets.", "")
    return cached(kind, {"args": list(args), "kwargs": kwargs}, lambda: fn(*args, **kwargs))
