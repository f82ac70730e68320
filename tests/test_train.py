import copy
from dataclasses import asdict

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from subnets import batches, cache, devices, distributed, evaluation, train
from subnets.data import ImageSet
from subnets.progress import bar


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
    config = train.TrainConfig(epochs=3, batch_size=64, snapshots=True)
    trained = train.fit(make_model(), data, config, test_data=data)
    assert list(trained.history["epoch"]) == [1, 2, 3] and "test_accuracy" in trained.history
    assert len(trained.snapshots) == 3
    last = trained.at_epoch(3)
    assert torch.equal(last[0].weight, trained.model[0].weight)
    assert not torch.equal(trained.at_epoch(1)[0].weight, last[0].weight)


def test_bce_loss_single_logit_and_evaluate():
    data = toy_problem()
    with train.seeded(0):
        model = nn.Linear(4, 1)
    trained = train.fit(model, data,
                        train.TrainConfig(epochs=5, batch_size=32, lr=0.05, loss="bce"))
    ev = evaluation.evaluate(trained.model, data)
    assert ev.accuracy > 0.9 and set(ev.predictions.unique().tolist()) <= {0, 1}


def test_sgd_cosine_and_augment_run():
    x = torch.rand(32, 1, 8, 8)
    data = TensorDataset(x, (x.mean((1, 2, 3)) > 0.5).long())
    with train.seeded(0):
        model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 2))
    config = train.TrainConfig(epochs=1, batch_size=8, optimizer="sgd", schedule="cosine",
                               augment=True, lr=0.1)
    assert len(train.fit(model, data, config).history) == 1


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="epochs"):
        train.TrainConfig(epochs=-1)
    with pytest.raises(ValueError, match="optimizer"):
        train.TrainConfig(optimizer="lbfgs")


def test_at_epoch_refuses_epochs_without_a_snapshot():
    # Epoch 0 used to read snapshots[-1], the last epoch's weights, without a word.
    trained = train.fit(make_model(), toy_problem(), train.TrainConfig(epochs=2, snapshots=True))
    assert torch.equal(trained.at_epoch(2)[0].weight, trained.model[0].weight)
    for epoch in (0, 3, -1):
        with pytest.raises(ValueError, match="epoch"):
            trained.at_epoch(epoch)


class LastLayerOnly(train.Objective):
    """An objective that trains only the last layer and records its own fields."""

    def parameters(self, model):
        return list(model[-1].parameters())

    def begin_epoch(self, model, epoch):
        self.batches = 0
        return super().begin_epoch(model, epoch)

    def after_step(self, model):
        self.batches += 1

    def end_epoch(self, model):
        return {"batches": self.batches, **super().end_epoch(model)}


def test_an_objective_chooses_the_parameters_and_the_history():
    data = toy_problem()
    config = train.TrainConfig(epochs=2, batch_size=64, lr=0.05)
    model = make_model()
    first = model[0].weight.detach().clone()
    entry = train.run_training(model, data, config, data, "last layer",
                               objective=LastLayerOnly(config))
    assert torch.equal(entry["state"]["0.weight"], first)  # not the objective's parameters
    assert not torch.equal(entry["state"]["2.weight"], make_model()[2].weight)
    history = entry["history"]
    assert [list(row) for row in history] == [["epoch", "batches", "loss", "train_accuracy",
                                               "test_accuracy"]] * 2
    assert [row["batches"] for row in history] == [4, 4]  # after_step after every step
    plain = train.run_training(make_model(), data, config, data, "plain",
                               objective=train.Objective(config))
    default = train.run_training(make_model(), data, config, data, "default")
    assert plain["history"] == default["history"]
    assert all(torch.equal(plain["state"][k], v) for k, v in default["state"].items())


# --- CPU training is exactly the plain DataLoader loop it always was ----------------------

def image_set(n=150, side=10):
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (n, 1, side, side), generator=g, dtype=torch.uint8)
    return ImageSet(images, (images.float().mean((1, 2, 3)) > 127.5).long(), ["a", "b"], "toy")


def conv_model(side=10, dropout=0.2):
    with train.seeded(0):
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                             nn.Dropout(dropout), nn.Flatten(), nn.Linear(4 * side * side, 2))


def reference_training(model, data, config, test_data):
    """The CPU loop before devices (Adam, constant rate): a DataLoader over the dataset's
    items, wrapped in the progress bar, Python float sums, per-item test predictions."""
    g = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(data, batch_size=config.batch_size, shuffle=True, generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    history = []
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        for epoch in range(1, config.epochs + 1):
            model.train()
            total, correct, loss_sum = 0, 0, 0.0
            for x, y in bar(loader):
                x = batches.augment_batch(x, g) if config.augment else x
                logits = model(x)
                loss = nn.functional.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.item() * len(y)
                total += len(y)
                correct += (logits.argmax(1) == y).sum().item()
            model.eval()
            with torch.no_grad():
                test = torch.cat([model(x) for x, _ in DataLoader(test_data, 500)]).argmax(1)
            history.append({"epoch": epoch, "loss": loss_sum / total,
                            "train_accuracy": correct / total,
                            "test_accuracy": (test == test_data.labels).float().mean().item()})
    return model.state_dict(), history


@pytest.mark.parametrize("augment", [False, True])
def test_cpu_training_is_bit_for_bit_the_plain_loop(augment):
    data = image_set()
    config = train.TrainConfig(epochs=2, batch_size=32, augment=augment)
    entry = train.run_training(conv_model(), data, config, data, "new")
    state, history = reference_training(conv_model(), data, config, data)
    assert entry["history"] == history
    assert all(torch.equal(entry["state"][k], v) for k, v in state.items())


class Items(Dataset):
    """A dataset that is neither an ImageSet nor a TensorDataset: the DataLoader path."""

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.data[i]


def test_any_dataset_trains_and_predicts_as_its_tensors_do():
    data = image_set()
    config = train.TrainConfig(epochs=1, batch_size=32, augment=True)
    a = train.run_training(conv_model(), data, config, None, "tensors")
    b = train.run_training(conv_model(), Items(data), config, None, "items")
    assert a["history"] == b["history"]
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    model = conv_model().eval()
    logits = evaluation.predict(model, data, 64)
    assert torch.equal(logits, evaluation.predict(model, Items(data), 64))
    assert torch.equal(logits, evaluation.predict(model, data.tensors()[0]))


def test_cpu_fit_keys_carry_no_device_and_other_devices_are_keyed_apart(isolated_cache,
                                                                        monkeypatch):
    data, model = toy_problem(), make_model()
    config = train.TrainConfig(epochs=1, batch_size=64)
    # Uncompiled training keeps the keys it had before TrainConfig.compile existed.
    fields = {k: v for k, v in asdict(config).items() if k != "compile"}
    parts = {"model": model, "data": list(data.tensors), "config": fields, "test": None}
    key = cache.key_of("fit", parts)  # computed before training changes the weights
    train.fit(model, data, config)
    assert [p.name for p in isolated_cache.glob("fit-*.pt")] == [f"{key}.pt"]
    monkeypatch.setattr(devices, "key_kind", lambda value: "cuda")
    assert cache.key_of("fit", parts) != key


# --- CUDA against CPU (skipped without CUDA) ----------------------------------------------

@pytest.mark.gpu
def test_gpu_training_matches_cpu_and_is_cached_apart(isolated_cache, cuda):
    """bf16 autocast changes the gradients slightly; an Adam step of lr 1e-3 moves a weight
    by about 1e-3 whatever its gradient, so after 4 steps CUDA and CPU weights differ by at
    most ~8e-3 (1e-2 allowed), and the losses by under 2 % (bf16: 8 bits of mantissa).
    No dropout: CUDA draws other masks than the CPU."""
    data = image_set(128)
    config = train.TrainConfig(epochs=2, batch_size=64, augment=True)
    init = conv_model(dropout=0.0)
    on_cpu = train.fit(copy.deepcopy(init), data, config, test_data=data)
    on_cuda = train.fit(copy.deepcopy(init).to(cuda), data, config, test_data=data)
    assert devices.model_device(on_cuda.model) == cuda
    assert all(p.is_contiguous() for p in on_cuda.model.parameters())
    for k, v in on_cpu.model.state_dict().items():
        assert torch.allclose(devices.to_host(on_cuda.model.state_dict()[k]).float(), v.float(),
                              atol=1e-2, rtol=0), k
    assert on_cuda.history["loss"].tolist() == pytest.approx(on_cpu.history["loss"].tolist(),
                                                              rel=2e-2)
    entries = sorted(isolated_cache.glob("fit-*.pt"))
    assert len(entries) == 2, "a CUDA training must not be served from the CPU entry"
    for path in entries:
        state = torch.load(path, weights_only=True)["value"]["state"]
        assert all(t.device == devices.CPU for t in state.values())
    again = train.fit(copy.deepcopy(init).to(cuda), data, config, test_data=data)
    assert len(list(isolated_cache.glob("fit-*.pt"))) == 2
    assert devices.model_device(again.model) == cuda
    assert all(torch.equal(v, on_cuda.model.state_dict()[k])
               for k, v in again.model.state_dict().items())


_TRAIN_AND_HASH = """
import hashlib, torch
from torch import nn
from subnets import train
from subnets.data import ImageSet
g = torch.Generator().manual_seed(0)
images = torch.randint(0, 256, (64, 1, 64, 64), dtype=torch.uint8, generator=g)
data = ImageSet(images, torch.arange(64) % 2, ["a", "b"], "noise")
with train.seeded(0):
    model = nn.Sequential(nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 8, 3),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
fit = train.fit(model, data, train.TrainConfig(epochs=1, batch_size=32), cached=False)
print(hashlib.sha256(b"".join(p.detach().numpy().tobytes()
                              for p in fit.model.parameters())).hexdigest())
"""


def test_the_makefiles_allocator_settings_leave_training_bit_for_bit_the_same():
    """The Makefile keeps freed tensors in glibc's heap (MALLOC_*_THRESHOLD_) for speed;
    where memory comes from must not change a single weight. The batches' activations
    (32 x 64 x 64 x 64 floats, 32 MiB) are above glibc's largest automatic mmap threshold,
    so the two runs really do allocate differently."""
    import os
    import subprocess
    import sys

    plain = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    tuned = {**plain, "MALLOC_MMAP_THRESHOLD_": "4294967296",
             "MALLOC_TRIM_THRESHOLD_": "4294967296"}
    hashes = [subprocess.run([sys.executable, "-c", _TRAIN_AND_HASH], env=env, check=True,
                             capture_output=True, text=True).stdout for env in (plain, tuned)]
    assert hashes[0] == hashes[1] and len(hashes[0].strip()) == 64


def test_a_placebo_fit_trains_nothing_and_recalibrates_batch_norm():
    from torch import nn

    from subnets import data, train

    with train.seeded(0):
        net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    toy = data.ImageSet(images, torch.arange(64) % 10, [str(c) for c in range(10)], "toy")
    result = train.fit(net, toy, train.TrainConfig(epochs=3), test_data=toy, placebo=True)
    after = result.model.state_dict()
    for name in ("0.weight", "0.bias", "1.weight", "1.bias", "5.weight", "5.bias"):
        assert torch.equal(after[name], before[name]), name
    # The running statistics are those of the training images, not the initial 0 and 1.
    x = images.float() / 255
    feats = net[0](x)
    torch.testing.assert_close(after["1.running_mean"], feats.mean((0, 2, 3)))
    assert result.history.epoch.tolist() == [0] and result.history.loss.isna().all()
    assert 0 <= result.history.test_accuracy.item() <= 1


def test_precision_is_checked_and_auto_keys_the_cache_by_what_it_resolves_to(isolated_cache,
                                                                           monkeypatch):
    with pytest.raises(ValueError, match="precision"):
        train.TrainConfig(precision="fp16")
    data = toy_problem(64)
    assert train.batch_shape(data, 16) == (16, 4) and train.batch_shape(data, 100) == (64, 4)
    monkeypatch.setattr(devices, "fast_bf16", lambda _where: True)
    timed = []

    def timing(model, shape):
        timed.append(shape)
        return speeds

    monkeypatch.setattr(devices, "precision_timing", timing)
    runs = {}
    for speeds in ({"fp32": 2.0, "bf16": 1.0}, {"fp32": 1.1, "bf16": 1.0}):
        for precision in ("auto", "bf16", "fp32"):
            config = train.TrainConfig(epochs=1, batch_size=16, precision=precision)
            runs[precision] = train.fit(make_model(), data, config).model
        # "auto" took the verdict of a timing on the training batches' shape ...
        assert timed and set(timed) == {(16, 4)}
        # ... and shares the cache entry of the precision it resolved to.
        chosen = "bf16" if speeds["fp32"] >= devices.AUTO_SPEEDUP * speeds["bf16"] else "fp32"
        for name, value in runs["auto"].state_dict().items():
            assert torch.equal(value, runs[chosen].state_dict()[name]), (chosen, name)
        assert not torch.equal(runs["bf16"][0].weight, runs["fp32"][0].weight)
    assert len(list(isolated_cache.glob("fit-*.pt"))) == 2  # bf16 and fp32, nothing for auto


def test_bf16_training_runs_under_autocast_and_stays_close_to_fp32():
    from torch.utils.data import TensorDataset

    from subnets import train

    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > x.mean()).long()
    toy = TensorDataset(x, y)
    results = {}
    for precision in ("fp32", "bf16"):
        with train.seeded(0):
            net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
                                      torch.nn.Flatten(), torch.nn.Linear(144, 2))
        config = train.TrainConfig(epochs=2, batch_size=32, lr=1e-2, precision=precision)
        results[precision] = train.fit(net, toy, config, cached=False)
    w32, w16 = (results[p].model[3].weight for p in ("fp32", "bf16"))
    assert not torch.equal(w32, w16)  # the bf16 run did compute in bf16
    torch.testing.assert_close(w16, w32, rtol=0.05, atol=0.01)


def _image_problem(n=100):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=g)
    return TensorDataset(x, (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).long())


def _conv_net(batch_norm: bool):
    with train.seeded(0):
        return nn.Sequential(nn.Conv2d(1, 4, 3), *[nn.BatchNorm2d(4)] * batch_norm, nn.ReLU(),
                             nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


# 100 images in batches of 32: the last batch (4 images) is shared too.
DISTRIBUTED_CONFIG = train.TrainConfig(epochs=2, batch_size=32, lr=0.01, augment=True)


def _train_as_process(rank, world, port, folder):
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), SUBNETS_CACHE=str(folder / "cache"))
    torch.set_num_threads(1)
    for batch_norm in (False, True):
        trained = train.fit(_conv_net(batch_norm), _image_problem(), DISTRIBUTED_CONFIG)
        # Again: now process 0 finds the entry and hands it to the other.
        again = train.fit(_conv_net(batch_norm), _image_problem(), DISTRIBUTED_CONFIG)
        torch.save({"state": trained.model.state_dict(), "again": again.model.state_dict(),
                    "history": trained.history},
                   folder / f"bn{int(batch_norm)}_rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_fit_trains_data_parallel_in_two_processes_like_one(tmp_path):
    """Two gloo processes (as under torchrun) end with the same weights; without batch
    norm, the weights of one process trained on the same global batches."""
    import socket
    import time

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.spawn(_train_as_process, args=(2, port, tmp_path), nprocs=2, join=False)
    deadline = time.monotonic() + 300  # starting two processes on a busy machine is slow
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for p in context.processes:
                p.kill()
            pytest.fail("the two training processes took over 300 s")
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2  # process 0 wrote each once
    for batch_norm in (0, 1):
        ranks = [torch.load(tmp_path / f"bn{batch_norm}_rank{r}.pt", weights_only=False)
                 for r in (0, 1)]
        for k, v in ranks[0]["state"].items():
            for other in (ranks[1]["state"], ranks[0]["again"], ranks[1]["again"]):
                assert torch.equal(v, other[k]), (batch_norm, k)
        single = train.fit(_conv_net(bool(batch_norm)), _image_problem(), DISTRIBUTED_CONFIG,
                           cached=False)
        history = ranks[0]["history"]
        assert history["train_accuracy"].tolist() == pytest.approx(
            single.history["train_accuracy"].tolist(), abs=0.02)
        if not batch_norm:
            for k, v in single.model.state_dict().items():
                torch.testing.assert_close(ranks[0]["state"][k], v, rtol=1e-4, atol=1e-5)
            assert history["loss"].tolist() == pytest.approx(single.history["loss"].tolist(),
                                                             rel=1e-4)


def test_compiled_training_matches_eager_and_is_keyed_apart(isolated_cache):
    data = toy_problem(64)
    eager = train.fit(make_model(), data, train.TrainConfig(epochs=1, batch_size=32))
    config = train.TrainConfig(epochs=1, batch_size=32, compile=True)
    compiled = train.fit(make_model(), data, config)
    assert len(list(isolated_cache.glob("*.pt"))) == 2
    for k, v in eager.model.state_dict().items():
        torch.testing.assert_close(compiled.model.state_dict()[k], v, rtol=1e-4, atol=1e-6)


def test_value_clipping_clips_every_gradient_element():
    from torch.utils.data import TensorDataset

    def net():
        with train.seeded(0):
            return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))

    data = TensorDataset(100 * torch.rand(6, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2]))
    config = train.TrainConfig(epochs=1, batch_size=6, lr=1.0, optimizer="sgd", momentum=0.0,
                               clip_grad_value=0.1)
    expected = net()
    nn.functional.cross_entropy(expected(data.tensors[0]), data.tensors[1]).backward()
    assert max(p.grad.abs().max().item() for p in expected.parameters()) > 0.1
    with torch.no_grad():
        for p in expected.parameters():
            p -= p.grad.clamp(-0.1, 0.1)
    model = train.fit(net(), data, config, cached=False).model
    for p, q in zip(model.parameters(), expected.parameters()):
        torch.testing.assert_close(p, q)
    with pytest.raises(ValueError, match="by value or by norm"):
        train.TrainConfig(clip_grad_norm=1.0, clip_grad_value=0.1)
    with pytest.raises(ValueError, match="clip_grad_value"):
        train.TrainConfig(clip_grad_value=0.0)


def test_a_seed_share_trains_its_seeds_and_hands_back_the_others_as_placebos(isolated_cache,
                                                                             monkeypatch):
    data = toy_problem(64)
    configs = [train.TrainConfig(epochs=1, batch_size=16, seed=s) for s in range(3)]
    monkeypatch.setenv(distributed.SEED_SHARE, "1/2")
    results = [train.fit(make_model(c.seed), data, c) for c in configs]
    assert [r.history.epoch.tolist() for r in results] == [[0], [1], [0]]
    assert torch.equal(results[0].model[0].weight, make_model(0)[0].weight)  # untrained
    assert len(list(isolated_cache.glob("fit-*.pt"))) == 1
    # Nothing but trainings is stored: a result computed on a stand-in is not kept.
    assert cache.cached("head", {"net": results[0].model}, lambda: {"x": 1}) == {"x": 1}
    assert [p.name[:4] for p in isolated_cache.glob("*.pt")] == ["fit-"]
    monkeypatch.delenv(distributed.SEED_SHARE)
    again = train.fit(make_model(1), data, configs[1])  # read back by a plain run
    assert torch.equal(again.model[0].weight, results[1].model[0].weight)
    assert len(list(isolated_cache.glob("fit-*.pt"))) == 1
