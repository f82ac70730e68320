"""Shared fixtures: every test gets its own empty cache folder."""

import pytest
import torch


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBNETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SUBNETS_PROGRESS", "0")
    torch.manual_seed(0)
    return tmp_path / "cache"


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` compare CUDA with CPU results; without CUDA they are skipped."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
