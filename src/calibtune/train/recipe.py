"""The train stage's entry: the recipe of the configured method.

    calibtune train [overrides]
    accelerate launch --config_file launch/accelerate/<x>.yaml train/calibrate.py [overrides]

One recipe per module: `train.lora` (method=lora, alora and alora_head: steps, validation,
checkpoints, preemption, every launch strategy) and `train.probe` (method=probe: a head on the
frozen model's recorded hidden states). `RECIPES` maps each method object of
`calibtune.models.methods` to its recipe; the recipes share `train.common` and never import
each other.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from calibtune.config import check_config
from calibtune.errors import ConfigError
from calibtune.models.methods import ALORA, ALORA_HEAD, LORA, PROBE, QueryMethod, method_named
from calibtune.train.lora import run_lora
from calibtune.train.probe import train_probe

__all__ = ["RECIPES", "run_train_stage"]

RECIPES: dict[QueryMethod, Callable[[DictConfig], Path]] = {
    LORA: run_lora,
    ALORA: run_lora,
    ALORA_HEAD: run_lora,
    PROBE: train_probe,
}


def run_train_stage(cfg: DictConfig) -> Path:
    """Train on cfg.train.data_dir and return cfg.train.output_dir (adapter/, manifest, ...)."""
    check_config(cfg)
    method = method_named(cfg.method.name)
    if method not in RECIPES:
        raise ConfigError(f"method={method.name} has no training recipe")
    return RECIPES[method](cfg)
