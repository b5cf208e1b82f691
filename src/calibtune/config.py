"""Where the Hydra configs live, composing them in-process, and saving a resolved config."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from calibtune.errors import ConfigError
from calibtune.io import write_text_atomic

STAGES = ("data", "train", "eval", "run", "monitor", "adapt")
# A key is secret when one of its `_`-separated words is one of these (hf_token, api_key, but not
# max_new_tokens or token_temperature, which saved configs must keep to reproduce a run).
SECRET_KEY = re.compile(r"(?:^|_)(?:api_?key|token|secret|password)$", re.IGNORECASE)


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
        cfg = hydra_compose(config_name=stage, overrides=list(overrides))
    check_config(cfg)
    return cfg


UNRESOLVED = object()  # a value that cannot be known yet (`???`, `${hydra:...}` outside an app)


def _plain(node: DictConfig | ListConfig) -> object:
    """Plain, resolved data of a config node; values that cannot resolve yet are UNRESOLVED."""
    keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
    items = []
    for key in keys:
        try:
            value = node[key]
        except (InterpolationResolutionError, MissingMandatoryValue, ValueError):
            value = UNRESOLVED
        if isinstance(value, DictConfig | ListConfig):
            value = _plain(value)
        items.append((key, value))
    if isinstance(node, ListConfig):
        return [value for _, value in items]
    return {str(key): value for key, value in items}


def _without_unresolved(data: object, path: tuple = ()) -> tuple[object, set[tuple]]:
    """`data` without its UNRESOLVED values, and the paths where they were."""
    if isinstance(data, dict):
        kept, skipped = {}, set()
        for key, value in data.items():
            if value is UNRESOLVED:
                skipped.add((*path, key))
                continue
            kept[key], inner = _without_unresolved(value, (*path, key))
            skipped |= inner
        return kept, skipped
    return data, set()


def _data_path(data: object, loc: tuple) -> tuple[str, ...]:
    """The part of a pydantic error location that names keys of `data` (then the missing or
    unknown key itself), without pydantic's union-member tags."""
    path: list[str] = []
    for part in loc:
        if (
            isinstance(data, dict)
            and part in data
            or isinstance(data, list)
            and isinstance(part, int)
            and part < len(data)
        ):
            data = data[part]
        elif not isinstance(data, dict):
            break
        path.append(str(part))
        if not isinstance(data, dict | list):
            break
    return tuple(path)


def config_errors(cfg: DictConfig) -> list[str]:
    """Every way `cfg` breaks `calibtune.schema.Config`, one line each naming the key."""
    from pydantic import ValidationError

    from calibtune.schema import Config

    data, unresolved = _without_unresolved(_plain(cfg))
    data.pop("hydra", None)  # Hydra's own node (inside a Hydra app): Hydra checks it
    try:
        Config.model_validate(data)
    except ValidationError as err:
        lines: dict[str, list[str]] = {}
        for error in err.errors():
            loc = _data_path(data, error["loc"])
            if error["type"] == "missing" and loc in unresolved:
                continue
            key = ".".join(loc)
            if error["type"] == "extra_forbidden":
                line = f"{key}: unknown key (add it, with its type, to calibtune/schema.py)"
            elif error["type"] == "missing":
                line = f"{key}: missing (calibtune/schema.py requires it)"
            else:
                line = f"{key}={error.get('input')!r}: {error['msg']}"
            lines.setdefault(key, []).append(line)
        return [" or ".join(dict.fromkeys(found)) for found in lines.values()]
        return lines
    return []


def search_space_errors(cfg: DictConfig) -> list[str]:
    """Keys of an Optuna search space (hydra.sweeper.params) that cfg.method ignores: keys
    another method reads (its `config_prefixes`) and this one does not."""
    from calibtune.models.methods import METHODS, method_named

    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
    method = method_named(cfg.method.name)
    others = {p for m in METHODS.values() for p in m.config_prefixes}
    return [
        f"hydra.sweeper.params searches {key}, which method={method.name} does not use: choose "
        f"search_space={method.name}"
        for key in map(str, params)
        if any(key.startswith(p) for p in others)
        and not any(key.startswith(p) for p in method.config_prefixes)
    ]


def method_search_space(cfg: DictConfig) -> None:
    """`search_space=auto` (the `+sweep=optuna` default): hydra.sweeper.params becomes the
    configured method's own search space, conf/search_space/<method>.yaml, with the keys given
    on the command line on top (as for a named search space)."""
    if OmegaConf.select(cfg, "hydra.runtime.choices.search_space", default=None) != "auto":
        return
    path = conf_dir() / "search_space" / f"{cfg.method.name}.yaml"
    if not path.is_file():  # not a method: the check says so
        return
    own = OmegaConf.load(path)
    given = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
    with read_write(cfg.hydra), open_dict(cfg.hydra.sweeper):
        cfg.hydra.sweeper.params = OmegaConf.merge(own, given)


def method_errors(cfg: DictConfig) -> list[str]:
    """Settings the configured method would ignore, changed from their defaults (`optim.*`
    of the probe: calibtune.models.methods), so no key is silently without effect."""
    from calibtune.models.methods import method_named

    optim_defaults = OmegaConf.load(conf_dir() / "common.yaml").optim
    return method_named(cfg.method.name).config_errors(cfg, optim_defaults)


def check_config(cfg: DictConfig) -> None:
    """Fail, naming each bad key and what it allows, when `cfg` does not fit the schema."""
    errors = config_errors(cfg)
    if not errors:  # the method's own checks read a config of the schema's shape
        errors = search_space_errors(cfg) + method_errors(cfg)
    if errors:
        raise ConfigError("invalid config: " + "; ".join(errors))


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


# The config sections a stage's output depends on: its own and those of the stages before it.
DATA_INPUTS = ("model", "prompt", "dataset", "data", "seed")
NOT_TRAIN_INPUTS = (
    "logger",
    "eval",
    "serve",
    "monitor",
    "adapt",
    "lodo",
    "sweep",
    "run_dir",
    "stage",
)


def stage_inputs(config: dict, stage: str) -> dict:
    """The part of a resolved config that decides the output of `stage` ("data" or "train")."""
    if stage == "data":
        return {key: config.get(key) for key in DATA_INPUTS}
    return {key: value for key, value in config.items() if key not in NOT_TRAIN_INPUTS}


def changed_keys(saved: object, current: object, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain configs (`progress` bars ignored)."""
    if prefix.rsplit(".", 1)[-1] == "progress":
        return []
    if not (isinstance(saved, dict) and isinstance(current, dict)):
        return [] if saved == current else [prefix or "<root>"]
    keys = sorted(set(saved) | set(current), key=str)
    joined = [f"{prefix}.{k}" if prefix else str(k) for k in keys]
    return [
        changed
        for key, dotted in zip(keys, joined, strict=True)
        for changed in changed_keys(saved.get(key), current.get(key), dotted)
    ]


def stage_changes(out_dir: str | os.PathLike, cfg: DictConfig, stage: str) -> list[str] | None:
    """Keys that decide `stage`'s output and differ between the config.yaml saved in `out_dir`
    and `cfg`; None when `out_dir` has no config.yaml."""
    path = Path(out_dir, "config.yaml")
    if not path.is_file():
        return None
    saved = stage_inputs(OmegaConf.to_container(OmegaConf.load(path)), stage)
    return changed_keys(saved, stage_inputs(resolved_container(cfg), stage))


class CheckConfig(Callback):
    """Hydra callback (hydra.callbacks in conf/common.yaml): the schema check before Hydra
    creates the run dir, so a bad config exits (status 2, one line) having written nothing."""

    def _check(self, config: DictConfig) -> None:
        try:
            check_config(config)
        except ConfigError as err:
            print(f"calibtune: error: {err}", file=sys.stderr)
            sys.exit(2)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        """Before a single run."""
        self._check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        """Before a sweep (each trial is checked again by its stage): the method's own search
        space when none was chosen (`method_search_space`), then the check."""
        method_search_space(config)
        self._check(config)
