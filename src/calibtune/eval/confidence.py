"""The eval stage's model passes beyond the base signals (`calibtune.models.signals`): the tuned
query pass (with the tuned Full-ECE logits) and verbalized confidence; plus pavg / seqlogp / pmin
of responses under any model.

Tuned ptrue is `calibtune.models.confidence`'s: the same passes as train validation and `Scorer`.
Every function batches rows of similar length together and returns numpy arrays in the order
of its inputs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from calibtune.data.generation import generate_answers
from calibtune.metrics import FullECE
from calibtune.models.confidence import (
    EncodedQuery,
    QueryModel,
    QueryTokens,
    common_suffix_ids,
    followup_batches,
    followup_query_logits,
    query_logits,
    query_two_way_logits,
)
from calibtune.models.encoding import (
    answer_token_logits,
    collate_answers,
    encode_answer,
    length_sorted_batches,
)

PERCENT = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d+)?)\s*%?")


def _record_answer_stats(
    result: dict[str, np.ndarray],
    logits: torch.Tensor,
    targets: torch.Tensor,
    rows: torch.Tensor,
    indices: Sequence[int],
) -> None:
    """pavg / seqlogp / pmin of each batch row that has answer tokens, into `result[...][index]`."""
    token_logp = torch.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None]).squeeze(1)
    token_logp, rows = token_logp.double().cpu(), rows.cpu()
    for row, index in enumerate(indices):
        logp = token_logp[rows == row]
        if logp.numel():
            result["pavg"][index] = float(logp.exp().mean())
            result["seqlogp"][index] = float(logp.mean().exp())
            result["pmin"][index] = float(logp.min().exp())


@torch.inference_mode()
def answer_confidences(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    responses: Sequence[str],
    batch_size: int,
    full_ece: Sequence[tuple[float, FullECE]] = (),
    progress: str | None = None,
) -> dict[str, np.ndarray]:
    """pavg, seqlogp and pmin of each response under `model`; NaN where a response is empty.

    pavg is the mean probability of the response tokens, seqlogp the length-normalised sequence
    log-probability mapped to (0, 1) by exp (the geometric-mean token probability), pmin the
    smallest token probability. Each (temperature, FullECE) in `full_ece` also receives the
    answer tokens' next-token logits divided by its temperature.
    """
    encoded = [encode_answer(tokenizer, p, r) for p, r in zip(prompts, responses, strict=True)]
    result = {name: np.full(len(prompts), np.nan) for name in ("pavg", "seqlogp", "pmin")}
    usable = [i for i, item in enumerate(encoded) if len(item.input_ids) > item.answer_start]
    device = next(model.parameters()).device
    lengths = [len(encoded[i].input_ids) for i in usable]
    batches = length_sorted_batches(lengths, batch_size)
    for batch_positions in tqdm(batches, desc=progress, unit="batch", disable=progress is None):
        batch = [usable[i] for i in batch_positions]
        collated = collate_answers([encoded[i] for i in batch], tokenizer.pad_token_id)
        logits, targets, rows = answer_token_logits(
            model, {k: v.to(device) for k, v in collated.items()}
        )
        _update_full_ece(full_ece, logits, targets)
        _record_answer_stats(result, logits, targets, rows, batch)
    return result


def _update_full_ece(
    full_ece: Sequence[tuple[float, FullECE]], logits: torch.Tensor, targets: torch.Tensor
) -> None:
    if targets.numel() == 0:
        return
    logits = logits.float()
    for temperature, metric in full_ece:
        metric.update(logits / temperature, targets)


def tuned_pass(
    qm: QueryModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[dict],
    queries: Sequence[EncodedQuery],
    tokens: QueryTokens,
    batch_size: int,
    full_ece: Sequence[tuple[float, FullECE]] = (),
    progress=None,
) -> tuple[torch.Tensor, bool]:
    """Tuned two-way [no, yes] logits [N, 2] of each query (the shared confidence passes:
    `query_two_way_logits`), and whether `full_ece` received the tuned model's answer-token
    logits (`qm.method.tuned_full_ece`): a LoRA's follow-up pass over the whole query gives them
    in the same pass (a restated query needs an answer pass); other methods' answer tokens are
    the base model's (an activated LoRA is inactive on prompt + response): nothing is added."""
    pad_id = tokenizer.pad_token_id
    suffix_ids = common_suffix_ids(queries)
    if not full_ece or not qm.method.tuned_full_ece:
        return query_two_way_logits(
            qm, queries, tokens, pad_id, batch_size, progress=progress
        ), False
    if suffix_ids is None:
        two_way = query_two_way_logits(qm, queries, tokens, pad_id, batch_size, progress=progress)
        prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
        answer_confidences(qm.module, tokenizer, prompts, responses, batch_size, full_ece)
        return two_way, True
    two_way = torch.empty(len(queries), 2)
    device = next(qm.module.parameters()).device
    batches = followup_batches(queries, suffix_ids, pad_id, batch_size)
    with torch.inference_mode():
        for batch, collated in progress(batches) if progress else batches:
            collated = {k: v.to(device) for k, v in collated.items()}
            last, answer = followup_query_logits(qm, collated, base=False)
            two_way[batch] = query_logits(last, tokens).cpu()
            _update_full_ece(full_ece, answer[0], answer[1])
    return two_way, True


def parse_percent(text: str) -> float | None:
    """The first number 0-100 in a reply (with or without %), as a probability; else None."""
    match = PERCENT.search(text)
    if match is None:
        return None
    value = float(match.group(1))
    return value / 100.0 if 0.0 <= value <= 100.0 else None


def verbalized_confidences(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    batch_size: int,
    max_new_tokens: int,
) -> tuple[np.ndarray, int]:
    """Ask for a 0-100 % confidence under each rendered prompt; NaN and a count where unparseable."""
    replies = generate_answers(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    parsed = [parse_percent(samples[0]) for samples in replies]
    values = np.array([np.nan if p is None else p for p in parsed], dtype=np.float64)
    return values, sum(p is None for p in parsed)
