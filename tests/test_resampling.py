"""Tests of subnets.resampling: perturbations, the six metrics on hand-made activations
and against per-neuron formulas, top-k, Jaccard, patches and their localization."""

import numpy as np
import pytest
import torch
from torch import nn

from subnets import attribution, hooks, resampling, train
from subnets.models import VGG

CFG = (4, "M", 6, 6, "M", 8)


@pytest.fixture(scope="module")
def tiny_vgg():
    with train.seeded(0):
        model = VGG(CFG, in_channels=1, num_classes=2, batch_norm=True)
    # Non-trivial BN statistics, so that eval-mode BN is not the identity.
    with torch.no_grad():
        model.train()
        model(torch.rand(64, 1, 12, 12))
    return model.eval()


def test_perturb_multiplies_every_pixel_by_one_plus_gaussian_noise():
    images = torch.rand(3, 2, 8, 8) + 0.5
    copies = resampling.perturb(images, n_samples=400, std=0.1, seed=1)
    assert copies.shape == (3, 400, 2, 8, 8)
    factor = copies / images.unsqueeze(1)
    assert factor.mean().item() == pytest.approx(1.0, abs=0.005)
    assert factor.std().item() == pytest.approx(0.1, rel=0.02)
    # Fresh noise for every copy and pixel, the same for the same seed.
    assert not torch.equal(copies[:, 0], copies[:, 1])
    assert torch.equal(copies, resampling.perturb(images, 400, 0.1, seed=1))
    assert not torch.equal(copies, resampling.perturb(images, 400, 0.1, seed=2))


def test_index_scaled_noise_grows_with_the_copy_index():
    images = torch.rand(2, 1, 16, 16) + 0.5
    copies = resampling.perturb(images, n_samples=20, std=0.1, index_scaled=True)
    assert torch.equal(copies[:, 0], images)
    spread = (copies / images.unsqueeze(1) - 1).flatten(2).std(2).mean(0)
    assert spread[10].item() == pytest.approx(1.0, rel=0.15)
    assert spread[19].item() == pytest.approx(1.9, rel=0.15)


@pytest.mark.parametrize("kwargs, name", [({"n_samples": 1}, "n_samples"), ({"std": -0.1}, "std")])
def test_perturb_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        resampling.perturb(torch.rand(1, 1, 4, 4), **kwargs)


def test_correlation_on_hand_made_activations():
    s = 10
    o = torch.linspace(-1, 1, s)
    acts = torch.zeros(1, s, 4, 3)
    acts[0, :, 0] = (2 * o + 1).view(s, 1)  # r = 1 at every position
    acts[0, :, 1, 0] = -o  # r = -1 at one position ...
    acts[0, :, 1, 1] = 5.0  # ... constant elsewhere: left out of the mean
    acts[0, :, 1, 2] = 5.0
    acts[0, :, 2] = 3.0  # constant everywhere: undefined
    acts[0, :, 3, 0] = torch.tensor([1.0, 0, 0, 1, 0, 1, 1, 0, 1, 0])
    acts[0, :, 3, 1] = o.square()
    acts[0, :, 3, 2] = o.sin()
    scores = resampling.correlation_scores(acts, o.view(1, s))
    expected = np.mean([abs(np.corrcoef(acts[0, :, 3, p].numpy(), o.numpy())[0, 1]) for p in range(3)])
    assert scores[0, 0].item() == pytest.approx(1.0)
    assert scores[0, 1].item() == pytest.approx(1.0)
    assert torch.isnan(scores[0, 2])
    assert scores[0, 3].item() == pytest.approx(expected, rel=1e-5)


def test_precision_is_the_reciprocal_mean_variance_of_active_neurons():
    acts = torch.tensor([[1.0, 2.0], [3.0, 2.0], [2.0, 2.0], [2.0, 6.0]]).T  # copies x positions
    acts = torch.stack([acts, acts / 100]).permute(1, 0, 2).unsqueeze(0)  # 1 x 2 copies x 2 channels x 4
    var = np.mean([np.var([1, 2]), np.var([3, 2]), 0.0, np.var([2, 6])])
    scores = resampling.precision_scores(acts, threshold=0.1)
    assert scores[0, 0].item() == pytest.approx(1 / var)
    assert torch.isnan(scores[0, 1])  # mean activation 0.025 < 0.1: discarded
    assert resampling.precision_scores(acts, threshold=0.0)[0, 1].item() == pytest.approx(1e4 / var)


def test_output_log_odds():
    logits = torch.tensor([[0.5, 2.0], [1.0, -1.0]])
    assert torch.allclose(resampling.output_log_odds(logits, torch.tensor([1, 1])), torch.tensor([1.5, -2.0]))
    logits = torch.tensor([[0.1, 0.7, -0.3]])
    p = logits.softmax(1)[0, 1]
    assert resampling.output_log_odds(logits, torch.tensor([1])).item() == pytest.approx(torch.log(p / (1 - p)).item(), rel=1e-5)
    single = torch.tensor([[0.8], [0.8]])
    assert torch.equal(resampling.output_log_odds(single, torch.tensor([1, 0])), torch.tensor([0.8, -0.8]))


def test_activation_layers_and_outgoing_weights(tiny_vgg):
    convs = hooks.conv_layers(tiny_vgg)
    assert [resampling.activation_layer(tiny_vgg, c) for c in convs] == ["features.2", "features.6", "features.9", "features.13"]
    w = resampling.outgoing_weights(tiny_vgg, convs[1])
    assert w.shape == (6, 6 * 9)
    assert torch.equal(w[2], tiny_vgg.features[7].weight[:, 2].flatten())
    last = resampling.outgoing_weights(tiny_vgg, convs[-1])
    assert torch.equal(last, tiny_vgg.classifier[0].weight.T)
    with pytest.raises(ValueError, match="layers"):
        resampling.activation_layer(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3)), "0")


def test_conv_names_and_blocks():
    vgg16 = VGG((64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512), num_classes=2)
    names = resampling.conv_names(vgg16, range(1, 14))
    assert resampling.conv_blocks(vgg16, names) == [1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5]
    with pytest.raises(ValueError, match="layers"):
        resampling.conv_names(vgg16, [0, 3])
    with pytest.raises(ValueError, match="layers"):
        resampling.conv_names(vgg16, [14])


def per_neuron_scores(model, image, copies, layer, target, threshold):
    """The six metrics, one neuron at a time with numpy, from their definitions."""
    relu = resampling.activation_layer(model, layer)
    acts = hooks.activations(model, torch.cat([image, copies]), [relu])[relu].double().numpy()
    logits = train.predict(model, copies).double()
    o = (logits[:, target] - logits[:, 1 - target]).numpy()
    w_next = resampling.outgoing_weights(model, layer).double().numpy()
    out = []
    for c in range(acts.shape[1]):
        z0, z = acts[0, c].ravel(), acts[1:, c].reshape(len(copies), -1)
        rs = [abs(np.corrcoef(z[:, p], o)[0, 1]) for p in range(z.shape[1])
              if z[:, p].std() > 1e-5 * np.sqrt(np.mean(z[:, p] ** 2))]
        precision = 1 / z.var(0).mean() if z.mean() >= threshold else np.nan
        out.append([np.mean(rs) if rs else np.nan, precision, z0.sum(), z0.var(), w_next[c].sum(), w_next[c].var()])
    return np.array(out).T


def test_scores_match_per_neuron_formulas(tiny_vgg):
    image = torch.rand(2, 1, 12, 12)
    layers = hooks.conv_layers(tiny_vgg)
    scorer = resampling.InputResampling(tiny_vgg, layers, n_samples=30, threshold=0.05, seed=3, batch_size=40)
    scores = scorer.attribute(image, target=1)
    copies = resampling.perturb(image, 30, 0.1, seed=3)
    for layer in layers:
        assert scores[layer].shape == (2, len(resampling.METRICS), hooks.layer(tiny_vgg, layer).out_channels)
        for i in range(2):
            expected = per_neuron_scores(tiny_vgg, image[i:i + 1], copies[i], layer, 1, 0.05)
            got = scores[layer][i, :6].double().numpy()
            np.testing.assert_allclose(got, expected, rtol=2e-3, atol=1e-6, equal_nan=True)
    # The random control is in [0, 1) and does not depend on how images are batched.
    single = resampling.InputResampling(tiny_vgg, layers, n_samples=30, threshold=0.05, seed=3, batch_size=31)
    assert torch.allclose(single.attribute(image, target=1)[layers[0]], scores[layers[0]], equal_nan=True)


def test_scores_for_either_class_have_the_same_correlation(tiny_vgg):
    image = torch.rand(1, 1, 12, 12)
    layers = hooks.conv_layers(tiny_vgg)
    a = resampling.InputResampling(tiny_vgg, layers, n_samples=20).attribute(image, target=0)
    b = resampling.InputResampling(tiny_vgg, layers, n_samples=20).attribute(image, target=1)
    assert torch.allclose(a.metric("correlation")[layers[1]], b.metric("correlation")[layers[1]], equal_nan=True)


def test_top_mask_skips_nan_and_breaks_ties_by_index():
    scores = torch.tensor([[0.5, float("nan"), 0.9, 0.5, float("inf"), 0.1]])
    assert resampling.top_mask(scores, 3).tolist() == [[True, False, True, False, True, False]]
    assert resampling.top_mask(scores, 10).sum().item() == 5
    few = torch.tensor([float("nan"), 2.0, float("nan")])
    assert resampling.top_mask(few, 2).tolist() == [False, True, False]


def test_neuron_scores_top_and_metric():
    s = torch.arange(2 * 7 * 5, dtype=torch.float).view(2, 7, 5)
    scores = resampling.NeuronScores(["a"], {"a": s})
    masks = scores.top(2)["a"]
    assert masks.shape == (2, 7, 5) and masks[..., 3:].all() and not masks[..., :3].any()
    assert torch.equal(scores.metric("precision")["a"], s[:, 1])
    with pytest.raises(ValueError, match="metric"):
        scores.metric("saliency")
    with pytest.raises(ValueError, match="k"):
        scores.top(0)


def test_jaccard_is_intersection_over_union():
    a = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    b = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    j = resampling.jaccard(a, b)
    assert j[0].item() == pytest.approx(2 / 4)  # not 2 / (3 + 3), the public code's ratio
    assert j[1].item() == 1.0
    assert torch.isnan(j[2])


def test_patches_cut_and_resize_the_boxes():
    h = w = 12
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float), torch.arange(w, dtype=torch.float), indexing="ij")
    images = torch.stack([(2 * yy + xx), (yy - 3 * xx)]).unsqueeze(1)  # linear: resampling is exact
    masks = {"a": torch.zeros(2, 7, 3, dtype=torch.bool)}
    masks["a"][0, 1, 2] = masks["a"][1, 1, 0] = masks["a"][1, 1, 1] = True
    masks["a"][1, 0, 1] = True  # another metric
    boxes = {"a": torch.full((2, 3, 4), -1)}
    boxes["a"][0, 2] = torch.tensor([2, 10, 4, 8])  # rows 2..9, cols 4..7
    boxes["a"][1, 0] = torch.tensor([1, 5, 3, 7])
    cut, image = resampling.patches(images, masks, boxes, "precision", size=4)
    assert image.tolist() == [0, 1]  # neuron (1, 1) has no box: dead, no patch
    # Bin centres of a box [t, b) x [l, r) resized to 4: t + (i + 0.5) (b - t) / 4, minus half a pixel.
    ys = 2 + (torch.arange(4) + 0.5) * 2 - 0.5
    xs = 4 + (torch.arange(4) + 0.5) * 1 - 0.5
    assert torch.allclose(cut[0, 0], 2 * ys.view(-1, 1) + xs.view(1, -1), atol=1e-5)
    assert torch.allclose(cut[1, 0], images[1, 0, 1:5, 3:7], atol=1e-5)  # same size: a plain crop


def test_patch_table_counts_object_pixels_in_each_box():
    g = torch.Generator().manual_seed(0)
    foreground = torch.rand(3, 1, 9, 9, generator=g) > 0.6
    masks = {"a": torch.rand(3, 7, 5, generator=g) > 0.5, "b": torch.rand(3, 7, 2, generator=g) > 0.5}
    boxes = {}
    for name, m in masks.items():
        t, l = torch.randint(0, 5, (2, 3, m.shape[2]), generator=g)
        boxes[name] = torch.stack([t, t + 1 + torch.randint(0, 4, t.shape, generator=g), l, l + 4], -1)
    boxes["a"][1, 0] = -1
    table = resampling.patch_table(masks, boxes, foreground)
    expected_rows = sum(int(m.sum()) for m in masks.values()) - int(masks["a"][1, :, 0].sum())
    assert len(table) == expected_rows
    for row in table.itertuples():
        box = foreground[row.image, 0, row.top:row.bottom, row.left:row.right]
        assert row.object_pixels == int(box.sum())
        assert row.area == box.numel()
        assert masks[row.layer][row.image, resampling.METRICS.index(row.metric), row.neuron]


def test_analyse_selects_and_boxes_every_selected_neuron(tiny_vgg, isolated_cache):
    images = torch.rand(3, 1, 12, 12)
    layers = hooks.conv_layers(tiny_vgg)[1:3]
    result = resampling.analyse(tiny_vgg, images, layers, top_k=2, support_fraction=0.1, n_samples=10)
    for layer in layers:
        masks, boxes = result["masks"][layer], result["boxes"][layer]
        assert (masks.sum(-1) <= 2).all()
        has_box = boxes[..., 0] >= 0
        assert not (has_box & ~masks.any(1)).any()  # boxes only for selected neurons
        assert (boxes[has_box][:, [1, 3]] <= 12).all() and (boxes[has_box][:, [0, 2]] >= 0).all()
    again = resampling.analyse(tiny_vgg, images, layers, top_k=2, support_fraction=0.1, n_samples=10)
    assert torch.equal(again["masks"][layers[0]], result["masks"][layers[0]])
    assert len(list(isolated_cache.glob("resampling-*.pt"))) == 1
    plain = resampling.analyse(tiny_vgg, images, layers, top_k=2, boxes=False, n_samples=10)
    assert "boxes" not in plain and torch.equal(plain["masks"][layers[1]], result["masks"][layers[1]])


def test_patch_accuracy_learns_a_separable_task():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (200,), generator=g)
    images = torch.rand(200, 1, 12, 12, generator=g) * 0.2
    images[labels == 1, :, 4:8, 4:8] += 0.8  # a bright square in the middle means class 1
    # One selected neuron per image, whose patch is the middle (or, for odd images, nothing useful).
    masks = {"a": torch.zeros(200, len(resampling.METRICS), 2, dtype=torch.bool)}
    masks["a"][:, 1, 0] = True
    masks["a"][:, 6, 1] = True
    boxes = {"a": torch.tensor([[3, 9, 3, 9], [0, 3, 0, 3]]).expand(200, 2, 4)}
    train_images = torch.arange(200) < 150
    acc = resampling.patch_accuracy(images, labels, train_images, masks, boxes, "precision", size=6, width=8, epochs=15)
    assert acc > 0.9
    blind = resampling.patch_accuracy(images, labels, train_images, masks, boxes, "random", size=6, width=8, epochs=15)
    assert blind < 0.8  # the corner patches carry no label information
    with pytest.raises(ValueError, match="train_images"):
        resampling.patch_accuracy(images, labels, torch.ones(200, dtype=torch.bool), masks, boxes, "precision")


def test_input_resampling_rejects_bad_settings(tiny_vgg):
    with pytest.raises(ValueError, match="layers"):
        resampling.InputResampling(tiny_vgg, [])
    with pytest.raises(ValueError, match="threshold"):
        resampling.InputResampling(tiny_vgg, hooks.conv_layers(tiny_vgg), threshold=-1)
    with pytest.raises(KeyError, match="nope"):
        resampling.InputResampling(tiny_vgg, ["nope"])


def test_leading_part_projects_like_the_whole_network(tiny_vgg):
    x = torch.rand(4, 1, 12, 12)
    relu = resampling.activation_layer(tiny_vgg, hooks.conv_layers(tiny_vgg)[2])
    net, name = resampling.leading_part(tiny_vgg, relu)
    assert len(net) < len(tiny_vgg.features) and net[int(name)] is hooks.layer(tiny_vgg, relu)
    whole = attribution.deconvnet(tiny_vgg, x, relu, [0, 1, 2, 3])
    assert torch.allclose(attribution.deconvnet(net, x, name, [0, 1, 2, 3]), whole, atol=1e-6)
    assert resampling.leading_part(nn.Sequential(nn.ReLU()), "0")[1] == "0"


def test_zero_variance_shares_count_active_neurons_with_a_constant_position():
    conv = nn.Conv2d(1, 3, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 0.0, -1.0]).view(3, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, 0.5, 0.0]))
    model = nn.Sequential(conv, nn.ReLU())
    half_black = torch.rand(1, 1, 4, 4) * 0.5 + 0.5
    half_black[..., :2] = 0  # channel 0 is zero there on every copy
    bright = torch.rand(1, 1, 4, 4) * 0.5 + 0.5  # channel 0 varies everywhere
    # Channel 1 is a constant 0.5 (always counted); channel 2 is dead (never active).
    one = resampling.zero_variance_shares(model, half_black, ["0"], n_samples=8, threshold=0.1)
    assert one == {"0": 1.0}
    assert resampling.zero_variance_shares(model, bright, ["0"], n_samples=8, threshold=0.1) == {"0": 0.5}
    both = resampling.zero_variance_shares(model, torch.cat([half_black, bright]), ["0"], n_samples=8, threshold=0.1)
    assert both == {"0": 0.75}
