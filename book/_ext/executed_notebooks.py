"""Sphinx extension of this book: every chapter page offers its executed notebook.

sphinx-book-theme puts a chapter's executed ``.ipynb`` in the download menu only when
launch buttons are on, and its launch buttons fail the build when no repository URL is
set. So: launch buttons (Binder, Colab) stay configured in ``_config.yml`` but are
switched off here while ``repository.url`` is empty, and the executed notebook is offered
for download on every page that has one.
"""

import shutil
from pathlib import Path


def _launch_buttons_need_a_repository(app, config) -> None:
    options = config.html_theme_options
    if not options.get("repository_url"):
        options.pop("launch_buttons", None)


def _offer_executed_notebook(app, pagename, templatename, context, doctree) -> None:
    executed = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if not executed.is_file():
        return
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(executed, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app):
    app.connect("config-inited", _launch_buttons_need_a_repository)
    # Before sphinx-book-theme builds the header buttons (priority 501).
    app.connect("html-page-context", _offer_executed_notebook, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
