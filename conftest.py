"""Shared fixtures of the tests and of the library's doctests (one conftest at the root: a
second one in lib/ or tests/ clashes with the first when --doctest-modules collects it):
every test and doctest gets its own empty cache folder; a CIFAR-10 folder in the
python-pickle layout for the tests that need one; the CUDA device for tests marked ``gpu``;
a small chapter for the tests of the runner, its parameters and its records."""

import pickle
import textwrap

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


# A chapter as small as the runner's contract allows: a parameters cell, presets, a claim.
EXAMPLE_CHAPTER = textwrap.dedent('''\
    ---
    jupytext:
      text_representation: {extension: .md, format_name: myst, format_version: 0.13}
    kernelspec: {display_name: Python 3, language: python, name: python3}
    subnets:
      presets:
        smoke: {epochs: 1}
        large: {epochs: 1}
        paper: {epochs: 30, threshold: 0.05}
    ---
    # A chapter

    ```{code-cell} ipython3
    :tags: [parameters]

    dataset = "fashion-mnist"  # which data
    epochs = 3
    threshold = 0.05
    target_class, sizes = 5, [1, 2]  # a line of related parameters
    use_gpu = False
    ```

    ```{code-cell} ipython3
    result = epochs * threshold
    ```

    ```{code-cell} ipython3
    from subnets import claim_tables, claims

    claim_tables.claims_table([claims.Claim("x", "yes", result, claims.Rule(">", 0.0),
                                            scope="method", note="arithmetic")],
                              glue_name="ch09_claims")
    ```
    ''')



@pytest.fixture
def chapter(tmp_path):
    """``EXAMPLE_CHAPTER`` as ``tmp_path/09_example.md``."""
    path = tmp_path / "09_example.md"
    path.write_text(EXAMPLE_CHAPTER)
    return path
