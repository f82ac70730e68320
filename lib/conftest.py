"""The library's doctests (``pytest --doctest-modules lib``) run as the tests do: in a
cache folder of their own, headless, from one seed."""

import pytest
import torch


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBNETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SUBNETS_HEADLESS", "1")
    torch.manual_seed(0)
    return tmp_path / "cache"
