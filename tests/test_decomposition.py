"""Chapter 4's sweeps over depths and seeds on a tiny study: every network measured once,
trained and placebo side by side, and a placebo run measuring its networks once."""

import pandas as pd
import pytest
import torch
from test_influence import Head

from subnets import claims, data, decomposition, feature_noise, gates, influence, train
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


def test_a_placebo_study_measures_its_networks_once(tiny, isolated_cache):
    study = study_of(tiny, placebo=True)
    assert study.nets is study.placebo_nets
    calls = []
    study.per_seed(lambda n, f, s, untrained: calls.append((s, untrained)), 8)
    assert calls == [(0, True), (1, True)]
    table = decomposition.network_statistics(study, 2, 2, [1, 2])
    pd.testing.assert_frame_equal(table.loc["trained"], table.loc["placebo"])


def test_retraining_and_gates_per_network(tiny, isolated_cache):
    train_set, test_set, config = tiny
    study = study_of(tiny)
    retrained = decomposition.retraining_accuracies(study, 8, train_set, test_set, config, 2, 2)
    assert list(retrained.columns) == ["retrained", "trained as long again"]
    assert retrained.index.names == ["network", "seed"] and len(retrained) == 4
    gated = decomposition.gated_networks(study, 8, train_set, test_set, config,
                                         gates.GateConfig(), 2, 2)
    assert gated.statistics.index.names == ["network", "seed"] and len(gated.statistics) == 4
    assert gated.nets["placebo", 0].gates.eq(0.5).all()  # untrained: gates at their init


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
    grid = influence.relative_accuracy_grid(head.fc, data, data, [1, 2], [1, 2])
    assert stats == pytest.approx({
        "full": full, "decomposed": decomposed, "relative": decomposed / full,
        "random sets": random, "diagonal margin": influence.diagonal_margin(grid), **noised})
