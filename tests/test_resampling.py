"""Tests of subnets.resampling: perturbations, the six metrics on hand-made activations
and against per-neuron formulas, top-k, the chance Jaccard, the neuron selection and how
its results are read."""

import numpy as np
import pytest
import torch
from torch import nn

from subnets import evaluation, hooks, metrics, neuron_selection, patches, resampling
from subnets.models import VGG


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


def test_centred_noise_multiplies_the_distance_from_the_centre():
    images = torch.zeros(2, 3, 8, 8)  # black: unit noise leaves it black, centred does not
    assert torch.equal(resampling.perturb(images, 5, 0.1, seed=3), torch.zeros(2, 5, 3, 8, 8))
    centre = torch.tensor([0.2, 0.5, 0.8])
    copies = resampling.perturb(images, 400, 0.1, seed=3, centre=centre)
    factor = (copies - centre.view(1, 1, 3, 1, 1)) / (-centre.view(1, 1, 3, 1, 1))
    unit = resampling.perturb(torch.ones(2, 3, 8, 8), 400, 0.1, seed=3)
    assert torch.allclose(factor, unit, atol=1e-6)  # the same draws, applied to x - centre
    with pytest.raises(ValueError, match="centre"):
        resampling.perturb(images, 5, 0.1, centre=torch.zeros(2))


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
    expected = np.mean(
        [abs(np.corrcoef(acts[0, :, 3, p].numpy(), o.numpy())[0, 1]) for p in range(3)]
    )
    assert scores[0, 0].item() == pytest.approx(1.0)
    assert scores[0, 1].item() == pytest.approx(1.0)
    assert torch.isnan(scores[0, 2])
    assert scores[0, 3].item() == pytest.approx(expected, rel=1e-5)


def test_precision_is_the_reciprocal_mean_variance_of_active_neurons():
    acts = torch.tensor([[1.0, 2.0], [3.0, 2.0], [2.0, 2.0], [2.0, 6.0]]).T  # copies x positions
    acts = (
        torch.stack([acts, acts / 100]).permute(1, 0, 2).unsqueeze(0)
    )  # 1 x 2 copies x 2 channels x 4
    var = np.mean([np.var([1, 2]), np.var([3, 2]), 0.0, np.var([2, 6])])
    scores = resampling.precision_scores(acts, threshold=0.1, relative=False)
    assert scores[0, 0].item() == pytest.approx(1 / var)
    assert torch.isnan(scores[0, 1])  # mean activation 0.025 < 0.1: discarded
    assert resampling.precision_scores(acts, threshold=0.0)[0, 1].item() == pytest.approx(1e4 / var)


def test_precision_threshold_is_relative_to_the_layers_activation_scale():
    # The same activations at two scales (0-1 inputs vs 0-255 inputs) keep the same neurons:
    # an absolute lambda = 0.1 kept only the large-scale ones.
    acts = torch.rand(1, 8, 4, 5) * torch.tensor([1.0, 0.5, 0.02, 1.5]).view(1, 1, 4, 1)
    scale = acts.abs().mean((1, 3)).mean().item()  # the layer's mean magnitude
    small = resampling.precision_scores(acts, threshold=0.1)
    large = resampling.precision_scores(acts * 255, threshold=0.1)
    assert small.isnan().tolist() == large.isnan().tolist() == [[False, False, True, False]]
    assert acts[0, :, 2].mean().item() < 0.1 * scale < acts[0, :, 1].mean().item()
    tenth = resampling.precision_scores(acts / 10, threshold=0.1)
    assert tenth.isnan().tolist() == small.isnan().tolist()
    absolute = resampling.precision_scores(acts / 10, threshold=0.1, relative=False)
    assert absolute.isnan().all()  # every mean activation is below 0.1


def test_output_log_odds():
    logits = torch.tensor([[0.5, 2.0], [1.0, -1.0]])
    assert torch.allclose(
        resampling.output_log_odds(logits, torch.tensor([1, 1])), torch.tensor([1.5, -2.0])
    )
    logits = torch.tensor([[0.1, 0.7, -0.3]])
    p = logits.softmax(1)[0, 1]
    assert resampling.output_log_odds(logits, torch.tensor([1])).item() == pytest.approx(
        torch.log(p / (1 - p)).item(), rel=1e-5
    )
    single = torch.tensor([[0.8], [0.8]])
    assert torch.equal(
        resampling.output_log_odds(single, torch.tensor([1, 0])), torch.tensor([0.8, -0.8])
    )


def test_activation_inputs_and_outgoing_weights(tiny_vgg):
    convs = hooks.conv_layers(tiny_vgg)
    w = resampling.outgoing_weights(tiny_vgg, convs[1])
    assert w.shape == (6, 6 * 9)
    assert torch.equal(w[2], tiny_vgg.features[7].weight[:, 2].flatten())
    last = resampling.outgoing_weights(tiny_vgg, convs[-1])
    assert torch.equal(last, tiny_vgg.classifier[0].weight.T)
    # Eq. 1's z: the batch norm's output, which the ReLU rectifies.
    assert [resampling.activation_input(tiny_vgg, c) for c in convs] == [
        "features.1",
        "features.5",
        "features.8",
        "features.12",
    ]
    plain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    assert resampling.activation_input(plain, "0") == "0"
    with pytest.raises(ValueError, match="activation"):
        resampling.activation_input(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3)), "0")
    dropout = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Dropout(), nn.ReLU())
    with pytest.raises(ValueError, match="after_relu"):
        resampling.activation_input(dropout, "0")


def test_conv_names_and_blocks():
    vgg16 = VGG(
        (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
        num_classes=2,
    )
    names = resampling.conv_names(vgg16, range(1, 14))
    assert resampling.conv_blocks(vgg16, names) == [1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5]
    with pytest.raises(ValueError, match="layers"):
        resampling.conv_names(vgg16, [0, 3])
    with pytest.raises(ValueError, match="layers"):
        resampling.conv_names(vgg16, [14])


def per_neuron_scores(model, image, copies, layer, target, threshold, after_relu=False):
    """The six metrics, one neuron at a time with numpy, from their definitions, with an
    absolute threshold on the mean |z|."""
    source = (hooks.activation_after if after_relu else resampling.activation_input)(
        model, layer
    )
    acts = hooks.activations(model, torch.cat([image, copies]), [source])[source].double().numpy()
    logits = evaluation.predict(model, copies).double()
    o = (logits[:, target] - logits[:, 1 - target]).numpy()
    w_next = resampling.outgoing_weights(model, layer).double().numpy()
    out = []
    for c in range(acts.shape[1]):
        z0, z = acts[0, c].ravel(), acts[1:, c].reshape(len(copies), -1)
        rs = [
            abs(np.corrcoef(z[:, p], o)[0, 1])
            for p in range(z.shape[1])
            if z[:, p].std() > 1e-5 * np.sqrt(np.mean(z[:, p] ** 2))
        ]
        precision = 1 / z.var(0).mean() if np.abs(z).mean() >= threshold else np.nan
        out.append(
            [
                np.mean(rs) if rs else np.nan,
                precision,
                z0.sum(),
                z0.var(),
                w_next[c].sum(),
                w_next[c].var(),
            ]
        )
    return np.array(out).T


@pytest.mark.parametrize("after_relu", [False, True])
def test_scores_match_per_neuron_formulas(tiny_vgg, after_relu):
    image = torch.rand(2, 1, 12, 12)
    layers = hooks.conv_layers(tiny_vgg)
    settings = {
        "n_samples": 30, "threshold": 0.05, "relative_threshold": False,
        "after_relu": after_relu, "seed": 3,
    }
    scores = resampling.InputResampling(tiny_vgg, layers, batch_size=40, **settings).score(
        image, target=1
    )
    copies = resampling.perturb(image, 30, 0.1, seed=3)
    for layer in layers:
        assert scores[layer].shape == (
            2,
            len(resampling.METRICS),
            hooks.layer(tiny_vgg, layer).out_channels,
        )
        for i in range(2):
            expected = per_neuron_scores(
                tiny_vgg, image[i : i + 1], copies[i], layer, 1, 0.05, after_relu
            )
            got = scores[layer][i, :6].double().numpy()
            np.testing.assert_allclose(got, expected, rtol=2e-3, atol=1e-6, equal_nan=True)
    # The random control is in [0, 1) and does not depend on how images are batched.
    single = resampling.InputResampling(tiny_vgg, layers, batch_size=31, **settings)
    assert torch.allclose(
        single.score(image, target=1)[layers[0]], scores[layers[0]], equal_nan=True
    )


def test_default_activation_is_eq1s_z_before_the_relu(tiny_vgg):
    # The old code scored the ReLU's output: its activation sums were never negative.
    image = torch.rand(3, 1, 12, 12)
    layer = hooks.conv_layers(tiny_vgg)[1]
    scores = resampling.InputResampling(tiny_vgg, [layer], n_samples=10).score(image)
    z = hooks.activations(tiny_vgg, image, ["features.5"])["features.5"]
    assert torch.allclose(scores.metric("activation_sum")[layer], z.flatten(2).sum(-1), atol=1e-4)
    assert (scores.metric("activation_sum")[layer] < 0).any()


def test_scores_for_either_class_have_the_same_correlation(tiny_vgg):
    image = torch.rand(1, 1, 12, 12)
    layers = hooks.conv_layers(tiny_vgg)
    a = resampling.InputResampling(tiny_vgg, layers, n_samples=20).score(image, target=0)
    b = resampling.InputResampling(tiny_vgg, layers, n_samples=20).score(image, target=1)
    assert torch.allclose(
        a.metric("correlation")[layers[1]], b.metric("correlation")[layers[1]], equal_nan=True
    )


def test_top_mask_skips_nan_and_breaks_ties_by_index():
    scores = torch.tensor([[0.5, float("nan"), 0.9, 0.5, float("inf"), 0.1]])
    assert resampling.top_mask(scores, 3).tolist() == [[True, False, True, False, True, False]]
    assert resampling.top_mask(scores, 10).sum().item() == 5
    few = torch.tensor([float("nan"), 2.0, float("nan")])
    assert resampling.top_mask(few, 2).tolist() == [False, True, False]
    # With a pool, NaNs inside it rank last but count; neurons outside it never do.
    pool = torch.tensor([True, True, False])
    assert resampling.top_mask(few, 2, pool).tolist() == [True, True, False]
    assert resampling.top_mask(torch.tensor([3.0, 2.0, 1.0]), 2, pool.logical_not()).tolist() == [
        False,
        False,
        True,
    ]


def test_every_metric_selects_as_many_neurons_from_the_same_pool(tiny_vgg):
    # The old selection skipped NaN scores and dead neurons per metric, so metrics (and the
    # random control) contributed different numbers of patches.
    images = torch.rand(4, 1, 12, 12)
    layers = hooks.conv_layers(tiny_vgg)
    scores = resampling.InputResampling(tiny_vgg, layers, n_samples=10, threshold=0.5).score(
        images
    )
    for layer, mask in scores.top(3).items():
        counts = mask.sum(-1)
        pool = scores.eligible[layer]
        assert (counts == pool.sum(-1, keepdim=True).clamp(max=3)).all()
        assert not (mask & ~pool.unsqueeze(1)).any()
    z = hooks.activations(tiny_vgg, images, ["features.13"])["features.13"]
    dead = z.flatten(2).amax(-1) <= 0
    assert not (scores.eligible[layers[-1]] & dead).any()


def test_chance_jaccard_of_two_random_selections():
    assert resampling.chance_jaccard(torch.tensor([5, 2, 0]), 5)[:2].tolist() == [1.0, 1.0]
    assert resampling.chance_jaccard(torch.tensor([2]), 1).item() == pytest.approx(0.5)
    assert torch.isnan(resampling.chance_jaccard(torch.tensor([0]), 5)).all()
    g = torch.Generator().manual_seed(0)
    for n, expected in [(16, None), (64, None)]:
        a = torch.rand(20000, n, generator=g).argsort(-1)[:, :5]
        b = torch.rand(20000, n, generator=g).argsort(-1)[:, :5]
        ma = torch.zeros(20000, n, dtype=torch.bool).scatter(1, a, True)
        mb = torch.zeros(20000, n, dtype=torch.bool).scatter(1, b, True)
        simulated = metrics.jaccard(ma, mb).mean().item()
        assert resampling.chance_jaccard(torch.tensor([n]), 5).item() == pytest.approx(
            simulated, abs=0.005
        )


def test_neuron_scores_top_and_metric():
    s = torch.arange(2 * 7 * 5, dtype=torch.float).view(2, 7, 5)
    scores = resampling.NeuronScores({"a": s})
    masks = scores.top(2)["a"]
    assert masks.shape == (2, 7, 5) and masks[..., 3:].all() and not masks[..., :3].any()
    assert torch.equal(scores.metric("precision")["a"], s[:, 1])
    with pytest.raises(ValueError, match="metric"):
        scores.metric("saliency")
    with pytest.raises(ValueError, match="k"):
        scores.top(0)
    with pytest.raises(KeyError, match="layer 'b'"):
        scores.metric("precision")["b"]


def test_input_resampling_rejects_bad_settings(tiny_vgg):
    with pytest.raises(ValueError, match="layers"):
        resampling.InputResampling(tiny_vgg, [])
    with pytest.raises(ValueError, match="threshold"):
        resampling.InputResampling(tiny_vgg, hooks.conv_layers(tiny_vgg), threshold=-1)
    with pytest.raises(KeyError, match="nope"):
        resampling.InputResampling(tiny_vgg, ["nope"])


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
    relu = {"n_samples": 8, "threshold": 0.1, "relative_threshold": False, "after_relu": True}
    one = resampling.zero_variance_shares(model, ["0"], half_black, **relu)
    assert one == {"0": 1.0}
    assert resampling.zero_variance_shares(model, ["0"], bright, **relu) == {"0": 0.5}
    both = resampling.zero_variance_shares(model, ["0"], torch.cat([half_black, bright]), **relu)
    assert both == {"0": 0.75}
    # Before the ReLU, channel 2 (-x) is active in magnitude and varies where x does.
    z = {"n_samples": 8, "threshold": 0.1, "relative_threshold": False}
    assert resampling.zero_variance_shares(model, ["0"], bright, **z) == {"0": 1 / 3}
    assert resampling.zero_variance_shares(model, ["0"], half_black, **z) == {"0": 1.0}


def test_discarded_shares_count_alive_neurons_below_lambda():
    conv = nn.Conv2d(1, 3, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 0.05, -1.0]).view(3, 1, 1, 1))
        conv.bias.zero_()
    model = nn.Sequential(conv, nn.ReLU())
    bright = torch.rand(2, 1, 4, 4) * 0.5 + 0.5
    # Channels 0 and 1 are alive (channel 2 never is); only channel 1 is below 0.1.
    absolute = {"n_samples": 8, "threshold": 0.1, "relative_threshold": False}
    assert resampling.discarded_shares(model, ["0"], bright, **absolute) == {"0": 0.5}
    assert resampling.discarded_shares(model, ["0"], bright, **{**absolute, "threshold": 0}) \
        == {"0": 0.0}
    # Relative: lambda = 0.5 x the layer's mean |z| (channel 1's 0.05 x is far below it).
    relative = {"n_samples": 8, "threshold": 0.5}
    assert resampling.discarded_shares(model, ["0"], bright, **relative) == {"0": 0.5}


@pytest.mark.gpu
def test_input_resampling_on_cuda_matches_the_cpu(tiny_vgg):
    # Tolerance: float32 convolutions differ by ~1e-6 relative between devices; the scores
    # are ratios of sums over 20 copies, allow 1e-3 relative.
    import copy

    images = torch.rand(3, 1, 12, 12)
    layers = hooks.conv_layers(tiny_vgg)
    cpu = resampling.InputResampling(tiny_vgg, layers, n_samples=20).score(images)
    on_gpu = copy.deepcopy(tiny_vgg).cuda()
    gpu = resampling.InputResampling(on_gpu, layers, n_samples=20).score(images)
    for layer in layers:
        assert gpu[layer].device.type == "cpu"
        torch.testing.assert_close(gpu[layer], cpu[layer], rtol=1e-3, atol=1e-4, equal_nan=True)
        assert torch.equal(gpu.eligible[layer], cpu.eligible[layer])
    masks = cpu.top(2)
    torch.testing.assert_close(
        neuron_selection.switch_off_effects(on_gpu, masks, images),
        neuron_selection.switch_off_effects(tiny_vgg, masks, images),
        rtol=1e-3,
        atol=1e-4,
    )
    boxes_cpu = patches.selection_boxes(tiny_vgg, masks, images)
    boxes_gpu = patches.selection_boxes(on_gpu, masks, images)
    for layer in layers:
        assert (boxes_cpu[layer] - boxes_gpu[layer]).abs().max() <= 1  # a pixel at the edge
