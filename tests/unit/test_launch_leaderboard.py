"""Sweep trial numbers, the objective, and `calibtune leaderboard` on hand-made trial dirs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from calibtune.errors import CalibtuneError, InputError
from calibtune.launch import leaderboard
from calibtune.launch.sweep import PENALTY, objective_value, trial_metrics

# name: (best val metrics, base val ece at step 0, overrides, eval test numbers or None)
TRIALS = {
    "0": ({"ece": 0.08, "brier": 0.20, "auroc": 0.70}, 0.25, ["optim.lr=1e-4", "seed=1"]),
    "1": ({"ece": 0.03, "brier": 0.19, "auroc": 0.62}, 0.25, ["optim.lr=3e-4", "seed=1"]),
    "2": ({"ece": 0.12, "brier": 0.24, "auroc": 0.60}, 0.25, ["optim.lr=1e-3", "seed=1"]),
}


def write_trial(trial_dir: Path, val: dict, base_ece: float, overrides: list[str]) -> None:
    """The files a `calibtune train` trial leaves (only the fields the leaderboard reads)."""
    train = trial_dir / "train"
    train.mkdir(parents=True)
    manifest = {"stage": "train", "steps": 20, "best": {"step": 20, "val_metrics": val}}
    (train / "manifest.json").write_text(json.dumps(manifest))
    records = [
        {"step": 0, "val/ece": base_ece, "val/auroc": 0.5},
        {"step": 5, "train/loss": 0.7},
        {"step": 20, **{f"val/{k}": v for k, v in val.items()}},
    ]
    (train / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (trial_dir / ".hydra").mkdir()
    (trial_dir / ".hydra" / "overrides.yaml").write_text(
        "".join(f"- {o}\n" for o in ["+sweep=optuna", *overrides])
    )


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    for name, (val, base, overrides) in TRIALS.items():
        write_trial(tmp_path / "sweep" / name, val, base, overrides)
    (tmp_path / "sweep" / "optimization_results.yaml").write_text("name: optuna\n")
    return tmp_path / "sweep"


def test_trial_metrics_reads_kept_adapter_and_step_zero(sweep_dir):
    record = trial_metrics(sweep_dir / "1" / "train")
    assert record["val/ece"] == 0.03 and record["val/auroc"] == 0.62
    assert record["base_val/ece"] == 0.25 and record["step"] == 20
    assert "test/ece" not in record


def test_trial_metrics_adds_eval_numbers_and_accuracy_drop(sweep_dir):
    eval_dir = sweep_dir / "0" / "eval"
    eval_dir.mkdir()
    metrics = {
        "methods": {"tuned/ptrue": {"ece": 0.05, "auroc": 0.7}, "base/ptrue": {"ece": 0.2}},
        "tuning_cost": {"base_accuracy": 0.5, "tuned_accuracy": 0.45},
        "answer_agreement": 0.9,
    }
    (eval_dir / "metrics.json").write_text(json.dumps(metrics))
    record = trial_metrics(sweep_dir / "0" / "train", eval_dir)
    assert record["test/ece"] == 0.05 and record["base_test/ece"] == 0.2
    assert record["accuracy_drop"] == pytest.approx(0.05)
    assert record["test/brier"] is None  # missing, not made up


def test_objective_penalises_accuracy_drop_beyond_limit():
    record = {"val/ece": 0.03, "val/auroc": 0.7, "accuracy_drop": 0.05}
    assert objective_value(record, "val/ece", "minimize", 0.1) == 0.03
    assert objective_value(record, "val/ece", "minimize", 0.02) == PENALTY
    assert objective_value(record, "val/auroc", "maximize", 0.02) == -PENALTY
    assert objective_value({"val/ece": 0.03}, "val/ece", "minimize", 0.0) == 0.03  # unmeasured
    with pytest.raises(InputError, match="val/nope"):
        objective_value(record, "val/nope", "minimize", None)


def test_pareto_front_by_hand():
    # (accuracy, ece): 0 and 1 trade off; 2 is beaten by 0 on both; 3 ties 0 exactly
    points = [(0.7, 0.08), (0.62, 0.03), (0.6, 0.12), (0.7, 0.08)]
    assert leaderboard.pareto_front(points) == [0, 1, 3]


def test_leaderboard_ranks_trials_and_writes_csv_and_plot(sweep_dir, capsys):
    leaderboard.main([str(sweep_dir)])
    out = capsys.readouterr().out
    table = out.splitlines()
    assert table[0].split()[:3] == ["rank", "trial", "val/ece"]
    ranked = [line.split()[1] for line in table[2:5]]
    assert ranked == ["1", "0", "2"]  # by val ECE, lowest first
    assert table[2].endswith("optim.lr=3e-4")  # only what the sweep changed
    assert "+sweep" not in out and "seed=1" not in out
    assert "Pareto front: 1, 0" in out  # x = val AUROC here: 2 is dominated by 0
    with (sweep_dir / "leaderboard.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["trial"] for r in rows] == ["1", "0", "2"]
    assert rows[0]["overrides"] == "optim.lr=3e-4 seed=1"  # the CSV keeps all of them
    assert float(rows[0]["val/ece"]) == 0.03 and rows[0]["base_val/ece"] == "0.25"
    assert (sweep_dir / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_leaderboard_other_metric_and_direction(sweep_dir, capsys, tmp_path):
    leaderboard.main(
        [
            str(sweep_dir),
            "--metric",
            "val/auroc",
            "--direction",
            "maximize",
            "--out",
            str(tmp_path / "lb"),
        ]
    )
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in table[2:5]] == ["0", "1", "2"]
    assert (tmp_path / "lb" / "leaderboard.csv").is_file()


def test_leaderboard_without_trials_says_so(tmp_path):
    with pytest.raises(CalibtuneError, match="no finished trials"):
        leaderboard.main([str(tmp_path)])
    with pytest.raises(CalibtuneError, match="no such sweep directory"):
        leaderboard.main([str(tmp_path / "missing")])


def test_leaderboard_ranks_by_the_sweeps_own_metric(sweep_dir, capsys):
    (sweep_dir / "multirun.yaml").write_text(
        "sweep:\n  metric: val/auroc\n  direction: maximize\nhydra:\n  sweep:\n    dir: x\n"
    )
    leaderboard.main([str(sweep_dir)])
    assert "ranked by val/auroc (maximize)" in capsys.readouterr().out
    leaderboard.main([str(sweep_dir), "--metric", "val/brier"])
    assert "ranked by val/brier (minimize)" in capsys.readouterr().out


def write_eval_metrics(path: Path, seed: int, tuned_auroc: float, best: str) -> None:
    """The parts of an eval metrics.json that the aggregate reads."""
    methods = {
        "base/ptrue": {"auroc": 0.6, "auroc_within": 0.55, "ece": 0.2},
        "tuned/ptrue": {"auroc": tuned_auroc, "auroc_within": tuned_auroc - 0.1, "ece": 0.05},
        best: {"auroc": 0.7, "auroc_within": 0.6, "ece": 0.1},
    }
    metrics = {
        "seed": seed,
        "accuracy": 0.4,
        "methods": methods,
        "deltas": {"auroc": {"value": tuned_auroc - 0.6}},
        "deltas_vs_best_baseline": {
            "baseline": best,
            "deltas": {"auroc_within": {"value": tuned_auroc - 0.1 - 0.6}},
        },
    }
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps(metrics))


def test_aggregate_gives_mean_and_sd_over_seeds(tmp_path, capsys):
    for seed, auroc, best in ((0, 0.80, "baseline/logreg"), (1, 0.84, "base/pmin")):
        write_eval_metrics(tmp_path / str(seed) / "eval", seed, auroc, best)
    (tmp_path / "0" / "train").mkdir()
    (tmp_path / "0" / "train" / "metrics.json").write_text("[1, 2]")  # not an eval output
    leaderboard.main(["--aggregate", str(tmp_path)])
    table = json.loads((tmp_path / "aggregate.json").read_text())
    assert table["runs"] == ["0/eval", "1/eval"]
    assert table["best_baseline"] == ["baseline/logreg", "base/pmin"]
    assert table["tuned/ptrue/auroc"]["mean"] == pytest.approx(0.82)
    assert table["tuned/ptrue/auroc"]["sd"] == pytest.approx(0.02 * 2**0.5)
    assert table["best_baseline/auroc_within"] == {"mean": 0.6, "sd": 0.0, "n": 2}
    assert table["vs_best/auroc_within"]["mean"] == pytest.approx(0.12)
    assert table["base/pmin/auroc"] == {"mean": 0.7, "sd": None, "n": 1}  # a raw base signal
    assert "| tuned/ptrue/auroc | 0.820 ± 0.028 | 2 |" in capsys.readouterr().out
    assert (tmp_path / "aggregate.md").read_text().startswith("Runs (2): 0/eval, 1/eval")


def test_aggregate_without_eval_outputs_says_so(tmp_path):
    with pytest.raises(CalibtuneError, match="no eval metrics.json"):
        leaderboard.main(["--aggregate", str(tmp_path)])
