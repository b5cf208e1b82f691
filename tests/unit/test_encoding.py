"""Padding and partial-LM-head helpers give the same logits as full, unpadded forwards."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from calibtune.models import load_model, load_tokenizer
from calibtune.models.encoding import (
    answer_token_logits,
    collate_answers,
    encode_answer,
    encode_text,
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
