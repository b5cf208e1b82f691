"""Shared pytest fixtures: a tiny random model directory, Hydra compose into tmp_path."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from fixtures import build_tiny_model_dir, tiny_overrides_for  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from calibtune.config import compose  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a locally trained tokenizer and a chat template."""
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def tiny_overrides(tiny_model_dir: Path, tmp_path: Path) -> list[str]:
    """Overrides that point a stage at the tiny model, CPU fp32, no logger, output in tmp_path."""
    return tiny_overrides_for(tiny_model_dir, tmp_path / "run")


@pytest.fixture
def compose_cfg(tiny_overrides: list[str]) -> Callable[..., DictConfig]:
    """compose_cfg(stage, overrides) -> the stage's config on the tiny model, writing to tmp_path."""

    def _compose(stage: str, overrides: Sequence[str] = ()) -> DictConfig:
        return compose(stage, [*tiny_overrides, *overrides])

    return _compose
