"""Trends over an ordered setting (chapter 3: the receptive-field level), judged as claims.

A paper's claim "X grows as the field grows" is measured as the least-squares slope of X
against the level, once per seed (``seed_slopes``), and judged by ``trend_claim``: the mean
slope with its t-interval over seeds (``claims.seed_interval``), against the same slope on
the placebo networks (untrained, ``claims.Claim.trained``) for a claim about training, or
alone for a claim about networks at initialisation. ``slope_margin`` is the resolution of a
slope through accuracies measured on a finite test set.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from . import claims

__all__ = ["level_slope", "seed_slopes", "slope_margin", "trend_claim", "rank_correlation",
           "rank_correlations"]


def level_slope(levels: Sequence[float], values: Sequence[float], log: bool = False) -> float:
    """The least-squares slope of ``values`` against ``levels``.

    Args:
        levels: the settings, e.g. receptive-field levels 1..4.
        values: one value per level.
        log: fit the base-10 logarithm of the values (for a quantity spanning orders of
            magnitude); a value <= 0 then gives NaN.

    Returns:
        The slope per unit of level; NaN if any value is missing.

    Example:
        >>> round(level_slope([1, 2, 3], [10.0, 8.0, 6.0]), 6)
        -2.0
        >>> round(level_slope([1, 2], [1.0, 10.0], log=True), 6)
        1.0
    """
    values = np.asarray(values, dtype=float)
    if log:
        values = np.log10(np.where(values > 0, values, np.nan))
    if not np.isfinite(values).all():
        return float("nan")
    return float(np.polyfit(np.asarray(levels, dtype=float), values, 1)[0])


def seed_slopes(frame: pd.DataFrame, column: str, levels: Sequence[int],
                log: bool = False) -> list[float]:
    """The slope of ``column`` over ``levels``, one per seed that has it.

    Args:
        frame: indexed by (level, seed), e.g. one architecture's rows.
        column: the measured quantity.
        levels: the levels, in order.
        log: as in ``level_slope``.

    Returns:
        One slope per seed with at least one value (a seed with none, e.g. the second seed
        of a CKA pair, is left out).

    Example:
        >>> frame = pd.DataFrame({"level": [1, 2, 1, 2], "seed": [0, 0, 1, 1],
        ...                       "x": [1.0, 2.0, 1.0, 3.0]}).set_index(["level", "seed"])
        >>> [round(s, 6) for s in seed_slopes(frame, "x", [1, 2])]
        [1.0, 2.0]
    """
    table = frame[column].unstack("level")[list(levels)].dropna(how="all")
    return [level_slope(levels, row, log) for row in table.to_numpy()]


def slope_margin(n_test: int, levels: Sequence[int]) -> float:
    """Two binomial standard errors (at 50 %) of a least-squares slope through accuracies
    (in percent) measured on ``n_test`` images at ``levels``: a smaller accuracy trend is
    below the test set's resolution.

    Args:
        n_test: test images per accuracy.
        levels: the levels the slope runs over (at least two distinct).

    Returns:
        The margin, in percentage points per level.

    Example:
        >>> round(slope_margin(1000, [1, 2, 3, 4]), 3)
        1.414
    """
    steps = np.asarray(levels, dtype=float)
    spread = ((steps - steps.mean()) ** 2).sum()
    if n_test < 1 or spread == 0:
        raise ValueError(f"n_test and levels: expected >= 1 image and two distinct levels, got "
                         f"{n_test} and {list(levels)}")
    return float(2 * 100 * np.sqrt(0.25 / n_test) / np.sqrt(spread))


def trend_claim(claim: str, paper: str, frame: pd.DataFrame, column: str, op: str,
                levels: Sequence[int], placebo: pd.DataFrame | None = None,
                margin: float = 0.0, unit: str = "per level", digits: str = ".3g",
                log: bool = False, pairs: bool = False, control: str = "—") -> claims.Claim:
    """A claim that ``column`` rises (``op`` ">") or falls ("<") over ``levels``.

    Args:
        claim, paper: the row's claim and the paper's own words or numbers.
        frame: indexed by (level, seed).
        column: the measured quantity.
        op: ">" or "<", the paper's direction.
        levels: the levels, in order.
        placebo: the same measurement on the placebo networks (same index): the claim is
            then about training (``Claim.trained``); None: about networks at
            initialisation.
        margin: how far past zero the slope must be (a trained claim only).
        unit, digits: how the level means and the slope are written.
        log: slopes of the base-10 logarithm.
        pairs: the seeds are seed pairs (written "one seed pair" when there is one).
        control: the row's control column.

    Returns:
        The row, its shown text the level means and the slope with its interval.

    Example:
        >>> frame = pd.DataFrame({"level": [1, 2] * 3, "seed": [0, 0, 1, 1, 2, 2],
        ...                       "x": [3.0, 1.0, 3.0, 1.2, 2.9, 1.1]}).set_index(["level", "seed"])
        >>> trend_claim("x falls", "Fig. 1", frame, "x", "<", [1, 2]).decide().outcome
        'held'
    """
    slopes = seed_slopes(frame, column, levels, log)
    means = frame[column].groupby("level").mean()[list(levels)]
    shown = (" / ".join(f"{v:{digits}}" for v in means)
             + f"; slope {claims.seed_interval(slopes).format('.3g')} {unit}")
    if len(slopes) == 1:
        shown += f" (one seed{' pair' if pairs else ''})"
    if placebo is None:
        return claims.Claim(claim, paper, claims.seed_interval(slopes), claims.Rule(op, 0.0),
                            scope="initialisation", shown=shown, fmt=".3g")
    return claims.Claim.trained(claim, paper, slopes, seed_slopes(placebo, column, levels, log),
                                claims.Rule(op, 0.0, margin), control=control, shown=shown,
                                fmt=".3g")


def rank_correlation(values: Sequence[float]) -> float:
    """The Spearman correlation of ``values`` with their order: +1 when they rise with the
    level, -1 when they fall.

    Args:
        values: one value per level, in level order.

    Returns:
        The correlation; NaN when the values are all equal.

    Example:
        >>> round(rank_correlation([3.0, 2.0, 2.5, 1.0]), 6)
        -0.8
    """
    values = pd.Series(np.asarray(values, dtype=float))
    if values.nunique() < 2:  # undefined, and scipy would warn on stderr
        return float("nan")
    return float(values.corr(pd.Series(np.arange(len(values), dtype=float)), method="spearman"))


def rank_correlations(frame: pd.DataFrame, value: str, by: Sequence[str],
                      level: str = "level") -> pd.DataFrame:
    """Per group of ``by``, the Spearman correlation (``rank_correlation``) between the
    level and the mean of ``value`` at each level.

    Args:
        frame: rows with the columns ``by``, ``level`` and ``value``.
        value: the measured column.
        by: the grouping columns; the last one becomes the table's columns.
        level: the ordered setting.

    Returns:
        The correlations, the first of ``by`` as rows and the last as columns.

    Example:
        >>> frame = pd.DataFrame({"net": ["a"] * 4, "rate": [0.5, 0.5, 0.9, 0.9],
        ...                       "level": [1, 2, 1, 2], "acc": [9.0, 8.0, 1.0, 2.0]})
        >>> rank_correlations(frame, "acc", ["net", "rate"]).round(6).to_numpy().tolist()
        [[-1.0, 1.0]]
    """
    means = frame.groupby([*by, level])[value].mean()
    return means.groupby(list(by)).apply(rank_correlation).unstack(by[-1])
