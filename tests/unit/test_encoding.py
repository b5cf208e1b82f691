"""Padding and partial-LM-head helpers give the same logits as full, unpadded forwards."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from calibtune.models import load_model, load_tokenizer
from calibtune.models.encoding import (
    answer_token_logits,
    collate_answers,
    collate_followup,
    encode_answer,
    encode_text,
    followup_full_pass,
    followup_prefix_pass,
    followup_suffix_logits,
    followup_suffix_outputs,
    last_token_logits,
    pad_sequences,
)


def tiny(tiny_model_dir):
    cfg = OmegaConf.create(
        {
            "name_or_path": str(tiny_model_dir),
            "dtype": "float32",
            "device": "cpu",
            "attn_implementation": "eager",
            "trust_remote_code": False,
        }
    )
    return load_model(cfg), load_tokenizer(cfg)


def test_pad_sequences_left_and_right():
    right = pad_sequences([[5, 6, 7], [8]], pad_id=0, side="right")
    assert right["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert right["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]
    left = pad_sequences([[5, 6, 7], [8]], pad_id=0, side="left")
    assert left["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert left["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]


def test_last_token_logits_match_unpadded_forward(tiny_model_dir):
    model, tokenizer = tiny(tiny_model_dir)
    texts = ["What is the capital of France?", "yes"]
    seqs = [encode_text(tokenizer, t) for t in texts]
    batch = pad_sequences(seqs, tokenizer.pad_token_id, side="left")
    with torch.no_grad():
        batched = last_token_logits(model, batch)
        for row, seq in enumerate(seqs):
            alone = model(input_ids=torch.tensor([seq])).logits[0, -1]
            torch.testing.assert_close(batched[row], alone, atol=1e-5, rtol=1e-4)


def test_answer_token_logits_match_full_forward(tiny_model_dir):
    model, tokenizer = tiny(tiny_model_dir)
    encoded = [
        encode_answer(tokenizer, "<|im_start|>user\nCapital of Peru?<|im_end|>\n", "Lima"),
        encode_answer(tokenizer, "Q: 2+2?\nA:", " 4 or maybe 5"),
    ]
    batch = collate_answers(encoded, tokenizer.pad_token_id)
    with torch.no_grad():
        logits, targets, rows = answer_token_logits(model, batch)
        expected_logits, expected_targets = [], []
        for item in encoded:
            full = model(input_ids=torch.tensor([item.input_ids])).logits[0]
            span = range(item.answer_start, len(item.input_ids))
            expected_logits += [full[t - 1] for t in span]
            expected_targets += [item.input_ids[t] for t in span]
    torch.testing.assert_close(logits, torch.stack(expected_logits), atol=1e-5, rtol=1e-4)
    assert targets.tolist() == expected_targets
    n_first = len(encoded[0].input_ids) - encoded[0].answer_start
    assert rows.tolist() == [0] * n_first + [1] * (len(expected_targets) - n_first)


def followup_rows(tokenizer):
    """Prompt + response rows and one shared query suffix (as a follow-up query renders)."""
    encoded = [
        encode_answer(tokenizer, "<|im_start|>user\nCapital of Peru?<|im_end|>\n", "Lima"),
        encode_answer(tokenizer, "Q: 2+2?\nA:", " 4 or maybe 5"),
        encode_answer(tokenizer, "Q: empty?\nA:", ""),
    ]
    suffix = encode_text(tokenizer, "<|im_end|>\n<|im_start|>user\nIs your answer correct?")
    return encoded, suffix


def test_followup_passes_match_unpadded_forwards(tiny_model_dir):
    model, tokenizer = tiny(tiny_model_dir)
    encoded, suffix = followup_rows(tokenizer)
    batch = collate_followup(encoded, suffix, tokenizer.pad_token_id)
    width = int(batch["prefix_width"])
    assert batch["input_ids"][:, width:].tolist() == [suffix] * 3
    with torch.no_grad():
        (prefix_logits, targets, rows), cache = followup_prefix_pass(model, batch)
        cached = followup_suffix_logits(model, batch, cache)
        cached_again = followup_suffix_logits(model, batch, cache)  # the cache was cropped back
        full_last, (full_answer_logits, full_targets, full_rows) = followup_full_pass(model, batch)
        expected_last, expected_answer, expected_targets = [], [], []
        for item in encoded:
            logits = model(input_ids=torch.tensor([item.input_ids + suffix])).logits[0]
            expected_last.append(logits[-1])
            span = range(item.answer_start, len(item.input_ids))
            expected_answer += [logits[t - 1] for t in span]
            expected_targets += [item.input_ids[t] for t in span]
    for last in (cached, cached_again, full_last):
        torch.testing.assert_close(last, torch.stack(expected_last), atol=1e-5, rtol=1e-4)
    for answer_logits in (prefix_logits, full_answer_logits):
        torch.testing.assert_close(
            answer_logits, torch.stack(expected_answer), atol=1e-5, rtol=1e-4
        )
    assert targets.tolist() == full_targets.tolist() == expected_targets
    n_first = len(encoded[0].input_ids) - encoded[0].answer_start
    assert rows.tolist() == full_rows.tolist()
    assert rows.tolist() == [0] * n_first + [1] * (len(expected_targets) - n_first)


def test_followup_prefix_pass_without_answer_logits_keeps_the_cache(tiny_model_dir):
    model, tokenizer = tiny(tiny_model_dir)
    encoded, suffix = followup_rows(tokenizer)
    batch = collate_followup(encoded, suffix, tokenizer.pad_token_id)
    with torch.no_grad():
        (logits, targets, _), cache = followup_prefix_pass(model, batch, answer_logits=False)
        assert logits.shape[0] == targets.numel() == 0
        assert cache.get_seq_length() == int(batch["prefix_width"])


@pytest.mark.parametrize("layer", [-1, 1])
def test_followup_suffix_hidden_state_is_the_unpadded_query_features(tiny_model_dir, layer):
    """The probe baseline reads its features off the cached suffix pass: they must be the
    hidden state (of `model.feature_layer`) of the whole query, as one unpadded forward gives."""
    model, tokenizer = tiny(tiny_model_dir)
    encoded, suffix = followup_rows(tokenizer)
    batch = collate_followup(encoded, suffix, tokenizer.pad_token_id)
    with torch.no_grad():
        _, cache = followup_prefix_pass(model, batch, answer_logits=False)
        logits, hidden = followup_suffix_outputs(model, batch, cache, layer)
        _, no_hidden = followup_suffix_outputs(model, batch, cache)
        expected = [
            model(input_ids=torch.tensor([item.input_ids + suffix]), output_hidden_states=True)
            for item in encoded
        ]
    assert no_hidden is None
    assert hidden.shape == (3, model.config.hidden_size)
    torch.testing.assert_close(
        hidden,
        torch.stack([out.hidden_states[layer][0, -1] for out in expected]),
        atol=1e-5,
        rtol=1e-4,
    )
    torch.testing.assert_close(
        logits, torch.stack([out.logits[0, -1] for out in expected]), atol=1e-5, rtol=1e-4
    )


def test_a_feature_layer_the_model_does_not_have_is_refused_naming_the_setting():
    from calibtune.errors import ConfigError
    from calibtune.models.encoding import last_token_state

    states = [torch.full((2, 3, 4), float(i)) for i in range(3)]  # embeddings + 2 layers
    assert last_token_state(states, 1).tolist() == [[1.0] * 4] * 2
    assert last_token_state(states, -3).tolist() == [[0.0] * 4] * 2
    for layer in (3, -4):
        with pytest.raises(ConfigError, match=f"model.feature_layer={layer}: .* 0..2"):
            last_token_state(states, layer)


def test_answers_stats_are_each_response_alone_and_nan_when_empty(tiny_model_dir):
    from calibtune.models.encoding import answers_stats

    model, tokenizer = tiny(tiny_model_dir)
    encoded, _ = followup_rows(tokenizer)  # the third response is empty
    stats = answers_stats(model, encoded, tokenizer.pad_token_id, batch_size=2)
    assert stats.shape == (3, 3) and stats.dtype == torch.float64
    assert torch.isnan(stats[2]).all()
    with torch.no_grad():
        for row, item in enumerate(encoded[:2]):
            logp = torch.log_softmax(model(input_ids=torch.tensor([item.input_ids])).logits[0], -1)
            span = range(item.answer_start, len(item.input_ids))
            token_logp = torch.stack([logp[t - 1, item.input_ids[t]] for t in span]).double()
            expected = [token_logp.exp().mean(), token_logp.mean().exp(), token_logp.min().exp()]
            torch.testing.assert_close(stats[row], torch.stack(expected), atol=1e-5, rtol=1e-4)
    assert stats[0, 2] <= stats[0, 1] <= stats[0, 0]  # pmin <= geometric mean <= mean
