"""Token-level helpers shared by train and eval: encode prompt+answer and query texts, pad
batches with correct position ids, and compute the LM head only where it is needed.

Positions are always given explicitly (cumulative attention mask), so left-padded and
right-padded rows give the same logits as an unpadded row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class EncodedAnswer:
    """Token ids of prompt + response, and where the response starts."""

    input_ids: list[int]
    answer_start: int


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of an already rendered prompt (its special tokens are in the text)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_answer(tokenizer: PreTrainedTokenizerBase, prompt: str, response: str) -> EncodedAnswer:
    """Encode prompt and response separately so the boundary is exact."""
    prompt_ids = encode_text(tokenizer, prompt)
    response_ids = encode_text(tokenizer, response)
    return EncodedAnswer(input_ids=prompt_ids + response_ids, answer_start=len(prompt_ids))


def pad_sequences(
    sequences: Sequence[Sequence[int]], pad_id: int, side: str = "right"
) -> dict[str, torch.Tensor]:
    """Pad to the longest; returns input_ids, attention_mask and matching position_ids."""
    width = max(len(seq) for seq in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        input_ids[row, span] = torch.tensor(list(seq), dtype=torch.long)
        attention_mask[row, span] = 1
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}


def collate_answers(encoded: Sequence[EncodedAnswer], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch of prompt+response with `answer_mask` (True on response tokens)."""
    batch = pad_sequences([e.input_ids for e in encoded], pad_id, side="right")
    answer_mask = torch.zeros_like(batch["attention_mask"], dtype=torch.bool)
    for row, item in enumerate(encoded):
        answer_mask[row, item.answer_start : len(item.input_ids)] = True
    batch["answer_mask"] = answer_mask
    return batch


def last_token_logits(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-token logits [B, V] after the last token of each left-padded row (LM head on 1 position)."""
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        logits_to_keep=1,
        use_cache=False,
    )
    return out.logits[:, -1, :]


def answer_token_logits(
    model: PreTrainedModel, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits that predict each response token, computing the LM head only over the span that
    holds them. Returns (logits [T, V], target ids [T], row index [T]) over all T answer tokens."""
    answer_mask = batch["answer_mask"]
    predict_mask = torch.zeros_like(answer_mask)
    predict_mask[:, :-1] = answer_mask[:, 1:]  # logits at t-1 predict the token at t
    columns = predict_mask.any(dim=0).nonzero().squeeze(-1)
    first, last = int(columns.min()), int(columns.max())
    keep = torch.arange(first, last + 1, device=answer_mask.device)
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        logits_to_keep=keep,
        use_cache=False,
    )
    span_mask = predict_mask[:, first : last + 1]
    logits = out.logits[span_mask]
    targets = batch["input_ids"][:, first + 1 : last + 2][span_mask]
    rows = span_mask.nonzero()[:, 0]
    return logits, targets, rows
