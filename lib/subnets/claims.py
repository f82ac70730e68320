"""Paper vs this book: one rule decides whether a paper's claim held on our data.

A claim is data: the paper's statement and value, our estimate (a number, or a number
with an interval from seeds or a paired bootstrap), the rule that decides it (direction,
threshold, margin), its scope and, where chance could meet the claim, a control.
``verdict`` turns an estimate and a rule into "held", "not held" or "not decided" with the
reason; ``claim_tables`` renders a chapter's rows one way.

Every judged row has a scope. ``"trained"``: a claim about what training on the data
produced. It is decided over training seeds (``Claim.trained``: one value per seed for the
trained networks and for the same networks at initialisation, the placebo): held only when
the trained networks pass the rule *and* beat their placebo by the rule's margin, judged
on the seed interval of the paired difference (for a "within" rule: when the placebo
networks fail it); one seed decides nothing about training ("not decided"). A chapter run
with ``placebo=True`` trains nothing, so its trained and placebo values are the same and
no trained row can be held. ``"initialisation"``: a claim about untrained networks.
``"method"``: a property of the method on any network; the row says why (``note``).

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
from scipy import stats

__all__ = ["Estimate", "Rule", "Verdict", "Claim", "verdict", "paired_bootstrap",
           "bootstrap", "seed_interval", "HELD", "NOT_HELD", "NOT_DECIDED", "SETTING", "LEVEL",
           "SCOPES"]

HELD, NOT_HELD, NOT_DECIDED, SETTING = "held", "not held", "not decided", "setting"
LEVEL = 0.95
SCOPES = ("trained", "initialisation", "method")


@dataclass(frozen=True)
class Estimate:
    """A number with an optional interval and how the interval was obtained.

    Args:
        value: the estimate.
        low: the interval's lower end, or None (a point estimate).
        high: its upper end, or None.
        method: how the interval was obtained, e.g. "bootstrap over 1000 test images,
            1000 resamples".
        seeds: the training seeds the value is over (0: not a seed statistic).

    Example:
        >>> Estimate(0.5, 0.4, 0.6).format(".2f"), Estimate(float("nan")).format()
        ('0.50 [0.40, 0.60]', 'nan')
    """

    value: float
    low: float | None = None
    high: float | None = None
    method: str = ""
    seeds: int = 0

    @classmethod
    def of(cls, value: Estimate | float) -> Estimate:
        """``value`` as an estimate: itself, or a number without an interval."""
        return value if isinstance(value, cls) else cls(float(value))

    @property
    def has_interval(self) -> bool:
        """Whether both ends of the interval are given."""
        return self.low is not None and self.high is not None

    @property
    def is_nan(self) -> bool:
        """Whether the value or an end of its interval is missing or NaN."""
        numbers = [self.value] + ([self.low, self.high] if self.has_interval else [])
        return any(x is None or (isinstance(x, float) and math.isnan(x)) for x in numbers)

    def format(self, fmt: str = ".3f") -> str:
        """The value, and its interval in brackets, in format ``fmt``; "nan" if undefined."""
        if self.is_nan:
            return "nan"
        text = f"{self.value:{fmt}}"
        return text + (f" [{self.low:{fmt}}, {self.high:{fmt}}]" if self.has_interval else "")


@dataclass(frozen=True)
class Rule:
    """How a claim is decided (the module doc says how the margin reads).

    Args:
        op: ">", "<" or "within".
        threshold: the paper's value or the level to pass.
        margin: how far past the threshold (for "within": the band's half-width), >= 0.

    Example:
        >>> Rule(">", 0.5, 0.1).cut, Rule(">", 0.5, 0.1).describe()
        (0.6, 'x > 0.5 + 0.1')
        >>> Rule("within", 1.0, 0.2).describe()
        '|x - 1| <= 0.2'
    """

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
        """The rule as the table shows it, numbers in format ``fmt``."""
        if self.op == "within":
            return f"|x - {self.threshold:{fmt}}| <= {self.margin:{fmt}}"
        shown = f"{self.threshold:{fmt}}" + (
            f" {'+' if self.op == '>' else '-'} {self.margin:{fmt}}" if self.margin else "")
        return f"x {self.op} {shown}"


@dataclass(frozen=True)
class Verdict:
    """A decision and why.

    Args:
        outcome: ``HELD``, ``NOT_HELD``, ``NOT_DECIDED`` or ``SETTING``.
        reason: what decided it, in words.

    Example:
        >>> Verdict(HELD, "estimate > 0.5").outcome
        'held'
    """

    outcome: str
    reason: str


def verdict(estimate: Estimate | float, rule: Rule) -> Verdict:
    """Decide ``rule`` for ``estimate`` (the module doc says how).

    Args:
        estimate: an ``Estimate`` or a plain number (a point estimate).
        rule: the rule.

    Returns:
        The ``Verdict``: held, not held or not decided, with the reason.

    Example:
        >>> verdict(Estimate(0.7, 0.62, 0.8), Rule(">", 0.5, 0.1))
        Verdict(outcome='held', reason='interval > 0.6')
        >>> verdict(Estimate(0.7, 0.55, 0.8), Rule(">", 0.5, 0.1)).outcome
        'not decided'
        >>> verdict(0.3, Rule("<", 0.5)).reason
        'estimate < 0.5'
    """
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
    """A percentile bootstrap interval of ``statistic`` over the rows of ``values``
    (``paired_bootstrap`` of one sample).

    Args:
        values: one row per unit resampled (image, say); NaN rows are dropped.
        statistic: a function of the rows (default: their mean).
        n_resamples: bootstrap resamples.
        seed: the resampling's seed.
        level: the interval's coverage.
        unit: what a row is, for the estimate's ``method``.

    Returns:
        The statistic with its interval.

    Example:
        >>> est = bootstrap([1.0, 2.0, 3.0, 4.0], n_resamples=200)
        >>> est.value, est.low < est.value < est.high
        (2.5, True)
    """
    values = np.asarray(values, dtype=float)
    return paired_bootstrap(values, None, lambda a, _b: statistic(a), n_resamples,
                            seed, level, unit)


def paired_bootstrap(a, b=None, statistic: Callable | None = None, n_resamples: int = 1000,
                     seed: int = 0, level: float = LEVEL, unit: str = "images") -> Estimate:
    """A percentile bootstrap interval of ``statistic(a, b)``, resampling the same rows of
    ``a`` and ``b`` (paired: row i of both is one image). Rows where either is NaN are
    dropped together, so the pairing holds.

    Args:
        a: one row per unit.
        b: as many rows, paired with ``a``'s, or None.
        statistic: a function of (rows of a, rows of b or None) (default: mean(a) -
            mean(b), or mean(a) without ``b``).
        n_resamples: bootstrap resamples.
        seed: the resampling's seed.
        level: the interval's coverage.
        unit: what a row is, for the estimate's ``method``.

    Returns:
        The statistic with its interval; NaN when no row is left.

    Raises:
        ValueError: when ``a`` and ``b`` differ in rows.

    Example:
        >>> est = paired_bootstrap([2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0])
        >>> est.value, (est.low, est.high)
        (1.0, (1.0, 1.0))
    """
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
    """The mean over training seeds with a Student-t interval.

    Args:
        values: one value per seed.
        level: the interval's coverage.

    Returns:
        The mean with its interval and ``seeds`` set; one seed gives no interval, none or
        a NaN gives NaN.

    Example:
        >>> est = seed_interval([0.8, 0.82, 0.84])
        >>> round(est.value, 2), est.seeds, round(float(est.high - est.value), 3)
        (0.82, 3, 0.05)
    """
    values = np.asarray(values, dtype=float)
    if len(values) == 0 or np.isnan(values).any():
        return Estimate(float("nan"))
    mean = float(values.mean())
    if len(values) < 2:
        return Estimate(mean, method="1 seed: no interval", seeds=1)
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(
        len(values))
    return Estimate(mean, mean - half, mean + half, f"{level:.0%} t-interval over "
                                                    f"{len(values)} seeds", len(values))


# --- rows and the table ---------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    """One row of "Paper vs this book".

    ``rule=None`` makes the row a setting (a value fixed by construction, shown, never
    judged). ``shown`` overrides how our estimate is written (units, percentages);
    ``control`` is the chance level or control measurement that the claim must beat.
    ``scope`` is one of ``SCOPES`` (see the module doc); a trained row carries the same
    statistic on the placebo networks (``placebo``) and the seed interval of the paired
    difference (``gain``): build it with ``Claim.trained``. A method row says why the
    property holds of any network (``note``).

    Args:
        claim: what the paper claims, in words.
        paper: the paper's value, as it states it.
        ours: our estimate.
        rule: how the claim is decided; None: a setting, shown and never judged.
        control: the chance level or control the claim must beat.
        shown: how our estimate is written, overriding ``ours.format``.
        fmt: the numbers' format.
        scope: one of ``SCOPES`` for a judged row.
        placebo: the same statistic on the networks at initialisation (trained rows).
        gain: the seed interval of trained - placebo (trained rows).
        note: why a method row holds of any network.

    Raises:
        ValueError: naming the claim, for a judged row without a scope, a trained row
            without its placebo, or a method row without its note.

    Example:
        >>> row = Claim.trained("accuracy beats chance", "0.9", [0.8, 0.82, 0.81],
        ...                     [0.1, 0.11, 0.1], Rule(">", 0.5))
        >>> row.decide().outcome
        'held'
    """

    claim: str
    paper: str
    ours: Estimate | float
    rule: Rule | None = None
    control: str = "—"
    shown: str | None = None
    fmt: str = ".3f"
    scope: str | None = None
    placebo: Estimate | float | None = None
    gain: Estimate | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.rule is None:
            return
        if self.scope not in SCOPES:
            raise ValueError(f"{self.claim!r}: a judged row declares its scope, one of "
                             f"{SCOPES}; got {self.scope!r}")
        if self.scope == "trained" and (self.placebo is None or self.gain is None):
            raise ValueError(f"{self.claim!r}: a trained row needs its placebo value and the "
                             "trained - placebo difference (use Claim.trained)")
        if self.scope == "method" and not self.note:
            raise ValueError(f"{self.claim!r}: a method row says why it holds of any network "
                             "(note=...)")

    @classmethod
    def trained(cls, claim: str, paper: str, trained: Sequence[float],
                placebo: Sequence[float], rule: Rule | None, **fields) -> Claim:
        """A row about what training produced, from the statistic measured on each
        training seed's network (``trained``) and on the same network at initialisation
        (``placebo``, seed for seed): means and t-intervals over the seeds, and the
        interval of the paired difference trained - placebo.

        Args:
            claim: what the paper claims.
            paper: the paper's value.
            trained: the statistic on each seed's trained network.
            placebo: the same on each seed's network at initialisation.
            rule: how the claim is decided.
            **fields: the other fields of ``Claim`` (``control``, ``shown``, ``fmt``).

        Returns:
            The row, scope "trained".

        Example:
            >>> row = Claim.trained("sparse", "90%", [0.9, 0.91, 0.92], [0.5, 0.5, 0.51],
            ...                     Rule(">", 0.8))
            >>> round(row.gain.value, 3), row.decide().outcome
            (0.407, 'held')
            >>> Claim.trained("sparse", "90%", [0.9], [0.5], Rule(">", 0.8)).decide().outcome
            'not decided'
        """
        trained, placebo = np.asarray(trained, float), np.asarray(placebo, float)
        if trained.shape != placebo.shape or trained.ndim != 1 or len(trained) == 0:
            raise ValueError(f"{claim!r}: trained and placebo need one value per seed each, "
                             f"got shapes {trained.shape} and {placebo.shape}")
        return cls(claim, paper, seed_interval(trained), rule, scope="trained",
                   placebo=seed_interval(placebo), gain=seed_interval(trained - placebo),
                   **fields)

    @property
    def estimate(self) -> Estimate:
        """``ours`` as an ``Estimate``."""
        return Estimate.of(self.ours)

    def decide(self) -> Verdict:
        """The row's verdict: its rule on our estimate and, for a trained row, on the gain
        over the placebo (the module doc says how); ``SETTING`` without a rule."""
        if self.rule is None:
            return Verdict(SETTING, "fixed by construction: shown, not judged")
        own = verdict(self.estimate, self.rule)
        if self.scope != "trained" or self.estimate.is_nan:
            return own
        if self.estimate.seeds < 2:
            return Verdict(NOT_DECIDED, f"one training seed decides nothing about training "
                                        f"(on it: {own.outcome}, {own.reason})")
        if self.rule.op == "within":  # the untrained networks must fail the band
            theirs = verdict(Estimate.of(self.placebo), self.rule)
            beats = {HELD: NOT_HELD, NOT_HELD: HELD}.get(theirs.outcome, NOT_DECIDED)
            against = Verdict(beats, f"placebo: {theirs.reason}")
        else:
            against = verdict(self.gain, Rule(self.rule.op, 0.0, self.rule.margin))
            against = Verdict(against.outcome, f"trained - placebo: {against.reason}")
        if NOT_HELD in (own.outcome, against.outcome):
            failed = own if own.outcome == NOT_HELD else against
            return Verdict(NOT_HELD, failed.reason)
        if own.outcome == against.outcome == HELD:
            return Verdict(HELD, f"{own.reason}; {against.reason}")
        return Verdict(NOT_DECIDED, f"{own.reason}; {against.reason}")


