"""The chapter runner: parameter checks happen before any execution."""

import subprocess
import sys
import textwrap
import time

import pandas as pd
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

    ```{code-cell} ipython3
    from subnets import claims

    claims.claims_table([claims.Claim("x", "yes", result, claims.Rule(">", 0.0),
                                      scope="method", note="arithmetic")],
                        glue_name="ch09_claims")
    ```
    ''')


@pytest.fixture
def chapter(tmp_path):
    path = tmp_path / "09_example.md"
    path.write_text(CHAPTER)
    return path


def test_reads_defaults_and_presets(chapter):
    defaults, presets = run.read_chapter(chapter)
    assert defaults == {"dataset": "fashion-mnist", "epochs": 3, "threshold": 0.05,
                        "target_class": 5, "sizes": [1, 2], "use_gpu": False}
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
    ({"dataset": "imagefolder:/no/such/folder"},
     "dataset: folder '/no/such/folder' does not exist"),
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
    proc = subprocess.run([sys.executable, "-m", "subnets.run", str(chapter),
                           "-p", "threshold", "-1", "-o", str(tmp_path / "out.ipynb")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: threshold: expected >= 0, got -1.0"
    assert not (tmp_path / "out.ipynb").exists()


def test_cli_executes_with_papermill(chapter, tmp_path):
    import nbformat

    out = tmp_path / "out.ipynb"
    proc = subprocess.run([sys.executable, "-m", "subnets.run", str(chapter), "--preset", "smoke",
                           "-p", "threshold", "0.5", "-o", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    nb = nbformat.read(out, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "epochs = 1" in injected[0].source and "threshold = 0.5" in injected[0].source


# --- every parameter of every chapter refuses bad values, before any work ---------------

CHAPTERS = sorted(run.NOTEBOOKS.glob("[0-9][0-9]_*.md"))
PARAMETERS = [(path, name, default) for path in CHAPTERS
              for name, default in run.read_chapter(path)[0].items()]


def wrong_type(default):
    if isinstance(default, bool):
        return "maybe"
    if isinstance(default, (int, float)):
        return "abc"
    if isinstance(default, str):
        return 7
    return [["a"]]  # a list, or None (image_size): a nested list is never a valid value


def out_of_range(path, name, default):
    """A value of the right type that the chapter must refuse; None for booleans."""
    choices = run.read_chapter_rules(path)[2]
    if name in choices:
        return ["no-such-choice"] if isinstance(default, list) else "no-such-choice"
    special = {"dataset": "imagenet-22k", "device": "tpu9", "precision": "fp16",
               "broden": "/no/such/folder",
               "pretrained_folder": "/no/such/folder"}
    if name in special:
        return special[name]
    if isinstance(default, bool):
        return None
    assert not isinstance(default, str), \
        f"{name}: a text parameter needs 'choices' in the front matter"
    if isinstance(default, list):
        assert not default or not isinstance(default[0], str), \
            f"{name}: a list of names needs 'choices' in the front matter"
        return [-1]
    return -1


def refused(path, name, value, seconds=10.0):
    start = time.perf_counter()
    with pytest.raises(run.ParameterError) as err:
        run.resolve(path, None, {name: value})
    assert time.perf_counter() - start < seconds
    message = str(err.value)
    assert "\n" not in message and name in message, message
    return message


@pytest.mark.parametrize("path, name, default", PARAMETERS,
                         ids=[f"{p.stem[:2]}-{n}" for p, n, _ in PARAMETERS])
def test_every_parameter_refuses_a_wrong_type_and_an_out_of_range_value(path, name, default):
    refused(path, name, wrong_type(default))
    bad = out_of_range(path, name, default)
    if bad is not None:
        refused(path, name, bad)


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem[:2] for p in CHAPTERS])
def test_every_chapter_refuses_an_unknown_name(path):
    refused(path, "no_such_parameter", 1)


def test_every_chapter_has_dataset_image_size_seeds_device_placebo_and_precision():
    for path in CHAPTERS:
        defaults = run.read_chapter(path)[0]
        assert {"dataset", "image_size", "seeds", "device", "placebo", "precision"} \
            <= set(defaults), path.name
        assert defaults["placebo"] is False and defaults["precision"] in ("auto", "fp32"), \
            path.name


def write_folder(root, corrupt=False):
    from PIL import Image

    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(root / cls / f"{i}.png")
    if corrupt:
        (root / "b" / "3.png").write_bytes(b"\x89PNG truncated")


@pytest.mark.parametrize("layout, message", [
    ("missing", "does not exist"),
    ("empty", "no class sub-folders holding images"),
    ("flat", "no class sub-folders holding images"),
    ("corrupt", "3.png: not a readable image"),
])
def test_every_chapter_names_a_bad_image_folder(tmp_path, layout, message):
    root = tmp_path / layout
    if layout == "empty":
        (root / "a").mkdir(parents=True)
    elif layout == "flat":
        write_folder(tmp_path / "x")
        root.mkdir()
        (tmp_path / "x" / "a" / "0.png").rename(root / "0.png")
    elif layout == "corrupt":
        write_folder(root, corrupt=True)
    for path in CHAPTERS:
        assert message in refused(path, "dataset", f"imagefolder:{root}")


def test_cli_refuses_an_unknown_device_with_exit_status_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "subnets.run", "04", "-p", "device", "tpu9",
                           "-o", str(tmp_path / "out.ipynb")], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: device: ")
    assert "tpu9" in proc.stderr and not (tmp_path / "out.ipynb").exists()


# --- recorded runs --------------------------------------------------------------------

def test_record_writes_the_provenance_first(chapter, tmp_path):
    import nbformat

    params = run.resolve(chapter, "smoke", {})
    out = run.record(chapter, "smoke", params, tmp_path / "rec.ipynb", progress=False)
    nb = nbformat.read(out, as_version=4)
    assert nb.cells[0].metadata["tags"] == ["provenance"]
    info = nb.metadata["subnets"]["provenance"]
    assert info["parameters"] == {**run.read_chapter(chapter)[0], "epochs": 1}
    assert info["commit"] == run._git("rev-parse", "HEAD") and info["wall_seconds"] > 0
    assert "cores" in info["hardware"] or "CUDA" in info["hardware"]
    assert info["cached_results"] == 0  # each test has its own empty cache
    for field in ("hardware", "commit", "wall time", "cache at start", "`epochs=1`"):
        assert field in nb.cells[0].source


def test_a_record_is_read_back_claim_by_claim(chapter, tmp_path, monkeypatch):
    monkeypatch.setattr(run, "RECORDS", tmp_path)
    assert run.recorded_claims("09_example") is None
    run.record(chapter, "smoke", run.resolve(chapter, "smoke", {}), progress=False)
    assert [p.name for p in tmp_path.glob("*.ipynb")] == ["09_example.ipynb"]  # no partial
    record = run.recorded_claims("09_example")
    assert record.claims[["claim", "this book", "verdict"]].values.tolist() == [
        ["x", "0.050", "held"]]
    assert "'smoke' preset" in record.summary and record.provenance["commit"][:10] in \
        record.summary


def test_cli_record_needs_a_preset(capsys):
    assert run.main(["04", "--record"]) == 2
    assert capsys.readouterr().err.startswith("error: preset: --record records a preset")


RECORDS = sorted(run.RECORDS.glob("*.ipynb"))


@pytest.mark.parametrize("record", RECORDS, ids=[p.stem for p in RECORDS])
def test_every_record_ran_its_preset_at_an_ancestor_commit(record, tmp_path):
    import warnings

    import nbformat

    nb = nbformat.read(record, as_version=4)
    assert nb.cells[0].metadata.get("tags") == ["provenance"], "provenance is not the first cell"
    info = nb.metadata["subnets"]["provenance"]
    path = run.NOTEBOOKS / f"{info['chapter']}.md"
    # The record ran its preset as the chapter had it at the record's commit; a chapter
    # changed since makes the record stale (warned below, and said in the book), not false.
    relative = path.relative_to(run.data.REPO_ROOT).as_posix()
    then = tmp_path / path.name
    then.write_text(subprocess.run(["git", "show", f"{info['commit']}:{relative}"],
                                   cwd=run.data.REPO_ROOT, capture_output=True, text=True,
                                   check=True).stdout)
    defaults, presets = run.read_chapter(then)
    assert info["parameters"] == {**defaults, **presets[info["preset"]]}
    ancestor = subprocess.run(["git", "merge-base", "--is-ancestor", info["commit"], "HEAD"],
                              cwd=run.data.REPO_ROOT, check=False)
    assert ancestor.returncode == 0, f"{record.name}: {info['commit']} is not an ancestor of HEAD"
    assert record.stat().st_size < 5 * 2**20
    assert f"at-scale/{record.stem}" in (run.data.REPO_ROOT / "_toc.yml").read_text()
    for line in run.stale_records():
        if line.startswith(record.name):
            warnings.warn(f"stale record: {line}", stacklevel=1)


def test_kernels_get_unix_sockets_of_their_own():
    a, b = run.IPCKernelManager(), run.IPCKernelManager()
    assert a.transport == b.transport == "ipc" and a.ip != b.ip


def test_a_record_goes_stale_with_the_chapters_code_not_its_prose():
    code = run.chapter_code(CHAPTER)
    assert run.chapter_code(CHAPTER.replace("# A chapter", "# A chapter, retold")) == code
    assert run.chapter_code(CHAPTER.replace("epochs = 3", "epochs = 4")) != code
    assert run.chapter_code(CHAPTER.replace("smoke: {epochs: 1}", "smoke: {epochs: 2}")) != code


def test_a_stale_records_summary_says_it_is_out_of_date():
    info = {"preset": "large", "hardware": "a CPU", "commit": "0123456789abc",
            "wall_seconds": 600, "finished": "today"}
    assert "Out of date" not in run.Record(pd.DataFrame(), info).summary
    stale = run.Record(pd.DataFrame(), info, "lib/subnets changed since 0123456789").summary
    assert "Out of date (lib/subnets changed since 0123456789)" in stale


def test_parameter_table_reads_each_line_comment_and_the_paper_preset(tmp_path):
    chapter = tmp_path / "09_demo.md"
    chapter.write_text("""---
subnets:
  presets:
    paper:
      epochs: 200
---

```{code-cell} ipython3
:tags: [parameters]

epochs = 3  # training epochs (the paper: 200)
lr = 0.1
```
""")
    table = run.parameter_table(str(chapter))
    assert table.to_dict("index") == {
        "epochs": {"default": "3", "meaning": "training epochs (the paper: 200)",
                   "paper": "200"},
        "lr": {"default": "0.1", "meaning": "", "paper": ""}}
    assert "this run" not in run.parameter_table(str(chapter), {"epochs": 3, "lr": 0.1})
    assert run.parameter_table(str(chapter), {"epochs": 5})["this run"].tolist() == ["5", "0.1"]
