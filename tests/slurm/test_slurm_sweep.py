"""A 2-trial sweep through Hydra's submitit launcher (`+sweep=submitit`, which selects
hydra/launcher=submitit_slurm) runs each trial as a job of the real cluster, and
`calibtune leaderboard` ranks both."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import LORA_METHOD, TWO_STEP_TRIAL
from fixtures.labeled import write_synthetic_labeled_set
from slurm_helpers import REPO, Cluster

from calibtune.config import compose
from calibtune.models import load_tokenizer

pytestmark = pytest.mark.slurm


def test_submitit_sweep_runs_trials_as_slurm_jobs_and_the_leaderboard_ranks_them(
    slurm: Cluster, tiny_overrides: list[str], tmp_path: Path
):
    model_overrides = [o for o in tiny_overrides if not o.startswith("run_dir=")]
    model_overrides.append(LORA_METHOD)  # optim.lr acts on a LoRA (the logistic probe has none)
    cfg = compose("train", model_overrides)
    labeled = write_synthetic_labeled_set(
        tmp_path / "labeled",
        load_tokenizer(cfg.model),
        cfg.prompt,
        {"train": 8, "val": 8, "test": 2},
    )
    sweep_dir = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "calibtune.cli", "train", "-m", "+sweep=submitit"]
        + model_overrides
        + [
            f"train.data_dir={labeled}",
            *TWO_STEP_TRIAL,
            "optim.lr=1e-3,1e-1",
            f"hydra.sweep.dir={sweep_dir}",
            # the local cluster: no GPUs, memory not scheduled, one CPU per trial
            "hydra.launcher.gpus_per_node=0",
            "hydra.launcher.mem_gb=null",
            "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.timeout_min=10",
        ],
        cwd=REPO,
        env=slurm.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    # each trial ran as a task of a SLURM job array that submitit submitted
    job_dirs = sorted(p.name for p in (sweep_dir / ".submitit").iterdir() if p.is_dir())
    array_id = job_dirs[0]
    assert job_dirs == [array_id, f"{array_id}_0", f"{array_id}_1"]
    tasks = slurm.wait([array_id])[array_id]  # results come back just before the jobs end
    assert [(t["JobState"], t["Partition"]) for t in tasks] == [("COMPLETED", "batch")] * 2
    assert {t["NumCPUs"] for t in tasks} == {"1"}

    board = subprocess.run(
        [sys.executable, "-m", "calibtune.cli", "leaderboard", str(sweep_dir)],
        cwd=REPO,
        env=slurm.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert board.returncode == 0, board.stderr
    with (sweep_dir / "leaderboard.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["trial"] for r in rows) == ["0", "1"]
    assert sorted(r["overrides"].split()[-1] for r in rows) == ["optim.lr=0.001", "optim.lr=0.1"]
    ece = [float(r["val/ece"]) for r in rows]
    assert ece == sorted(ece)  # ranked by the default metric, val/ece
