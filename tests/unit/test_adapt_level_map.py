"""The level map of `calibtune adapt` without a model: beta calibration, `fit_level_map` (shared
with the monitor's refit), the sample's checks and how many more labels a small sample needs."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from calibtune import metrics
from calibtune.errors import InputError
from calibtune.eval.recalibrate import (
    apply_calibrator,
    calibrator_from_params,
    fit_calibrator,
    fit_domain_calibrators,
    fit_level_map,
    logit,
    sigmoid,
)
from calibtune.serve.adapt import labels_needed, read_sample

SETTINGS = SimpleNamespace(min_labels=50, min_per_class=5)


def beta_map(c, a, b, m):
    """sigmoid(a ln c - b ln(1 - c) + m)."""
    return sigmoid(a * np.log(c) - b * np.log1p(-c) + m)


def test_beta_recovers_an_asymmetric_map_and_lowers_ece():
    rng = np.random.default_rng(0)
    c = rng.uniform(0.01, 0.99, 20_000)
    y = (rng.random(c.size) < beta_map(c, 2.0, 0.5, 0.3)).astype(float)
    params = fit_calibrator("beta", c, y)
    assert params["kind"] == "beta"
    assert params["a"] == pytest.approx(2.0, abs=0.15)
    assert params["b"] == pytest.approx(0.5, abs=0.1)
    assert params["m"] == pytest.approx(0.3, abs=0.15)
    c_test = rng.uniform(0.01, 0.99, 20_000)
    y_test = (rng.random(c_test.size) < beta_map(c_test, 2.0, 0.5, 0.3)).astype(float)
    after = calibrator_from_params(json.loads(json.dumps(params)))(c_test)
    assert metrics.ece(after, y_test) < metrics.ece(c_test, y_test) / 4
    # no symmetric (Platt) map can bend this way: beta's held-out log loss is lower
    platt = apply_calibrator(fit_calibrator("platt", c, y), c_test)
    assert metrics.nll(after, y_test) < metrics.nll(platt, y_test)


def test_beta_is_monotone_and_near_identity_on_calibrated_rows():
    rng = np.random.default_rng(1)
    c = rng.uniform(0.02, 0.98, 20_000)
    y = (rng.random(c.size) < c).astype(float)
    params = fit_calibrator("beta", c, y)
    grid = np.linspace(0.001, 0.999, 500)
    mapped = apply_calibrator(params, grid)
    assert np.all(np.diff(mapped) >= 0) and params["a"] >= 0 and params["b"] >= 0
    assert np.max(np.abs(mapped[25:-25] - grid[25:-25])) < 0.04


def test_fit_level_map_is_the_global_map_or_the_per_domain_maps():
    rng = np.random.default_rng(2)
    c = rng.uniform(0.05, 0.95, 600)
    y = (rng.random(c.size) < sigmoid(logit(c) / 2 - 1)).astype(float)
    domains = np.where(np.arange(c.size) < 500, "big", "small")
    assert fit_level_map("platt", c, y) == fit_calibrator("platt", c, y)
    per_domain = fit_level_map("platt", c, y, domains, min_count=200)
    assert per_domain == fit_domain_calibrators("platt", c, y, domains, 200)
    assert set(per_domain["domains"]) == {"big"} and "small" in per_domain["fallback"]


@pytest.mark.parametrize(
    ("n", "n_right", "says"),
    [
        (30, None, "label 20 more rows"),
        (30, 10, "label 20 more rows"),
        (60, 60, "0 of the 60 rows have an answer the model got wrong (correct=0)"),
        (60, 0, "label at least 5 more rows whose answer is right"),
        (60, 58, "label at least 3 more rows whose answer is wrong"),
    ],
)
def test_a_small_or_one_sided_sample_says_how_many_more_labels(n, n_right, says):
    assert says in labels_needed(n, n_right, SETTINGS)


def test_enough_labels_of_both_outcomes_pass():
    assert labels_needed(50, 5, SETTINGS) is None and labels_needed(50, None, SETTINGS) is None


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


GOOD = {"question": "What is 2 plus 3?", "answer": "5", "correct": 1}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"correct": 0.5}, "correct"),
        ({"correct": None}, "correct"),
        ({"answer": ""}, "answer"),
        ({"question": 7}, "question"),
        ({"domain": 3}, "domain"),
        ({"group": ""}, "group"),
        ({"choices": "A"}, "choices"),
    ],
)
def test_a_bad_graded_row_names_file_line_and_field(tmp_path, change, field):
    path = write_rows(tmp_path / "sample.jsonl", [GOOD, GOOD, {**GOOD, **change}, GOOD])
    with pytest.raises(InputError, match=rf"sample\.jsonl:3: field '{field}'"):
        read_sample(path)


def test_qa_rows_are_read_as_qa_and_graded_rows_as_graded(tmp_path):
    qa = write_rows(tmp_path / "qa.jsonl", [{"question": "Capital of Peru?", "answers": ["Lima"]}])
    kind, rows = read_sample(qa)
    assert kind == "qa" and rows[0]["answers"] == ["Lima"] and rows[0]["domain"] == "default"
    graded = write_rows(tmp_path / "graded.jsonl", [{**GOOD, "group": "sums", "domain": "math"}])
    kind, rows = read_sample(graded)
    assert kind == "graded" and rows[0]["response"] == "5" and rows[0]["correct"] == 1
    assert rows[0]["group"] == "sums" and "answers" not in rows[0]
    bad_qa = write_rows(tmp_path / "bad.jsonl", [{"question": "Q?", "answers": ["a"]}, {"q": 1}])
    with pytest.raises(InputError, match=r"bad\.jsonl:2: field 'question'"):
        read_sample(bad_qa)
