"""Paper vs this book: one rule decides whether a paper's claim held on our data.

A claim is data: the paper's statement and value, our estimate (a number, or a number
with an interval from seeds or a paired bootstrap), the rule that decides it (direction,
threshold, margin) and, where chance could meet the claim, a control. ``verdict`` turns
an estimate and a rule into "held", "not held" or "not decided" with the reason, and
``claims_table`` renders a chapter's rows one way.

The rule ``Rule(">", t, m)`` reads "our estimate exceeds t by more than m", i.e. the
margin moves the threshold in the claim's direction (``"<"``: below t - m). With an
interval [lo, hi]: held when the whole interval is past the moved threshold, not held
when the whole interval is on the other side, not decided when it straddles it. A point
estimate (no interval) is decided by itself. ``Rule("within", t, m)`` reads
|estimate - t| <= m. A NaN estimate or interval is always "not decided".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["Estimate", "Rule", "Verdict", "Claim", "verdict", "paired_bootstrap",
           "bootstrap", "seed_interval", "claims_frame", "claims_table", "scale_comparison",
           "HELD", "NOT_HELD", "NOT_DECIDED", "SETTING", "LEVEL"]

HELD, NOT_HELD, NOT_DECIDED, SETTING = "held", "not held", "not decided", "setting"
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A number with an optional interval and how the interval was obtained."""

    value: float
    low: float | None = None
    high: float | None = None
    method: str = ""  # e.g. "bootstrap over 1000 test images, 1000 resamples"

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None

    @property
    def is_nan(self) -> bool:
        numbers = [self.value] + ([self.low, self.high] if self.has_interval else [])
        return any(x is None or (isinstance(x, float) and math.isnan(x)) for x in numbers)

    def format(self, fmt: str = ".3f") -> str:
        if self.is_nan:
            return "nan"
        text = f"{self.value:{fmt}}"
        return text + (f" [{self.low:{fmt}}, {self.high:{fmt}}]" if self.has_interval else "")


@dataclass(frozen=True)
class Rule:
    """``op`` is ">", "<" or "within"; see the module doc for how the margin reads."""

    op: str
    threshold: float
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.op not in (">", "<", "within"):
            raise ValueError(f"op: expected '>', '<' or 'within', got {self.op!r}")
        if not self.margin >= 0:
            raise ValueError(f"margin: expected >= 0, got {self.margin}")

    @property
    def cut(self) -> float:
        """The threshold moved by the margin in the claim's direction."""
        return self.threshold + self.margin if self.op == ">" else self.threshold - self.margin

    def describe(self, fmt: str = ".3g") -> str:
        if self.op == "within":
            return f"|x - {self.threshold:{fmt}}| <= {self.margin:{fmt}}"
        shown = f"{self.threshold:{fmt}}" + (
            f" {'+' if self.op == '>' else '-'} {self.margin:{fmt}}" if self.margin else "")
        return f"x {self.op} {shown}"


@dataclass(frozen=True)
class Verdict:
    outcome: str  # HELD, NOT_HELD, NOT_DECIDED or SETTING
    reason: str


def verdict(estimate: Estimate | float, rule: Rule) -> Verdict:
    """Decide ``rule`` for ``estimate`` (see the module doc)."""
    est = estimate if isinstance(estimate, Estimate) else Estimate(float(estimate))
    if est.is_nan:
        return Verdict(NOT_DECIDED, "the estimate is undefined (nan)")
    low, high = (est.low, est.high) if est.has_interval else (est.value, est.value)
    where = "interval" if est.has_interval else "estimate"
    if rule.op == "within":
        a, b = rule.threshold - rule.margin, rule.threshold + rule.margin
        if a <= low and high <= b:
            return Verdict(HELD, f"{where} inside [{a:.3g}, {b:.3g}]")
        if high < a or low > b:
            return Verdict(NOT_HELD, f"{where} outside [{a:.3g}, {b:.3g}]")
        return Verdict(NOT_DECIDED, f"{where} straddles the edge of [{a:.3g}, {b:.3g}]")
    cut = rule.cut
    passes = (lambda x: x > cut) if rule.op == ">" else (lambda x: x < cut)
    if passes(low) and passes(high):
        return Verdict(HELD, f"{where} {rule.op} {cut:.3g}")
    if not passes(low) and not passes(high):
        return Verdict(NOT_HELD, f"{where} not {rule.op} {cut:.3g}")
    return Verdict(NOT_DECIDED, f"{where} contains {cut:.3g}")


# --- uncertainty -----------------------------------------------------------------------

def bootstrap(values: Sequence[float] | np.ndarray, statistic: Callable = np.mean,
              n_resamples: int = 1000, seed: int = 0, level: float = LEVEL,
              unit: str = "images") -> Estimate:
    """A percentile bootstrap interval of ``statistic`` over the rows of ``values``."""
    values = np.asarray(values, dtype=float)
    return paired_bootstrap(values, None, lambda a, _b: statistic(a), n_resamples,
                            seed, level, unit)


def paired_bootstrap(a, b=None, statistic: Callable | None = None, n_resamples: int = 1000,
                     seed: int = 0, level: float = LEVEL, unit: str = "images") -> Estimate:
    """A percentile bootstrap interval of ``statistic(a, b)`` (default: mean(a) - mean(b))
    resampling the same rows of ``a`` and ``b`` (paired: row i of both is one image).
    Rows where either is NaN are dropped together, so the pairing holds."""
    a = np.asarray(a, dtype=float)
    b = None if b is None else np.asarray(b, dtype=float)
    if b is not None and a.shape[0] != b.shape[0]:
        raise ValueError(f"paired_bootstrap: a has {a.shape[0]} rows, b has {b.shape[0]}")
    if statistic is None:
        statistic = (lambda x, y: np.mean(x, axis=0) - np.mean(y, axis=0)) if b is not None \
            else (lambda x, _y: np.mean(x, axis=0))
    keep = ~np.isnan(a.reshape(len(a), -1)).any(1)
    if b is not None:
        keep &= ~np.isnan(b.reshape(len(b), -1)).any(1)
    a = a[keep]
    b = None if b is None else b[keep]
    if len(a) == 0:
        return Estimate(float("nan"))
    value = float(statistic(a, b))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_resamples, len(a)))
    draws = np.array([statistic(a[i], None if b is None else b[i]) for i in idx], dtype=float)
    method = (f"{level:.0%} paired bootstrap over {len(a)} {unit}, {n_resamples} resamples, "
              f"seed {seed}")
    if np.isnan(draws).all():  # e.g. a group that every resample leaves empty
        return Estimate(value, float("nan"), float("nan"), method)
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(draws, [tail, 100 - tail])
    return Estimate(value, float(low), float(high), method)


def seed_interval(values: Sequence[float], level: float = LEVEL) -> Estimate:
    """Mean over seeds with a Student-t interval; a single seed gives no interval."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0 or np.isnan(values).any():
        return Estimate(float("nan"))
    mean = float(values.mean())
    if len(values) < 2:
        return Estimate(mean, method="1 seed: no interval")
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(
        len(values))
    return Estimate(mean, mean - half, mean + half, f"{level:.0%} t-interval over "
                                                    f"{len(values)} seeds")


# --- rows and the table ---------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    """One row of "Paper vs this book".

    ``rule=None`` makes the row a setting (a value fixed by construction, shown, never
    judged). ``shown`` overrides how our estimate is written (units, percentages);
    ``control`` is the chance level or control measurement that the claim must beat.
    """

    claim: str
    paper: str
    ours: Estimate | float
    rule: Rule | None = None
    control: str = "—"
    shown: str | None = None
    fmt: str = ".3f"

    @property
    def estimate(self) -> Estimate:
        return self.ours if isinstance(self.ours, Estimate) else Estimate(float(self.ours))

    def decide(self) -> Verdict:
        if self.rule is None:
            return Verdict(SETTING, "fixed by construction: shown, not judged")
        return verdict(self.estimate, self.rule)


_COLOURS = {HELD: "color: green", NOT_HELD: "color: firebrick", NOT_DECIDED: "color: darkorange",
           SETTING: "color: grey"}


def claims_frame(claims: Sequence[Claim]) -> pd.DataFrame:
    """The rows as a plain table: claim, paper, ours (with interval), rule, control,
    verdict and its reason."""
    rows = []
    for c in claims:
        v = c.decide()
        est = c.estimate
        rows.append({
            "claim": c.claim, "paper": c.paper,
            "this book": c.shown if c.shown is not None else est.format(c.fmt),
            "interval": est.method or ("point estimate" if c.rule is not None else "—"),
            "rule": "—" if c.rule is None else c.rule.describe(),
            "control": c.control, "verdict": v.outcome, "why": v.reason})
    return pd.DataFrame(rows)


def claims_table(claims: Sequence[Claim], glue_name: str | None = None):
    """The styled "Paper vs this book" table; with ``glue_name`` also glued (myst-nb) for
    the book's Scorecard page, and its rows glued as JSON (``<glue_name>_rows``) so that a
    recorded run can be read back claim by claim (``subnets.run.recorded_claims``)."""
    frame = claims_frame(claims)
    styled = _styled(frame, ["verdict"])
    if glue_name is not None:
        from myst_nb import glue

        glue(glue_name, styled, display=False)
        glue(f"{glue_name}_rows", frame.to_json(orient="records"), display=False)
    return styled


def _styled(frame: pd.DataFrame, verdicts: list[str]):
    styled = frame.style.hide(axis="index").map(lambda v: _COLOURS.get(v, ""), subset=verdicts)
    return styled.set_properties(**{"text-align": "left", "vertical-align": "top"})


def scale_comparison(claims: Sequence[Claim], record=None, glue_name: str | None = None):
    """This run's verdicts beside a recorded larger-scale run's, claim by claim. Rows are
    matched by the claim's text; a claim that only one run has shows a dash in the
    other's columns. ``record`` is ``subnets.run.recorded_claims(chapter)`` (its
    ``claims`` frame and ``summary`` line), None while the chapter has no record."""
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
