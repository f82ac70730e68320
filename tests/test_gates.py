"""Class-Specific Gates (Liang et al. 2020): the two paths by hand, Liang et al.'s clipping
and alternation, the cached training, the read-outs and their statistics."""

import math
from dataclasses import asdict

import pytest
import torch
from test_influence import TinyNet, two_blobs
from torch import nn
from torch.utils.data import DataLoader

from subnets import batches, cache, gates, influence, models, train
from subnets.data import ImageSet
from subnets.influence import PenultimateFeatures
from subnets.progress import bar
from subnets.train import TrainConfig, seeded


def test_gated_paths_by_hand():
    with seeded(0):
        net = gates.ClassSpecificGates(TinyNet())
    assert net.gates.eq(0.5).all()  # Liang et al. start every gate at 0.5
    f = torch.rand(3, 6)
    y = torch.tensor([0, 1, 1])
    x = torch.randn(3, 2)
    torch.testing.assert_close(net(x), net.model(x))  # the STD path ignores the gates
    with torch.no_grad():
        net.gates.fill_(1.0)
    # All gates open: both gated paths are the standard layer.
    torch.testing.assert_close(net.gated_logits(f, y), net.model.fc(f))
    torch.testing.assert_close(net.label_free_logits(f), net.model.fc(f))
    with torch.no_grad():
        net.gates[1] = 0.0
    W, b = net.model.fc.weight, net.model.fc.bias
    expected = torch.stack([f[0] @ W.T + b, b, b])
    torch.testing.assert_close(net.gated_logits(f, y), expected)
    free = net.label_free_logits(f)
    torch.testing.assert_close(free[:, 0], f @ W[0] + b[0])
    torch.testing.assert_close(free[:, 1], b[1].expand(3))


def test_clip_gates_normalises_each_feature_over_classes():
    with seeded(0):
        net = gates.ClassSpecificGates(TinyNet())
    with torch.no_grad():
        net.gates.copy_(torch.tensor([[0.2, 0.9, -0.1, 0.0, 2.0, 0.3],
                                      [0.4, 0.3, 0.5, 0.0, 1.0, 0.6]]))
    net.clip_gates()
    expected = torch.tensor([[0.5, 1.0, 0.0, 0.0, 1.0, 0.5],
                             [1.0, 1 / 3, 1.0, 0.0, 0.5, 1.0]])
    torch.testing.assert_close(net.gates.detach(), expected)


def test_gate_epochs_alternate_like_liang_et_al():
    cfg = gates.GateConfig(period=3)
    assert [cfg.is_csg_epoch(e) for e in range(1, 7)] == [True, True, False, True, True, False]
    assert gates.GateConfig(period=1).is_csg_epoch(3)


def test_fit_gates_sparsifies_within_bounds_and_is_cached():
    data = two_blobs()
    config = TrainConfig(epochs=12, batch_size=16, lr=1e-2, seed=0)
    gate_config = gates.GateConfig(density=0.5, gate_lr=0.1, sparsity_weight=1.0)
    with seeded(0):
        net = gates.fit_gates(TinyNet(), data, config, gate_config)
    g = net.gates.detach()
    assert g.min() >= 0 and g.max() <= 1
    assert set(g.max(0).values.tolist()) <= {0.0, 1.0}  # every feature normalised
    # The first clip lifts every gate from 0.5 to 1 (each feature's largest is 0.5); the
    # hinge then closes some: with 2 classes a feature keeps at least one open gate.
    assert 0.5 <= g.mean() < 0.9 and (g < 0.05).sum() >= 2
    assert net.history["path"].tolist() == ["CSG", "CSG", "STD"] * 4
    assert list(net.history.columns) == ["epoch", "path", "loss", "sparsity", "density"]
    test = influence.penultimate_features(net.model, data)
    acc = gates.gate_accuracies(net, test)
    assert acc.std.mean() > 0.9
    with seeded(0):
        again = gates.fit_gates(TinyNet(), data, config, gate_config)
    assert torch.equal(again.gates, net.gates)
    assert net.open_gates().shape == (2, 6)


def test_fit_gates_placebo_trains_nothing_and_caches_nothing(isolated_cache):
    with seeded(0):
        model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    net = gates.fit_gates(model, two_blobs(), TrainConfig(epochs=3, batch_size=16),
                              gates.GateConfig(init=0.25), placebo=True)
    assert net.gates.eq(0.25).all() and net.history.empty
    assert all(torch.equal(net.model.state_dict()[k], v) for k, v in before.items())
    assert not list(isolated_cache.glob("csg-*.pt"))


def test_gate_statistics_are_those_of_their_parts():
    with seeded(0):
        net = gates.ClassSpecificGates(TinyNet())
    with torch.no_grad():
        net.gates.copy_(torch.rand(2, 6, generator=torch.Generator().manual_seed(1)))
    data = influence.penultimate_features(net.model, two_blobs(), cached=False)
    stats = gates.gate_statistics(net, data, data, k1=3, k2=2)
    hits = gates.gate_accuracies(net, data)
    found = influence.InfluentialFeatureSelection(net.model, k1=3, k2=2).select(data)
    decomposed = influence.layer_correct(influence.DecomposedLinear(net.model.fc, found.indices),
                                         data)
    assert stats == pytest.approx({
        "STD": hits.std.mean().item(),
        "CSG, label": (net.gated_logits(data.features, data.labels).argmax(1)
                       == data.labels).float().mean().item(),
        "label-free": hits.label_free.mean().item(),
        "decomposed": decomposed.mean().item(),
        "top gates influential": gates.gate_overlap(net, found)[
            "top gates influential"].mean(), "by chance": 4 / 6})


def reference_gate_training(net, data, config, gate_config):
    """The CPU loop gate training had of its own before it went through
    ``train.run_training``: a DataLoader over the dataset's items, wrapped in the progress
    bar, per-batch ``.item()`` sums."""
    g = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(data, batch_size=config.batch_size, shuffle=True, generator=g)
    weights = [p for p in net.model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        opt = torch.optim.Adam(weights, lr=config.lr)
    else:
        opt = torch.optim.SGD(weights, lr=config.lr, momentum=config.momentum)
    gate_opt = torch.optim.SGD([net.gates], lr=gate_config.gate_lr)
    steps = config.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    budget = gate_config.density * net.gates.numel()
    history = []
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        for epoch in range(1, config.epochs + 1):
            csg = gate_config.is_csg_epoch(epoch)
            net.train()
            sums = {"loss": 0.0, "sparsity": 0.0}
            for x, y in bar(loader):
                x = batches.augment_batch(x, g) if config.augment else x
                if csg:
                    loss = nn.functional.cross_entropy(
                        net.gated_logits(net.model.penultimate(x), y), y)
                    hinge = (net.gates.abs().sum() - budget).clamp_min(0)
                    total = loss + gate_config.sparsity_weight * hinge
                else:
                    loss = nn.functional.cross_entropy(net.model(x), y)
                    hinge, total = torch.zeros(()), loss
                opt.zero_grad(set_to_none=True)
                gate_opt.zero_grad(set_to_none=True)
                total.backward()
                if config.clip_grad_norm is not None:
                    nn.utils.clip_grad_norm_(weights, config.clip_grad_norm)
                opt.step()
                sched.step()
                if csg:
                    gate_opt.step()
                    net.clip_gates()
                sums["loss"] += loss.item() / len(loader)
                sums["sparsity"] += hinge.item() / len(loader)
            history.append({"epoch": epoch, "path": "CSG" if csg else "STD", **sums,
                            "density": net.gates.detach().mean().item()})
    return net.state_dict(), history


def conv_images(n=150, side=10):
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (n, 3, side, side), generator=g, dtype=torch.uint8)
    return ImageSet(images, (images.float().mean((1, 2, 3)) > 127.5).long(), ["a", "b"], "toy")


@pytest.mark.parametrize(("augment", "optimizer"), [(False, "adam"), (True, "sgd")])
def test_cpu_gate_training_is_bit_for_bit_its_own_former_loop(augment, optimizer):
    # A CIFAR ResNet (batch norm, convolutions) on uint8 images: the trainer's in-memory
    # batches, augmentation draws and schedule must be the former loop's, step for step.
    data = conv_images()
    config = TrainConfig(epochs=4, batch_size=32, lr=0.01, optimizer=optimizer,
                         schedule="cosine", augment=augment,
                         clip_grad_norm=0.5 if optimizer == "sgd" else None)
    gate_config = gates.GateConfig(period=2, density=0.3)

    def fresh():
        with seeded(0):
            return models.cifar_resnet(8, in_channels=3, num_classes=2)

    net = gates.fit_gates(fresh(), data, config, gate_config)
    state, history = reference_gate_training(gates.ClassSpecificGates(fresh(), gate_config.init),
                                             data, config, gate_config)
    assert net.history.to_dict("records") == history
    assert net.history["sparsity"].gt(0).any()  # the hinge took part
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())


def test_cpu_gate_cache_key_is_the_trainers_config_key(isolated_cache):
    data = two_blobs()
    config = TrainConfig(epochs=1, batch_size=16)
    gate_config = gates.GateConfig()
    with seeded(0):
        model = TinyNet()
    net = gates.ClassSpecificGates(model, gate_config.init)
    parts = {"model": net, "data": list(data.tensors), "config": train.config_key(net, config),
             "gates": asdict(gate_config)}
    key = cache.key_of("csg", parts)  # before training changes the weights
    gates.fit_gates(model, data, config, gate_config)
    assert [p.name for p in isolated_cache.glob("csg-*.pt")] == [f"{key}.pt"]


def test_gate_accuracies_never_read_the_label():
    # The CSG path with the true label's gates is told the answer; the evaluation uses only
    # the STD path and the label-free read-out, so its predictions ignore the labels.
    with seeded(0):
        net = gates.ClassSpecificGates(TinyNet())
    f = torch.rand(20, 6)
    y = torch.randint(0, 2, (20,))
    acc = gates.gate_accuracies(net, PenultimateFeatures(f, y))
    assert set(vars(acc)) == {"std", "label_free"}
    with torch.no_grad():
        pred_std = net.model.fc(f).argmax(1)
        pred_free = net.label_free_logits(f).argmax(1)
    assert torch.equal(acc.std, (pred_std == y).float())
    assert torch.equal(acc.label_free, (pred_free == y).float())


def test_gate_overlap_counts_and_chance():
    with seeded(0):
        net = gates.ClassSpecificGates(TinyNet())
    with torch.no_grad():
        net.gates.zero_()
        net.gates[0, [0, 1, 2]] = torch.tensor([1.0, 0.8, 0.2])
        net.gates[1, [5, 3]] = torch.tensor([0.9, 0.4])
    inf = influence.InfluentialFeatures(indices=torch.tensor([[0, 4], [5, 1]]),
                                        histograms=torch.zeros(2, 6, dtype=torch.long),
                                        k1=2, k2=2)
    table = gates.gate_overlap(net, inf)
    # Class 0's two largest gates are 0 and 1 (one influential); class 1's are 5 and 3 (one).
    assert table["top gates influential"].tolist() == [1, 1]
    assert table["by chance"].tolist() == pytest.approx([4 / 6] * 2)
    assert table["mean gate, influential"].tolist() == pytest.approx([0.5, 0.45])
    assert table["mean gate, others"].tolist() == pytest.approx([1.0 / 4, 0.4 / 4])
    assert table["open gates"].tolist() == [2, 1]


def test_bad_gate_config_names_the_parameter():
    with pytest.raises(ValueError, match="density"):
        gates.GateConfig(density=1.5)
    with pytest.raises(ValueError, match="init"):
        gates.GateConfig(init=-0.1)
    with pytest.raises(ValueError, match="period"):
        gates.GateConfig(period=0)
    with pytest.raises(ValueError, match="sparsity_weight"):
        gates.GateConfig(sparsity_weight=-1.0)
    with pytest.raises(TypeError, match="penultimate"):
        gates.ClassSpecificGates(nn.Linear(2, 2))


@pytest.mark.gpu
def test_gate_training_on_cuda_is_close_to_cpu():
    # Same data and seeds; on CUDA the trainer runs the forward pass in bf16 autocast (8 bits
    # of mantissa), and Adam's steps of lr 1e-2 move a weight by about 1e-2 whatever its
    # gradient: after 12 steps the gates (in [0, 1], each feature's largest 1) agree to 5e-2.
    data = two_blobs()
    config = TrainConfig(epochs=3, batch_size=16, lr=1e-2, seed=0)
    gate_config = gates.GateConfig(density=0.5, gate_lr=0.1, sparsity_weight=1.0)
    with seeded(0):
        cpu = gates.fit_gates(TinyNet(), data, config, gate_config, desc="cpu")
    with seeded(0):
        gpu = gates.fit_gates(TinyNet().to("cuda"), data, config, gate_config, desc="cuda")
    torch.testing.assert_close(gpu.gates.detach().cpu(), cpu.gates.detach(), rtol=0, atol=5e-2)


def test_gated_networks_pair_every_seed_with_its_placebo(isolated_cache):
    from test_decomposition import tiny_data

    from subnets import decomposition

    train_set, test_set, config = tiny_data()
    study = decomposition.resnet_study(train_set, test_set, config, [8], [0, 1])
    gated = gates.gated_networks(study, 8, train_set, test_set, config, gates.GateConfig(), 2, 2)
    assert gated.statistics.index.names == ["network", "seed"] and len(gated.statistics) == 4
    assert gated.nets["placebo", 0].gates.eq(0.5).all()  # untrained: gates at their init
