"""method=alora_head on the tiny model: the head starts as the fitted probe (step 0 is the probe,
validated and kept when nothing later beats it), trains jointly with the activated LoRA, saves
adapter and head in one dir that every later stage recognises and scores as training did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fixtures.labeled import record_labeled_set_signals, write_synthetic_labeled_set
from safetensors.torch import load_file

from calibtune.errors import ConfigError
from calibtune.examples import read_labeled_split
from calibtune.models import load_model, load_tokenizer
from calibtune.models.confidence import attach_adapter, query_tokens_of, query_two_way_logits
from calibtune.models.methods import ALORA_HEAD, method_of_adapter
from calibtune.models.probe import load_probe
from calibtune.tracking import read_metrics
from calibtune.train.data import tokenize_examples
from calibtune.train.recipe import run_train_stage
from calibtune.train.steps import validation_metrics

FAST = [
    "train.batch_size=4",
    "train.micro_batch_size=2",
    "train.eval_batch_size=16",
    "train.log_every=1",
    "train.eval_every=2",
    "train.progress=false",
    "lora.lora_dropout=0.0",
]


@pytest.fixture
def labeled(compose_cfg, tmp_path: Path) -> Path:
    """A labeled set with both grades and the base signals the data stage would record."""
    cfg = compose_cfg("train")
    sizes = {"train": 24, "val": 12, "test": 4}
    out = write_synthetic_labeled_set(
        tmp_path / "labeled", load_tokenizer(cfg.model), cfg.prompt, sizes
    )
    return record_labeled_set_signals(out, cfg)


def val_scores(cfg, adapter_dir: Path) -> dict[str, float]:
    """Val metrics of a saved adapter dir, scored the way every later stage scores it."""
    tokenizer = load_tokenizer(cfg.model)
    rows = read_labeled_split(cfg.train.data_dir, "val")
    qm = attach_adapter(load_model(cfg.model), adapter_dir)
    examples = tokenize_examples(tokenizer, rows, with_answers=False)
    tokens = query_tokens_of(tokenizer, cfg.prompt)
    two_way = query_two_way_logits(qm, examples, tokens, tokenizer.pad_token_id, 16)
    return validation_metrics(two_way, torch.tensor([float(r["correct"]) for r in rows]))


def set_val_to_train(labeled: Path) -> None:
    """val.jsonl := train's rows, so that training on train moves val's loss the same way."""
    rows = [json.loads(line) for line in (labeled / "train.jsonl").read_text().splitlines()]
    text = "".join(json.dumps({**row, "split": "val"}) + "\n" for row in rows)
    (labeled / "val.jsonl").write_text(text)


@pytest.mark.parametrize(
    ("lr", "kept"),
    [
        # full-batch steps on val's own rows at a small rate go downhill: a later step is kept
        (1e-6, "trained"),
        # a rate that wrecks the fit (the head reads a hidden state whose rows differ little,
        # so its weights are large and the LoRA's changes are amplified): step 0 is kept
        (0.5, "probe"),
    ],
)
def test_step_zero_is_the_probe_and_the_kept_adapter_scores_as_in_training(
    compose_cfg, labeled, lr, kept
):
    set_val_to_train(labeled)
    # the hidden-state probe as fitted: alora_head's head reads the hidden state alone and
    # starts untempered
    probe_run = [
        "method=probe",
        "probe.answer_signals=false",
        "probe.temperature_folds=none",
        f"run_dir={labeled.parent / 'probe'}",
    ]
    probe_cfg = compose_cfg("train", [f"train.data_dir={labeled}", *probe_run])
    probe = json.loads((run_train_stage(probe_cfg) / "manifest.json").read_text())
    overrides = [*FAST, f"train.data_dir={labeled}", "method=alora_head", f"optim.lr={lr}"]
    overrides += ["train.batch_size=24", "train.micro_batch_size=8", "train.eval_every=1"]
    cfg = compose_cfg("train", [*overrides, "train.epochs=4", f"run_dir={labeled.parent / 'h'}"])
    out = run_train_stage(cfg)
    manifest = json.loads((out / "manifest.json").read_text())
    val = {r["step"]: r["val/val_loss"] for r in read_metrics(out) if "val/val_loss" in r}
    assert sorted(val) == [0, 1, 2, 3, 4]  # step 0 validated (eval_at_start=false)
    # step 0 is the probe: the same fit on the same recorded features
    assert manifest["head_start"]["inverse_l2_strength"] == probe["fit"]["inverse_l2_strength"]
    assert manifest["head_start"]["strength_folds"] == probe["fit"]["strength_folds"]
    assert val[0] == pytest.approx(probe["best"]["val_metrics"]["val_loss"], abs=1e-5)
    best = manifest["best"]
    assert best["value"] == min(val.values()) <= val[0]  # never worse than the probe on val
    assert (best["step"] > 0) == (kept == "trained")
    adapter = out / "adapter"
    assert method_of_adapter(adapter) is ALORA_HEAD
    lora_b = {
        k: t for k, t in load_file(adapter / "adapter_model.safetensors").items() if "lora_B" in k
    }
    # the head reads the state after decoder layer 0 (model.feature_layer=1): the LoRA acts on
    # layer 0 alone (one on layer 1 would act after the head's input and get no gradient)
    below = [t for k, t in lora_b.items() if ".layers.0." in k]
    assert cfg.model.feature_layer == 1 and below and len(below) == len(lora_b)
    assert json.loads((adapter / "adapter_config.json").read_text())["layers_to_transform"] == [0]
    assert all(bool(t.abs().sum() > 0) == (kept == "trained") for t in below)
    head = load_probe(adapter)
    probe_head = load_probe(Path(probe_cfg.train.output_dir) / "adapter")
    same_head = torch.equal(head.net[-1].weight, probe_head.net[-1].weight)
    assert same_head or kept == "trained"  # (1e-6 steps can round away on the head's large weights)
    # the kept adapter + head, loaded as every later stage loads them, score val as training did
    got = val_scores(cfg, adapter)
    assert got["val_loss"] == pytest.approx(best["val_metrics"]["val_loss"], abs=1e-5)


def test_without_recorded_signals_it_is_refused_before_the_model_loads(
    compose_cfg, tmp_path, monkeypatch
):
    cfg = compose_cfg("train")
    sizes = {"train": 8, "val": 4, "test": 2}
    bare = write_synthetic_labeled_set(
        tmp_path / "bare", load_tokenizer(cfg.model), cfg.prompt, sizes
    )
    cfg = compose_cfg("train", [*FAST, f"train.data_dir={bare}", "method=alora_head"])
    import calibtune.train.lora as recipe

    monkeypatch.setattr(recipe, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(ConfigError, match="data.base_signals=true"):
        run_train_stage(cfg)
    assert not (Path(cfg.train.output_dir) / "adapter").exists()


def test_the_lora_acts_only_below_the_layer_the_head_reads(tiny_model_dir):
    """method=alora_head: a LoRA layer above `model.feature_layer` would get no gradient (DDP
    refuses such parameters), so the LoRA is kept below it, and an explicit layer above it or a
    head on the embeddings is refused, naming the settings."""
    from omegaconf import OmegaConf

    from calibtune.errors import ConfigError
    from calibtune.models import load_model
    from calibtune.train.methods import layers_under_head

    cfg = OmegaConf.create({"name_or_path": str(tiny_model_dir), "device": "cpu"})
    cfg.update({"dtype": "float32", "attn_implementation": "eager", "trust_remote_code": False})
    cfg.revision = None
    model = load_model(cfg)  # 2 decoder layers: hidden states 0 (embeddings), 1, 2
    lora = OmegaConf.create({"layers_to_transform": None})
    assert layers_under_head(model, 1, lora) == [0]
    assert layers_under_head(model, -2, lora) == [0]
    assert layers_under_head(model, -1, lora) is None and layers_under_head(model, 2, lora) is None
    assert layers_under_head(model, 1, OmegaConf.create({"layers_to_transform": [0]})) == [0]
    with pytest.raises(ConfigError, match=r"lora.layers_to_transform \[1\].*feature_layer=1"):
        layers_under_head(model, 1, OmegaConf.create({"layers_to_transform": [0, 1]}))
    with pytest.raises(ConfigError, match="reads the embeddings"):
        layers_under_head(model, 0, lora)
