import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from subnets import hooks, models, pruning, train


@pytest.fixture
def model():
    with train.seeded(0):
        m = models.ThreeBlockCNN(image_size=16, widths=(4, 6, 8), hidden=5)
    return m.eval()


def test_channel_activity_is_mean_abs_relu_output(model):
    x = torch.rand(5, 1, 16, 16)
    activity = pruning.channel_activity(model, x, batch_size=2)
    relu2 = hooks.activations(model, x, ["relu2"])["relu2"]
    torch.testing.assert_close(activity["conv2"], relu2.abs().mean(dim=(0, 2, 3)))
    assert set(activity) == {"conv1", "conv2", "conv3"}


def test_active_channels_threshold_and_never_empty():
    activity = {"conv1": torch.tensor([0.0, 0.2, 0.05]), "conv2": torch.tensor([0.0, 0.01])}
    kept = pruning.active_channels(activity, 0.05)
    assert kept["conv1"].tolist() == [1] and kept["conv2"].tolist() == [1]
    assert pruning.active_channels(activity, 0.0)["conv1"].tolist() == [1, 2]
    with pytest.raises(ValueError, match="threshold"):
        pruning.active_channels(activity, -0.1)


def test_pruned_network_equals_original_with_removed_channels_switched_off(model):
    kept = {"conv1": torch.tensor([0, 2, 3]), "conv2": torch.tensor([1, 4]),
            "conv3": torch.tensor([0, 5, 7])}
    sub = pruning.subnetwork(model, kept, target_class=3, head="original")
    x = torch.rand(6, 1, 16, 16)
    removed = {n: sorted(set(range(getattr(model, n).out_channels)) - set(k.tolist()))
               for n, k in kept.items()}
    with hooks.Ablation(model, removed), hooks.Recorder(model, ["relu1", "relu2", "relu3"]) as rec:
        logits = model(x)
    with hooks.Recorder(sub, ["relu1", "relu2", "relu3"]) as sub_rec:
        binary = sub(x)
    for b in "123":
        torch.testing.assert_close(sub_rec.outputs[f"relu{b}"],
                                   rec.outputs[f"relu{b}"][:, kept[f"conv{b}"]])
    # The original head gives f's softmax probability of the class as a sigmoid.
    torch.testing.assert_close(torch.sigmoid(binary[:, 0]), logits.softmax(1)[:, 3])
    assert sum(p.numel() for p in sub.parameters()) < sum(p.numel() for p in model.parameters())


def test_single_exemplar_pruning_reproduces_its_activations_exactly(model):
    x = torch.rand(1, 1, 16, 16)
    kept = pruning.active_channels(pruning.channel_activity(model, x), 0.0)
    sub = pruning.subnetwork(model, kept, target_class=0)
    with hooks.Recorder(model, ["relu3"]) as rec:
        model(x)
    with hooks.Recorder(sub, ["relu3"]) as sub_rec:
        sub(x)
    # Removed channels were exactly zero on the exemplar, so nothing downstream changes
    # (up to float summation order over the sliced input channels).
    torch.testing.assert_close(sub_rec.outputs["relu3"], rec.outputs["relu3"][:, kept["conv3"]],
                               atol=1e-6, rtol=1e-6)


def test_reinit_head_trains_on_frozen_features(model):
    x = torch.rand(64, 1, 16, 16)
    labels = torch.arange(64) % 4
    x[labels == 2] *= 0.1  # class 2 is darker: learnable from frozen random features
    kept = pruning.active_channels(pruning.channel_activity(model, x), 0.0)
    sub = pruning.subnetwork(model, kept, target_class=2, head="trained")
    conv_before = sub.conv2.weight.clone()
    config = train.TrainConfig(epochs=60, batch_size=16, lr=0.03, loss="bce")
    history = pruning.train_head(sub, x, labels, 2, config)
    assert len(history) == 60 and torch.equal(sub.conv2.weight, conv_before)
    predicted = (sub(x)[:, 0] > 0)
    assert (predicted == (labels == 2)).float().mean() > 0.9
    # A second S_2 with the same pruning and data gets the cached head.
    again = pruning.subnetwork(model, kept, target_class=2, head="trained")
    pruning.train_head(again, x, labels, 2, config)
    torch.testing.assert_close(again(x), sub(x))
    with pytest.raises(ValueError, match="head"):
        pruning.subnetwork(model, kept, target_class=2, head="reinit")


def test_single_exemplar_rule_keeps_every_channel_active_at_all(model):
    # The paper's single-exemplar rule is "absolute spatial sum > 0", whatever the
    # class-mean threshold: channels active but below 0.05 on the exemplar stay.
    x = torch.rand(8, 1, 16, 16)
    labels = torch.arange(8) % 2
    activity = pruning.channel_activity(model, x[3:4])
    at_zero = pruning.active_channels(activity, 0.0)
    at_mean_cut = pruning.active_channels(activity, 0.05)
    assert any(len(at_zero[n]) > len(at_mean_cut[n]) for n in at_zero)  # the test can fail
    config = train.TrainConfig(epochs=1, batch_size=4, loss="bce")
    single = pruning.class_subnetwork(model, x, labels, 1, 0.05, "original", config, 8, exemplar=3)
    for n in at_zero:
        assert single.kept[n].tolist() == at_zero[n].tolist()
    mean = pruning.class_subnetwork(model, x, labels, 1, 0.05, "original", config, 8)
    class_activity = pruning.channel_activity(model, x[labels == 1])
    for n, idx in pruning.active_channels(class_activity, 0.05).items():
        assert mean.kept[n].tolist() == idx.tolist()


def test_random_head_is_the_untrained_start_of_the_trained_head(model):
    x = torch.rand(40, 1, 16, 16)
    labels = torch.arange(40) % 4
    config = train.TrainConfig(epochs=3, batch_size=8, lr=0.05, loss="bce")
    random = pruning.class_subnetwork(model, x, labels, 1, 0.0, "random", config, 20, seed=3)
    trained = pruning.class_subnetwork(model, x, labels, 1, 0.0, "trained", config, 20, seed=3)
    fresh = pruning.subnetwork(model, random.kept, 1, head="trained", seed=3)
    torch.testing.assert_close(random.model(x), fresh(x))  # same convs, same initial head
    assert not torch.allclose(random.model(x), trained.model(x))
    for name in ("conv1", "conv2", "conv3"):
        torch.testing.assert_close(getattr(random.model, name).weight,
                                   getattr(trained.model, name).weight)
    assert random.head_positives == 0 and math.isnan(random.prior)


def test_trained_head_data_is_balanced_when_the_class_is_scarce(model):
    # 6 images of class 1, 54 others: asking for 40 head images ("half C") gives 6 + 6.
    x = torch.rand(60, 1, 16, 16)
    labels = torch.where(torch.arange(60) < 6, 1, 0)
    config = train.TrainConfig(epochs=1, batch_size=4, loss="bce")
    sub = pruning.class_subnetwork(model, x, labels, 1, 0.0, "trained", config, 40)
    assert (sub.head_positives, sub.head_negatives) == (6, 6) and sub.prior == 0.5
    plenty = pruning.class_subnetwork(model, x, labels, 0, 0.0, "trained", config, 40)
    assert (plenty.head_positives, plenty.head_negatives) == (6, 6)  # limited by the others
    many = pruning.class_subnetwork(model, x, torch.arange(60) % 2, 0, 0.0, "trained", config, 40)
    assert (many.head_positives, many.head_negatives) == (20, 20)


@pytest.mark.gpu
def test_pruning_on_cuda_matches_cpu(model):
    # Tolerance: float32 convolutions on CUDA (cuDNN, TF32 off by default for convs in
    # eval) differ from the CPU's by summation order only: 1e-4 relative.
    x = torch.rand(16, 1, 16, 16)
    cpu_activity = pruning.channel_activity(model, x)
    gpu_model = copy.deepcopy(model).to("cuda")
    gpu_activity = pruning.channel_activity(gpu_model, x)
    for n in cpu_activity:
        assert gpu_activity[n].device.type == "cpu"
        torch.testing.assert_close(gpu_activity[n], cpu_activity[n], rtol=1e-4, atol=1e-5)
    kept = pruning.active_channels(cpu_activity, 0.0)
    sub_cpu = pruning.subnetwork(model, kept, 2, head="original")
    sub_gpu = pruning.subnetwork(gpu_model, kept, 2, head="original")
    assert next(sub_gpu.parameters()).device.type == "cuda"
    torch.testing.assert_close(sub_gpu(x.to("cuda")).cpu(), sub_cpu(x), rtol=1e-4, atol=1e-4)


def test_global_magnitude_zeros_the_smallest_weights_across_layers(model):
    pruned = pruning.global_magnitude(model, 0.7)
    layers = pruning.prunable_weights(model)
    before = torch.cat([getattr(m, n).detach().abs().flatten() for m, n in layers])
    after = torch.cat([getattr(m, n).detach().flatten()
                       for m, n in pruning.prunable_weights(pruned)])
    assert (after == 0).sum().item() == round(0.7 * len(before))
    assert pruning.weight_sparsity(pruned) == pytest.approx(0.7, abs=1 / len(before))
    # Global, not per layer: every pruned weight is at most as large as every kept one.
    assert before[after == 0].max() <= before[after != 0].min()
    # Per-layer shares differ (the smallest-magnitude layers lose most).
    shares = [(getattr(m, n) == 0).float().mean().item()
              for m, n in pruning.prunable_weights(pruned)]
    assert max(shares) - min(shares) > 0.05
    torch.testing.assert_close(pruned.conv1.bias, model.conv1.bias)
    assert pruning.weight_sparsity(model) == 0  # the original is untouched


def test_global_magnitude_keeps_the_mask_when_fine_tuned(model):
    pruned = pruning.global_magnitude(model, 0.5)
    zeros = [getattr(m, n) == 0 for m, n in pruning.prunable_weights(pruned)]
    x, y = torch.rand(32, 1, 16, 16), torch.arange(32) % 10
    config = train.TrainConfig(epochs=2, batch_size=8, lr=0.05, optimizer="sgd")
    tuned = train.fit(pruned, TensorDataset(x, y), config).model
    weights = [getattr(m, n) for m, n in pruning.prunable_weights(tuned)]
    originals = [getattr(m, n) for m, n in pruning.prunable_weights(model)]
    assert all((w[z] == 0).all() for w, z in zip(weights, zeros))
    assert any((w[~z] != p[~z]).any() for w, z, p in zip(weights, zeros, originals))
    with pytest.raises(ValueError, match="rate"):
        pruning.global_magnitude(model, 1.5)


# --- layerwise pruning and batch-norm recalibration (chapter 3) -----------------------

def small_rf_vgg():
    with train.seeded(0):
        return models.rf_model("vgg", 2, in_channels=1).eval()


def test_global_pruning_can_empty_a_layer_and_layerwise_never_does():
    model = small_rf_vgg()
    with torch.no_grad():
        model.features[-3].weight.mul_(1e-3)  # the last conv's weights are all small
    last = lambda m: m.features[-3].weight
    emptied = pruning.global_magnitude(model, 0.9)
    assert (last(emptied) == 0).all()
    x, other = torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    assert torch.equal(emptied(x), emptied(other))  # the output no longer depends on the input
    layerwise = pruning.layerwise_magnitude(model, 0.9)
    for name, m in layerwise.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            zeros = (m.weight == 0).float().mean().item()
            expected = 0.0 if name == pruning.head_layer(model) else round(0.9 * m.weight.numel())
            assert zeros == pytest.approx(expected / m.weight.numel() if expected else 0.0)
    # Still sees the input: visible once batch norm is recalibrated to the small weights.
    pruning.recalibrate_batch_norm(layerwise, torch.rand(64, 1, 28, 28))
    assert (layerwise(x) - layerwise(other)).abs().max() > 1e-3
    # Rate 1 keeps one weight per layer, not zero.
    full = pruning.layerwise_magnitude(model, 1.0, keep_head=False)
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
    pruned = pruning.layerwise_magnitude(model, 0.8)
    bn = pruned.features[1]
    stale = bn.running_mean.clone()
    with hooks.Recorder(pruned, ["features.0"]) as rec:
        pruned(x)
    pruning.recalibrate_batch_norm(pruned, x, batch_size=16)
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
    cpu = pruning.recalibrate_batch_norm(pruning.layerwise_magnitude(model, 0.8), x)
    cuda = pruning.recalibrate_batch_norm(
        pruning.layerwise_magnitude(copy.deepcopy(model).to("cuda"), 0.8), x)
    for (name, a), b in zip(cpu.state_dict().items(), cuda.state_dict().values()):
        torch.testing.assert_close(b.cpu().float(), a.float(), rtol=1e-4, atol=1e-5, msg=name)
