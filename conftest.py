"""Shared fixtures of the tests and of the library's doctests (one conftest at the root: a
second one in lib/ or tests/ clashes with the first when --doctest-modules collects it):
every test and doctest gets its own empty cache folder; a CIFAR-10 folder in the
python-pickle layout for the tests that need one; the CUDA device for tests marked ``gpu``."""

import pickle

import numpy as np
import pytest
import torch

from subnets import devices

CIFAR10_CLASSES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog",
                   b"horse", b"ship", b"truck"]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBNETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SUBNETS_HEADLESS", "1")
    torch.manual_seed(0)
    return tmp_path / "cache"


@pytest.fixture
def cifar10_root(tmp_path):
    """``tmp_path`` holding ``cifar-10-batches-py``: two 32 x 32 images per batch, batch i's
    pixels all i but the green plane (200), labels (i % 10, 9)."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": CIFAR10_CLASSES}, f)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        pixels = np.full((2, 3072), i, dtype=np.uint8)
        pixels[:, 1024:2048] = 200  # the green plane: CIFAR rows are R, G, B planes
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": pixels, b"labels": [i % 10, 9]}, f)
    return tmp_path


@pytest.fixture
def cuda() -> torch.device:
    """The first CUDA device, index included, as ``devices.model_device`` reports a model on
    it (``torch.device("cuda")`` compares unequal to that). For tests marked ``gpu``."""
    return devices.device("cuda:0")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` compare CUDA with CPU results; without CUDA they are skipped."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def tiny_vgg():
    """A 3-conv VGG with batch norm on 12 x 12 grey inputs, its BN statistics non-trivial so
    that eval-mode BN is not the identity (chapter 5's modules' tests)."""
    from subnets import train
    from subnets.models import VGG

    with train.seeded(0):
        model = VGG((4, "M", 6, 6, "M", 8), in_channels=1, num_classes=2, batch_norm=True)
    with torch.no_grad():
        model.train()
        model(torch.rand(64, 1, 12, 12))
    return model.eval()
