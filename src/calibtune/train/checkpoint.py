"""Checkpoints and the saved adapter, without pickle: tensors in safetensors, the rest in JSON.

A resume checkpoint `checkpoints/step_N/` holds the trainable weights and the AdamW state as
full tensors keyed by parameter name (gathered under every strategy, see strategy.py), the
scheduler state, the data position (epoch, batch) and every rank's RNG states. It is written into a temp
directory and renamed, so a directory named step_N is always complete."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig
from safetensors.torch import load_file, save_file

from calibtune.config import stage_changes
from calibtune.errors import CalibtuneError, ConfigError
from calibtune.io import atomic_dir, write_json_atomic

CHECKPOINTS = "checkpoints"
RESUMABLE = ("train.resume", "train.timeout_s")  # may change between a run and its resume
STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass
class TrainState:
    """Where training is: the data position and the best validation result so far."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_step: int | None = None
    best_value: float | None = None
    best_metrics: dict = field(default_factory=dict)


@dataclass
class Snapshot:
    """Everything a checkpoint holds, as full tensors and JSON (what every strategy gathers)."""

    trainable: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    optimizer_meta: dict
    scheduler: dict
    rng: list[tuple[dict, dict]]  # per rank: (tensors, JSON)
    train: TrainState


def save_checkpoint(output_dir: Path, snapshot: Snapshot, keep_last: int) -> Path:
    """Write checkpoints/step_N atomically (temp dir + rename) and delete all but the newest
    `keep_last`. Call on rank 0 only, with a snapshot gathered on every rank."""
    root = output_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{snapshot.train.step}"
    with atomic_dir(final) as tmp:
        save_file(snapshot.trainable, tmp / "trainable.safetensors")
        save_file(snapshot.optimizer, tmp / "optimizer.safetensors")
        rng_tensors = {
            f"{rank}/{key}": value
            for rank, (tensors, _) in enumerate(snapshot.rng)
            for key, value in tensors.items()
        }
        save_file(rng_tensors, tmp / "rng.safetensors")
        write_json_atomic(
            tmp / "state.json",
            {
                "train": asdict(snapshot.train),
                "optimizer": snapshot.optimizer_meta,
                "scheduler": snapshot.scheduler,
                "rng": [meta for _, meta in snapshot.rng],
            },
        )
    for old in list_checkpoints(output_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints under output_dir/checkpoints, oldest first."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := STEP_DIR.match(p.name)) and (p / "state.json").is_file()
    ]
    return [p for _, p in sorted(found)]


def find_resume_checkpoint(cfg: DictConfig, output_dir: Path) -> Path | None:
    """train.resume `auto`: the newest complete checkpoint in output_dir (or None), refused when
    output_dir's config.yaml shows it was made with other settings; `never`/null: None; anything
    else: that checkpoint directory, which must exist."""
    resume = cfg.train.resume
    if resume in (None, "never", "no", False):
        return None
    if resume == "auto":
        found = list_checkpoints(output_dir)
        changes = [k for k in stage_changes(output_dir, cfg, "train") or [] if k not in RESUMABLE]
        if found and changes:
            raise ConfigError(
                f"train.resume=auto: the checkpoints in {output_dir} were made with other "
                f"settings ({', '.join(changes[:6])}; see {output_dir / 'config.yaml'}); "
                "run with those settings to resume, or set train.resume=never or another "
                "train.output_dir to start over"
            )
        return found[-1] if found else None
    path = Path(str(resume))
    if not (path / "state.json").is_file():
        raise ConfigError(f"train.resume={resume!r}: not a complete checkpoint directory")
    return path


def load_checkpoint(path: Path) -> Snapshot:
    """Read a checkpoint directory written by `save_checkpoint`."""
    meta = json.loads((path / "state.json").read_text())
    rng_tensors = load_file(path / "rng.safetensors")
    rng = []
    for rank, rank_meta in enumerate(meta["rng"]):
        prefix = f"{rank}/"
        tensors = {k[len(prefix) :]: v for k, v in rng_tensors.items() if k.startswith(prefix)}
        rng.append((tensors, rank_meta))
    return Snapshot(
        trainable=load_file(path / "trainable.safetensors"),
        optimizer=load_file(path / "optimizer.safetensors"),
        optimizer_meta=meta["optimizer"],
        scheduler=meta["scheduler"],
        rng=rng,
        train=TrainState(**meta["train"]),
    )


def verify_saved_tensors(path: Path, expected: dict[str, tuple[int, ...]]) -> None:
    """Fail if a saved safetensors file is empty, holds non-finite tensors, or differs in names
    or in any tensor's shape from `expected` (a shard-sized tensor fails here)."""
    tensors = load_file(path)
    if not tensors or any(t.numel() == 0 for t in tensors.values()):
        raise CalibtuneError(f"{path}: saved weights are empty (sharded save gathered nothing?)")
    if any(not torch.isfinite(t).all() for t in tensors.values()):
        raise CalibtuneError(f"{path}: saved weights contain NaN or inf")
    if set(tensors) != set(expected):
        missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        raise CalibtuneError(f"{path}: tensors missing {missing[:3]}, unexpected {extra[:3]}")
    wrong = {k: tuple(t.shape) for k, t in tensors.items() if tuple(t.shape) != tuple(expected[k])}
    if wrong:
        name = sorted(wrong)[0]
        raise CalibtuneError(
            f"{path}: {len(wrong)} tensors have the wrong shape, e.g. {name} is {wrong[name]}, "
            f"expected {tuple(expected[name])} (a shard saved instead of the whole tensor?)"
        )
