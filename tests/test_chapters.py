"""Every chapter runs end to end with its ``smoke`` preset (tiny parameters)."""

import nbformat
import pytest

from subnets import run

CHAPTERS = sorted(run.NOTEBOOKS.glob("[0-9][0-9]_*.md"))


@pytest.mark.smoke
@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_runs_with_smoke_preset(path, tmp_path):
    params = run.resolve(path, "smoke", {})
    out = run.execute(path, params, tmp_path / f"{path.stem}.ipynb", progress=False)
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the chapter drew no figure"
    headings = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert any(h.lstrip().startswith("## Paper vs this book") for h in headings)


def test_every_chapter_has_smoke_and_paper_presets(tmp_path, monkeypatch):
    assert CHAPTERS, "no chapters found"
    # The paper presets name the papers' own datasets, which this machine lacks: stand
    # empty folders in for them so that every other name, type and range is still checked.
    monkeypatch.chdir(tmp_path)
    for path in CHAPTERS:
        defaults, presets = run.read_chapter(path)
        assert {"smoke", "paper"} <= set(presets), path.name
        for preset in presets:
            folder = str(presets[preset].get("dataset", "")).partition(":")[2]
            if folder:
                (tmp_path / folder).mkdir(parents=True, exist_ok=True)
            run.resolve(path, preset, {})  # presets name real parameters with valid values
