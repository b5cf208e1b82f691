"""Where the Hydra configs live, composing them in-process, and saving a resolved config."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from calibtune.errors import ConfigError
from calibtune.io import write_text_atomic

STAGES = ("data", "train", "eval", "run", "monitor")
SECRET_KEY = re.compile(r"(api_key|token|secret|password)", re.IGNORECASE)


def conf_dir() -> Path:
    """The `conf/` tree: $CALIBTUNE_CONF, else the one shipped inside the package."""
    env = os.environ.get("CALIBTUNE_CONF")
    path = Path(env) if env else Path(__file__).resolve().parent / "conf"
    if not (path / "common.yaml").is_file():
        raise ConfigError(
            f"calibtune's config tree was not found at {path}; reinstall calibtune "
            "or set CALIBTUNE_CONF to a conf/ directory"
        )
    return path


def compose(stage: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose the config of `stage` with Hydra overrides, outside of a Hydra app (tests, API)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name=stage, overrides=list(overrides))


def redact(container: object) -> object:
    """A copy of a plain config container with secret-looking values replaced."""
    if isinstance(container, dict):
        return {
            k: "<redacted>" if SECRET_KEY.search(str(k)) and v else redact(v)
            for k, v in container.items()
        }
    if isinstance(container, list):
        return [redact(v) for v in container]
    return container


def resolved_container(cfg: DictConfig) -> dict:
    """The config as plain, resolved, secret-free Python data (for manifests and saving)."""
    return redact(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))


def save_config(cfg: DictConfig, path: str | os.PathLike) -> None:
    """Write the resolved config (secrets redacted) as YAML, atomically."""
    write_text_atomic(path, OmegaConf.to_yaml(OmegaConf.create(resolved_container(cfg))))
