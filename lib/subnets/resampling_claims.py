"""Chapter 5's claims, judged on a ``resampling_study`` over training seeds: ``trained_claim``
turns a statistic of a ``SeedStudy`` into a ``claims.Claim.trained`` row (every seed's
trained network against the same network untrained, its placebo), the paper's claims
section by section (``figure2_claims``, ``figure3_claims``, ``table1_claims``,
``influence_claims``), ``over_seeds`` averages a statistic for a control column and
``verdicts_apart`` reads each row's rule on the two kinds of network apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from . import claims, metrics, resampling
from .resampling_study import SeedStudy, nanmean

__all__ = ["over_seeds", "trained_claim", "verdicts_apart", "figure2_claims", "figure3_claims",
           "table1_claims", "influence_claims"]


def over_seeds(runs: Sequence[SeedStudy], statistic: Callable[[SeedStudy, float], float],
               at: float | Sequence[float] | None = None) -> float:
    """``statistic(run, at)`` averaged over the seeds' studies (``at`` None: the last
    checkpoint).

    Args:
        runs: one ``SeedStudy`` per training seed.
        statistic: (study, checkpoint) -> a number (NaN where undefined).
        at: the checkpoint(s) passed to ``statistic``; None: each study's last.

    Returns:
        The mean over the studies of the defined values (``nanmean``).

    Example:
        >>> class Run:
        ...     accuracy = pd.Series({0.0: 0.5, 1.0: 0.9})
        >>> over_seeds([Run(), Run()], lambda r, at: r.accuracy[at])
        0.9
    """
    return nanmean([statistic(r, max(r.accuracy.index) if at is None else at) for r in runs])


def trained_claim(claim: str, paper: str, runs: Sequence[SeedStudy],
                  statistic: Callable[[SeedStudy, float], float], what: str,
                  at: float | Sequence[float] | None = None, **fields) -> claims.Claim:
    """A claim about training, judged by ``statistic(run, at) > 0``: measured on every
    seed's trained network (``at``; None: the last checkpoint) and, as its placebo, on
    the same seed's untrained network (epoch 0), on the same images.

    Args:
        claim, paper: the row's claim and the paper's statement or value.
        runs: one ``SeedStudy`` per training seed.
        statistic: (study, checkpoint) -> a number that is above 0 where the claim holds.
        what: what the number is, shown before its estimate.
        at: the checkpoint(s) the trained networks are read at.
        fields: more ``claims.Claim`` fields (``control``, ...).

    Returns:
        The ``claims.Claim.trained`` row.

    Example:
        >>> class Run:  # a stand-in for a SeedStudy: a statistic 0.1 at init, 1.0 trained
        ...     accuracy = pd.Series({0.0: 0.5, 1.0: 0.9})
        ...     value = {0.0: 0.1, 1.0: 1.0}
        >>> row = trained_claim("c", "p", [Run(), Run()], lambda r, e: r.value[e], "gain")
        >>> row.estimate.value, row.placebo.value, row.shown.split(":")[0]
        (1.0, 0.1, 'gain')
    """
    trained = [statistic(r, max(r.accuracy.index) if at is None else at) for r in runs]
    row = claims.Claim.trained(claim, paper, trained, [statistic(r, 0.0) for r in runs],
                               claims.Rule(">", 0.0), **fields)
    return dataclasses.replace(row, shown=f"{what}: {row.estimate.format()}")


def verdicts_apart(rows: Sequence[claims.Claim]) -> pd.DataFrame:
    """Every claim about training read on the two kinds of network apart: the verdict of
    its rule on the trained networks alone, on the placebo (untrained) networks alone, and
    the row's verdict.

    Args:
        rows: claims rows; those of scope "trained" are read.

    Returns:
        One row per claim, the three outcomes as columns.

    Example:
        >>> row = claims.Claim.trained("c", "p", [1.0, 1.2], [1.0, 1.1], claims.Rule(">", 0))
        >>> verdicts_apart([row]).iloc[0].tolist()
        ['not decided', 'held', 'not decided']
    """
    about_training = [r for r in rows if r.scope == "trained"]
    return pd.DataFrame({
        "trained networks": [claims.verdict(r.estimate, r.rule).outcome for r in about_training],
        "placebo (untrained)": [claims.verdict(r.placebo, r.rule).outcome
                                for r in about_training],
        "verdict": [r.decide().outcome for r in about_training]},
        index=pd.Index([r.claim for r in about_training], name="claim"))


def figure2_claims(runs: Sequence[SeedStudy]) -> list[claims.Claim]:
    """The claims of the paper's Figure 2 (Section 5.1), judged on the seeds' studies:
    precision's patches beat correlation's across training (mean over the trained
    checkpoints), beat the full network at the first trained checkpoint and are surpassed
    by it at the last.

    Args:
        runs: one ``SeedStudy`` per training seed.

    Returns:
        Three ``claims.Claim.trained`` rows.

    Example:
        >>> import torch
        >>> from subnets.patches import PatchAccuracy
        >>> def patch(a):  # one test image, its patches' accuracy a
        ...     return PatchAccuracy(a, torch.tensor([a]))
        >>> trained = {"correlation": 0.6, "precision": 0.8, "random": 0.5}
        >>> run = SeedStudy({}, pd.Series({0.0: 0.5, 1.0: 0.9}),
        ...                 {0.0: np.array([0.0]), 1.0: np.array([1.0])},
        ...                 {(e, m): patch(a if e else 0.5)  # untrained: chance
        ...                  for e in (0.0, 1.0) for m, a in trained.items()},
        ...                 {}, {}, {}, {}, np.ones(1, dtype=bool))
        >>> [round(row.estimate.value, 2) for row in figure2_claims([run])]
        [0.2, -0.2, 0.2]
    """
    epochs = list(runs[0].accuracy.index)
    trained, first, last = epochs[1:], epochs[1], epochs[-1]
    random_along = over_seeds(runs, lambda r, e: r.patch_accuracy("random", e), trained)
    return [
        trained_claim(
            "Fig. 2: precision patches beat correlation patches across training",
            "across the entire range of epochs", runs,
            lambda r, e: r.patch_accuracy("precision", e) - r.patch_accuracy("correlation", e),
            f"precision − correlation (mean over {len(trained)} checkpoints)", at=trained,
            control=f"random neurons {random_along:.3f}"),
        trained_claim(
            "Fig. 2: precision patches beat the full network early in training",
            "during early stages", runs,
            lambda r, e: r.patch_accuracy("precision", e) - r.full_accuracy(e),
            f"precision − full network at epoch {first:g}", at=first, control="chance 0.5"),
        trained_claim(
            "Fig. 2: the full network surpasses the precision patches by the end",
            "by the end of training", runs,
            lambda r, e: r.full_accuracy(e) - r.patch_accuracy("precision", e),
            f"full network − precision at epoch {last:g}")]


def figure3_claims(runs: Sequence[SeedStudy]) -> list[claims.Claim]:
    """The claim of the paper's Figure 3 (Section 5.2) that a rule can test: correlation
    and precision select overlapping sets beyond chance (Jaccard minus its chance level),
    with the Spearman trend over the checkpoints and the noise-seed ceiling as controls.

    Args:
        runs: one ``SeedStudy`` per training seed.

    Returns:
        One ``claims.Claim.trained`` row.

    Example:
        >>> run = SeedStudy({}, pd.Series({0.0: 0.5, 1.0: 0.9}), {}, {},
        ...                 {0.0: (np.array([0.2]), np.array([0.2])),
        ...                  1.0: (np.array([0.6]), np.array([0.2]))}, {}, {}, {},
        ...                 np.ones(1, dtype=bool))
        >>> row, = figure3_claims([run, run])
        >>> round(row.estimate.value, 2), round(row.placebo.value, 2)  # Jaccard - chance
        (0.4, 0.0)
    """
    chance = over_seeds(runs, lambda r, e: nanmean(r.jaccard[e][1]))
    trend = nanmean([metrics.spearman([np.nanmean(r.jaccard[e][0]) for e in r.accuracy.index],
                                      r.accuracy.values) for r in runs])
    def ceiling_of(m):  # NaN for a study without the other noise seed (selections only)
        return over_seeds(runs, lambda r, e: r.noise_seed.get(e, {}).get(m, np.nan))

    ceiling = ", ".join(f"{m} {ceiling_of(m):.3f}" for m in ("correlation", "precision"))
    return [trained_claim(
        "Fig. 3: correlation and precision select overlapping sets beyond chance",
        "similarity increases as accuracy improves (converge toward similar sets)", runs,
        SeedStudy.overlap, "Jaccard − chance",
        control=f"chance Jaccard {chance:.3f}; Spearman of Jaccard and accuracy over the "
                f"checkpoints {trend:.2f} (not judged: an untrained network has no "
                f"trajectory); each metric against itself under another noise seed: {ceiling}")]


def table1_claims(runs: Sequence[SeedStudy], has_objects: bool = True) -> list[claims.Claim]:
    """The claims of the paper's Table 1 and Figure 4 (Section 5.3): precision's patches
    beat the four baselines', every metric's beat random neurons', and precision's and
    correlation's patches lie on the object more often than both controls (random neurons'
    patches, boxes of the same sizes at random places).

    Args:
        runs: one ``SeedStudy`` per training seed.
        has_objects: whether the images have object masks (else the localisation rows
            are not decided).

    Returns:
        Four ``claims.Claim.trained`` rows.

    Example:
        >>> import torch
        >>> from subnets.patches import PatchAccuracy
        >>> trained = dict.fromkeys(resampling.METRICS, 0.7) | {"precision": 0.8, "random": 0.5}
        >>> def patch(a):  # one test image, its patches' accuracy a
        ...     return PatchAccuracy(a, torch.tensor([a]))
        >>> run = SeedStudy({}, pd.Series({0.0: 0.5, 1.0: 0.9}), {},
        ...                 {(e, m): patch(a if e else 0.5)  # untrained: chance
        ...                  for e in (0.0, 1.0) for m, a in trained.items()},
        ...                 {}, {}, {}, {}, np.ones(1, dtype=bool))
        >>> [round(row.estimate.value, 2) for row in table1_claims([run], has_objects=False)]
        [0.1, 0.2, nan, nan]
    """
    baselines, paper = resampling.METRICS[2:6], resampling.METRICS[:6]
    rows = [
        trained_claim(
            "Table 1: precision slightly outperforms the baselines", "best accuracy", runs,
            lambda r, e: r.patch_accuracy("precision", e)
            - max(r.patch_accuracy(b, e) for b in baselines),
            "precision − the best of the four baselines"),
        trained_claim(
            "Table 1: all metrics perform well", "all high", runs,
            lambda r, e: min(r.patch_accuracy(m, e) for m in paper)
            - r.patch_accuracy("random", e), "worst metric − random neurons",
            control=f"random neurons "
                    f"{over_seeds(runs, lambda r, e: r.patch_accuracy('random', e)):.3f}")]
    for m in ("precision", "correlation"):
        rows.append(trained_claim(
            f"Table 1, Fig. 4: {m} patches touch the object more often than random neurons' "
            f"patches and randomly placed boxes", "precision: 34 of 35 (0.97)", runs,
            lambda r, e, m=m: r.on_object(m, e), f"share on the object "
            f"{over_seeds(runs, lambda r, e, m=m: r.share(m, e)):.3f}, minus the larger "
            f"control", control="no object masks for this dataset" if not has_objects else
            f"random neurons {over_seeds(runs, lambda r, e: r.share('random', e)):.3f}; a box "
            f"of the same size at a random place "
            f"{over_seeds(runs, lambda r, e, m=m: r.share(m, e, 'chance')):.3f}"))
    return rows


def influence_claims(runs: Sequence[SeedStudy]) -> list[claims.Claim]:
    """The abstract's claim, which the paper does not test: correlation selects neurons of
    larger influence on the output (|change of log-odds| when switched off) than random
    neurons and than precision's.

    Args:
        runs: one ``SeedStudy`` per training seed.

    Returns:
        Two ``claims.Claim.trained`` rows.

    Example:
        >>> changes = {0.0: np.zeros((1, 7)), 1.0: np.eye(1, 7) * 2}  # correlation: 2
        >>> run = SeedStudy({}, pd.Series({0.0: 0.5, 1.0: 0.9}), {}, {}, {}, {}, changes, {},
        ...                 np.ones(1, dtype=bool))
        >>> [(row.estimate.value, row.placebo.value) for row in influence_claims([run])]
        [(2.0, 0.0), (2.0, 0.0)]
    """
    rows = []
    correlation = over_seeds(runs, lambda r, e: r.switched("correlation", e))
    for other in ("random", "precision"):
        rows.append(trained_claim(
            f"Abstract: correlation selects neurons of larger influence on the output than "
            f"{other} ones", "large influence over the network output (not measured)", runs,
            lambda r, e, o=other: r.switched("correlation", e) - r.switched(o, e),
            f"|change of log-odds| {correlation:.3f} − {other}",
            control=f"{other} neurons "
                    f"{over_seeds(runs, lambda r, e, o=other: r.switched(o, e)):.3f}"))
    return rows
