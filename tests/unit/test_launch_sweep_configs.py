"""conf/sweep/: the Optuna and grid sweeps compose with the train config; the submitit launcher
config parses (and composes where hydra-submitit-launcher is installed)."""

from __future__ import annotations

import importlib.util

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from calibtune.config import conf_dir

TRIAL_RUN_DIR = "${hydra:sweep.dir}/${hydra:sweep.subdir}"


def compose_with_hydra(*overrides: str):
    """The train config with its `hydra` node (what a `calibtune train` app would see)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("train", list(overrides), return_hydra_config=True)


def test_optuna_sweep_composes_with_objective_and_search_space():
    cfg = compose_with_hydra("+sweep=optuna", "method=alora")  # the default space is alora's
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("optuna_sweeper.OptunaSweeper")
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert OmegaConf.to_container(cfg, resolve=False)["run_dir"] == TRIAL_RUN_DIR
    assert cfg.sweep.metric == "val/ece" and cfg.sweep.direction == "minimize"
    assert cfg.sweep.max_accuracy_drop == 0.02
    assert sweeper.direction == "minimize"
    # every searched key exists in the train config (struct mode would reject a typo at run time)
    for key in sweeper.params:
        assert OmegaConf.select(cfg, key, throw_on_missing=False) is not None, key


def test_grid_sweep_gives_each_trial_its_own_run_dir():
    cfg = compose_with_hydra("+sweep=grid")
    assert cfg.hydra.sweeper._target_.endswith("BasicSweeper")
    raw = OmegaConf.to_container(cfg, resolve=False)
    assert raw["run_dir"] == TRIAL_RUN_DIR
    assert raw["train"]["output_dir"] == "${run_dir}/train"
    assert cfg.sweep.metric == "val/ece"


def test_submitit_config_parses():
    path = conf_dir() / "sweep" / "submitit.yaml"
    raw = OmegaConf.load(path)
    assert "override /hydra/launcher: submitit_slurm" in [
        f"{k}: {v}" for item in raw.defaults for k, v in item.items()
    ]
    assert raw.hydra.launcher.additional_parameters.requeue is True
    assert OmegaConf.to_container(raw, resolve=False)["run_dir"] == TRIAL_RUN_DIR


@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
    reason="hydra-submitit-launcher (the `slurm` extra) is not installed",
)
def test_submitit_config_composes_when_installed():
    cfg = compose_with_hydra("+sweep=submitit")
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
