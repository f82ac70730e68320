"""Sphinx extension of this book: the Scorecard's overview of every chapter's claims.

``{scorecard}`` with one chapter document a line (relative to the page) becomes, once
every chapter has been executed (a post-transform, as myst-nb's own glue across
documents), a table of each chapter's verdict counts and ``subnets.plots.claims_forest``
of every judged row, read from the rows that each chapter glued as ``chNN_claims_rows``
(``subnets.claim_tables.claims_table``). A chapter without its rows, or with rows that lack
their numbers, is a warning: the strict build (-W) fails on it.
"""

import ast
import json
import posixpath
from pathlib import Path

import pandas as pd
from docutils import nodes
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

LOGGER = logging.getLogger(__name__)
VERDICTS = ["held", "not held", "not decided", "setting"]
FIGURE = "scorecard_forest.png"


class ScorecardNode(nodes.General, nodes.Element):
    """Where the overview goes; ``docs`` names the chapters."""


class Scorecard(SphinxDirective):
    has_content = True

    def run(self):
        docs = []
        for line in filter(None, (text.strip() for text in self.content)):
            doc = posixpath.normpath(posixpath.join(posixpath.dirname(self.env.docname), line))
            docs.append(doc.removesuffix(".md"))
            self.env.note_dependency(self.env.doc2path(docs[-1]))
        return [ScorecardNode(docs=docs)]


def chapter_rows(folder: Path, doc: str) -> pd.DataFrame | None:
    """The claims rows that chapter ``doc`` glued (``chNN_claims_rows``) when it was
    executed into ``folder`` (myst-nb's output folder), None if it glued none."""
    path = folder / f"{doc}.glue.json"
    key = f"ch{Path(doc).name[:2]}_claims_rows"
    glued = json.loads(path.read_text()) if path.is_file() else {}
    if key not in glued:
        return None
    return pd.DataFrame(json.loads(ast.literal_eval(glued[key]["data"]["text/plain"])))


def verdict_count_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per chapter, how many rows each verdict has (settings last: shown, not judged)."""
    counts = pd.crosstab(rows.chapter, rows.verdict).reindex(columns=VERDICTS, fill_value=0)
    counts.columns.name = None
    return counts.rename(columns={"setting": "settings"}).reset_index()


class ScorecardOverview(SphinxPostTransform):
    default_priority = 6  # after myst-nb's glue (5)
    formats = ("html",)

    def run(self, **kwargs) -> None:
        for node in list(self.document.findall(ScorecardNode)):
            node.replace_self(self._overview(node))

    def _overview(self, node) -> list[nodes.Node]:
        from subnets import plots

        folder = Path(self.env.mystnb_config.output_folder)
        frames = []
        for doc in node["docs"]:
            rows = chapter_rows(folder, doc)
            if rows is None or "value" not in rows:
                LOGGER.warning(f"scorecard: {doc} glued no claims rows with their numbers "
                               "(claim_tables.claims_table with glue_name, executed by this "
                               "build's library)", location=node)
                continue
            frames.append(rows.assign(chapter=Path(doc).name[:2]))
        if not frames:
            return []
        rows = pd.concat(frames, ignore_index=True)
        table = verdict_count_table(rows).to_html(index=False, border=0,
                                                  classes="table scorecard-counts")
        figure = plots.claims_forest(rows)
        builder = self.app.builder
        image = Path(builder.outdir) / builder.imagedir / FIGURE
        image.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(image, dpi=110, bbox_inches="tight")
        plots.plt.close(figure)
        uri = posixpath.relpath(f"{builder.imagedir}/{FIGURE}",
                                posixpath.dirname(self.env.docname) or ".")
        caption = ("Every judged claim against its cut: the estimate (dot) and its interval "
                   "(bar), coloured by verdict, and for a trained row the placebo's (grey "
                   "diamond, the same statistic on the untrained networks) beside it. Rows "
                   "measure different things, so each is drawn as its distance from the cut "
                   "on the claim's side, divided by the row's largest: right of the line is "
                   "the claim's side. Which numbers and rules these are: each chapter's table.")
        # An id of its own: the figure arrives after Sphinx gave the page's nodes theirs.
        return [nodes.raw("", table, format="html"),
                nodes.figure("", nodes.image(uri=uri, candidates={"*": uri},
                                             alt="forest plot of every judged claim"),
                             nodes.caption("", caption), ids=["scorecard-forest"])]


def setup(app):
    app.add_node(ScorecardNode)
    app.add_directive("scorecard", Scorecard)
    app.add_post_transform(ScorecardOverview)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
