"""Trained baselines: domain prior, logistic regression over base-model confidences, and the
linear probe on base hidden states."""

from __future__ import annotations

import numpy as np
import pytest

from calibtune import metrics
from calibtune.eval import baselines
from calibtune.io import write_json_atomic, write_jsonl_atomic


def rows_of(domains, correct, responses=None) -> list[dict]:
    """Minimal rows with a domain, a grade, a response and an entity group (two rows each)."""
    responses = responses or ["an answer"] * len(domains)
    return [
        {"domain": d, "correct": float(c), "response": r, "group": f"g{i // 2}"}
        for i, (d, c, r) in enumerate(zip(domains, correct, responses, strict=True))
    ]


def test_domain_prior_is_per_domain_train_accuracy_and_overall_for_unseen():
    train = ["a", "a", "a", "a", "b", "b"]
    y = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    prior = baselines.domain_prior(train, y, ["a", "b", "unseen"])
    assert prior == pytest.approx([0.75, 0.5, 4 / 6])


def synthetic_confidences(rng: np.random.Generator, y: np.ndarray) -> dict[str, np.ndarray]:
    """Base confidences where only pmin separates the classes; the rest is noise."""
    n = y.size
    return {
        "base/pavg": rng.random(n),
        "base/pmin": np.clip(0.3 + 0.4 * y + rng.normal(0, 0.15, n), 0.01, 0.99),
        "base/seqlogp": rng.random(n),
        "base/ptrue": rng.random(n),
    }


def hidden_states(rng: np.random.Generator, y: np.ndarray, width: int = 40) -> np.ndarray:
    """Noise hidden states [N, width] in which one direction carries the label."""
    x = rng.normal(0, 1, (y.size, width))
    x[:, 7] += 1.5 * (2 * y - 1)
    return x


def test_trained_baselines_learn_a_separating_signal_and_beat_the_domain_prior():
    rng = np.random.default_rng(0)
    y_train, y_test = (rng.random(400) < 0.5).astype(float), (rng.random(300) < 0.5).astype(float)
    domains_train, domains_test = rng.choice(["a", "b"], 400), rng.choice(["a", "b", "c"], 300)
    train, test = rows_of(domains_train, y_train), rows_of(domains_test, y_test)
    conf_train, conf_test = synthetic_confidences(rng, y_train), synthetic_confidences(rng, y_test)
    conf_test["base/pavg"][:5] = np.nan  # empty responses: imputed, not dropped
    hidden = {"train": hidden_states(rng, y_train), "test": hidden_states(rng, y_test)}
    fitted, not_fitted = baselines.trained_baselines(
        train, conf_train, {"test": (test, conf_test)}, seed=0, hidden=hidden
    )
    logreg, prior = fitted["test"][baselines.LOGREG], fitted["test"][baselines.DOMAIN_PRIOR]
    probe = fitted["test"][baselines.PROBE]
    assert not not_fitted and np.isfinite(logreg).all() and np.isfinite(probe).all()
    constant = np.full(y_test.size, y_train.mean())
    assert metrics.auroc(logreg, y_test) > 0.85 > metrics.auroc(prior, y_test)
    assert metrics.brier(logreg, y_test) < metrics.brier(constant, y_test) - 0.05
    assert metrics.auroc(probe, y_test) > 0.85
    assert metrics.brier(probe, y_test) < metrics.brier(constant, y_test) - 0.05


def test_probe_is_left_out_without_hidden_states_with_the_reason():
    rng = np.random.default_rng(2)
    y = (rng.random(60) < 0.5).astype(float)
    train, conf = rows_of(["a"] * 60, y), synthetic_confidences(rng, y)
    fitted, not_fitted = baselines.trained_baselines(train, conf, {"test": (train, conf)}, 0)
    assert baselines.PROBE not in fitted["test"] and baselines.LOGREG in fitted["test"]
    assert "baseline_probe=false" in not_fitted[baselines.PROBE]


def test_logreg_not_fitted_on_a_single_class_but_domain_prior_is():
    train = rows_of(["a"] * 4, [1, 1, 1, 1])
    conf = synthetic_confidences(np.random.default_rng(1), np.ones(4))
    fitted, not_fitted = baselines.trained_baselines(train, conf, {"test": (train, conf)}, 0)
    assert set(fitted["test"]) == {baselines.DOMAIN_PRIOR}
    assert "single class" in not_fitted[baselines.LOGREG]
    assert "single class" in not_fitted[baselines.PROBE]


def test_read_train_rows_caps_with_a_seeded_sample_and_explains_absence(tmp_path):
    rows = [
        {
            "id": f"q{i}-0",
            "qid": f"q{i}",
            "domain": "a",
            "question": f"Q{i}?",
            "answers": ["x"],
            "choices": None,
            "prompt": f"Q{i}?",
            "response": "x",
            "correct": 1.0,
            "grader": "exact",
            "split": "train",
            "query": f"Q{i}? x",
        }
        for i in range(20)
    ]
    write_jsonl_atomic(tmp_path / "train.jsonl", rows)
    write_json_atomic(tmp_path / "manifest.json", {"counts": {"train": 20}})
    picked, reason = baselines.read_train_rows(tmp_path, 5, seed=0)
    assert reason is None and len(picked) == 5
    assert picked == baselines.read_train_rows(tmp_path, 5, seed=0)[0]
    assert [r["id"] for r in picked] == sorted(
        (r["id"] for r in picked), key=lambda s: int(s[1:-2])
    )
    assert len(baselines.read_train_rows(tmp_path, 100, seed=0)[0]) == 20
    assert "raw QA" in baselines.read_train_rows(tmp_path / "train.jsonl", 5, 0)[1]
    assert "eval.baseline_train_max=0" in baselines.read_train_rows(tmp_path, 0, 0)[1]
