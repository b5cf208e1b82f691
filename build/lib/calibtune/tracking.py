"""Experiment tracking: an always-written local `metrics.jsonl` plus wandb (offline by default,
online with `logger=wandb_online`, off with `logger=none`). Only rank 0 tracks; other ranks get
a tracker that does nothing."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from omegaconf import DictConfig

from calibtune.config import resolved_container
from calibtune.io import write_text_atomic

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.jsonl"


class Tracker:
    """Log dicts of scalars by step to metrics.jsonl and, if configured, wandb."""

    def __init__(self, output_dir: str | os.PathLike | None, logger_cfg=None, cfg=None):
        self.path = Path(output_dir) / METRICS_FILE if output_dir is not None else None
        self.run = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path is not None and logger_cfg is not None and logger_cfg.get("name") == "wandb":
            self.run = _start_wandb(logger_cfg, cfg, self.path.parent)

    def log(self, metrics: dict, step: int) -> None:
        """Append one record {step, **metrics} to metrics.jsonl (and send it to wandb)."""
        if self.path is None:
            return
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        if self.run is not None:
            self.run.log(record, step=step)

    def drop_after(self, step: int) -> None:
        """Forget records logged after `step` (a resumed run logs those steps again)."""
        if self.path is None or not self.path.is_file():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
        write_text_atomic(self.path, "".join(line + "\n" for line in kept))

    def finish(self) -> None:
        """Close the wandb run (the local file is already complete)."""
        if self.run is not None:
            self.run.finish()
            self.run = None


def _plain(value):
    """Tensors and numpy scalars as plain Python numbers."""
    return value.item() if hasattr(value, "item") else value


def _start_wandb(logger_cfg, cfg: DictConfig | None, output_dir: Path):
    """wandb.init with the resolved, secret-free config; the run directory goes in output_dir."""
    import wandb

    mode = logger_cfg.get("mode", "offline")
    if os.environ.get("WANDB_MODE") == "offline":
        mode = "offline"
    log.info("wandb run (%s) in %s", mode, output_dir / "wandb")
    return wandb.init(
        project=logger_cfg.get("project") or "calibtune",
        entity=logger_cfg.get("entity"),
        group=logger_cfg.get("group"),
        tags=list(logger_cfg.get("tags") or []),
        mode=mode,
        dir=str(output_dir),
        config=resolved_container(cfg) if cfg is not None else None,
        resume="allow",
        id=logger_cfg.get("run_id"),
    )


def read_metrics(output_dir: str | os.PathLike) -> list[dict]:
    """All records of a run's metrics.jsonl, in order."""
    path = Path(output_dir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
