import pytest
import torch
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
    kept = {"conv1": torch.tensor([0, 2, 3]), "conv2": torch.tensor([1, 4]), "conv3": torch.tensor([0, 5, 7])}
    sub = pruning.subnetwork(model, kept, target_class=3, head="original")
    x = torch.rand(6, 1, 16, 16)
    removed = {n: sorted(set(range(getattr(model, n).out_channels)) - set(k.tolist())) for n, k in kept.items()}
    with hooks.Ablation(model, removed), hooks.Recorder(model, ["relu1", "relu2", "relu3"]) as rec:
        logits = model(x)
    with hooks.Recorder(sub, ["relu1", "relu2", "relu3"]) as sub_rec:
        binary = sub(x)
    for b in "123":
        torch.testing.assert_close(sub_rec.outputs[f"relu{b}"], rec.outputs[f"relu{b}"][:, kept[f"conv{b}"]])
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
    torch.testing.assert_close(sub_rec.outputs["relu3"], rec.outputs["relu3"][:, kept["conv3"]], atol=1e-6, rtol=1e-6)


def test_reinit_head_trains_on_frozen_features(model):
    x = torch.rand(64, 1, 16, 16)
    labels = torch.arange(64) % 4
    x[labels == 2] *= 0.1  # class 2 is darker: learnable from frozen random features
    kept = pruning.active_channels(pruning.channel_activity(model, x), 0.0)
    sub = pruning.subnetwork(model, kept, target_class=2, head="reinit")
    conv_before = sub.conv2.weight.clone()
    config = train.TrainConfig(epochs=60, batch_size=16, lr=0.03, loss="bce")
    history = pruning.train_head(sub, x, labels, 2, config)
    assert len(history) == 60 and torch.equal(sub.conv2.weight, conv_before)
    predicted = (sub(x)[:, 0] > 0)
    assert (predicted == (labels == 2)).float().mean() > 0.9
    # A second S_2 with the same pruning and data gets the cached head.
    again = pruning.subnetwork(model, kept, target_class=2, head="reinit")
    pruning.train_head(again, x, labels, 2, config)
    torch.testing.assert_close(again(x), sub(x))
    with pytest.raises(ValueError, match="head"):
        pruning.subnetwork(model, kept, target_class=2, head="random")


def test_global_magnitude_zeros_the_smallest_weights_across_layers(model):
    pruned = pruning.global_magnitude(model, 0.7)
    layers = pruning.prunable_weights(model)
    before = torch.cat([getattr(m, n).detach().abs().flatten() for m, n in layers])
    after = torch.cat([getattr(m, n).detach().flatten() for m, n in pruning.prunable_weights(pruned)])
    assert (after == 0).sum().item() == round(0.7 * len(before))
    assert pruning.weight_sparsity(pruned) == pytest.approx(0.7, abs=1 / len(before))
    # Global, not per layer: every pruned weight is at most as large as every kept one.
    assert before[after == 0].max() <= before[after != 0].min()
    # Per-layer shares differ (the smallest-magnitude layers lose most).
    shares = [(getattr(m, n) == 0).float().mean().item() for m, n in pruning.prunable_weights(pruned)]
    assert max(shares) - min(shares) > 0.05
    torch.testing.assert_close(pruned.conv1.bias, model.conv1.bias)
    assert pruning.weight_sparsity(model) == 0  # the original is untouched


def test_global_magnitude_keeps_the_mask_when_fine_tuned(model):
    pruned = pruning.global_magnitude(model, 0.5)
    zeros = [getattr(m, n) == 0 for m, n in pruning.prunable_weights(pruned)]
    x, y = torch.rand(32, 1, 16, 16), torch.arange(32) % 10
    tuned = train.fit(pruned, TensorDataset(x, y), train.TrainConfig(epochs=2, batch_size=8, lr=0.05,
                                                                       optimizer="sgd")).model
    weights = [getattr(m, n) for m, n in pruning.prunable_weights(tuned)]
    assert all((w[z] == 0).all() for w, z in zip(weights, zeros))
    assert any((w[~z] != p[~z]).any() for w, z, p in zip(weights, zeros, (getattr(m, n) for m, n in
                                                                          pruning.prunable_weights(model))))
    with pytest.raises(ValueError, match="rate"):
        pruning.global_magnitude(model, 1.5)
