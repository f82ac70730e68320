import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from subnets import hooks, methods, models, pruning, train


@pytest.fixture
def model():
    with train.seeded(0):
        m = models.ThreeBlockCNN(image_size=16, widths=(4, 6, 8), hidden=5)
    return m.eval()


def test_channel_activity_is_mean_abs_relu_output(model):
    x = torch.rand(5, 1, 16, 16)
    activity = pruning.channel_activity(model, None, x, batch_size=2)
    relu2 = hooks.activations(model, x, ["relu2"])["relu2"]
    torch.testing.assert_close(activity["conv2"], relu2.abs().mean(dim=(0, 2, 3)))
    assert list(activity) == ["conv1", "conv2", "conv3"]
    assert list(pruning.channel_activity(model, ["conv2"], x)) == ["conv2"]


def test_active_channels_threshold_and_never_empty():
    activity = {"conv1": torch.tensor([0.0, 0.2, 0.05]), "conv2": torch.tensor([0.0, 0.01])}
    kept = pruning.active_channels(activity, 0.05)
    assert kept["conv1"].tolist() == [1] and kept["conv2"].tolist() == [1]
    assert pruning.active_channels(activity, 0.0)["conv1"].tolist() == [1, 2]
    with pytest.raises(ValueError, match="threshold"):
        pruning.active_channels(activity, -0.1)


def median_threshold(model, x):
    """A cut that removes about half of every layer's channels."""
    return torch.cat(list(pruning.channel_activity(model, None, x).values())).median().item()


def sliced_by_hand(model, kept):
    """S_C's convolutions as the book first built them: the kept output channels of each
    conv copied into a new conv and the next conv's input channels sliced to match."""
    blocks, previous = [], None
    for b in "123":
        conv, idx = getattr(model, f"conv{b}"), kept[f"conv{b}"]
        weight = conv.weight.detach()[idx]
        weight = weight if previous is None else weight[:, previous]
        new = nn.Conv2d(weight.shape[1], weight.shape[0], conv.kernel_size, conv.stride,
                        conv.padding)
        new.weight.data.copy_(weight)
        new.bias.data.copy_(conv.bias.detach()[idx])
        blocks += [new, nn.ReLU(), copy.deepcopy(getattr(model, f"pool{b}"))]
        previous = idx
    return nn.Sequential(*blocks)


def test_pruned_network_equals_original_with_removed_channels_switched_off(model):
    x = torch.rand(6, 1, 16, 16)
    labels = torch.arange(6) % 2
    method = pruning.ClassSubnetwork(model, threshold=median_threshold(model, x[labels == 1]),
                                     head="original")
    sub = method.build(x, target=1, labels=labels)
    assert isinstance(sub, pruning.SubNetwork) and list(sub.kept) == ["conv1", "conv2", "conv3"]
    kept = sub.kept
    assert all(0 < len(kept[n]) < getattr(model, n).out_channels for n in kept)
    removed = {n: sorted(set(range(getattr(model, n).out_channels)) - set(k.tolist()))
               for n, k in kept.items()}
    with hooks.Ablation(model, removed), hooks.Recorder(model, ["relu1", "relu2", "relu3"]) as rec:
        logits = model(x)
    with hooks.Recorder(sub.model, ["relu1", "relu2", "relu3"]) as sub_rec:
        binary = sub.model(x)
    for b in "123":
        torch.testing.assert_close(sub_rec.outputs[f"relu{b}"],
                                   rec.outputs[f"relu{b}"][:, kept[f"conv{b}"]])
    # Bit for bit what slicing the weights by hand computes.
    assert torch.equal(sub_rec.outputs["relu3"], sliced_by_hand(model, kept)[:-1](x))
    # The original head gives f's softmax probability of the class as a sigmoid.
    torch.testing.assert_close(torch.sigmoid(binary[:, 0]), logits.softmax(1)[:, 1])
    params = sum(p.numel() for p in sub.model.parameters())
    assert params < sum(p.numel() for p in model.parameters())
    assert not sub.model.training and model.conv1.out_channels == 4  # f is untouched


def with_batch_norm_statistics(net):
    """``net`` in eval mode with random batch-norm statistics and affine weights, so that a
    channel pruned where it should only be switched off would show."""
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            for t, low, high in ((m.running_mean, -0.5, 0.5), (m.running_var, 0.5, 2.0),
                                 (m.weight.data, 0.5, 1.5), (m.bias.data, -0.5, 0.5)):
                t.copy_(torch.rand(t.shape, generator=g) * (high - low) + low)
    return net.eval()


@pytest.mark.parametrize("make", [
    lambda: models.vgg11_small(),
    lambda: models.VGG((8, "M", 16), in_channels=1, hidden=(12,)),
    lambda: models.resnet18_small(),
    lambda: models.cifar_resnet(8, in_channels=1, shortcut="projection"),
    lambda: models.ResNet((1, 1), (4, 8), in_channels=1, block="bottleneck"),
], ids=["vgg11", "vgg-hidden", "resnet18", "cifar-resnet-projection", "bottleneck"])
def test_any_conv_net_prunes_exactly_to_its_ablation(make):
    with train.seeded(0):
        net = with_batch_norm_statistics(make())
    x = torch.rand(6, 1, 28, 28)
    labels = torch.arange(6) % 3
    method = pruning.ClassSubnetwork(net, threshold=median_threshold(net, x[labels == 2]),
                                     head="original")
    sub = method.build(x, target=2, labels=labels)
    own = pruning.active_channels(pruning.channel_activity(net, None, x[labels == 2]),
                                  method.threshold)
    convs = hooks.conv_layers(net)
    assert list(sub.kept) == [c for c in convs if c in sub.kept] and set(own) <= set(sub.kept)
    assert any(len(k) < hooks.layer(net, n).out_channels for n, k in sub.kept.items())
    for name, idx in own.items():  # every active channel stays; coupled convs keep the union
        assert set(idx.tolist()) <= set(sub.kept[name].tolist())
    removed = {hooks.activation_after(net, n): sorted(set(range(hooks.layer(net, n).out_channels))
                                                      - set(k.tolist()))
               for n, k in sub.kept.items() if not hooks.is_shortcut(n)}
    with torch.no_grad(), hooks.Ablation(net, removed):
        expected = net(x).log_softmax(1)
    with torch.no_grad():
        log_odds = sub.model(x)[:, 0]
    others = torch.cat([expected[:, :2], expected[:, 3:]], 1).logsumexp(1)
    torch.testing.assert_close(log_odds, expected[:, 2] - others, atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in sub.model.parameters()) < sum(p.numel() for p in net.parameters())


def test_residual_blocks_couple_their_channels():
    with train.seeded(0):
        net = with_batch_norm_statistics(models.resnet18_small())
    x = torch.rand(4, 1, 28, 28)
    sub = pruning.ClassSubnetwork(net, threshold=median_threshold(net, x), head="random").build(
        x, target=0, labels=torch.zeros(4, dtype=torch.long))
    # The stem and the first stage's blocks add into one residual stream; a projection
    # shortcut's conv keeps what the conv it is added to keeps.
    stream = ["stem.0", "layers.0.0.conv2", "layers.0.1.conv2"]
    assert all(torch.equal(sub.kept[n], sub.kept[stream[0]]) for n in stream)
    assert torch.equal(sub.kept["layers.1.0.shortcut.0"], sub.kept["layers.1.0.conv2"])
    assert sub.model(x).shape == (4, 1)


def test_structures_it_cannot_prune_are_named():
    with pytest.raises(ValueError, match="layers.1.0.shortcut"):
        pruning.ClassSubnetwork(models.cifar_resnet(8, in_channels=1))  # zero-padded identity

    class Concat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 2, 3), nn.Conv2d(1, 2, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.cat([self.a(x), self.b(x)], 1).mean((2, 3)))

    with pytest.raises(ValueError, match="cat"):
        pruning.ClassSubnetwork(Concat())


def test_settings_and_arguments_are_checked(model):
    x, labels = torch.rand(4, 1, 16, 16), torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="head"):
        pruning.ClassSubnetwork(model, head="reinit")
    with pytest.raises(ValueError, match="threshold"):
        pruning.ClassSubnetwork(model, threshold=-1.0)
    with pytest.raises(ValueError, match="layers: \\['fc1'\\]"):
        pruning.ClassSubnetwork(model, ["conv1", "fc1"])
    with pytest.raises(ValueError, match="bce"):
        pruning.ClassSubnetwork(model, train_config=train.TrainConfig(loss="cross_entropy"))
    with pytest.raises(ValueError, match="target"):
        pruning.ClassSubnetwork(model, head="original").build(x, target=5, labels=labels)
    # Only the named convs are pruned; the others keep every channel.
    sub = pruning.ClassSubnetwork(model, ["conv2"], threshold=1e9, head="random").build(
        x, target=1, labels=labels)
    assert list(sub.kept) == ["conv2"] and len(sub.kept["conv2"]) == 1
    assert sub.model.conv1.out_channels == 4 and sub.model.conv3.in_channels == 1


def test_trained_head_trains_on_frozen_features(model):
    x = torch.rand(64, 1, 16, 16)
    labels = torch.arange(64) % 4
    x[labels == 2] *= 0.1  # class 2 is darker: learnable from frozen random features
    config = train.TrainConfig(epochs=60, batch_size=16, lr=0.03, loss="bce")
    method = pruning.ClassSubnetwork(model, threshold=0.0, train_config=config, n_head_train=64)
    sub = method.build(x, target=2, labels=labels)
    torch.testing.assert_close(sub.model.conv2.weight, model.conv2.weight[sub.kept["conv2"]]
                               [:, sub.kept["conv1"]])
    predicted = sub.model(x)[:, 0] > 0
    assert (predicted == (labels == 2)).float().mean() > 0.9
    # A second S_2 with the same pruning and data gets the cached head.
    again = method.build(x, target=2, labels=labels)
    torch.testing.assert_close(again.model(x), sub.model(x))


def test_single_exemplar_rule_keeps_every_channel_active_at_all(model):
    # The paper's single-exemplar rule is "absolute spatial sum > 0", whatever the
    # class-mean threshold: channels active but below 0.05 on the exemplar stay.
    x = torch.rand(8, 1, 16, 16)
    labels = torch.arange(8) % 2
    activity = pruning.channel_activity(model, None, x[3:4])
    at_zero = pruning.active_channels(activity, 0.0)
    at_mean_cut = pruning.active_channels(activity, 0.05)
    assert any(len(at_zero[n]) > len(at_mean_cut[n]) for n in at_zero)  # the test can fail
    method = pruning.ClassSubnetwork(model, threshold=0.05, head="original")
    single = method.build(x, target=1, labels=labels, exemplar=3)
    for n in at_zero:
        assert single.kept[n].tolist() == at_zero[n].tolist()
    mean = method.build(x, target=1, labels=labels)
    class_activity = pruning.channel_activity(model, None, x[labels == 1])
    for n, idx in pruning.active_channels(class_activity, 0.05).items():
        assert mean.kept[n].tolist() == idx.tolist()


def test_random_head_is_the_untrained_start_of_the_trained_head(model):
    x = torch.rand(40, 1, 16, 16)
    labels = torch.arange(40) % 4
    config = train.TrainConfig(epochs=3, batch_size=8, lr=0.05, loss="bce")
    settings = {"threshold": 0.0, "train_config": config, "n_head_train": 20, "seed": 3}
    random = pruning.ClassSubnetwork(model, head="random", **settings).build(
        x, target=1, labels=labels)
    trained = pruning.ClassSubnetwork(model, head="trained", **settings).build(
        x, target=1, labels=labels)
    fresh = pruning.ClassSubnetwork(model, head="random", **settings).build(
        x, target=1, labels=labels)
    torch.testing.assert_close(random.model(x), fresh.model(x))  # same convs, same initial head
    assert not torch.allclose(random.model(x), trained.model(x))
    for name in ("conv1", "conv2", "conv3"):
        torch.testing.assert_close(getattr(random.model, name).weight,
                                   getattr(trained.model, name).weight)
    assert random.head_positives == 0 and math.isnan(random.prior)
    assert random.model.fc2.out_features == 1 and not random.model.training


def test_trained_head_data_is_balanced_when_the_class_is_scarce(model):
    # 6 images of class 1, 54 others: asking for 40 head images ("half C") gives 6 + 6.
    x = torch.rand(60, 1, 16, 16)
    labels = torch.where(torch.arange(60) < 6, 1, 0)
    config = train.TrainConfig(epochs=1, batch_size=4, loss="bce")
    method = pruning.ClassSubnetwork(model, threshold=0.0, train_config=config, n_head_train=40)
    sub = method.build(x, target=1, labels=labels)
    assert (sub.head_positives, sub.head_negatives) == (6, 6) and sub.prior == 0.5
    plenty = method.build(x, target=0, labels=labels)
    assert (plenty.head_positives, plenty.head_negatives) == (6, 6)  # limited by the others
    many = method.build(x, target=0, labels=torch.arange(60) % 2)
    assert (many.head_positives, many.head_negatives) == (20, 20)


@pytest.mark.gpu
def test_pruning_on_cuda_matches_cpu(model):
    # Tolerance: float32 convolutions on CUDA (cuDNN, TF32 off by default for convs in
    # eval) differ from the CPU's by summation order only: 1e-4 relative.
    x = torch.rand(16, 1, 16, 16)
    labels = torch.arange(16) % 2
    cpu_activity = pruning.channel_activity(model, None, x)
    gpu_model = copy.deepcopy(model).to("cuda")
    gpu_activity = pruning.channel_activity(gpu_model, None, x)
    for n in cpu_activity:
        assert gpu_activity[n].device.type == "cpu"
        torch.testing.assert_close(gpu_activity[n], cpu_activity[n], rtol=1e-4, atol=1e-5)
    for head in ("original", "random"):
        sub_cpu = pruning.ClassSubnetwork(model, threshold=0.0, head=head).build(
            x, target=1, labels=labels)
        sub_gpu = pruning.ClassSubnetwork(gpu_model, threshold=0.0, head=head).build(
            x, target=1, labels=labels)
        assert next(sub_gpu.model.parameters()).device.type == "cuda"
        torch.testing.assert_close(sub_gpu.model(x.to("cuda")).cpu(), sub_cpu.model(x),
                                   rtol=1e-4, atol=1e-4)


def test_global_magnitude_zeros_the_smallest_weights_across_layers(model):
    pruned = pruning.magnitude(model, 0.7, scope="global")
    layers = pruning._prunable_weights(model)
    before = torch.cat([getattr(m, n).detach().abs().flatten() for m, n in layers])
    after = torch.cat([getattr(m, n).detach().flatten()
                       for m, n in pruning._prunable_weights(pruned)])
    assert (after == 0).sum().item() == round(0.7 * len(before))
    assert pruning.weight_sparsity(pruned) == pytest.approx(0.7, abs=1 / len(before))
    # Global, not per layer: every pruned weight is at most as large as every kept one.
    assert before[after == 0].max() <= before[after != 0].min()
    # Per-layer shares differ (the smallest-magnitude layers lose most).
    shares = [(getattr(m, n) == 0).float().mean().item()
              for m, n in pruning._prunable_weights(pruned)]
    assert max(shares) - min(shares) > 0.05
    torch.testing.assert_close(pruned.conv1.bias, model.conv1.bias)
    assert pruning.weight_sparsity(model) == 0  # the original is untouched


def test_global_magnitude_keeps_the_mask_when_fine_tuned(model):
    pruned = pruning.magnitude(model, 0.5, scope="global")
    zeros = [getattr(m, n) == 0 for m, n in pruning._prunable_weights(pruned)]
    x, y = torch.rand(32, 1, 16, 16), torch.arange(32) % 10
    config = train.TrainConfig(epochs=2, batch_size=8, lr=0.05, optimizer="sgd")
    tuned = train.fit(pruned, TensorDataset(x, y), config).model
    weights = [getattr(m, n) for m, n in pruning._prunable_weights(tuned)]
    originals = [getattr(m, n) for m, n in pruning._prunable_weights(model)]
    assert all((w[z] == 0).all() for w, z in zip(weights, zeros))
    assert any((w[~z] != p[~z]).any() for w, z, p in zip(weights, zeros, originals))
    with pytest.raises(ValueError, match="rate"):
        pruning.magnitude(model, 1.5, scope="global")


# --- layerwise pruning and batch-norm recalibration (chapter 3) -----------------------

def small_rf_vgg():
    with train.seeded(0):
        return models.rf_model("vgg", 2, in_channels=1).eval()


def test_global_pruning_can_empty_a_layer_and_layerwise_never_does():
    model = small_rf_vgg()
    with torch.no_grad():
        model.features[-3].weight.mul_(1e-3)  # the last conv's weights are all small
    last = lambda m: m.features[-3].weight
    emptied = pruning.magnitude(model, 0.9, scope="global")
    assert (last(emptied) == 0).all()
    x, other = torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    assert torch.equal(emptied(x), emptied(other))  # the output no longer depends on the input
    layerwise = pruning._layerwise_magnitude(model, 0.9)
    for name, m in layerwise.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            zeros = (m.weight == 0).float().mean().item()
            expected = 0.0 if name == pruning._head_layer(model) else round(0.9 * m.weight.numel())
            assert zeros == pytest.approx(expected / m.weight.numel() if expected else 0.0)
    # Still sees the input: visible once batch norm is recalibrated to the small weights.
    train.recalibrate_batch_norm(layerwise, torch.rand(64, 1, 28, 28))
    assert (layerwise(x) - layerwise(other)).abs().max() > 1e-3
    # Rate 1 keeps one weight per layer, not zero.
    full = pruning._layerwise_magnitude(model, 1.0, keep_head=False)
    assert all((m.weight != 0).sum() == 1 for m in full.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear)))
    with pytest.raises(ValueError, match="pruning_scope"):
        pruning.magnitude(model, 0.5, scope="per-channel")


def test_layerwise_prunes_the_smallest_weights_of_each_layer():
    model = small_rf_vgg()
    pruned = pruning.magnitude(model, 0.5, scope="layerwise")
    for (name, m), p in zip(model.named_modules(), pruned.modules()):
        if isinstance(m, nn.Conv2d):
            w, q = m.weight.detach().abs().flatten(), p.weight.detach().flatten()
            assert w[q == 0].max() <= w[q != 0].min()


def test_batch_norm_recalibration_matches_the_statistics_of_the_pruned_network():
    model = small_rf_vgg()
    x = torch.rand(64, 1, 28, 28)
    pruned = pruning._layerwise_magnitude(model, 0.8)
    bn = pruned.features[1]
    stale = bn.running_mean.clone()
    with hooks.Recorder(pruned, ["features.0"]) as rec:
        pruned(x)
    train.recalibrate_batch_norm(pruned, x, batch_size=16)
    conv_out = rec.outputs["features.0"]
    torch.testing.assert_close(bn.running_mean, conv_out.mean((0, 2, 3)), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(bn.running_var, conv_out.var((0, 2, 3)), atol=1e-4, rtol=1e-3)
    assert not torch.allclose(stale, bn.running_mean)
    assert not pruned.training and bn.momentum == 0.1


@pytest.mark.gpu
def test_layerwise_pruning_and_recalibration_on_cuda_match_the_cpu():
    # Tolerance: float32 convolutions, summation order only.
    model = small_rf_vgg()
    x = torch.rand(32, 1, 28, 28)
    cpu = train.recalibrate_batch_norm(pruning._layerwise_magnitude(model, 0.8), x)
    cuda = train.recalibrate_batch_norm(
        pruning._layerwise_magnitude(copy.deepcopy(model).to("cuda"), 0.8), x)
    for (name, a), b in zip(cpu.state_dict().items(), cuda.state_dict().values()):
        torch.testing.assert_close(b.cpu().float(), a.float(), rtol=1e-4, atol=1e-5, msg=name)


def test_kept_channels_is_the_rule_that_build_applies(model):
    x, labels = torch.rand(12, 1, 16, 16), torch.arange(12) % 3
    method = pruning.ClassSubnetwork(model, threshold=median_threshold(model, x[labels == 1]),
                                     head="random")
    for exemplar in (None, 4):
        kept = method.kept_channels(x, 1, labels, exemplar=exemplar)
        built = method.build(x, 1, labels, exemplar=exemplar).kept
        assert {n: k.tolist() for n, k in kept.items()} == {n: k.tolist() for n, k in built.items()}
    assert isinstance(method, methods.SubnetworkBuilder)


def test_ablation_difference_is_small_for_s_c_and_large_for_a_changed_one(model):
    x, labels = torch.rand(12, 1, 16, 16), torch.arange(12) % 3
    sub = pruning.ClassSubnetwork(model, threshold=median_threshold(model, x),
                                  head="original").build(x, 1, labels)
    assert pruning.ablation_difference(model, sub, x, "conv3") < 1e-5
    with torch.no_grad():
        sub.model.conv3.bias += 1.0  # S_C no longer computes what f computes
    assert pruning.ablation_difference(model, sub, x, "conv3") > 0.5
    with pytest.raises(ValueError, match="conv"):
        pruning.ablation_difference(model, sub, x, "fc1")
