import copy

import pytest
import torch
from torch import nn

from subnets import devices, hooks, models
from subnets.models import imagenet


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 16, 2))


def test_recorder_records_and_removes_its_hooks():
    model, x = net(), torch.rand(2, 1, 4, 4)
    with hooks.Recorder(model, ["0", "1"]) as rec:
        model(x)
    assert torch.equal(rec.outputs["1"], torch.relu(model[0](x)))
    assert not model[0]._forward_hooks and not model[1]._forward_hooks


def test_ablation_zeroes_channels_then_restores():
    model, x = net(), torch.rand(2, 1, 4, 4)
    before = model(x)
    with hooks.Ablation(model, {"0": [1]}), hooks.Recorder(model, ["0"]) as rec:
        ablated = model(x)
    assert rec.outputs["0"][:, 1].abs().sum() == 0 and rec.outputs["0"][:, 0].abs().sum() > 0
    kept = torch.tensor([1.0, 0.0, 1.0]).view(1, 3, 1, 1)
    expected = model[3](model[2](torch.relu(model[0](x) * kept)))
    torch.testing.assert_close(ablated, expected)
    torch.testing.assert_close(model(x), before)


def test_activations_are_batched_consistently_and_names_checked():
    model, x = net(), torch.rand(7, 1, 4, 4)
    acts = hooks.activations(model, x, ["1"], batch_size=3)
    torch.testing.assert_close(acts["1"], torch.relu(model[0](x)))
    assert hooks.conv_layers(model) == ["0"]
    with pytest.raises(KeyError, match="conv layers are"):
        hooks.layer(model, "conv9")


@pytest.mark.gpu
def test_gpu_hooks_match_cpu(cuda):
    """float32 on both; TF32 convolutions on CUDA agree with the CPU to ~1e-3 relative."""
    model, x = net(), torch.rand(7, 1, 4, 4)
    fast = copy.deepcopy(model).to(cuda)
    on_cpu = hooks.activations(model, x, ["0", "1"], batch_size=3)
    on_cuda = hooks.activations(fast, x, ["0", "1"], batch_size=3)
    for name in on_cpu:
        assert on_cuda[name].device == devices.CPU
        torch.testing.assert_close(on_cuda[name], on_cpu[name], rtol=1e-2, atol=1e-3)
    with hooks.Ablation(fast, {"0": [1]}), hooks.Recorder(fast, ["0"]) as rec:
        fast(devices.to_model(fast, x))
    assert rec.outputs["0"].device == cuda
    assert rec.outputs["0"][:, 1].abs().sum() == 0 and rec.outputs["0"][:, 0].abs().sum() > 0


def test_activation_after_finds_the_next_activation_of_each_conv():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.SiLU(), nn.Conv2d(2, 2, 3),
                          nn.ReLU6(), nn.Conv2d(2, 2, 3), nn.ReLU())
    assert [hooks.activation_after(model, c) for c in hooks.conv_layers(model)] == ["2", "4", "6"]
    with pytest.raises(ValueError, match="'0'.*ReLU"):
        hooks.activation_after(model, "0", kinds=(nn.ReLU,))
    with pytest.raises(ValueError, match="'3'"):  # nn.ReLU6 is no nn.ReLU
        hooks.activation_after(model, "3", kinds=(nn.ReLU,))
    assert hooks.activation_after(model, "5", kinds=(nn.ReLU,)) == "6"


def test_activation_after_stops_at_the_next_conv_and_checks_the_name():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3), nn.ReLU())
    with pytest.raises(ValueError, match="conv '0'"):
        hooks.activation_after(model, "0")
    assert hooks.activation_after(model, "1") == "2"
    with pytest.raises(KeyError, match="'nope'"):
        hooks.activation_after(model, "nope")


def test_activation_after_skips_projection_shortcuts_and_counts_relu_subclasses():
    class Rectifier(nn.ReLU):
        pass

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)
            self.shortcut = nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2))
            self.relu = Rectifier()

    block = Block()
    assert hooks.is_shortcut("shortcut.0") and hooks.is_shortcut("layer1.0.downsample.0")
    assert not hooks.is_shortcut("conv")
    assert hooks.activation_after(block, "conv", kinds=(nn.ReLU,)) == "relu"


# Every architecture of subnets.models: (builder, convs, main-path convs, linear layers).
MODELS = {
    "ThreeBlockCNN": (lambda: models.ThreeBlockCNN(), 3, 3, 2),
    "alexnet_small": (lambda: models.small_network("alexnet"), 5, 5, 3),
    "vgg11_small": (lambda: models.small_network("vgg11"), 6, 6, 1),
    "resnet18_small": (lambda: models.small_network("resnet18"), 20, 17, 1),
    "imagenet alexnet": (lambda: imagenet.imagenet_network("alexnet", 3, 10), 5, 5, 3),
    "imagenet vgg11": (lambda: imagenet.imagenet_network("vgg11", 3, 10), 8, 8, 3),
    "imagenet resnet18": (lambda: imagenet.imagenet_network("resnet18", 3, 10), 20, 17, 1),
    "cifar_resnet20": (lambda: models.cifar_resnet(20), 19, 19, 1),
    "cifar_resnet20 projection": (lambda: models.cifar_resnet(20, shortcut="projection"),
                                  21, 19, 1),
    "rf vgg19": (lambda: models.rf_model("vgg19", 1, width=4), 16, 16, 1),
    "rf resnet50": (lambda: models.rf_model("resnet50", 1, width=4), 53, 49, 1),
    "rf vgg": (lambda: models.rf_model("vgg", 1), 6, 6, 1),
    "rf resnet": (lambda: models.rf_model("resnet", 1), 9, 7, 1),
    "efficientnet_lite0": (lambda: models.efficientnet_lite0(pretrained=False), 49, 49, 1),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_layer_walk_of_every_model(name):
    """The one walker gives the lists that pruning, dissection, similarity and resampling
    each computed by their own walk before (the counts were read off those)."""
    build, n_convs, n_main, n_linear = MODELS[name]
    model = build()
    modules = list(model.named_modules())
    convs = [n for n, m in modules if isinstance(m, nn.Conv2d)]
    assert hooks.conv_layers(model) == hooks.layer_names(model) == convs
    assert len(convs) == n_convs
    # the former rules: a shortcut's name contains "shortcut" or "downsample" (pruning,
    # dissection), or has it as one dotted part (similarity)
    main = [n for n in convs if "shortcut" not in n and "downsample" not in n]
    assert hooks.conv_layers(model, shortcuts=False) == main and len(main) == n_main
    layers = hooks.layer_names(model, (nn.Conv2d, nn.Linear), shortcuts=False)
    assert layers == [n for n, m in modules if isinstance(m, (nn.Conv2d, nn.Linear))
                      and not {"shortcut", "downsample"} & set(n.split("."))]
    assert len(layers) == n_main + n_linear
    pools = hooks.layer_names(model, (nn.MaxPool2d,))
    assert pools == [n for n, m in modules if isinstance(m, nn.MaxPool2d)]
