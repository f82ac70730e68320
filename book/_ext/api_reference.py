"""Sphinx extension of this book: the API page lists every module of ``subnets``.

The page ``book/api.md`` holds the introduction; one section per module is appended
when Sphinx reads it, found with ``pkgutil``, so that a new module appears on the page
without editing it. Each section is ``automodule`` of the names in the module's
``__all__`` (every module has one: tests/test_style.py).
"""

import importlib
import pkgutil

API_PAGE = "book/api"


def api_modules() -> list[str]:
    """Every module of ``subnets`` (subpackages' modules included), by name."""
    import subnets

    return ["subnets", *sorted(m.name for m in pkgutil.walk_packages(subnets.__path__,
                                                                         "subnets."))]


def _module_section(name: str) -> str:
    # The members named, not ``:members:`` alone, which would take every attribute of a
    # module once ``_listed_names_shown`` keeps the undocumented ones.
    members = ", ".join(importlib.import_module(name).__all__)
    return (f"\n\n## `{name}`\n\n```{{eval-rst}}\n.. automodule:: {name}\n"
            f"   :members: {members}\n```\n")


def _plain_bars(app, what, name, obj, options, lines: list[str]) -> None:
    """The docstrings write absolute values as in mathematics (``|x - t|``), which reST
    would read as substitutions: escape every ``|`` outside inline literals."""
    for i, line in enumerate(lines):
        parts = line.split("``")
        lines[i] = "``".join(p if k % 2 else p.replace("|", "\\|") for k, p in enumerate(parts))


def _listed_names_shown(app, what, name, obj, skip, options):
    """A module's listed names are all on the page, with a docstring or without (autodoc
    leaves out an undocumented one); a class's members follow autodoc's rule."""
    return False if what == "module" else None


def _append_modules(app, docname: str, source: list[str]) -> None:
    if docname == API_PAGE:
        source[0] += "".join(_module_section(name) for name in api_modules())


def setup(app):
    app.connect("source-read", _append_modules)
    app.connect("autodoc-process-docstring", _plain_bars)
    app.connect("autodoc-skip-member", _listed_names_shown)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
