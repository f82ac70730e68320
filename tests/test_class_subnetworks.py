"""Chapter 1's study of class sub-networks on a tiny network and data set: what each part
returns, that it reads the same S_C every time, and that the seed statistics pair each
network with its placebo."""

import pandas as pd
import pytest
import torch

from subnets import class_subnetworks, data, train
from subnets.claims import Rule


@pytest.fixture(scope="module")
def study():
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(60, 1, 12, 12, generator=g) * 255).to(torch.uint8)
    images[:, :, :2] = 0  # a black border: Fashion-MNIST's objects sit on black
    part = data.ImageSet(images, torch.arange(60) % 3, ["a", "b", "c"], "tiny",
                         black_background=True)
    return class_subnetworks.Study(
        class_subnetworks.new_f((1, 12, 12), 3, seed=0), part, part, seed=0, sample_seed=0,
        threshold=0.0, head_config=train.TrainConfig(epochs=1, batch_size=8, loss="bce"),
        n_head_train=20, gradcam_layer="conv3", n_agreement=4)


def test_kept_counts_are_the_rule_that_builds_s_c(study):
    counts = study.kept_counts()
    assert counts.shape == (6, 3)
    sub, predicted = study.subnetwork(1, "random")
    assert counts.loc[("class mean", 1)].tolist() == [len(k) for k in sub.kept.values()]
    assert predicted.dtype == torch.bool and len(predicted) == 60
    assert study.subnetwork(1, "random") is study.subnetwork(1, "random", threshold=0.0)
    with pytest.raises(ValueError, match="rule"):
        study.subnetwork(1, rule="median")


def test_rules_jaccard_is_one_for_a_layer_both_rules_keep_whole(study):
    jaccard = study.rules_jaccard()
    assert jaccard.shape == (3, 3) and ((jaccard >= 0) & (jaccard <= 1)).all().all()
    full = [c for c in range(3) if all(len(study.kept[rule, c]["conv1"]) == study.widths["conv1"]
                                       for rule in class_subnetworks.RULES)]
    assert (jaccard.loc[full, "conv1"] == 1).all()


def test_exemplars_start_with_the_first_and_are_distinct(study):
    chosen = study.exemplars(2, 3)
    assert list(chosen)[:2] == ["first", "most confident"]
    assert chosen["first"] == study.first_exemplar[2] and len(set(chosen.values())) == 3
    assert (study.y_train[list(chosen.values())] == 2).all()


def test_map_rows_have_every_image_and_method(study):
    rows = study.map_rows(0)
    assert len(rows) == 2 * 2 * 4  # side x method x images
    grad = rows[rows["method"] == "Grad-CAM"]
    assert grad["heads agree"].dropna().between(-1, 1).all()  # NaN: a flat trained-head map
    assert rows["chance"].between(0, 1).all()
    assert rows.loc[rows["method"] == "saliency", "heads agree"].isna().all()


def test_statistics_and_seed_statistics_pair_trained_with_placebo(study):
    settings = {"target_class": 1, "figure4_class": 2, "exemplar_classes": [1],
                "n_exemplars": 2}
    values = class_subnetworks.statistics(study, **settings)
    assert values["exactness"] < 1e-5
    assert 0 <= values["conv3 removed"] <= 1 and values["prior"] == 0.5
    shared = {0: study}
    once = class_subnetworks.SeedStatistics.of(shared, shared, **settings)
    assert once.placebo is once.trained  # a placebo run studies its networks once
    assert once.trained.loc[0, "conv3 removed"] == values["conv3 removed"]
    seeds = class_subnetworks.SeedStatistics(pd.DataFrame([values, values]),
                                             pd.DataFrame([values, values]) * 0)
    row = seeds.claim("prior", "—", "prior", Rule(">", 0.4))
    assert row.estimate.seeds == 2 and row.gain.value == 0.5
    assert seeds.mean("prior", "placebo") == 0


def test_new_f_and_f_config_are_seeded():
    a, b = (class_subnetworks.new_f((1, 8, 8), 2, seed=3) for _ in range(2))
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert class_subnetworks.f_config(4, 128, 0.002, "fp32", 7).seed == 7
