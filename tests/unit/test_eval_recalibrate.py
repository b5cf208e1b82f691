"""Post-hoc recalibrators: fitted values, plain-param round trips, and unfittable cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from calibtune import metrics
from calibtune.errors import ConfigError
from calibtune.eval.recalibrate import (
    CalibrationUnavailable,
    apply_calibrator,
    calibrator_from_params,
    fit_calibrator,
    logit,
    sigmoid,
)


@pytest.fixture
def overconfident():
    """Val and test sets whose confidences are too extreme: true P = sigmoid(logit(c) / 3)."""
    rng = np.random.default_rng(0)

    def draw(n):
        c = rng.random(n)
        y = (rng.random(n) < sigmoid(logit(c) / 3)).astype(float)
        return c, y

    return draw(3000), draw(3000)


def test_temperature_recovers_the_true_temperature(overconfident):
    (c_val, y_val), (c_test, y_test) = overconfident
    params = fit_calibrator("temperature", c_val, y_val)
    assert params["temperature"] == pytest.approx(3.0, rel=0.15)
    recalibrated = apply_calibrator(params, c_test)
    assert metrics.ece(recalibrated, y_test) < metrics.ece(c_test, y_test) / 3


def test_platt_matches_unregularised_logistic_regression(overconfident):
    (c_val, y_val), _ = overconfident
    params = fit_calibrator("platt", c_val, y_val)
    reference = LogisticRegression(C=1e12, tol=1e-10, max_iter=10_000)
    reference.fit(logit(c_val)[:, None], y_val)
    assert params["a"] == pytest.approx(reference.coef_[0][0], abs=1e-4)
    assert params["b"] == pytest.approx(reference.intercept_[0], abs=1e-4)


def test_a_prior_strength_pulls_platt_toward_the_identity_and_fades_with_rows(overconfident):
    """With an L2 pull of strength s of (a, b) toward (1, 0): a strong pull on few rows stays
    near the identity, the same pull on many rows hardly moves the fit (a -> 1/3 here), and no
    pull is plain Platt; other families refuse a pull."""
    (c, y), _ = overconfident
    plain = fit_calibrator("platt", c[:60], y[:60])
    assert fit_calibrator("platt", c[:60], y[:60], prior_strength=0.0) == plain
    pulled = fit_calibrator("platt", c[:60], y[:60], prior_strength=1e6)
    assert abs(pulled["a"] - 1.0) < 1e-3 and abs(pulled["b"]) < 1e-3
    some = fit_calibrator("platt", c[:60], y[:60], prior_strength=25)
    assert plain["a"] < some["a"] < 1.0  # between the fit and the identity
    many, many_plain = (fit_calibrator("platt", c, y, prior_strength=s) for s in (25, 0))

    def share_pulled(fit: dict, free: dict) -> float:  # how far toward a = 1 the pull moved a
        return (fit["a"] - free["a"]) / (1.0 - free["a"])

    assert 0 < share_pulled(many, many_plain) < share_pulled(some, plain) / 5
    with pytest.raises(ConfigError, match="pulls a Platt map"):
        fit_calibrator("temperature", c, y, prior_strength=25)


def test_isotonic_matches_scikit_learn(overconfident):
    (c_val, y_val), (c_test, _) = overconfident
    params = fit_calibrator("isotonic", c_val, y_val)
    reference = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(c_val, y_val)
    assert apply_calibrator(params, c_test) == pytest.approx(reference.predict(c_test), abs=1e-9)


def test_histogram_maps_each_quantile_bin_to_its_mean_outcome():
    c = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    y = np.array([0, 0, 1, 1, 1, 0])
    params = fit_calibrator("histogram", c, y, n_bins=3)
    assert params["values"] == pytest.approx([0.0, 1.0, 0.5])
    # above the last val value still maps to the last bin, below the first to the first
    assert apply_calibrator(params, [0.0, 0.25, 0.3, 0.65, 1.0]) == pytest.approx(
        [0.0, 1.0, 1.0, 0.5, 0.5]
    )


@pytest.mark.parametrize("kind", ["temperature", "platt", "beta", "isotonic", "histogram"])
def test_params_round_trip_through_json(kind, overconfident):
    (c_val, y_val), (c_test, _) = overconfident
    params = fit_calibrator(kind, c_val, y_val)
    loaded = json.loads(json.dumps(params))
    assert calibrator_from_params(loaded)(c_test) == pytest.approx(apply_calibrator(params, c_test))
    assert np.all((apply_calibrator(params, c_test) >= 0) & (apply_calibrator(params, c_test) <= 1))


def test_unfittable_cases_say_why():
    with pytest.raises(CalibrationUnavailable, match="fewer than 15 bins"):
        fit_calibrator("histogram", [0.1, 0.5, 0.9], [0, 1, 1])
    with pytest.raises(CalibrationUnavailable, match="all 1"):
        fit_calibrator("platt", [0.1, 0.5, 0.9], [1, 1, 1])
    with pytest.raises(ConfigError, match="unknown recalibrator"):
        fit_calibrator("platypus", [0.1, 0.5], [0, 1])
    with pytest.raises(ConfigError, match="unknown kind"):
        calibrator_from_params({"kind": "pickle"})
    with pytest.raises(metrics.MetricError, match="NaN"):
        fit_calibrator("temperature", [0.1, float("nan")], [0, 1])


def test_per_domain_calibrators_fix_domain_offsets_and_fall_back_for_small_domains():
    from calibtune.eval.recalibrate import fit_domain_calibrators

    rng = np.random.default_rng(0)
    n = 3000
    domains = rng.choice(["easy", "hard", "tiny"], size=n, p=[0.49, 0.49, 0.02])
    c = rng.uniform(0.05, 0.95, n)
    shift = np.select([domains == "easy", domains == "hard"], [0.15, -0.25], 0.0)
    y = (rng.uniform(size=n) < np.clip(c + shift, 0, 1)).astype(float)
    params = fit_domain_calibrators("platt", c, y, domains, min_count=100)
    assert set(params["domains"]) == {"easy", "hard"} and "tiny" in params["fallback"]
    per_domain = apply_calibrator(params, c, domains)
    global_map = apply_calibrator(params["global"], c)
    for name in ("easy", "hard"):
        index = domains == name
        gap = abs(np.mean(per_domain[index]) - np.mean(y[index]))
        assert gap < abs(np.mean(global_map[index]) - np.mean(y[index]))
    tiny = domains == "tiny"
    assert per_domain[tiny] == pytest.approx(global_map[tiny])
    unseen = calibrator_from_params(json.loads(json.dumps(params)))(c[:5], ["new"] * 5)
    assert unseen == pytest.approx(global_map[:5])


@pytest.mark.parametrize("shrinkage", [None, "auto"])
def test_unseen_identity_keeps_the_confidence_of_domains_the_maps_never_saw(shrinkage):
    from calibtune.eval.recalibrate import fit_domain_calibrators

    rng = np.random.default_rng(1)
    n = 2000
    domains = rng.choice(["easy", "hard", "tiny"], size=n, p=[0.49, 0.49, 0.02])
    c = rng.uniform(0.05, 0.95, n)
    y = (rng.uniform(size=n) < np.clip(c - 0.2, 0, 1)).astype(float)  # every seen domain too high
    groups = np.arange(n) % 50
    params = fit_domain_calibrators(
        "platt", c, y, domains, 100, shrinkage=shrinkage, groups=groups, unseen="identity"
    )
    apply = calibrator_from_params(json.loads(json.dumps(params)))
    global_map = apply_calibrator(params["global"], c)
    assert not np.allclose(global_map, c)
    assert apply(c[:5], ["new", None, "other", "", "new"]) == pytest.approx(c[:5])
    assert apply(c[:5]) == pytest.approx(c[:5])  # no domains at all: nothing seen either
    tiny = domains == "tiny"  # seen, too few rows for its own map: the global map
    tiny_map = params["global"] if shrinkage is None else params["domains"]["tiny"]
    assert apply(c[tiny], domains[tiny]) == pytest.approx(apply_calibrator(tiny_map, c[tiny]))
    assert not np.allclose(apply(c[tiny], domains[tiny]), c[tiny])
    easy = domains == "easy"
    assert np.mean(apply(c[easy], domains[easy])) < np.mean(c[easy]) - 0.1


def test_rows_without_a_domain_get_the_map_fitted_on_rows_without_one():
    from calibtune.eval.recalibrate import fit_domain_calibrators

    rng = np.random.default_rng(2)
    n = 1000
    domains = np.where(np.arange(n) % 2 == 0, None, "named").astype(object)
    c = rng.uniform(0.05, 0.95, n)
    y = (rng.uniform(size=n) < np.clip(c - 0.3 * (domains == None), 0, 1)).astype(float)  # noqa: E711
    params = fit_domain_calibrators("platt", c, y, domains, 100, unseen="identity")
    assert set(params["domains"]) == {"", "named"}
    apply = calibrator_from_params(json.loads(json.dumps(params)))
    missing = domains == None  # noqa: E711
    expected = apply_calibrator(params["domains"][""], c[missing])
    assert apply(c[missing], [None] * int(missing.sum())) == pytest.approx(expected)
    assert not np.allclose(expected, c[missing])


def test_shrunk_domain_maps_move_small_domains_less_and_auto_picks_on_held_out_folds():
    from calibtune.eval.recalibrate import SHRINKAGE_GRID, fit_domain_calibrators

    rng = np.random.default_rng(1)
    n = 3000
    domains = rng.choice(["easy", "hard", "tiny"], size=n, p=[0.49, 0.49, 0.02])
    c = rng.uniform(0.05, 0.95, n)
    shift = np.select([domains == "easy", domains == "hard"], [0.15, -0.25], -0.25)
    y = (rng.uniform(size=n) < np.clip(c + shift, 0, 1)).astype(float)
    groups = [f"g{i // 3}" for i in range(n)]  # three rows per entity

    own = fit_domain_calibrators("platt", c, y, domains, 1, shrinkage=0.0)
    held = fit_domain_calibrators("platt", c, y, domains, 1, shrinkage=1e6)
    for name in ("easy", "hard", "tiny"):  # no pull: each domain's own fit; a huge pull: global
        index = domains == name
        alone = fit_calibrator("platt", c[index], y[index])
        assert own["domains"][name]["a"] == pytest.approx(alone["a"], abs=1e-4)
        assert held["domains"][name]["b"] == pytest.approx(held["global"]["b"], abs=1e-2)
    some = fit_domain_calibrators("platt", c, y, domains, 1, shrinkage=100.0)
    # the same offset in both: the pull moves the small domain's map further from its own fit
    pull = {d: abs(some["domains"][d]["b"] - own["domains"][d]["b"]) for d in ("hard", "tiny")}
    assert pull["tiny"] > pull["hard"]

    auto = fit_domain_calibrators("platt", c, y, domains, 1, shrinkage="auto", groups=groups)
    losses = {float(k): v for k, v in auto["shrinkage_cv_log_loss"].items()}
    assert set(losses) == set(SHRINKAGE_GRID) and auto["shrinkage"] == min(losses, key=losses.get)
    assert not auto["fallback"] and set(auto["domains"]) == {"easy", "hard", "tiny"}
    per_domain = apply_calibrator(auto, c, domains)
    for name in ("easy", "hard"):
        index = domains == name
        assert abs(np.mean(per_domain[index]) - np.mean(y[index])) < 0.02


def test_cross_fitted_confidences_come_from_maps_that_never_saw_the_row():
    from sklearn.model_selection import GroupKFold

    from calibtune.eval.recalibrate import cross_fitted_domain_confidences, fit_domain_calibrators

    rng = np.random.default_rng(3)
    n = 400
    domains = rng.choice(["a", "b"], size=n)
    c = rng.uniform(0.05, 0.95, n)
    y = (rng.uniform(size=n) < np.where(domains == "a", c, c / 2)).astype(float)
    groups = np.array([f"g{i // 4}" for i in range(n)])
    settings = {"kind": "platt", "min_count": 10, "n_bins": 15, "shrinkage": 10.0}
    out = cross_fitted_domain_confidences(c, y, domains, groups, settings)
    for fit_rows, held in GroupKFold(n_splits=5).split(c, y, groups):
        assert not set(groups[fit_rows]) & set(groups[held])  # a group never on both sides
        maps = fit_domain_calibrators(
            c=c[fit_rows], y=y[fit_rows], domains=domains[fit_rows], **settings
        )
        assert out[held] == pytest.approx(apply_calibrator(maps, c[held], domains[held]))
    in_sample = apply_calibrator(
        fit_domain_calibrators(c=c, y=y, domains=domains, **settings), c, domains
    )
    assert not np.allclose(out, in_sample)


def test_cross_fitted_confidences_with_extra_rows_fit_each_fold_on_them_too():
    from sklearn.model_selection import GroupKFold

    from calibtune.eval.recalibrate import cross_fitted_domain_confidences, fit_domain_calibrators

    rng = np.random.default_rng(4)
    n, m = 200, 300
    domains, c = rng.choice(["a", "b"], size=n), rng.uniform(0.05, 0.95, n)
    y = (rng.uniform(size=n) < c).astype(float)
    groups = np.array([f"g{i // 4}" for i in range(n)])
    extra = {"domain": rng.choice(["a", "b"], size=m), "c": rng.uniform(0.05, 0.95, m)}
    extra["y"] = (rng.uniform(size=m) < extra["c"] / 2).astype(float)  # over-confident rows
    extra["group"] = np.array([f"t{i // 4}" for i in range(m)])
    settings = {"kind": "platt", "min_count": 10, "n_bins": 15, "shrinkage": 10.0}
    out = cross_fitted_domain_confidences(c, y, domains, groups, settings, extra=extra)
    fit_rows, held = next(iter(GroupKFold(n_splits=5).split(c, y, groups)))
    maps = fit_domain_calibrators(
        c=np.concatenate([c[fit_rows], extra["c"]]),
        y=np.concatenate([y[fit_rows], extra["y"]]),
        domains=np.concatenate([domains[fit_rows], extra["domain"]]),
        **settings,
    )
    assert out[held] == pytest.approx(apply_calibrator(maps, c[held], domains[held]))
    without = cross_fitted_domain_confidences(c, y, domains, groups, settings)
    assert out.mean() < without.mean() - 0.05  # the over-confident extra rows pull maps down


def test_folds_need_two_groups_and_say_so():
    from calibtune.eval.recalibrate import CalibrationUnavailable, cross_fitted_domain_confidences

    settings = {"kind": "platt", "min_count": 1, "n_bins": 15, "shrinkage": "auto"}
    c, y = np.array([0.2, 0.8, 0.4, 0.6]), np.array([0.0, 1.0, 0.0, 1.0])
    with pytest.raises(CalibrationUnavailable, match="1 entity group"):
        cross_fitted_domain_confidences(c, y, ["a"] * 4, ["g"] * 4, settings)


def synthetic_rows(rng, n: int, prefix: str, shift: float = 1.0) -> dict:
    """Rows of two domains whose accuracy differs from the confidence (`shift` scales it)."""
    domain = rng.choice(["a", "b"], size=n)
    c = rng.uniform(0.05, 0.95, n)
    truth = np.where(domain == "a", c**2, np.sqrt(c)) * shift
    y = (rng.uniform(size=n) < np.clip(truth, 0, 1)).astype(float)
    return {"c": c, "y": y, "domain": domain, "group": np.array([f"{prefix}{i}" for i in range(n)])}


@pytest.mark.parametrize(("shift", "used"), [(1.0, True), (0.2, False)])
def test_train_rows_join_the_maps_only_when_they_lower_the_held_out_loss_on_val(
    compose_cfg, shift, used
):
    from calibtune.eval.production import choose_train_rows

    rng = np.random.default_rng(5)
    val = synthetic_rows(rng, 120, "v")
    oof = synthetic_rows(rng, 1200, "t", shift)  # shift 0.2: rows of another kind of traffic
    cfg = compose_cfg("eval", ["eval.domain_calibration.shrinkage=auto"])
    extra, record = choose_train_rows(
        cfg, {"tuned/ptrue": val["c"]}, val["y"], val["domain"], val["group"], oof
    )
    losses = record["held_out_log_loss"]
    assert record["used"] is used and (extra is oof) is used and record["n_train"] == 1200
    assert (losses["val+train"] < losses["val"]) is used
    always = compose_cfg("eval", ["eval.domain_calibration.add_train=true"])
    assert (
        choose_train_rows(
            always, {"tuned/ptrue": val["c"]}, val["y"], val["domain"], val["group"], oof
        )[0]
        is oof
    )
    _, none = choose_train_rows(
        cfg, {"tuned/ptrue": val["c"]}, val["y"], val["domain"], val["group"], None
    )
    assert none["used"] is False and none["reason"] == "no out-of-fold train rows"
