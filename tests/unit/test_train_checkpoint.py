"""Pickle-free checkpoints restore weights, optimizer, scheduler and RNG exactly; tracking."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from fixtures import LORA_METHOD
from omegaconf import OmegaConf
from safetensors.torch import save_file
from transformers import get_scheduler

from calibtune.config import save_config
from calibtune.errors import CalibtuneError, ConfigError
from calibtune.tracking import Tracker, read_metrics
from calibtune.train import checkpoint as ckpt
from calibtune.train import common
from calibtune.train import strategy as dist


def setup(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Dropout(0.5), torch.nn.Linear(3, 1))
    model[0].weight.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=1, num_training_steps=10)
    return model, optimizer, scheduler


def step(model, optimizer, scheduler):
    loss = model(torch.randn(5, 4)).pow(2).mean()
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


def snapshot(model, optimizer, scheduler, state: ckpt.TrainState) -> ckpt.Snapshot:
    """What the recipe gathers for a checkpoint (`gather_snapshot`), for a one-process model."""
    one_process = SimpleNamespace(num_processes=1)
    strategy = dist.Strategy("ddp", accumulation_steps=1)
    return common.gather_snapshot(one_process, strategy, model, optimizer, scheduler, state)


def test_auto_resume_refuses_checkpoints_made_with_other_settings(compose_cfg, tmp_path):
    cfg = compose_cfg("train", [LORA_METHOD, f"train.output_dir={tmp_path}"])
    model, optimizer, scheduler = setup(0)
    state = ckpt.TrainState(step=1)
    ckpt.save_checkpoint(tmp_path, snapshot(model, optimizer, scheduler, state), keep_last=2)
    save_config(cfg, tmp_path / "config.yaml")
    again = compose_cfg(
        "train", [LORA_METHOD, f"train.output_dir={tmp_path}", "train.timeout_s=60"]
    )
    assert ckpt.find_resume_checkpoint(again, tmp_path).name == "step_1"
    changed = compose_cfg("train", [LORA_METHOD, f"train.output_dir={tmp_path}", "optim.lr=0.5"])
    with pytest.raises(ConfigError, match=r"other settings \(optim.lr;"):
        ckpt.find_resume_checkpoint(changed, tmp_path)
    fresh = compose_cfg(
        "train", [LORA_METHOD, f"train.output_dir={tmp_path}", "optim.lr=0.5", "train.resume=never"]
    )
    assert ckpt.find_resume_checkpoint(fresh, tmp_path) is None


def test_checkpoint_round_trip_continues_identically(tmp_path):
    model, optimizer, scheduler = setup(0)
    for _ in range(3):
        step(model, optimizer, scheduler)
    state = ckpt.TrainState(step=3, epoch=0, batch_in_epoch=3, best_step=2, best_value=0.1)
    for n in (1, 2, 3):
        state.step = n
        ckpt.save_checkpoint(tmp_path, snapshot(model, optimizer, scheduler, state), keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_2", "step_3"]
    resume = OmegaConf.create({"train": {"resume": "auto"}})
    assert ckpt.find_resume_checkpoint(resume, tmp_path).name == "step_3"
    resume.train.resume = "never"
    assert ckpt.find_resume_checkpoint(resume, tmp_path) is None
    for _ in range(2):
        step(model, optimizer, scheduler)
    expected = dist.full_trainable_state(dist.Strategy("ddp", 1), model)

    other, _, _ = setup(1)
    other[0].weight.data.copy_(model[0].weight)  # the frozen base is the same model
    saved = ckpt.load_checkpoint(tmp_path / "checkpoints/step_3")
    dist.load_trainable_state(other, saved.trainable)
    other_opt = torch.optim.AdamW([p for p in other.parameters() if p.requires_grad], lr=0.1)
    other_sched = get_scheduler("cosine", other_opt, num_warmup_steps=1, num_training_steps=10)
    dist.load_optimizer_state(
        dist.Strategy("ddp", 1), other, other_opt, saved.optimizer, saved.optimizer_meta
    )
    other_sched.load_state_dict(saved.scheduler)
    dist.set_rng_state(*saved.rng[0])
    assert saved.train.step == 3 and saved.train.best_value == 0.1
    for _ in range(2):
        step(other, other_opt, other_sched)
    got = dist.full_trainable_state(dist.Strategy("ddp", 1), other)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    meta = json.loads((tmp_path / "checkpoints/step_3/state.json").read_text())
    assert meta["train"]["step"] == 3


def test_saved_tensors_are_checked_by_shape_not_count(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"a": torch.ones(4, 2), "b": torch.ones(1, 3)}, path)  # b: half of a [2, 3] shard
    ckpt.verify_saved_tensors(path, {"a": (4, 2), "b": (1, 3)})
    with pytest.raises(CalibtuneError, match=r"b is \(1, 3\), expected \(2, 3\)"):
        ckpt.verify_saved_tensors(path, {"a": (4, 2), "b": (2, 3)})
    with pytest.raises(CalibtuneError, match="missing"):
        ckpt.verify_saved_tensors(path, {"a": (4, 2), "c": (1, 3)})


def test_tracker_writes_metrics_and_an_offline_wandb_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = OmegaConf.create({"name": "wandb", "mode": "offline", "project": "calibtune-test"})
    tracker = Tracker(tmp_path, logger, OmegaConf.create({"seed": 0, "api_key": "s3cret"}))
    tracker.log({"train/loss": torch.tensor(0.5)}, step=1)
    tracker.log({"val/ece": 0.1}, step=2)
    tracker.finish()
    assert read_metrics(tmp_path) == [{"step": 1, "train/loss": 0.5}, {"step": 2, "val/ece": 0.1}]
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs, list(tmp_path.rglob("*"))
    config_text = "".join(p.read_text(errors="ignore") for p in runs[0].rglob("*.yaml"))
    assert "s3cret" not in config_text
