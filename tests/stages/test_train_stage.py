"""The train stage end to end on the tiny model: outputs, weights, reload, resume, bad config."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest.mock import ANY

import numpy as np
import pytest
import torch
from fixtures import LORA_METHOD
from fixtures.labeled import greedy_answers, write_synthetic_labeled_set
from omegaconf import OmegaConf
from peft import PeftModel
from safetensors.torch import load_file

from calibtune.errors import CalibtuneError, ConfigError, InputError
from calibtune.examples import read_labeled_split, row_group, split_path
from calibtune.io import sha256_file
from calibtune.models import load_model, load_tokenizer
from calibtune.models.confidence import query_suffix
from calibtune.models.encoding import (
    answer_token_logits,
    collate_answers,
    collate_followup,
    encode_answer,
    encode_text,
    followup_prefix_pass,
    followup_suffix_logits,
    last_token_logits,
    pad_sequences,
)
from calibtune.models.probe import is_baseline_probe_fit
from calibtune.tracking import read_metrics
from calibtune.train import checkpoint as ckpt
from calibtune.train.lora import train_lora
from calibtune.train.recipe import run_train_stage

FAST = [
    LORA_METHOD,
    "train.batch_size=4",
    "train.micro_batch_size=2",
    "train.eval_batch_size=16",
    "train.log_every=1",
    "train.progress=false",
    "lora.lora_dropout=0.0",
    "optim.lr=5e-3",
]


# the probe's (the default method's) settings: no lora.* node, and the logistic fit refuses optim.*
PROBE_FAST = [o for o in FAST if not o.startswith(("method=", "lora.", "optim."))]


def make_labeled_set(cfg, out_dir: Path, sizes=None, with_model: bool = True) -> Path:
    """A small labeled set written by the tiny model itself (its greedy answers, graded)."""
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(cfg.model) if with_model else None
    sizes = sizes or {"train": 16, "val": 8, "test": 4}
    return write_synthetic_labeled_set(out_dir, tokenizer, cfg.prompt, sizes, model=model)


@pytest.fixture
def labeled_dir(compose_cfg, tmp_path: Path) -> Path:
    return make_labeled_set(compose_cfg("train"), tmp_path / "labeled", with_model=False)


def stage_cfg(compose_cfg, labeled_dir: Path, *overrides: str):
    return compose_cfg("train", [*FAST, f"train.data_dir={labeled_dir}", *overrides])


def test_outputs_weights_and_reload(compose_cfg, labeled_dir: Path):
    cfg = stage_cfg(
        compose_cfg,
        labeled_dir,
        "method=lora",
        "train.eval_at_start=false",
        "train.eval_every=100",
    )
    result = train_lora(cfg)
    out = result.output_dir
    assert out == Path(cfg.train.output_dir).resolve()
    for name in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "config.yaml"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"]["sha256"] == sha256_file(labeled_dir / "manifest.json")
    assert manifest["seed"] == 0 and manifest["best"]["step"] == 4 == manifest["steps"]
    assert set(manifest["best"]["val_metrics"]) >= {"ece", "brier", "auroc"}
    records = read_metrics(out)
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2, 3, 4]
    assert OmegaConf.load(out / "config.yaml").train.batch_size == 4

    # LoRA weights moved away from their init (B starts at zero); base weights did not.
    adapter = load_file(out / "adapter/adapter_model.safetensors")
    lora_b = [t for name, t in adapter.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)
    base = load_model(cfg.model)
    tuned_base = {
        name.replace("base_model.model.", "").replace("base_layer.", ""): p
        for name, p in result.model.named_parameters()
        if "lora_" not in name
    }
    for name, param in base.named_parameters():
        assert torch.equal(param, tuned_base[name]), name

    # the saved adapter reloads to identical logits (the best step is the final step here)
    reloaded = PeftModel.from_pretrained(base, out / "adapter").eval()
    result.model.eval()
    tokenizer = result.tokenizer
    batch = collate_answers([encode_answer(tokenizer, "What is 2 plus 2?", " 4")], 0)
    with torch.no_grad():
        expected = answer_token_logits(result.model, batch)[0]
        got = answer_token_logits(reloaded, batch)[0]
    assert torch.equal(expected, got)


def test_resume_after_crash_matches_uninterrupted(
    compose_cfg, labeled_dir: Path, tmp_path, monkeypatch
):
    common = [
        "train.epochs=2",
        "train.checkpoint_every=3",
        "train.eval_every=2",
        "lora.lora_dropout=0.1",
    ]
    full = run_train_stage(stage_cfg(compose_cfg, labeled_dir, *common, f"run_dir={tmp_path}/full"))

    crash_dir = tmp_path / "crash"
    real_save = ckpt.save_checkpoint

    def save_then_crash(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt("simulated kill after a checkpoint")

    monkeypatch.setattr(ckpt, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        run_train_stage(stage_cfg(compose_cfg, labeled_dir, *common, f"run_dir={crash_dir}"))
    assert [p.name for p in ckpt.list_checkpoints(crash_dir / "train")] == ["step_3"]
    assert not (crash_dir / "train/manifest.json").exists()
    monkeypatch.setattr(ckpt, "save_checkpoint", real_save)
    resumed = run_train_stage(stage_cfg(compose_cfg, labeled_dir, *common, f"run_dir={crash_dir}"))

    want = load_file(full / "adapter/adapter_model.safetensors")
    got = load_file(resumed / "adapter/adapter_model.safetensors")
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    final = {
        k: json.loads((d / "manifest.json").read_text())["best"]
        for k, d in (("a", full), ("b", resumed))
    }
    assert final["a"] == final["b"]
    want_ckpt = load_file(ckpt.list_checkpoints(full)[-1] / "trainable.safetensors")
    got_ckpt = load_file(ckpt.list_checkpoints(resumed)[-1] / "trainable.safetensors")
    assert all(torch.equal(want_ckpt[k], got_ckpt[k]) for k in want_ckpt)
    assert len(ckpt.list_checkpoints(full)) == 2  # keep_last
    assert read_metrics(full) == [
        {k: v for k, v in r.items() if k != "train/tokens_per_s"} | {"train/tokens_per_s": ANY}
        if "train/tokens_per_s" in r
        else r
        for r in read_metrics(resumed)
    ]


def write_rows(labeled_dir: Path, split: str, edit) -> None:
    path = split_path(labeled_dir, split)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(r) + "\n" for r in edit(rows)))


@pytest.mark.parametrize(
    ("overrides", "edit", "error", "says"),
    [
        (["lora.target_modules=[q_proj,c_attn]"], None, ConfigError, "c_attn"),
        (["lora.layers_to_transform=[7]"], None, ConfigError, "out of range"),
        (["train.batch_size=64"], None, ConfigError, "at most 16"),
        (["train.gradient_checkpointing=true"], None, ConfigError, "prefix KV cache"),
        (["prompt.query_yes=zyzzyva"], None, ConfigError, "prompt.query_yes"),
        (
            [],
            lambda rows: [{**rows[0], "correct": 1.5}, *rows[1:]],
            InputError,
            "train.jsonl:1: field 'correct'",
        ),
        ([], lambda rows: [], InputError, "empty"),
    ],
)
def test_bad_config_fails_before_training(compose_cfg, labeled_dir, overrides, edit, error, says):
    if edit is not None:
        write_rows(labeled_dir, "train", edit)
    cfg = stage_cfg(compose_cfg, labeled_dir, *overrides)
    with pytest.raises(error, match=None) as caught:
        run_train_stage(cfg)
    assert says in str(caught.value)
    assert isinstance(caught.value, CalibtuneError)
    assert not Path(cfg.train.output_dir).exists()


def test_unknown_key_is_rejected(compose_cfg):
    with pytest.raises(Exception, match="train.learning_rate"):
        compose_cfg("train", ["train.learning_rate=1e-3"])


@pytest.fixture
def sharp_model_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """The tiny model with weights scaled up, so its greedy answers are not near-ties."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "sharp-model"
    shutil.copytree(tiny_model_dir, out)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.mul_(4.0)
    model.save_pretrained(out)
    return out


def test_kl_term_keeps_the_base_models_answers(compose_cfg, sharp_model_dir: Path, tmp_path):
    model_override = f"model.name_or_path={sharp_model_dir}"
    base_cfg = compose_cfg("train", [model_override])
    labeled = make_labeled_set(base_cfg, tmp_path / "labeled", {"train": 16, "val": 4, "test": 4})
    rows = read_labeled_split(labeled, "train")
    agreement = {}
    for beta in (0.0, 5.0):
        cfg = stage_cfg(
            compose_cfg,
            labeled,
            model_override,
            "method=lora",
            f"train.beta={beta}",
            f"run_dir={tmp_path}/beta{beta}",
            "optim.lr=1e-2",
            "optim.warmup=0",
            "optim.scheduler=constant",
            "train.epochs=3",
            "train.micro_batch_size=4",
            "train.eval_at_start=false",
            "train.eval_every=100",
        )
        model = train_lora(cfg).model.eval()
        answers = greedy_answers(model, load_tokenizer(cfg.model), [r["prompt"] for r in rows])
        agreement[beta] = sum(a == r["response"] for a, r in zip(answers, rows, strict=True))
    assert agreement[5.0] >= 12, agreement
    assert agreement[5.0] >= agreement[0.0] + 8, agreement


def test_alora_changes_the_query_and_never_the_answers(compose_cfg, sharp_model_dir, tmp_path):
    model_override = f"model.name_or_path={sharp_model_dir}"
    base_cfg = compose_cfg("train", [model_override])
    labeled = make_labeled_set(base_cfg, tmp_path / "labeled", {"train": 16, "val": 4, "test": 4})
    rows = read_labeled_split(labeled, "train")
    cfg = stage_cfg(
        compose_cfg,
        labeled,
        model_override,
        "method=alora",
        "optim.lr=1e-2",
        "optim.warmup=0",
        "optim.scheduler=constant",
        "train.epochs=3",
        "train.eval_at_start=false",
        "train.eval_every=100",
    )
    result = train_lora(cfg)
    tokenizer = result.tokenizer
    model = result.model.eval()
    assert sum(r["train/kl"] for r in read_metrics(result.output_dir) if "train/kl" in r) == 0
    adapter = load_file(result.output_dir / "adapter/adapter_model.safetensors")
    assert all(t.abs().sum() > 0 for name, t in adapter.items() if "lora_B" in name)
    invocation = json.loads((result.output_dir / "adapter/adapter_config.json").read_text())
    suffix = query_suffix(rows[0]["prompt"], rows[0]["response"], rows[0]["query"])
    assert invocation["alora_invocation_tokens"] == encode_text(tokenizer, suffix)

    # The recipe trains a plain LoRA on the suffix over the base model's prefix cache; plain PEFT
    # on the full query text with the saved activated LoRA (how a user serves it) gives the
    # same confidence, different from the base model's, and the base model's answers.
    reloaded = PeftModel.from_pretrained(load_model(cfg.model), result.output_dir / "adapter")
    reloaded.eval()
    answers = greedy_answers(reloaded, tokenizer, [r["prompt"] for r in rows])
    assert answers == [r["response"] for r in rows]  # the adapter never acts on the answer
    queries = [encode_text(tokenizer, r["query"]) for r in rows[:4]]
    batch = pad_sequences(queries, tokenizer.pad_token_id, side="left")
    followup = collate_followup(
        [encode_answer(tokenizer, r["prompt"], r["response"]) for r in rows[:4]],
        encode_text(tokenizer, suffix),
        tokenizer.pad_token_id,
    )
    with torch.no_grad():
        served = last_token_logits(reloaded, batch)
        with reloaded.disable_adapter():
            base = last_token_logits(reloaded, batch)
        with model.disable_adapter():
            _, cache = followup_prefix_pass(model, followup)
        trained = followup_suffix_logits(model, followup, cache)
        with reloaded.disable_adapter():
            _, cache = followup_prefix_pass(reloaded, followup)
        reloaded_cached = followup_suffix_logits(reloaded, followup, cache)
    assert torch.equal(reloaded_cached, trained)  # the saved adapter reloads to identical logits
    torch.testing.assert_close(served, trained, atol=1e-4, rtol=1e-4)
    assert (served - base).abs().max() > 1e-2


def test_alora_needs_followup_queries(compose_cfg, tmp_path):
    restate = compose_cfg("train", ["prompt.query_style=restate"])
    labeled = make_labeled_set(restate, tmp_path / "labeled", with_model=False)
    cfg = stage_cfg(compose_cfg, labeled, "method=alora")
    with pytest.raises(ConfigError, match="query_style=followup"):
        run_train_stage(cfg)
    assert not Path(cfg.train.output_dir).exists()


def test_probe_method_adamw_saves_a_head_that_scores_val(compose_cfg, labeled_dir: Path):
    from calibtune.models.probe import load_probe

    fast = PROBE_FAST
    overrides = [*fast, f"train.data_dir={labeled_dir}", "method=probe", "train.epochs=3"]
    overrides += ["probe.fit=adamw", "optim.lr=5e-3"]  # AdamW's settings act
    cfg = compose_cfg("train", overrides)
    out = run_train_stage(cfg)
    assert (out / "adapter/probe.safetensors").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "probe" and manifest["best"]["step"] is not None
    head = load_probe(out / "adapter")
    assert head(torch.zeros(2, head.in_features)).shape == (2,)
    losses = [r["train/loss"] for r in read_metrics(out) if "train/loss" in r]
    assert len(losses) == 12


def test_probe_method_logistic_fits_in_one_pass_and_scores_val(compose_cfg, labeled_dir: Path):
    from calibtune.io import read_jsonl
    from calibtune.models.probe import OUT_OF_FOLD, PROBE_STRENGTHS, load_probe

    fast = PROBE_FAST
    cfg = compose_cfg("train", [*fast, f"train.data_dir={labeled_dir}", "method=probe"])
    assert cfg.probe.fit == "logistic"  # the default
    out = run_train_stage(cfg)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["fit"]["kind"] == "logistic" and manifest["steps"] == 0
    assert manifest["fit"]["inverse_l2_strength"] in PROBE_STRENGTHS
    assert manifest["fit"]["train_rows"] == 16
    assert manifest["fit"]["strength_folds"] == manifest["fit"]["temperature_folds"]  # auto
    assert set(manifest["best"]["val_metrics"]) >= {"ece", "brier", "auroc", "val_loss"}
    head = load_probe(out / "adapter")
    assert head.hidden == 0 and head.net[-1].weight.abs().sum() > 0
    records = read_metrics(out)
    assert not any("train/loss" in r for r in records)
    assert [r["val/val_loss"] for r in records] == [manifest["best"]["val_metrics"]["val_loss"]]
    # train rows scored out of fold, for the eval's per-domain maps (add_train)
    oof = read_jsonl(out / "adapter" / OUT_OF_FOLD)
    train_rows = read_jsonl(labeled_dir / "train.jsonl")
    assert [r["id"] for r in oof] == [r["id"] for r in train_rows]
    assert [r["domain"] for r in oof] == [r.get("domain") for r in train_rows]
    assert all(0 < r["confidence"] < 1 for r in oof) and len({r["group"] for r in oof}) > 1


def test_probe_logistic_on_one_grade_fails_naming_the_file_before_the_model_loads(
    compose_cfg, labeled_dir: Path, monkeypatch
):
    from calibtune.train import features

    train_file = labeled_dir / "train.jsonl"
    rows = [json.loads(line) for line in train_file.read_text().splitlines()]
    train_file.write_text("".join(json.dumps({**r, "correct": 0}) + "\n" for r in rows))
    monkeypatch.setattr(features, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    fast = PROBE_FAST
    cfg = compose_cfg("train", [*fast, f"train.data_dir={labeled_dir}", "method=probe"])
    with pytest.raises(InputError, match=r"train.jsonl: field 'correct': 1 grade\(s\)"):
        run_train_stage(cfg)
    assert not Path(cfg.train.output_dir, "adapter").exists()


def test_probe_logistic_with_a_hidden_layer_is_refused_before_work(compose_cfg, labeled_dir):
    fast = PROBE_FAST
    overrides = [*fast, f"train.data_dir={labeled_dir}", "method=probe", "probe.hidden=8"]
    with pytest.raises(ConfigError, match="probe.fit=logistic fits a linear head"):
        run_train_stage(compose_cfg("train", overrides))
    overrides = [*overrides[:-1], "probe.fit=adamw", "probe.temperature_folds=entity"]
    with pytest.raises(ConfigError, match="probe.temperature_folds tempers the logistic fit"):
        run_train_stage(compose_cfg("train", overrides))


def test_probe_temperature_without_a_ranking_keeps_the_fitted_level(
    compose_cfg, labeled_dir: Path, monkeypatch
):
    """Out-of-fold confidences that rank no better than chance (small or signal-free data) fit
    no temperature: the run still trains, the head keeps its fitted level (temperature 1)."""
    from calibtune.models.probe import load_probe
    from calibtune.train import probe

    def fit(name: str, *extra: str) -> Path:
        overrides = [f"train.data_dir={labeled_dir}", "method=probe", f"train.output_dir={name}"]
        return run_train_stage(compose_cfg("train", [*PROBE_FAST, *overrides, *extra]))

    plain = fit(str(labeled_dir.parent / "plain"), "probe.temperature_folds=none")
    monkeypatch.setattr(probe, "fold_temperature", lambda oof, y: None)
    out = fit(str(labeled_dir.parent / "flat"), "probe.temperature_folds=entity")
    assert json.loads((out / "manifest.json").read_text())["fit"]["temperature"] == 1.0
    want, got = load_probe(plain / "adapter").net[-1], load_probe(out / "adapter").net[-1]
    torch.testing.assert_close(got.weight, want.weight)


@pytest.mark.parametrize("folds", ["entity", "domain"])
def test_probe_temperature_folds_divide_the_fitted_logit_by_the_out_of_fold_temperature(
    compose_cfg, labeled_dir: Path, monkeypatch, folds: str
):
    """probe.temperature_folds: the saved head is the plain fit with its logit divided by the
    temperature that fits train's out-of-fold confidences (over entity groups, or whole domains
    held out) best; manifest and probe_config.json record it, the out-of-fold file is tempered
    alike, and the head is not the eval's baseline/probe."""
    from calibtune.io import read_jsonl
    from calibtune.models.probe import OUT_OF_FOLD, fold_temperature, load_probe, tempered
    from calibtune.train import probe

    calls, outputs = [], []

    def spy(x, y, g, s, *a):
        calls.append((g, *a))
        outputs.append(real_oof(x, y, g, s, *a))
        return outputs[-1]

    real_oof = probe.out_of_fold_probabilities
    monkeypatch.setattr(probe, "out_of_fold_probabilities", spy)

    def fit(name: str, *extra: str) -> Path:
        overrides = [f"train.data_dir={labeled_dir}", "method=probe", f"train.output_dir={name}"]
        return run_train_stage(compose_cfg("train", [*PROBE_FAST, *overrides, *extra]))

    plain = fit(str(labeled_dir.parent / "plain"), "probe.temperature_folds=none")
    out = fit(str(labeled_dir.parent / folds), f"probe.temperature_folds={folds}")
    train_rows = read_jsonl(labeled_dir / "train.jsonl")
    entity = [row_group(r) for r in train_rows]
    domain = [str(r["domain"]) for r in train_rows]
    fit = json.loads((out / "manifest.json").read_text())["fit"]
    temperature, strength = fit["temperature"], fit["inverse_l2_strength"]
    # entity folds at the chosen strength (the file; with entity also the temperature's), then
    # for domain the temperature's folds at the chosen strength; the untempered run the same
    plain_strength = json.loads((plain / "manifest.json").read_text())["fit"]["inverse_l2_strength"]
    want = [(entity, plain_strength), (entity, strength)]
    assert calls == (want if folds == "entity" else [*want, (domain, strength)])
    config = json.loads((out / "adapter/probe_config.json").read_text())
    assert config["temperature"] == temperature and config["temperature_folds"] == folds
    assert abs(temperature - 1) > 1e-3 and not is_baseline_probe_fit(out / "adapter")
    labels = np.array([float(r["correct"]) >= 0.5 for r in train_rows], dtype=int)
    plain_oof = np.array([r["confidence"] for r in read_jsonl(plain / "adapter" / OUT_OF_FOLD)])
    assert temperature == pytest.approx(fold_temperature(outputs[-1], labels))
    oof = np.array([r["confidence"] for r in read_jsonl(out / "adapter" / OUT_OF_FOLD)])
    np.testing.assert_allclose(oof, tempered(plain_oof, temperature), rtol=1e-6)
    want, got = load_probe(plain / "adapter").net[-1], load_probe(out / "adapter").net[-1]
    torch.testing.assert_close(got.weight, want.weight / temperature)
    torch.testing.assert_close(got.bias, want.bias / temperature)


def run_script(overrides: list[str]) -> subprocess.Popen:
    """train/calibrate.py in a subprocess (the way a cluster job runs it)."""
    script = Path(__file__).resolve().parents[2] / "train" / "calibrate.py"
    return subprocess.Popen(
        [sys.executable, str(script), *overrides],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_after_checkpoint_then_resume_is_bitwise_identical(
    tiny_overrides, labeled_dir: Path, tmp_path
):
    common = [o for o in tiny_overrides if not o.startswith("run_dir=")]
    common += [*FAST, f"train.data_dir={labeled_dir}", "train.epochs=2", "lora.lora_dropout=0.1"]
    common += ["train.checkpoint_every=2", "train.eval_every=4"]
    full = run_script([*common, f"run_dir={tmp_path}/full"])
    assert full.wait(timeout=300) == 0, full.stderr.read()

    for attempt in range(3):  # never a silent skip: a run that finished too early is retried
        killed_dir = tmp_path / f"killed{attempt}" / "train"
        victim = run_script([*common, f"run_dir={killed_dir.parent}"])
        deadline = time.monotonic() + 300
        while not ckpt.list_checkpoints(killed_dir) and victim.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=60)
        if victim.returncode == -signal.SIGKILL and not (killed_dir / "manifest.json").exists():
            break
    else:
        pytest.fail("the training run finished before it could be killed, three times")
    assert ckpt.list_checkpoints(killed_dir)
    resumed = run_script([*common, f"run_dir={killed_dir.parent}", "train.resume=auto"])
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()

    want = load_file(tmp_path / "full/train/adapter/adapter_model.safetensors")
    got = load_file(killed_dir / "adapter/adapter_model.safetensors")
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_probe_strength_folds_domain_chooses_the_strength_on_whole_domains(
    compose_cfg, labeled_dir: Path, monkeypatch
):
    """probe.strength_folds=domain: the strength's folds hold out whole domains (the fit gets the
    rows' domains as its fold groups) and the manifest records the setting."""
    from calibtune.train import probe

    seen = []
    real_fit = probe.fit_probe
    monkeypatch.setattr(probe, "fit_probe", lambda xy, g, *a: seen.append(g) or real_fit(xy, g, *a))
    overrides = [*PROBE_FAST, f"train.data_dir={labeled_dir}", "method=probe"]
    out = run_train_stage(compose_cfg("train", [*overrides, "probe.strength_folds=domain"]))
    train_rows = [json.loads(line) for line in (labeled_dir / "train.jsonl").open()]
    assert seen == [[str(r["domain"]) for r in train_rows]] and len(set(seen[0])) > 1
    fit = json.loads((out / "manifest.json").read_text())["fit"]
    # probe.temperature_folds=auto (the default) tempers on the folds the strength chose on
    assert fit["strength_folds"] == fit["temperature_folds"] == "domain"
    # not the eval's baseline/probe fit (entity folds): the eval fits that one beside it
    assert json.loads((out / "adapter/probe_config.json").read_text())["strength_folds"] == "domain"
    assert not is_baseline_probe_fit(out / "adapter")


@pytest.mark.parametrize("option", ["strength_folds", "temperature_folds"])
def test_probe_domain_folds_on_one_domain_fail_before_the_model_loads(
    compose_cfg, labeled_dir: Path, monkeypatch, option: str
):
    from calibtune.train import features

    train_file = labeled_dir / "train.jsonl"
    rows = [json.loads(line) for line in train_file.read_text().splitlines()]
    train_file.write_text("".join(json.dumps({**r, "domain": "only"}) + "\n" for r in rows))
    monkeypatch.setattr(features, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    overrides = [*PROBE_FAST, f"train.data_dir={labeled_dir}", "method=probe"]
    cfg = compose_cfg("train", [*overrides, f"probe.{option}=domain"])
    with pytest.raises(
        InputError, match=rf"train.jsonl: field 'domain': 2 grade\(s\) over 1 domain.*{option}"
    ):
        run_train_stage(cfg)
    assert not Path(cfg.train.output_dir, "adapter").exists()


def test_the_logistic_probe_takes_no_batches_so_any_batch_size_but_adamw_refuses(
    compose_cfg, labeled_dir: Path
):
    """train.batch_size above the train rows: the logistic fit (no batches) trains; the AdamW
    head, which steps over batches, is refused naming the setting."""
    rows = len((labeled_dir / "train.jsonl").read_text().splitlines())
    overrides = [*PROBE_FAST, f"train.data_dir={labeled_dir}", "method=probe"]
    overrides += [f"train.batch_size={rows + 8}", f"train.micro_batch_size={rows + 8}"]
    out = run_train_stage(compose_cfg("train", overrides))
    assert json.loads((out / "manifest.json").read_text())["fit"]["kind"] == "logistic"
    adamw = compose_cfg("train", [*overrides, "probe.fit=adamw"])
    with pytest.raises(
        ConfigError, match=rf"train.batch_size={rows + 8} is larger than the {rows}"
    ):
        run_train_stage(adamw)


def test_the_probe_reads_model_feature_layer_from_fit_to_scoring(compose_cfg, labeled_dir: Path):
    """model.feature_layer picks the hidden layer: the head is fitted on it, saved with it and
    read back from it; a head of another layer, or signals recorded at another, are refused."""
    from fixtures.labeled import record_labeled_set_signals

    from calibtune.models.confidence import QueryModel, encode_query, query_two_way_logits
    from calibtune.models.probe import PROBE_CONFIG, check_probe_layer, load_probe

    overrides = [f"train.data_dir={labeled_dir}", "method=probe", "model.feature_layer=1"]
    overrides.append("probe.answer_signals=false")  # the hidden state alone (signals: below)
    cfg = compose_cfg("train", [*PROBE_FAST, *overrides])
    out = run_train_stage(cfg)
    head = load_probe(out / "adapter")
    assert head.layer == 1
    assert json.loads((out / "adapter" / PROBE_CONFIG).read_text())["layer"] == 1
    # scoring reads layer 1 (not the last): the head on one unpadded forward's hidden_states[1]
    model, tokenizer = load_model(cfg.model), load_tokenizer(cfg.model)
    rows = read_labeled_split(labeled_dir, "val")
    queries = [encode_query(tokenizer, r) for r in rows]
    scored = query_two_way_logits(
        QueryModel.of(model, head), queries, None, tokenizer.pad_token_id, 3
    )
    with torch.no_grad():
        states = [
            model(input_ids=torch.tensor([q.query_ids]), output_hidden_states=True).hidden_states
            for q in queries
        ]
        expected = head.two_way(torch.stack([s[1][0, -1] for s in states]))
        last = head.two_way(torch.stack([s[-1][0, -1] for s in states]))
    torch.testing.assert_close(scored, expected, atol=1e-4, rtol=1e-4)
    assert (scored - last).abs().max() > 1e-3
    with pytest.raises(InputError, match="probe_config.json: field 'layer'.*feature_layer=1"):
        check_probe_layer(out / "adapter", -1)
    # signals recorded at the last layer are refused for a run reading layer 1, before any fit
    record_labeled_set_signals(labeled_dir, compose_cfg("train", ["model.feature_layer=-1"]))
    cfg.train.output_dir = str(labeled_dir.parent / "train-again")
    with pytest.raises(InputError, match="key.layer"):
        run_train_stage(cfg)


def test_the_probe_reads_the_answer_signals_the_same_recorded_or_computed(
    compose_cfg, labeled_dir: Path
):
    """probe.answer_signals (the default): the head reads the hidden state and the logits of
    pavg, seqlogp and pmin; fitted on the data stage's recorded signals or on its own passes
    (no recorded signals) it is the same head; without them it reads the hidden state only."""
    from fixtures.labeled import record_labeled_set_signals

    from calibtune.models.probe import PROBE_CONFIG, load_probe

    def fit(name: str, *extra: str):
        overrides = [f"train.data_dir={labeled_dir}", "method=probe", f"train.output_dir={name}"]
        cfg = compose_cfg("train", [*PROBE_FAST, *overrides, *extra])
        out = run_train_stage(cfg)
        return cfg, out, load_probe(out / "adapter")

    cfg, out, computed = fit(str(labeled_dir.parent / "computed"))
    width = load_model(cfg.model).config.hidden_size
    assert cfg.probe.answer_signals is True and computed.answer_signals
    assert computed.in_features == width + 3
    assert json.loads((out / "adapter" / PROBE_CONFIG).read_text())["answer_signals"] is True
    assert computed.net[-1].weight[0, -3:].abs().sum() > 0  # the signals carry weight
    _, _, alone = fit(str(labeled_dir.parent / "alone"), "probe.answer_signals=false")
    assert not alone.answer_signals and alone.in_features == width
    record_labeled_set_signals(labeled_dir, cfg)
    _, out, recorded = fit(str(labeled_dir.parent / "recorded"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["work"]["whole_query_rows"] == 0  # read off the recorded signals
    weights = [h.net[-1].weight for h in (computed, recorded)]
    torch.testing.assert_close(weights[0], weights[1], atol=1e-3, rtol=1e-3)
