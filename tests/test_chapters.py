"""Every chapter runs end to end with its ``smoke`` preset (tiny parameters), on
Fashion-MNIST and on a folder of RGB photos; every preset passes the runner's checks."""

import nbformat
import pytest

from subnets import run

CHAPTERS = sorted(run.NOTEBOOKS.glob("[0-9][0-9]_*.md"))


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
    params = run.resolve(path, "smoke", {"dataset": f"imagefolder:{rgb_folder}",
                                         "image_size": 32})
    nb = executed(path, params, tmp_path)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]


@pytest.mark.smoke
@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_runs_with_smoke_preset(path, tmp_path):
    nb = executed(path, run.resolve(path, "smoke", {}), tmp_path)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    # The strict book build fails on any stderr output (warnings included).
    assert not [o.text for o in outputs if o.get("name") == "stderr"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the chapter drew no figure"
    headings = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert any(line.startswith("## Paper vs this book") for h in headings
               for line in h.splitlines())


def test_every_chapter_has_smoke_large_and_paper_presets(cifar10_root, monkeypatch):
    assert CHAPTERS, "no chapters found"
    # The paper presets name the papers' own datasets, which this machine lacks: stand
    # in a ten-class folder of one tiny image each, so that every other name, type and
    # range (class indices included) is still checked.
    from PIL import Image

    tmp_path = cifar10_root
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUBNETS_DATA", str(tmp_path))
    for path in CHAPTERS:
        _defaults, presets = run.read_chapter(path)
        assert {"smoke", "large", "paper"} <= set(presets), path.name
        for preset in presets:
            folder = str(presets[preset].get("dataset", "")).partition(":")[2]
            for name in ("broden", "pretrained_folder"):
                if presets[preset].get(name):
                    (tmp_path / presets[preset][name]).mkdir(parents=True, exist_ok=True)
            for c in range(10 if folder else 0):
                (tmp_path / folder / f"class{c}").mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8)).save(tmp_path / folder / f"class{c}" / "0.png")
            run.resolve(path, preset, {})  # presets name real parameters with valid values
