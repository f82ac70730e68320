"""Predictions and accuracy: per class, and the same on CUDA as on the CPU."""

import copy

import pytest
import torch
from torch import nn

from subnets import devices, evaluation, train
from subnets.data import ImageSet


def test_predicted_labels_read_a_single_logit_as_a_sigmoid():
    assert evaluation.predicted_labels(torch.tensor([[-0.5], [0.5]])).tolist() == [0, 1]
    assert evaluation.predicted_labels(torch.tensor([[0.1, 2.0], [3.0, -1.0]])).tolist() == [1, 0]


def test_evaluation_per_class_is_the_recall_of_each_class():
    ev = evaluation.Evaluation(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]),
                          ["a", "b", "c"])
    assert ev.per_class().tolist() == [1.0, 1.0, 0.5] and ev.accuracy == 0.75


def image_set(n=300, side=10):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, side, side), generator=g, dtype=torch.uint8)
    return ImageSet(images, (images.float().mean((1, 2, 3)) > 127.5).long(), ["a", "b"])


def conv_model(side=10):
    with train.seeded(0):
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(4 * side * side, 2))


@pytest.mark.gpu
def test_gpu_predict_and_evaluate_match_cpu(cuda):
    """float32 on both (TF32 convolutions on CUDA: ~1e-3 relative), results on the CPU."""
    data = image_set(300)
    model = conv_model().eval()
    fast = copy.deepcopy(model).to(cuda)
    on_cpu, on_cuda = evaluation.predict(model, data), evaluation.predict(fast, data)
    assert on_cuda.device == devices.CPU
    assert torch.allclose(on_cuda, on_cpu, atol=1e-2 * on_cpu.abs().max().item())
    agree = (evaluation.evaluate(fast, data).predictions
             == evaluation.evaluate(model, data).predictions)
    assert agree.float().mean() >= 0.98  # only near-ties may flip
