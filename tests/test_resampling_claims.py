"""Chapter 5's claims: every seed's trained network against its placebo, and each rule read
on the two kinds of network apart."""

import pandas as pd
import pytest

from subnets import claims, resampling_claims


def test_trained_claims_compare_every_seed_with_its_placebo():
    class Run:
        def __init__(self, at_init, trained):
            self.accuracy = pd.Series({0.0: 0.5, 1.0: 0.9})
            self.value = {0.0: at_init, 1.0: trained}

    runs = [Run(0.0, 1.0), Run(0.1, 1.1), Run(-0.1, 0.9)]
    row = resampling_claims.trained_claim("c", "p", runs, lambda r, e: r.value[e], "gain")
    assert row.scope == "trained" and row.shown.startswith("gain: ")
    assert row.estimate.value == pytest.approx(1.0) and row.placebo.value == pytest.approx(0.0)
    assert row.decide().outcome == claims.HELD
    same = resampling_claims.trained_claim("c", "p", runs, lambda r, e: r.value[0.0] + 1, "no gain")
    assert same.decide().outcome != claims.HELD  # the placebo earns it as well
    assert resampling_claims.over_seeds(runs, lambda r, e: r.value[e]) == pytest.approx(1.0)
    assert resampling_claims.over_seeds(runs, lambda r, e: r.value[e], 0.0) == pytest.approx(0.0)
    apart = resampling_claims.verdicts_apart([row, same])
    assert apart["trained networks"].tolist() == [claims.HELD, claims.HELD]
    assert apart["placebo (untrained)"].tolist()[1] == claims.HELD
