"""Training and evaluation with a content-addressed checkpoint cache.

``fit`` trains a model or, when the same model (architecture and initial weights), data
and configuration were trained before, loads the checkpoint instead. Seeds fix the
initialisation (callers build models under ``seeded``) and the batch order, so the same
parameters give the same weights on the same machine.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import asdict, dataclass, field

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import cache
from .progress import bar


@contextlib.contextmanager
def seeded(seed: int):
    """Seed torch's global generator for the block (model construction, say) and restore it."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"  # "adam" or "sgd" (with momentum and nesterov=False)
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"  # "constant" or "cosine" (per step, to zero)
    loss: str = "cross_entropy"  # or "bce": one logit, labels 0/1
    augment: bool = False  # random 4-pixel shifts and horizontal flips (CIFAR-style)
    snapshots: bool = False  # also keep the weights after every epoch
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


@dataclass
class Trained:
    """A trained model, its per-epoch history and (if asked for) per-epoch weights."""

    model: nn.Module
    history: pd.DataFrame
    snapshots: list[dict[str, torch.Tensor]] = field(default_factory=list)

    def at_epoch(self, epoch: int) -> nn.Module:
        """A copy of the model with the weights it had after ``epoch`` (1-based)."""
        if not self.snapshots:
            raise ValueError("no snapshots: train with TrainConfig(snapshots=True)")
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.snapshots[epoch - 1])
        return model.eval()


def loss_function(name: str):
    if name == "bce":
        return lambda logits, y: nn.functional.binary_cross_entropy_with_logits(logits.squeeze(1), y.float())
    return nn.functional.cross_entropy


def augment_batch(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 4 pixels (zero padding) and horizontal flips."""
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (4, 4, 4, 4))
    dx, dy = torch.randint(0, 9, (2, n), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    out[flip] = out[flip].flip(-1)
    return out


def fit(model: nn.Module, data: Dataset, config: TrainConfig = TrainConfig(), *,
        test_data: Dataset | None = None, desc: str = "training", cached: bool = True) -> Trained:
    """Train ``model`` on ``data`` (a dataset of (image, label) pairs), or load the cached
    result of that exact training. ``test_data``, if given, is evaluated after every epoch
    (and is part of the cache key, since it is part of the history). ``cached=False`` is
    for callers that cache a larger computation around the training themselves."""
    if cached:
        parts = {"model": model, "data": data_identity(data), "config": asdict(config),
                 "test": None if test_data is None else data_identity(test_data)}
        entry = cache.cached("fit", parts, lambda: run_training(model, data, config, test_data, desc))
    else:
        entry = run_training(model, data, config, test_data, desc)
    model.load_state_dict(entry["state"])
    model.eval()
    history = pd.DataFrame(entry["history"])
    return Trained(model, history, entry.get("snapshots", []))


def data_identity(data: Dataset):
    if hasattr(data, "fingerprint"):
        return data
    if hasattr(data, "tensors"):
        return list(data.tensors)
    raise TypeError("fit: data needs a fingerprint() (ImageSet) or .tensors (TensorDataset) for the cache key")


def run_training(model, data, config: TrainConfig, test_data, desc: str) -> dict:
    g = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(data, batch_size=config.batch_size, shuffle=True, generator=g)
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    steps = max(1, config.epochs * len(loader))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, (lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))) if config.schedule == "cosine" else (lambda s: 1.0))
    criterion = loss_function(config.loss)
    history, snapshots = [], []
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)  # dropout and other randomness inside the model
        for epoch in bar(range(1, config.epochs + 1), desc=desc):
            model.train()
            total, correct, loss_sum = 0, 0, 0.0
            for x, y in bar(loader, desc=f"epoch {epoch}"):
                if config.augment:
                    x = augment_batch(x, g)
                logits = model(x)
                loss = criterion(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += loss.item() * len(y)
                total += len(y)
                correct += (predicted_labels(logits) == y).sum().item()
            row = {"epoch": epoch, "loss": loss_sum / total, "train_accuracy": correct / total}
            if test_data is not None:
                row["test_accuracy"] = evaluate(model, test_data).accuracy
            history.append(row)
            if config.snapshots:
                snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    model.eval()
    entry = {"state": {k: v.detach().clone() for k, v in model.state_dict().items()}, "history": history}
    if config.snapshots:
        entry["snapshots"] = snapshots
    return entry


def predicted_labels(logits: torch.Tensor) -> torch.Tensor:
    """Arg-max for several logits, ``logit > 0`` for a single (sigmoid) output."""
    return (logits.squeeze(1) > 0).long() if logits.shape[1] == 1 else logits.argmax(1)


@torch.no_grad()
def predict(model: nn.Module, data: Dataset | torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The model's outputs (logits) for a dataset or a tensor of inputs, in eval mode."""
    model.eval()
    if isinstance(data, torch.Tensor):
        return torch.cat([model(data[i:i + batch_size]) for i in range(0, len(data), batch_size)])
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    return torch.cat([model(x) for x, _ in loader])


@dataclass
class Evaluation:
    predictions: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    @property
    def accuracy(self) -> float:
        return (self.predictions == self.labels).float().mean().item()

    def per_class(self) -> pd.Series:
        """Accuracy on the images of each class (recall per class)."""
        acc = [(self.predictions[self.labels == c] == c).float().mean().item() for c in range(len(self.classes))]
        return pd.Series(acc, index=pd.Index(self.classes, name="class"), name="accuracy")


def evaluate(model: nn.Module, data: Dataset, batch_size: int = 500) -> Evaluation:
    """Predictions of ``model`` on ``data`` (an ImageSet or dataset of pairs) with its labels."""
    labels = data.labels if hasattr(data, "labels") else torch.cat([y for _, y in DataLoader(data, batch_size)])
    classes = getattr(data, "classes", [str(c) for c in range(int(labels.max()) + 1)])
    return Evaluation(predicted_labels(predict(model, data, batch_size)), labels, classes)
