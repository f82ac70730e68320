"""Tests of subnets.neuron_selection: selecting and boxing neurons, reading a selection,
comparing two, and switching one off."""

import pytest
import torch

from subnets import evaluation, hooks, neuron_selection, resampling


def test_neuron_selection_selects_and_boxes_every_selected_neuron(tiny_vgg, isolated_cache):
    images = torch.rand(3, 1, 12, 12)
    layers = hooks.conv_layers(tiny_vgg)[1:3]
    selection = neuron_selection.NeuronSelection(
        tiny_vgg, layers, top_k=2, support_fraction=0.1, n_samples=10
    ).select(images)
    assert isinstance(selection, neuron_selection.Selection) and selection.layers == layers
    scores = resampling.InputResampling(tiny_vgg, layers, n_samples=10).score(images)
    for layer in layers:
        masks, boxes = selection[layer], selection.boxes[layer]
        channels = hooks.layer(tiny_vgg, layer).out_channels
        assert masks.shape == (3, len(resampling.METRICS), channels)
        assert boxes.shape == (3, channels, 4)
        assert torch.equal(selection.neurons.eligible[layer], scores.eligible[layer])
        assert torch.equal(masks, scores.top(2)[layer])
        assert (masks.sum(-1) <= 2).all()
        has_box = boxes[..., 0] >= 0
        assert not (has_box & ~masks.any(1)).any()  # boxes only for selected neurons
        assert (boxes[has_box][:, [1, 3]] <= 12).all() and (boxes[has_box][:, [0, 2]] >= 0).all()
    # Metrics are read by name, not by position.
    assert torch.equal(selection.metric("precision")[layers[0]], selection[layers[0]][:, 1])
    assert torch.equal(
        selection.neurons.metric("correlation")[layers[1]].nan_to_num(-1),
        scores.metric("correlation")[layers[1]].nan_to_num(-1),
    )
    with pytest.raises(ValueError, match="metric"):
        selection.metric("saliency")
    again = neuron_selection.NeuronSelection(
        tiny_vgg, layers, top_k=2, support_fraction=0.1, n_samples=10
    ).select(images)
    assert torch.equal(again[layers[0]], selection[layers[0]])
    assert len(list(isolated_cache.glob("resampling-*.pt"))) == 1
    plain = neuron_selection.NeuronSelection(tiny_vgg, layers, top_k=2, boxes=False, n_samples=10)
    plain = plain.select(images)
    assert plain.boxes is None
    assert torch.equal(plain[layers[1]], selection[layers[1]])
    # Boxes for one metric's neurons only: exactly those of the full run.
    some = neuron_selection.NeuronSelection(
        tiny_vgg, layers, top_k=2, boxes=["precision"], n_samples=10
    ).select(images)
    for layer in layers:
        picked = selection.metric("precision")[layer]
        assert torch.equal(some.boxes[layer][picked], selection.boxes[layer][picked])
        assert (some.boxes[layer][~picked] == -1).all()


def test_selection_jaccard_compares_two_metrics_per_image_and_layer():
    masks = torch.zeros(2, len(resampling.METRICS), 4, dtype=torch.bool)
    masks[0, 0, :2] = masks[0, 1, 1:3] = True  # one shared of three
    masks[1, 0, :2] = masks[1, 1, :2] = True  # the same two
    selection = neuron_selection.Selection({"a": masks, "b": torch.zeros_like(masks)})
    got = neuron_selection.selection_jaccard(selection, selection, "correlation", "precision")
    assert got.shape == (2, 2)
    assert got[:, 0].tolist() == pytest.approx([1 / 3, 1.0])
    assert got[:, 1].isnan().all()  # both empty: undefined, not agreement


def test_neuron_selection_scores_the_given_target(tiny_vgg, isolated_cache):
    images = torch.rand(2, 1, 12, 12)
    layers = hooks.conv_layers(tiny_vgg)[1:2]
    method = neuron_selection.NeuronSelection(tiny_vgg, layers, top_k=2, boxes=False, n_samples=10)
    for target in (0, 1):
        scores = resampling.InputResampling(tiny_vgg, layers, n_samples=10).score(
            images, target=target
        )
        got = method.select(images, target=target).neurons[layers[0]]
        assert torch.equal(got.nan_to_num(-1), scores[layers[0]].nan_to_num(-1))
    assert len(list(isolated_cache.glob("resampling-*.pt"))) == 2  # one entry per target


@pytest.mark.parametrize(
    "kwargs, name",
    [({"top_k": 0}, "top_k"), ({"boxes": ["saliency"]}, "metric"),
     ({"threshold": -1}, "threshold")],
)
def test_neuron_selection_rejects_bad_settings(tiny_vgg, kwargs, name):
    with pytest.raises(ValueError, match=name):
        neuron_selection.NeuronSelection(tiny_vgg, hooks.conv_layers(tiny_vgg), **kwargs)


def test_switch_off_effects_match_an_ablation_per_image(tiny_vgg):
    images = torch.rand(3, 1, 12, 12)
    layers = hooks.conv_layers(tiny_vgg)[1:3]
    masks = {
        layer: torch.zeros(
            3, len(resampling.METRICS), hooks.layer(tiny_vgg, layer).out_channels, dtype=torch.bool
        )
        for layer in layers
    }
    masks[layers[0]][0, 1, [0, 2]] = True
    masks[layers[0]][2, 6, 5] = True
    masks[layers[1]][1, 0, :] = True
    effects = neuron_selection.switch_off_effects(tiny_vgg, masks, images, batch_size=5)
    assert effects.shape == (3, len(resampling.METRICS), 2)
    logits = evaluation.predict(tiny_vgg, images)
    target = logits.argmax(1)
    base = resampling.output_log_odds(logits, target)
    for i, m, j in [(0, 1, 0), (2, 6, 0), (1, 0, 1)]:
        layer = layers[j]
        channels = masks[layer][i, m].nonzero().flatten().tolist()
        with hooks.Ablation(tiny_vgg, {hooks.activation_after(tiny_vgg, layer): channels}):
            off = resampling.output_log_odds(
                evaluation.predict(tiny_vgg, images[i : i + 1]), target[i : i + 1]
            )
        assert effects[i, m, j].item() == pytest.approx((off - base[i]).abs().item(), abs=1e-5)
    assert effects[1, 0, 1] > 0  # a whole layer switched off
    assert effects.sum().item() == pytest.approx(
        effects[0, 1, 0] + effects[2, 6, 0] + effects[1, 0, 1]
    )
