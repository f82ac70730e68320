"""A trained model's outputs and predictions: logits for a dataset (``predict``), labels
from logits (``predicted_labels``, the library's one reading of them) and accuracy overall
and per class (``evaluate``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import devices, metrics
from .batches import Batches

__all__ = ["predicted_labels", "predict", "Evaluation", "evaluate"]


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
        chunks = (x for x, _ in Batches(model, data, batch_size))
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
        >>> from torch.utils.data import TensorDataset
        >>> toy = TensorDataset(torch.rand(6, 3), torch.tensor([0, 1, 2, 0, 1, 2]))
        >>> evaluate(nn.Linear(3, 3), toy).classes
        ['0', '1', '2']
    """
    labels = data.labels if hasattr(data, "labels") else \
        torch.cat([y for _, y in DataLoader(data, batch_size)])
    classes = getattr(data, "classes", [str(c) for c in range(int(labels.max()) + 1)])
    return Evaluation(predicted_labels(predict(model, data, batch_size)), labels, classes)
