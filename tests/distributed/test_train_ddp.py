"""Two CPU processes (torchrun + gloo) train the same adapter as one process on the same global
batch: same losses per step, same adapter weights (up to float summation order)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures.labeled import write_synthetic_labeled_set
from safetensors.torch import load_file

from calibtune.config import compose
from calibtune.models import load_tokenizer
from calibtune.tracking import read_metrics

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "train" / "calibrate.py"

pytestmark = pytest.mark.distributed


def torchrun(nproc: int, overrides: list[str], cwd: Path) -> None:
    """Run train/calibrate.py under torchrun with `nproc` CPU processes; fail with its output."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--standalone",
        str(SCRIPT),
        *overrides,
    ]
    env_fix = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env={**os.environ, **env_fix}
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "train" / "manifest.json").read_text())


def test_two_processes_match_one(tiny_overrides: list[str], tmp_path: Path):
    cfg = compose("train", tiny_overrides)
    labeled = write_synthetic_labeled_set(
        tmp_path / "labeled",
        load_tokenizer(cfg.model),
        cfg.prompt,
        {"train": 16, "val": 6, "test": 2},
    )
    common = [
        *[o for o in tiny_overrides if not o.startswith("run_dir=")],
        f"train.data_dir={labeled}",
        "train.batch_size=4",
        "train.micro_batch_size=1",
        "train.epochs=1",
        "train.log_every=1",
        "train.eval_every=2",
        "train.checkpoint_every=0",
        "train.progress=false",
        "lora.lora_dropout=0.0",
        "optim.lr=5e-3",
    ]
    torchrun(1, [*common, f"run_dir={tmp_path}/one"], tmp_path)
    torchrun(2, [*common, f"run_dir={tmp_path}/two"], tmp_path)

    def losses(run: str) -> list[float]:
        return [
            r["train/loss"] for r in read_metrics(tmp_path / run / "train") if "train/loss" in r
        ]

    worlds = [manifest(tmp_path / run)["world_size"] for run in ("one", "two")]
    assert worlds == [1, 2]
    one, two = losses("one"), losses("two")
    assert len(one) == len(two) == 4
    assert torch.allclose(torch.tensor(one), torch.tensor(two), atol=1e-5), (one, two)
    a = load_file(tmp_path / "one/train/adapter/adapter_model.safetensors")
    b = load_file(tmp_path / "two/train/adapter/adapter_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5), name
    assert any(a[name].abs().sum() > 0 for name in a if "lora_B" in name)
