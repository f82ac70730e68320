"""Pretrained weights: loaded by name or by position, refused by name when missing,
corrupt, mismatched or of the wrong shape, before any work."""

import pytest
import torch
from torch import nn

from subnets import weights
from subnets.models import cifar_resnet


def _small() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def test_names_that_agree_load_by_name_and_a_wrapper_is_unwrapped(tmp_path):
    source = _small()
    torch.nn.init.normal_(source[0].weight)
    path = tmp_path / "net.th"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()},
                "best_prec1": 91.7}, path)
    loaded = weights.load_weights(_small(), str(path))
    assert torch.equal(loaded[0].weight, source[0].weight) and not loaded.training


def test_other_names_in_the_same_order_and_shapes_load_by_position(tmp_path):
    """akamaster's CIFAR ResNet-20 names its layers conv1/layer1/linear, ours stem/layers/fc:
    a state dict renamed that way loads back into our ResNet-20 by position."""
    source = cifar_resnet(20, shortcut="identity")
    for p in source.parameters():
        torch.nn.init.normal_(p)
    renamed = {f"t{i}.{k.rsplit('.', 1)[-1]}": v
               for i, (k, v) in enumerate(source.state_dict().items())}
    path = tmp_path / "resnet20.th"
    torch.save(renamed, path)
    loaded = weights.load_weights(cifar_resnet(20, shortcut="identity"), str(path))
    for (k, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k


def test_a_missing_file_is_refused_by_the_parameters_name(tmp_path):
    with pytest.raises(weights.WeightsError, match=r"^depth_weights: no file"):
        weights.load_weights(_small(), str(tmp_path / "absent.th"), parameter="depth_weights")


def test_a_corrupt_file_is_refused(tmp_path):
    path = tmp_path / "net.th"
    torch.save(_small().state_dict(), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(weights.WeightsError, match="not a readable checkpoint"):
        weights.load_weights(_small(), str(path))


def test_a_hash_that_differs_is_refused_given_or_from_a_hub_file_name(tmp_path):
    path = tmp_path / "net.th"
    torch.save(_small().state_dict(), path)
    digest = weights.sha256_of(path)
    assert weights.weights_file(str(path), digest[:8]) == path
    with pytest.raises(weights.WeightsError, match="corrupt or different"):
        weights.weights_file(str(path), "0" * 64)
    named = tmp_path / "net-00000000.th"
    named.write_bytes(path.read_bytes())
    with pytest.raises(weights.WeightsError, match="corrupt or different"):
        weights.weights_file(str(named))
    hub = tmp_path / f"net-{digest[:8]}.th"
    hub.write_bytes(path.read_bytes())
    assert weights.weights_file(str(hub)) == hub
    with pytest.raises(weights.WeightsError, match="hexadecimal"):
        weights.weights_file(str(path), "xyz")


def test_weights_of_another_shape_are_refused(tmp_path):
    path = tmp_path / "net.th"
    torch.save(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)).state_dict(), path)
    with pytest.raises(weights.WeightsError, match="do not fit Sequential"):
        weights.load_weights(_small(), str(path))
    torch.save({"0.weight": torch.ones(1)}, path)
    with pytest.raises(weights.WeightsError, match="tensors"):
        weights.load_weights(_small(), str(path))


def test_a_relative_path_resolves_in_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBNETS_DATA", str(tmp_path))
    (tmp_path / "ckpt").mkdir()
    torch.save(_small().state_dict(), tmp_path / "ckpt" / "net.th")
    assert weights.weights_file("ckpt/net.th") == tmp_path / "ckpt" / "net.th"


def test_a_url_downloads_once_into_torch_hubs_cache(tmp_path, monkeypatch):
    calls = []

    def download(url, dst, progress=True):
        calls.append(url)
        torch.save(_small().state_dict(), dst)

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    url = "https://example.org/models/net.th"
    for _ in range(2):
        path = weights.weights_file(url)
    assert path == tmp_path / "checkpoints" / "net.th" and calls == [url]
