"""Shared figures and the explorer: widgets only when a person runs the notebook."""

import sys
import types

import matplotlib
import torch

from subnets import plots

matplotlib.use("Agg")


def test_a_headless_explorer_draws_once_with_the_defaults_and_builds_no_widget(monkeypatch):
    monkeypatch.setenv("SUBNETS_HEADLESS", "1")
    calls = []
    plots.explorer(lambda c=3: calls.append(c), lambda: calls.append("widgets built"))
    assert calls == [3]


def test_a_watched_explorer_is_interact_with_the_controls(monkeypatch):
    monkeypatch.setenv("SUBNETS_HEADLESS", "0")
    seen = {}
    fake = types.SimpleNamespace(interact=lambda f, **controls: seen.update(controls, f=f))
    monkeypatch.setitem(sys.modules, "ipywidgets", fake)

    def explore(c=0):
        return c

    plots.explorer(explore, lambda: {"c": [1, 2]})
    assert seen == {"c": [1, 2], "f": explore}


def test_map_comparison_draws_one_column_per_image_and_a_row_per_map():
    images = torch.rand(3, 1, 8, 8)
    fig = plots.map_comparison(images, {"f": torch.rand(3, 1, 8, 8), "S": torch.zeros(3, 1, 8, 8)})
    assert len(fig.axes) == 3 * 3
