"""A chapter's rows as tables: every column of the full rows, one line per claim with each
interval's method said once, and the rows beside their recorded run."""

import math

import pandas as pd
import pytest

from subnets import records
from subnets.claim_tables import brief_table, claims_frame, scale_comparison
from subnets.claims import (
    HELD,
    NOT_HELD,
    SETTING,
    Claim,
    Estimate,
    Rule,
)


def test_claims_frame_shows_rule_interval_control_and_settings():
    rows = [Claim("x beats chance", "0.9", Estimate(0.7, 0.6, 0.8, "bootstrap"),
                  Rule(">", 0.5), control="chance 0.5", scope="method", note="a test"),
            Claim("a setting", "640 → 50", 50.0, shown="640 → 50")]
    frame = claims_frame(rows)
    assert list(frame["verdict"]) == [HELD, SETTING]
    assert frame.loc[0, "rule"] == "x > 0.5" and frame.loc[0, "control"] == "chance 0.5"
    assert frame.loc[0, "this book"] == "0.700 [0.600, 0.800]"
    assert frame.loc[1, "rule"] == "—"


def test_scale_comparison_puts_each_claims_verdicts_side_by_side(monkeypatch):
    import types

    ci = [Claim(c, "yes", v, Rule(">", 0.0), scope="initialisation")
          for c, v in (("a", 0.5), ("b", -1.0))]
    recorded = pd.DataFrame([{"claim": "b", "paper": "yes", "this book": "2.000",
                              "verdict": HELD},
                             {"claim": "c", "paper": "no", "this book": "1.000",
                              "verdict": NOT_HELD}])
    record = types.SimpleNamespace(claims=recorded, summary="recorded on a test")
    monkeypatch.setattr(records, "recorded_claims",
                        lambda chapter: record if chapter == "09_example" else None)
    frame = scale_comparison(ci, "09_example").data
    assert frame.claim.tolist() == ["a", "b", "c"]
    assert frame["CI verdict"].tolist() == [HELD, NOT_HELD, "—"]
    assert frame["larger verdict"].tolist() == ["—", HELD, NOT_HELD]
    assert (scale_comparison(ci, "09_other").data["larger scale"] == "not recorded yet").all()


def test_every_judged_row_declares_its_scope_and_a_method_row_says_why():
    with pytest.raises(ValueError, match="scope"):
        Claim("c", "p", 0.5, Rule(">", 0))
    with pytest.raises(ValueError, match="note"):
        Claim("c", "p", 0.5, Rule(">", 0), scope="method")
    with pytest.raises(ValueError, match="Claim.trained"):
        Claim("c", "p", 0.5, Rule(">", 0), scope="trained")
    with pytest.raises(ValueError, match="one value per seed"):
        Claim.trained("c", "p", [0.5, 0.6], [0.1], Rule(">", 0))
    assert Claim("c", "p", 0.5).decide().outcome == SETTING  # settings need no scope
    frame = claims_frame([Claim("c", "p", 0.5, Rule(">", 0), scope="method", note="any net"),
                          Claim.trained("t", "p", [0.8, 0.9], [0.1, 0.2], Rule(">", 0.5))])
    assert frame.scope.tolist() == ["method: any net", "trained"]
    assert frame.placebo[0] == "—" and "trained - placebo" in frame.placebo[1]


def test_the_rows_carry_the_numbers_that_the_scorecard_plots():
    rows = claims_frame([Claim.trained("t", "p", [0.8, 0.9], [0.1, 0.2], Rule("<", 1.0, 0.1)),
                         Claim("s", "p", 3.0)], numbers=True)
    trained, setting = rows.to_dict("records")
    assert trained["value"] == pytest.approx(0.85) and trained["low"] < 0.85 < trained["high"]
    assert (trained["op"], trained["threshold"], trained["margin"]) == ("<", 1.0, 0.1)
    assert trained["placebo_value"] == pytest.approx(0.15) and trained["placebo_low"] < 0.15
    assert setting["op"] == "" and setting["value"] == 3.0
    assert all(math.isnan(setting[k]) for k in ("low", "threshold", "placebo_value"))
    assert "value" not in claims_frame([Claim("s", "p", 3.0)])


def test_the_brief_table_says_each_interval_method_once():
    boot = "95% paired bootstrap over 100 images, 1000 resamples, seed 0"
    rows = claims_frame([
        Claim("a", "p", Estimate(0.5, 0.4, 0.6, boot), Rule(">", 0.3), scope="method", note="n"),
        Claim("b", "p", Estimate(0.2, 0.1, 0.3, boot), Rule(">", 0.3), scope="method", note="n"),
        Claim.trained("c", "p", [0.8, 0.9], [0.1, 0.2], Rule(">", 0.5)),
        Claim("d", "p", 0.7, Rule(">", 0.5), scope="initialisation")])
    table = brief_table(rows)
    assert list(table.data.columns) == ["claim", "paper", "ours", "verdict", "scope"]
    assert table.data.scope.tolist() == ["method", "method", "trained", "initialisation"]
    assert [text[-1] for text in table.data.ours[:3]] == ["ᵃ", "ᵃ", "ᵇ"]
    assert table.data.ours[3] == "0.700"  # a point estimate has no method to say
    assert table.caption.count(boot) == 1 and "ᵇ 95% t-interval over 2 seeds" in table.caption
    assert table.caption.startswith("2 held, 1 not held, 1 not decided")
