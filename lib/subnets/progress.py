"""Progress bars: visible when a person runs the code, silent in the built book.

The book build sets ``SUBNETS_PROGRESS=0`` (the Makefile does), so executed pages hold no
bar residue; anything else shows tqdm's notebook or terminal bar.
"""

import os

from tqdm.auto import tqdm


def enabled() -> bool:
    return os.environ.get("SUBNETS_PROGRESS", "1") not in ("0", "false", "no")


def bar(iterable=None, **kwargs):
    """``tqdm`` (notebook-aware), disabled when progress is switched off."""
    kwargs.setdefault("leave", False)
    return tqdm(iterable, disable=not enabled(), **kwargs)
