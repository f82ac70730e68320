"""Table 7's maps of chapter 4: each image's class's channels, their mass on the object,
and the gain of the influential channels per network of a tiny study."""

import pytest
import torch
from test_decomposition import study_of, tiny_data
from torch import nn

from subnets import class_maps, data, influence
from subnets.train import seeded


def test_object_gains_per_network_are_the_influential_minus_other_channels():
    tiny = tiny_data()
    _train_set, test_set, _config = tiny
    study = study_of(tiny)
    images, labels = test_set.tensors()
    gains = class_maps.object_gains(study, 8, images, labels, None, 2, 2)
    assert gains.isna().all() and len(gains) == 4
    masks = data.foreground(images)
    gains = class_maps.object_gains(study, 8, images, labels, masks, 2, 2)
    maps = class_maps.influential_maps(study.nets[8, 0], study.feats[8, 0]["train"], images,
                                       labels, 2, 2, 0)
    expected = (class_maps.map_mass_on_object(maps["influential"], masks)
                - class_maps.map_mass_on_object(maps["non-influential"], masks)).nanmean()
    assert gains["trained", 0] == pytest.approx(expected.item(), nan_ok=True)


def test_map_mass_on_object():
    maps = torch.tensor([[[1.0, 3.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]).unsqueeze(1)
    masks = torch.tensor([[[True, False], [False, False]]] * 2).unsqueeze(1)
    share = class_maps.map_mass_on_object(maps, masks)
    assert share[0].item() == pytest.approx(0.25) and torch.isnan(share[1])


def test_class_channel_maps_pick_each_image_s_class_channels():
    class Conv(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Conv2d(1, 4, 3, padding=1)

        def forward(self, x):
            return self.layers(x)

    with seeded(0):
        net = Conv()
    images, labels = torch.rand(3, 1, 6, 6), torch.tensor([0, 1, 0])
    inf = influence.InfluentialFeatures(indices=torch.tensor([[0, 1], [2, 3]]),
                                        histograms=torch.zeros(2, 4, dtype=torch.long),
                                        k1=2, k2=2)
    others = torch.tensor([[2, 3], [0, 1]])
    maps = class_maps.class_channel_maps(net, "layers", images, labels, inf, others)
    with torch.no_grad():
        raw = net.layers(images)
    assert set(maps) == {"all channels", "influential", "non-influential"}
    torch.testing.assert_close(maps["all channels"], raw.mean(1, keepdim=True))
    torch.testing.assert_close(maps["influential"][1], raw[1, 2:].mean(0, keepdim=True))
    torch.testing.assert_close(maps["non-influential"][0], raw[0, 2:].mean(0, keepdim=True))


def test_channel_maps_mean_of_chosen_channels_then_upsampled():
    maps = torch.zeros(2, 3, 2, 2)
    maps[0, 1] = 2.0
    maps[1, 2] = 4.0
    out = class_maps.channel_maps(maps, torch.tensor([[1, 0], [2, 2]]), size=(4, 4))
    assert out.shape == (2, 1, 4, 4)
    torch.testing.assert_close(out[0], torch.ones(1, 4, 4))
    torch.testing.assert_close(out[1], torch.full((1, 4, 4), 4.0))
