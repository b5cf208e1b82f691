"""The terminal results table of `calibtune run`."""

from __future__ import annotations

from calibtune.pipeline import results_table


def test_results_table_shows_values_deltas_and_missing():
    metrics = {
        "n_test": 1000,
        "accuracy": 0.5,
        "answer_agreement": 0.995,
        "methods": {
            "base/ptrue": {"ece": 0.2, "brier": 0.3, "auroc": None},
            "tuned/ptrue": {"ece": 0.05, "brier": 0.2, "auroc": 0.7},
        },
        "deltas": {"ece": {"value": -0.15, "ci95": [-0.17, -0.13]}},
    }
    lines = results_table(metrics).splitlines()
    assert lines[1].split()[:3] == ["ece", "0.200", "0.050"]
    assert "-0.150 [-0.170, -0.130]" in lines[1]
    assert lines[3].split()[:3] == ["auroc", "n/a", "0.700"]
    assert lines[2].endswith("n/a")  # brier delta absent
    assert "0.995" in lines[-1]
