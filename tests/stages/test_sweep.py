"""A 2-trial Optuna sweep of `calibtune train` on the tiny model through Hydra's basic launcher,
each method over its own search space (conf/search_space/<method>.yaml, the default one chosen
by the method), then `calibtune leaderboard` ranking the trials."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from fixtures import TWO_STEP_TRIAL, run_cli
from fixtures.labeled import write_synthetic_labeled_set
from omegaconf import OmegaConf

from calibtune.launch.sweep import trial_metrics
from calibtune.models import load_tokenizer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def labeled_dir(compose_cfg, tmp_path: Path) -> Path:
    cfg = compose_cfg("train")
    sizes = {"train": 8, "val": 8, "test": 2}
    return write_synthetic_labeled_set(
        tmp_path / "labeled", load_tokenizer(cfg.model), cfg.prompt, sizes
    )


# method -> (its overrides, keys of its own search space narrowed; the default method: none)
SPACES = {
    "probe": ([], "{probe.fit:'choice(adamw)',optim.lr:'tag(log, interval(1e-2, 1))'}"),
    "alora": (
        ["method=alora"],
        "{optim.lr:'tag(log, interval(1e-3, 1e-1))',lora.r:'choice(2, 4)'}",
    ),
}


@pytest.mark.parametrize("method", sorted(SPACES))
def test_two_trial_optuna_sweep_and_leaderboard(tiny_overrides, labeled_dir, tmp_path, method):
    sweep_dir = tmp_path / "sweep"
    overrides = [o for o in tiny_overrides if not o.startswith("run_dir=")]
    method_overrides, narrowed = SPACES[method]
    result = run_cli(
        "train",
        "+sweep=optuna",
        *overrides,
        *method_overrides,
        f"train.data_dir={labeled_dir}",
        *TWO_STEP_TRIAL,
        "hydra.sweeper.n_trials=2",
        f"++hydra.sweeper.params={narrowed}",  # on top of the method's own space
        f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trial_dirs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in trial_dirs] == ["0", "1"]
    # Optuna got each trial's val ECE back and reports the best of them
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    values = [trial_metrics(p / "train")["val/ece"] for p in trial_dirs]
    assert best.best_value == pytest.approx(min(values))
    overrides_seen = [OmegaConf.load(p / ".hydra" / "overrides.yaml") for p in trial_dirs]
    assert all(any(str(o).startswith("optim.lr=") for o in ov) for ov in overrides_seen)

    board = run_cli("leaderboard", str(sweep_dir), cwd=tmp_path)
    assert board.returncode == 0, board.stderr
    with (sweep_dir / "leaderboard.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["trial"] for r in rows) == ["0", "1"]
    ranked = [float(r["val/ece"]) for r in rows]
    assert ranked == sorted(values) and ranked[0] < ranked[1]
    assert all("optim.lr=" in r["overrides"] for r in rows)
    assert (sweep_dir / "leaderboard.png").stat().st_size > 0
    assert "Pareto front:" in board.stdout
