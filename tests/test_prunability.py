import pandas as pd
import pytest
import torch
from torch import nn

from subnets import cache, evaluation, prunability, pruning, train
from subnets.data import ImageSet


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A conv net with batch norm and sixteen 4x4 images (a private cache folder)."""
    monkeypatch.setenv("SUBNETS_CACHE", str(tmp_path))
    with train.seeded(0):
        net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                            nn.Conv2d(4, 4, 3, padding=1), nn.Flatten(), nn.Linear(64, 2))
        images = torch.randint(0, 256, (16, 1, 4, 4), dtype=torch.uint8)
    return net.eval(), ImageSet(images, torch.arange(16) % 2, ["a", "b"], "tiny")


def test_pruned_copies_prunes_and_recalibrates(tiny):
    net, images = tiny
    x = images.tensors()[0]
    kept = prunability.pruned(net, 0.5, "layerwise")
    assert pruning.weight_sparsity(net) == 0
    assert 0 < pruning.weight_sparsity(kept) < 0.5  # the head is kept
    assert torch.equal(kept[1].running_mean, net[1].running_mean)
    recalibrated = prunability.pruned(net, 0.5, "layerwise", x)
    assert not torch.equal(recalibrated[1].running_mean, net[1].running_mean)
    assert torch.equal(prunability.pruned(net, 0.0, "layerwise", x)[1].running_mean,
                       net[1].running_mean)


def test_accuracy_curve_reads_the_dense_and_pruned_accuracies(tiny, monkeypatch):
    net, images = tiny
    nets = {("cnn", 1, 0): net, ("cnn", 2, 0): net}
    curve = prunability.accuracy_curve(nets, images, [0.0, 0.9])
    dense = 100 * evaluation.evaluate(net, images).accuracy
    assert curve[curve.rate == 0.0].accuracy.tolist() == [dense, dense]
    table = prunability.dense_and_pruned(curve, 0.9)
    assert (table.difference == table.dense - table.pruned).all()
    with pytest.raises(ValueError, match="pruning_rate"):
        prunability.dense_and_pruned(curve, 0.5)
    # cached: a second sweep does not evaluate
    monkeypatch.setattr(train, "evaluate", lambda *a: pytest.fail("not cached"))
    assert prunability.accuracy_curve(nets, images, [0.0, 0.9]).equals(curve)
    assert any(cache.cache_dir().glob("*.pt"))


def test_global_ranking_empties_a_layer_of_small_weights_and_layerwise_never(tiny):
    net, _ = tiny
    with torch.no_grad():
        net[3].weight.mul_(1e-3)
    assert prunability.emptied_layers(net, 0.6, "global") == 1
    assert prunability.emptied_layers(net, 0.6, "layerwise") == 0
    row = prunability.emptied_claim({"cnn": net}, 0.6, "global")
    assert row.rule is None and row.shown == "cnn: 1" and row.estimate.value == 1.0


def test_tables_format_mean_and_std_over_seeds(tiny):
    net, images = tiny
    index = pd.MultiIndex.from_tuples([("cnn", 1, 0), ("cnn", 1, 1)],
                                      names=["architecture", "level", "seed"])
    per_seed = pd.DataFrame({"dense": [80.0, 90.0], "pruned": [10.0, 20.0]}, index)
    per_seed["difference"] = per_seed.dense - per_seed.pruned
    table = prunability.accuracy_table(per_seed, per_seed, 0.9)
    assert table.loc[("cnn", 1), "pruned test accuracy (90%)"] == "15.0 ± 7.1"
    assert table.loc[("cnn", 1), "placebo: dense / pruned"] == "85.0 ± 7.1 / 15.0 ± 7.1"
    tuned = {k: prunability.pruned(net, 0.5) for k in index}
    fine = prunability.fine_tuned_table(per_seed, tuned, images)
    assert fine.loc[("cnn", 1), "weight sparsity"] == round(pruning.weight_sparsity(tuned[
        "cnn", 1, 0]), 3)
    scopes = prunability.scope_comparison({("cnn", 1, 0): net}, images, 0.5, images.tensors()[0])
    assert list(scopes.columns) == ["layerwise, recalibrated", "global, dense statistics",
                                    "layers emptied (global)"]
