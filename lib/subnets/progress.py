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
    """Whether this run is headless: ``$SUBNETS_HEADLESS`` is set to anything but 0, false,
    no or nothing.

    Returns:
        True in the book build, under ``subnets.run`` and in the tests.

    Example:
        >>> import os
        >>> os.environ["SUBNETS_HEADLESS"] = "1"
        >>> headless()
        True
    """
    return os.environ.get("SUBNETS_HEADLESS", "0") not in ("0", "false", "no", "")


def bar(iterable=None, **kwargs):
    """A progress bar over ``iterable``: tqdm's (a widget in a notebook), disabled in a
    headless run and gone when done unless ``leave=True``.

    Args:
        iterable: what to iterate over (None: update the bar by hand).
        **kwargs: tqdm's options (``total``, ``desc``, ``leave``, ...).

    Returns:
        The tqdm bar, iterable like ``iterable``.

    Example:
        >>> sum(bar(range(4), desc="steps"))
        6
    """
    kwargs.setdefault("leave", False)
    return tqdm(iterable, disable=headless(), **kwargs)
