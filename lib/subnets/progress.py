"""Who watches a run: progress bars and explorers for a person, nothing for a headless run.

A headless run is one that no frontend renders live: the book build (the Makefile sets
``SUBNETS_HEADLESS=1``), ``subnets.run`` (papermill) and the tests. There, progress bars
stay silent (the pages hold no bar residue) and explorers open no widgets: tqdm's
notebook bars and ``ipywidgets.interact`` are widgets, and nbclient can deadlock on their
comm messages (jupyter/nbclient#312: seen here as a chapter hanging at its explorer).
"""

import os

from tqdm.auto import tqdm

__all__ = ["headless", "bar"]


def headless() -> bool:
    return os.environ.get("SUBNETS_HEADLESS", "0") not in ("0", "false", "no", "")


def bar(iterable=None, **kwargs):
    """``tqdm`` (notebook-aware), disabled in a headless run."""
    kwargs.setdefault("leave", False)
    return tqdm(iterable, disable=headless(), **kwargs)
