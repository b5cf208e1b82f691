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

from calibtune.errors import ConfigError


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


def common_suffix_ids(queries: Sequence) -> tuple[int, ...] | None:
    """The suffix token ids every query shares (follow-up queries: `suffix_ids`), else None."""
    suffixes = {q.suffix_ids for q in queries}
    return suffixes.pop() if len(suffixes) == 1 else None


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Prompt indices grouped into batches of similar length (longest first, ties by index)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


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


def last_token_state(hidden_states: Sequence[torch.Tensor], layer: int) -> torch.Tensor:
    """Hidden state [B, H] at each row's last position after `layer` (`model.feature_layer`:
    0 the embeddings, i the i-th decoder layer, -1 the last, normed); a clear error when the
    model has no such layer."""
    if not -len(hidden_states) <= layer < len(hidden_states):
        raise ConfigError(
            f"model.feature_layer={layer}: this model has hidden states 0..{len(hidden_states) - 1}"
            f" (or -1..-{len(hidden_states)} from the end)"
        )
    return hidden_states[layer][:, -1]


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
    keep, span_mask = _answer_columns(batch["answer_mask"])
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        logits_to_keep=keep,
        use_cache=False,
    )
    return _gather_answer_logits(out.logits, span_mask, batch["input_ids"], int(keep[0]))


def answer_stats(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[3] float64 pavg, seqlogp, pmin of one row's answer-token logits [L, V] (NaN when L = 0):
    the mean token probability, the geometric mean (exp of the mean log-probability) and the
    smallest."""
    if targets.numel() == 0:
        return torch.full((3,), float("nan"), dtype=torch.float64)
    logp = torch.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None]).squeeze(1)
    logp = logp.double().cpu()
    return torch.stack([logp.exp().mean(), logp.mean().exp(), logp.min().exp()])


@torch.no_grad()
def answers_stats(
    model: torch.nn.Module, answers: Sequence[EncodedAnswer], pad_id: int, batch_size: int
) -> torch.Tensor:
    """[N, 3] `answer_stats` of each prompt + response under `model`, one answer pass per batch
    (NaN rows for empty responses)."""
    out = torch.full((len(answers), 3), float("nan"), dtype=torch.float64)
    usable = [i for i, a in enumerate(answers) if len(a.input_ids) > a.answer_start]
    device = next(model.parameters()).device
    for positions in length_sorted_batches([len(answers[i].input_ids) for i in usable], batch_size):
        batch = [usable[p] for p in positions]
        collated = collate_answers([answers[i] for i in batch], pad_id)
        logits, targets, owners = answer_token_logits(
            model, {k: v.to(device) for k, v in collated.items()}
        )
        for row, index in enumerate(batch):
            out[index] = answer_stats(logits[owners == row], targets[owners == row])
    return out


# -- follow-up queries: prompt + response is a prefix of the query (prompt.query_style=followup)


def collate_followup(
    prefixes: Sequence[EncodedAnswer], suffix_ids: Sequence[int], pad_id: int
) -> dict[str, torch.Tensor]:
    """Left-padded prompt + response rows with the same query suffix appended to each.

    Returns input_ids, attention_mask, position_ids over the full width, `answer_mask` (True on
    response tokens) and `prefix_width` (a 0-d tensor: columns before the suffix), so that
    `batch[:, :prefix_width]` is the answer batch and the rest is the uncertainty query."""
    prefix = pad_sequences([p.input_ids for p in prefixes], pad_id, side="left")
    rows, width = prefix["input_ids"].shape
    answer_mask = torch.zeros((rows, width + len(suffix_ids)), dtype=torch.bool)
    for row, item in enumerate(prefixes):
        answer_mask[row, width - len(item.input_ids) + item.answer_start : width] = True
    suffix = torch.tensor([list(suffix_ids)] * rows, dtype=torch.long).reshape(rows, -1)
    attention_mask = torch.cat([prefix["attention_mask"], torch.ones_like(suffix)], dim=1)
    return {
        "input_ids": torch.cat([prefix["input_ids"], suffix], dim=1),
        "attention_mask": attention_mask,
        "position_ids": (attention_mask.cumsum(dim=1) - 1).clamp(min=0),
        "answer_mask": answer_mask,
        "prefix_width": torch.tensor(width),
    }


def _answer_columns(answer_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns whose logits predict a response token, and the [B, columns] mask over them."""
    predict_mask = torch.zeros_like(answer_mask)
    predict_mask[:, :-1] = answer_mask[:, 1:]
    columns = predict_mask.any(dim=0).nonzero().squeeze(-1)
    if columns.numel() == 0:
        return columns, predict_mask[:, :0]
    first, last = int(columns.min()), int(columns.max())
    keep = torch.arange(first, last + 1, device=answer_mask.device)
    return keep, predict_mask[:, first : last + 1]


def _gather_answer_logits(
    logits: torch.Tensor, span_mask: torch.Tensor, input_ids: torch.Tensor, first: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    targets = input_ids[:, first + 1 : first + 1 + span_mask.shape[1]][span_mask]
    return logits[span_mask], targets, span_mask.nonzero()[:, 0]


def followup_prefix_pass(
    model: PreTrainedModel,
    batch: dict[str, torch.Tensor],
    use_cache: bool = True,
    answer_logits: bool = True,
) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], object]:
    """Forward over the prompt + response columns only. Returns the answer-token logits
    (logits [T, V], targets [T], rows [T], as `answer_token_logits`; empty unless
    `answer_logits`) and the KV cache (None unless `use_cache`)."""
    width = int(batch["prefix_width"])
    keep, span_mask = _answer_columns(batch["answer_mask"][:, :width])
    if not answer_logits:
        keep = keep[:0]
    out = model(
        input_ids=batch["input_ids"][:, :width],
        attention_mask=batch["attention_mask"][:, :width],
        position_ids=batch["position_ids"][:, :width],
        logits_to_keep=keep if keep.numel() else 1,
        use_cache=use_cache,
    )
    if keep.numel() == 0:
        empty = batch["input_ids"].new_empty(0)
        return (out.logits[:, :0].reshape(0, out.logits.shape[-1]), empty, empty), (
            out.past_key_values
        )
    answer = _gather_answer_logits(out.logits, span_mask, batch["input_ids"], int(keep[0]))
    return answer, out.past_key_values


def followup_suffix_outputs(
    model: PreTrainedModel, batch: dict[str, torch.Tensor], cache, layer: int | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Next-token logits [B, V] after the query suffix, reusing the prefix's KV cache (the
    cache is cropped back to the prefix afterwards, so it can serve another suffix pass), and
    with `layer` that hidden layer's state at the query's last token [B, H] (`last_token_state`)."""
    width = int(batch["prefix_width"])
    out = model(
        input_ids=batch["input_ids"][:, width:],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"][:, width:],
        past_key_values=cache,
        logits_to_keep=1,
        use_cache=True,
        output_hidden_states=layer is not None,
    )
    cache.crop(-(batch["input_ids"].shape[1] - width))
    state = None if layer is None else last_token_state(out.hidden_states, layer)
    return out.logits[:, -1, :], state


def followup_suffix_logits(
    model: PreTrainedModel, batch: dict[str, torch.Tensor], cache
) -> torch.Tensor:
    """`followup_suffix_outputs`' next-token logits [B, V]."""
    return followup_suffix_outputs(model, batch, cache)[0]


def followup_full_pass(
    model: PreTrainedModel, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One forward over prefix + suffix: the query's next-token logits [B, V] and the
    answer-token logits (as `followup_prefix_pass`), LM head only at those positions."""
    width = batch["input_ids"].shape[1]
    keep, span_mask = _answer_columns(batch["answer_mask"])
    last = torch.tensor([width - 1], device=keep.device)
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        logits_to_keep=torch.cat([keep, last]),
        use_cache=False,
    )
    query = out.logits[:, -1, :]
    if keep.numel() == 0:
        empty = batch["input_ids"].new_empty(0)
        return query, (out.logits[:, :0].reshape(0, query.shape[-1]), empty, empty)
    answer = _gather_answer_logits(out.logits[:, :-1], span_mask, batch["input_ids"], int(keep[0]))
    return query, answer
