"""Tests of subnets.patches: deconvnet boxes, cutting and resizing patches, their place
against object masks and the chance level of a box, and the secondary classifier."""

import pytest
import torch
from torch import nn

from subnets import attribution, hooks, neuron_selection, patches, resampling


def test_patches_cut_and_resize_the_boxes():
    h = w = 12
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float), torch.arange(w, dtype=torch.float), indexing="ij"
    )
    images = torch.stack([(2 * yy + xx), (yy - 3 * xx)]).unsqueeze(1)  # linear: resampling is exact
    masks = {"a": torch.zeros(2, 7, 3, dtype=torch.bool)}
    masks["a"][0, 1, 2] = masks["a"][1, 1, 0] = masks["a"][1, 1, 1] = True
    masks["a"][1, 0, 1] = True  # another metric
    boxes = {"a": torch.full((2, 3, 4), -1)}
    boxes["a"][0, 2] = torch.tensor([2, 10, 4, 8])  # rows 2..9, cols 4..7
    boxes["a"][1, 0] = torch.tensor([1, 5, 3, 7])
    precision = neuron_selection.Selection(masks).metric("precision")
    cut, image = patches.patch_images(precision, boxes, images, size=4)
    assert image.tolist() == [0, 1]  # neuron (1, 1) has no box: dead, no patch
    # Bin centres of a box [t, b) x [l, r) resized to 4: t + (i + 0.5) (b - t) / 4, minus
    # half a pixel.
    ys = 2 + (torch.arange(4) + 0.5) * 2 - 0.5
    xs = 4 + (torch.arange(4) + 0.5) * 1 - 0.5
    assert torch.allclose(cut[0, 0], 2 * ys.view(-1, 1) + xs.view(1, -1), atol=1e-5)
    assert torch.allclose(cut[1, 0], images[1, 0, 1:5, 3:7], atol=1e-5)  # same size: a plain crop


def test_patch_table_counts_object_pixels_in_each_box():
    g = torch.Generator().manual_seed(0)
    foreground = torch.rand(3, 1, 9, 9, generator=g) > 0.6
    masks = {
        "a": torch.rand(3, 7, 5, generator=g) > 0.5,
        "b": torch.rand(3, 7, 2, generator=g) > 0.5,
    }
    boxes = {}
    for name, m in masks.items():
        t, l = torch.randint(0, 5, (2, 3, m.shape[2]), generator=g)
        boxes[name] = torch.stack(
            [t, t + 1 + torch.randint(0, 4, t.shape, generator=g), l, l + 4], -1
        )
    boxes["a"][1, 0] = -1
    table = patches.patch_table(masks, boxes, resampling.METRICS, foreground)
    expected_rows = sum(int(m.sum()) for m in masks.values()) - int(masks["a"][1, :, 0].sum())
    assert len(table) == expected_rows
    for row in table.itertuples():
        box = foreground[row.image, 0, row.top : row.bottom, row.left : row.right]
        assert row.object_pixels == int(box.sum())
        assert row.area == box.numel()
        assert masks[row.layer][row.image, resampling.METRICS.index(row.metric), row.neuron]


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
    of = neuron_selection.Selection(masks).metric
    acc = patches.patch_accuracy(
        of("precision"), boxes, images, labels, train_images, size=6, width=8, epochs=15
    )
    assert acc.accuracy > 0.9
    assert acc.per_image[:150].isnan().all() and not acc.per_image[150:].isnan().any()
    assert acc.per_image[150:].mean().item() == pytest.approx(acc.accuracy)  # one patch each
    blind = patches.patch_accuracy(
        of("random"), boxes, images, labels, train_images, size=6, width=8, epochs=15
    )
    assert blind.accuracy < 0.8  # the corner patches carry no label information
    half = patches.patch_accuracy(
        of("precision"), boxes, images, labels, train_images, size=6, width=8, epochs=15,
        precision="bf16"
    )
    assert half.accuracy > 0.9
    with pytest.raises(ValueError, match="train_images"):
        patches.patch_accuracy(
            of("precision"), boxes, images, labels, torch.ones(200, dtype=torch.bool)
        )


def test_leading_part_projects_like_the_whole_network(tiny_vgg):
    x = torch.rand(4, 1, 12, 12)
    relu = hooks.activation_after(tiny_vgg, hooks.conv_layers(tiny_vgg)[2])
    net, name = patches._leading_part(tiny_vgg, relu)
    assert len(net) < len(tiny_vgg.features) and net[int(name)] is hooks.layer(tiny_vgg, relu)
    whole = attribution.Deconvnet(tiny_vgg, relu).attribute(x, channel=[0, 1, 2, 3])
    part = attribution.Deconvnet(net, name).attribute(x, channel=[0, 1, 2, 3])
    assert torch.allclose(part, whole, atol=1e-6)
    assert patches._leading_part(nn.Sequential(nn.ReLU()), "0")[1] == "0"


def test_box_chance_is_the_share_of_placements_that_hit_the_object():
    objects = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    objects[0, 0, 0, 0] = True
    objects[1, 0, 1:3, 1:3] = True
    image = torch.tensor([0, 0, 0, 1, 1, 0])
    height, width = torch.tensor([1, 2, 4, 1, 3, 0]), torch.tensor([1, 2, 4, 1, 1, 2])
    got = patches.box_chance(objects, image, height, width)
    assert got[:5].tolist() == pytest.approx([1 / 16, 1 / 9, 1.0, 4 / 16, 4 / 8])
    assert torch.isnan(got[5])
    masks = {"a": torch.zeros(2, len(resampling.METRICS), 1, dtype=torch.bool)}
    masks["a"][:, 1, 0] = True
    table = patches.patch_table(
        masks, {"a": torch.tensor([[[0, 2, 1, 3]], [[0, 1, 0, 1]]])}, resampling.METRICS, objects
    )
    assert table["chance"].tolist() == pytest.approx([1 / 9, 4 / 16])
    assert table["object_pixels"].tolist() == [0, 0]
