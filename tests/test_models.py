"""The pretrained EfficientNet-Lite0: its weights wired right, its activations visible to captum."""


import copy

import pytest
import timm
import torch
from captum.attr import Deconvolution, Saliency
from torch import nn

from subnets import evaluation
from subnets.models import cifar_resnet, efficientnet, efficientnet_lite0


def test_pretrained_lite0_classifies_the_imagenet_photos():
    # 20 labelled ImageNet validation photos shipped by foolbox 3.3.4 (tests/data/imagenet)
    x, y = efficientnet.imagenet_photos(224)
    assert x.shape == (20, 3, 224, 224)
    with torch.no_grad():
        correct = (efficientnet_lite0(pretrained=True)(x).argmax(1) == y).sum().item()
    assert correct >= 16, \
        f"top-1 {correct}/20: the weights need tf_efficientnet_lite0, mean=std=0.5"


def test_photos_from_a_folder_of_wordnet_ids_carry_their_imagenet_labels(tmp_path):
    from PIL import Image

    for wnid, shade in (("n01443537", 0), ("n01440764", 255)):  # goldfish (1), tench (0)
        (tmp_path / wnid).mkdir()
        for i in range(3):
            Image.new("RGB", (12, 8), (shade, shade, shade)).save(tmp_path / wnid / f"{i}.png")
    x, y = efficientnet.imagenet_photos(16, f"imagefolder:{tmp_path}")
    assert x.shape == (6, 3, 16, 16) and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    assert ((x.mean((1, 2, 3)) > 0.5) == (y == 0)).all()  # each photo keeps its own label
    (tmp_path / "cats").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "cats" / "0.png")
    with pytest.raises(ValueError, match="photos: .*WordNet IDs.*'cats'"):
        efficientnet.imagenet_photos(16, f"imagefolder:{tmp_path}")
    with pytest.raises(ValueError, match="photos: expected"):
        efficientnet.imagenet_photos(16, "cifar10")


def test_class_subset_scores_only_the_kept_classes_and_leaves_the_original():
    torch.manual_seed(0)
    net = efficientnet_lite0(pretrained=False)
    x = torch.rand(2, 3, 32, 32)
    before = net(x)
    subset = efficientnet.class_subset(net, [7, 3, 999])
    assert torch.allclose(subset(x), before[:, [7, 3, 999]], atol=1e-6)
    assert torch.equal(net(x), before) and net.net.classifier.out_features == 1000


def test_relu6_is_a_captum_visible_relu_with_the_same_outputs():
    torch.manual_seed(0)
    model = efficientnet_lite0(pretrained=False)
    assert not any(type(m) is nn.ReLU6 for m in model.modules())
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    reference.load_state_dict(model.net.state_dict())
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(model.normalize(x)), atol=1e-5)
    act = efficientnet.ReLU6()
    assert torch.equal(act(torch.tensor([-1.0, 3.0, 7.0])), torch.tensor([0.0, 3.0, 6.0]))


def test_deconvnet_rectifies_the_relu6_gradients():
    torch.manual_seed(0)
    model = efficientnet_lite0(pretrained=False)
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    with pytest.warns(UserWarning, match="backward hooks on ReLU"):
        deconv = Deconvolution(model).attribute(x, target=3)
    plain = Saliency(model).attribute(x, target=3, abs=False)
    # With timm's nn.ReLU6 captum hooks nothing and the deconvnet is the plain gradient.
    assert not torch.allclose(deconv, plain)


def test_small_networks_by_name():
    from subnets import models

    for name, build in zip(models.NETWORKS, (models.alexnet_small, models.vgg11_small,
                                             models.resnet18_small)):
        torch.manual_seed(0)
        net = models.small_network(name, 1, 3)
        torch.manual_seed(0)
        reference = build(in_channels=1, num_classes=3)
        assert type(net) is type(reference)
        for a, b in zip(net.state_dict().values(), reference.state_dict().values()):
            assert torch.equal(a, b)
        assert net(torch.rand(2, 1, 28, 28)).shape == (2, 3)
    assert models.small_network("vgg11", batch_norm=False).features[1].__class__ is nn.ReLU
    with pytest.raises(ValueError, match="network: expected one of"):
        models.small_network("vgg16")


def test_vgg_layouts_come_from_cfgs():
    from subnets.models import rfpool, vgg

    def convs(model):
        return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]

    def pools(model):
        return sum(isinstance(m, nn.MaxPool2d) for m in model.features)

    with torch.device("meta"):
        assert convs(vgg.vgg11_small()) == [32, 64, 128, 128, 256, 256]
        assert convs(rfpool.vgg_small_rf(2, width=8)) == [8, 8, 16, 16, 32, 32]
        assert convs(rfpool.vgg19_rf(2, width=16)) == [16, 16, 32, 32] + [64] * 4 + [128] * 8
        # the receptive-field pool comes on top of the layout's own 2x2 pools
        assert pools(rfpool.vgg_small_rf(0)) == 2 and pools(rfpool.vgg_small_rf(3)) == 3
    assert set(vgg.cfgs) == {"vgg11_small", "vgg19_rf", "vgg_small_rf"}


def test_rf_vggs_are_initialised_as_torchvision_and_respond_to_their_input():
    from subnets import train
    from subnets.models import rfpool

    with train.seeded(0):
        model = rfpool.vgg19_rf(4, width=16).eval()
    conv = model.features[0]
    fan_out = conv.out_channels * 9
    assert abs(conv.weight.std().item() / (2 / fan_out) ** 0.5 - 1) < 0.2
    assert not conv.bias.any() and not model.classifier[-1].bias.any()
    assert abs(model.classifier[-1].weight.std().item() / 0.01 - 1) < 0.2
    x = torch.rand(8, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
    # PyTorch's default initialisation gives a spread of about 1e-8 here: a constant output
    assert (logits.std(0).mean() / logits.abs().mean()).item() > 1e-2


def test_rf_variant_networks_are_seeded_and_independent_of_the_others_built():
    from subnets.models import rfpool

    nets = rfpool.variant_networks(["vgg", "resnet"], [1, 3], seeds=2, in_channels=1, width=4)
    assert list(nets) == [(a, lv, s) for a in ("vgg", "resnet") for lv in (1, 3) for s in (0, 1)]
    alone = rfpool.variant_networks(["resnet"], [3], seeds=2, in_channels=1, width=4)
    for key, model in alone.items():
        for a, b in zip(model.parameters(), nets[key].parameters()):
            assert torch.equal(a, b)
    assert not torch.equal(next(nets["vgg", 1, 0].parameters()),
                           next(nets["vgg", 1, 1].parameters()))
    with pytest.raises(ValueError, match="seeds"):
        rfpool.variant_networks(["vgg"], [1], seeds=0)


def test_rf_variant_table_and_the_paper_column():
    from subnets.models import rfpool

    paper = rfpool.paper_receptive_fields()
    assert paper["paper"].tolist() == [181, 359, 537, 715, 110, 213, 318, 423]
    assert paper["layer arithmetic"].tolist() == [181, 359, 537, 715, 108, 213, 318, 423]
    nets = rfpool.variant_networks(["vgg"], [1, 4], seeds=2, in_channels=1, width=4)
    table = rfpool.variant_table(nets, torch.rand(8, 1, 28, 28))
    assert len(table) == 2  # seed 0 only
    assert (table["gradient support"] == table["receptive field"]).all()
    assert table["last feature map"].tolist() == ["7x7", "1x1"]
    rows = rfpool.construction_claims(paper, table)
    assert [r.rule for r in rows] == [None] * 4
    assert [r.estimate.value for r in rows] == [4.0, 3.0, 2.0, 1.0]


def test_pytorch_initialisation_silences_the_vgg_at_initialisation():
    from subnets.models import rfpool

    nets = rfpool.variant_networks(["vgg"], [1], in_channels=1, width=8)
    spread = rfpool.initialisation_spread(nets, torch.rand(16, 1, 28, 28))
    assert spread.loc[("vgg", 1), "torchvision"] > 10 * spread.loc[("vgg", 1), "PyTorch default"]
    # the networks themselves keep torchvision's initialisation
    assert abs(nets["vgg", 1, 0].classifier[-1].weight.std().item() / 0.01 - 1) < 0.3
    with pytest.raises(ValueError, match="inputs"):
        rfpool.input_dependence(nets["vgg", 1, 0], torch.rand(1, 1, 28, 28))


def test_pytorch_initialisation_does_not_depend_on_the_global_generator():
    from subnets.models import rfpool

    net = rfpool.variant_networks(["vgg"], [1], in_channels=1, width=4)["vgg", 1, 0]
    torch.manual_seed(1)
    first = rfpool.pytorch_init(copy.deepcopy(net)).classifier[-1].weight
    torch.rand(100)  # a chapter that trained drew more than one that read its cache
    second = rfpool.pytorch_init(copy.deepcopy(net)).classifier[-1].weight
    assert torch.equal(first, second)
    other = rfpool.pytorch_init(copy.deepcopy(net), seed=1).classifier[-1].weight
    assert not torch.equal(first, other)


def test_rf_training_recipe_and_its_changes(tmp_path, monkeypatch):
    from subnets import data
    from subnets.models import rfpool

    monkeypatch.setenv("SUBNETS_CACHE", str(tmp_path))
    p = {"epochs": 1, "batch_size": 4, "lr": 0.05, "weight_decay": 5e-5, "clip_mode": "norm",
         "clip_threshold": 0.0, "augment": False, "precision": "fp32"}
    config = rfpool.train_config(p, 3)
    assert (config.optimizer, config.momentum, config.schedule, config.seed) == (
        "sgd", 0.9, "cosine", 3)
    assert config.clip_grad_norm is None and config.clip_grad_value is None
    assert rfpool.train_config(p, 0, clip_mode="value", clip_threshold=0.1).clip_grad_value == 0.1
    with pytest.raises(ValueError, match="clip_mode"):
        rfpool.train_config(p, 0, clip_mode="both")
    with pytest.raises(ValueError, match="changes"):
        rfpool.train_config(p, 0, momentum=0.5)
    images = data.ImageSet(torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8),
                           torch.arange(8) % 2, ["a", "b"], "tiny")
    nets = rfpool.variant_networks(["vgg"], [1], in_channels=1, num_classes=2, width=4)
    before = [q.clone() for q in nets["vgg", 1, 0].parameters()]
    trained = rfpool.trained_networks(nets, images, p)
    placebo = rfpool.trained_networks(nets, images, p, untrained=True)
    assert all(torch.equal(a, b) for a, b in zip(before, nets["vgg", 1, 0].parameters()))
    assert not torch.equal(next(trained["vgg", 1, 0].parameters()), before[0])
    assert torch.equal(next(placebo["vgg", 1, 0].parameters()), before[0])
    assert isinstance(evaluation.evaluate(trained["vgg", 1, 0], images).accuracy, float)


def test_a_resnet_that_normalises_its_inputs_keeps_the_state_dict_of_one_that_does_not():
    from subnets.models import inputs

    stats = ((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    plain, normalising = cifar_resnet(8), cifar_resnet(8, normalize=stats)
    assert list(plain.state_dict()) == list(normalising.state_dict())
    normalising.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 16, 16)
    expected = plain.eval()(inputs.Normalize(*stats)(x))
    assert torch.allclose(normalising.eval()(x), expected, atol=1e-6)


def test_a_full_network_loads_torchvision_weights_named_by_their_hash(tmp_path):
    from subnets.models.imagenet import imagenet_network, scaled_network
    from subnets.weights import sha256_of

    own = imagenet_network("resnet18", 3, 1000).net.state_dict()  # torchvision's layout
    path = tmp_path / "resnet18.pth"
    torch.save(own, path)
    named = path.rename(tmp_path / f"resnet18-{sha256_of(path)[:8]}.pth")
    net = scaled_network("resnet18", "full", 3, 10, weights=str(named))
    assert torch.equal(net.net.conv1.weight, own["conv1.weight"])
    assert net.net.fc.out_features == 10  # the 1000-class head is not loaded
    (tmp_path / "resnet18-0123abcd.pth").write_bytes(named.read_bytes())
    with pytest.raises(ValueError, match=r"weights\[resnet18\]: .* expected 0123abcd"):
        scaled_network("resnet18", "full", 3, 10, weights=str(tmp_path / "resnet18-0123abcd.pth"))
    with pytest.raises(ValueError, match=r"weights\[resnet18\]: .* only network_scale='full'"):
        scaled_network("resnet18", "small", 3, 10, weights=str(named))
