"""The drop statistics on constructed cases with known answers (no models, milliseconds)."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.validate.stats import drop_stats, mcnemar, paired_bootstrap


def _pairs(both_right: int, broke: int, fixed: int, both_wrong: int) -> tuple[np.ndarray, ...]:
    ref = [1] * both_right + [1] * broke + [0] * fixed + [0] * both_wrong
    art = [1] * both_right + [0] * broke + [1] * fixed + [0] * both_wrong
    return np.array(ref, bool), np.array(art, bool)


def test_mcnemar_matches_the_exact_binomial_by_hand() -> None:
    # 10 samples the artifact broke, 2 it fixed: p = 2 * P(X <= 2 | n=12, 1/2) = 2 * 79 / 4096
    p, discordant = mcnemar(*_pairs(180, 10, 2, 8))
    assert discordant == (10, 2)
    assert p == pytest.approx(2 * (1 + 12 + 66) / 4096)
    # agreement on every sample: no evidence of a difference at all
    assert mcnemar(*_pairs(90, 0, 0, 10))[0] == 1.0
    # symmetric disagreement is noise: 5 broke, 5 fixed -> p = 1
    assert mcnemar(*_pairs(80, 5, 5, 10))[0] == pytest.approx(1.0)


def test_drop_stats_say_when_a_drop_is_within_noise() -> None:
    ref, art = _pairs(180, 10, 2, 8)  # accuracy 0.95 -> 0.91: 8 samples net, significant
    stats = drop_stats((ref, art), None, len(ref), True, (ref, art))
    assert stats.significant is True and stats.mcnemar_p < 0.05
    lo, hi = stats.ci95
    assert lo <= 0.04 <= hi and lo > 0  # the observed drop, inside an interval above 0
    ref, art = _pairs(186, 2, 1, 11)  # one net sample of 200: noise
    noisy = drop_stats((ref, art), None, len(ref), True, (ref, art))
    assert noisy.significant is False and noisy.ci95[0] < 0 < noisy.ci95[1]


def test_bootstrap_of_a_constant_difference_is_that_difference() -> None:
    diff = np.full(50, 0.25)
    assert paired_bootstrap(50, lambda idx: float(diff[idx].mean())) == (0.25, 0.25)


def test_lower_is_better_drops_are_signed_as_worse() -> None:
    ref_err, art_err = np.full(40, 1.0), np.full(40, 1.5)  # MAE rose by 0.5: worse
    stats = drop_stats((ref_err, art_err), None, 40, False)
    assert stats.ci95 == pytest.approx((0.5, 0.5)) and stats.significant is True
    assert stats.mcnemar_p is None


def test_ladder_keeps_the_cheaper_rung_when_its_drop_is_noise() -> None:
    from toolkit.pipeline.budget import Budget

    budget = Budget(max_drop=0.005)
    assert budget.judge(0.004, None)[0]
    kept, why = budget.judge(0.008, None, significant=False)
    assert kept and "within noise" in why
    assert not budget.judge(0.008, None, significant=True)[0]  # a real loss: next rung
    assert not budget.judge(0.02, None, significant=False)[0]  # over 2x the budget: never
    # an interval reaching past 2x the budget: the split cannot vouch for it (resnet8's case)
    assert budget.judge(0.008, None, significant=False, ci95=(-0.001, 0.009))[0]
    assert not budget.judge(0.008, None, significant=False, ci95=(-0.003, 0.019))[0]
    both = Budget(max_drop=0.01, min_sqnr=30)
    assert not both.judge(0.0, 25.0)[0] and both.judge(0.0, 31.0)[0]


def test_a_drop_of_exactly_the_budget_is_within_it() -> None:
    """3 of 1,000 samples lost is 0.0030000000000000027 in floats: the ladder, the report's
    flags and the gates must all call that inside a 0.003 budget (the ladder did not)."""
    from toolkit.core.report import over_drop
    from toolkit.pipeline.budget import Budget

    drop = 0.446 - 0.443
    assert drop > 0.003 and not over_drop(drop, 0.003)
    assert over_drop(0.004 - 0.0, 0.003) and not over_drop(None, 0.003)
    kept, why = Budget(max_drop=0.003).judge(drop, None, significant=True)
    assert kept and "<= budget" in why, why
