"""The trainer's side of preemption, without a cluster: SIGUSR1 or SIGTERM mid-run makes the
train stage checkpoint at the next optimizer step and exit with STOPPED_EXIT_CODE; running it
again resumes to the uninterrupted run's adapter, bit for bit. tests/slurm/ runs the same
through SLURM's time-limit signal, requeue and preemption."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from fixtures import LORA_METHOD
from fixtures.labeled import write_synthetic_labeled_set
from safetensors.torch import load_file

from calibtune.models import load_tokenizer
from calibtune.train import checkpoint as ckpt
from calibtune.train import lora, preemption, recipe

TRAIN = [
    "train.batch_size=4",
    "train.micro_batch_size=2",
    "train.eval_batch_size=16",
    "train.log_every=1",
    "train.progress=false",
    "train.epochs=2",
    "train.eval_every=2",
    "train.eval_at_start=false",
    "train.checkpoint_every=0",  # the only checkpoint is the one written on the stop request
    LORA_METHOD,
    "lora.lora_dropout=0.1",
    "optim.lr=5e-3",
]
STOP_AFTER = 2  # the signal arrives during step 2 of 4


@pytest.fixture
def labeled_dir(compose_cfg, tmp_path: Path) -> Path:
    cfg = compose_cfg("train")
    sizes = {"train": 8, "val": 4, "test": 2}
    return write_synthetic_labeled_set(
        tmp_path / "labeled", load_tokenizer(cfg.model), cfg.prompt, sizes
    )


def adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "train" / "adapter" / "adapter_model.safetensors")


def test_signal_mid_run_checkpoints_exits_and_resumes_bitwise(
    compose_cfg, labeled_dir: Path, tmp_path: Path, monkeypatch
):
    def cfg(name: str):
        return compose_cfg(
            "train", [*TRAIN, f"train.data_dir={labeled_dir}", f"run_dir={tmp_path / name}"]
        )

    recipe.run_train_stage(cfg("full"))

    real_step = lora.train_one_batch
    steps: list[int] = []

    def signal_during_step(*args, **kwargs):
        steps.append(len(steps) + 1)
        if len(steps) == STOP_AFTER:
            os.kill(os.getpid(), signal.SIGTERM)  # as SLURM does on preemption
        return real_step(*args, **kwargs)

    monkeypatch.setattr(lora, "train_one_batch", signal_during_step)
    handlers = {s: signal.getsignal(s) for s in preemption.STOP_SIGNALS}
    with pytest.raises(SystemExit) as stopped:
        recipe.run_train_stage(cfg("stopped"))
    assert stopped.value.code == preemption.STOPPED_EXIT_CODE
    assert steps == [1, 2]  # stopped at the step boundary right after the signal
    train_dir = tmp_path / "stopped" / "train"
    assert [p.name for p in ckpt.list_checkpoints(train_dir)] == [f"step_{STOP_AFTER}"]
    assert not (train_dir / "manifest.json").exists()
    assert {s: signal.getsignal(s) for s in preemption.STOP_SIGNALS} == handlers  # restored

    monkeypatch.setattr(lora, "train_one_batch", real_step)
    recipe.run_train_stage(cfg("stopped"))  # train.resume=auto
    want, got = adapter(tmp_path / "full"), adapter(tmp_path / "stopped")
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    manifests = [
        json.loads((tmp_path / n / "train/manifest.json").read_text()) for n in ("full", "stopped")
    ]
    assert manifests[0]["best"] == manifests[1]["best"]


PROBE_ADAMW = [o for o in TRAIN if not o.startswith(("method=", "lora."))] + ["probe.fit=adamw"]


def test_probe_adamw_stops_on_a_signal_and_resumes_bitwise(
    compose_cfg, labeled_dir: Path, tmp_path: Path, monkeypatch
):
    """The default method's trained head (probe.fit=adamw) stops and resumes as the LoRA does."""
    from calibtune.train import probe

    def cfg(name: str):
        overrides = [*PROBE_ADAMW, f"train.data_dir={labeled_dir}", f"run_dir={tmp_path / name}"]
        return compose_cfg("train", overrides)

    recipe.run_train_stage(cfg("full"))
    real_loss, steps = probe.soft_binary_cross_entropy, []

    def signal_during_step(*args, **kwargs):  # the loss: once per optimizer step
        steps.append(len(steps) + 1)
        if len(steps) == STOP_AFTER:
            os.kill(os.getpid(), signal.SIGUSR1)  # as SLURM does ahead of the time limit
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(probe, "soft_binary_cross_entropy", signal_during_step)
    with pytest.raises(SystemExit) as stopped:
        recipe.run_train_stage(cfg("stopped"))
    assert stopped.value.code == preemption.STOPPED_EXIT_CODE and steps == [1, 2]
    train_dir = tmp_path / "stopped" / "train"
    assert [p.name for p in ckpt.list_checkpoints(train_dir)] == [f"step_{STOP_AFTER}"]
    assert not (train_dir / "manifest.json").exists()

    monkeypatch.setattr(probe, "soft_binary_cross_entropy", real_loss)
    recipe.run_train_stage(cfg("stopped"))  # train.resume=auto
    heads = [
        load_file(tmp_path / n / "train/adapter/probe.safetensors") for n in ("full", "stopped")
    ]
    assert heads[0].keys() == heads[1].keys()
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    manifests = [
        json.loads((tmp_path / n / "train/manifest.json").read_text()) for n in ("full", "stopped")
    ]
    assert manifests[0]["best"] == manifests[1]["best"] and manifests[1]["final"]["step"] == 4


def test_signals_only_set_a_flag_and_handlers_come_back(compose_cfg, labeled_dir, tmp_path):
    before = {s: signal.getsignal(s) for s in preemption.STOP_SIGNALS}
    with preemption.stop_on_signals():
        for signum in preemption.STOP_SIGNALS:  # each would end the process without the handler
            os.kill(os.getpid(), signum)
        assert preemption.received_signals() == ["SIGUSR1", "SIGTERM"]
    assert {s: signal.getsignal(s) for s in preemption.STOP_SIGNALS} == before
    cfg = compose_cfg("train", [*TRAIN, f"train.data_dir={labeled_dir}", "train.max_steps=2"])
    out = recipe.run_train_stage(cfg)  # a signal received before this run is forgotten
    assert json.loads((out / "manifest.json").read_text())["final"]["step"] == 2
