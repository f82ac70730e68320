import collections
import copy
import json

import pytest
import torch

from subnets import cache, devices


def test_computes_once_then_reads(isolated_cache):
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(3)}

    first = cache.cached("t", {"a": 1}, compute)
    second = cache.cached("t", {"a": 1}, compute)
    assert len(calls) == 1 and torch.equal(first["x"], second["x"])
    cache.cached("t", {"a": 2}, compute)
    assert len(calls) == 2


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign"])
def test_corrupt_entry_is_recomputed_not_used(isolated_cache, damage):
    cache.cached("t", {"a": 1}, lambda: {"x": torch.ones(1000)})
    (path,) = isolated_cache.glob("t-*.pt")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint")
    else:
        torch.save({"key": "other", "value": {"x": torch.zeros(1)}}, path)
    with pytest.warns(UserWarning, match="recomputing"):
        value = cache.cached("t", {"a": 1}, lambda: {"x": torch.full((2,), 7.0)})
    assert value["x"].tolist() == [7.0, 7.0]
    again = cache.cached("t", {"a": 1}, lambda: pytest.fail("should be cached now"))
    assert again["x"].tolist() == [7.0, 7.0]


def test_interrupted_write_leaves_no_entry(isolated_cache, monkeypatch):
    def failing_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        cache.cached("t", {}, lambda: {"x": torch.ones(1)})
    assert list(isolated_cache.glob("*")) == []


def test_keys_follow_content_not_identity():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    b.load_state_dict(a.state_dict())
    assert cache.key_of("m", {"m": a}) == cache.key_of("m", {"m": b})
    with torch.no_grad():
        b.weight[0, 0] += 1
    assert cache.key_of("m", {"m": a}) != cache.key_of("m", {"m": b})
    assert cache.key_of("m", {"t": torch.zeros(2)}) != cache.key_of("m", {"t": torch.zeros(3)})
    with pytest.raises(TypeError, match="cannot hash"):
        cache.key_of("m", {"f": object()})


def test_writes_load_with_weights_only(isolated_cache):
    cache.cached("t", {}, lambda: {"state": {"w": torch.ones(2)}, "history": [{"loss": 0.5}]})
    (path,) = isolated_cache.glob("t-*.pt")
    entry = torch.load(path, weights_only=True)
    assert entry["value"]["history"][0]["loss"] == 0.5


def test_cpu_keys_carry_no_device(monkeypatch):
    parts = {"m": torch.nn.Linear(2, 2), "t": torch.ones(2)}
    assert "device" not in json.dumps(cache.canonical(parts))
    key = cache.key_of("t", parts)
    monkeypatch.setattr(devices, "key_kind", lambda value: "cuda")
    assert cache.canonical(parts)["t"]["device"] == "cuda" and cache.key_of("t", parts) != key


@pytest.mark.gpu
def test_gpu_entries_are_keyed_apart_and_stored_on_the_cpu(isolated_cache, cuda):
    module = torch.nn.Linear(2, 2)
    on_cpu = cache.cached("t", {"m": module}, lambda: {"w": module.weight.detach() * 2})
    fast = copy.deepcopy(module).to(cuda)
    first = cache.cached("t", {"m": fast}, lambda: {"w": [fast.weight.detach() * 2]})
    again = cache.cached("t", {"m": fast}, lambda: pytest.fail("should be cached now"))
    assert len(list(isolated_cache.glob("t-*.pt"))) == 2
    assert first["w"][0].device == again["w"][0].device == devices.CPU
    torch.testing.assert_close(first["w"][0], on_cpu["w"])


def test_cpu_values_are_returned_as_computed(isolated_cache):
    value = {"state": collections.OrderedDict(w=torch.ones(2)), "rows": [torch.zeros(1), 3]}
    assert cache.cached("t", {}, lambda: value) is value
