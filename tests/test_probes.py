import csv

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from subnets import dissection, probes, synthetic_probes
from subnets.data import ImageSet, foreground


def fashion_like(n=4):
    images = torch.zeros(n, 1, 8, 8, dtype=torch.uint8)
    for i in range(n):
        images[i, 0, 1:3 + i % 3, 2:4] = 200
    return ImageSet(images, torch.arange(n) % 2, ["coat", "bag"], "toy", black_background=True)


def test_dataset_probe_uses_foreground_as_the_class_object():
    data = fashion_like()
    probe = probes.dataset_probe(data)
    assert probe.concepts == ["coat", "bag"] and probe.categories == ["object", "object"]
    fg = foreground(data.images)[:, 0]
    assert probe.mask("coat").equal(fg & (data.labels == 0).view(-1, 1, 1))
    assert probe.mask("bag").equal(fg & (data.labels == 1).view(-1, 1, 1))
    with pytest.raises(ValueError, match="foreground"):
        probes.dataset_probe(ImageSet(data.images, data.labels, data.classes, "photos"))


def test_concat_merges_concepts_and_keeps_every_mask():
    a = probes.dataset_probe(fashion_like())
    b = synthetic_probes.synthetic_probe(3, image_size=8, channels=1, seed=0)
    both = probes.concat(b, a)
    assert len(both) == 7 and both.segmentation.shape[1] == b.segmentation.shape[1]
    assert both.concepts[-2:] == ["coat", "bag"]
    assert both.mask("coat")[3:].equal(a.mask("coat")) and not both.mask("coat")[:3].any()
    assert both.mask("white")[:3].equal(b.mask("white"))
    again = probes.concat(both, a)
    assert again.concepts == both.concepts  # same name and category: one concept
    with pytest.raises(ValueError, match="same image shape"):
        probes.concat(a, synthetic_probes.synthetic_probe(1, image_size=16, channels=1))


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
    probe = probes.load_broden(tmp_path)
    assert probe.images.shape == (2, 3, 8, 8) and probe.mask_size == (4, 4)
    assert sorted(zip(probe.concepts, probe.categories)) == [("black", "color"), ("car", "object"),
                                                             ("red", "color"), ("wheel", "part")]
    car = torch.zeros(4, 4, dtype=torch.bool)
    car[1:3, 1:3] = True
    assert probe.mask("car").equal(car.expand(2, 4, 4))
    assert probe.mask("wheel")[0].sum() == 1 and probe.mask("wheel")[1].sum() == 0
    assert probe.mask("black")[:, :, :2].all() and probe.mask("red")[:, :, 2:].all()
    assert "sky" not in probe.concepts  # scene labels whole images: left out
    assert probe.presence()[:, probes.CATEGORIES.index("part")].tolist() == [True, False]
    val = probes.load_broden(tmp_path, image_size=16, mask_size=8, split="val")
    assert len(val) == 1 and val.images.shape[-1] == 16 and val.mask_size == (8, 8)


def test_load_broden_reads_grey_images_for_grey_networks_and_a_spread_share(tmp_path):
    write_broden(tmp_path)
    rgb = probes.load_broden(tmp_path)
    grey = probes.load_broden(tmp_path, channels=1)
    assert grey.images.shape == (2, 1, 8, 8) and grey.images.equal(probes.grey(rgb.images))
    # a grey net takes the grey probe (3-channel images into it crashed before)
    dissection.NetDissect(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), ["1"],
                          quantile=0.1).dissect(grey)
    half = probes.load_broden(tmp_path, fraction=0.5)
    assert len(half) == 1 and half.images.equal(rgb.images[:1])
    with pytest.raises(ValueError, match="fraction"):
        probes.load_broden(tmp_path, fraction=0.0)


def test_load_broden_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="index.csv"):
        probes.load_broden(tmp_path)


def test_concept_images_give_the_probe_images_of_each_concept_with_masks():
    seg = torch.zeros(3, 1, 8, 8, dtype=torch.int16)
    seg[0, 0, :2], seg[1, 0, 4:], seg[2, 0, 2:4] = 1, 2, 1  # tip on images 0 and 2, edge on 1
    probe = probes.ProbeSet(torch.zeros(3, 1, 8, 8, dtype=torch.uint8), seg, ["tip", "edge"],
                            ["part", "part"])
    data, masks = probes.concept_images(probe, ["tip", "edge"], "part")
    assert data.classes == ["tip", "edge"] and data.labels.tolist() == [0, 0, 1]
    assert masks.shape == (3, 1, 8, 8)
    assert masks[0, 0].equal(seg[0, 0] == 1) and masks[2, 0].equal(seg[1, 0] == 2)
    with pytest.raises(ValueError, match="concepts: \\['bench'\\]"):
        probes.concept_images(probe, ["tip", "bench"], "part")

