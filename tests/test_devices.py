"""The one device helper, the rule that no other library module names a device, and (on a
machine with CUDA) each method's CUDA result against its CPU result."""

import ast
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import subnets
from subnets import attribution, curvature, devices, hooks, influence, resampling, similarity
from subnets.models import cifar_resnet, vgg11_small

LIBRARY = Path(subnets.__file__).parent
DEVICE_NAMES = ("cpu", "cuda", "mps")


# --- the helper --------------------------------------------------------------------------

@pytest.mark.skipif(devices.available() != ["cpu"], reason="this machine has an accelerator")
def test_auto_is_the_cpu_without_an_accelerator():
    assert devices.device("auto") == torch.device("cpu")
    assert subnets.device() == torch.device("cpu")


def test_unknown_device_is_refused_naming_it_and_what_is_available():
    with pytest.raises(ValueError, match=r"device: .*'tpu9'.*'cpu'"):
        devices.device("tpu9")
    with pytest.raises(ValueError, match="device: expected a string"):
        devices.device(3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_is_refused_where_there_is_none():
    with pytest.raises(ValueError, match=r"'cuda' is not available on this machine; available: "
                                         r"\[.*'cpu'\]"):
        devices.device("cuda")
    with pytest.raises(ValueError, match="'cuda:1' is not available"):
        devices.device("cuda:1")


def test_cpu_helpers_change_nothing():
    model = nn.Linear(2, 2)
    x = torch.ones(3, 2)
    assert devices.model_device(model) == devices.CPU and not devices.is_cuda(model)
    assert devices.to_model(model, x) is x and devices.upload(model, x) is x
    moved = devices.to_model(model, x, 5)
    assert moved[0] is x and moved[1] == 5
    assert devices.to_host(x.requires_grad_()).requires_grad is False
    assert devices.loader_options(model) == {} and devices.room_for(model, 2**40)
    assert devices.key_kind(model) is None and devices.key_kind(x) is None
    assert devices.key_kind(torch.empty(1, device="meta")) == "meta"
    assert devices.model_device(nn.ReLU()) == devices.CPU
    with devices.autocast(model), devices.tuned_kernels(model):
        assert model(x).dtype == torch.float32
        assert not torch.is_autocast_enabled()


def test_auto_precision_times_the_network_once_and_reads_its_verdict_back(isolated_cache,
                                                                           monkeypatch):
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(18, 2))
    monkeypatch.setattr(devices, "fast_bf16", lambda _where: False)
    assert devices.precision(net, "auto") == "fp32"  # no bf16 kernels: nothing to time
    monkeypatch.setattr(devices, "fast_bf16", lambda _where: True)
    with pytest.raises(ValueError, match="pass shape"):
        devices.precision(net, "auto")
    steps = []
    seconds = {False: 1.0, True: 0.5}  # bf16 twice as fast

    def step(model, x, bf16):
        steps.append((tuple(x.shape), bf16))
        assert model is not net and model.training
        return seconds[bf16]

    monkeypatch.setattr(devices, "_step_seconds", step)
    assert devices.precision(net, "auto", (4, 1, 5, 5)) == "bf16"
    assert steps == [((4, 1, 5, 5), False), ((4, 1, 5, 5), True)] * 4  # warm-up and 3 rounds
    seconds[True] = 1.0 / devices.AUTO_SPEEDUP * 1.01  # faster, but not by enough
    assert devices.precision(net, "auto", (4, 1, 5, 5)) == "bf16"  # read back, not retimed
    assert len(steps) == 8
    assert devices.precision(net, "auto", (8, 1, 5, 5)) == "fp32"  # another shape: timed
    assert len(steps) == 16 and len(list(isolated_cache.glob("precision-*.pt"))) == 2
    assert devices.precision(net, "fp32") == "fp32" and devices.precision(net, "bf16") == "bf16"


def test_precision_timing_leaves_the_model_and_the_random_state_alone():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout(), nn.Flatten(),
                        nn.Linear(18, 2)).eval()
    before = copy.deepcopy(net.state_dict())
    rng, threads = torch.random.get_rng_state(), torch.get_num_threads()
    timing = devices.precision_timing(net, (4, 1, 5, 5), steps=2, cached=False)
    assert set(timing) == {"fp32", "bf16"} and all(v > 0 for v in timing.values())
    assert torch.equal(torch.random.get_rng_state(), rng) and not net.training
    assert torch.get_num_threads() == threads  # timed on one thread, then set back
    for name, value in net.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(p.grad is None for p in net.parameters())


# --- no module but devices.py names a device --------------------------------------------

def device_names(source: str) -> list[str]:
    """Where ``source`` names a device itself: a "cpu"/"cuda"/"mps" string, ``.cuda(``,
    ``.cpu(``, ``device=`` with a literal, ``torch.device(``; as "line: what"."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.split(":")[0] in DEVICE_NAMES:
            found.append(f"{node.lineno}: string {node.value!r}")
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ("cuda", "cpu"):
            found.append(f"{node.lineno}: .{func.attr}()")
        if isinstance(func, ast.Attribute) and func.attr == "device" \
                and isinstance(func.value, ast.Name) and func.value.id == "torch":
            found.append(f"{node.lineno}: torch.device()")
        found += [f"{node.lineno}: device={ast.unparse(k.value)}" for k in node.keywords
                  if k.arg == "device" and isinstance(k.value, ast.Constant)
                  and k.value.value is not None]
    return found


def test_the_device_scan_catches_every_form():
    source = '''
x.to("cuda:0"); y = x.cuda(); z = x.cpu(); torch.device(name)
torch.zeros(2, device="mps"); torch.ones(1, device=0); load(p, map_location="cpu")
torch.zeros(2, device=x.device); x.to(devices.CPU); "a cpu in prose"; torch.cuda.is_available()
torch.zeros(2, device=None)
'''
    assert sorted(line.split(": ", 1)[1] for line in device_names(source)) == sorted([
        "string 'cuda:0'", ".cuda()", ".cpu()", "torch.device()", "string 'mps'",
        "device='mps'", "device=0", "string 'cpu'"])


def test_no_library_module_names_a_device():
    offences = [f"{path.relative_to(LIBRARY)}:{where}"
                for path in sorted(LIBRARY.rglob("*.py")) if path.name != "devices.py"
                for where in device_names(path.read_text())]
    assert not offences, "use subnets.devices instead of naming a device:\n" + "\n".join(offences)


# --- CUDA against CPU (skipped without CUDA) ----------------------------------------------
# TF32 is switched off for these comparisons: they check that a method computes the same
# thing on CUDA, so the only differences left are float32 summation orders (~1e-6).

TOL = 1e-4  # largest difference, relative to the largest CPU value


@pytest.fixture
def exact_fp32():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _on_cuda(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).cuda()


def _assert_close(on_cuda: torch.Tensor, on_cpu: torch.Tensor, tol: float = TOL) -> None:
    assert on_cuda.device == devices.CPU, "results must come back on the CPU"
    scale = on_cpu.abs().nan_to_num().max().clamp_min(1e-12)
    torch.testing.assert_close(on_cuda / scale, on_cpu / scale, rtol=0, atol=tol, equal_nan=True)


def _net(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return vgg11_small(in_channels=1, num_classes=classes).eval()


def _images(n: int = 6, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.gpu
def test_gpu_saliency_and_gradcam_match_cpu(exact_fp32):
    model, x, target = _net(), _images(), torch.tensor([0, 1, 2, 0, 1, 2])
    fast = _on_cuda(model)
    _assert_close(attribution.Saliency(fast).attribute(x, target),
                  attribution.Saliency(model).attribute(x, target))
    name = hooks.conv_layers(model)[-1]
    _assert_close(attribution.GradCAM(fast, name).attribute(x, target),
                  attribution.GradCAM(model, name).attribute(x, target))


@pytest.mark.gpu
def test_gpu_unit_conductance_matches_cpu(exact_fp32):
    model, x = _net(), _images(3)
    layers = hooks.conv_layers(model)[:3]
    on_cpu = attribution.UnitConductance(model, layers).attribute(x, 1, n_steps=8)
    on_cuda = attribution.UnitConductance(_on_cuda(model), layers).attribute(x, 1, n_steps=8)
    for name in layers:
        _assert_close(on_cuda[name], on_cpu[name], tol=1e-3)  # sums of many signed terms


@pytest.mark.gpu
def test_gpu_lanczos_top_eigenvalues_match_cpu(exact_fp32):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))
    x, y = torch.rand(32, 1, 8, 8), torch.arange(32) % 3
    on_cpu = curvature.Hessian(model, x, y).top_eigenvalues(k=5, tol=1e-6)
    on_cuda = curvature.Hessian(_on_cuda(model), x, y).top_eigenvalues(k=5, tol=1e-6)
    np.testing.assert_allclose(on_cuda, on_cpu, rtol=1e-3, atol=1e-3 * abs(on_cpu).max())


@pytest.mark.gpu
def test_gpu_cka_matches_cpu(exact_fp32):
    a, x = _net(), _images(16)
    torch.manual_seed(1)
    b = vgg11_small(in_channels=1, num_classes=3).eval()
    layers = hooks.conv_layers(a)
    for batch_size in (None, 8):
        on_cpu = similarity.cka_matrix(a, layers, b, layers, x, batch_size=batch_size)
        on_cuda = similarity.cka_matrix(_on_cuda(a), layers, _on_cuda(b), layers, x,
                                        batch_size=batch_size)
        np.testing.assert_allclose(on_cuda.to_numpy(), on_cpu.to_numpy(), atol=1e-4)


@pytest.mark.gpu
def test_gpu_penultimate_features_and_decomposed_layer_match_cpu(exact_fp32, cuda):
    torch.manual_seed(0)
    model = cifar_resnet(8, in_channels=1, num_classes=3).eval()
    data = TensorDataset(_images(12), torch.arange(12) % 3)
    on_cpu = influence.penultimate_features(model, data)
    on_cuda = influence.penultimate_features(_on_cuda(model), data)
    _assert_close(on_cuda.features, on_cpu.features)
    assert torch.equal(on_cuda.labels, on_cpu.labels)
    k = max(1, on_cpu.features.shape[1] // 4)
    found = influence.InfluentialFeatureSelection(model, k1=k, k2=k).select(on_cpu)
    layer = influence.DecomposedLinear(model.fc, found.indices)
    fast = _on_cuda(layer)
    assert devices.model_device(fast) == fast.indices.device == cuda
    features = on_cpu.features
    _assert_close(devices.to_host(fast(devices.to_model(fast, features))), layer(features))


@pytest.mark.gpu
def test_gpu_resampling_scores_match_cpu(exact_fp32):
    model, x = _net(), _images(2)
    layers = hooks.conv_layers(model)[:2]
    on_cpu = resampling.InputResampling(model, layers, n_samples=8).score(x)
    on_cuda = resampling.InputResampling(_on_cuda(model), layers, n_samples=8).score(x)
    for name in layers:
        _assert_close(on_cuda[name], on_cpu[name], tol=1e-3)  # 1 / variance amplifies
