"""Model loading, prompts and the uncertainty query on the tiny local model."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from calibtune.errors import CalibtuneError, ConfigError
from calibtune.models import (
    find_query_tokens,
    load_model,
    load_tokenizer,
    query_confidence,
    query_logits,
    render_answer_prompt,
    render_query_prompt,
)


def model_cfg(name_or_path, **extra):
    base = {
        "name_or_path": str(name_or_path),
        "revision": None,
        "dtype": "float32",
        "device": "cpu",
        "attn_implementation": "eager",
        "trust_remote_code": False,
    }
    return OmegaConf.create({**base, **extra})


def test_loads_local_directory_with_left_padding(tiny_model_dir):
    tokenizer = load_tokenizer(model_cfg(tiny_model_dir))
    model = load_model(model_cfg(tiny_model_dir))
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token is not None
    assert model.dtype == torch.float32
    assert not model.training
    batch = tokenizer(["yes", "What is the capital of France?"], return_tensors="pt", padding=True)
    logits = model(**batch).logits
    assert logits.shape[:2] == batch.input_ids.shape
    assert logits.shape[-1] == len(tokenizer)


def test_missing_path_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="no such directory"):
        load_model(model_cfg(tmp_path / "absent"))


def test_directory_without_config_is_rejected(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ConfigError, match="no config.json"):
        load_tokenizer(model_cfg(tmp_path))


def test_bad_name_is_rejected():
    with pytest.raises(ConfigError, match="neither an existing directory"):
        load_model(model_cfg("not/a/valid/model/id"))


def test_unreachable_hub_id_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CalibtuneError, match="HF_HUB_OFFLINE=1.*local directory"):
        load_tokenizer(model_cfg("calibtune-test/does-not-exist"))


def test_bad_dtype_is_rejected(tiny_model_dir):
    with pytest.raises(ConfigError, match="model.dtype"):
        load_model(model_cfg(tiny_model_dir, dtype="float8"))


PROMPT = OmegaConf.create(
    {
        "use_chat_template": True,
        "system": "Answer briefly.",
        "completion_prefix": "",
        "answer_template": "{question}",
        "query_style": "restate",
        "query_template": "{question}\nProposed answer: {answer}\nIs the proposed answer correct?",
    }
)


def test_prompts_use_the_chat_template(tiny_model_dir):
    tokenizer = load_tokenizer(model_cfg(tiny_model_dir))
    answer = render_answer_prompt(tokenizer, PROMPT, "Capital of Peru?", None)
    assert answer.startswith("<|im_start|>system\nAnswer briefly.<|im_end|>")
    assert answer.endswith("<|im_start|>assistant\n")
    query = render_query_prompt(tokenizer, PROMPT, "Pick one", ["Lima", "Quito"], " Lima ")
    assert "Pick one\nA. Lima\nB. Quito\nProposed answer: Lima\n" in query


def test_prompts_without_chat_template_use_completion_format(tiny_model_dir):
    tokenizer = load_tokenizer(model_cfg(tiny_model_dir))
    no_chat = OmegaConf.merge(PROMPT, {"use_chat_template": False, "completion_prefix": "Q/A\n"})
    assert render_answer_prompt(tokenizer, no_chat, "2+2?", None) == "Q/A\nQuestion: 2+2?\nAnswer:"


def test_query_tokens_and_confidence(tiny_model_dir):
    tokenizer = load_tokenizer(model_cfg(tiny_model_dir))
    tokens = find_query_tokens(tokenizer)
    assert tokenizer.encode("yes", add_special_tokens=False)[0] in tokens.yes_ids
    assert tokenizer.encode(" no", add_special_tokens=False)[0] in tokens.no_ids
    logits = torch.zeros(2, len(tokenizer))
    logits[0, tokens.yes_ids[0]] = 5.0
    logits[1, list(tokens.no_ids)] = 3.0
    confidence = query_confidence(logits, tokens)
    n_yes, n_no = len(tokens.yes_ids), len(tokens.no_ids)
    # row 0: one yes variant at e^5, the others at e^0; every no variant at e^0
    yes0 = torch.tensor(5.0).exp() + (n_yes - 1)
    assert confidence[0].item() == pytest.approx((yes0 / (yes0 + n_no)).item(), rel=1e-5)
    assert confidence[1].item() == pytest.approx(n_yes / (n_yes + n_no * torch.e**3), rel=1e-5)
    assert query_logits(logits, tokens).shape == (2, 2)


def test_multi_token_query_word_fails_clearly(tiny_model_dir):
    tokenizer = load_tokenizer(model_cfg(tiny_model_dir))
    with pytest.raises(ConfigError, match="not a single token.*prompt.query_yes"):
        find_query_tokens(tokenizer, yes="xylophonequartz")
