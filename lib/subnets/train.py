"""Training and evaluation with a content-addressed checkpoint cache.

``fit`` trains a model or, when the same model (architecture and initial weights), data
and configuration were trained before, loads the checkpoint instead. Seeds fix the
initialisation (callers build models under ``seeded``) and the batch order, so the same
parameters give the same weights on the same machine.

Everything runs on the model's device. ``TrainConfig.precision`` picks the arithmetic:
"fp32" (the plain float32 computation, bit for bit), "bf16" (autocast) or "auto" (bf16
where it trains this network on batches of this shape faster, ``devices.precision``,
timed once and cached); the cache key records the resolved one. On CUDA training also
uses channels-last memory and cuDNN's fastest kernels, so its weights differ slightly and
its cache entries are keyed apart. Checkpoints are stored on the CPU and loaded onto
the model's device.

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

``fit(..., placebo=True)`` trains nothing: the network keeps its initial weights, with
its batch-norm statistics re-estimated on training images (``recalibrate_batch_norm``) so
that an untrained network is not degenerate. A chapter's placebo run uses it to show what
its claims read off networks that never saw the data.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import os
from dataclasses import asdict, dataclass, field, replace

import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from . import cache, devices, metrics
from .data import ImageSet
from .progress import bar

__all__ = ["TrainConfig", "Trained", "Evaluation", "Objective", "seeded", "fit", "run_training",
           "evaluate", "predict", "predicted_labels", "loss_function", "augment_batch",
           "data_identity", "config_key", "batch_shape", "recalibrate_batch_norm", "processes",
           "PLACEBO_IMAGES", "SEED_SHARE", "in_seed_share"]

# Training images on which a placebo network's batch-norm statistics are re-estimated.
PLACEBO_IMAGES = 2048
# "k/n" in a process that trains only the seeds s with s % n == k (``in_seed_share``).
SEED_SHARE = "SUBNETS_SEED_SHARE"


@contextlib.contextmanager
def seeded(seed: int):
    """Seed torch's global generator for the block (model construction, say) and restore
    its state after it.

    Args:
        seed: the seed.

    Example:
        >>> with seeded(1):
        ...     a = torch.rand(2)
        >>> with seeded(1):
        ...     b = torch.rand(2)
        >>> torch.equal(a, b)
        True
    """
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


@dataclass(frozen=True)
class TrainConfig:
    """How ``fit`` trains; every field is part of the checkpoint's cache key.

    Args:
        epochs: passes over the training set (0: the initial weights).
        batch_size: images per step.
        lr: the learning rate.
        optimizer: "adam" or "sgd" (with ``momentum``, nesterov=False).
        momentum: SGD's momentum.
        weight_decay: L2 weight decay.
        schedule: "constant" or "cosine" (per step, down to zero).
        loss: "cross_entropy", or "bce" (one logit, labels 0/1).
        augment: random shifts of up to 4 pixels and horizontal flips (CIFAR-style,
            ``augment_batch``).
        snapshots: also keep the weights after every epoch (``Trained.at_epoch``).
        clip_grad_norm: clip the gradient's global L2 norm to this (Avendaño: 0.1).
        clip_grad_value: or clip each gradient element to [-v, v].
        precision: "fp32", "bf16" (autocast) or "auto" (``devices.precision``).
        compile: ``torch.compile`` (inductor) the forward pass: faster steps after a
            compilation of tens of seconds per network, which short trainings do not
            earn back.
        seed: the seed of the batch order, augmentation and dropout.

    Raises:
        ValueError: naming the field whose value is out of range.

    Example:
        >>> TrainConfig(epochs=2, schedule="cosine").schedule
        'cosine'
        >>> TrainConfig(optimizer="lbfgs")
        Traceback (most recent call last):
        ...
        ValueError: optimizer: expected 'adam' or 'sgd', got 'lbfgs'
    """

    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    loss: str = "cross_entropy"
    augment: bool = False
    snapshots: bool = False
    clip_grad_norm: float | None = None
    clip_grad_value: float | None = None
    precision: str = "fp32"
    compile: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs: expected >= 0, got {self.epochs}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer: expected 'adam' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule: expected 'constant' or 'cosine', got {self.schedule!r}")
        if self.loss not in ("cross_entropy", "bce"):
            raise ValueError(f"loss: expected 'cross_entropy' or 'bce', got {self.loss!r}")
        for name in ("clip_grad_norm", "clip_grad_value"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name}: expected > 0 or None, got {value}")
        if self.clip_grad_norm is not None and self.clip_grad_value is not None:
            raise ValueError("clip_grad_value: clip by value or by norm, not both "
                             "(clip_grad_norm is set)")
        if self.precision not in devices.PRECISIONS:
            raise ValueError(f"precision: expected one of {devices.PRECISIONS}, "
                             f"got {self.precision!r}")


@dataclass
class Trained:
    """What ``fit`` returns: a trained model, its per-epoch history and (if asked for)
    its weights after every epoch.

    Args:
        model: the network, in eval mode, on its device.
        history: one row per epoch: epoch, loss, train_accuracy (and test_accuracy).
        snapshots: state dicts after epochs 1, 2, ... (with ``TrainConfig.snapshots``).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> toy = TensorDataset(torch.rand(8, 3), torch.arange(8) % 2)
        >>> trained = fit(nn.Linear(3, 2), toy, TrainConfig(epochs=2, snapshots=True),
        ...               cached=False)
        >>> len(trained.snapshots), type(trained.at_epoch(1)).__name__
        (2, 'Linear')
    """

    model: nn.Module
    history: pd.DataFrame
    snapshots: list[dict[str, torch.Tensor]] = field(default_factory=list)

    def at_epoch(self, epoch: int) -> nn.Module:
        """A copy of the model with the weights it had after ``epoch`` (1-based)."""
        if not self.snapshots:
            raise ValueError("no snapshots: train with TrainConfig(snapshots=True)")
        if not 1 <= epoch <= len(self.snapshots):
            # snapshots[epoch - 1] would read epoch 0 as the last epoch
            raise ValueError(f"epoch: expected 1..{len(self.snapshots)} (snapshots are kept "
                             f"after each epoch, not before training), got {epoch}")
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.snapshots[epoch - 1])
        return model.eval()


def loss_function(name: str):
    """The loss of ``TrainConfig.loss``, a function of (logits, labels).

    Args:
        name: "cross_entropy", or "bce" (one logit per input, labels 0/1).

    Returns:
        The mean loss over the batch.

    Example:
        >>> round(loss_function("bce")(torch.zeros(2, 1), torch.tensor([0, 1])).item(), 4)
        0.6931
    """
    if name == "bce":
        return lambda logits, y: nn.functional.binary_cross_entropy_with_logits(
            logits.squeeze(1), y.float())
    return nn.functional.cross_entropy


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


def fit(model: nn.Module, data: Dataset, config: TrainConfig = TrainConfig(), *,
        test_data: Dataset | None = None, desc: str = "training",
        cached: bool = True, placebo: bool = False) -> Trained:
    """Train ``model`` on ``data`` (a dataset of (image, label) pairs) on the model's
    device, or load the cached result of that exact training.

    Args:
        model: the network, built under ``seeded`` so that its initial weights are fixed.
        data: the training set (an ``ImageSet`` or a ``TensorDataset``).
        config: optimiser, schedule, epochs, precision and seed.
        test_data: evaluated after every epoch (part of the cache key: it is part of the
            history).
        desc: the progress bar's label.
        cached: False for callers that cache a larger computation around the training.
        placebo: train nothing: the model keeps its initial weights, its batch-norm
            statistics re-estimated on ``PLACEBO_IMAGES`` training images; its history is
            one row, epoch 0 (loss and training accuracy NaN). So is a network whose
            ``config.seed`` is not this process's (``in_seed_share``).

    Returns:
        ``Trained``: the model (in eval mode, on its device), its per-epoch history and,
        with ``config.snapshots``, its weights after every epoch.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> toy = TensorDataset(torch.rand(8, 1, 2, 2), torch.arange(8) % 2)
        >>> fit(net, toy, TrainConfig(epochs=1, batch_size=4), cached=False).history.epoch.tolist()
        [1]
    """
    if placebo or not in_seed_share(config.seed):
        return _placebo(model, data, config, test_data)
    # "auto" is decided once, here: the cache key and the training read the same verdict.
    config = replace(config, precision=_precision(model, data, config))
    if cached:
        # The model enters the key with its device kind off the CPU (cache.canonical).
        parts = {"model": model, "data": data_identity(data), "config": config_key(model, config),
                 "test": None if test_data is None else data_identity(test_data)}
        entry = _cached_training(model, parts,
                                 lambda: run_training(model, data, config, test_data, desc))
    else:
        entry = run_training(model, data, config, test_data, desc)
    model.load_state_dict(entry["state"])
    model.eval()
    history = pd.DataFrame(entry["history"])
    return Trained(model, history, entry.get("snapshots", []))


def config_key(model: nn.Module, config: TrainConfig,
               shape: tuple[int, ...] | None = None) -> dict:
    """``config`` as a cache key records it for ``model``: its precision as what "auto"
    means for the model on its device (timed on batches of ``shape``, ``batch_shape``,
    where the device has bf16 kernels), and ``compile`` only when on (the keys of
    uncompiled training stay what they were before the field existed).

    Args:
        model: the model to train (its device resolves "auto").
        config: the training's configuration.

    Returns:
        The configuration's fields as a dict.

    Example:
        >>> config_key(nn.Linear(2, 2), TrainConfig(precision="fp32"))["precision"]
        'fp32'
    """
    key = {**asdict(config), "precision": devices.precision(model, config.precision, shape)}
    if not config.compile:
        del key["compile"]
    return key


def batch_shape(data: Dataset, batch_size: int) -> tuple[int, ...]:
    """The shape of a training batch of ``data``: what precision "auto" is timed on.

    Args:
        data: a dataset of (input, label) pairs.
        batch_size: the training's batch size.

    Returns:
        ``(images in a batch, *the shape of one input)``.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> batch_shape(TensorDataset(torch.zeros(10, 1, 5, 5), torch.zeros(10)), 4)
        (4, 1, 5, 5)
    """
    return (min(batch_size, len(data)), *data[0][0].shape)


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


def _precision(model: nn.Module, data: Dataset, config: TrainConfig) -> str:
    """``config.precision`` resolved for ``model`` training on ``data``; under ``torchrun``
    process 0's verdict, which the others take (timings differ from process to process)."""
    if config.precision != "auto":
        return devices.precision(model, config.precision)
    rank, world = processes(model)
    found = [devices.precision(model, "auto", batch_shape(data, config.batch_size))
             if rank == 0 else None]
    if world > 1:
        dist.broadcast_object_list(found, src=0)
    return found[0]


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


def _cached_training(model: nn.Module, parts: dict, train_it) -> dict:
    """``cache.cached("fit", parts, train_it)`` in one process; with several, all of them
    train (process 0 stores the entry), or all take process 0's cached entry."""
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


def _summed(values: list[float]) -> list[float]:
    """``values`` summed over the training processes (as they are in a plain run)."""
    if processes()[1] == 1:
        return values
    total = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(total)
    return total.tolist()


def _placebo(model: nn.Module, data: Dataset, config: TrainConfig,
             test_data: Dataset | None) -> Trained:
    """``model`` untrained, its batch-norm statistics re-estimated on training images drawn
    with ``config.seed``."""
    g = torch.Generator().manual_seed(config.seed)
    batches = _Batches(model, data, min(config.batch_size, PLACEBO_IMAGES), g)
    count = math.ceil(PLACEBO_IMAGES / batches.batch_size)
    inputs = torch.cat([x for x, _ in itertools.islice(batches, count)])[:PLACEBO_IMAGES]
    recalibrate_batch_norm(model, inputs)
    row = {"epoch": 0, "loss": math.nan, "train_accuracy": math.nan}
    if test_data is not None:
        row["test_accuracy"] = evaluate(model, test_data).accuracy
    return Trained(model.eval(), pd.DataFrame([row]))


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, inputs: torch.Tensor,
                           batch_size: int = 500) -> nn.Module:
    """Re-estimate every batch-norm layer's running mean and variance in place as the plain
    average over ``inputs`` (batches of ``batch_size``), the rest of the model in eval mode.

    Pruning changes the statistics that the running averages were collected for, and an
    untrained network has none worth the name (running mean 0, variance 1).

    Args:
        model: the network; changed in place.
        inputs: images on any device (moved to the model's batch by batch).
        batch_size: images per forward pass.

    Returns:
        ``model``, in the train/eval mode it was in.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
        >>> _ = recalibrate_batch_norm(net, torch.ones(4, 1, 5, 5))
        >>> net[1].num_batches_tracked.item()
        1
    """
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


class _Batches:
    """(inputs, labels) batches of ``data`` on ``model``'s device: shuffled by
    ``generator`` in the order ``DataLoader(data, shuffle=True, generator=generator)``
    gives, or in order without one. Data held in tensors is gathered a batch at a time
    (and moved to the device once, when it fits there); other datasets go through a
    DataLoader with the device's loader options (workers and pinned memory on CUDA)."""

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


def _host_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: devices.to_host(v).clone() for k, v in module.state_dict().items()}


class Objective:
    """What ``run_training`` minimises on each batch and what it records of each epoch:
    supervised training on ``config.loss``, recorded as the epoch's loss per image and its
    training accuracy. A subclass changes what the one training loop does where it calls
    these methods: which parameters ``config``'s optimiser trains (``parameters``), the
    batch's loss (``loss``, run under the device's autocast), a step of its own after the
    optimiser's (``after_step``) and the epoch's history fields (``begin_epoch``,
    ``end_epoch``). Chapter 4's Class-Specific Gates (Liang et al. 2020) are one
    (``gates.fit_gates``): a gated path, a sparsity term and the gates' own optimiser.

    Args:
        config: the training's configuration (its ``loss``).

    Example:
        >>> objective = Objective(TrainConfig())
        >>> objective.begin_epoch(nn.Linear(2, 2), 1)
        'epoch 1'
        >>> loss = objective.loss(nn.Linear(2, 2), torch.rand(4, 2), torch.tensor([0, 1, 0, 1]))
        >>> sorted(objective.end_epoch(None))
        ['loss', 'train_accuracy']
    """

    def __init__(self, config: TrainConfig) -> None:
        self.criterion = loss_function(config.loss)

    def parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The parameters that ``config``'s optimiser, schedule and gradient clipping drive."""
        return [p for p in model.parameters() if p.requires_grad]

    def begin_epoch(self, model: nn.Module, epoch: int) -> str:
        """Start epoch ``epoch`` (from 1); the label of its progress bar."""
        # Per-batch losses stay on the device until the epoch ends (no sync per step).
        self.losses, self.sizes, self.correct = [], [], 0
        return f"epoch {epoch}"

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss to minimise on the batch (x, y)."""
        logits = model(x)
        loss = self.criterion(logits, y)
        self.losses.append(loss.detach())
        self.sizes.append(len(y))
        self.correct += (predicted_labels(logits) == y).sum()
        return loss

    def after_step(self, model: nn.Module) -> None:
        """Runs after each optimiser and schedule step; nothing for plain training."""

    def end_epoch(self, model: nn.Module) -> dict:
        """The epoch's history fields (after "epoch", before "test_accuracy")."""
        # Summed in Python's float64, in batch order, as ever.
        loss_sum = sum(v * n for v, n in zip(torch.stack(self.losses).tolist(), self.sizes))
        loss_sum, total, correct = _summed([loss_sum, sum(self.sizes), int(self.correct)])
        return {"loss": loss_sum / total, "train_accuracy": int(correct) / total}


def run_training(model, data, config: TrainConfig, test_data, desc: str,
                 objective: Objective | None = None) -> dict:
    """Train ``model`` in place on its device: the one training loop behind ``fit`` (which
    caches its result) and chapter 4's gates.

    Args:
        model: the network.
        data: the training set (see ``fit``).
        config: the training's configuration.
        test_data: evaluated after every epoch, or None.
        desc: the progress bar's label.
        objective: what is minimised and recorded (None: ``Objective(config)``,
            supervised training).

    Returns:
        The checkpoint entry, on the CPU: "state", "history" (a row per epoch) and, with
        ``config.snapshots``, "snapshots".

    Example:
        >>> toy = TensorDataset(torch.rand(8, 3), torch.arange(8) % 2)
        >>> entry = run_training(nn.Linear(3, 2), toy, TrainConfig(epochs=1), None, "toy")
        >>> sorted(entry), [row["epoch"] for row in entry["history"]]
        (['history', 'state'], [1])
    """
    objective = Objective(config) if objective is None else objective
    precision = _precision(model, data, config)
    g = torch.Generator().manual_seed(config.seed)
    batches = _Batches(model, data, config.batch_size, g)
    params = objective.parameters(model)
    if config.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                              weight_decay=config.weight_decay)
    steps = max(1, config.epochs * len(batches))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, (lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
        if config.schedule == "cosine" else (lambda s: 1.0))
    history, snapshots = [], []
    rank, world = processes(model)
    if world > 1:
        _check_shares(len(data), config.batch_size, world)
        _synchronise(model, "broadcast")
    cuda = devices.is_cuda(model)
    if cuda:  # channels-last weights and inputs: faster convolutions on CUDA
        model.to(memory_format=torch.channels_last)
    # The objective runs the compiled module; its parameters are the model's own.
    forward = torch.compile(model) if config.compile else model
    with torch.random.fork_rng(), devices.tuned_kernels(model):
        torch.manual_seed(config.seed)  # dropout and other randomness inside the model
        for epoch in bar(range(1, config.epochs + 1), desc=desc):
            model.train()
            for x, y in bar(batches, desc=objective.begin_epoch(model, epoch)):
                if config.augment:
                    x = augment_batch(x, g)
                if world > 1:  # this process's share of the global batch
                    share = torch.tensor_split(torch.arange(len(y)), world)[rank]
                    weight = len(share) / len(y)
                    x, y = x[share.to(x.device)], y[share.to(y.device)]
                if cuda and x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                with devices.autocast(model, precision):
                    loss = objective.loss(forward, x, y)
                # The model's, not the optimiser's: an objective's own parameters too.
                model.zero_grad(set_to_none=True)
                if world > 1:  # the gradients' sum over the shares: the whole batch's
                    loss = loss * weight
                loss.backward()
                if world > 1:
                    _synchronise(model, "gradients")
                if config.clip_grad_norm is not None:
                    nn.utils.clip_grad_norm_(params, config.clip_grad_norm)
                if config.clip_grad_value is not None:
                    nn.utils.clip_grad_value_(params, config.clip_grad_value)
                opt.step()
                sched.step()
                objective.after_step(model)
            if world > 1:
                _synchronise(model, "buffers")
            row = {"epoch": epoch, **objective.end_epoch(model)}
            if test_data is not None:
                row["test_accuracy"] = evaluate(model, test_data).accuracy
            history.append(row)
            if config.snapshots:
                snapshots.append(_host_copy(model))
    if cuda:
        model.to(memory_format=torch.contiguous_format)
    model.eval()
    entry = {"state": _host_copy(model), "history": history}
    if config.snapshots:
        entry["snapshots"] = snapshots
    return entry


def _check_shares(n: int, batch_size: int, world: int) -> None:
    if batch_size < world or 0 < n % batch_size < world:
        raise ValueError(f"batch_size: {batch_size} on {n} images leaves a batch smaller than "
                         f"the {world} training processes (each needs an image)")


@torch.no_grad()
def _synchronise(model: nn.Module, what: str) -> None:
    """Across the training processes: "broadcast" process 0's parameters and buffers to
    all, sum the "gradients", or average the floating-point "buffers" (batch-norm
    statistics, each estimated on one process's shares)."""
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


def predicted_labels(logits: torch.Tensor) -> torch.Tensor:
    """The predicted class of each row of logits: the arg-max of several logits,
    ``logit > 0`` for a single (sigmoid) output. The library's one reading of labels from
    logits.

    Args:
        logits: N x classes, or N x 1.

    Returns:
        N class indices (int64).

    Example:
        >>> predicted_labels(torch.tensor([[0.1, 2.0], [3.0, -1.0]])).tolist()
        [1, 0]
        >>> predicted_labels(torch.tensor([[-0.5], [0.5]])).tolist()
        [0, 1]
    """
    return (logits.squeeze(1) > 0).long() if logits.shape[1] == 1 else logits.argmax(1)


@torch.no_grad()
def predict(model: nn.Module, data: Dataset | torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The model's outputs (logits) for a dataset or a tensor of inputs, in eval mode, run
    on the model's device (float32) and returned on the CPU.

    Args:
        model: the network.
        data: a dataset of (input, label) pairs, or the inputs.
        batch_size: inputs per forward pass.

    Returns:
        N x outputs.

    Example:
        >>> net = nn.Linear(3, 2)
        >>> predict(net, torch.rand(5, 3), batch_size=2).shape
        torch.Size([5, 2])
    """
    model.eval()
    if isinstance(data, torch.Tensor):
        chunks = (devices.to_model(model, data[i:i + batch_size])
                  for i in range(0, len(data), batch_size))
    else:
        chunks = (x for x, _ in _Batches(model, data, batch_size))
    return torch.cat([devices.to_host(model(x)) for x in chunks])


@dataclass
class Evaluation:
    """What ``evaluate`` returns: a model's predictions beside the labels.

    Args:
        predictions: N predicted classes.
        labels: N true classes.
        classes: the class names, by index.

    Example:
        >>> result = Evaluation(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), ["a", "b"])
        >>> round(result.accuracy, 3), result.per_class().tolist()
        (0.667, [0.5, 1.0])
    """

    predictions: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    @property
    def accuracy(self) -> float:
        """The share of correct predictions."""
        return (self.predictions == self.labels).float().mean().item()

    def per_class(self) -> pd.Series:
        """Accuracy on the images of each class (recall per class)."""
        return metrics.accuracy_by_class(self.predictions == self.labels, self.labels,
                                         self.classes)


def evaluate(model: nn.Module, data: Dataset, batch_size: int = 500) -> Evaluation:
    """The predictions of ``model`` on ``data`` beside its labels, all on the CPU.

    Args:
        model: the network.
        data: an ``ImageSet`` or a dataset of (input, label) pairs.
        batch_size: inputs per forward pass.

    Returns:
        The ``Evaluation``; class names from ``data.classes``, else "0", "1", ...

    Example:
        >>> toy = TensorDataset(torch.rand(6, 3), torch.tensor([0, 1, 2, 0, 1, 2]))
        >>> evaluate(nn.Linear(3, 3), toy).classes
        ['0', '1', '2']
    """
    labels = data.labels if hasattr(data, "labels") else \
        torch.cat([y for _, y in DataLoader(data, batch_size)])
    classes = getattr(data, "classes", [str(c) for c in range(int(labels.max()) + 1)])
    return Evaluation(predicted_labels(predict(model, data, batch_size)), labels, classes)
