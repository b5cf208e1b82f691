"""Config composition and the CLI's handling of configs."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf, open_dict

from calibtune.config import STAGES, compose, conf_dir, redact, save_config


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_composes(stage, compose_cfg, tmp_path):
    cfg = compose_cfg(stage)
    assert cfg.stage == stage
    assert cfg.model.name_or_path.endswith("tiny-model0")
    assert cfg.data.output_dir == f"{tmp_path / 'run'}/data"
    assert cfg.model.trust_remote_code is False


def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(ConfigCompositionException, match="no_such_key"):
        compose("train", ["train.no_such_key=3"])


def test_saved_config_redacts_secrets(tmp_path):
    assert redact({"logger": {"api_key": "abc", "project": "p"}}) == {
        "logger": {"api_key": "<redacted>", "project": "p"}
    }
    assert redact({"hf_token": "x", "token": "y", "max_new_tokens": 8}) == {
        "hf_token": "<redacted>",
        "token": "<redacted>",
        "max_new_tokens": 8,
    }
    assert redact({"token_temperature": {"steps": 2}}) == {"token_temperature": {"steps": 2}}
    cfg = compose("data", [f"run_dir={tmp_path}"])
    with open_dict(cfg):
        cfg.logger.api_key = "sekret"
    save_config(cfg, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert "sekret" not in text and "<redacted>" in text
    assert OmegaConf.load(tmp_path / "config.yaml").data.max_new_tokens == cfg.data.max_new_tokens


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "calibtune.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_prints_resolved_config():
    result = run_cli("train", "--cfg", "job", "seed=7")
    assert result.returncode == 0, result.stderr
    assert "seed: 7" in result.stdout
    assert "stage: train" in result.stdout


def test_cli_rejects_unknown_key_and_command():
    result = run_cli("data", "bogus_key=1")
    assert result.returncode != 0
    assert "bogus_key" in result.stderr
    result = run_cli("frobnicate")
    assert result.returncode == 2
    assert "unknown command" in result.stderr


def test_every_command_composes_one_config_shape(tmp_path):
    """conf/<command>.yaml is conf/common.yaml plus its `stage`: the same keys and defaults."""
    shapes = {}
    for stage in STAGES:
        cfg = OmegaConf.to_container(compose(stage, [f"run_dir={tmp_path}"]), resolve=False)
        assert cfg.pop("stage") == stage
        shapes[stage] = cfg
    assert "lodo" in shapes["train"] and "adapt" in shapes["data"]
    for stage, cfg in shapes.items():
        assert cfg == shapes["run"], stage


def test_every_config_group_offers_a_choice():
    """A group with a single option is folded into the file that uses it (prompt:, optim: and
    hydra: live in common.yaml); preset is opt-in: null by default, preset=smoke."""
    groups = {
        path.name: sorted(option.stem for option in path.glob("*.yaml"))
        for path in conf_dir().iterdir()
        if path.is_dir() and path.name != "stages"  # stages/: one file per mounted section
    }
    assert {"model", "dataset", "method", "logger", "experiment"} <= set(groups)
    single = {name for name, options in groups.items() if len(options) < 2}
    assert single <= {"preset"}, single


@pytest.mark.parametrize(
    ("overrides", "lr"),
    [
        (["method=alora_head"], 1e-4),  # its own rate: the head amplifies the adapter's changes
        (["method=alora_head", "optim.lr=3e-5"], 3e-5),  # the command line still wins
        (["method=alora"], 1e-3),  # the shared rate of common.yaml
        (["experiment=mistral-7b-1xa100"], 1e-4),  # an experiment bundle wins over both
    ],
)
def test_a_method_file_sets_its_own_learning_rate(overrides, lr, tmp_path):
    assert compose("train", [f"run_dir={tmp_path}", *overrides]).optim.lr == pytest.approx(lr)
