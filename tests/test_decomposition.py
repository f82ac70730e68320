"""Chapter 4's sweeps over depths and seeds on a tiny study: every network measured once,
trained and placebo side by side, and a placebo run measuring its networks once."""

import pandas as pd
import pytest
import torch
from test_influence import Head
from torch import nn

from subnets import claims, data, decomposition, feature_noise, influence, train
from subnets.influence import PenultimateFeatures


def tiny_data():
    """Two seeds of ResNet-8 on 40 random 8x8 grey images of two classes, one epoch."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.arange(40) % 2
    images[labels == 1] //= 4  # a class that is darker, so that training has a signal
    train_set = data.ImageSet(images[:24], labels[:24], ["a", "b"], "tiny")
    test_set = data.ImageSet(images[24:], labels[24:], ["a", "b"], "tiny")
    config = train.TrainConfig(epochs=1, batch_size=8, seed=0)
    return train_set, test_set, config


@pytest.fixture(scope="module")
def tiny():
    return tiny_data()


def study_of(tiny, placebo=False):
    train_set, test_set, config = tiny
    return decomposition.resnet_study(train_set, test_set, config, [8], [0, 1], placebo=placebo)


def test_seeded_resnet_is_the_same_network_for_the_same_seed():
    a, b, c = (decomposition.seeded_resnet(8, s, 1, 2) for s in (0, 0, 1))
    assert torch.equal(a.fc.weight, b.fc.weight) and not torch.equal(a.fc.weight, c.fc.weight)
    with pytest.raises(ValueError, match="depth"):
        decomposition.penultimate_width([9])
    with pytest.raises(ValueError, match="k_grid"):
        decomposition.penultimate_width([8], k_grid=[1, 65])


def test_study_pairs_every_trained_network_with_its_untrained_self(tiny, isolated_cache):
    study = study_of(tiny)
    assert set(study.nets) == set(study.placebo_nets) == {(8, 0), (8, 1)}
    assert study.seeds == [0, 1]
    for key in study.nets:
        assert not torch.equal(study.nets[key].fc.weight, study.placebo_nets[key].fc.weight)
        fresh = decomposition.seeded_resnet(8, key[1], 1, 2)
        assert torch.equal(study.placebo_nets[key].fc.weight, fresh.fc.weight)
    calls = []
    out = study.per_seed(lambda n, f, s, untrained: calls.append((s, untrained)) or s, 8)
    assert sorted(calls) == [(0, False), (0, True), (1, False), (1, True)]
    assert out == {("trained", 0): 0, ("trained", 1): 1, ("placebo", 0): 0, ("placebo", 1): 1}
    table = decomposition.network_statistics(study, 2, 2, [1, 2])
    assert table.index.names == ["network", "depth", "seed"] and len(table) == 4
    fc, f = study.nets[8, 1].fc, study.feats[8, 1]
    found = influence.InfluentialFeatureSelection(study.nets[8, 1], k1=2, k2=2).select(f["train"])
    expected = decomposition.decomposition_statistics(fc, f["train"], f["test"], found, [1, 2], 1)
    assert table.loc["trained", 8, 1].to_dict() == pytest.approx(expected, nan_ok=True)
    noise = decomposition.noise_table(table)
    assert noise.shape == (2, 4 * len(feature_noise.NOISES))


def test_a_depth_with_weights_loads_its_checkpoint_and_trains_nothing(tiny, tmp_path,
                                                                      isolated_cache):
    train_set, test_set, config = tiny
    trained = decomposition.seeded_resnet(8, 5, 1, 2, normalize=((0.5,), (0.25,)))
    torch.nn.init.normal_(trained.fc.weight)
    checkpoint = tmp_path / "resnet8.th"
    torch.save({"state_dict": {f"module.{k}": v for k, v in trained.state_dict().items()}},
               checkpoint)
    study = decomposition.resnet_study(train_set, test_set, config, [8], [0],
                                       weights={8: str(checkpoint)},
                                       input_normalisation="imagenet")
    net = study.nets[8, 0]
    assert torch.equal(net.fc.weight, trained.fc.weight)
    assert not list(isolated_cache.glob("fit-*.pt"))  # nothing trained
    assert net.normalize is not None and study.placebo_nets[8, 0].normalize is not None
    assert torch.equal(study.placebo_nets[8, 0].fc.weight,
                       decomposition.seeded_resnet(8, 0, 1, 2).fc.weight)
    history = study.histories[8, 0]
    assert history.epoch.tolist() == [0] and history.train_accuracy.iloc[0] == pytest.approx(
        influence.layer_correct(net.fc, study.feats[8, 0]["train"]).float().mean().item())
    with pytest.raises(ValueError, match="expected 1 seed"):
        decomposition.resnet_study(train_set, test_set, config, [8], [0, 1],
                                   weights={8: str(checkpoint)})


def test_a_placebo_study_measures_its_networks_once(tiny, isolated_cache):
    study = study_of(tiny, placebo=True)
    assert study.nets is study.placebo_nets
    calls = []
    study.per_seed(lambda n, f, s, untrained: calls.append((s, untrained)), 8)
    assert calls == [(0, True), (1, True)]
    table = decomposition.network_statistics(study, 2, 2, [1, 2])
    pd.testing.assert_frame_equal(table.loc["trained"], table.loc["placebo"])


def test_retraining_per_network(tiny, isolated_cache):
    train_set, test_set, config = tiny
    study = study_of(tiny)
    retrained = decomposition.retraining_accuracies(study, 8, train_set, test_set, config, 2, 2)
    assert list(retrained.columns) == ["retrained", "trained as long again"]
    assert retrained.index.names == ["network", "seed"] and len(retrained) == 4


def test_trained_claim_splits_trained_from_placebo_values():
    index = pd.MultiIndex.from_tuples([("placebo", 0), ("trained", 0), ("placebo", 1),
                                       ("trained", 1)], names=["network", "seed"])
    row = decomposition.trained_claim("c", "p", pd.Series([0.1, 0.9, 0.2, 0.8], index),
                                      claims.Rule(">", 0.5))
    assert row.estimate.value == pytest.approx(0.85)
    assert claims.Claim.trained("c", "p", [0.9, 0.8], [0.1, 0.2], claims.Rule(">", 0.5)) == row


def test_decomposition_statistics_are_those_of_their_parts():
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(120, 8, generator=g), torch.arange(120) % 3
    x[torch.arange(120), y] += 1.0  # feature c marks class c
    data = PenultimateFeatures(x, y)
    head = Head(8, 3)
    found = influence.InfluentialFeatureSelection(head, k1=2, k2=2).select(data)
    stats = decomposition.decomposition_statistics(head.fc, data, data, found, [1, 2], seed=4)
    full = influence.layer_correct(head.fc, data).mean().item()
    decomposed = influence.layer_correct(influence.DecomposedLinear(head.fc, found.indices),
                                         data).mean().item()
    random = influence.layer_correct(influence.DecomposedLinear(
        head.fc, influence.random_feature_sets(3, 8, 2, 4)), data).mean().item()
    noised = {f"{noise} noise: {k}": v for noise in ("feature", "standard") for k, v in
              feature_noise.noise_ablation(head.fc, data, data, found, 4, noise)
              .accuracies().items()}
    grid = decomposition.relative_accuracy_grid(head.fc, data, data, [1, 2], [1, 2])
    assert stats == pytest.approx({
        "full": full, "decomposed": decomposed, "relative": decomposed / full,
        "random sets": random, "diagonal margin": decomposition.diagonal_margin(grid), **noised})


def test_relative_accuracy_grid_is_one_with_all_features():
    torch.manual_seed(0)
    fc = nn.Linear(6, 3)
    x = torch.rand(30, 6)
    y = fc(x).argmax(1)  # the full layer is right on every instance
    data = PenultimateFeatures(x, y)
    result = decomposition.relative_accuracy_grid(fc, data, data, k1s=[1, 6], k2s=[2, 6])
    grid = result.table
    assert grid["full_accuracy"].eq(1.0).all()
    assert grid.loc[grid.k2 == 6, "relative"].eq(1.0).all()
    assert len(grid) == 4 and grid["relative"].between(0, 1).all()
    # The per-image hits are the table's accuracies, one column per row of the table.
    assert result.correct.shape == (30, 4) and result.full_correct.eq(1.0).all()
    torch.testing.assert_close(result.correct.mean(0).double(),
                               torch.tensor(grid["accuracy"].values))


def test_diagonal_margin_is_the_median_of_k1_equals_k2_over_the_best_other():
    # Rows k1, columns k2: at k2 = 1 the diagonal wins by 0.1, at k2 = 2 it loses by 0.2,
    # at k2 = 3 it wins by 0.3: the median margin is 0.1.
    acc = [[0.5, 0.4, 0.1], [0.4, 0.4, 0.2], [0.3, 0.6, 0.6]]
    table = pd.DataFrame([{"k1": k1, "k2": k2, "accuracy": acc[i][j]}
                          for i, k1 in enumerate([1, 2, 3]) for j, k2 in enumerate([1, 2, 3])])
    grid = decomposition.DecompositionGrid(table, torch.empty(0), torch.empty(0))
    assert decomposition.diagonal_margin(grid) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="grid"):
        decomposition.diagonal_margin(decomposition.DecompositionGrid(table.query("k1 < 3"),
                                                              torch.empty(0), torch.empty(0)))
