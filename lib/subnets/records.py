"""Recorded runs, the book's "At a larger scale" part: each is an executed chapter saved in
``book/at-scale/`` with its provenance (hardware, versions, commit, parameters) as its
first cell. ``subnets.run``'s ``record`` writes them; this module reads them back (their
"Paper vs this book" rows, for a chapter's scale comparison and the Scorecard) and says
which went stale with the chapter's code or the library.
"""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import data, devices
from .parameters import NOTEBOOKS, read_chapter

__all__ = ["RECORDS", "RECORDING", "provenance", "inputs", "provenance_cell", "Record",
           "recorded_claims", "claims_rows", "chapter_code", "stale_records"]

RECORDS = data.REPO_ROOT / "book" / "at-scale"
# The record being written (its name), for the kernel: set by ``record`` while it runs.
RECORDING = "SUBNETS_RECORDING"


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=data.REPO_ROOT, capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def _hardware(device_spec: str = "auto") -> str:
    """The GPU's name when the run uses CUDA, else the CPU model and its core count."""
    import os
    import platform

    import torch

    dev = devices.device(device_spec)
    if devices.is_cuda(dev):
        return f"{torch.cuda.get_device_name(dev)} (CUDA {torch.version.cuda})"
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    return f"{model}, {os.cpu_count()} cores"


def provenance(path: Path, preset: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """What a recorded run runs on, taken before it starts: hardware, versions, the
    commit (and whether the work tree differed from it), full parameters and how many
    results the cache already held (0: everything is computed by this run). ``record``
    adds the wall time when the run ends.

    Args:
        path: the MyST notebook.
        preset: the preset recorded.
        params: the parameters that differ from the defaults.

    Returns:
        A JSON-able dict: chapter, preset, parameters, commit, dirty, hardware, torch,
        torchvision, python, cached_results, inputs (``inputs``).

    Example:
        ``provenance(path, "large", resolve(path, "large", {}))`` with ``path =
        chapter_path("01")``: what ``record`` takes before it runs chapter 1 at its large
        preset (its "parameters" hold every parameter, the preset's values included).
    """
    import platform

    import torch
    import torchvision

    from .cache import cache_dir

    defaults, _ = read_chapter(path)
    full = {**defaults, **params}
    return {"chapter": path.stem, "preset": preset, "parameters": full,
            "commit": _git("rev-parse", "HEAD"), "dirty": bool(_git("status", "--porcelain")),
            "hardware": _hardware(str(full.get("device", "auto"))),
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(),
            "cached_results": len(list(cache_dir().glob("*.pt"))), "inputs": inputs(full)}


# Parameters that name a file or a folder of files a run reads (besides data sets, weights).
_PATHS = ("broden", "reference_sets")


def inputs(params: dict[str, Any]) -> list[dict[str, Any]]:
    """The data and weights files a run with ``params`` reads, each parameter's files
    described by their count, one SHA-256 (a file's own; for several, that of the lines
    "<SHA-256>  <name relative to their folder>" in name order, as ``sha256sum`` prints
    them) and their source: the first line of a ``SOURCE`` file beside them or one folder
    up (say where they came from there: repository and commit, or URL), else "".

    Args:
        params: a chapter's full parameters.

    Returns:
        One dict per file-naming parameter: parameter, spec, files, sha256, source.

    Example:
        >>> [(i["parameter"], i["files"]) for i in inputs({"dataset": "fashion-mnist"})]
        [('dataset', 4)]
    """
    from .weights import weights_file

    named: list[tuple[str, str, list[Path]]] = []
    for name in ("dataset", "photos"):  # data sets as ``data.load`` names them
        if params.get(name):
            named.append((name, params[name], data.dataset_files(params[name])))
    weights = params.get("weights") or {}
    for key, spec in (weights.items() if isinstance(weights, dict) else [("", weights)]):
        name = f"weights[{key}]" if key != "" else "weights"
        named.append((name, spec, [weights_file(spec, parameter=name)]))
    for name in _PATHS:
        if params.get(name):
            path = data.data_path(params[name])
            files = [path] if path.is_file() else sorted(p for p in path.rglob("*")
                                                         if p.is_file())
            named.append((name, params[name], files))
    return [{"parameter": name, "spec": spec, "files": len(files), "sha256": _digest(files),
             "source": _source(files)} for name, spec, files in named]


def _digest(files: list[Path]) -> str:
    from .weights import sha256_of

    if len(files) == 1:
        return sha256_of(files[0])
    root = Path(os.path.commonpath([f.parent for f in files])) if files else Path()
    lines = sorted(f"{sha256_of(f)}  {f.relative_to(root).as_posix()}\n" for f in files)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _source(files: list[Path]) -> str:
    """The first line of a ``SOURCE`` file in the files' folder or the one above it (an
    unpacked archive's own folder); else the Debian package that installed them."""
    if not files:
        return ""
    folder = Path(os.path.commonpath([f.parent for f in files]))
    for candidate in (folder, folder.parent):
        note = candidate / "SOURCE"
        if note.is_file():
            return (note.read_text().strip().splitlines() or [""])[0]
    return _debian_package(files[0])


def _debian_package(file: Path) -> str:
    """"Debian package <name> <version>" where dpkg installed ``file``, else ""."""
    try:
        owner = subprocess.run(["dpkg", "-S", str(file)], capture_output=True, text=True,
                               check=True).stdout.split(":")[0]
        version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", owner],
                                 capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):  # no dpkg, or not a package's file
        return ""
    return f"Debian package {owner} {version}"


def provenance_cell(record: dict[str, Any]):
    """The first cell of a recorded notebook: its provenance as a table (``record`` also
    keeps it, as data, in the notebook's metadata).

    Args:
        record: ``provenance``'s dict with ``wall_seconds`` and ``finished`` added.

    Returns:
        A markdown cell tagged ``provenance``.

    Example:
        >>> info = {"chapter": "01_x", "preset": "large", "hardware": "a CPU",
        ...         "torch": "2", "torchvision": "0", "commit": "abc", "dirty": False,
        ...         "wall_seconds": 60, "cached_results": 0, "finished": "now",
        ...         "parameters": {"seeds": 3}}
        >>> provenance_cell(info).metadata["tags"]
        ['provenance']
    """
    import nbformat

    rows = [("chapter", record["chapter"]), ("preset", record["preset"] or "—"),
            ("hardware", record["hardware"]),
            ("torch / torchvision", f"{record['torch']} / {record['torchvision']}"),
            ("commit", record["commit"] + (" (uncommitted changes)" if record["dirty"] else "")),
            ("wall time", f"{record['wall_seconds'] / 60:.1f} min"),
            ("cache at start", "empty: every result computed in this run"
             if not record["cached_results"] else
             f"{record['cached_results']} results of earlier runs, reused where they match"),
            ("finished", record["finished"]),
            *[(f"input `{i['parameter']}`", f"`{i['spec']}`: {i['files']} file(s), SHA-256 "
               f"`{i['sha256']}`" + (f"; from {i['source']}" if i["source"] else ""))
              for i in record.get("inputs", [])],
            ("parameters", ", ".join(f"`{k}={v!r}`" for k, v in record["parameters"].items()))]
    table = "\n".join(["| run | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])
    return nbformat.v4.new_markdown_cell(
        f"**Recorded run, written by `subnets.run`** (not re-executed by the book build)\n\n"
        f"{table}", metadata={"tags": ["provenance"]})


@dataclass(frozen=True)
class Record:
    """A recorded run's "Paper vs this book" rows and its provenance.

    Args:
        claims: the rows, as ``claim_tables.claims_frame`` makes them.
        provenance: what ``provenance`` took, with wall_seconds and finished.
        stale: why the record no longer matches its chapter ("": it does).

    Example:
        >>> info = {"preset": "large", "hardware": "a CPU", "commit": "0123456789abcdef",
        ...         "wall_seconds": 600, "finished": "2026-01-01 00:00 UTC"}
        >>> Record(pd.DataFrame(), info).summary[:47]
        "Larger scale: the 'large' preset recorded on a "
    """

    claims: pd.DataFrame
    provenance: dict[str, Any]
    stale: str = ""

    @property
    def summary(self) -> str:
        """One line: the preset, hardware, commit, wall time and end of the recorded run,
        and why it is out of date if it is."""
        p = self.provenance
        text = (f"Larger scale: the {p['preset']!r} preset recorded on {p['hardware']} at "
                f"commit {p['commit'][:10]}, {p['wall_seconds'] / 60:.0f} min, "
                f"finished {p['finished']}.")
        if self.stale:
            text += (f" Out of date ({self.stale}): its rows were judged by the chapter's "
                     "code and preset of that commit, not this build's.")
        return text


def recorded_claims(chapter: str) -> Record | None:
    """The "Paper vs this book" rows of ``chapter``'s recorded run (its glued
    ``chNN_claims_rows``) with the record's provenance; None when it has no record, or
    while this run is the one that records it.

    Args:
        chapter: the chapter's file stem (``01_class_subnetworks``).

    Returns:
        The ``Record``, or None.

    Raises:
        ValueError: for a record without glued rows or provenance.

    Example:
        >>> recorded_claims("00_no_such_chapter") is None
        True
    """
    import os

    import nbformat

    path = RECORDS / f"{chapter}.ipynb"
    if not path.is_file() or os.environ.get(RECORDING) == chapter:
        return None
    nb = nbformat.read(path, as_version=4)
    rows = claims_rows(nb, chapter)
    info = nb.metadata.get("subnets", {}).get("provenance")
    if rows is None or info is None:
        raise ValueError(f"{path}: no glued claims rows or no provenance; re-record it with "
                         f"`python -m subnets.run {chapter[:2]} --preset <preset> --record`")
    stale = [line.split(": ", 1)[1] for line in stale_records()
             if line.startswith(path.name + ":")]
    return Record(rows, info, stale[0] if stale else "")


def claims_rows(nb, chapter: str) -> pd.DataFrame | None:
    """The "Paper vs this book" rows that an executed notebook of ``chapter`` glued
    (``chNN_claims_rows``, see ``claim_tables.claims_table``).

    Args:
        nb: the executed notebook (nbformat).
        chapter: the chapter's file stem or number.

    Returns:
        The rows, or None if it glued none.

    Example:
        >>> import nbformat
        >>> claims_rows(nbformat.v4.new_notebook(), "01") is None
        True
    """
    import json

    name = f"ch{chapter[:2]}_claims_rows"
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("metadata", {}).get("scrapbook", {}).get("name") == name:
                text = next(v for k, v in output["data"].items() if k.endswith("text/plain"))
                return pd.DataFrame(json.loads(ast.literal_eval(text)))
    return None


def chapter_code(text: str) -> tuple[list[str], dict]:
    """What a chapter runs: the sources of its code cells and its presets and choices
    (front matter ``subnets:``), read from its MyST text; its prose is left out.

    Args:
        text: the chapter's MyST markdown.

    Returns:
        (code cell sources, the front matter's ``subnets`` entry).

    Example:
        >>> from subnets.parameters import chapter_path
        >>> code, meta = chapter_code(chapter_path("01").read_text())
        >>> sorted(meta)
        ['choices', 'presets']
    """
    import jupytext

    notebook = jupytext.reads(text, fmt="md:myst")
    return ([cell.source for cell in notebook.cells if cell.cell_type == "code"],
            notebook.metadata.get("subnets", {}))


def stale_records() -> list[str]:
    """Recorded notebooks whose chapter's code (code cells, presets) or library changed
    since the commit they ran at (or whose commit is not in this repository's history).
    A change to a chapter's prose alone leaves its record current.

    Returns:
        One line per stale record: its file name, then why.

    Example:
        ``python -m subnets.run --stale`` prints them.
    """
    import nbformat

    stale = []
    for nb_path in sorted(RECORDS.glob("*.ipynb")):
        info = nbformat.read(nb_path, as_version=4).metadata.get("subnets", {}).get("provenance")
        commit = (info or {}).get("commit", "")
        chapter = NOTEBOOKS / f"{(info or {}).get('chapter', nb_path.stem)}.md"
        relative = chapter.relative_to(data.REPO_ROOT).as_posix()
        if not commit or not _git("cat-file", "-t", commit):
            stale.append(f"{nb_path.name}: no known commit")
        elif _git("diff", "--name-only", commit, "HEAD", "--", "lib/subnets"):
            stale.append(f"{nb_path.name}: lib/subnets changed since {commit[:10]}")
        elif chapter_code(_git("show", f"{commit}:{relative}")) \
                != chapter_code(_git("show", f"HEAD:{relative}")):
            stale.append(f"{nb_path.name}: the code of {chapter.name} changed since {commit[:10]}")
    return stale
