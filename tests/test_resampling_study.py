"""Tests of subnets.resampling_study: the chapter's network, its checkpoints, one seed's
study on a tiny network and the claims built from it."""

import numpy as np
import pytest
import torch
from torch import nn

from subnets import data, resampling, train
from subnets import resampling_study as study


def test_vgg_layout_builds_the_blocks_and_checks_them():
    net = study.vgg_layout([4, 8], [2, 1], in_channels=3, seed=1)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 4, 8]
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 1
    again = study.vgg_layout([4, 8], [2, 1], in_channels=3, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), again.parameters()))
    with pytest.raises(ValueError, match="block_depths"):
        study.vgg_layout([4, 8], [2], in_channels=3)


def test_one_vs_rest_and_the_analysed_images():
    images = data.ImageSet(torch.arange(12, dtype=torch.uint8).view(12, 1, 1, 1).expand(
        12, 1, 2, 2).contiguous(), torch.arange(12) % 3, ["a", "b", "c"], "toy")
    binary = study.one_vs_rest(images, 1, 4, seed=0)
    assert binary.labels.tolist().count(1) == 2 and len(binary) == 4
    assert binary.classes == ["not b", "b"]
    masks = torch.ones(len(binary), 1, 2, 2, dtype=torch.bool)
    x, y, from_train, objects = study.analysed_images(binary, binary, 2, 4, 0, masks, masks)
    assert len(x) == len(y) == 6 and from_train.tolist() == [True] * 2 + [False] * 4
    assert objects.shape == (6, 1, 2, 2)
    assert study.analysed_images(binary, binary, 2, 2, 0)[3] is None


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SUBNETS_CACHE", str(tmp_path_factory.mktemp("cache")))
        return _tiny_study()


def _tiny_study():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 2
    pixels = torch.randint(0, 60, (40, 1, 12, 12), generator=g, dtype=torch.uint8)
    pixels[labels == 1, :, 3:9, 3:9] += 180  # a bright square: the object of class 1
    images = data.ImageSet(pixels, labels, ["no", "yes"], "squares", black_background=True)
    config = train.TrainConfig(epochs=2, batch_size=8, lr=1e-3, seed=0)
    nets = study.checkpoints(lambda: study.vgg_layout([4, 8], [1, 2], 1, seed=0), images,
                             config, early_fractions=[0.5], test_set=images)
    x, y, from_train, objects = study.analysed_images(images, images, 4, 4, 1,
                                                      images.images > 100, images.images > 100)
    conv = resampling.conv_names(nets[2.0], [2, 3])
    settings = {"n_samples": 6, "seed": 0, "threshold": 0.8}
    run = study.seed_study(nets, conv, x, y, from_train, objects, images, settings, top_k=2,
                           patch_size=4, patch_width=4, patch_epochs=1)
    return nets, run


def test_checkpoints_keep_the_untrained_network_and_every_epoch(tiny_study):
    nets, _ = tiny_study
    assert list(nets) == [0.0, 0.5, 1.0, 2.0]
    assert not torch.equal(next(nets[0.0].parameters()), next(nets[2.0].parameters()))
    untrained = study.checkpoints(lambda: study.vgg_layout([4], [1], 1), data.ImageSet(
        torch.zeros(4, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]), ["a", "b"],
        "toy"), train.TrainConfig(epochs=2, batch_size=2, seed=0), placebo=True)
    assert len({id(n) for n in untrained.values()}) == 1 and list(untrained) == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="epochs"):
        study.checkpoints(lambda: study.vgg_layout([4], [1], 1), None,
                          train.TrainConfig(epochs=0))


def test_a_seed_study_measures_every_checkpoint(tiny_study):
    nets, run = tiny_study
    assert set(run.selections) == set(nets) and list(run.accuracy.index) == list(nets)
    # All metrics' patches at the two ends, Figure 2's in between.
    assert {m for (e, m) in run.patches if e == 2.0} == set(resampling.METRICS)
    assert {m for (e, m) in run.patches if e == 0.5} == set(study.FIGURE2)
    assert set(run.switch_off) == set(run.noise_seed) == set(run.patch_table) == {0.0, 2.0}
    assert run.switch_off[2.0].shape == (8, len(resampling.METRICS))
    assert np.isnan(run.full_right[2.0][:4]).all()  # training images: not scored
    for e in (0.0, 2.0):
        own = run.share("precision", e)
        assert 0 <= own <= 1 and run.on_object("precision", e) <= own
        jaccard, chance = run.jaccard[e]
        assert run.overlap(e) == pytest.approx(np.nanmean(jaccard - chance))
    table = run.table1(2.0)
    assert list(table.index) == list(resampling.METRICS)
    assert {"patch accuracy", "localized", "chance", "area"} <= set(table.columns)
    frame = study.accuracy_frame([run, run])
    assert len(frame) == 2 * (4 * 3 + 4)  # 4 checkpoints x (3 metrics + the full network)
    assert list(study.jaccard_frame([run]).index) == list(nets)


def test_the_selections_only_study_skips_the_patches(tiny_study):
    nets, run = tiny_study
    x = run.selections[2.0]
    light = study.seed_study(nets, x.layers, torch.rand(2, 1, 12, 12), torch.tensor([0, 1]),
                             torch.tensor([True, False]), None, data.ImageSet(
                                 torch.zeros(2, 1, 12, 12, dtype=torch.uint8),
                                 torch.tensor([0, 1]), ["no", "yes"], "toy"),
                             {"n_samples": 4, "seed": 0}, top_k=2, selections_only=True)
    assert set(light.selections) == {0.0, 2.0} and not light.patches and not light.patch_table
    assert light.selections[2.0].boxes is None and set(light.switch_off) == {0.0, 2.0}
