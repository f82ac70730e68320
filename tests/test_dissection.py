import pytest
import torch
from torch import nn
from torch.nn import functional as F

from subnets import dissection, models, probes, synthetic_probes
from subnets.hooks import Ablation, Recorder


def tiny_probe(n=6, size=8, mask=8, seed=0):
    """Random images with random labels in three categories (one missing on some images)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    seg = torch.zeros(n, 2, mask, mask, dtype=torch.int16)
    seg[:, 0] = torch.randint(1, 4, (n, mask, mask), generator=g)  # colours 1..3 everywhere
    part = torch.randint(0, 3, (n, mask, mask), generator=g)  # parts 4..5 or nothing
    part[n // 2:] = 0  # the second half has no part labels at all
    seg[:, 1] = torch.where(part > 0, part + 3, 0)
    return probes.ProbeSet(images, seg, ["red", "green", "blue", "tip", "edge"],
                               ["color", "color", "color", "part", "part"])


class Pooled(nn.Module):
    """The image's channels, average-pooled 2x2: unit activations known exactly."""

    def __init__(self):
        super().__init__()
        self.pool = nn.AvgPool2d(2)

    def forward(self, x):
        return self.pool(x)


def reference_iou(model, name, probe, quantile):
    """Eq. (1) of the paper with explicit loops, from all activations at once."""
    with Recorder(model, [name]) as rec:
        model(probe.tensors())
    acts = rec.outputs[name]
    units = acts.shape[1]
    thresholds = torch.quantile(acts.transpose(0, 1).flatten(1), 1 - quantile, dim=1)
    maps = F.interpolate(acts, size=probe.mask_size, mode="bilinear", align_corners=False)
    iou = torch.zeros(units, len(probe.concepts))
    for u in range(units):
        fired = maps[:, u] > thresholds[u]
        for k, cat in enumerate(probe.categories):
            inter = union = 0
            for n in range(len(probe)):
                present = [c for c in probe.segmentation[n].unique().tolist() if c]
                if not any(probe.categories[c - 1] == cat for c in present):
                    continue
                label = (probe.segmentation[n] == k + 1).any(0)
                inter += (fired[n] & label).sum().item()
                union += (fired[n] | label).sum().item()
            iou[u, k] = inter / union if union else 0
    return thresholds, iou


def test_top_quantile_is_exactly_torch_quantile_in_any_chunking():
    g = torch.Generator().manual_seed(1)
    values = torch.randn(4, 1003, generator=g)
    for q in (0.005, 0.05, 0.3):
        tq = dissection.TopQuantile(q, values.shape[1])
        for chunk in torch.split(values, [1, 500, 2, 500], dim=1):
            tq.add(chunk)
        assert tq.keep <= q * values.shape[1] + 2  # holds about a q share, not everything
        torch.testing.assert_close(tq.value(), torch.quantile(values, 1 - q, dim=1))
    short = dissection.TopQuantile(0.1, 10)
    short.add(values[:, :5])
    with pytest.raises(ValueError, match="expected 10"):
        short.value()


def test_thresholds_and_iou_match_the_formula_written_out():
    probe = tiny_probe(n=6, size=8, mask=8)
    model = Pooled()
    q = 0.05
    result = dissection.NetDissect(model, ["pool"], quantile=q, batch_size=4).dissect(probe)
    thresholds, iou = reference_iou(model, "pool", probe, q)
    torch.testing.assert_close(result.thresholds.level["pool"], thresholds)
    torch.testing.assert_close(result["pool"], iou)
    assert (iou[:, 3:] > 0).any()  # the part concepts were scored on their images only


def test_presence_limits_the_union_to_images_with_the_category():
    seg = torch.zeros(2, 1, 2, 2, dtype=torch.int16)
    seg[0, 0, 0, 0] = 1  # a "tip" pixel in image 0; image 1 has no part label
    probe = probes.ProbeSet(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), seg, ["tip"], ["part"])
    assert probe.presence()[:, probes.CATEGORIES.index("part")].tolist() == [True, False]
    # a unit firing on the tip pixel and on all of image 1: image 1 does not enter the union
    acts = torch.zeros(2, 1, 2, 2)
    acts[0, 0, 0, 0] = 1
    acts[1] = 1
    model = nn.Identity()
    th = dissection.Thresholds({"": torch.tensor([0.5])}, {"": torch.tensor([False])})
    with torch.no_grad():
        probe = probes.ProbeSet((acts * 255).to(torch.uint8), seg, ["tip"], ["part"])
        iou = dissection.NetDissect(model, [""]).unit_iou(probe, th)
    assert iou[""].item() == 1.0


def test_saturated_units_segment_their_maximum_and_dead_units_nothing():
    x = torch.zeros(1, 3, 4, 4)
    x[0, 0, :2] = 1.0  # unit 0 saturates on half the positions (more than the quantile)
    x[0, 1, 0, 0] = 0.5  # unit 1 has one peak
    # unit 2 is constant zero (dead)
    probe = probes.ProbeSet((x * 255).to(torch.uint8),
                                torch.zeros(1, 1, 4, 4, dtype=torch.int16), [], [])
    th = dissection.NetDissect(nn.Identity(), [""], quantile=0.1).unit_thresholds(probe)
    assert th.inclusive[""].tolist() == [True, False, False]
    masks = th.segment("", probe.tensors())
    assert masks[0, 0].equal(x[0, 0] > 0) and masks[0, 1].sum() == 1 and masks[0, 2].sum() == 0




def test_units_and_detectors_count_top_concepts_per_category():
    iou = {"a": torch.tensor([[0.5, 0.1, 0.0], [0.01, 0.02, 0.03], [0.0, 0.3, 0.2]]),
           "b": torch.tensor([[0.0, 0.0, 0.05]])}
    d = dissection.Dissection(iou, ["cat", "ear", "red"], ["object", "part", "color"])
    units = d.units()
    assert units.concept.tolist() == ["cat", "red", "ear", "red"]
    counts = d.detectors(0.04)
    assert counts.loc["a"].tolist() == [1, 1, 0, 0] and counts.loc["b"].tolist() == [0, 0, 0, 1]
    assert list(counts.columns) == list(probes.CATEGORIES)
    assert units.colour.tolist() == ["red"] * 4
    assert units.colour_iou.tolist() == pytest.approx([0.0, 0.03, 0.2, 0.05])
    by_class = d.class_iou(["ear", "bench"], category=None)
    assert by_class["a"][:, 0].tolist() == pytest.approx([0.1, 0.02, 0.3])
    assert by_class["b"][:, 1].isnan().all()  # no such concept


def test_dissect_is_cached(isolated_cache):
    probe = tiny_probe()
    first = dissection.NetDissect(Pooled(), ["pool"], quantile=0.1).dissect(probe)
    files = list(isolated_cache.glob("dissection-*.pt"))
    second = dissection.NetDissect(Pooled(), ["pool"], quantile=0.1).dissect(probe)
    assert len(files) == 1 and second["pool"].equal(first["pool"])


def test_net_dissect_checks_its_settings_and_returns_a_dissection():
    probe = tiny_probe()
    for bad in ({"quantile": 0.0}, {"quantile": 1.0}, {"batch_size": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            dissection.NetDissect(Pooled(), ["pool"], **bad)
    with pytest.raises(KeyError, match="'nope'"):
        dissection.NetDissect(Pooled(), ["nope"])
    method = dissection.NetDissect(Pooled(), ["pool"], quantile=0.1, batch_size=2)
    d = method.dissect(probe)
    assert isinstance(d, dissection.Dissection)
    assert d.layers == ["pool"] and d.concepts == probe.concepts
    assert d.categories == probe.categories
    assert d["pool"].shape == (3, len(probe.concepts))
    # the two passes one at a time give what dissect caches, in any batch size
    whole = dissection.NetDissect(Pooled(), ["pool"], quantile=0.1, batch_size=len(probe))
    thresholds = whole.unit_thresholds(probe)
    assert thresholds.level["pool"].equal(d.thresholds.level["pool"])
    assert whole.unit_iou(probe, thresholds)["pool"].equal(d["pool"])


def test_unit_maps_reproduce_the_segmentation_used_for_iou():
    probe = tiny_probe()
    d = dissection.NetDissect(Pooled(), ["pool"], quantile=0.1).dissect(probe)
    maps, masks = d.unit_maps(Pooled(), probe, "pool", 1, [0, 2])
    expected = F.interpolate(F.avg_pool2d(probe.tensors([0, 2]), 2), size=(8, 8),
                             mode="bilinear")[:, 1]
    torch.testing.assert_close(maps, expected)
    assert masks.equal(maps > d.thresholds.level["pool"][1])


def test_unit_sites_switch_a_residual_unit_off_before_the_addition():
    net = models.resnet18_small().eval()
    names = dissection.unit_layers(net)
    sites = dissection.unit_sites(net, names)
    assert sites["stem.2"] == "stem.1" and sites["layers.1.0.relu2"] == "layers.1.0.bn2"
    assert sites["layers.1.0.relu1"] == "layers.1.0.bn1"
    x = torch.rand(2, 1, 28, 28)
    block = net.layers[1][0]
    with Recorder(net, ["layers.1.0.relu2", "layers.1.0.shortcut"]) as rec:
        net(x)
    skip = rec.outputs["layers.1.0.shortcut"]
    with (Ablation(net, {sites["layers.1.0.relu2"]: [3]}),
          Recorder(net, ["layers.1.0.relu2"]) as off):
        net(x)
    # the unit's own branch is gone, its skip path is kept (zero at the ReLU would cut both)
    torch.testing.assert_close(off.outputs["layers.1.0.relu2"][:, 3], skip[:, 3].relu())
    assert skip[:, 3].relu().abs().sum() > 0 and block is net.layers[1][0]
    plain = models.alexnet_small().eval()
    plain_sites = dissection.unit_sites(plain, dissection.unit_layers(plain))
    assert plain_sites["features.4"] == "features.3"  # no norm: the conv itself


def test_unit_layers_of_the_torchvision_size_networks():
    from subnets.models.imagenet import imagenet_network

    res = dissection.unit_layers(imagenet_network("resnet18", 1, 10))
    assert len(res) == 17 and res[0] == "net.relu" and "net.layer2.0.relu_out" in res
    assert len(dissection.unit_layers(imagenet_network("vgg11", 3, 10))) == 8
    assert len(dissection.unit_layers(imagenet_network("alexnet", 3, 10))) == 5


def test_unit_layers_are_the_activations_after_each_conv():
    alexnet = [f"features.{i}" for i in (1, 4, 7, 9, 11)]
    vgg = [f"features.{i}" for i in (2, 6, 10, 13, 17, 20)]
    assert dissection.unit_layers(models.alexnet_small()) == alexnet
    assert dissection.unit_layers(models.vgg11_small()) == vgg
    res = dissection.unit_layers(models.resnet18_small())
    assert res[0] == "stem.2" and len(res) == 17 and "layers.1.0.relu2" in res
    assert not any("shortcut" in n for n in res)


def test_ranking_agreement_error_and_correlation():
    scores = {"l": torch.tensor([[5.0, 1.0], [4.0, 2.0], [3.0, 3.0], [2.0, 4.0], [1.0, 5.0]])}
    same = dissection.ranking_agreement(scores, scores, fraction=0.4)
    assert same.chance.tolist() == pytest.approx([0.6, 0.6])
    assert same.error.tolist() == [0.0, 0.0] and same.spearman.tolist() == pytest.approx([1.0, 1.0])
    flipped = dissection.ranking_agreement(scores, {"l": scores["l"].flip(1)}, fraction=0.4)
    assert flipped.error.tolist() == [1.0, 1.0]
    assert flipped.spearman.tolist() == pytest.approx([-1.0, -1.0])
    relevance = torch.tensor([[5.0], [0.0], [4.0], [0.0], [0.0]]).expand(5, 2)
    half = dissection.ranking_agreement(scores, {"l": relevance}, fraction=0.4)
    assert half.error.tolist() == [0.5, 1.0]  # top-2 by IoU {0, 1} vs {0, 2}; {4, 3} vs {0, 2}


@pytest.mark.gpu
def test_dissection_on_cuda_matches_the_cpu(isolated_cache):
    probe = synthetic_probes.synthetic_probe(12, image_size=32, mask_size=16, seed=1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()).eval()
    on_cpu = dissection.NetDissect(net, ["1", "4"], quantile=0.05)
    cpu = on_cpu.unit_thresholds(probe)
    cpu_iou = on_cpu.unit_iou(probe, cpu)
    on_gpu = dissection.NetDissect(net.cuda(), ["1", "4"], quantile=0.05)
    gpu = on_gpu.unit_thresholds(probe)
    gpu_iou = on_gpu.unit_iou(probe, gpu)
    for name in ("1", "4"):  # thresholds to float32 rounding; IoU to a few boundary pixels
        assert gpu.level[name].device.type == "cpu"
        torch.testing.assert_close(gpu.level[name], cpu.level[name], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gpu_iou[name], cpu_iou[name], rtol=0, atol=0.02)
