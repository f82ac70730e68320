"""Sphinx extension of this book: every chapter page offers its executed notebook.

sphinx-book-theme puts a chapter's executed ``.ipynb`` in the download menu only when
launch buttons are on, and its launch buttons fail the build when no repository URL is
set. So: launch buttons (Binder, Colab) stay configured in ``_config.yml`` but are
switched off here while ``repository.url`` is empty, and the executed notebook (with its
outputs, also when myst-nb served it from its cache) is offered for download on every
page that has one.
"""

from pathlib import Path

import nbformat


def _launch_buttons_need_a_repository(app, config) -> None:
    options = config.html_theme_options
    if not options.get("repository_url"):
        options.pop("launch_buttons", None)


def _with_outputs(app, nb):
    """``nb`` with its outputs. myst-nb writes a notebook that it served from
    jupyter-cache without them (its cached outputs go into the page only), so those
    come from the cache here."""
    if any(c.get("outputs") for c in nb.cells if c.cell_type == "code"):
        return nb
    from jupyter_cache import get_cache

    try:
        return get_cache(app.env.mystnb_config.execution_cache_path).merge_match_into_notebook(
            nb)[1]
    except KeyError:  # not executed (a recorded run shown as it is): nothing to add
        return nb


def _offer_executed_notebook(app, pagename, templatename, context, doctree) -> None:
    executed = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if not executed.is_file():
        return
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(_with_outputs(app, nbformat.read(executed, as_version=4)), target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app):
    app.connect("config-inited", _launch_buttons_need_a_repository)
    # Before sphinx-book-theme builds the header buttons (priority 501).
    app.connect("html-page-context", _offer_executed_notebook, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
