import numpy as np
import pandas as pd
import pytest

from subnets import claims, trends


def frame(values):
    """Rows (level, seed) -> x for levels 1..len(values[0]), one list per seed."""
    rows = [{"level": lv + 1, "seed": s, "x": v} for s, seed in enumerate(values)
            for lv, v in enumerate(seed)]
    return pd.DataFrame(rows).set_index(["level", "seed"])


def test_level_slope_is_the_least_squares_slope_and_log_refuses_non_positive_values():
    assert trends.level_slope([1, 2, 3, 4], [1.0, 3.0, 2.0, 6.0]) == pytest.approx(1.4)
    assert trends.level_slope([1, 2], [0.01, 0.1], log=True) == pytest.approx(1.0)
    assert np.isnan(trends.level_slope([1, 2], [0.0, 1.0], log=True))
    assert np.isnan(trends.level_slope([1, 2], [np.nan, 1.0]))


def test_seed_slopes_skip_a_seed_without_values():
    f = frame([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [np.nan] * 3])
    assert trends.seed_slopes(f, "x", [1, 2, 3]) == pytest.approx([1.0, -1.0])


def test_slope_margin_is_two_standard_errors_of_a_slope():
    # 2 * 100 * sqrt(0.25 / n) / sqrt(sum (s - mean)^2): n = 400, levels 1..4 -> sum = 5
    assert trends.slope_margin(400, [1, 2, 3, 4]) == pytest.approx(2 * 100 * 0.025 / 5 ** 0.5)
    with pytest.raises(ValueError, match="levels"):
        trends.slope_margin(400, [2, 2])


def test_trend_claim_at_initialisation_and_about_training():
    falling = frame([[3.0, 2.0, 1.0], [3.1, 2.0, 0.9], [2.9, 2.1, 1.0]])
    flat = frame([[2.0, 2.0, 2.0], [2.1, 2.0, 2.1], [1.9, 2.0, 1.9]])
    init = trends.trend_claim("x falls", "Fig.", falling, "x", "<", [1, 2, 3])
    assert init.scope == "initialisation" and init.decide().outcome == claims.HELD
    assert init.shown.startswith("3 / 2.03 / 0.967; slope -1.02 [")
    rising = trends.trend_claim("x rises", "Fig.", falling, "x", ">", [1, 2, 3])
    assert rising.decide().outcome == claims.NOT_HELD
    trained = trends.trend_claim("x falls", "Fig.", falling, "x", "<", [1, 2, 3], flat, 0.1)
    assert trained.scope == "trained" and trained.decide().outcome == claims.HELD
    # the placebo falls as much: training produced nothing
    same = trends.trend_claim("x falls", "Fig.", falling, "x", "<", [1, 2, 3], falling, 0.1)
    assert same.decide().outcome != claims.HELD
    # a single seed (pair) decides nothing about training
    one = trends.trend_claim("x falls", "Fig.", frame([[3.0, 2.0, 1.0]]), "x", "<", [1, 2, 3],
                             frame([[2.0, 2.0, 2.0]]), pairs=True)
    assert one.shown.endswith("(one seed pair)") and one.decide().outcome == claims.NOT_DECIDED


def test_rank_correlations_per_group():
    rows = pd.DataFrame({"net": ["a"] * 6, "rate": [0.5] * 3 + [0.9] * 3,
                         "level": [1, 2, 3] * 2, "acc": [3.0, 2.0, 1.0, 1.0, 1.0, 1.0]})
    table = trends.rank_correlations(rows, "acc", ["net", "rate"])
    assert table.loc["a", 0.5] == pytest.approx(-1.0) and np.isnan(table.loc["a", 0.9])
