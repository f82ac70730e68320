"""Shared fixtures: every test gets its own empty cache folder."""

import pytest
import torch


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBNETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SUBNETS_PROGRESS", "0")
    torch.manual_seed(0)
    return tmp_path / "cache"
