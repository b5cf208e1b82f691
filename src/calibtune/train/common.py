"""Training utilities shared by the recipes (the LoRA recipe `train.lora`, the probe
`train.probe`): output dir, config checks, the labeled rows, steps and batch-order seeds, the
optimizer and its schedule, the best-checkpoint rule, rank shares, and checkpoint snapshots."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import get_args

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from omegaconf import DictConfig
from transformers import get_scheduler

from calibtune.errors import ConfigError
from calibtune.examples import read_labeled_split
from calibtune.models.methods import method_named
from calibtune.schema import BestMetric
from calibtune.train import checkpoint as ckpt
from calibtune.train import preemption
from calibtune.train import strategy as dist

HIGHER_IS_BETTER = {"auroc"}
BEST_METRICS = get_args(BestMetric)  # the allowed values live in calibtune.schema


def shared_output_dir(accelerator: Accelerator, output_dir: str) -> Path:
    """The output dir as rank 0 resolves it (`${now:...}` may differ per rank), on every rank."""
    holder = [str(Path(output_dir).resolve())]
    if accelerator.num_processes > 1:
        broadcast_object_list(holder, from_process=0)
    return Path(holder[0])


def check_train_config(
    cfg: DictConfig, num_train: int, world_size: int, batched: bool = True
) -> None:
    """Fail before any work on settings that cannot train, saying what to change. `batched`:
    the recipe takes optimizer steps over batches of train (probe.fit=logistic does not)."""
    tc = cfg.train
    if tc.batch_size < 1 or tc.micro_batch_size < 1:
        raise ConfigError("train.batch_size and train.micro_batch_size must be >= 1")
    if batched and tc.batch_size > num_train:
        raise ConfigError(
            f"train.batch_size={tc.batch_size} is larger than the {num_train} training examples; "
            f"set train.batch_size to at most {num_train}"
        )
    if batched and tc.batch_size % world_size:
        raise ConfigError(
            f"train.batch_size={tc.batch_size} does not split over {world_size} processes; "
            f"use a multiple of {world_size}"
        )
    if tc.best_metric not in BEST_METRICS:
        raise ConfigError(f"train.best_metric={tc.best_metric!r}: choose one of {BEST_METRICS}")
    if tc.beta < 0:
        raise ConfigError(f"train.beta={tc.beta} must be >= 0")
    if tc.epochs < 1 and not tc.max_steps:
        raise ConfigError("train.epochs must be >= 1 (or set train.max_steps)")
    if tc.gradient_checkpointing and method_named(cfg.method.name).activated:
        raise ConfigError(
            f"train.gradient_checkpointing=true with method={cfg.method.name}: checkpointed "
            "layers drop the prefix KV cache the adapter runs on; use method=lora or "
            "gradient_checkpointing=false"
        )


def read_training_data(cfg: DictConfig) -> tuple[list[dict], list[dict]]:
    """Train and val rows of the labeled set (validated). `train.max_examples` keeps a random
    subset drawn with the seed (files are ordered by domain, so the first N would be one domain)."""
    train_rows = read_labeled_split(cfg.train.data_dir, "train")
    val_rows = read_labeled_split(cfg.train.data_dir, "val")
    limit = int(cfg.train.max_examples or 0)
    if 0 < limit < len(train_rows):
        keep = sorted(random.Random(int(cfg.seed)).sample(range(len(train_rows)), limit))
        train_rows = [train_rows[i] for i in keep]
    return train_rows, val_rows


def total_steps(cfg: DictConfig, steps_per_epoch: int) -> int:
    """Optimizer steps of the whole run: epochs x steps per epoch, capped by max_steps."""
    steps = int(cfg.train.epochs) * steps_per_epoch
    return min(steps, int(cfg.train.max_steps)) if cfg.train.max_steps else steps


def epoch_seed(seed: int, epoch: int) -> int:
    """The batch-order seed of one epoch."""
    return seed * 100_003 + epoch


def warmup_steps(warmup: float, steps: int) -> int:
    """`optim.warmup` < 1 is a fraction of the steps, >= 1 a number of steps."""
    return int(math.ceil(warmup * steps)) if warmup < 1 else int(warmup)


def adamw(cfg: DictConfig, model: torch.nn.Module) -> torch.optim.AdamW:
    """AdamW (`optim.lr`, `betas`, `eps`, `weight_decay`) over the trainable parameters."""
    return torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=float(cfg.optim.lr),
        betas=tuple(cfg.optim.betas),
        eps=float(cfg.optim.eps),
        weight_decay=float(cfg.optim.weight_decay),
    )


def make_optimizer(cfg: DictConfig, model: torch.nn.Module, steps: int):
    """AdamW over the trainable parameters and the `optim.scheduler` schedule with
    `optim.warmup` (the LoRA recipe's)."""
    optimizer = adamw(cfg, model)
    scheduler = get_scheduler(
        str(cfg.optim.scheduler),
        optimizer,
        num_warmup_steps=warmup_steps(float(cfg.optim.warmup), steps),
        num_training_steps=steps,
    )
    return optimizer, scheduler


def checkpoint_or_stop(
    accelerator: Accelerator, train_cfg, step: int, steps: int, save_checkpoint: Callable[[], None]
) -> None:
    """At an optimizer-step boundary: `save_checkpoint()` when `train.checkpoint_every` says so
    or a stop signal arrived (train.preemption), then, for a stop, exit 75. A collective: every
    rank calls it after the same step."""
    stop = preemption.stop_requested(accelerator) and step < steps
    every = int(train_cfg.checkpoint_every)
    if stop or (every and step % every == 0 and step < steps):
        save_checkpoint()
    if stop:
        preemption.exit_stopped(step)


def is_better(metric: str, value: float | None, best: float | None) -> bool:
    """True when `value` beats `best` for this metric (None never wins, anything beats None)."""
    if value is None:
        return False
    if best is None:
        return True
    return value > best if metric in HIGHER_IS_BETTER else value < best


def rank_share(num_items: int, rank: int, world_size: int) -> list[int]:
    """Every world_size-th index from `rank`, padded (repeating this rank's last index) to the
    same length on every rank, so each rank runs the same number of forwards (with FSDP2 and
    ZeRO-3 every forward is a collective)."""
    mine = list(range(rank, num_items, world_size))
    share = math.ceil(num_items / world_size)
    return mine + [mine[-1] if mine else 0] * (share - len(mine))


def gather_snapshot(
    accelerator: Accelerator,
    strategy: dist.Strategy,
    peft_model: torch.nn.Module,
    optimizer,
    scheduler,
    state: ckpt.TrainState,
) -> ckpt.Snapshot:
    """Everything a checkpoint holds, gathered to full tensors. Collective: every rank calls."""
    opt_tensors, opt_meta = dist.full_optimizer_state(strategy, peft_model, optimizer)
    return ckpt.Snapshot(
        trainable=dist.full_trainable_state(strategy, peft_model),
        optimizer=opt_tensors,
        optimizer_meta=opt_meta,
        scheduler=scheduler.state_dict(),
        rng=dist.every_rank_rng(accelerator.num_processes),
        train=replace(state),
    )


def restore_snapshot(
    accelerator: Accelerator,
    strategy: dist.Strategy,
    peft_model: torch.nn.Module,
    optimizer,
    scheduler,
    snapshot: ckpt.Snapshot,
) -> ckpt.TrainState:
    """Optimizer, scheduler and this rank's RNG from a checkpoint (the weights were loaded into
    the model before it was sharded); a rank the checkpoint did not have takes rank 0's RNG."""
    dist.load_optimizer_state(
        strategy, peft_model, optimizer, snapshot.optimizer, snapshot.optimizer_meta
    )
    scheduler.load_state_dict(snapshot.scheduler)
    rank = accelerator.process_index
    dist.set_rng_state(*snapshot.rng[rank if rank < len(snapshot.rng) else 0])
    return replace(snapshot.train)
