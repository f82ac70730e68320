"""Recorded runs: read back claim by claim, tied to an ancestor commit, stale when the
chapter's code or the library changed."""

import json
import subprocess

import pandas as pd
import pytest

from conftest import EXAMPLE_CHAPTER
from subnets import parameters, records, run


def test_a_record_is_read_back_claim_by_claim(chapter, tmp_path, monkeypatch):
    monkeypatch.setattr(records, "RECORDS", tmp_path)
    assert records.recorded_claims("09_example") is None
    run.record(chapter, "large", parameters.resolve(chapter, "large", {}), progress=False)
    run.record(chapter, "smoke", parameters.resolve(chapter, "smoke", {}), progress=False)
    # The large preset is the chapter's record; another is named by its preset. No partial.
    assert sorted(p.name for p in tmp_path.glob("*.ipynb")) == ["09_example.ipynb",
                                                                "09_example_smoke.ipynb"]
    record = records.recorded_claims("09_example")
    assert record.claims[["claim", "this book", "verdict"]].values.tolist() == [
        ["x", "0.050", "held"]]
    assert "'large' preset" in record.summary and record.provenance["commit"][:10] in \
        record.summary


RECORDS = sorted(records.RECORDS.glob("*.ipynb"))


@pytest.mark.parametrize("record", RECORDS, ids=[p.stem for p in RECORDS])
def test_every_record_ran_its_preset_at_an_ancestor_commit(record, tmp_path):
    import warnings

    import nbformat

    nb = nbformat.read(record, as_version=4)
    assert nb.cells[0].metadata.get("tags") == ["provenance"], "provenance is not the first cell"
    info = nb.metadata["subnets"]["provenance"]
    path = parameters.NOTEBOOKS / f"{info['chapter']}.md"
    # The record ran its preset as the chapter had it at the record's commit; a chapter
    # changed since makes the record stale (warned below, and said in the book), not false.
    relative = path.relative_to(records.data.REPO_ROOT).as_posix()
    then = tmp_path / path.name
    then.write_text(subprocess.run(["git", "show", f"{info['commit']}:{relative}"],
                                   cwd=records.data.REPO_ROOT, capture_output=True, text=True,
                                   check=True).stdout)
    defaults, presets = parameters.read_chapter(then)
    # The notebook's metadata is JSON: a dict parameter's keys come back as strings.
    ran = json.loads(json.dumps({**defaults, **presets[info["preset"]]}))
    assert info["parameters"] == ran
    ancestor = subprocess.run(["git", "merge-base", "--is-ancestor", info["commit"], "HEAD"],
                              cwd=records.data.REPO_ROOT, check=False)
    assert ancestor.returncode == 0, f"{record.name}: {info['commit']} is not an ancestor of HEAD"
    assert record.stat().st_size < 5 * 2**20
    assert f"at-scale/{record.stem}" in (records.data.REPO_ROOT / "_toc.yml").read_text()
    for line in records.stale_records():
        if line.startswith(record.name):
            warnings.warn(f"stale record: {line}", stacklevel=1)


def test_a_record_goes_stale_with_the_chapters_code_not_its_prose():
    def code(old, new):
        return records.chapter_code(EXAMPLE_CHAPTER.replace(old, new))

    same = records.chapter_code(EXAMPLE_CHAPTER)
    assert code("# A chapter", "# A chapter, retold") == same
    assert code("epochs = 3", "epochs = 4") != same
    assert code("smoke: {epochs: 1}", "smoke: {epochs: 2}") != same


def test_a_stale_records_summary_says_it_is_out_of_date():
    info = {"preset": "large", "hardware": "a CPU", "commit": "0123456789abc",
            "wall_seconds": 600, "finished": "today"}
    assert "Out of date" not in records.Record(pd.DataFrame(), info).summary
    stale = records.Record(pd.DataFrame(), info, "lib/subnets changed since 0123456789").summary
    assert "Out of date (lib/subnets changed since 0123456789)" in stale


def test_inputs_name_every_file_a_run_reads_with_its_sha256_and_source(cifar10_root, tmp_path):
    import hashlib

    import torch

    from subnets.weights import sha256_of

    folder = cifar10_root / "cifar-10-batches-py"
    (cifar10_root / "SOURCE").write_text("a test's own pickles\nsecond line\n")
    checkpoint = tmp_path / "elsewhere" / "without" / "net.th"  # no SOURCE near it
    checkpoint.parent.mkdir(parents=True)
    torch.save({"w": torch.zeros(1)}, checkpoint)
    sets = tmp_path / "sets.json"
    sets.write_text("{}")
    found = records.inputs({"dataset": f"cifar10:{folder}", "weights": {20: str(checkpoint)},
                            "seeds": 1, "reference_sets": str(sets)})
    dataset, weights, reference = found
    assert reference["files"] == 1 and reference["sha256"] == sha256_of(sets)
    assert dataset["files"] == 7 and dataset["source"] == "a test's own pickles"
    lines = sorted(f"{sha256_of(p)}  {p.name}\n" for p in folder.iterdir())
    assert dataset["sha256"] == hashlib.sha256("".join(lines).encode()).hexdigest()
    assert weights == {"parameter": "weights[20]", "spec": str(checkpoint), "files": 1,
                       "sha256": sha256_of(checkpoint), "source": ""}
    cell = records.provenance_cell({
        "chapter": "04_x", "preset": "paper", "hardware": "a CPU", "torch": "2",
        "torchvision": "0", "commit": "abc", "dirty": False, "wall_seconds": 60,
        "cached_results": 0, "finished": "now", "parameters": {}, "inputs": found})
    assert f"SHA-256 `{weights['sha256']}`" in cell.source and "from a test's own" in cell.source


def test_inputs_name_the_photos_a_run_reads(tmp_path):
    from PIL import Image

    (tmp_path / "n01440764").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "n01440764" / "0.png")
    (tmp_path / "SOURCE").write_text("one photo\n")
    found = records.inputs({"dataset": "fashion-mnist", "photos": f"imagefolder:{tmp_path}"})
    assert [i["parameter"] for i in found] == ["dataset", "photos"]
    assert found[1]["files"] == 1 and found[1]["source"] == "one photo"
    assert [i["parameter"] for i in records.inputs({"dataset": "fashion-mnist",
                                                     "photos": ""})] == ["dataset"]


def test_files_a_debian_package_installed_are_sourced_to_it(tmp_path):
    (tmp_path / "own.bin").write_bytes(b"x")  # no SOURCE file, no package
    source = records.inputs({"dataset": "fashion-mnist"})[0]["source"]
    debian = str(records.data.dataset_files("fashion-mnist")[0]).startswith("/usr/share/")
    assert source.startswith("Debian package dataset-fashion-mnist 0.0") if debian \
        else source == ""
    assert records._source([tmp_path / "own.bin"]) == ""
