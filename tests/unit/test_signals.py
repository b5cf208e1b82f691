"""Base signals (`calibtune.models.signals`): read off generation + the suffix on its KV cache,
they equal one base pass over prompt + response + suffix; per-row Full-ECE sums add up; the file
round-trips and is refused under another model or prompt."""

from __future__ import annotations

import pytest
import torch
from fixtures import build_tiny_model_dir
from transformers import AutoModelForCausalLM

from calibtune.data.generation import generate_answers
from calibtune.errors import InputError
from calibtune.metrics import FullECE
from calibtune.models.confidence import find_query_tokens
from calibtune.models.encoding import (
    EncodedAnswer,
    collate_followup,
    encode_text,
    followup_prefix_pass,
    followup_suffix_outputs,
)
from calibtune.models.loading import load_tokenizer
from calibtune.models.signals import (
    load_signals,
    read_signals,
    rows_signals,
    save_signals,
    signals_from_generation,
)

TEMPERATURES, BINS = [0.5, 1.0, 2.0], 15
LAYER = 1  # a layer below the last: the recorded hidden state follows model.feature_layer
PROMPTS = [
    "<|im_start|>user\nWhat is the capital of Peru?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nWhat is 3 plus 4?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nWhich continent is Japan in? Answer in a word.<|im_end|>\n"
    "<|im_start|>assistant\n",
    "<|im_start|>user\nthe symbol<|im_end|>\n<|im_start|>assistant\n",
]
SUFFIX = "<|im_end|>\n<|im_start|>user\nIs the proposed answer correct?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def talkative(tmp_path_factory):
    """A tiny untied model (varied answers) and its tokenizer."""
    model_dir = build_tiny_model_dir(tmp_path_factory.mktemp("talkative"), tied=False)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    return model, load_tokenizer(_model_cfg(model_dir))


def _model_cfg(model_dir):
    from omegaconf import OmegaConf

    return OmegaConf.create({"name_or_path": str(model_dir), "trust_remote_code": False})


def reference_signals(model, tokenizer, prompt_ids, response_ids, suffix_ids, tokens, ids):
    """One base pass per row over prompt + response + suffix (prefix, then suffix on its cache)."""
    prefixes = [
        EncodedAnswer(p + r, answer_start=len(p))
        for p, r in zip(prompt_ids, response_ids, strict=True)
    ]
    batch = collate_followup(prefixes, suffix_ids, tokenizer.pad_token_id)
    with torch.inference_mode():
        (logits, targets, owners), cache = followup_prefix_pass(model, batch)
        last, hidden = followup_suffix_outputs(model, batch, cache, LAYER)
    from calibtune.models.confidence import query_logits

    answers = [(logits[owners == r], targets[owners == r]) for r in range(len(prefixes))]
    return rows_signals(ids, query_logits(last, tokens), hidden, answers, TEMPERATURES, BINS)


def test_signals_from_generation_equal_a_base_pass(talkative):
    model, tokenizer = talkative
    tokens = find_query_tokens(tokenizer)
    suffix_ids = encode_text(tokenizer, SUFFIX)
    seen = []

    def on_batch(batch, inputs, out, answers):
        width = inputs["input_ids"].shape[1]
        generated = out.sequences[:, width:]
        steps = generated.shape[1]
        # responses of every kind: empty, short, every step (its last token is not in the
        # cache), and one that is not what was generated (served elsewhere)
        wanted = [0, 2, steps, 1]
        response_ids = [generated[r, : wanted[r]].tolist() for r in range(len(batch))]
        response_ids[3] = [int(generated[3, 0]) + 1]
        ids = [f"row{i}" for i in batch]
        signals, rest = signals_from_generation(
            model, inputs, out, response_ids, suffix_ids, tokens, ids, TEMPERATURES, BINS, LAYER
        )
        prompt_ids = [encode_text(tokenizer, PROMPTS[i]) for i in batch]
        seen.append((signals, rest, prompt_ids, response_ids, ids))

    generate_answers(model, tokenizer, PROMPTS, max_new_tokens=5, batch_size=4, on_batch=on_batch)
    signals, rest, prompt_ids, response_ids, ids = seen[0]
    assert rest == [3] and signals.ids == ids[:3]
    reference = reference_signals(
        model, tokenizer, prompt_ids[:3], response_ids[:3], suffix_ids, tokens, ids[:3]
    )
    assert torch.allclose(signals.two_way, reference.two_way, atol=1e-5, rtol=0)
    assert torch.allclose(signals.hidden, reference.hidden, atol=1e-5, rtol=1e-5)
    assert torch.allclose(signals.stats, reference.stats, atol=1e-6, equal_nan=True)
    assert torch.allclose(signals.full_ece, reference.full_ece, atol=1e-6)
    assert signals.positions.tolist() == [0, 2, len(response_ids[2])]
    assert torch.isnan(signals.stats[0]).all() and not torch.isnan(signals.stats[1:]).any()
    # the masked columns matter: the same rows with other responses give other signals
    assert (signals.two_way[0] - signals.two_way[1]).abs().max() > 1e-4


def test_full_ece_sums_of_rows_add_up_to_the_full_ece_of_all(talkative):
    torch.manual_seed(0)
    logits, targets = torch.randn(12, 50) * 3, torch.randint(0, 50, (12,))
    rows = [(logits[:5], targets[:5]), (logits[5:5], targets[5:5]), (logits[5:], targets[5:])]
    signals = rows_signals(
        ["a", "b", "c"], torch.zeros(3, 2), torch.zeros(3, 4), rows, TEMPERATURES, BINS
    )
    for t, metric in signals.full_ece_scans(TEMPERATURES, BINS):
        whole = FullECE(BINS)
        whole.update(logits / t, targets)
        assert metric.compute() == pytest.approx(whole.compute(), abs=1e-9)
        assert metric.positions == 12
    assert signals.full_ece_scans([0.75], BINS) is None  # not recorded: the caller computes
    assert signals.full_ece_scans(TEMPERATURES, 10) is None


def test_signals_round_trip_and_are_refused_under_another_key(tmp_path):
    torch.manual_seed(1)
    rows = [
        (torch.randn(3, 20), torch.randint(0, 20, (3,))),
        (torch.randn(1, 20), torch.tensor([4])),
    ]
    signals = rows_signals(["x", "y"], torch.randn(2, 2), torch.randn(2, 8), rows, [1.0], BINS)
    key = {"model": "m" * 8, "prompt": "p" * 8, "layer": "1"}
    save_signals(tmp_path / "base_signals.safetensors", signals, key)
    loaded, got_key = load_signals(tmp_path / "base_signals.safetensors")
    assert got_key == key and loaded.ids == ["x", "y"]
    assert torch.equal(loaded.select(["y", "x"]).hidden, signals.hidden.flip(0))
    assert read_signals(tmp_path, key) is not None
    with pytest.raises(InputError, match="prompt 'pppppppp'.*prompt 'qqqq'"):
        read_signals(tmp_path, {**key, "prompt": "qqqq"})
    with pytest.raises(InputError, match="key.layer.*feature_layer '1'.*feature_layer '-1'"):
        read_signals(tmp_path, {**key, "layer": "-1"})
    assert read_signals(tmp_path / "nowhere", key) is None
    # a file from before model.feature_layer (no layer in its key) holds the last layer's states
    old = tmp_path / "old"
    old.mkdir()
    save_signals(old / "base_signals.safetensors", signals, {"model": "m" * 8, "prompt": "p" * 8})
    assert read_signals(old, {**key, "layer": "-1"}) is not None
    with pytest.raises(InputError, match="feature_layer '-1'"):
        read_signals(old, key)
