"""calibtune/schema.py: a typo in any enumerated key (or an unknown key) fails when the config is
composed, naming the key and the allowed values, before any model loads or file is written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from calibtune.config import check_config, compose, conf_dir
from calibtune.errors import ConfigError, InputError

NO_MODEL = "model.name_or_path=/nonexistent/model"  # loading it would fail differently


@pytest.mark.parametrize(
    ("stage", "override", "says"),
    [
        ("data", "data.grader=exactly", "data.grader='exactly': Input should be 'auto', 'exact'"),
        ("data", "data.backend=vlm", "data.backend='vlm': Input should be 'hf' or 'vllm'"),
        ("train", "train.best_metric=accuracy", "'ece', 'brier', 'auroc' or 'val_loss'"),
        ("train", "train.mixed_precision=fp8", "train.mixed_precision='fp8'"),
        ("eval", "eval.recalibrators=[platt,platypus]", "eval.recalibrators.1='platypus'"),
        ("eval", "eval.recalibrate_methods=[tuned/pavg]", "'base/ptrue', 'tuned/ptrue'"),
        ("run", "prompt.query_style=restated", "Input should be 'followup' or 'restate'"),
        ("run", "model.dtype=fp8", "model.dtype='fp8'"),
        ("eval", "serve.score.batch_size=0", "serve.score.batch_size=0"),
        ("train", "+train.no_such_key=1", "train.no_such_key: unknown key"),
    ],
)
def test_a_typo_fails_at_compose_naming_key_and_allowed_values(stage, override, says):
    with pytest.raises(ConfigError, match="invalid config") as err:
        compose(stage, [override])
    assert says in str(err.value)


def test_sweep_metric_typo_fails_before_the_trial():
    with pytest.raises(
        ConfigError, match=r"sweep.metric='val/accuracy': Input should be 'val/ece'"
    ):
        compose("train", ["+sweep=grid", "sweep.metric=val/accuracy"])


@pytest.mark.parametrize(
    ("stage", "target"),
    [
        ("data", "calibtune.data.stage:run_data_stage"),
        ("train", "calibtune.train.recipe:run_train_stage"),
        ("eval", "calibtune.eval.stage:run_eval_stage"),
        ("run", "calibtune.pipeline:run_pipeline"),
        ("eval", "calibtune.serve.score:run_score"),
        ("eval", "calibtune.serve.export:run_export"),
    ],
)
def test_every_stage_entry_checks_a_config_changed_after_compose(stage, target, tmp_path):
    from calibtune.cli import load_target

    cfg = compose(stage, [NO_MODEL, f"run_dir={tmp_path / 'run'}", "serve.score.input=x.jsonl"])
    cfg.eval.recalibrators = ["platypus"]
    with pytest.raises(ConfigError, match="eval.recalibrators.0='platypus'"):
        load_target(target)(cfg)
    assert not (tmp_path / "run").exists()


def test_cli_typo_exits_2_in_seconds_having_written_nothing(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "calibtune.cli",
            "run",
            "train.best_metric=acc",
            f"run_dir={tmp_path}/r",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "train.best_metric='acc'" in result.stderr and "'val_loss'" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no run dir, no outputs/, no .hydra


def test_malformed_qa_file_is_reported_before_the_model_loads(tmp_path):
    from calibtune.eval.stage import run_eval_stage

    qa = tmp_path / "qa.jsonl"
    good = {"question": "What is 2 plus 2?", "answers": ["4"]}
    qa.write_text(json.dumps(good) + "\n" + json.dumps(good | {"question": ""}) + "\n")
    cfg = compose("eval", [NO_MODEL, f"eval.data_dir={qa}", "eval.adapter=null"])
    with pytest.raises(InputError, match=r"qa.jsonl:2.*question"):
        run_eval_stage(cfg)


def test_a_key_the_schema_does_not_know_fails_loudly():
    cfg = compose("eval")
    with open_dict(cfg):
        cfg.eval.abstention = {"below": 0.3}  # e.g. a key another branch adds in YAML
    with pytest.raises(ConfigError, match=r"eval.abstention: unknown key \(add it, with its type"):
        check_config(cfg)


def compose_with_hydra(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return hydra_compose("train", list(overrides), return_hydra_config=True)


@pytest.mark.parametrize(
    ("method", "searched"),
    [
        ("lora", {"optim.lr", "lora.r", "train.beta"}),
        ("alora", {"optim.lr", "lora.r"}),
        ("probe", {"optim.lr", "probe.hidden", "probe.fit"}),
    ],
)
def test_optuna_searches_only_keys_the_method_uses(method, searched):
    cfg = compose_with_hydra("+sweep=optuna", f"method={method}", f"search_space={method}")
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)
    assert set(params) == searched
    for key in params:
        assert OmegaConf.select(cfg, key) is not None, key
    check_config(cfg)
    other = compose_with_hydra("+sweep=optuna", "method=alora", "search_space=lora")
    with pytest.raises(ConfigError, match="searches train.beta, which method=alora does not use"):
        check_config(other)


def test_the_default_preset_fits_the_linear_probe_and_lora_is_one_override_away():
    default = compose("run")
    assert default.method.name == "probe" and default.probe.fit == "logistic"
    assert default.probe.hidden == 0
    check_config(default)
    lora = compose("run", ["method=alora"])
    assert lora.method.name == "alora" and lora.lora.r >= 1
    with pytest.raises(ConfigError, match="probe.fit=logistic fits a linear head"):
        check_config(compose("run", ["probe.hidden=16"]))


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        (["optim.lr=0.01"], "optim.lr=0.01: method=probe with probe.fit=logistic fits its head"),
        (["optim.betas=[0.8,0.99]"], "optim.betas=[0.8, 0.99]: method=probe"),
        (
            ["probe.fit=adamw", "optim.scheduler=linear"],
            "optim.scheduler='linear': method=probe with probe.fit=adamw trains its head at a "
            "constant learning rate",
        ),
        (["probe.fit=adamw", "optim.warmup=0.2"], "leave optim.warmup at its default (0.05)"),
    ],
)
def test_optim_keys_the_method_does_not_use_are_refused_at_compose_time(overrides, refused):
    with pytest.raises(ConfigError, match=re.escape(refused)):
        compose("train", overrides)


def test_optim_keys_the_method_uses_act():
    from calibtune.train.common import adamw

    adamw_probe = ["probe.fit=adamw", "optim.lr=0.01", "optim.betas=[0.8,0.99]", "optim.eps=1e-6"]
    cfg = compose("train", [*adamw_probe, "optim.weight_decay=0.1"])
    optimizer = adamw(cfg, torch.nn.Linear(2, 1))  # the probe's AdamW, as the LoRA's
    assert optimizer.defaults["betas"] == (0.8, 0.99) and optimizer.defaults["eps"] == 1e-6
    assert optimizer.defaults["lr"] == 0.01 and optimizer.defaults["weight_decay"] == 0.1
    for method in ("lora", "alora"):  # a LoRA follows every optim.* key
        compose("train", [f"method={method}", "optim.scheduler=linear", "optim.warmup=0.2"])


@pytest.mark.parametrize("name", sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml")))
def test_experiment_bundles_compose(name):
    cfg = compose("run", [f"experiment={name}"])
    assert cfg.model.name_or_path and cfg.train.batch_size >= 1


def test_defaults_live_in_one_place():
    """No preset repeats a stage default: the stage files hold the values `make run` uses."""
    stage_train = OmegaConf.load(conf_dir() / "stages" / "train.yaml")
    cfg = compose("run")
    assert cfg.train.eval_every == stage_train.eval_every
    assert cfg.train.best_metric == stage_train.best_metric
    assert not (Path(conf_dir()) / "preset" / "default.yaml").exists()
