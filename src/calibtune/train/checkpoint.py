"""Checkpoints and the saved adapter, without pickle: tensors in safetensors, the rest in JSON.

A resume checkpoint `checkpoints/step_N/` holds the trainable weights, the optimizer state, the
scheduler state, the data position (epoch, batch) and every RNG state. It is written into a temp
directory and renamed, so a directory named step_N is always complete."""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from calibtune.errors import CalibtuneError, ConfigError
from calibtune.io import atomic_dir, write_json_atomic

CHECKPOINTS = "checkpoints"
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


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train (LoRA or probe weights), by name, detached and contiguous."""
    return {
        name: param.detach().contiguous().cpu()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def load_trainable_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy saved trainable weights back into `model` (names must match exactly)."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if set(params) != set(tensors):
        raise CalibtuneError("checkpoint weights do not match the model's trainable parameters")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(tensors[name].to(param.device, param.dtype))


def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Split an optimizer state dict into tensors (safetensors) and JSON-able groups."""
    state = optimizer.state_dict()
    tensors = {}
    for index, param_state in state["state"].items():
        for key, value in param_state.items():
            tensors[f"{index}.{key}"] = torch.as_tensor(value).contiguous().cpu()
    groups = [
        {k: list(v) if isinstance(v, tuple) else v for k, v in g.items()}
        for g in state["param_groups"]
    ]
    return tensors, {"param_groups": groups}


def _optimizer_from_files(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    """Rebuild and load an optimizer state dict written by `_optimizer_to_files`."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = [
        {k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]
    ]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _rng_state() -> tuple[dict, dict]:
    """All RNG states: torch (and cuda) as tensors, python and numpy as JSON."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
    }
    return tensors, meta


def _set_rng_state(tensors: dict, meta: dict) -> None:
    """Restore the states saved by `_rng_state`."""
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(
    output_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    state: TrainState,
    keep_last: int,
    rng_tensors: dict | None = None,
    rng_meta: dict | None = None,
) -> Path:
    """Write checkpoints/step_N atomically (temp dir + rename) and delete all but the newest
    `keep_last`. Call on rank 0 only; pass every rank's RNG state if they differ."""
    root = output_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{state.step}"
    with atomic_dir(final) as tmp:
        save_file(trainable_state(model), tmp / "trainable.safetensors")
        opt_tensors, opt_meta = _optimizer_to_files(optimizer)
        save_file(opt_tensors, tmp / "optimizer.safetensors")
        if rng_tensors is None:
            rng_tensors, rng_meta = _rng_state()
        save_file(rng_tensors, tmp / "rng.safetensors")
        write_json_atomic(
            tmp / "state.json",
            {
                "train": asdict(state),
                "optimizer": opt_meta,
                "scheduler": scheduler.state_dict(),
                "rng": rng_meta,
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


def find_resume_checkpoint(resume: str | None, output_dir: Path) -> Path | None:
    """`auto`: the newest complete checkpoint in output_dir (or None); `never`/null: None;
    anything else: that checkpoint directory, which must exist."""
    if resume in (None, "never", "no", False):
        return None
    if resume == "auto":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(str(resume))
    if not (path / "state.json").is_file():
        raise ConfigError(f"train.resume={resume!r}: not a complete checkpoint directory")
    return path


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler
) -> TrainState:
    """Restore weights, optimizer, scheduler and RNG states from a checkpoint directory."""
    meta = json.loads((path / "state.json").read_text())
    load_trainable_state(model, load_file(path / "trainable.safetensors"))
    _optimizer_from_files(optimizer, load_file(path / "optimizer.safetensors"), meta["optimizer"])
    scheduler.load_state_dict(meta["scheduler"])
    _set_rng_state(load_file(path / "rng.safetensors"), meta["rng"])
    return TrainState(**meta["train"])


def verify_saved_tensors(path: Path, expected: dict[str, torch.Tensor] | None = None) -> None:
    """Fail if a saved safetensors file is empty, holds empty or non-finite tensors, or (when
    `expected` is given) differs in names or shapes from what was meant to be saved."""
    tensors = load_file(path)
    if not tensors or any(t.numel() == 0 for t in tensors.values()):
        raise CalibtuneError(f"{path}: saved weights are empty (sharded save gathered nothing?)")
    if any(not torch.isfinite(t).all() for t in tensors.values()):
        raise CalibtuneError(f"{path}: saved weights contain NaN or inf")
    if expected is not None and len(expected) != len(tensors):
        raise CalibtuneError(
            f"{path}: saved {len(tensors)} tensors, expected {len(expected)} trainable tensors"
        )
