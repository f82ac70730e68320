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
import logging
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager

from . import distributed, records
from .parameters import ParameterError, chapter_path, parse_value, resolve

__all__ = ["IPCKernelManager", "execute", "record", "relabel", "seeds_in_parallel", "main"]


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


def _known_parameters(record: logging.LogRecord) -> bool:
    """Drop papermill's "unknown parameter" warning: it reads only ``name = value`` lines,
    not a line of related parameters (``a, b = 1, 2``); ``resolve`` has checked every
    name against the chapter's own parameters already."""
    return not record.getMessage().startswith("Passed unknown parameter")


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
    logging.getLogger("papermill").addFilter(_known_parameters)
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


def record(path: Path, preset: str, params: dict[str, Any], output: Path | None = None,
           progress: bool = True) -> Path:
    """Execute the chapter and save it with its provenance as the first cell, in
    ``book/at-scale/<chapter>.ipynb`` (``<chapter>_<preset>.ipynb`` for a preset other
    than ``large``) unless ``output`` says otherwise. The run goes to a
    hidden ``.<chapter>.partial.ipynb`` beside it (papermill saves as it goes, and the
    chapter itself reads the record that is in place: the previous one, or none), which
    replaces the record only once the run has finished and its provenance is written.
    While it runs, ``recorded_claims`` of this chapter is None: a record is not compared
    with the one it replaces.

    Args:
        path: the MyST notebook.
        preset: the preset recorded.
        params: the parameters (``resolve``).
        output: where to save it (None: in ``book/at-scale/``, named as above).
        progress: papermill's progress bar over cells.

    Returns:
        The recorded notebook's path.

    Example:
        ``python -m subnets.run 01 --preset large --record`` calls it (hours on a CPU).
    """
    import os
    import time

    import nbformat

    # The large preset is the chapter's record; others are named by their preset.
    name = path.stem if preset == "large" else f"{path.stem}_{preset}"
    output = output or records.RECORDS / f"{name}.ipynb"
    partial = output.with_name(f".{output.stem}.partial.ipynb")
    info = records.provenance(path, preset, params)
    start = time.perf_counter()
    os.environ[records.RECORDING] = path.stem  # no comparison with a record while recording
    try:
        execute(path, params, partial, progress=progress, cell_timeout=7200)
    finally:
        del os.environ[records.RECORDING]
    info["wall_seconds"] = round(time.perf_counter() - start, 1)
    info["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    nb = nbformat.read(partial, as_version=4)
    relabel(nb, preset)
    nb.cells.insert(0, records.provenance_cell(info))
    nb.metadata.setdefault("subnets", {})["provenance"] = info
    nbformat.write(nb, partial)
    partial.replace(output)
    return output


def relabel(nb, preset: str) -> None:
    """Rename the chapter's labels "chNN-..." (equations, figures, and the references to
    them) to "chNN-<preset>-..." in ``nb``'s cell sources and metadata, so that a record
    and its chapter, both in the book, do not define the same label twice.

    Args:
        nb: an executed chapter (nbformat), changed in place; outputs are left as they are.
        preset: the recorded preset.

    Example:
        >>> import nbformat
        >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        ...     "See {eq}`ch04-eq-sets`; glue ch04_full stays.")])
        >>> relabel(nb, "paper")
        >>> nb.cells[0].source
        'See {eq}`ch04-paper-eq-sets`; glue ch04_full stays.'
    """
    import json
    import re

    import nbformat

    label = re.compile(r"\b(ch\d\d)-")
    for cell in nb.cells:
        cell.source = label.sub(rf"\1-{preset}-", cell.source)
        cell.metadata = nbformat.from_dict(
            json.loads(label.sub(rf"\1-{preset}-", json.dumps(cell.metadata))))


def seeds_in_parallel(path: Path, params: dict[str, Any], output: Path, n: int) -> list[str]:
    """Execute the chapter in ``n`` processes at once, process k with ``distributed.SEED_SHARE``
    = "k/n": its ``train.fit`` calls train the networks of the seeds s with s % n == k into
    the shared cache (``$SUBNETS_CACHE``), take the others untrained, as placebos, and
    store nothing else (``distributed.in_seed_share``). The
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

    Example:
        ``seeds_in_parallel(chapter_path("04"), resolve(chapter_path("04"), "smoke", {}),
        Path("04.ipynb"), 2)`` trains chapter 4's smoke-preset seeds in two processes (what
        ``python -m subnets.run 04 --preset smoke --seeds-parallel 2`` does before it
        executes the chapter into ``04.ipynb``); minutes. Before any process starts:

        >>> seeds_in_parallel(Path("04.md"), {}, Path("04.ipynb"), 0)
        Traceback (most recent call last):
        ...
        subnets.parameters.ParameterError: seeds_parallel: expected >= 1, got 0
    """
    if n < 1:
        raise ParameterError(f"seeds_parallel: expected >= 1, got {n}")
    args = [arg for name, value in params.items() for arg in ("-p", name, repr(value))]
    runs = [subprocess.Popen(
        [sys.executable, "-m", "subnets.run", str(path), *args, "-o",
         str(output.with_name(f".{output.stem}.share{k}.ipynb"))],
        env={**os.environ, distributed.SEED_SHARE: f"{k}/{n}"},
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
        for line in records.stale_records():
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
