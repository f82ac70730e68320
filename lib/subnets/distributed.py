"""Training over several processes: data-parallel under ``torchrun``, and the seed shares
of ``python -m subnets.run --seeds-parallel N``.

Under ``torchrun`` (``WORLD_SIZE`` > 1, or any initialised ``torch.distributed`` group)
``fit`` trains data-parallel without a change in its callers: every process draws the
same global batches in the same order, augments them alike and trains on its contiguous
share; the losses are weighted by each share's size and the gradients summed over the
processes, so each step is one process's step on the whole batch (up to rounding; batch
norm normalises each share by its own statistics, and the running statistics are
averaged over the processes after every epoch). Every process ends with the same weights;
process 0 alone reads and writes the cache and hands a cached entry to the others. The
gradients are summed by ``fit`` itself, not by a ``DistributedDataParallel`` wrapper,
whose hooks run only through the wrapper's forward: an ``Objective`` may train through
other methods (chapter 4's gates call ``penultimate`` and ``gated_logits``).

A process given a share of the seeds (``SEED_SHARE`` = "k/n") trains only the networks
of its seeds (``in_seed_share``) into the shared cache; the chapter, executed once more
afterwards, reads them all back.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from . import cache, devices

__all__ = ["SEED_SHARE", "processes", "in_seed_share", "cached_training", "summed",
           "check_shares", "synchronise"]

# "k/n" in a process that trains only the seeds s with s % n == k (``in_seed_share``).
SEED_SHARE = "SUBNETS_SEED_SHARE"


def processes(model: nn.Module | None = None) -> tuple[int, int]:
    """The processes that train together: under ``torchrun`` (``WORLD_SIZE`` > 1) the
    default process group, which the first call initialises for ``model``'s device (NCCL
    on CUDA, gloo elsewhere).

    Args:
        model: the model to train (its device picks the backend).

    Returns:
        (rank, number of processes): (0, 1) in a plain run.

    Example:
        >>> processes()
        (0, 1)
    """
    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1
        cuda = model is not None and devices.is_cuda(model)
        if cuda:  # NCCL's collectives run on the current device
            torch.cuda.set_device(devices.model_device(model))
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()



def in_seed_share(seed: int) -> bool:
    """Whether this process trains the networks of ``seed``: always, except in a process
    that ``SEED_SHARE`` gives a share of the seeds, "k/n" (``python -m subnets.run
    --seeds-parallel n`` starts n of them, one per share, to fill the cache). There ``fit``
    trains (and caches) only seeds ``s`` with ``s % n == k`` and hands back the others
    untrained, as their placebo (``fit(..., placebo=True)``), and the cache keeps only
    its trainings (``cache.cached`` stores nothing else there: other results may rest on
    an untrained stand-in, whose cache key need not show it).

    Args:
        seed: a network's seed (``TrainConfig.seed``).

    Returns:
        True when this process trains it.

    Example:
        >>> in_seed_share(3)  # no share given: every seed
        True
    """
    share = os.environ.get(SEED_SHARE)
    if not share:
        return True
    try:
        k, n = (int(v) for v in share.split("/"))
    except ValueError:
        raise ValueError(f"{SEED_SHARE}: expected 'k/n' (share k of n), got {share!r}") from None
    if not 0 <= k < n:
        raise ValueError(f"{SEED_SHARE}: expected 0 <= k < n in 'k/n', got {share!r}")
    return seed % n == k



def cached_training(model: nn.Module, parts: dict, train_it) -> dict:
    """``cache.cached("fit", parts, train_it)`` in one process; with several, all of them
    train (process 0 stores the entry), or all take process 0's cached entry.

    Args:
        model: the model trained (its device picks the process group's backend).
        parts: the cache key's parts.
        train_it: trains and returns the checkpoint entry.

    Returns:
        The entry, trained or cached.

    Example:
        >>> cached_training(None, {"x": 1}, lambda: {"trained": True})
        {'trained': True}
    """
    rank, world = processes(model)
    if world == 1:
        return cache.cached("fit", parts, train_it)
    key = cache.key_of("fit", parts)
    path = cache.cache_dir() / f"{key}.pt"
    found = [cache.read(path, key) if rank == 0 else None]
    dist.broadcast_object_list(found, src=0)
    if found[0] is not None:
        return found[0]
    entry = train_it()
    if rank == 0:
        cache.save_atomic({"key": key, "value": entry}, path)
    dist.barrier()
    return entry



def summed(values: list[float]) -> list[float]:
    """``values`` summed over the training processes (as they are in a plain run).

    Args:
        values: this process's numbers.

    Returns:
        Their sums over the processes, in order.

    Example:
        >>> summed([1.0, 2.0])
        [1.0, 2.0]
    """
    if processes()[1] == 1:
        return values
    total = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(total)
    return total.tolist()



def check_shares(n: int, batch_size: int, world: int) -> None:
    """Refuse a batch size that leaves a training process without an image.

    Args:
        n: training images.
        batch_size: the global batch's size.
        world: training processes.

    Raises:
        ValueError: naming ``batch_size``.

    Example:
        >>> check_shares(10, 4, 2)
    """
    if batch_size < world or 0 < n % batch_size < world:
        raise ValueError(f"batch_size: {batch_size} on {n} images leaves a batch smaller than "
                         f"the {world} training processes (each needs an image)")



@torch.no_grad()
def synchronise(model: nn.Module, what: str) -> None:
    """Across the training processes: "broadcast" process 0's parameters and buffers to
    all, sum the "gradients", or average the floating-point "buffers" (batch-norm
    statistics, each estimated on one process's shares).

    Args:
        model: the network; changed in place.
        what: "broadcast", "gradients" or "buffers".

    Example:
        ``run_training`` calls it under ``torchrun`` only (a process group must exist).
    """
    if what == "gradients":
        tensors = [p.grad for p in model.parameters() if p.grad is not None]
    elif what == "buffers":
        tensors = [b for b in model.buffers() if b.is_floating_point()]
    else:
        tensors = [*model.parameters(), *model.buffers()]
    # One collective per dtype, in the same order in every process (not a set's order).
    for dtype in dict.fromkeys(t.dtype for t in tensors):
        group = [t for t in tensors if t.dtype == dtype]
        flat = torch.cat([t.reshape(-1) for t in group])
        if what == "broadcast":
            dist.broadcast(flat, src=0)
        else:
            dist.all_reduce(flat)
            if what == "buffers":
                flat /= dist.get_world_size()
        for t, part in zip(group, flat.split([t.numel() for t in group])):
            t.copy_(part.view_as(t))
