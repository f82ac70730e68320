"""A chapter's "Paper vs this book" rows as tables: the full rows (``claims_frame``,
``claims_table``, glued for the records and the Scorecard), one line per claim for the
Scorecard (``brief_table``, ``verdict_counts``) and the chapter's rows beside its recorded
run at a larger scale (``scale_comparison``). Verdicts are coloured one way everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from . import records
from .claims import HELD, NOT_DECIDED, NOT_HELD, SCOPES, SETTING, Claim, Estimate, Rule

__all__ = ["claims_frame", "claims_table", "brief_table", "verdict_counts", "scale_comparison"]


def _placebo_text(c: Claim) -> str:
    if c.placebo is None:
        return "—"
    text = Estimate.of(c.placebo).format(c.fmt)
    return text if c.gain is None else f"{text}; trained - placebo: {c.gain.format(c.fmt)}"


_COLOURS = {HELD: "color: green", NOT_HELD: "color: firebrick", NOT_DECIDED: "color: darkorange",
           SETTING: "color: grey"}


def claims_frame(claims: Sequence[Claim], numbers: bool = False) -> pd.DataFrame:
    """The rows as a plain table: claim, paper, scope, ours (with interval), the placebo's
    value (and the trained - placebo difference), rule, control, verdict and its reason.

    Args:
        claims: the rows.
        numbers: also the numbers behind the text, for the Scorecard's forest plot
            (``plots.claims_forest``): ``value``, ``low``, ``high`` (ours), ``op``,
            ``threshold``, ``margin`` (the rule), ``placebo``'s ``placebo_value``,
            ``placebo_low``, ``placebo_high``; NaN (or "") where a row has none.

    Returns:
        One row per claim.

    Example:
        >>> row = Claim("accuracy", "0.9", Estimate(0.8, 0.7, 0.85), Rule(">", 0.5),
        ...             scope="method", note="any network")
        >>> claims_frame([row], numbers=True)[["verdict", "low", "op", "threshold"]]
          verdict  low op  threshold
        0    held  0.7  >        0.5
    """
    rows = []
    for c in claims:
        v = c.decide()
        est = c.estimate
        rows.append({
            "claim": c.claim, "paper": c.paper,
            "scope": "—" if c.rule is None else c.scope + (f": {c.note}" if c.note else ""),
            "this book": c.shown if c.shown is not None else est.format(c.fmt),
            "placebo": _placebo_text(c),
            "interval": est.method or ("point estimate" if c.rule is not None else "—"),
            "rule": "—" if c.rule is None else c.rule.describe(),
            "control": c.control, "verdict": v.outcome, "why": v.reason,
            **(_numbers(c) if numbers else {})})
    return pd.DataFrame(rows)


def _numbers(c: Claim) -> dict:
    def three(e: Estimate | float | None) -> list[float]:
        e = Estimate(math.nan) if e is None else Estimate.of(e)
        ends = [e.low, e.high] if e.has_interval else [math.nan, math.nan]
        return [math.nan if x is None else float(x) for x in [e.value, *ends]]

    rule = c.rule or Rule(">", math.nan)
    return {**dict(zip(["value", "low", "high"], three(c.estimate))),
            "op": c.rule.op if c.rule else "", "threshold": rule.threshold,
            "margin": rule.margin,
            **dict(zip(["placebo_value", "placebo_low", "placebo_high"], three(c.placebo)))}


def claims_table(claims: Sequence[Claim], glue_name: str | None = None):
    """The styled "Paper vs this book" table; with ``glue_name`` also glued (myst-nb): the
    full table as ``<glue_name>``, a brief one for the book's Scorecard page
    (``brief_table``) as ``<glue_name>_brief``, and the rows with their numbers as JSON
    (``<glue_name>_rows``) so that a recorded run can be read back claim by claim
    (``subnets.records.recorded_claims``) and the Scorecard can draw every judged row.

    Args:
        claims: the rows.
        glue_name: the name to glue under, or None.

    Returns:
        A pandas ``Styler``, verdicts coloured.

    Example:
        >>> styled = claims_table([Claim("epochs", "90", 3)])
        >>> styled.data.verdict.tolist()
        ['setting']
    """
    styled = _styled(claims_frame(claims), ["verdict"])
    if glue_name is not None:
        from myst_nb import glue

        frame = claims_frame(claims, numbers=True)
        glue(glue_name, styled, display=False)
        glue(f"{glue_name}_brief", brief_table(frame), display=False)
        glue(f"{glue_name}_rows", frame.to_json(orient="records"), display=False)
    return styled


_MARKS = "ᵃᵇᶜᵈᵉᶠᵍʰⁱʲᵏˡᵐⁿᵒᵖʳˢᵗᵘᵛʷˣʸᶻ"


def brief_table(frame: pd.DataFrame):
    """A chapter's rows at a glance (the Scorecard): one line per claim with claim, paper,
    ours, verdict and scope (its first word); every interval's method said once, in the
    caption under the verdict counts, and marked on the numbers it belongs to.

    Args:
        frame: ``claims_frame``'s rows.

    Returns:
        A styled table (pandas Styler).

    Example:
        >>> rows = claims_frame([Claim("x", "1", Estimate(2.0, 1.0, 3.0, "t over 3 seeds"),
        ...                            Rule(">", 0.0), scope="method", note="any network")])
        >>> table = brief_table(rows)
        >>> table.data["ours"].tolist(), table.caption.split("Intervals: ")[1]
        (['2.000 [1.000, 3.000] ᵃ'], 'ᵃ t over 3 seeds.')
    """
    methods = [m for m in dict.fromkeys(frame.interval)
               if m not in ("—", "point estimate", "")]
    marks = dict(zip(methods, _MARKS))
    brief = pd.DataFrame({
        "claim": frame.claim, "paper": frame.paper,
        "ours": [text + (f" {marks[m]}" if m in marks else "")
                 for text, m in zip(frame["this book"], frame.interval)],
        "verdict": frame.verdict, "scope": frame.scope.str.split(":").str[0]})
    caption = verdict_counts(frame) + (
        ". Intervals: " + "; ".join(f"{marks[m]} {m}" for m in methods) + "." if methods else "")
    return _styled(brief, ["verdict"]).set_caption(caption)


def verdict_counts(frame: pd.DataFrame) -> str:
    """One line counting a claims frame's verdicts, judged rows by scope.

    Args:
        frame: ``claims_frame``'s table (its verdict and scope columns).

    Returns:
        The line.

    Example:
        >>> verdict_counts(pd.DataFrame({"verdict": ["held", "not held", "setting"],
        ...                              "scope": ["trained", "method: any net", "—"]}))
        '1 held, 1 not held, 0 not decided (judged: 1 trained, 0 initialisation, 1 method)'
    """
    judged = frame[frame.verdict != SETTING]
    counts = ", ".join(f"{(judged.verdict == v).sum()} {v}" for v in (HELD, NOT_HELD, NOT_DECIDED))
    scopes = judged.scope.str.split(":").str[0]
    return counts + " (judged: " + ", ".join(f"{(scopes == s).sum()} {s}" for s in SCOPES) + ")"


def _styled(frame: pd.DataFrame, verdicts: list[str]):
    styled = frame.style.hide(axis="index").map(lambda v: _COLOURS.get(v, ""), subset=verdicts)
    return styled.set_properties(**{"text-align": "left", "vertical-align": "top"})


def scale_comparison(claims: Sequence[Claim], chapter: str, glue_name: str | None = None):
    """This run's verdicts beside those of the chapter's recorded larger-scale run
    (``records.recorded_claims``), claim by claim. Rows are matched by the claim's text; a
    claim that only one run has shows a dash in the other's columns.

    Args:
        claims: this run's rows.
        chapter: the chapter's file stem (``04_class_specific_filters``), whose record is
            read; without one (or while this run records it) the larger scale's columns
            say "not recorded yet".
        glue_name: the name to glue the table under (myst-nb), or None.

    Returns:
        A pandas ``Styler``: claim, paper, CI scale, CI verdict, larger scale, larger
        verdict.

    Example:
        >>> styled = scale_comparison([Claim("epochs", "90", 3)], "00_no_such_chapter")
        >>> styled.data["larger scale"].tolist()
        ['not recorded yet']
    """
    record = records.recorded_claims(chapter)
    ours = claims_frame(claims)[["claim", "paper", "this book", "verdict"]].rename(
        columns={"this book": "CI scale", "verdict": "CI verdict"})
    if record is None:
        frame = ours.assign(**{"larger scale": "not recorded yet", "larger verdict": "—"})
        caption = "This chapter has no recorded larger-scale run yet."
    else:
        caption = record.summary
        theirs = record.claims[["claim", "paper", "this book", "verdict"]].rename(
            columns={"this book": "larger scale", "verdict": "larger verdict"})
        only_theirs = theirs[~theirs.claim.isin(ours.claim)]
        frame = pd.concat([ours.merge(theirs.drop(columns="paper"), on="claim", how="left"),
                           only_theirs], ignore_index=True).fillna("—")
    styled = _styled(frame, ["CI verdict", "larger verdict"]).set_caption(caption)
    if glue_name is not None:
        from myst_nb import glue

        glue(glue_name, styled, display=False)
    return styled
