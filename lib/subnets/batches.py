"""What training and evaluation are fed: batches of a dataset on a model's device
(``Batches``), their augmentation (``augment_batch``) and what stands for a dataset in a
cache key (``data_identity``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from . import devices
from .data import ImageSet

__all__ = ["Batches", "augment_batch", "data_identity"]


class Batches:
    """(inputs, labels) batches of ``data`` on ``model``'s device: shuffled by
    ``generator`` in the order ``DataLoader(data, shuffle=True, generator=generator)``
    gives, or in order without one. Data held in tensors is gathered a batch at a time
    (and moved to the device once, when it fits there); other datasets go through a
    DataLoader with the device's loader options (workers and pinned memory on CUDA).

    Args:
        model: the network the batches are for (its device).
        data: an ``ImageSet``, a two-tensor ``TensorDataset`` or any dataset of pairs.
        batch_size: images per batch.
        generator: shuffles the order; None keeps it.

    Example:
        >>> toy = TensorDataset(torch.arange(5.0), torch.arange(5))
        >>> [y.tolist() for _, y in Batches(nn.Linear(1, 1), toy, 2)]
        [[0, 1], [2, 3], [4]]
    """

    def __init__(self, model: nn.Module, data: Dataset, batch_size: int,
                 generator: torch.Generator | None = None) -> None:
        self.model = model
        self.batch_size = batch_size
        self.tensors = _in_memory(data)
        self.scaled = isinstance(data, ImageSet)  # uint8 to [0, 1], as ImageSet items are
        shuffle = generator is not None
        if self.tensors is None:
            self.loader = DataLoader(data, batch_size=batch_size, shuffle=shuffle,
                                     generator=generator, **devices.loader_options(model))
            return
        inputs, labels = self.tensors
        if devices.room_for(model, inputs.nbytes + labels.nbytes):
            self.tensors = devices.to_model(model, inputs, labels)
        # A loader over the indices draws from the generator exactly as a loader over the
        # data does, so the batches are the same ones, in the same order.
        self.loader = DataLoader(range(len(labels)), batch_size=batch_size, shuffle=shuffle,
                                 generator=generator, collate_fn=torch.tensor)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        # The loader's iterator is made now, not at the first batch: making one draws a
        # seed from the generator, and tqdm.auto makes one more than it uses, so the draws
        # (and the batch order) stay those of the plain DataLoader loop.
        return map(self._batch, iter(self.loader))

    def _batch(self, batch):
        if self.tensors is None:
            return devices.to_model(self.model, *batch)
        inputs, labels = self.tensors
        idx = batch.to(inputs.device)
        x, y = inputs[idx], labels[idx]
        if self.scaled:
            x = x.float().div_(255)
        return devices.upload(self.model, x), devices.upload(self.model, y)



def augment_batch(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 4 pixels (zero padding) and horizontal flips, drawn from
    ``g`` and applied on ``x``'s device.

    Args:
        x: N x C x H x W images.
        g: a CPU generator: the same draws on every device.

    Returns:
        The augmented images, shaped as ``x``.

    Example:
        >>> x = torch.ones(3, 1, 8, 8)
        >>> out = augment_batch(x, torch.Generator().manual_seed(0))
        >>> out.shape, bool((out <= 1).all())
        (torch.Size([3, 1, 8, 8]), True)
    """
    n, c, h, w = x.shape
    padded = nn.functional.pad(x, (4, 4, 4, 4))
    dx, dy = torch.randint(0, 9, (2, n), generator=g).to(x.device)
    flip = (torch.rand(n, generator=g) < 0.5).to(x.device)
    # One gather for the whole batch: image i, every channel, rows dy[i] + (0..h-1) and
    # columns dx[i] + (0..w-1) of the padded images.
    rows = dy[:, None] + torch.arange(h, device=x.device)
    cols = dx[:, None] + torch.arange(w, device=x.device)
    out = padded[torch.arange(n, device=x.device)[:, None, None, None],
                 torch.arange(c, device=x.device)[:, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    return torch.where(flip[:, None, None, None], out.flip(-1), out)



def data_identity(data: Dataset):
    """What stands for a training set in a cache key.

    Args:
        data: an ``ImageSet`` (or anything with a ``fingerprint()``) or a
            ``TensorDataset``.

    Returns:
        ``data`` itself, or the list of its tensors.

    Raises:
        TypeError: for a dataset with neither.

    Example:
        >>> data_identity(TensorDataset(torch.zeros(2), torch.ones(2)))
        [tensor([0., 0.]), tensor([1., 1.])]
    """
    if hasattr(data, "fingerprint"):
        return data
    if hasattr(data, "tensors"):
        return list(data.tensors)
    raise TypeError("fit: data needs a fingerprint() (ImageSet) or .tensors (TensorDataset) "
                    "for the cache key")



def _in_memory(data: Dataset) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(inputs, labels) of a dataset held as two tensors, or None for any other."""
    if isinstance(data, ImageSet):
        return data.images, data.labels
    if type(data) is TensorDataset and len(data.tensors) == 2:
        return data.tensors
    return None
