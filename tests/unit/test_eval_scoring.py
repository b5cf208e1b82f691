"""Eval scoring helpers: n/a reasons, deltas, per-domain tables, selective prediction, parsing."""

from __future__ import annotations

import numpy as np
import pytest

from calibtune import metrics
from calibtune.eval import report, scoring
from calibtune.eval.confidence import parse_percent


def test_score_method_reports_reasons_instead_of_numbers():
    scores = scoring.score_method(np.array([0.2, 0.9, np.nan]), np.array([1.0, 1.0, 0.0]), 15)
    assert scores["n"] == 2 and scores["n_missing"] == 1
    assert scores["auroc"] is None and "single class" in scores["n/a"]["auroc"]
    assert (
        scores["ece_quantile"] is None
        and "fewer examples than bins" in scores["n/a"]["ece_quantile"]
    )
    assert scores["ece"] == pytest.approx(metrics.ece([0.2, 0.9], [1, 1]))
    bad = scoring.score_method(np.array([0.2, 1.4]), np.array([1.0, 0.0]), 15)
    assert bad["ece"] is None and "[0, 1]" in bad["n/a"]["ece"]
    assert report.metric_cell(bad, "brier").startswith("n/a (confidences must lie in [0, 1]")
    empty = scoring.score_method(np.array([np.nan]), np.array([1.0]), 15)
    assert empty["n"] == 0 and "unparseable" in report.metric_cell(empty, "ece")


def test_paired_deltas_values_and_undefined_auroc():
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.5).astype(float)
    base, tuned = rng.random(200), np.clip(y * 0.5 + 0.25 + rng.normal(0, 0.1, 200), 0, 1)
    deltas = scoring.paired_deltas(base, tuned, y, 15, n_boot=100, seed=0)
    assert deltas["brier"]["value"] == pytest.approx(
        metrics.brier(tuned, y) - metrics.brier(base, y)
    )
    assert deltas["auroc"]["ci95"][0] > 0
    assert deltas["smooth_ece"]["ci95"] is None and deltas["smooth_ece"]["value"] is not None
    single = scoring.paired_deltas(base, tuned, np.ones(200), 15, n_boot=10, seed=0)
    assert single["auroc"]["value"] is None
    assert report.delta_cell(single["auroc"]) == "n/a (metric undefined on this set)"
    assert report.delta_cell(deltas["ece"]).count("[") == 1


def test_paired_deltas_resample_groups_when_given():
    rng = np.random.default_rng(1)
    y = np.repeat((rng.random(60) < 0.5).astype(float), 5)  # 60 entities, 5 alike rows each
    base = np.repeat(rng.random(60), 5)
    tuned = np.repeat(np.clip(y[::5] * 0.4 + 0.3 + rng.normal(0, 0.2, 60), 0, 1), 5)
    groups = np.repeat([f"e{i}" for i in range(60)], 5)
    rows = scoring.paired_deltas(base, tuned, y, 15, n_boot=200, seed=0)
    clustered = scoring.paired_deltas(base, tuned, y, 15, n_boot=200, seed=0, groups=groups)
    assert clustered["brier"]["resample"] == "groups" and clustered["brier"]["n_groups"] == 60
    assert clustered["brier"]["value"] == pytest.approx(rows["brier"]["value"])

    def width(delta: dict) -> float:
        return delta["ci95"][1] - delta["ci95"][0]

    # rows of one entity are copies: resampling rows understates the uncertainty
    assert width(clustered["brier"]) > 1.5 * width(rows["brier"])


def test_per_domain_and_worst_domain():
    y = np.array([1, 0, 1, 1, 0, 0], dtype=float)
    c = np.array([0.9, 0.1, 0.8, 0.2, 0.9, 0.7])
    table = scoring.per_domain(["a", "a", "a", "b", "b", "b"], y, {"base/ptrue": c}, 15)
    assert table["a"]["n"] == 3 and table["a"]["accuracy"] == pytest.approx(2 / 3)
    assert table["b"]["methods"]["base/ptrue"]["ece"] == pytest.approx(metrics.ece(c[3:], y[3:]))
    worst = scoring.worst_domain(table, "base/ptrue")
    assert worst["domain"] == "b"
    assert scoring.worst_domain(table, "tuned/ptrue") is None


def test_selective_prediction_threshold_from_val():
    c_val = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5])
    y_val = np.array([1, 1, 1, 0, 1, 0], dtype=float)
    # answered prefixes: risks 0, 0, 0, 1/4, 1/5, 2/6 -> lowest threshold with risk <= .2 is .6
    assert scoring.threshold_for_risk(c_val, y_val, 0.2) == pytest.approx(0.6)
    assert scoring.threshold_for_risk(c_val, y_val, 0.0) == pytest.approx(0.8)
    assert scoring.threshold_for_risk(np.array([0.9]), np.array([0.0]), 0.2) is None
    test = scoring.selective_at_threshold(
        np.array([0.99, 0.65, 0.55, 0.1]), np.array([1, 0, 1, 0.0]), 0.6
    )
    assert test == {
        "threshold": 0.6,
        "coverage": 0.5,
        "risk": 0.5,
        "escalation_rate": 0.5,
        "n_answered": 2,
    }
    none = scoring.selective_at_threshold(np.array([0.5]), np.array([1.0]), None)
    assert none["coverage"] == 0.0 and none["risk"] is None and none["escalation_rate"] == 1.0


def test_ties_in_val_use_only_realisable_thresholds():
    c_val = np.array([0.9, 0.9, 0.9, 0.5])
    y_val = np.array([1, 1, 0, 1], dtype=float)
    # the first two examples alone have risk 0, but the third ties with them: risk 1/3 at .9
    assert scoring.threshold_for_risk(c_val, y_val, 0.1) is None


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("85%", 0.85),
        ("I'd say 70 percent.", 0.70),
        ("100", 1.0),
        ("0%", 0.0),
        ("12.5 %", 0.125),
        ("about 250", None),
        ("very likely", None),
        ("", None),
    ],
)
def test_parse_percent(reply, expected):
    value = parse_percent(reply)
    assert value == (None if expected is None else pytest.approx(expected))


def test_within_domain_does_not_reward_telling_domains_apart():
    rng = np.random.default_rng(2)
    domains = np.repeat(["easy", "hard", "tiny"], [200, 200, 10])
    y = (rng.random(410) < np.repeat([0.8, 0.2, 0.5], [200, 200, 10])).astype(float)
    prior = np.repeat([0.8, 0.2, 0.5], [200, 200, 10])  # knows the domain, nothing within it
    within = scoring.within_domain(domains, y, {"prior": prior, "oracle": y * 0.9 + 0.05}, 10, 30)
    scores = {"auroc": metrics.auroc(prior, y)}
    assert scores["auroc"] > 0.75 and within["prior"]["auroc_within"] == pytest.approx(0.5)
    assert within["oracle"]["auroc_within"] == pytest.approx(1.0)
    assert within["prior"]["domains"] == ["easy", "hard"]  # "tiny" has < 30 of each class
    easy = within["prior"]["per_domain"]["easy"]
    mean_ece = np.mean([within["prior"]["per_domain"][d]["ece"] for d in ("easy", "hard")])
    assert within["prior"]["ece_within"] == pytest.approx(mean_ece) and easy["n"] == 200


def test_best_baseline_is_chosen_on_val_not_test():
    rng = np.random.default_rng(3)
    y_val, y_test = (rng.random(300) < 0.5).astype(float), (rng.random(300) < 0.5).astype(float)
    val = {"base/a": y_val * 0.6 + rng.random(300) * 0.4, "base/b": rng.random(300)}
    test = {"base/a": rng.random(300), "base/b": y_test * 0.6 + rng.random(300) * 0.4}
    val["tuned/ptrue"], test["tuned/ptrue"] = y_val * 0.9 + 0.05, y_test * 0.9 + 0.05
    settings = {"n_bins": 10, "n_boot": 50, "seed": 0, "groups": None, "domains": None}
    versus = scoring.deltas_vs_best_baseline(val, y_val, test, y_test, settings)
    assert versus["baseline"] == "base/a" and set(versus["val_auroc"]) == {"base/a", "base/b"}
    expected = metrics.auroc(test["tuned/ptrue"], y_test) - metrics.auroc(test["base/a"], y_test)
    assert versus["deltas"]["auroc"]["value"] == pytest.approx(expected)
