import numpy as np
import pytest
import torch

from subnets import synthetic_probes
from subnets.data import ImageSet
from subnets.probes import CATEGORIES, LUMINANCE


def test_synthetic_probe_is_deterministic_and_its_labels_fit_the_pixels():
    a = synthetic_probes.synthetic_probe(12, image_size=32, mask_size=16, seed=3)
    b = synthetic_probes.synthetic_probe(12, image_size=32, mask_size=16, seed=3)
    c = synthetic_probes.synthetic_probe(12, image_size=32, mask_size=16, seed=4)
    assert a.images.equal(b.images) and a.segmentation.equal(b.segmentation)
    assert not a.images.equal(c.images)
    assert set(a.categories) == set(CATEGORIES)
    assert sum(cat == "color" for cat in a.categories) == 11
    full = synthetic_probes.synthetic_probe(12, image_size=32, seed=3)
    color_of = {k + 1: name for k, (name, cat) in enumerate(zip(full.concepts, full.categories))
                if cat == "color"}
    colors = torch.tensor([k for k in color_of])
    seg = full.segmentation.long()
    is_color = torch.isin(seg, colors)
    assert (is_color.sum(1) == 1).all()  # every pixel has exactly one colour name
    label = (seg * is_color).sum(1)
    prototypes = torch.tensor([synthetic_probes.COLORS[color_of[k]] for k in colors.tolist()])
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
    rgb = synthetic_probes.synthetic_probe(3, image_size=16, seed=0)
    grey = synthetic_probes.synthetic_probe(3, image_size=16, channels=1, seed=0)
    lum = (rgb.images.float()
           * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    assert grey.images.shape == (3, 1, 16, 16) and (grey.images.float() - lum).abs().max() <= 0.5
    kept = synthetic_probes.synthetic_probe(3, image_size=16, channels=1, seed=0, merge_grey=False)
    assert kept.segmentation.equal(rgb.segmentation) and kept.concepts == rgb.concepts
    # merged: the same pixels carry a colour label, under fewer (grey-separable) names
    colours = [c for c, cat in zip(grey.concepts, grey.categories) if cat == "color"]
    assert "blue/brown/green/purple/red" in colours and "pink/yellow" in colours
    assert len(colours) == len(synthetic_probes.grey_colour_groups()) == 6
    for name in ("blue", "red", "pink", "white"):
        merged = next(c for c in colours if name in c.split("/"))
        assert grey.mask(merged).ge(rgb.mask(name)).all()


def test_grey_colour_groups_merge_names_closer_than_the_shading_spread():
    level = {n: float(np.dot(rgb, LUMINANCE)) for n, rgb in synthetic_probes.COLORS.items()}
    groups = synthetic_probes.grey_colour_groups()
    assert sorted(n for g in groups for n in g) == sorted(synthetic_probes.COLORS)
    # the names: 4-10 grey levels apart, inside the shading's spread, are merged
    for a, b in [("blue", "brown"), ("brown", "red"), ("red", "purple")]:
        assert abs(level[a] - level[b]) < 11 and any({a, b} <= set(g) for g in groups)
    assert not any({"grey", "white"} <= set(g) for g in groups)


def test_synthetic_probe_rejects_bad_sizes():
    with pytest.raises(ValueError, match="mask_size"):
        synthetic_probes.synthetic_probe(2, image_size=30, mask_size=7)
    with pytest.raises(ValueError, match="channels"):
        synthetic_probes.synthetic_probe(2, image_size=16, channels=2)


def test_probe_with_objects_adds_each_class_object_on_black():
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    images[:, :, 2:5, 2:5] = 200
    data = ImageSet(images, torch.tensor([0, 1, 0, 1]), ["coat", "bag"], "toy",
                    black_background=True)
    probe = synthetic_probes.probe_with_objects(data, 3, 1, seed=0)
    assert len(probe) == 3 + 2 and probe.concepts[-2:] == ["coat", "bag"]
    assert probe.images.shape[1:] == (1, 8, 8)
    assert probe.mask("coat")[3:].sum() == 9 and not probe.mask("coat")[:3].any()
    photos = ImageSet(images, data.labels, data.classes, "photos")
    assert len(synthetic_probes.probe_with_objects(photos, 3, 1)) == 3  # no object masks
