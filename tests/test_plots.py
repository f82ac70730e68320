"""Shared figures and the explorer: widgets only when a person runs the notebook."""

import sys
import types

import matplotlib
import numpy as np
import pandas as pd
import torch
from torch import nn

from subnets import dissection, plots

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


def tiny_dissection():
    probe = dissection.synthetic_probe(4, image_size=16, mask_size=8, seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()).eval()
    return model, probe, dissection.NetDissect(model, ["1"], quantile=0.1).attribute(probe)


def test_probe_labels_draw_the_images_and_a_row_per_category_with_legends():
    _, probe, _ = tiny_dissection()
    fig = plots.probe_labels(probe, n=3)
    assert len(fig.axes) == 5 * 3
    assert all(ax.get_legend() is not None for ax in fig.axes[3 * 4:])  # every pixel has a colour
    assert fig.axes[3].get_ylabel() == "object"


def test_detector_bars_stack_one_colour_per_category():
    _, _, result = tiny_dissection()
    counts = result.detectors(0.0)
    ax = plots.detector_bars(counts, "tiny")
    assert ax.get_title() == "tiny" and len(ax.patches) == counts.size
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(counts.columns)
    assert plots.detector_bars(counts, legend=False).get_legend() is None


def test_unit_examples_draw_a_row_per_unit_and_blank_missing_images():
    model, probe, result = tiny_dissection()
    units = [("1", 0, "grey"), ("1", 1, "circle")]
    fig = plots.unit_examples(model, probe, result, units, n=5)
    assert len(fig.axes) == 2 * 5
    assert "unit 1" in fig.axes[5].get_ylabel()
    assert not fig.axes[4].axison  # 4 probe images: the fifth column stays empty


def test_unit_class_bars_show_relevance_beside_iou():
    fig = plots.unit_class_bars(torch.tensor([0.1, 0.3]), torch.tensor([0.0, 0.2]), ["a", "b"],
                                "unit 0")
    assert [len(ax.patches) for ax in fig.axes] == [2, 2]
    assert fig._suptitle.get_text() == "unit 0"


def test_ablation_bars_draw_a_panel_per_network_and_image_group_with_the_intact_line():
    ablation = pd.DataFrame([
        {"network": net, "class": "a", "end": end, "fraction": f, "draw": 0,
         "accuracy_class": 0.5, "accuracy_others": 0.8}
        for net in ("x", "y") for end in ("top", "bottom", "random") for f in (0.01, 0.02)])
    intact = pd.DataFrame({"network": ["x", "y"], "class": ["a", "a"], "accuracy_class": 0.9,
                           "accuracy_others": 0.95}).set_index(["network", "class"])
    grid = plots.ablation_bars(ablation, intact, "a")
    assert grid.axes.shape == (2, 2)
    assert grid.axes_dict["a", "x"].lines[-1].get_ydata()[0] == 0.9


def test_agreement_by_layer_adds_the_chance_line_to_every_network():
    per_layer = pd.DataFrame({"network": ["x", "x", "y"], "layer": ["l1", "l2", "l1"],
                              "error": [0.5, 0.7, 0.2], "chance": [0.9, 0.9, 0.8]})
    grid = plots.agreement_by_layer(per_layer)
    assert len(grid.axes.flat) == 2
    assert [len(ax.lines) for ax in grid.axes.flat] == [2, 2]


def test_claims_forest_draws_every_judged_row_against_its_cut_and_the_placebo_beside_it():
    nan = float("nan")
    rows = pd.DataFrame([
        # value, low, high, op, threshold, margin, placebo value, low, high
        ("01", "above", "held", 3.0, 2.0, 4.0, ">", 0.5, 0.5, 0.0, -1.0, 1.0),
        ("01", "below", "not held", 2.0, nan, nan, "<", 1.0, 0.0, nan, nan, nan),
        ("02", "a setting", "setting", 7.0, nan, nan, "", nan, 0.0, nan, nan, nan),
        ("02", "band", "not decided", 1.2, 0.9, 1.6, "within", 1.0, 0.5, nan, nan, nan),
        ("02", "undefined", "not decided", nan, nan, nan, ">", 0.0, 0.0, nan, nan, nan)],
        columns=["chapter", "claim", "verdict", "value", "low", "high", "op", "threshold",
                 "margin", "placebo_value", "placebo_low", "placebo_high"])
    ax = plots.claims_forest(rows).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "01 · above", "01 · below", "02 · band", "02 · undefined"]
    lines = [(line.get_xdata(), line.get_ydata(), line.get_color()) for line in ax.lines]
    # "above": cut 1.0, so ours sits at 2 (interval 1 to 3) and the placebo at -1 (-2 to 0),
    # over the row's largest distance 3
    assert np.allclose(lines[0][0], [1 / 3, 1]) and lines[0][2] == "green"
    assert np.allclose(lines[1][0], [2 / 3]) and lines[1][1][0] == 0
    assert np.allclose(lines[2][0], [-2 / 3, 0]) and lines[2][1][0] == -0.3
    assert np.allclose(lines[3][0], [-1 / 3])
    # "below": cut 1.0, the estimate 2.0 lies 1 on the wrong side: -1, in firebrick
    assert np.allclose(lines[5][0], [-1]) and lines[5][2] == "firebrick"
    # "within" 1 +- 0.5 and [0.9, 1.6]: 0.5 - |x - 1| runs from -0.1 to 0.5, the estimate 0.3
    assert np.allclose(lines[6][0], [-0.2, 1]) and np.allclose(lines[7][0], [0.6])
    assert [t.get_text() for t in ax.texts] == ["undefined (nan)"]
    assert ax.lines[-1].get_xdata()[0] == 0  # the cut
