"""Training batches: augmentation is the per-image shift-and-flip loop it replaced, and
batches come in order without a generator."""

import torch
from torch import nn
from torch.utils.data import TensorDataset

from subnets import batches


def reference_augment(x, g):
    """The per-image shift-and-flip loop ``augment_batch`` replaced."""
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (4, 4, 4, 4))
    dx, dy = torch.randint(0, 9, (2, n), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    out[flip] = out[flip].flip(-1)
    return out


def test_augment_is_the_per_image_loop():
    x = torch.rand(9, 3, 6, 5)
    assert torch.equal(batches.augment_batch(x, torch.Generator().manual_seed(4)),
                       reference_augment(x, torch.Generator().manual_seed(4)))


def test_batches_keep_the_order_without_a_generator_and_shuffle_with_one():
    data = TensorDataset(torch.arange(10.0), torch.arange(10))
    model = nn.Linear(1, 1)
    in_order = [y for _, y in batches.Batches(model, data, 4)]
    assert [y.tolist() for y in in_order] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    shuffled = torch.cat([y for _, y in batches.Batches(model, data, 4,
                                                        torch.Generator().manual_seed(0))])
    assert sorted(shuffled.tolist()) == list(range(10)) and shuffled.tolist() != list(range(10))


def test_data_identity_is_the_tensors_of_a_tensor_dataset():
    import pytest

    assert len(batches.data_identity(TensorDataset(torch.zeros(2), torch.ones(2)))) == 2
    with pytest.raises(TypeError, match="fingerprint"):
        batches.data_identity([1, 2])
