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

Training over several processes (``torchrun``, ``--seeds-parallel``) is ``distributed``'s.

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
from dataclasses import asdict, dataclass, field, replace

import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from . import devices, distributed
from .batches import Batches, augment_batch, data_identity
from .evaluation import evaluate, predicted_labels
from .progress import bar

__all__ = ["TrainConfig", "Trained", "Objective", "seeded", "fit", "run_training",
           "loss_function", "config_key", "batch_shape", "recalibrate_batch_norm",
           "PLACEBO_IMAGES"]

# Training images on which a placebo network's batch-norm statistics are re-estimated.
PLACEBO_IMAGES = 2048


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
    if placebo or not distributed.in_seed_share(config.seed):
        return _placebo(model, data, config, test_data)
    # "auto" is decided once, here: the cache key and the training read the same verdict.
    config = replace(config, precision=_precision(model, data, config))
    if cached:
        # The model enters the key with its device kind off the CPU (cache.canonical).
        parts = {"model": model, "data": data_identity(data), "config": config_key(model, config),
                 "test": None if test_data is None else data_identity(test_data)}
        entry = distributed.cached_training(model, parts,
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


def _precision(model: nn.Module, data: Dataset, config: TrainConfig) -> str:
    """``config.precision`` resolved for ``model`` training on ``data``; under ``torchrun``
    process 0's verdict, which the others take (timings differ from process to process)."""
    if config.precision != "auto":
        return devices.precision(model, config.precision)
    rank, world = distributed.processes(model)
    found = [devices.precision(model, "auto", batch_shape(data, config.batch_size))
             if rank == 0 else None]
    if world > 1:
        dist.broadcast_object_list(found, src=0)
    return found[0]


def _placebo(model: nn.Module, data: Dataset, config: TrainConfig,
             test_data: Dataset | None) -> Trained:
    """``model`` untrained, its batch-norm statistics re-estimated on training images drawn
    with ``config.seed``."""
    g = torch.Generator().manual_seed(config.seed)
    batches = Batches(model, data, min(config.batch_size, PLACEBO_IMAGES), g)
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
        loss_sum, total, correct = distributed.summed(
            [loss_sum, sum(self.sizes), int(self.correct)])
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
        >>> from torch.utils.data import TensorDataset
        >>> toy = TensorDataset(torch.rand(8, 3), torch.arange(8) % 2)
        >>> entry = run_training(nn.Linear(3, 2), toy, TrainConfig(epochs=1), None, "toy")
        >>> sorted(entry), [row["epoch"] for row in entry["history"]]
        (['history', 'state'], [1])
    """
    objective = Objective(config) if objective is None else objective
    precision = _precision(model, data, config)
    g = torch.Generator().manual_seed(config.seed)
    batches = Batches(model, data, config.batch_size, g)
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
    rank, world = distributed.processes(model)
    if world > 1:
        distributed.check_shares(len(data), config.batch_size, world)
        distributed.synchronise(model, "broadcast")
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
                    distributed.synchronise(model, "gradients")
                if config.clip_grad_norm is not None:
                    nn.utils.clip_grad_norm_(params, config.clip_grad_norm)
                if config.clip_grad_value is not None:
                    nn.utils.clip_grad_value_(params, config.clip_grad_value)
                opt.step()
                sched.step()
                objective.after_step(model)
            if world > 1:
                distributed.synchronise(model, "buffers")
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


