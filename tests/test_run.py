"""The chapter runner: parameter checks happen before any execution."""

import subprocess
import sys
import textwrap

import pytest

from subnets import run

CHAPTER = textwrap.dedent('''\
    ---
    jupytext:
      text_representation: {extension: .md, format_name: myst, format_version: 0.13}
    kernelspec: {display_name: Python 3, language: python, name: python3}
    subnets:
      presets:
        smoke: {epochs: 1}
        paper: {epochs: 30, threshold: 0.05}
    ---
    # A chapter

    ```{code-cell} ipython3
    :tags: [parameters]

    dataset = "fashion-mnist"  # which data
    epochs = 3
    threshold = 0.05
    target_class = 5
    sizes = [1, 2]
    use_gpu = False
    ```

    ```{code-cell} ipython3
    result = epochs * threshold
    ```
    ''')


@pytest.fixture
def chapter(tmp_path):
    path = tmp_path / "09_example.md"
    path.write_text(CHAPTER)
    return path


def test_reads_defaults_and_presets(chapter):
    defaults, presets = run.read_chapter(chapter)
    assert defaults == {"dataset": "fashion-mnist", "epochs": 3, "threshold": 0.05, "target_class": 5,
                        "sizes": [1, 2], "use_gpu": False}
    assert presets["paper"] == {"epochs": 30, "threshold": 0.05}


def test_resolve_merges_preset_then_overrides_and_coerces(chapter):
    params = run.resolve(chapter, "paper", {"threshold": 1, "sizes": [3]})
    assert params == {"epochs": 30, "threshold": 1.0, "sizes": [3]}
    assert isinstance(params["threshold"], float)


@pytest.mark.parametrize("overrides, message", [
    ({"epoch": 3}, "epoch: not a parameter"),
    ({"epochs": "three"}, "epochs: expected int"),
    ({"epochs": 2.5}, "epochs: expected int"),
    ({"use_gpu": 1}, "use_gpu: expected bool"),
    ({"threshold": -0.1}, "threshold: expected >= 0"),
    ({"epochs": -1}, "epochs: expected >= 0"),
    ({"target_class": 10}, "target_class: expected a class index in 0..9"),
    ({"dataset": "mnist"}, "dataset: unknown dataset 'mnist'"),
    ({"dataset": "imagefolder:/no/such/folder"}, "dataset: folder '/no/such/folder' does not exist"),
])
def test_bad_parameters_are_named(chapter, overrides, message):
    with pytest.raises(run.ParameterError, match=message):
        run.resolve(chapter, None, overrides)


def test_unknown_preset_and_chapter(chapter):
    with pytest.raises(run.ParameterError, match="presets"):
        run.resolve(chapter, "huge", {})
    with pytest.raises(run.ParameterError, match="chapters are"):
        run.chapter_path("99")


def test_parse_value():
    assert run.parse_value("0.1") == 0.1 and run.parse_value("[1, 2]") == [1, 2]
    assert run.parse_value("true") is True and run.parse_value("fashion-mnist") == "fashion-mnist"


def test_cli_fails_fast_with_one_line(chapter, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "subnets.run", str(chapter), "-p", "threshold", "-1",
                           "-o", str(tmp_path / "out.ipynb")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: threshold: expected >= 0, got -1.0"
    assert not (tmp_path / "out.ipynb").exists()


def test_cli_executes_with_papermill(chapter, tmp_path):
    import nbformat

    out = tmp_path / "out.ipynb"
    proc = subprocess.run([sys.executable, "-m", "subnets.run", str(chapter), "--preset", "smoke",
                           "-p", "threshold", "0.5", "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    nb = nbformat.read(out, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "epochs = 1" in injected[0].source and "threshold = 0.5" in injected[0].source
