"""Re-execute a chapter with other parameters::

    python -m subnets.run CHAPTER [--preset NAME] [-p NAME VALUE]... [-o OUT.ipynb] [--record]
        [--seeds-parallel N]
    python -m subnets.run --stale

CHAPTER is the chapter's number (``01``) or its file name. The MyST notebook is read
with jupytext; every ``-p`` name must be a variable of its ``parameters`` cell, and its
value (a Python or YAML literal) must have the default's type. Presets (``smoke``,
``large``, ``paper``) are listed in the notebook's front matter under ``subnets:
presets:``, the allowed values of name parameters under ``subnets: choices:``. Values and
the dataset's files are checked by ``check`` before papermill executes anything, so bad
input ends with a one-line error and exit status 2, not a traceback after training.
``--record`` saves the run in ``book/at-scale/`` with its provenance as the first cell.
Under ``torchrun --nproc-per-node N -m subnets.run CHAPTER ...`` every process executes
the chapter and ``train.fit`` trains data-parallel over them; process 0 writes (or
records) the notebook, the others a hidden ``.<name>.rank<R>.ipynb`` beside it.
``--seeds-parallel N`` first fills the cache in N processes at once, each executing the
chapter with a share of its seeds to train (``seeds_in_parallel``), then executes (or
records) it once more, reading every trained network from the cache.
"""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from jupyter_client.manager import AsyncKernelManager

from . import data, devices, train

__all__ = ["NOTEBOOKS", "RECORDS", "RECORDING", "ParameterError", "check", "check_chapter",
           "chapter_path", "read_chapter", "read_chapter_rules", "parse_value", "resolve",
           "IPCKernelManager", "execute", "provenance", "record", "Record", "recorded_claims",
           "claims_rows", "chapter_code", "stale_records", "parameter_table",
           "seeds_in_parallel", "main"]

NOTEBOOKS = data.REPO_ROOT / "notebooks"


class ParameterError(ValueError):
    """A chapter parameter is unknown, of the wrong type, or out of range; the message
    starts with its name.

    Example:
        >>> try:
        ...     check(epochs=-1)
        ... except ParameterError as err:
        ...     print(err)
        epochs: expected >= 0, got -1
    """


# --- range checks, by parameter name (chapters share names, so they share rules) ------

def _values(name: str, value: Any, kind=(int, float)) -> list:
    """``value`` (or each of its items) as a list, refusing any that is not a ``kind``."""
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, kind):
            raise ParameterError(f"{name}: expected {'a number' if kind == (int, float) else kind}"
                                 f", got {v!r}")
    return values


def _at_least(low: float) -> Callable[[str, Any, dict], None]:
    def rule(name: str, value: Any, _params: dict) -> None:
        for v in _values(name, value):
            if v < low:
                raise ParameterError(f"{name}: expected >= {low}, got {v}")
    return rule


def _between(low: float, high: float) -> Callable[[str, Any, dict], None]:
    def rule(name: str, value: Any, _params: dict) -> None:
        for v in _values(name, value):
            if not low <= v <= high:
                raise ParameterError(f"{name}: expected a value in [{low}, {high}], got {v}")
    return rule


def _dataset_rule(name: str, value: Any, _params: dict) -> None:
    """A known dataset whose files are in place and whose images open (``data.check``)."""
    _values(name, value, str)
    try:
        data.check(value)
    except (ValueError, FileNotFoundError) as err:
        message = str(err).split("\n")[0]
        raise ParameterError(message if message.startswith("dataset:") else
                             f"{name}: {message}") from None


def _class_count(params: dict) -> int | None:
    """The number of classes of the chapter's dataset; None for a bad dataset, which the
    dataset rule reports."""
    try:
        return len(data.class_names(params.get("dataset", "fashion-mnist")))
    except (ValueError, FileNotFoundError):
        return None


def _class_rule(name: str, value: Any, params: dict) -> None:
    """Class indices must exist in the chapter's dataset."""
    n = _class_count(params)
    if n is None:
        return
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n:
            raise ParameterError(f"{name}: expected a class index in 0..{n - 1}, got {v!r}")


def _device_rule(name: str, value: Any, _params: dict) -> None:
    try:
        devices.device(value)
    except ValueError as err:
        raise ParameterError(str(err).replace("device:", f"{name}:", 1)) from None


def _image_size_rule(name: str, value: Any, _params: dict) -> None:
    """None (the dataset's own size) or a side of at least 8 pixels."""
    if value is not None:
        _at_least(8)(name, value, _params)


def _folder_rule(name: str, value: Any, _params: dict) -> None:
    """An empty string (not used) or an existing folder."""
    _values(name, value, str)
    if value and not data.data_path(value).is_dir():
        raise ParameterError(f"{name}: folder {value!r} does not exist (relative folders are "
                             f"taken in the data folder {data.data_dir()})")


def _precision_rule(name: str, value: Any, _params: dict) -> None:
    _values(name, value, str)
    if value not in devices.PRECISIONS:
        raise ParameterError(f"{name}: expected one of {list(devices.PRECISIONS)}, got {value!r}")


def _names_rule(name: str, value: Any, params: dict) -> None:
    """A list of names, one per class of the chapter's dataset, or [] (the class names)."""
    values = _values(name, value, str)
    n = _class_count(params)
    if values and n is not None and len(values) != n:
        raise ParameterError(f"{name}: expected one name per class ({n}), got {len(values)}")


def _rule_for(name: str):
    """The range rule for a parameter name: exact names first, then name patterns."""
    exact = {"dataset": _dataset_rule, "device": _device_rule, "image_size": _image_size_rule,
             "precision": _precision_rule,
             "seed": _at_least(0), "quantile": _between(0.0, 1.0), "broden": _folder_rule,
             "class_concepts": _names_rule,
             "layers": _at_least(0),  # layer indices
             "n_train": _at_least(0), "n_test": _at_least(0)}  # 0 means all images
    if name in exact:
        return exact[name]
    if name.endswith("_folder"):
        return _folder_rule
    if name.endswith(("class", "classes")):
        return _class_rule
    if name.endswith(("fraction", "fractions", "rate", "rates", "sparsity")):
        return _between(0.0, 1.0)
    if name.endswith(("threshold", "thresholds", "noise", "lr", "sigma", "std", "tol", "decay",
                      "levels", "weight", "weights", "margin", "epochs")) \
            or name.startswith("epochs"):
        return _at_least(0)
    if name.startswith(("n_", "k_", "num_")) or name.endswith(
            ("_size", "_steps", "seeds", "depth", "depths", "widths", "width", "k1", "k2",
             "top_k", "resamples")):
        return _at_least(1)
    return None


def check(choices: dict[str, list] | None = None, **params: Any) -> dict[str, Any]:
    """Range-check chapter parameters by name (and against ``choices``, name -> allowed
    values); returns them unchanged or raises ``ParameterError`` naming the first bad
    one. Chapters call it right after their parameters cell, so papermill runs fail
    before any work too. Booleans are checked by type only.

    Args:
        choices: parameter name -> its allowed values (the front matter's
            ``subnets: choices:``), or None.
        **params: the parameters, by name; the name picks the range rule.

    Returns:
        ``params``, unchanged.

    Raises:
        ParameterError: naming the first bad parameter.

    Example:
        >>> check(lr=0.01, seeds=3)
        {'lr': 0.01, 'seeds': 3}
        >>> check({"optimizer": ["adam", "sgd"]}, optimizer="lbfgs")
        Traceback (most recent call last):
        ...
        subnets.run.ParameterError: optimizer: expected one of ['adam', 'sgd'], got 'lbfgs'
    """
    for name, allowed in (choices or {}).items():
        if name in params:
            values = params[name] if isinstance(params[name], (list, tuple)) else [params[name]]
            for v in values:
                if v not in allowed:
                    raise ParameterError(f"{name}: expected one of {allowed}, got {v!r}")
    for name, value in params.items():
        rule = None if name in (choices or {}) else _rule_for(name)
        if rule is not None and not isinstance(value, bool) \
                and (value is not None or name == "image_size"):
            rule(name, value, params)
    return params


def check_chapter(chapter: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """Check every parameter of ``chapter`` as it stands in ``namespace`` (a chapter's
    ``globals()`` after its parameters cell and papermill's injected cell): types against
    the defaults, then ``check`` with the front matter's choices.

    Args:
        chapter: the chapter's number or file name (``chapter_path``).
        namespace: the chapter's variables.

    Returns:
        The parameters' values, by name, coerced to the defaults' types.

    Raises:
        ParameterError: naming the first bad parameter.

    Example:
        >>> defaults, _ = read_chapter(chapter_path("01"))
        >>> check_chapter("01", defaults) == defaults
        True
    """
    defaults, _presets, choices = read_chapter_rules(chapter_path(chapter))
    params = {name: _coerce(name, namespace[name], default) for name, default in defaults.items()}
    return check(choices, **params)


# --- reading a chapter ----------------------------------------------------------------

def chapter_path(chapter: str) -> Path:
    """The MyST notebook of a chapter.

    Args:
        chapter: its number ("01"), the start of its file name, or a path to a ``.md``.

    Returns:
        The notebook's path.

    Raises:
        ParameterError: naming ``chapter`` when it matches no notebook or several.

    Example:
        >>> chapter_path("01").name
        '01_class_subnetworks.md'
    """
    p = Path(chapter)
    if p.suffix == ".md" and p.is_file():
        return p
    matches = sorted(NOTEBOOKS.glob(f"{chapter}_*.md")) or sorted(NOTEBOOKS.glob(f"{chapter}*.md"))
    if len(matches) != 1:
        known = ", ".join(sorted(q.stem for q in NOTEBOOKS.glob("*.md")))
        raise ParameterError(f"chapter: {chapter!r} matches {len(matches)} notebooks; "
                             f"chapters are: {known}")
    return matches[0]


def read_chapter(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The defaults of a chapter's ``parameters`` cell and the presets of its front matter.

    Args:
        path: the MyST notebook.

    Returns:
        (name -> default, preset name -> its values).

    Example:
        >>> defaults, presets = read_chapter(chapter_path("01"))
        >>> "seeds" in defaults, "smoke" in presets
        (True, True)
    """
    defaults, presets, _choices = read_chapter_rules(path)
    return defaults, presets


def _parameters_cell(path: Path):
    """The chapter's notebook and the source of its one ``parameters`` cell."""
    import jupytext

    nb = jupytext.read(path)
    cells = [c for c in nb.cells
             if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ParameterError(f"{path.name}: expected one code cell tagged 'parameters', "
                             f"found {len(cells)}")
    return nb, cells[0].source


def _assignments(source: str):
    """The parameters cell's ``name = literal`` statements, in order."""
    for node in ast.parse(source).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            yield node


def read_chapter_rules(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict]:
    """``read_chapter`` and the allowed values of the front matter's ``subnets: choices:``
    (for parameters whose values are names: networks, optimisers, layers).

    Args:
        path: the MyST notebook.

    Returns:
        (defaults, presets, choices).

    Raises:
        ParameterError: unless the notebook has one code cell tagged ``parameters``.

    Example:
        >>> read_chapter_rules(chapter_path("01"))[2]["gradcam_layer"]
        ['conv3', 'relu3']
    """
    nb, source = _parameters_cell(path)
    defaults = {node.targets[0].id: ast.literal_eval(node.value)
                for node in _assignments(source)}
    meta = nb.metadata.get("subnets", {})
    return defaults, meta.get("presets", {}), meta.get("choices", {})


def parameter_table(chapter: str, values: dict[str, Any] | None = None) -> pd.DataFrame:
    """The parameters cell of ``chapter`` as a table a reader can scan: each parameter's
    default, its meaning (the comment on its line) and its value in the ``paper`` preset
    ("" where the preset keeps the default).

    Args:
        chapter: the chapter's number (``"04"``) or file.
        values: the values this run used (a chapter passes ``globals()``); where any differs
            from its default, a column "this run" shows them all.

    Returns:
        A DataFrame indexed by parameter name.

    Example:
        >>> table = parameter_table("04")
        >>> list(table.columns)
        ['default', 'meaning', 'paper']
        >>> table.loc["k1", "default"]
        '5'
    """
    import io
    import tokenize

    path = chapter_path(chapter)
    nb, source = _parameters_cell(path)
    comments = {tok.start[0]: tok.string.lstrip("# ").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT}
    paper = nb.metadata.get("subnets", {}).get("presets", {}).get("paper", {})
    rows = {}
    for node in _assignments(source):
        name, default = node.targets[0].id, ast.literal_eval(node.value)
        rows[name] = {"default": repr(default), "meaning": comments.get(node.lineno, ""),
                      "paper": repr(paper[name]) if name in paper else ""}
        if values is not None:
            rows[name]["this run"] = repr(values.get(name, default))
    table = pd.DataFrame.from_dict(rows, orient="index")
    if values is not None and (table["this run"] == table["default"]).all():
        table = table.drop(columns="this run")
    table.index.name = "parameter"
    return table


def parse_value(text: str) -> Any:
    """A command-line value as a Python literal (``0.1``, ``[1, 2]``, ``True``), else a
    string; ``true``, ``false`` and ``none`` in any case are the constants.

    Args:
        text: the value as typed.

    Returns:
        The value.

    Example:
        >>> parse_value("[1, 2]"), parse_value("false"), parse_value("vgg11")
        ([1, 2], False, 'vgg11')
    """
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        lowered = text.lower()
        return {"true": True, "false": False, "none": None}.get(lowered, text)


def _coerce(name: str, value: Any, default: Any) -> Any:
    """``value`` in the type of ``default`` (an int is a float too), or ``ParameterError``."""
    if default is None or value is None:
        return value
    if isinstance(default, bool) == isinstance(value, bool):
        if isinstance(default, float) and isinstance(value, int):
            return float(value)
        if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
            if default:
                return type(default)(_coerce(name, v, default[0]) for v in value)
            return type(default)(value)
        if isinstance(value, type(default)):
            return value
    raise ParameterError(f"{name}: expected {type(default).__name__} like {default!r}, "
                         f"got {value!r}")


def resolve(path: Path, preset: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The parameters to run ``path`` with: preset values, then overrides, all checked.

    Args:
        path: the MyST notebook.
        preset: one of its presets, or None.
        overrides: name -> value, applied after the preset.

    Returns:
        The parameters that differ from the defaults, coerced to the defaults' types.

    Raises:
        ParameterError: naming an unknown preset or parameter, or a bad value.

    Example:
        >>> resolve(chapter_path("01"), "smoke", {"seeds": 1})["seeds"]
        1
        >>> resolve(chapter_path("01"), None, {"epoch": 1})
        Traceback (most recent call last):
        ...
        subnets.run.ParameterError: epoch: not a parameter of 01_class_subnetworks; ...
    """
    defaults, presets, choices = read_chapter_rules(path)
    params: dict[str, Any] = {}
    if preset is not None:
        if preset not in presets:
            raise ParameterError(f"preset: {path.stem} has presets {sorted(presets)}, "
                                 f"not {preset!r}")
        params.update(presets[preset])
    params.update(overrides)
    for name, value in params.items():
        if name not in defaults:
            raise ParameterError(f"{name}: not a parameter of {path.stem}; "
                                 f"its parameters are {sorted(defaults)}")
        params[name] = _coerce(name, value, defaults[name])
    check(choices, **{**defaults, **params})
    return params


class IPCKernelManager(AsyncKernelManager):
    """A kernel on Unix sockets of its own: kernels started at once by parallel processes
    (pytest-xdist workers) can be handed the same free TCP port, and then a client waits
    for a reply that went to another kernel.

    Args:
        **kwargs: ``AsyncKernelManager``'s options.

    Example:
        >>> IPCKernelManager().transport
        'ipc'
    """

    def __init__(self, **kwargs: Any) -> None:
        prefix = Path(tempfile.gettempdir()) / f"subnets-kernel-{uuid.uuid4().hex[:12]}"
        super().__init__(transport="ipc", ip=str(prefix), **kwargs)


def execute(path: Path, params: dict[str, Any], output: Path, progress: bool = True,
            cell_timeout: int = 1500) -> Path:
    """Execute the chapter with papermill (on an ``IPCKernelManager`` kernel, headless:
    ``subnets.progress``) in a temporary ipynb next to ``output``. A cell running longer
    than ``cell_timeout`` seconds fails the run instead of hanging.

    Args:
        path: the MyST notebook.
        params: the parameters papermill injects (``resolve``).
        output: the executed notebook to write.
        progress: papermill's progress bar over cells.
        cell_timeout: seconds a cell may run.

    Returns:
        ``output``.

    Example:
        ``execute(chapter_path("01"), resolve(chapter_path("01"), "smoke", {}),
        Path("01.ipynb"))`` runs chapter 1 at its smoke preset (minutes: the tests'
        chapter runs do this).
    """
    import os

    import jupytext
    import papermill

    output.parent.mkdir(parents=True, exist_ok=True)
    source = output.with_name(f".{output.stem}.source.ipynb")
    jupytext.write(jupytext.read(path), source)
    before = os.environ.get("SUBNETS_HEADLESS")
    os.environ["SUBNETS_HEADLESS"] = "1"  # the kernel inherits it
    try:
        papermill.execute_notebook(str(source), str(output), parameters=params,
                                   cwd=str(path.parent), kernel_name="python3",
                                   progress_bar=progress, execution_timeout=cell_timeout,
                                   kernel_manager_class=IPCKernelManager)
    finally:
        source.unlink(missing_ok=True)
        if before is None:
            del os.environ["SUBNETS_HEADLESS"]
        else:
            os.environ["SUBNETS_HEADLESS"] = before
    return output


# --- recorded runs (the book's "At a larger scale" part) -------------------------------

RECORDS = data.REPO_ROOT / "book" / "at-scale"
# The record being written (its name), for the kernel: set by ``record`` while it runs.
RECORDING = "SUBNETS_RECORDING"


def _git(*args: str) -> str:
    import subprocess

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
        torchvision, python, cached_results.

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
            "cached_results": len(list(cache_dir().glob("*.pt")))}


def _provenance_cell(record: dict[str, Any]):
    """The first cell of a recorded notebook: the provenance as a table (and, in the
    notebook's metadata, as data for the tests)."""
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
            ("parameters", ", ".join(f"`{k}={v!r}`" for k, v in record["parameters"].items()))]
    table = "\n".join(["| run | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])
    return nbformat.v4.new_markdown_cell(
        f"**Recorded run, written by `subnets.run`** (not re-executed by the book build)\n\n"
        f"{table}", metadata={"tags": ["provenance"]})


def record(path: Path, preset: str, params: dict[str, Any], output: Path | None = None,
           progress: bool = True) -> Path:
    """Execute the chapter and save it with its provenance as the first cell, in
    ``book/at-scale/<chapter>.ipynb`` unless ``output`` says otherwise. The run goes to a
    hidden ``.<chapter>.partial.ipynb`` beside it (papermill saves as it goes, and the
    chapter itself reads the record that is in place: the previous one, or none), which
    replaces the record only once the run has finished and its provenance is written.
    While it runs, ``recorded_claims`` of this chapter is None: a record is not compared
    with the one it replaces.

    Args:
        path: the MyST notebook.
        preset: the preset recorded.
        params: the parameters (``resolve``).
        output: where to save it (None: ``book/at-scale/<chapter>.ipynb``).
        progress: papermill's progress bar over cells.

    Returns:
        The recorded notebook's path.

    Example:
        ``python -m subnets.run 01 --preset large --record`` calls it (hours on a CPU).
    """
    import os
    import time

    import nbformat

    output = output or RECORDS / f"{path.stem}.ipynb"
    partial = output.with_name(f".{output.stem}.partial.ipynb")
    info = provenance(path, preset, params)
    start = time.perf_counter()
    os.environ[RECORDING] = output.stem
    try:
        execute(path, params, partial, progress=progress, cell_timeout=7200)
    finally:
        del os.environ[RECORDING]
    info["wall_seconds"] = round(time.perf_counter() - start, 1)
    info["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    nb = nbformat.read(partial, as_version=4)
    nb.cells.insert(0, _provenance_cell(info))
    nb.metadata.setdefault("subnets", {})["provenance"] = info
    nbformat.write(nb, partial)
    partial.replace(output)
    return output


@dataclass(frozen=True)
class Record:
    """A recorded run's "Paper vs this book" rows and its provenance.

    Args:
        claims: the rows, as ``claims.claims_frame`` makes them.
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
    (``chNN_claims_rows``, see ``claims.claims_table``).

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


def seeds_in_parallel(path: Path, params: dict[str, Any], output: Path, n: int) -> list[str]:
    """Execute the chapter in ``n`` processes at once, process k with ``train.SEED_SHARE``
    = "k/n": its ``train.fit`` calls train the networks of the seeds s with s % n == k into
    the shared cache (``$SUBNETS_CACHE``), take the others untrained, as placebos, and
    store nothing else (``train.in_seed_share``). The
    notebooks they write (hidden ``.<name>.share<k>.ipynb`` beside ``output``, kept only
    when the process failed) are scaffolding, not results: executed again afterwards, the
    chapter reads each trained network from the cache, bit for bit what it would have
    trained itself (the cache keys are the same). Each process runs with the threads the
    environment gives it: set ``OMP_NUM_THREADS`` to the cores over ``n``.

    Args:
        path: the chapter's notebook.
        params: its parameters (``resolve``'s).
        output: the notebook the chapter will be executed into afterwards.
        n: processes, one per share of the seeds.

    Returns:
        One line per process that failed (its share's trainings up to the failure stay
        cached; the run afterwards computes what is missing).
    """
    if n < 1:
        raise ParameterError(f"seeds_parallel: expected >= 1, got {n}")
    args = [arg for name, value in params.items() for arg in ("-p", name, repr(value))]
    runs = [subprocess.Popen(
        [sys.executable, "-m", "subnets.run", str(path), *args, "-o",
         str(output.with_name(f".{output.stem}.share{k}.ipynb"))],
        env={**os.environ, train.SEED_SHARE: f"{k}/{n}"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for k in range(n)]
    failed = []
    for k, proc in enumerate(runs):
        _, err = proc.communicate()
        if proc.returncode:
            failed.append(f"share {k}/{n} failed: {(err.strip().splitlines() or ['?'])[-1]}")
        else:
            output.with_name(f".{output.stem}.share{k}.ipynb").unlink(missing_ok=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module doc).

    Args:
        argv: the arguments (None: ``sys.argv[1:]``).

    Returns:
        The exit status: 0, or 2 for a bad parameter (after a one-line error).

    Example:
        >>> main(["01", "-p", "epochs", "-1"])
        2
    """
    parser = argparse.ArgumentParser(prog="python -m subnets.run",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("chapter", nargs="?", help="chapter number (01) or notebook path")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"))
    parser.add_argument("--preset",
                        help="a preset of the chapter's front matter (smoke, large, paper)")
    parser.add_argument("-o", "--output",
                        help="executed notebook (default: CHAPTER.out.ipynb here; "
                             "with --record: book/at-scale/CHAPTER.ipynb)")
    parser.add_argument("--record", action="store_true",
                        help="record the run for the book's 'At a larger scale' part, with its "
                             "provenance as the first cell")
    parser.add_argument("--seeds-parallel", type=int, default=1, metavar="N",
                        help="first train the chapter's seeds in N processes at once (a share "
                             "each, into the cache), then execute it reading them back")
    parser.add_argument("--stale", action="store_true",
                        help="list recorded runs whose chapter or library changed since")
    args = parser.parse_args(argv)
    if args.stale:
        for line in stale_records():
            print(line)
        return 0
    try:
        if args.chapter is None:
            raise ParameterError("chapter: expected a chapter number (01) or notebook path")
        path = chapter_path(args.chapter)
        overrides = {name: parse_value(value) for name, value in args.parameter}
        params = resolve(path, args.preset, overrides)
        if args.record and args.preset is None:
            raise ParameterError("preset: --record records a preset (large or paper)")
        if args.seeds_parallel < 1:
            raise ParameterError(f"seeds_parallel: expected >= 1, got {args.seeds_parallel}")
    except ParameterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rank = int(os.environ.get("RANK", "0"))
    if args.seeds_parallel > 1:
        target = Path(args.output) if args.output else Path.cwd() / f"{path.stem}.out.ipynb"
        print(f"training {path.name}'s seeds in {args.seeds_parallel} processes")
        for line in seeds_in_parallel(path, params, target.resolve(), args.seeds_parallel):
            print(line, file=sys.stderr)
    if args.record and not rank:
        out = record(path, args.preset, params,
                     Path(args.output).resolve() if args.output else None)
        print(f"recorded {path.name} ({args.preset}) -> {out}")
        return 0
    output = Path(args.output) if args.output else Path.cwd() / f"{path.stem}.out.ipynb"
    if rank:  # under torchrun every process runs the chapter; process 0 writes its notebook
        output = output.with_name(f".{output.stem}.rank{rank}.ipynb")
    print(f"executing {path.name} with {params or 'its defaults'} -> {output}")
    execute(path, params, output.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
