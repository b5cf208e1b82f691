"""The linear probe's fit (calibtune.models.probe.fit_linear_probe), shared by `method=probe`
(probe.fit=logistic) and the eval's baseline/probe: an sklearn L2 logistic regression on
standardised features, returned as a ProbeHead with the standardisation folded in."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from calibtune.errors import CalibtuneError
from calibtune.models.probe import (
    PROBE_STRENGTHS,
    fit_linear_probe,
    fold_temperature,
    out_of_fold_probabilities,
    tempered,
)


def make_data(n: int = 400, dim: int = 12, seed: int = 0):
    """Features on very different scales and offsets; labels from a linear rule plus noise; 40
    entity groups."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)) * rng.uniform(0.1, 50, dim) + rng.uniform(-20, 20, dim)
    z = (x - x.mean(0)) / x.std(0)
    y = (z[:, 0] - 0.7 * z[:, 1] + rng.normal(scale=0.8, size=n) > 0).astype(int)
    groups = [f"g{i % 40}" for i in range(n)]
    return x, y, groups


def test_the_head_equals_the_standardised_regression_at_the_chosen_strength():
    x, y, groups = make_data()
    head, strength = fit_linear_probe(x, y, groups, seed=0)
    assert strength in PROBE_STRENGTHS and head.hidden == 0
    scaler = StandardScaler().fit(x)
    direct = LogisticRegression(C=strength, max_iter=2000).fit(scaler.transform(x), y)
    x_new = make_data(seed=1)[0]
    expected = direct.predict_proba(scaler.transform(x_new))[:, 1]
    # within the solver tolerance (L-BFGS, tol 1e-4) and float32 of the head
    np.testing.assert_allclose(head.probability(x_new), expected, atol=2e-3)
    assert np.ptp(expected) > 0.5  # the rule is learnt, not a constant


def test_strength_is_chosen_by_held_out_groups_not_fixed():
    x, y, groups = make_data()
    noise = np.random.default_rng(3).permutation(y)  # labels unrelated to x: strongest penalty
    _, strength_signal = fit_linear_probe(x, y, groups, seed=0)
    _, strength_noise = fit_linear_probe(x, noise, groups, seed=0)
    assert strength_noise < strength_signal


@pytest.mark.parametrize(
    ("labels", "groups", "message"),
    [
        (np.zeros(50, dtype=int), [f"g{i}" for i in range(50)], "1 class"),
        (np.arange(50) % 2, ["g"] * 50, "1 group"),
    ],
)
def test_one_class_or_one_group_is_refused_with_the_counts(labels, groups, message):
    x = np.random.default_rng(0).normal(size=(50, 4))
    with pytest.raises(CalibtuneError, match=message):
        fit_linear_probe(x, labels, groups, seed=0)


def test_out_of_fold_probabilities_come_from_probes_that_never_saw_the_rows_group():
    from calibtune.examples import group_kfold

    x, y, groups = make_data()
    groups = np.asarray(groups)
    head, strength = fit_linear_probe(x, y, groups, seed=0)
    out = out_of_fold_probabilities(x, y, groups, 0, strength)
    folds = list(group_kfold(groups).split(x, y, groups))
    assert len(folds) == 5
    fit_rows, held = folds[2]
    assert not set(groups[fit_rows]) & set(groups[held])
    fold_probe, _ = fit_linear_probe(
        x[fit_rows], y[fit_rows], groups[fit_rows], 0, strength=strength
    )
    np.testing.assert_allclose(out[held], fold_probe.probability(x[held]))
    in_sample = head.probability(x)
    assert np.abs(out - in_sample).max() > 0.01  # not the in-sample fit
    assert np.corrcoef(out, in_sample)[0, 1] > 0.9  # but the same kind of confidence


def strength_rows(domains: int, right_in: int | None = None) -> list[dict]:
    """12 rows a domain (4 entity groups of 3), a third right; `right_in`: only that many domains
    hold right answers."""
    rows = []
    for d in range(domains):
        for i in range(12):
            right = i % 3 == 0 and (right_in is None or d < right_in)
            rows.append({"domain": f"d{d}", "group": f"d{d}-e{i % 4}", "correct": float(right)})
    return rows


@pytest.mark.parametrize(
    ("setting", "domains", "right_in", "expected"),
    [
        ("auto", 6, None, "domain"),  # enough domains, both grades in every fold: held out whole
        ("auto", 4, None, "entity"),  # fewer than 5 domains: entity groups
        ("auto", 1, None, "entity"),  # one-domain data (a single Hugging Face set)
        ("auto", 6, 1, "entity"),  # a domain fold would fit on wrong answers only
        ("entity", 6, None, "entity"),
        ("domain", 2, None, "domain"),  # as set (check_fittable judges it)
    ],
)
def test_auto_strength_folds_hold_out_domains_only_where_they_can(
    setting, domains, right_in, expected
):
    from calibtune.train.probe import resolve_strength_folds

    assert resolve_strength_folds(strength_rows(domains, right_in), setting) == expected


def test_domain_folds_that_leave_one_grade_to_fit_are_refused_naming_the_field(tmp_path):
    from calibtune.errors import InputError
    from calibtune.train.probe import check_fittable

    check_fittable(strength_rows(6), tmp_path, "domain")  # every fold fits on both grades
    with pytest.raises(InputError, match=r"train.jsonl: field 'domain': .*in every fold's fit"):
        check_fittable(strength_rows(6, right_in=1), tmp_path, "domain")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"fit": "logistic", "strength_folds": "entity"}, True),
        ({"fit": "logistic"}, True),  # written before strength_folds: chosen on entity groups
        ({"fit": "logistic", "strength_folds": "domain"}, False),  # the eval fits its own
        ({"fit": "adamw"}, False),
        ({"fit": "logistic", "strength_folds": "entity", "signals": True}, False),  # reads more
    ],
)
def test_the_eval_skips_its_probe_baseline_only_for_the_same_fit(tmp_path, extra, expected):
    from calibtune.models.probe import ProbeHead, is_baseline_probe_fit, write_probe_files

    signals = bool(extra.pop("signals", False))
    write_probe_files(ProbeHead(4, answer_signals=signals), tmp_path, extra)
    assert is_baseline_probe_fit(tmp_path) is expected
    assert not is_baseline_probe_fit(tmp_path / "missing")  # a LoRA adapter: no probe config


def test_the_head_reads_the_answer_signals_logits_beside_the_hidden_state(tmp_path):
    import torch

    from calibtune.models.probe import ProbeHead, head_inputs, load_probe, write_probe_files

    hidden = torch.randn(3, 4)
    stats = torch.tensor(
        [[0.5, 0.25, 0.1], [0.9, 0.8, 0.0], [float("nan")] * 3], dtype=torch.float64
    )
    assert torch.equal(head_inputs(hidden, stats, False), hidden)
    x = head_inputs(hidden, stats, True)
    assert x.shape == (3, 7) and torch.equal(x[:, :4], hidden)
    torch.testing.assert_close(x[0, 4:], torch.log(torch.tensor([1.0, 1 / 3, 1 / 9])))
    assert x[1, 6] < -13  # probability 0: clipped, a large finite negative logit
    assert torch.equal(x[2, 4:], torch.zeros(3))  # an empty response reads one half
    with pytest.raises(CalibtuneError, match="answer's base signals"):
        head_inputs(hidden, None, True)
    write_probe_files(ProbeHead(7, layer=2, answer_signals=True), tmp_path, {})
    head = load_probe(tmp_path)
    assert head.answer_signals and head.layer == 2 and head.inputs(hidden, stats).shape == (3, 7)


def test_fold_temperature_recovers_the_temperature_the_outcomes_were_drawn_at():
    """Outcomes drawn at sigmoid(z / 2) from confidences sigmoid(z): the fitted temperature is
    2 (overconfident confidences are softened); drawn at sigmoid(z / 0.5): 0.5 (sharpened);
    confidences that rank against the outcomes get none."""
    rng = np.random.default_rng(0)
    z = rng.normal(scale=2.0, size=40_000)
    confidence = 1 / (1 + np.exp(-z))
    for true in (2.0, 0.5):
        y = (rng.uniform(size=z.size) < 1 / (1 + np.exp(-z / true))).astype(int)
        assert fold_temperature(confidence, y) == pytest.approx(true, rel=0.05)
    assert fold_temperature(confidence, (z < 0).astype(int)) is None  # ranks against: no fit
    y = (rng.uniform(size=z.size) < 1 / (1 + np.exp(-z / 40))).astype(int)
    assert fold_temperature(confidence, y) == 20.0  # near-flat: held at TEMPERATURE_RANGE's top


def test_a_tempered_head_gives_the_tempered_confidences():
    x, y, groups = make_data()
    head, _ = fit_linear_probe(x, y, groups, seed=0)
    before = head.probability(x)
    after = head.temper(1.7).probability(x)
    np.testing.assert_allclose(after, tempered(before, 1.7), rtol=1e-5, atol=1e-7)
    assert np.abs(after - before).max() > 0.05
