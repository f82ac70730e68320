import csv

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from subnets import dissection, models
from subnets.data import ImageSet, foreground
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
    return dissection.ProbeSet(images, seg, ["red", "green", "blue", "tip", "edge"],
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
    result = dissection.NetDissect(model, ["pool"], quantile=q, batch_size=4).attribute(probe)
    thresholds, iou = reference_iou(model, "pool", probe, q)
    torch.testing.assert_close(result.thresholds.level["pool"], thresholds)
    torch.testing.assert_close(result.iou["pool"], iou)
    assert (iou[:, 3:] > 0).any()  # the part concepts were scored on their images only


def test_presence_limits_the_union_to_images_with_the_category():
    seg = torch.zeros(2, 1, 2, 2, dtype=torch.int16)
    seg[0, 0, 0, 0] = 1  # a "tip" pixel in image 0; image 1 has no part label
    probe = dissection.ProbeSet(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), seg, ["tip"], ["part"])
    assert probe.presence()[:, dissection.CATEGORIES.index("part")].tolist() == [True, False]
    # a unit firing on the tip pixel and on all of image 1: image 1 does not enter the union
    acts = torch.zeros(2, 1, 2, 2)
    acts[0, 0, 0, 0] = 1
    acts[1] = 1
    model = nn.Identity()
    th = dissection.Thresholds({"": torch.tensor([0.5])}, {"": torch.tensor([False])})
    with torch.no_grad():
        probe = dissection.ProbeSet((acts * 255).to(torch.uint8), seg, ["tip"], ["part"])
        iou = dissection.NetDissect(model, [""]).unit_iou(probe, th)
    assert iou[""].item() == 1.0


def test_saturated_units_segment_their_maximum_and_dead_units_nothing():
    x = torch.zeros(1, 3, 4, 4)
    x[0, 0, :2] = 1.0  # unit 0 saturates on half the positions (more than the quantile)
    x[0, 1, 0, 0] = 0.5  # unit 1 has one peak
    # unit 2 is constant zero (dead)
    probe = dissection.ProbeSet((x * 255).to(torch.uint8),
                                torch.zeros(1, 1, 4, 4, dtype=torch.int16), [], [])
    th = dissection.NetDissect(nn.Identity(), [""], quantile=0.1).unit_thresholds(probe)
    assert th.inclusive[""].tolist() == [True, False, False]
    masks = th.segment("", probe.tensors())
    assert masks[0, 0].equal(x[0, 0] > 0) and masks[0, 1].sum() == 1 and masks[0, 2].sum() == 0


def test_synthetic_probe_is_deterministic_and_its_labels_fit_the_pixels():
    a = dissection.synthetic_probe(12, image_size=32, mask_size=16, seed=3)
    b = dissection.synthetic_probe(12, image_size=32, mask_size=16, seed=3)
    c = dissection.synthetic_probe(12, image_size=32, mask_size=16, seed=4)
    assert a.images.equal(b.images) and a.segmentation.equal(b.segmentation)
    assert not a.images.equal(c.images)
    assert set(a.categories) == set(dissection.CATEGORIES)
    assert sum(cat == "color" for cat in a.categories) == 11
    full = dissection.synthetic_probe(12, image_size=32, seed=3)
    color_of = {k + 1: name for k, (name, cat) in enumerate(zip(full.concepts, full.categories))
                if cat == "color"}
    colors = torch.tensor([k for k in color_of])
    seg = full.segmentation.long()
    is_color = torch.isin(seg, colors)
    assert (is_color.sum(1) == 1).all()  # every pixel has exactly one colour name
    label = (seg * is_color).sum(1)
    prototypes = torch.tensor([dissection.COLORS[color_of[k]] for k in colors.tolist()])
    rgb = full.images.permute(0, 2, 3, 1).long()
    expected = prototypes[torch.searchsorted(colors, label)]
    assert (rgb - expected).abs().max() <= 25  # the pixel is a shade of its colour name
    objects = full.mask("square") | full.mask("circle") | full.mask("star") | full.mask("cross") \
        | full.mask("triangle") | full.mask("hexagon")
    for k, (name, cat) in enumerate(zip(full.concepts, full.categories)):
        if cat == "part":
            assert (full.mask(name) <= objects).all(), name  # parts lie on objects
    # masks are the full-resolution labels sampled at block centres
    assert a.segmentation.equal(full.segmentation[..., 1::2, 1::2])


def test_grey_probe_is_the_luminance_of_the_colour_probe():
    rgb = dissection.synthetic_probe(3, image_size=16, seed=0)
    grey = dissection.synthetic_probe(3, image_size=16, channels=1, seed=0)
    lum = (rgb.images.float()
           * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    assert grey.images.shape == (3, 1, 16, 16) and (grey.images.float() - lum).abs().max() <= 0.5
    kept = dissection.synthetic_probe(3, image_size=16, channels=1, seed=0, merge_grey=False)
    assert kept.segmentation.equal(rgb.segmentation) and kept.concepts == rgb.concepts
    # merged: the same pixels carry a colour label, under fewer (grey-separable) names
    colours = [c for c, cat in zip(grey.concepts, grey.categories) if cat == "color"]
    assert "blue/brown/green/purple/red" in colours and "pink/yellow" in colours
    assert len(colours) == len(dissection.grey_colour_groups()) == 6
    for name in ("blue", "red", "pink", "white"):
        merged = next(c for c in colours if name in c.split("/"))
        assert grey.mask(merged).ge(rgb.mask(name)).all()


def test_grey_colour_groups_merge_names_closer_than_the_shading_spread():
    level = {n: float(np.dot(rgb, dissection.LUMINANCE)) for n, rgb in dissection.COLORS.items()}
    groups = dissection.grey_colour_groups()
    assert sorted(n for g in groups for n in g) == sorted(dissection.COLORS)
    # the names: 4-10 grey levels apart, inside the shading's spread, are merged
    for a, b in [("blue", "brown"), ("brown", "red"), ("red", "purple")]:
        assert abs(level[a] - level[b]) < 11 and any({a, b} <= set(g) for g in groups)
    assert not any({"grey", "white"} <= set(g) for g in groups)


def test_synthetic_probe_rejects_bad_sizes():
    with pytest.raises(ValueError, match="mask_size"):
        dissection.synthetic_probe(2, image_size=30, mask_size=7)
    with pytest.raises(ValueError, match="channels"):
        dissection.synthetic_probe(2, image_size=16, channels=2)


def fashion_like(n=4):
    images = torch.zeros(n, 1, 8, 8, dtype=torch.uint8)
    for i in range(n):
        images[i, 0, 1:3 + i % 3, 2:4] = 200
    return ImageSet(images, torch.arange(n) % 2, ["coat", "bag"], "toy", black_background=True)


def test_dataset_probe_uses_foreground_as_the_class_object():
    data = fashion_like()
    probe = dissection.dataset_probe(data)
    assert probe.concepts == ["coat", "bag"] and probe.categories == ["object", "object"]
    fg = foreground(data.images)[:, 0]
    assert probe.mask("coat").equal(fg & (data.labels == 0).view(-1, 1, 1))
    assert probe.mask("bag").equal(fg & (data.labels == 1).view(-1, 1, 1))
    with pytest.raises(ValueError, match="foreground"):
        dissection.dataset_probe(ImageSet(data.images, data.labels, data.classes, "photos"))


def test_concat_merges_concepts_and_keeps_every_mask():
    a = dissection.dataset_probe(fashion_like())
    b = dissection.synthetic_probe(3, image_size=8, channels=1, seed=0)
    both = dissection.concat(b, a)
    assert len(both) == 7 and both.segmentation.shape[1] == b.segmentation.shape[1]
    assert both.concepts[-2:] == ["coat", "bag"]
    assert both.mask("coat")[3:].equal(a.mask("coat")) and not both.mask("coat")[:3].any()
    assert both.mask("white")[:3].equal(b.mask("white"))
    again = dissection.concat(both, a)
    assert again.concepts == both.concepts  # same name and category: one concept
    with pytest.raises(ValueError, match="same image shape"):
        dissection.concat(a, dissection.synthetic_probe(1, image_size=16, channels=1))


def write_broden(root):
    """Two images in Broden's layout: label numbers in red + 256 green, ';'-separated
    masks, whole-image scene and texture labels (ignored)."""
    (root / "images" / "ade").mkdir(parents=True)
    with open(root / "label.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["number", "name", "category", "frequency", "coverage", "syns"])
        for number, name, cat in [(1, "black", "color(1)"), (2, "red", "color(2)"),
                                  (300, "car", "object(1)"), (301, "wheel", "part(1)"),
                                  (7, "sky", "scene(1)")]:
            w.writerow([number, name, cat, 1, 1.0, ""])

    def mask_png(path, numbers):
        rgb = np.zeros((*numbers.shape, 3), dtype=np.uint8)
        rgb[..., 0], rgb[..., 1] = numbers % 256, numbers // 256
        Image.fromarray(rgb).save(root / "images" / path)

    rows = []
    for i in range(2):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(
            root / "images" / f"ade/{i}.png")
        color = np.where(np.arange(4)[None, :] < 2, 1, 2).repeat(4, 0)
        obj = np.zeros((4, 4), dtype=np.int64)
        obj[1:3, 1:3] = 300
        part = np.zeros((4, 4), dtype=np.int64)
        part[2, 2] = 301
        mask_png(f"ade/{i}_color.png", color)
        mask_png(f"ade/{i}_object.png", obj)
        mask_png(f"ade/{i}_part_1.png", part)
        rows.append({"image": f"ade/{i}.png", "split": "train" if i == 0 else "val",
                     "ih": 8, "iw": 8, "sh": 4, "sw": 4,
                     "color": f"ade/{i}_color.png", "object": f"ade/{i}_object.png",
                     "part": f"ade/{i}_part_1.png" if i == 0 else "", "material": "",
                     "scene": "7", "texture": ""})
    with open(root / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_load_broden_reads_the_layout(tmp_path):
    write_broden(tmp_path)
    probe = dissection.load_broden(tmp_path)
    assert probe.images.shape == (2, 3, 8, 8) and probe.mask_size == (4, 4)
    assert sorted(zip(probe.concepts, probe.categories)) == [("black", "color"), ("car", "object"),
                                                             ("red", "color"), ("wheel", "part")]
    car = torch.zeros(4, 4, dtype=torch.bool)
    car[1:3, 1:3] = True
    assert probe.mask("car").equal(car.expand(2, 4, 4))
    assert probe.mask("wheel")[0].sum() == 1 and probe.mask("wheel")[1].sum() == 0
    assert probe.mask("black")[:, :, :2].all() and probe.mask("red")[:, :, 2:].all()
    assert "sky" not in probe.concepts  # scene labels whole images: left out
    assert probe.presence()[:, dissection.CATEGORIES.index("part")].tolist() == [True, False]
    val = dissection.load_broden(tmp_path, image_size=16, mask_size=8, split="val")
    assert len(val) == 1 and val.images.shape[-1] == 16 and val.mask_size == (8, 8)


def test_load_broden_reads_grey_images_for_grey_networks_and_a_spread_share(tmp_path):
    write_broden(tmp_path)
    rgb = dissection.load_broden(tmp_path)
    grey = dissection.load_broden(tmp_path, channels=1)
    assert grey.images.shape == (2, 1, 8, 8) and grey.images.equal(dissection.grey(rgb.images))
    # a grey net takes the grey probe (3-channel images into it crashed before)
    dissection.NetDissect(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), ["1"],
                          quantile=0.1).attribute(grey)
    half = dissection.load_broden(tmp_path, fraction=0.5)
    assert len(half) == 1 and half.images.equal(rgb.images[:1])
    with pytest.raises(ValueError, match="fraction"):
        dissection.load_broden(tmp_path, fraction=0.0)


def test_load_broden_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="index.csv"):
        dissection.load_broden(tmp_path)


def test_units_and_detectors_count_top_concepts_per_category():
    iou = {"a": torch.tensor([[0.5, 0.1, 0.0], [0.01, 0.02, 0.03], [0.0, 0.3, 0.2]]),
           "b": torch.tensor([[0.0, 0.0, 0.05]])}
    d = dissection.Dissection(["a", "b"], ["cat", "ear", "red"], ["object", "part", "color"],
                              dissection.Thresholds({}, {}), iou)
    units = d.units()
    assert units.concept.tolist() == ["cat", "red", "ear", "red"]
    counts = d.detectors(0.04)
    assert counts.loc["a"].tolist() == [1, 1, 0, 0] and counts.loc["b"].tolist() == [0, 0, 0, 1]
    assert list(counts.columns) == list(dissection.CATEGORIES)
    assert d.concept_iou("ear")["a"].tolist() == pytest.approx([0.1, 0.02, 0.3])


def test_dissect_is_cached(isolated_cache):
    probe = tiny_probe()
    first = dissection.NetDissect(Pooled(), ["pool"], quantile=0.1).attribute(probe)
    files = list(isolated_cache.glob("dissection-*.pt"))
    second = dissection.NetDissect(Pooled(), ["pool"], quantile=0.1).attribute(probe)
    assert len(files) == 1 and second.iou["pool"].equal(first.iou["pool"])


def test_net_dissect_checks_its_settings_and_returns_a_dissection():
    probe = tiny_probe()
    for bad in ({"quantile": 0.0}, {"quantile": 1.0}, {"batch_size": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            dissection.NetDissect(Pooled(), ["pool"], **bad)
    with pytest.raises(KeyError, match="'nope'"):
        dissection.NetDissect(Pooled(), ["nope"])
    method = dissection.NetDissect(Pooled(), ["pool"], quantile=0.1, batch_size=2)
    d = method.attribute(probe)
    assert isinstance(d, dissection.Dissection)
    assert d.layers == ["pool"] and d.concepts == probe.concepts
    assert d.categories == probe.categories
    assert d.iou["pool"].shape == (3, len(probe.concepts))
    # the two passes one at a time give what attribute caches, in any batch size
    whole = dissection.NetDissect(Pooled(), ["pool"], quantile=0.1, batch_size=len(probe))
    thresholds = whole.unit_thresholds(probe)
    assert thresholds.level["pool"].equal(d.thresholds.level["pool"])
    assert whole.unit_iou(probe, thresholds)["pool"].equal(d.iou["pool"])


def test_unit_maps_reproduce_the_segmentation_used_for_iou():
    probe = tiny_probe()
    d = dissection.NetDissect(Pooled(), ["pool"], quantile=0.1).attribute(probe)
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


def test_concept_images_give_the_probe_images_of_each_concept_with_masks():
    probe = tiny_probe()
    data, masks = dissection.concept_images(probe, ["tip", "edge"], "part")
    has_tip = (probe.segmentation == 4).flatten(1).any(1)
    assert data.classes == ["tip", "edge"] and (data.labels == 0).sum() == has_tip.sum()
    assert masks.shape == (len(data), 1, 8, 8)
    assert masks[0, 0].equal((probe.segmentation[0] == 4).any(0))
    with pytest.raises(ValueError, match="concepts: \\['bench'\\]"):
        dissection.concept_images(probe, ["tip", "bench"], "part")


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
    assert same.error.tolist() == [0.0, 0.0] and same.spearman.tolist() == pytest.approx([1.0, 1.0])
    flipped = dissection.ranking_agreement(scores, {"l": scores["l"].flip(1)}, fraction=0.4)
    assert flipped.error.tolist() == [1.0, 1.0]
    assert flipped.spearman.tolist() == pytest.approx([-1.0, -1.0])
    relevance = torch.tensor([[5.0], [0.0], [4.0], [0.0], [0.0]]).expand(5, 2)
    half = dissection.ranking_agreement(scores, {"l": relevance}, fraction=0.4)
    assert half.error.tolist() == [0.5, 1.0]  # top-2 by IoU {0, 1} vs {0, 2}; {4, 3} vs {0, 2}


@pytest.mark.gpu
def test_dissection_on_cuda_matches_the_cpu(isolated_cache):
    probe = dissection.synthetic_probe(12, image_size=32, mask_size=16, seed=1)
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
