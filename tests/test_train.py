import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from subnets import train


def toy_problem(n=256):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return TensorDataset(x, y)


def make_model(seed=0):
    with train.seeded(seed):
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def test_fit_learns_and_is_deterministic():
    data = toy_problem()
    config = train.TrainConfig(epochs=5, batch_size=32, lr=0.05)
    a = train.fit(make_model(), data, config)
    assert a.history["train_accuracy"].iloc[-1] > 0.9
    torch.manual_seed(123)  # global state must not matter
    b = train.run_training(make_model(), data, config, None, "again")
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b["state"][k])


def test_fit_uses_the_cache_and_keys_it_by_init_data_and_config(isolated_cache):
    data = toy_problem()
    config = train.TrainConfig(epochs=2, batch_size=64)
    first = train.fit(make_model(), data, config)
    assert len(list(isolated_cache.glob("fit-*.pt"))) == 1
    second = train.fit(make_model(), data, config)
    assert len(list(isolated_cache.glob("fit-*.pt"))) == 1
    assert torch.equal(first.model[0].weight, second.model[0].weight)
    train.fit(make_model(seed=1), data, config)
    train.fit(make_model(), data, train.TrainConfig(epochs=3, batch_size=64))
    train.fit(make_model(), toy_problem(128), config)
    assert len(list(isolated_cache.glob("fit-*.pt"))) == 4


def test_corrupt_checkpoint_is_retrained(isolated_cache):
    data = toy_problem()
    config = train.TrainConfig(epochs=2, batch_size=64)
    good = train.fit(make_model(), data, config).model.state_dict()
    (path,) = isolated_cache.glob("fit-*.pt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(UserWarning, match="unreadable"):
        again = train.fit(make_model(), data, config).model.state_dict()
    assert all(torch.equal(good[k], again[k]) for k in good)


def test_snapshots_and_history_with_test_data():
    data = toy_problem()
    trained = train.fit(make_model(), data, train.TrainConfig(epochs=3, batch_size=64, snapshots=True), test_data=data)
    assert list(trained.history["epoch"]) == [1, 2, 3] and "test_accuracy" in trained.history
    assert len(trained.snapshots) == 3
    last = trained.at_epoch(3)
    assert torch.equal(last[0].weight, trained.model[0].weight)
    assert not torch.equal(trained.at_epoch(1)[0].weight, last[0].weight)


def test_bce_loss_single_logit_and_evaluate():
    data = toy_problem()
    with train.seeded(0):
        model = nn.Linear(4, 1)
    trained = train.fit(model, data, train.TrainConfig(epochs=5, batch_size=32, lr=0.05, loss="bce"))
    ev = train.evaluate(trained.model, data)
    assert ev.accuracy > 0.9 and set(ev.predictions.unique().tolist()) <= {0, 1}


def test_sgd_cosine_and_augment_run():
    x = torch.rand(32, 1, 8, 8)
    data = TensorDataset(x, (x.mean((1, 2, 3)) > 0.5).long())
    with train.seeded(0):
        model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 2))
    config = train.TrainConfig(epochs=1, batch_size=8, optimizer="sgd", schedule="cosine", augment=True, lr=0.1)
    assert len(train.fit(model, data, config).history) == 1


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="epochs"):
        train.TrainConfig(epochs=-1)
    with pytest.raises(ValueError, match="optimizer"):
        train.TrainConfig(optimizer="lbfgs")


def test_per_class_accuracy():
    ev = train.Evaluation(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), ["a", "b", "c"])
    assert ev.per_class().tolist() == [1.0, 1.0, 0.5] and ev.accuracy == 0.75
