"""`calibtune export`: merged weights equal base + adapter, plain transformers loads the dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import TINY_FEATURE_LAYER
from fixtures.adapters import write_adapter
from fixtures.labeled import ANSWERS, QUESTIONS

from calibtune.models.encoding import encode_text, pad_sequences
from calibtune.models.loading import load_tokenizer
from calibtune.serve.export import delta_table, run_export
from calibtune.serve.score import SERVE_CONFIG, Scorer, load_tuned_model

# fp32 on CPU: merging W + B·A·scale reorders float additions, so logits agree to rounding only.
MERGE_ATOL = 1e-5

METRICS = {
    "schema_version": 1,
    "n_test": 120,
    "accuracy": 0.41,
    "methods": {
        "base/ptrue": {"ece": 0.18, "brier": 0.27, "auroc": 0.52},
        "tuned/ptrue": {"ece": 0.03, "brier": 0.21, "auroc": 0.70},
    },
    "deltas": {
        "ece": {"value": -0.15, "ci95": [-0.19, -0.11]},
        "brier": {"value": -0.06, "ci95": [-0.08, -0.04]},
        "auroc": {"value": 0.18, "ci95": [0.1, 0.26]},
    },
}

PLAIN_LOAD = """
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
ids = torch.tensor([json.loads(sys.argv[2])])
with torch.no_grad():
    logits = model(input_ids=ids).logits[0, -1]
assert not any(name.startswith("calibtune") for name in sys.modules), "calibtune was imported"
print(json.dumps({"logits": logits.tolist(), "vocab": len(tokenizer)}))
"""


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    """One export of a perturbed adapter with eval metrics, shared by the tests below."""
    from calibtune.config import compose

    root = tmp_path_factory.mktemp("export")
    write_adapter(tiny_model_dir, root / "train")
    (root / "eval").mkdir()
    (root / "eval" / "metrics.json").write_text(json.dumps(METRICS))
    cfg = compose(
        "eval",
        [
            f"model.name_or_path={tiny_model_dir}",
            TINY_FEATURE_LAYER,
            "model.device=cpu",
            "model.dtype=float32",
            "model.attn_implementation=eager",
            "logger=none",
            f"run_dir={root}",
            "serve.calibrator=null",
        ],
    )
    return cfg, run_export(cfg)


def test_export_dir_holds_safetensors_tokenizer_card_and_serve_config(exported):
    cfg, out = exported
    assert out == Path(cfg.run_dir) / "export"
    assert list(out.glob("*.safetensors")) and not list(out.glob("*.bin"))
    assert not (out / "adapter_config.json").exists()  # merged, not an adapter
    assert (out / "tokenizer.json").is_file()
    serve = json.loads((out / SERVE_CONFIG).read_text())
    assert serve["prompt"]["query_yes"] == "yes" and serve["calibrator"] is None
    card = (out / "README.md").read_text()
    assert "| ece | 0.180 | 0.030 | -0.150 [-0.190, -0.110] |" in card
    assert "n = 120" in card
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".export.")]  # no temp dir


def test_merged_logits_equal_base_plus_adapter(exported):
    cfg, out = exported
    tuned = load_tuned_model(cfg.model, cfg.serve.adapter).module
    merged = Scorer.from_pretrained(out, device="cpu", dtype="float32").model
    tokenizer = load_tokenizer(cfg.model)
    prompts = Scorer(tuned, tokenizer, cfg.prompt).query_prompts(QUESTIONS, ANSWERS)
    batch = pad_sequences([encode_text(tokenizer, p) for p in prompts], tokenizer.pad_token_id)
    with torch.no_grad():
        want = tuned(**batch).logits
        got = merged(**batch).logits
        base = tuned.get_base_model()
        with tuned.disable_adapter():
            base_logits = base(**batch).logits
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(got[mask], want[mask], rtol=0, atol=MERGE_ATOL)
    assert (want[mask] - base_logits[mask]).abs().max() > 100 * MERGE_ATOL  # the adapter matters


def test_export_scores_like_the_adapter(exported):
    cfg, out = exported
    tuned = Scorer.from_config(cfg).score(QUESTIONS, ANSWERS)
    merged = Scorer.from_pretrained(out, device="cpu", dtype="float32").score(QUESTIONS, ANSWERS)
    np.testing.assert_allclose(merged, tuned, rtol=0, atol=MERGE_ATOL)


def test_plain_transformers_loads_the_export_without_calibtune(exported):
    cfg, out = exported
    tokenizer = load_tokenizer(cfg.model)
    ids = encode_text(tokenizer, "What is the capital of France?")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", PLAIN_LOAD, str(out), json.dumps(ids)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=out,
    )
    assert result.returncode == 0, result.stderr
    plain = json.loads(result.stdout.strip().splitlines()[-1])
    assert plain["vocab"] == len(tokenizer)
    tuned = load_tuned_model(cfg.model, cfg.serve.adapter).module
    with torch.no_grad():
        want = tuned(input_ids=torch.tensor([ids])).logits[0, -1]
    torch.testing.assert_close(torch.tensor(plain["logits"]), want, rtol=0, atol=MERGE_ATOL)


def test_delta_table_marks_missing_values():
    table = delta_table({"methods": {"base/ptrue": {"ece": 0.2}}, "deltas": {}})
    assert "| ece | 0.200 | n/a (no adapter) | n/a (not computed) |" in table
    assert "auroc" not in table
