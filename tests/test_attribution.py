import copy
import math

import pytest
import torch
from captum.attr import LayerConductance, NeuronConductance
from torch import nn
from torch.nn import functional as F

from subnets import attribution, dissection
from subnets.data import ImageSet, balanced_indices, foreground
from subnets.hooks import Recorder


class TinyCNN(nn.Module):
    """conv(1->2, 1x1) -> ReLU -> global average -> linear: Grad-CAM is computable by hand."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
            self.conv.bias.zero_()
            self.fc.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 3.0]]))

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))


def test_gradcam_matches_hand_computation():
    model = TinyCNN()
    x = torch.tensor([[[[1.0, 0.0], [0.0, 3.0]]]])
    # d logit_c / d A_k(i,j) = w_ck / 4; alpha_k = mean over positions = w_ck / 4.
    # Target 0: alpha = (1/4, -1/4); A = (x, 2x); CAM = relu(x/4 - 2x/4) = relu(-x/4) = 0.
    # Target 1: alpha = (0.5/4, 3/4); CAM = x * (0.125 + 1.5) = 1.625 x.
    gradcam = attribution.GradCAM(model, "relu")
    torch.testing.assert_close(gradcam.attribute(x, target=1), 1.625 * x)
    assert gradcam.attribute(x, target=0).abs().sum() == 0
    torch.testing.assert_close(gradcam.attribute(x, target=0, relu=False), -x / 4)


def test_methods_name_their_layer_at_construction():
    for method in (attribution.GradCAM, attribution.Deconvnet):
        with pytest.raises(KeyError, match="conv9"):
            method(TinyCNN(), "conv9")
    with pytest.raises(KeyError, match="conv9"):
        attribution.UnitRelevance(TinyCNN(), ["relu", "conv9"])


def test_gradcam_is_upsampled_bilinearly_to_the_input():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(2 * 16, 3))
    cam = attribution.GradCAM(model, "1").attribute(torch.rand(2, 1, 8, 8), target=[0, 2])
    assert cam.shape == (2, 1, 8, 8) and (cam >= 0).all()


def test_saliency_is_abs_input_gradient_max_over_channels():
    w = torch.tensor([[1.0, -2.0, 0.5]])
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 1, bias=False))
    model[1].weight.data = w
    sal = attribution.Saliency(model).attribute(torch.rand(1, 3, 1, 1), target=0)
    assert sal.shape == (1, 1, 1, 1) and sal.item() == 2.0


# --- per-unit relevance (Islam and Tushar, chapter 2) ------------------------------

class ConvPoolConvNet(nn.Module):
    """conv-ReLU-maxpool-conv-ReLU-average-linear, layers addressable by name; small
    enough for a hand-written deconvnet. ``bias``: the conv biases (None: PyTorch's
    random initialisation)."""

    def __init__(self, channels=1, widths=(4, 6), classes=3, bias=0.05):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, widths[0], 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(widths[0], widths[1], 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(widths[1], classes)
        if bias is not None:
            with torch.no_grad():
                self.conv1.bias.fill_(bias)
                self.conv2.bias.fill_(bias)

    def forward(self, x):
        return self.fc(self.relu2(self.conv2(self.pool(self.relu1(self.conv1(x))))).mean((2, 3)))


def softmax_of(model):
    return lambda z: model(z).softmax(1)


def test_unit_conductance_is_captums_layer_conductance_for_every_layer():
    model = ConvPoolConvNet().eval()
    x = torch.rand(3, 1, 8, 8)
    for output, forward in (("probability", softmax_of(model)), ("logit", model)):
        maps = attribution.UnitConductance(model, ["relu1", "relu2"], output).attribute(
            x, target=[0, 1, 2], n_steps=10, internal_batch_size=2)
        assert isinstance(maps, attribution.LayerMaps) and list(maps.maps) == ["relu1", "relu2"]
        for name in ("relu1", "relu2"):
            ref = LayerConductance(forward, getattr(model, name)).attribute(
                x, target=[0, 1, 2], n_steps=10, method="riemann_trapezoid")
            assert maps[name].shape == ref.shape
            torch.testing.assert_close(maps[name], ref)


def per_neuron_maps(model, name, unit, x, target, n_steps, positions=None):
    """A unit's map from captum's per-neuron conductance, one call per position (all, or
    the given ones; others stay 0): each call attributes through one neuron to the
    inputs, summed over the inputs."""
    with Recorder(model, [name]) as rec, torch.no_grad():
        model(x)
    h, w = rec.outputs[name].shape[-2:]
    conductance = NeuronConductance(softmax_of(model), getattr(model, name))
    out = torch.zeros(len(x), h, w)
    for i, j in positions or [(i, j) for i in range(h) for j in range(w)]:
        out[:, i, j] = conductance.attribute(x, neuron_selector=(unit, i, j), target=target,
                                             n_steps=n_steps,
                                             method="riemann_trapezoid").sum((1, 2, 3))
    return out


def test_unit_maps_agree_with_captums_per_neuron_conductance():
    model = ConvPoolConvNet().eval()
    x = torch.rand(2, 1, 6, 6)
    sample = [("relu2", 0, None), ("relu2", 3, None),
              ("relu1", 2, [(0, 0), (2, 3), (4, 1), (5, 5)])]
    errors = []
    for n_steps in (8, 48):
        maps = attribution.UnitConductance(model, ["relu1", "relu2"]).attribute(x, target=1,
                                                                                n_steps=n_steps)
        err = 0.0
        for name, unit, positions in sample:
            ref = per_neuron_maps(model, name, unit, x, 1, n_steps, positions)
            ours = maps[name][:, unit]
            if positions:
                ours = torch.stack([ours[:, i, j] for i, j in positions], 1)
                ref = torch.stack([ref[:, i, j] for i, j in positions], 1)
            assert ref.abs().max() > 0
            err = max(err, ((ours - ref).abs().max() / ref.abs().max()).item())
        errors.append(err)
    # Two discretisations of one integral: they meet as the steps grow.
    assert errors[1] < 0.05 and errors[1] < errors[0]


def test_unit_conductance_of_a_cut_layer_sums_to_the_output_difference():
    model = ConvPoolConvNet().eval()
    x = torch.rand(2, 1, 8, 8)
    maps = attribution.UnitConductance(model, ["relu2"]).attribute(x, target=2, n_steps=200)
    with torch.no_grad():
        delta = model(x).softmax(1)[:, 2] - model(torch.zeros_like(x)).softmax(1)[:, 2]
    torch.testing.assert_close(maps["relu2"].sum((1, 2, 3)), delta,
                               atol=2e-3 * delta.abs().max().item(), rtol=0)


def test_relevance_of_units_is_the_mean_masked_upsampled_absolute_map():
    model = ConvPoolConvNet().eval()
    x = torch.rand(3, 1, 8, 8)
    masks = torch.rand(3, 1, 8, 8) > 0.5
    rel = attribution.UnitRelevance(model, ["relu1", "relu2"]).attribute(
        x, target=0, masks=masks, n_steps=6, internal_batch_size=2)
    assert isinstance(rel, attribution.Relevance) and list(rel.scores) == ["relu1", "relu2"]
    per_input = attribution.UnitRelevance(model, ["relu2"]).attribute(
        x, target=torch.zeros(3, dtype=torch.long), masks=masks, n_steps=6, internal_batch_size=2)
    torch.testing.assert_close(per_input["relu2"], rel["relu2"])
    maps = attribution.UnitConductance(model, ["relu2"]).attribute(x, target=0, n_steps=6)["relu2"]
    expected = torch.zeros(6)
    for u in range(6):
        for n in range(3):
            up = F.interpolate(maps[n, u].abs()[None, None], size=(8, 8), mode="bilinear",
                               align_corners=False)[0, 0]
            expected[u] += (up * masks[n, 0]).sum() / 3
    torch.testing.assert_close(rel["relu2"], expected)
    # and from captum's per-neuron maps, for a sample of units
    for u in (1, 4):
        ref = per_neuron_maps(model, "relu2", u, x, 0, 64).abs()
        up = F.interpolate(ref[:, None], size=(8, 8), mode="bilinear", align_corners=False)
        r = (up * masks).sum((1, 2, 3)).mean()
        fine = attribution.UnitRelevance(model, ["relu2"]).attribute(x, 0, masks,
                                                                     n_steps=64)["relu2"][u]
        torch.testing.assert_close(fine, r, rtol=0.05, atol=0)


def toy_imageset():
    """Two classes on black: class 0 lights channel 0, class 1 channel 1 (a little of the other)."""
    images = torch.zeros(8, 2, 4, 4, dtype=torch.uint8)
    labels = torch.tensor([0, 1] * 4)
    for i, c in enumerate(labels.tolist()):
        images[i, c, 1:3, 1:3] = 200 + i
        images[i, 1 - c, 1:3, 1:3] = 10
    return ImageSet(images, labels, ["zero", "one"], "toy", black_background=True)


class ChannelVote(nn.Module):
    """logit_k = mean of ReLU(channel k): ablating unit k blinds the net to class k."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.relu = nn.ReLU()
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
            self.conv.bias.zero_()

    def forward(self, x):
        return self.relu(self.conv(x)).mean((2, 3))


# unit k of ChannelVote's ReLU matters for class k
DIAGONAL = attribution.Relevance({"relu": torch.tensor([[1.0, 0.0], [0.0, 1.0]])})


def test_relevance_per_class_has_one_column_per_class_from_foreground_masks():
    data = toy_imageset()
    rel = attribution.ClassRelevance(ChannelVote(), ["relu"]).attribute(data, per_class=2,
                                                                        n_steps=4, seed=0)
    assert isinstance(rel, attribution.Relevance) and rel["relu"].shape == (2, 2)
    chosen = balanced_indices(data.labels, 2, 0)
    for c in range(2):
        x, _ = data.tensors(chosen[data.labels[chosen] == c])
        direct = attribution.UnitRelevance(ChannelVote(), ["relu"]).attribute(
            x, c, foreground(x), n_steps=4)
        torch.testing.assert_close(rel["relu"][:, c], direct["relu"])
    # each class leans on its own channel
    assert rel["relu"][0, 0] > rel["relu"][1, 0] and rel["relu"][1, 1] > rel["relu"][0, 1]


def test_ranked_units_take_the_top_bottom_or_random_units_breaking_ties_by_index():
    s = torch.tensor([0.1, 0.5, 0.3, 0.5, 0.0])
    assert attribution.ranked_units(s, 1).tolist() == [1]
    assert attribution.ranked_units(s, 2).tolist() == [1, 3]
    assert attribution.ranked_units(s, 2, "bottom").tolist() == [0, 4]
    g = torch.Generator().manual_seed(0)
    drawn = attribution.ranked_units(s, 3, "random", g)
    assert len(drawn) == 3 and len(set(drawn.tolist())) == 3 and drawn.equal(drawn.sort().values)
    with pytest.raises(ValueError, match="end"):
        attribution.ranked_units(s, 2, "middle")
    with pytest.raises(ValueError, match="count"):
        attribution.ranked_units(s, 6)


def test_unit_quotas_give_every_network_the_same_share_of_its_units():
    # a small ResNet18's ablated layers: 15 layers of 16 to 128 units (832 in all)
    sizes = dict(enumerate([16] * 4 + [32] * 4 + [64] * 4 + [128] * 3))
    ceil = attribution.unit_quotas(sizes, 0.01, "ceil")
    assert sum(ceil.values()) == 18  # the old "1 %": 18 / 832 = 2.2 %
    share = attribution.unit_quotas(sizes, 0.01)
    assert sum(share.values()) == round(0.01 * 832) == 8
    # in proportion to size, by largest remainder: 0.64 (64 units) before 0.32 before 0.28
    assert [share[k] for k in (0, 4, 5, 8, 12)] == [0, 1, 0, 1, 1]
    for f in (0.01, 0.02, 0.03):
        q = attribution.unit_quotas({"a": 96, "b": 96, "c": 64}, f)
        assert sum(q.values()) == round(f * 256)
    with pytest.raises(ValueError, match="rounding"):
        attribution.unit_quotas(sizes, 0.01, "floor")


def test_relevance_methods_check_their_arguments():
    model, x = ConvPoolConvNet().eval(), torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="output"):
        attribution.UnitConductance(model, ["relu2"], output="margin")
    with pytest.raises(ValueError, match="n_steps"):
        attribution.UnitConductance(model, ["relu2"]).attribute(x, 0, n_steps=0)
    with pytest.raises(ValueError, match="masks"):
        attribution.UnitRelevance(model, ["relu2"]).attribute(x, 0, torch.ones(2, 1, 4, 4))
    data = toy_imageset()
    with pytest.raises(ValueError, match="masks"):
        attribution.ClassRelevance(ChannelVote(), ["relu"]).attribute(
            data, masks=torch.ones(3, 1, 4, 4))
    with pytest.raises(ValueError, match="relevance: no scores for layers"):
        attribution.relevance_ablation(ChannelVote(), ["conv"], data, DIAGONAL)
    with pytest.raises(ValueError, match="ends"):
        attribution.relevance_ablation(ChannelVote(), ["relu"], data, DIAGONAL, ends=("middle",))


def test_relevance_ablation_switches_off_the_ranked_units():
    data = toy_imageset()
    result = attribution.relevance_ablation(ChannelVote(), ["relu"], data, DIAGONAL,
                                            fractions=[0.5], ends=("top", "bottom", "random"),
                                            random_draws=3)
    row = result.table.set_index(["class", "end", "draw"])
    assert row.loc[("zero", "none", 0), "accuracy_class"] == 1.0
    # top: class 0 loses its unit, class 1 keeps its own
    assert row.loc[("zero", "top", 0), "accuracy_class"] == 0.0
    assert row.loc[("zero", "top", 0), "accuracy_others"] == 1.0
    # bottom: the other class's unit goes, class 0 is untouched
    assert row.loc[("zero", "bottom", 0), "accuracy_class"] == 1.0
    assert row.loc[("zero", "bottom", 0), "accuracy_others"] == 0.0
    assert row.loc[("one", "top", 0), "units"] == 1 and row.loc[("one", "top", 0), "share"] == 0.5
    assert len(result.table[result.table.end == "random"]) == 2 * 3
    # per-image correctness: the drops reproduce the accuracies
    top = result.drops("top", 0.5)
    assert top.shape == (8, 2) and (top[data.labels.numpy() == 0, 0] == 1).all()
    assert attribution.class_drop(top, data.labels) == 1.0
    assert attribution.other_drop(top, data.labels) == 0.0
    bottom = result.drops("bottom", 0.5)
    assert attribution.class_drop(bottom, data.labels) == 0.0
    assert attribution.other_drop(bottom, data.labels) == 1.0


class TinyResidual(nn.Module):
    """x -> conv -> BN -> + x -> ReLU: the unit of the block output has a skip path."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(2)
        self.relu = nn.ReLU()
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)) + x).mean((2, 3))


def test_relevance_ablation_at_a_site_keeps_the_skip_path():
    data = toy_imageset()
    model = TinyResidual().eval()
    at_relu = attribution.relevance_ablation(model, ["relu"], data, DIAGONAL, fractions=[0.5])
    sites = dissection.unit_sites(model, ["relu"])
    assert sites == {"relu": "bn"}
    before_add = attribution.relevance_ablation(model, ["relu"], data, DIAGONAL,
                                                fractions=[0.5], sites=sites)
    # zero at the ReLU blinds class 0 entirely; before the addition the identity still
    # carries channel 0, so the class is still recognised
    assert attribution.class_drop(at_relu.drops("top", 0.5), data.labels) == 1.0
    assert attribution.class_drop(before_add.drops("top", 0.5), data.labels) == 0.0


def test_layer_relevance_per_map_pixel_removes_the_upsampling_factor():
    assert attribution.upsampling_area((7, 7), (28, 28)) == 16.0
    model = ConvPoolConvNet().eval()
    x = torch.rand(2, 1, 8, 8)
    ones = torch.ones(2, 1, 8, 8, dtype=torch.bool)
    rel = attribution.UnitRelevance(model, ["relu2"]).attribute(x, 0, ones, n_steps=8)["relu2"]
    maps = attribution.UnitConductance(model, ["relu2"]).attribute(x, 0, n_steps=8)["relu2"]
    area = attribution.upsampling_area(tuple(maps.shape[-2:]), (8, 8))
    # bilinear upsampling (align_corners=False) preserves a map's mean, so per map pixel
    # the whole-image relevance is the layer's own summed |conductance|
    torch.testing.assert_close(rel / area, maps.abs().sum((2, 3)).mean(0), rtol=1e-5, atol=1e-7)


def test_layer_class_interaction_ignores_layer_and_class_scales():
    profile = torch.tensor([[1.0, 3.0, 0.5], [2.0, 1.0, 4.0], [0.3, 0.7, 2.0]])
    shared = profile[:, :1] * torch.tensor([[1.0, 2.0, 5.0]])  # every class one profile
    assert attribution.layer_class_interaction(shared) == pytest.approx(0.0, abs=1e-6)
    spread = attribution.layer_class_interaction(profile)
    assert spread > 0
    rescaled = profile * torch.tensor([[10.0], [0.1], [3.0]]) * torch.tensor([[2.0, 1.0, 7.0]])
    assert attribution.layer_class_interaction(rescaled) == pytest.approx(spread)
    # a layer with a zero entry is left out; fewer than two layers or classes: NaN
    with_dead = torch.cat([profile, torch.tensor([[0.0, 1.0, 1.0]])])
    assert attribution.layer_class_interaction(with_dead) == pytest.approx(spread)
    assert math.isnan(attribution.layer_class_interaction(profile[:1]))
    assert math.isnan(attribution.layer_class_interaction(profile[:, :1]))


@pytest.mark.gpu
def test_relevance_and_ablation_on_cuda_match_the_cpu():
    model = ConvPoolConvNet().eval()
    x = torch.rand(4, 1, 8, 8)
    masks = torch.rand(4, 1, 8, 8) > 0.3
    layers = ["relu1", "relu2"]
    cpu = attribution.UnitRelevance(model, layers).attribute(x, 1, masks, n_steps=8)
    gpu = attribution.UnitRelevance(copy.deepcopy(model).cuda(), layers).attribute(
        x, 1, masks, n_steps=8)
    for name in layers:  # float32 reductions in another order: 1e-4 relative
        assert gpu[name].device.type == "cpu"
        torch.testing.assert_close(gpu[name], cpu[name], rtol=1e-4, atol=1e-6)
    data = toy_imageset()
    on_cpu = attribution.relevance_ablation(ChannelVote(), ["relu"], data, DIAGONAL,
                                            fractions=[0.5])
    on_gpu = attribution.relevance_ablation(ChannelVote().cuda(), ["relu"], data, DIAGONAL,
                                            fractions=[0.5])
    assert on_gpu.correct.equal(on_cpu.correct)


# --- deconvnet and patch boxes (Lengerich et al., chapter 5) -----------------------

@pytest.fixture
def deconv_case():
    """A two-colour ConvPoolConvNet (3 and 4 units, random biases) and three inputs,
    seeded so that channel 3 of relu2 is dead on the third."""
    torch.manual_seed(1)
    model = ConvPoolConvNet(channels=2, widths=(3, 4), classes=2, bias=None).eval()
    return model, torch.rand(3, 2, 8, 8)


def zeiler_fergus(model, x, channel):
    """The deconvnet by hand: keep the channel's strongest activation, zero the rest of
    the layer, then rectify, filter with the transposed conv, unpool through the max
    switches, and so on down to the pixels."""
    a1 = model.relu1(model.conv1(x))
    pooled, switches = F.max_pool2d(a1, 2, return_indices=True)
    a2 = model.relu2(model.conv2(pooled))
    signal = torch.zeros_like(a2)
    flat = a2[0, channel].flatten()
    signal[0, channel].view(-1)[flat.argmax()] = flat.max()
    s = F.conv_transpose2d(signal.relu(), model.conv2.weight, padding=1)
    s = F.max_unpool2d(s, switches, 2, output_size=a1.shape[-2:])
    return F.conv_transpose2d(s.relu(), model.conv1.weight, padding=1)


def test_deconvnet_is_zeiler_and_fergus_projection_of_the_strongest_activation(deconv_case):
    model, x = deconv_case
    channels = [0, 2, 3]  # channel 3 is dead on the third image: it projects to zero
    deconvnet = attribution.Deconvnet(model, "relu2")
    got = deconvnet.attribute(x, target=channels)
    assert got.shape == x.shape
    for i, c in enumerate(channels):
        expected = zeiler_fergus(model, x[i:i + 1], c)[0].detach()
        assert torch.allclose(got[i], expected, atol=1e-6)
    assert got[2].abs().max() == 0 and got[:2].abs().amax((1, 2, 3)).min() > 0
    # Not the plain gradient: the deconvnet rectifies the signal instead of gating it.
    first = x[:1].clone().requires_grad_()
    a2 = model.relu2(model.conv2(model.pool(model.relu1(model.conv1(first)))))
    plain, = torch.autograd.grad(a2[0, 0].flatten().max().square() / 2, first)
    assert not torch.allclose(got[0], plain[0], atol=1e-5)
    with pytest.raises(ValueError, match="target: expected one channel per input"):
        deconvnet.attribute(x, target=[0, 1])


def test_support_boxes_enclose_the_pixels_above_the_fraction():
    maps = torch.zeros(3, 2, 6, 7)
    maps[0, 0, 1, 2] = 1.0
    maps[0, 1, 4, 5] = -0.5  # strength is |value|, max over channels
    maps[0, 0, 5, 0] = 0.05
    maps[1, 1, 2:4, 3] = 2.0
    boxes = attribution.support_boxes(maps, fraction=0.1)
    assert boxes[0].tolist() == [1, 5, 2, 6]  # the 0.05 pixel is below 10 % of the max
    assert boxes[1].tolist() == [2, 4, 3, 4]
    assert boxes[2].tolist() == [-1, -1, -1, -1]  # a zero map has no support
    assert attribution.support_boxes(maps, fraction=0.0)[0].tolist() == [1, 6, 0, 6]
    with pytest.raises(ValueError, match="fraction"):
        attribution.support_boxes(maps, fraction=1.0)


@pytest.mark.gpu
def test_saliency_and_gradcam_on_cuda_match_cpu():
    # Tolerance: float32 on both; CUDA kernels differ from the CPU's by summation order
    # (and TF32 where enabled), so 1e-3 relative to the map's scale.
    from subnets import models, train

    with train.seeded(0):
        cnn = models.ThreeBlockCNN(image_size=16, widths=(4, 6, 8), hidden=5).eval()
    x = torch.rand(4, 1, 16, 16)
    target = torch.tensor([0, 3, 5, 9])
    cpu = {"saliency": attribution.Saliency(cnn).attribute(x, target),
           "gradcam": attribution.GradCAM(cnn, "conv3").attribute(x, target)}
    cnn.to("cuda")
    gpu = {"saliency": attribution.Saliency(cnn).attribute(x, target),
           "gradcam": attribution.GradCAM(cnn, "conv3").attribute(x, target)}
    for name, on_cpu in cpu.items():
        assert gpu[name].device.type == "cpu"
        scale = on_cpu.abs().max().item()
        torch.testing.assert_close(gpu[name], on_cpu, rtol=1e-3, atol=1e-3 * scale)


@pytest.mark.gpu
def test_deconvnet_on_cuda_matches_the_cpu(deconv_case):
    # Tolerance: two transposed convs and an unpooling in float32, 1e-4 of the map's scale.
    model, x = deconv_case
    cpu = attribution.Deconvnet(model, "relu2").attribute(x, [0, 2, 3])
    gpu = attribution.Deconvnet(copy.deepcopy(model).cuda(), "relu2").attribute(x, [0, 2, 3])
    assert gpu.device.type == "cpu"
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-4 * cpu.abs().max().item())
