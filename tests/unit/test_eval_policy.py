"""The answer / retrieve / escalate policy: Learn-then-Test thresholds on synthetic confidences."""

from __future__ import annotations

import numpy as np
import pytest

from calibtune.errors import ConfigError
from calibtune.eval.policy import (
    certifiable_risks,
    decide,
    evaluate_policy,
    fit_policy,
    ltt_threshold,
)


def calibrated_sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Perfectly calibrated synthetic confidences and outcomes."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(0.0, 1.0, n)
    return c, (rng.uniform(0.0, 1.0, n) < c).astype(float)


@pytest.mark.parametrize("batch_size", [None, 1000])
def test_ltt_threshold_keeps_realised_risk_within_target_in_most_draws(batch_size):
    target, delta, violations, draws = 0.2, 0.1, 0, 100
    for seed in range(draws):
        c_val, y_val = calibrated_sample(500, seed)
        c_test, y_test = calibrated_sample(1000, 10_000 + seed)
        threshold = ltt_threshold(c_val, y_val, target, delta, batch_size)["threshold"]
        answered = c_test >= (np.inf if threshold is None else threshold)
        violations += bool(answered.any() and np.mean(1 - y_test[answered]) > target)
    assert violations / draws <= delta


def test_ltt_threshold_is_more_conservative_than_the_val_point_estimate():
    c, y = calibrated_sample(500, 0)
    fit = ltt_threshold(c, y, 0.2, 0.1)
    assert fit["val_risk_above"] < 0.2 and fit["p_value"] <= 0.1
    order = np.argsort(-c)
    point_risk = np.cumsum(1 - y[order]) / np.arange(1, c.size + 1)
    point_threshold = c[order][np.nonzero(point_risk <= 0.2)[0][-1]]
    assert fit["threshold"] > point_threshold


def test_no_threshold_when_the_target_is_unreachable():
    c = np.linspace(0.0, 1.0, 50)
    assert ltt_threshold(c, np.zeros(50), 0.2, 0.1)["threshold"] is None
    policy = fit_policy(
        c, np.zeros(50), None, answer_risk=0.2, escalate_risk=0.5, delta=0.1, batch_size=None
    )
    assert set(decide(policy, c)) == {"escalate"}


def test_three_actions_by_two_thresholds_and_per_domain_override():
    c, y = calibrated_sample(2000, 1)
    domains = np.where(np.arange(2000) % 2 == 0, "easy", "hard")
    policy = fit_policy(
        c,
        y,
        domains,
        answer_risk=0.2,
        escalate_risk=0.5,
        delta=0.1,
        batch_size=1000,
        per_domain=True,
        min_count=500,
    )
    t_answer, t_escalate = policy["answer_threshold"], policy["escalate_threshold"]
    assert 0 < t_escalate < t_answer < 1
    assert decide(policy, [t_answer, (t_answer + t_escalate) / 2, t_escalate - 1e-3]) == [
        "answer",
        "retrieve",
        "escalate",
    ]
    assert set(policy["domains"]) == {"easy", "hard"}
    hard = policy["domains"]["hard"]["answer_threshold"]
    assert decide(policy, [hard - 1e-9], ["hard"]) != ["answer"]
    result = evaluate_policy(policy, c, y, domains)
    assert sum(share["k"] for share in result["shares"].values()) == 2000
    low, high = result["answered_risk"]["ci95"]
    assert low <= result["answered_risk"]["value"] <= high


def test_policy_rejects_escalate_risk_below_answer_risk():
    c, y = calibrated_sample(100, 2)
    with pytest.raises(ConfigError, match="escalate_risk"):
        fit_policy(c, y, None, answer_risk=0.3, escalate_risk=0.2, delta=0.1, batch_size=None)


def test_domain_calibration_scores_resample_whole_questions():
    from calibtune.eval.scoring import domain_calibration_scores

    rng = np.random.default_rng(0)
    n = 400
    domains = np.where(np.arange(n) < 200, "a", "b")
    y = (rng.uniform(size=n) < 0.6).astype(float)
    c_global = np.full(n, 0.8)
    c_domain = np.clip(0.6 + rng.normal(0, 0.02, n), 0, 1)
    groups = [f"q{i // 4}" for i in range(n)]  # four phrasings per question
    scores = domain_calibration_scores(c_global, c_domain, y, domains, 15, 200, 0, groups)
    mean = scores["mean_domain_ece"]
    assert mean["per_domain"]["value"] < mean["global"]["value"]
    assert mean["delta"]["ci95"][1] < 0
    assert scores["domains"]["a"]["n"] == 200
    assert mean["resampled"] == "groups within each domain"
    assert set(mean["floor"]) == {"global", "per_domain"}
    assert mean["floor"]["per_domain"]["mean"] < mean["per_domain"]["value"] + 0.05


def test_calibrated_floor_matches_calibrated_outcomes_and_sits_below_miscalibrated_ones():
    from calibtune.eval.scoring import calibrated_floor, mean_domain_ece

    rng = np.random.default_rng(1)
    n = 900
    domains = np.repeat(np.array(["a", "b", "c"]), n // 3)
    c = rng.uniform(0.05, 0.6, n)
    floor = calibrated_floor(c, domains, 15, np.random.default_rng(2), draws=100)
    assert 0.05 < floor["mean"] < 0.15  # a few hundred rows a domain: well above 0
    calibrated = [
        mean_domain_ece(c, (rng.random(n) < c).astype(float), domains, 15) for _ in range(50)
    ]
    assert abs(np.mean(calibrated) - floor["mean"]) < 3 * floor["sd"] / np.sqrt(50) + 0.005
    shifted = (rng.random(n) < np.clip(c + 0.15, 0, 1)).astype(float)  # confidence too low
    assert mean_domain_ece(c, shifted, domains, 15) > floor["mean"] + 5 * floor["sd"]


def test_certifiable_risks_list_the_targets_this_confidence_can_promise():
    c_val, y_val = calibrated_sample(500, 3)
    c_val = 0.85 * c_val  # right at most 85 % of the time, calibrated
    y_val = (np.random.default_rng(4).uniform(size=500) < c_val).astype(float)
    c_test = 0.85 * calibrated_sample(1000, 5)[0]
    y_test = (np.random.default_rng(6).uniform(size=1000) < c_test).astype(float)
    rows = certifiable_risks(c_val, y_val, 0.1, 1000, c_test, y_test)
    assert [r["answer_risk"] for r in rows] == sorted(r["answer_risk"] for r in rows)
    certified = [r for r in rows if r["threshold"] is not None]
    assert rows[0]["threshold"] is None  # 5 % error: out of reach when the best is 85 % right
    assert certified and certified[-1]["answer_risk"] == 0.5
    thresholds = [r["threshold"] for r in certified]
    assert thresholds == sorted(thresholds, reverse=True)  # a looser target answers more
    shares = [r["test"]["value"] for r in certified]
    assert shares == sorted(shares) and shares[-1] > 0.1
    for row in certified:
        assert row["test_answered_risk"]["value"] <= row["answer_risk"] + 0.05


def clustered_sample(n_groups: int, error_rate: float | None, seed: int):
    """Groups of three rows that share confidence and outcome (a question's phrasings);
    `error_rate` None: calibrated, else outcomes independent of confidence at that error rate."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(0.0, 1.0, n_groups)
    right = c if error_rate is None else np.full(n_groups, 1.0 - error_rate)
    y = (rng.uniform(size=n_groups) < right).astype(float)
    return np.repeat(c, 3), np.repeat(y, 3), np.repeat(np.arange(n_groups), 3)


def test_group_units_keep_the_level_where_clustered_rows_break_row_p_values():
    # every answered set errs 22 % of the time: any certified 0.2 threshold is a false promise
    false_row = false_group = 0
    for seed in range(100):
        c, y, groups = clustered_sample(200, 0.22, seed)
        false_row += ltt_threshold(c, y, 0.2, 0.1)["threshold"] is not None
        false_group += ltt_threshold(c, y, 0.2, 0.1, groups=groups)["threshold"] is not None
    assert false_group / 100 <= 0.1 < false_row / 100  # rows counted as independent: optimistic


def test_group_units_certify_when_the_groups_carry_the_evidence():
    c, y, groups = clustered_sample(1000, None, 0)
    by_row = ltt_threshold(c, y, 0.2, 0.1)
    by_group = ltt_threshold(c, y, 0.2, 0.1, groups=groups)
    assert by_group["threshold"] is not None and by_group["p_value"] <= 0.1
    assert by_group["threshold"] > by_row["threshold"]  # a third of the evidence: more cautious
    c_test, y_test, _ = clustered_sample(1000, None, 1)
    assert np.mean(1 - y_test[c_test >= by_group["threshold"]]) <= 0.2
    policy = fit_policy(
        c, y, None, answer_risk=0.2, escalate_risk=0.5, delta=0.1, batch_size=1500, groups=groups
    )
    assert policy["unit"] == "group" and policy["batch_size"] is None  # population risk
    answer_fit = ltt_threshold(c, y, 0.2, 0.05, groups=groups)  # delta / 2 each threshold
    assert policy["answer_threshold"] == answer_fit["threshold"] is not None
    domains = np.where(groups % 2 == 0, "even", "odd")  # a domain holds whole groups
    policy = fit_policy(
        c,
        y,
        domains,
        answer_risk=0.2,
        escalate_risk=0.5,
        delta=0.1,
        batch_size=None,
        per_domain=True,
        groups=groups,
    )
    even = domains == "even"
    fit = ltt_threshold(c[even], y[even], 0.5, 0.05, groups=groups[even])
    assert policy["domains"]["even"]["escalate_threshold"] == fit["threshold"] is not None
