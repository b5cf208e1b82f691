"""conf/sweep/: the Optuna and grid sweeps compose with the train config; the submitit launcher
config parses (and composes where hydra-submitit-launcher is installed)."""

from __future__ import annotations

import importlib.util

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from calibtune.config import check_config, conf_dir, method_search_space

TRIAL_RUN_DIR = "${hydra:sweep.dir}/${hydra:sweep.subdir}"


def compose_with_hydra(*overrides: str):
    """The train config with its `hydra` node (what a `calibtune train` app would see)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("train", list(overrides), return_hydra_config=True)


SPACES = {  # each method's own search space (conf/search_space/<method>.yaml)
    "probe": {"probe.fit", "optim.lr", "probe.hidden"},
    "lora": {"optim.lr", "lora.r", "train.beta"},
    "alora": {"optim.lr", "lora.r"},
}


@pytest.mark.parametrize("method", [None, *sorted(SPACES)])
def test_optuna_sweep_searches_the_methods_own_space(method):
    """`+sweep=optuna` searches the method's own space (None: the default method, the probe),
    filled in when the sweep starts (`search_space=auto`); keys given on the command line win;
    the config passes the check."""
    overrides = ["+sweep=optuna"] + ([f"method={method}"] if method else [])
    cfg = compose_with_hydra(*overrides)
    assert cfg.hydra.runtime.choices.search_space == "auto"
    method_search_space(cfg)  # what the sweep's callback does before the sweeper starts
    assert set(cfg.hydra.sweeper.params) == SPACES[method or "probe"]
    check_config(cfg)
    given = compose_with_hydra(*overrides, "++hydra.sweeper.params={optim.lr:'choice(0.1, 0.2)'}")
    method_search_space(given)
    assert set(given.hydra.sweeper.params) == SPACES[method or "probe"]
    assert given.hydra.sweeper.params["optim.lr"] == "choice(0.1, 0.2)"


def test_optuna_sweep_composes_with_objective_and_search_space():
    cfg = compose_with_hydra("+sweep=optuna", "method=alora")
    method_search_space(cfg)
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
