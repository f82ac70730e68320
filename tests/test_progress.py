"""Headless runs: silent progress bars."""

from subnets import progress


def test_headless_is_read_from_the_environment(monkeypatch):
    for value, expected in [("1", True), ("0", False), ("", False), ("yes", True)]:
        monkeypatch.setenv("SUBNETS_HEADLESS", value)
        assert progress.headless() is expected
    monkeypatch.delenv("SUBNETS_HEADLESS")
    assert not progress.headless()


def test_bars_are_silent_when_headless(monkeypatch):
    monkeypatch.setenv("SUBNETS_HEADLESS", "1")
    assert progress.bar(range(3)).disable
    monkeypatch.setenv("SUBNETS_HEADLESS", "0")
    assert not progress.bar(range(3)).disable
