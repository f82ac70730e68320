"""Every chapter runs end to end with its ``smoke`` preset (tiny parameters), on
Fashion-MNIST and on a folder of RGB photos; every preset passes the runner's checks;
the networks of every ``paper`` preset are built and take a training step on the CPU."""

import nbformat
import pytest

from subnets import parameters, records, run

CHAPTERS = sorted(parameters.NOTEBOOKS.glob("[0-9][0-9]_*.md"))


@pytest.fixture(scope="session")
def rgb_folder(tmp_path_factory):
    """A class-per-folder set of RGB photos of an odd size: Fashion-MNIST test images,
    tinted by class and padded to 36 x 40, 24 per class."""
    import numpy as np
    from PIL import Image

    from subnets import data

    root = tmp_path_factory.mktemp("rgb")
    test = data.load("fashion-mnist", "test")
    for c, name in enumerate(test.classes):
        folder = root / name.replace("/", "-")
        folder.mkdir()
        tint = np.array([1.0, 0.5 + 0.05 * c, 1.0 - 0.08 * c])
        for i in (test.labels == c).nonzero().flatten()[:24].tolist():
            grey = np.pad(test.images[i, 0].numpy(), ((4, 4), (6, 6))).astype(float)
            rgb = (grey[..., None] * tint).clip(0, 255).astype(np.uint8)
            Image.fromarray(rgb).save(folder / f"{i}.png")
    return root


def executed(path, params, tmp_path):
    out = run.execute(path, params, tmp_path / f"{path.stem}.ipynb", progress=False)
    return nbformat.read(out, as_version=4)


@pytest.mark.smoke
@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_runs_on_an_rgb_image_folder(path, tmp_path, rgb_folder):
    params = parameters.resolve(path, "smoke", {"dataset": f"imagefolder:{rgb_folder}",
                                         "image_size": 32})
    nb = executed(path, params, tmp_path)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]


@pytest.mark.smoke
@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_runs_with_smoke_preset(path, tmp_path):
    nb = executed(path, parameters.resolve(path, "smoke", {}), tmp_path)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    # The strict book build fails on any stderr output (warnings included).
    assert not [o.text for o in outputs if o.get("name") == "stderr"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the chapter drew no figure"
    headings = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert any(line.startswith("## Paper vs this book") for h in headings
               for line in h.splitlines())
    rows = records.claims_rows(nb, path.stem)
    assert rows.scope.str.startswith("trained").sum() >= 3, "fewer than three claims about training"


@pytest.mark.smoke
@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_a_placebo_run_holds_no_claim_about_training(path, tmp_path):
    nb = executed(path, parameters.resolve(path, "smoke", {"placebo": True}), tmp_path)
    rows = records.claims_rows(nb, path.stem)
    trained = rows[rows.scope.str.startswith("trained")]
    assert len(trained) >= 3
    assert not (trained.verdict == "held").any(), trained[trained.verdict == "held"].claim


def test_every_chapter_has_smoke_large_and_paper_presets(cifar10_root, tmp_path, monkeypatch):
    """Every preset passes the runner's checks, and every preset's data loads, with the
    papers' datasets stood in by small fixtures where a reader puts them: in the data
    folder ($SUBNETS_DATA), while the run's own folder is elsewhere (the runner executes
    in notebooks/)."""
    import json
    import shutil

    from PIL import Image

    from subnets import data, weights

    assert CHAPTERS, "no chapters found"
    monkeypatch.setenv("SUBNETS_DATA", str(cifar10_root))
    # Checkpoints are a reader's files, refused by name when missing or not theirs (their
    # hash is checked in test_weights); here every named checkpoint stands in as present.
    monkeypatch.setattr(weights, "weights_file", lambda spec, *_args, **_kwargs: spec)
    monkeypatch.chdir(tmp_path)
    for path in CHAPTERS:
        _defaults, presets = parameters.read_chapter(path)
        assert {"smoke", "large", "paper"} <= set(presets), path.name
        for preset in presets:
            params = presets[preset]
            folder = str(params.get("dataset", "")).partition(":")[2]
            if params.get("broden"):
                (cifar10_root / params["broden"]).mkdir(parents=True, exist_ok=True)
            if params.get("reference_sets"):  # another's influential sets: one per class
                sets = cifar10_root / params["reference_sets"]
                sets.parent.mkdir(parents=True, exist_ok=True)
                sets.write_text(json.dumps({c: [c] for c in range(10)}))
            if params.get("photos"):  # ImageNet photos: class folders named by WordNet ID
                photos = cifar10_root / params["photos"].partition(":")[2]
                for wnid in ("n01440764", "n01443537"):
                    (photos / wnid).mkdir(parents=True, exist_ok=True)
                    Image.new("RGB", (8, 8)).save(photos / wnid / "0.png")
            if str(params.get("dataset", "")).startswith("cifar10:"):  # the pickles' layout
                shutil.copytree(cifar10_root / "cifar-10-batches-py",
                                cifar10_root / folder / "cifar-10-batches-py", dirs_exist_ok=True)
                folder = ""
            for c in range(10 if folder else 0):  # ten classes of four tiny images
                (cifar10_root / folder / f"class{c}").mkdir(parents=True, exist_ok=True)
                for i in range(4):
                    Image.new("RGB", (8, 8), (i, c, 0)).save(
                        cifar10_root / folder / f"class{c}" / f"{i}.png")
            resolved = parameters.resolve(path, preset, {})  # real parameters with valid values
            if "dataset" in params:
                for split in ("train", "test"):
                    loaded = data.load(resolved["dataset"], split, resolved.get("image_size"))
                    assert len(loaded) > 0, f"{path.name} {preset}: no {split} images"


def _paper_networks(chapter: str, p: dict) -> tuple[list, dict, int]:
    """The networks that ``chapter`` trains under its ``paper`` preset ``p``, the
    TrainConfig fields it trains them with and their input side, as the chapter builds
    them (RGB inputs: the papers' datasets are colour photos)."""
    from subnets.models.imagenet import scaled_network

    if chapter == "01":
        from subnets import class_subnetworks

        shape = (3, p["image_size"], p["image_size"])
        config = class_subnetworks.f_config(1, 2, p["lr"], p["precision"], p["seed"])
        nets = [class_subnetworks.new_f(shape, 10, p["seed"])]
        return nets, {"lr": config.lr, "schedule": config.schedule}, p["image_size"]
    if chapter == "02":
        assert p["network_scale"] == "full"
        return ([scaled_network(n, p["network_scale"], 3, 10) for n in p["networks"]],
                {"lr": p["lr"]}, p["image_size"])
    if chapter == "03":  # the chapter's own construction and training recipe
        from dataclasses import asdict

        from subnets.models import rfpool

        nets = rfpool.variant_networks(p["architectures"], p["rf_levels"], 1, 3, 10, p["width"])
        config = asdict(rfpool.train_config(p, 0))
        return list(nets.values()), {k: v for k, v in config.items()
                                     if k not in ("epochs", "batch_size")}, 32
    if chapter == "04":
        from subnets.decomposition import seeded_resnet

        nets = [seeded_resnet(d, p["seed"], 3, 10, p["shortcut"])
                for d in sorted({p["depth"], *p["depths"]})]
        return nets, {"lr": p["lr"], "optimizer": p["optimizer"], "schedule": "cosine",
                      "weight_decay": p["weight_decay"], "augment": p["augment"]}, 32
    if chapter == "05":
        from subnets.resampling_study import vgg_layout

        nets = [vgg_layout(p["block_widths"], p["block_depths"], 3, p["batch_norm"], p["seed"])]
        return nets, {"lr": p["lr"]}, p["image_size"]
    raise AssertionError(f"chapter {chapter}: no paper networks listed in this test")


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_paper_presets_networks_take_a_training_step_on_the_cpu(path):
    """The paper presets are meant for a GPU and the papers' data; on a CPU, their
    networks are built at the paper's size and take one optimiser step on two images."""
    import torch

    from subnets import data, train

    defaults, presets = parameters.read_chapter(path)
    params = {**defaults, **presets["paper"]}
    nets, fields, side = _paper_networks(path.stem[:2], params)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, side, side), dtype=torch.uint8, generator=generator)
    tiny = data.ImageSet(images, torch.tensor([0, 1]), [str(c) for c in range(10)], "tiny")
    config = train.TrainConfig(epochs=1, batch_size=2, **fields)
    for net in nets:
        before = [q.detach().clone() for q in net.parameters()]
        trained = train.fit(net, tiny, config, cached=False)
        assert torch.isfinite(torch.tensor(trained.history["loss"].to_numpy())).all()
        changed = [not torch.equal(a, b) for a, b in zip(before, trained.model.parameters())]
        assert any(changed), f"{type(net).__name__}: one step changed no weight"
