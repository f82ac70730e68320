"""Tests of subnets.canvases: cluttered canvases with their object masks."""

import pytest
import torch

from subnets import data
from subnets.canvases import cluttered


def test_cluttered_canvas_places_each_object_once_and_masks_it():
    g = torch.Generator().manual_seed(0)
    images = torch.zeros(6, 1, 10, 10, dtype=torch.uint8)
    images[:, :, 3:7, 2:8] = torch.randint(1, 255, (6, 1, 4, 6), generator=g, dtype=torch.uint8)
    source = data.ImageSet(images, torch.arange(6) % 2, ["a", "b"], "toy", black_background=True)
    canvases, objects = cluttered(source, 32, n_clutter=3, clutter_size=4, seed=1)
    assert canvases.images.shape == (6, 1, 32, 32) and objects.shape == (6, 1, 32, 32)
    assert torch.equal(canvases.labels, source.labels) and canvases.classes == ["a", "b"]
    assert (objects.flatten(1).sum(1) == 24).all()  # the 4 x 6 object, nothing else
    for i in range(6):
        ys, xs = objects[i, 0].nonzero().unbind(1)
        top, left = ys.min().item() - 3, xs.min().item() - 2
        pasted = canvases.images[i, :, top : top + 10, left : left + 10]
        assert (pasted >= images[i]).all()  # clutter only brightens
    assert canvases.images.float().mean() > 0
    clutter = canvases.images.bool() & ~objects
    assert clutter.any()  # pieces of other objects lie around
    again, _ = cluttered(source, 32, n_clutter=3, clutter_size=4, seed=1)
    assert torch.equal(again.images, canvases.images)
    rgb = data.ImageSet(images.expand(-1, 3, -1, -1).contiguous(), source.labels, ["a", "b"], "rgb")
    assert (cluttered(rgb, 16, seed=0)[1].flatten(1).sum(1) == 100).all()
    with pytest.raises(ValueError, match="canvas_size"):
        cluttered(source, 8)
    with pytest.raises(ValueError, match="clutter_size"):
        cluttered(source, 32, clutter_size=11)
